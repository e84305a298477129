# Language models: one training run per backbone, all sharing the same token shards and text-encoder cache.
# A run's params hash covers only the sections that shape it, with its own backbone name, so swapping
# `lm.backbone` trains the new backbone and rebuilds what follows it, and no data job.
# The declared output is the run's metrics.json, written when training ends, not the run folder: Snakemake deletes
# a job's outputs before rerunning it, and a killed run (e.g. at a slurm time limit) must keep its checkpoints to
# resume from. Checkpoints made with other params are replaced (--restart-if-params-changed).


rule text_cache:
    input:
        ancient("data/tokenize/_manifest.json"),
    output:
        directory("data/text_cache"),
    params:
        hash=params_hash("text", "train_lm"),
    log:
        "logs/text_cache.log",
    shell:
        "ssmttm train-lm --params {PARAMS} --shards data/tokenize --build-text-cache --text-cache {output} 2> {log}"


rule train_lm:
    input:
        shards=ancient("data/tokenize/_manifest.json"),
        text_cache=ancient("data/text_cache"),
    output:
        "results/train_lm/{backbone}/metrics.json",
    params:
        hash=lambda wildcards: params_hash("seed", "text", "lm", "train_lm", backbone=wildcards.backbone),
        run="results/train_lm/{backbone}",
    threads: lambda wildcards: config["train_lm"].get("num_threads") or 1
    resources:
        gpu=lambda wildcards: config["train_lm"].get("devices", 1) if config["train_lm"].get("accelerator") == "gpu" else 0,
        runtime=lambda wildcards: config["train_lm"].get("max_hours", 1) * 60,
    log:
        "logs/train_lm/{backbone}.log",
    shell:
        "ssmttm train-lm --params {PARAMS} --shards data/tokenize --text-cache {input.text_cache}"
        " --backbone {wildcards.backbone} --out {params.run} --resume --restart-if-params-changed 2> {log}"


rule lm_plot:
    input:
        ancient(expand("results/train_lm/{backbone}/metrics.json", backbone=BACKBONES)),
    output:
        "results/plots/loss_curves.png",
    log:
        "logs/lm_plot.log",
    shell:
        "ssmttm train-lm --params {PARAMS} --plot {input} --plot-out {output} 2> {log}"


rule lm_all:
    input:
        expand("results/train_lm/{backbone}/metrics.json", backbone=BACKBONES),
