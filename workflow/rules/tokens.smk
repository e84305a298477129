# Codec and tokens: one codec for the corpus, then one Parquet shard per corpus shard and a manifest.


rule codec:
    input:
        ancient(expand("data/segment/shard-{shard}", shard=SHARDS)),
    output:
        directory("data/codec"),
    params:
        hash=params_hash("seed", "codec"),
    resources:
        gpu=lambda wildcards: 1 if config["codec"]["mode"] == "train" and config["codec"].get("device") == "cuda" else 0,
    log:
        "logs/codec.log",
    shell:
        "ssmttm codec --params {PARAMS} --clips {input} --out {output} 2> {log}"


rule tokenize:
    input:
        clips=ancient("data/segment/shard-{shard}"),
        captions=ancient("data/caption/shard-{shard}"),
        codec=ancient("data/codec"),
    output:
        shard="data/tokenize/shard-{shard}.parquet",
        failures="data/tokenize/shard-{shard}.failures.tsv",
    params:
        hash=params_hash("seed", "tokenize"),
    log:
        "logs/tokenize/shard-{shard}.log",
    shell:
        "ssmttm tokenize --params {PARAMS} --clips {input.clips} --captions {input.captions} --codec {input.codec}"
        " --out {output.shard} 2> {log}"


rule tokenize_manifest:
    input:
        expand("data/tokenize/shard-{shard}.parquet", shard=SHARDS),
    output:
        "data/tokenize/_manifest.json",
    params:
        hash=params_hash("seed", "tokenize"),
    log:
        "logs/tokenize/manifest.log",
    shell:
        "ssmttm tokenize --params {PARAMS} --finalize data/tokenize 2> {log}"


rule tokens_all:
    input:
        "data/tokenize/_manifest.json",
