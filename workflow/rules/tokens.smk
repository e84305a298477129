# Codec and tokens: one codec for the corpus, then one Parquet shard per corpus shard and a manifest.


rule codec:
    input:
        expand("data/segment/shard-{shard}", shard=SHARDS),
        changed("codec", "data/codec"),
    output:
        directory("data/codec"),
    params:
        recipe=recipe("codec"),
        clips=expand("data/segment/shard-{shard}", shard=SHARDS),
    resources:
        gpu=gpus(lambda c: c["codec"]["mode"] == "train" and on_gpu(c["codec"].get("device", "cpu"))),
    log:
        "logs/codec.log",
    shell:
        "ssmttm codec --params {PARAMS} --clips {params.clips} --out {output} 2> {log}" + record("{output}")


rule tokenize:
    input:
        clips="data/segment/shard-{shard}",
        captions="data/caption/shard-{shard}",
        codec="data/codec",
        changed=changed("tokenize", "data/tokenize/shard-{shard}.parquet", is_dir=False),
    output:
        shard="data/tokenize/shard-{shard}.parquet",
        failures="data/tokenize/shard-{shard}.failures.tsv",
    params:
        recipe=recipe("tokenize"),
    resources:
        gpu=gpus(lambda c: on_gpu(c["tokenize"].get("device", "auto"))),
    log:
        "logs/tokenize/shard-{shard}.log",
    shell:
        "ssmttm tokenize --params {PARAMS} --clips {input.clips} --captions {input.captions} --codec {input.codec}"
        " --out {output.shard} 2> {log}" + record("{output.shard}", is_dir=False)


rule tokenize_manifest:
    input:
        expand("data/tokenize/shard-{shard}.parquet", shard=SHARDS),
        changed("tokenize", "data/tokenize/_manifest.json", is_dir=False),
    output:
        "data/tokenize/_manifest.json",
    params:
        recipe=recipe("tokenize"),
    log:
        "logs/tokenize/manifest.log",
    shell:
        "ssmttm tokenize --params {PARAMS} --finalize data/tokenize 2> {log}" + record("{output}", is_dir=False)


rule tokens_all:
    input:
        "data/tokenize/_manifest.json",
