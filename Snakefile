# The workflow lives in workflow/Snakefile; this file lets `snakemake` run from the repository root.
include: "workflow/Snakefile"


# Snakemake ignores default targets set inside included files, so the default target is named here.
rule default:
    default_target: True
    input:
        rules.all.input,
