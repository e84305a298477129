# The workflow lives in workflow/Snakefile; this file lets `snakemake` run from the repository root.
include: "workflow/Snakefile"
