# Language models: one training run per named run (params `runs`: a backbone plus its own overrides), all sharing
# the token shards and the text-encoder cache. A run's recipe hashes only its own resolved config (its `runs` entry
# applied to `lm` and `train_lm`), so adding, removing or changing one run retrains no other run.
# The declared output is the run's metrics.json, not the run folder: Snakemake deletes a job's outputs before
# rerunning it, and a killed run (e.g. at a slurm time limit) must keep its checkpoints to resume from. A run made
# with other params is moved to `previous/<run key>/` in the run folder, never deleted.


def lm_gpus(c):
    """GPUs of one training job: Lightning's `devices` per node (1 for "auto"), unless it trains on the CPU."""
    train = c["train_lm"]
    if train.get("accelerator", "auto") == "cpu":
        return 0
    devices = train.get("devices", 1)
    return devices if isinstance(devices, int) else 1


rule text_cache:
    input:
        "data/tokenize/_manifest.json",
        changed("text_cache", "data/text_cache"),
    output:
        directory("data/text_cache"),
    params:
        recipe=recipe("text_cache"),
    resources:
        gpu=gpus(lambda c: on_gpu(c["text"].get("device", "auto"))),  # flan-t5 over every caption
    log:
        "logs/text_cache.log",
    shell:
        "ssmttm text-cache --params {PARAMS} --shards data/tokenize --out {output} 2> {log}" + record("{output}")


rule train_lm:
    input:
        shards="data/tokenize/_manifest.json",
        text_cache="data/text_cache",
        changed=changed("train_lm", "results/train_lm/{run}/metrics.json", is_dir=False),
    output:
        "results/train_lm/{run}/metrics.json",
    wildcard_constraints:
        run=one_of(RUNS),
    params:
        recipe=recipe("train_lm"),
        run="results/train_lm/{run}",
    threads: lambda wildcards: config["train_lm"].get("num_threads") or 1
    resources:
        gpu=gpus(lm_gpus),
        runtime=lambda wildcards: config["train_lm"].get("max_hours", 1) * 60,
    log:
        "logs/train_lm/{run}.log",
    shell:
        "ssmttm train-lm --params {PARAMS} --shards data/tokenize --text-cache {input.text_cache}"
        " --run {wildcards.run} --out {params.run} 2> {log}" + record("{output}", is_dir=False)


rule lm_plot:
    input:
        expand("results/train_lm/{run}/metrics.json", run=RUNS),
        changed("lm_plot", "results/lm_plot"),
    output:
        directory("results/lm_plot"),
    params:
        recipe=recipe("lm_plot"),
        runs=expand("results/train_lm/{run}", run=RUNS),
    log:
        "logs/lm_plot.log",
    shell:
        "ssmttm lm-plot --params {PARAMS} --runs {params.runs} --out {output} 2> {log}" + record("{output}")


rule lm_all:
    input:
        expand("results/train_lm/{run}/metrics.json", run=RUNS),
