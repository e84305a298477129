# The second stage and audio: the DiscoDiff-style refiner, then WAVs from every kept checkpoint of every trained LM.
# Like train_lm, train_refiner declares its metrics.json rather than its folder: a killed run keeps its checkpoints
# and resumes from them. generate declares each run's summary.json, not its folder: the WAVs already written with the
# same settings are kept, so a rerun (or a kill) regenerates only what is missing or was made differently.
REFERENCE = pipeline.REFERENCE_RUN


rule train_refiner:
    input:
        shards="data/tokenize/_manifest.json",
        text_cache="data/text_cache",
        changed=changed("train_refiner", "results/train_refiner/metrics.json", is_dir=False),
    output:
        "results/train_refiner/metrics.json",
    params:
        recipe=recipe("train_refiner"),
        run="results/train_refiner",
    threads: lambda wildcards: config["train_refiner"].get("num_threads") or 1
    resources:
        gpu=gpus(lambda c: on_gpu(c["train_refiner"].get("device", "auto"))),
    log:
        "logs/train_refiner.log",
    shell:
        "ssmttm train-refiner --params {PARAMS} --shards data/tokenize --text-cache {input.text_cache}"
        " --out {params.run} 2> {log}" + record("{output}", is_dir=False)


rule generate:
    input:
        lm="results/train_lm/{backbone}/metrics.json",
        refiner="results/train_refiner/metrics.json",
        codec="data/codec",
        shards="data/tokenize/_manifest.json",
        changed=changed("generate", "results/generate/{backbone}/summary.json", is_dir=False),
    output:
        "results/generate/{backbone}/summary.json",
    wildcard_constraints:
        backbone="|".join(BACKBONES),
    params:
        recipe=recipe("generate"),
        out="results/generate/{backbone}",
    resources:
        gpu=gpus(lambda c: on_gpu(c["generate"].get("device", "auto"))),
    log:
        "logs/generate/{backbone}.log",
    shell:
        "ssmttm generate --params {PARAMS} --lm-run results/train_lm/{wildcards.backbone} --refiner results/train_refiner/final"
        " --codec {input.codec} --shards data/tokenize --out {params.out} 2> {log}" + record("{output}", is_dir=False)


rule generate_reference:
    input:
        refiner="results/train_refiner/metrics.json",
        codec="data/codec",
        shards="data/tokenize/_manifest.json",
        clips=expand("data/segment/shard-{shard}", shard=SHARDS),
        changed=changed("generate", f"results/generate/{REFERENCE}/summary.json", is_dir=False, run=REFERENCE),
    output:
        f"results/generate/{REFERENCE}/summary.json",
    params:
        recipe=recipe("generate", run=REFERENCE),
        out=f"results/generate/{REFERENCE}",
    resources:
        gpu=gpus(lambda c: on_gpu(c["generate"].get("device", "auto"))),  # the refiner and codec variants
    log:
        "logs/generate/reference.log",
    shell:
        "ssmttm generate --params {PARAMS} --reference --refiner results/train_refiner/final --codec {input.codec}"
        " --shards data/tokenize --clips {input.clips} --out {params.out} 2> {log}" + record("{output}", is_dir=False)


rule generate_all:
    input:
        expand("results/generate/{run}/summary.json", run=pipeline.runs("generate", config)),


rule evaluate:
    input:
        expand("results/generate/{run}/summary.json", run=pipeline.runs("generate", config)),
        changed("evaluate", "results/evaluate"),
    output:
        directory("results/evaluate"),
    params:
        recipe=recipe("evaluate"),
        generated=expand("results/generate/{backbone}", backbone=BACKBONES),
    threads: lambda wildcards: config["evaluate"].get("num_threads") or 1
    resources:
        gpu=gpus(lambda c: on_gpu(c["evaluate"].get("models", {}).get("device", "cpu"))),  # the embedding networks
    log:
        "logs/evaluate.log",
    shell:
        "ssmttm evaluate --params {PARAMS} --reference results/generate/{REFERENCE} --generated {params.generated}"
        " --out {output} 2> {log}" + record("{output}")


rule report:
    input:
        "data/codec",
        expand("results/train_lm/{backbone}/metrics.json", backbone=BACKBONES),
        expand("results/generate/{run}/summary.json", run=pipeline.runs("generate", config)),
        "results/evaluate",
        "results/lm_plot",
        changed("report", "results/report"),
    output:
        report(
            directory("results/report"),
            htmlindex="index.html",
            category="Results",
            caption="../report/caption.rst",
        ),
    params:
        recipe=recipe("report"),
        runs=expand("results/train_lm/{backbone}", backbone=BACKBONES),
    log:
        "logs/report.log",
    shell:
        "ssmttm report --params {PARAMS} --generated results/generate --evaluate results/evaluate --runs {params.runs}"
        " --lm-plot results/lm_plot --codec data/codec --out {output} 2> {log}" + record("{output}")
