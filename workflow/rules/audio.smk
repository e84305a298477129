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
        lm="results/train_lm/{run}/metrics.json",
        refiner="results/train_refiner/metrics.json",
        codec="data/codec",
        shards="data/tokenize/_manifest.json",
        changed=changed("generate", "results/generate/{run}/summary.json", is_dir=False),
    output:
        "results/generate/{run}/summary.json",
    wildcard_constraints:
        run=one_of(RUNS),
    params:
        recipe=recipe("generate"),
        out="results/generate/{run}",
    resources:
        gpu=gpus(lambda c: on_gpu(c["generate"].get("device", "auto"))),
    log:
        "logs/generate/{run}.log",
    shell:
        "ssmttm generate --params {PARAMS} --lm-run results/train_lm/{wildcards.run} --refiner results/train_refiner/final"
        " --codec {input.codec} --shards data/tokenize --out {params.out} 2> {log}" + record("{output}", is_dir=False)


# A reference system from public weights (params `baselines`, e.g. MusicGen-small): the same captions and seeds as
# the runs; "not computed" with its reason in summary.json when the weights are absent.
rule generate_baseline:
    input:
        shards="data/tokenize/_manifest.json",
        changed=changed("generate", "results/generate/{run}/summary.json", is_dir=False),
    output:
        "results/generate/{run}/summary.json",
    wildcard_constraints:
        run=one_of(BASELINES),
    params:
        recipe=recipe("generate"),
        out="results/generate/{run}",
    resources:
        gpu=lambda wildcards: int(on_gpu(config["baselines"][wildcards.run].get("device", "auto"))),
    log:
        "logs/generate/{run}.log",
    shell:
        "ssmttm generate --params {PARAMS} --baseline {wildcards.run} --shards data/tokenize --out {params.out}"
        " 2> {log}" + record("{output}", is_dir=False)


# The evaluation's reference audio where the caption set has its own (MusicCaps: 10 s of each YouTube clip from
# start_s), fetched on the submit host like the corpus; for the test split it records that nothing is fetched.
rule fetch_references:
    input:
        changed("fetch_references", "data/fetch_references"),
    output:
        directory("data/fetch_references"),
    params:
        recipe=recipe("fetch_references"),
    log:
        "logs/fetch_references.log",
    shell:
        "ssmttm fetch-references --params {PARAMS} --out {output} 2> {log}" + record("{output}")


rule generate_reference:
    input:
        refiner="results/train_refiner/metrics.json",
        codec="data/codec",
        shards="data/tokenize/_manifest.json",
        clips=expand("data/segment/shard-{shard}", shard=SHARDS),
        fetched="data/fetch_references",
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
        " --shards data/tokenize --clips {input.clips} --fetched {input.fetched} --out {params.out} 2> {log}"
        + record("{output}", is_dir=False)


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
        generated=expand("results/generate/{run}", run=RUNS + BASELINES),
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
        expand("results/train_lm/{run}/metrics.json", run=RUNS),
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
        runs=expand("results/train_lm/{run}", run=RUNS),
    log:
        "logs/report.log",
    shell:
        "ssmttm report --params {PARAMS} --generated results/generate --evaluate results/evaluate --runs {params.runs}"
        " --lm-plot results/lm_plot --codec data/codec --out {output} 2> {log}" + record("{output}")
