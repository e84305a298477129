# Corpus stages: manifest -> fetch -> select -> segment -> caption, fanned out per shard of tracks.
# Inputs made by an upstream DVC stage are ancient(): `dvc pull`/`dvc checkout` timestamps never trigger rebuilds.


rule manifest:
    output:
        directory("data/manifest"),
    params:
        hash=params_hash("seed", "corpus"),
    log:
        "logs/manifest.log",
    shell:
        "ssmttm manifest --params {PARAMS} --out {output} 2> {log}"


rule fetch:
    input:
        ancient("data/manifest"),
    output:
        directory("data/fetch/shard-{shard}"),
    params:
        hash=params_hash("fetch", "corpus"),
        shard=lambda wildcards: int(wildcards.shard),
    resources:
        downloads=1,
    log:
        "logs/fetch/shard-{shard}.log",
    shell:
        "ssmttm fetch --params {PARAMS} --manifest {input}/manifest.jsonl --shard {params.shard} --out {output} 2> {log}"


rule select:
    input:
        ancient("data/fetch/shard-{shard}"),
    output:
        directory("data/select/shard-{shard}"),
    params:
        hash=params_hash("select"),
    log:
        "logs/select/shard-{shard}.log",
    shell:
        "ssmttm select --params {PARAMS} --fetched {input} --out {output} 2> {log}"


rule segment:
    input:
        ancient("data/select/shard-{shard}"),
    output:
        directory("data/segment/shard-{shard}"),
    params:
        hash=params_hash("seed", "segment"),
    resources:
        gpu=lambda wildcards: 1 if config["segment"]["vocal_removal"]["enabled"] else 0,
    log:
        "logs/segment/shard-{shard}.log",
    shell:
        "ssmttm segment --params {PARAMS} --selected {input} --out {output} 2> {log}"


rule caption:
    input:
        ancient("data/segment/shard-{shard}"),
    output:
        directory("data/caption/shard-{shard}"),
    params:
        hash=params_hash("seed", "caption"),
    resources:
        gpu=lambda wildcards: 1 if config["caption"]["mode"] == "model" else 0,
    log:
        "logs/caption/shard-{shard}.log",
    shell:
        "ssmttm caption --params {PARAMS} --clips {input} --out {output} 2> {log}"


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


rule corpus_all:
    input:
        expand("data/caption/shard-{shard}", shard=SHARDS),
