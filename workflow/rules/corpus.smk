# Corpus stages: manifest -> fetch -> select -> segment -> caption, fanned out per shard of tracks.
# Each job's `changed(...)` input and `record(...)` suffix implement the rerun contract of workflow/Snakefile.


rule manifest:
    input:
        changed("manifest", "data/manifest"),
    output:
        directory("data/manifest"),
    params:
        recipe=recipe("manifest"),
    log:
        "logs/manifest.log",
    shell:
        "ssmttm manifest --params {PARAMS} --out {output} 2> {log}" + record("{output}")


rule fetch:
    input:
        "data/manifest",
        changed("fetch", "data/fetch/shard-{shard}"),
    output:
        directory("data/fetch/shard-{shard}"),
    params:
        recipe=recipe("fetch"),
        shard=lambda wildcards: int(wildcards.shard),
    resources:
        downloads=1,
    log:
        "logs/fetch/shard-{shard}.log",
    shell:
        "ssmttm fetch --params {PARAMS} --manifest {input[0]}/manifest.jsonl --shard {params.shard} --out {output}"
        " 2> {log}" + record("{output}")


rule select:
    input:
        "data/fetch/shard-{shard}",
        changed("select", "data/select/shard-{shard}"),
    output:
        directory("data/select/shard-{shard}"),
    params:
        recipe=recipe("select"),
    log:
        "logs/select/shard-{shard}.log",
    shell:
        "ssmttm select --params {PARAMS} --fetched {input[0]} --out {output} 2> {log}" + record("{output}")


def vocal_removal(c):
    """The segment stage's Demucs settings (the GPU work of segment)."""
    return c["segment"].get("vocal_removal", {})


rule segment:
    input:
        "data/select/shard-{shard}",
        changed("segment", "data/segment/shard-{shard}"),
    output:
        directory("data/segment/shard-{shard}"),
    params:
        recipe=recipe("segment"),
    resources:
        gpu=gpus(lambda c: vocal_removal(c).get("enabled", False) and on_gpu(vocal_removal(c).get("device", "auto"))),
    log:
        "logs/segment/shard-{shard}.log",
    shell:
        "ssmttm segment --params {PARAMS} --selected {input[0]} --out {output} 2> {log}" + record("{output}")


def caption_model(c):
    """The caption stage's model settings (used in `model` mode)."""
    return c["caption"].get("model", {})


rule caption:
    input:
        "data/segment/shard-{shard}",
        changed("caption", "data/caption/shard-{shard}"),
    output:
        directory("data/caption/shard-{shard}"),
    params:
        recipe=recipe("caption"),
    resources:
        gpu=gpus(lambda c: c["caption"]["mode"] == "model" and on_gpu(caption_model(c).get("device", "auto"))),
    log:
        "logs/caption/shard-{shard}.log",
    shell:
        "ssmttm caption --params {PARAMS} --clips {input[0]} --out {output} 2> {log}" + record("{output}")


# One target per stage, for `snakemake <stage>_all` and for the DVC stage that runs it.
rule fetch_all:
    input:
        expand("data/fetch/shard-{shard}", shard=SHARDS),


rule select_all:
    input:
        expand("data/select/shard-{shard}", shard=SHARDS),


rule segment_all:
    input:
        expand("data/segment/shard-{shard}", shard=SHARDS),


rule caption_all:
    input:
        expand("data/caption/shard-{shard}", shard=SHARDS),
