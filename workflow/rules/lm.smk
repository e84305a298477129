# Language models: one training run per backbone, all sharing the same token shards.
# A run's params hash covers only the sections that shape it, so swapping `lm.backbone` retrains the LM and
# what follows it, and no data job.

rule train_lm:
    input:
        ancient("data/tokenize/_manifest.json"),
    output:
        directory("results/train_lm/{backbone}"),
    params:
        hash=lambda wildcards: params_hash("seed", "text", "lm", "train_lm", backbone=wildcards.backbone),
    resources:
        gpu=lambda wildcards: config["train_lm"].get("devices", 1) if config["train_lm"].get("accelerator") == "gpu" else 0,
        runtime=lambda wildcards: config["train_lm"].get("max_hours", 1) * 60,
    log:
        "logs/train_lm/{backbone}.log",
    shell:
        "ssmttm train-lm --params {PARAMS} --shards data/tokenize --backbone {wildcards.backbone} --out {output} 2> {log}"


rule lm_all:
    input:
        expand("results/train_lm/{backbone}", backbone=BACKBONES),
