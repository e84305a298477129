"""Real SIGKILLs of the stages after the corpus: codec (trained, tiny), tokenize (one shard), text_cache, evaluate and
report, each run as `python -m ssmttm <verb>` with the workflow's arguments (workflow/rules/*.smk).

As in tests/test_kills.py: a module fixture runs each stage once, uninterrupted, over a small local corpus (and, for
evaluate and report, over the generate, train-lm and lm-plot folders of tests/report/_fixtures.py, written without
any LM); then each stage is killed as its temporary output appears and at a seeded random time of its write phase
(within its first 80%: the phase's length varies from run to run). After every kill each output path holds nothing
or the complete output; the rerun equals the uninterrupted run byte for byte and leaves no temporary. text_cache's
random kill hits the encoding of the captions (its output is removed first, as a rerun would otherwise hard-link the
previous caches): before it was one atomic folder, a kill there left `data/text_cache/` holding only a temporary.
(train_lm, train_refiner and generate resume rather than restart: their SIGKILL tests are in tests/train,
tests/refine and tests/generate.)
"""

from __future__ import annotations

import contextlib
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ssmttm import cli
from ssmttm.artifacts import TMP_MARK
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.tokens.tokenize import TokenizeConfig, finalize
from tests._kills import CORPUS_STAGES, Run, Stage, kill_once, make_corpus, outputs, rerun_matches, run_stage
from tests.report import _fixtures as fx

SEGMENT, CAPTION, SHARD = "data/segment/shard-00000", "data/caption/shard-00000", "data/tokenize/shard-00000"
TINY = {  # tests/workflow/project.py's TINY_OVERRIDES, for 12 clips of 1 s and cheaper still
    "codec": {
        "train": {
            "steps": 4,
            "batch_size": 2,
            "segment_s": 0.2,
            "eval_clips": 1,
            "eval_seconds": 1.0,
            "log_every": 2,
            "n_codebooks": 2,
            "codebook_size": 64,
        }
    },
    "segment": {"max_clips_per_track": 2},
    "tokenize": {"encode_window_s": 1.0, "row_group_size": 1, "device": "cpu"},  # 12 row groups: a longer write
    "text": {"device": "cpu"},
    "evaluate": {"bootstrap_resamples": 20},
}
RUNS = tuple(f"results/train_lm/{backbone}" for backbone in fx.BACKBONES)
STAGES = {
    "codec": Stage("codec", ("--clips", SEGMENT, "--out", "data/codec"), ("data/codec",)),
    "tokenize": Stage(
        "tokenize",
        ("--clips", SEGMENT, "--captions", CAPTION, "--codec", "data/codec", "--out", f"{SHARD}.parquet"),
        (f"{SHARD}.parquet", f"{SHARD}.failures.tsv"),
        watch=(f"{SHARD}.parquet{TMP_MARK}*",),  # the sidecar's write is too short to aim at
    ),
    "text-cache": Stage(
        "text-cache",
        ("--shards", "data/tokenize", "--out", "data/text_cache"),
        ("data/text_cache",),
        ("data/text_cache",),
    ),
    "evaluate": Stage(
        "evaluate",
        ("--reference", "results/generate/reference", "--generated")
        + tuple(f"results/generate/{backbone}" for backbone in fx.BACKBONES)
        + ("--out", "results/evaluate"),
        ("results/evaluate",),
    ),
    "report": Stage(
        "report",
        ("--generated", "results/generate", "--evaluate", "results/evaluate", "--runs", *RUNS)
        + ("--lm-plot", "results/lm_plot", "--codec", "data/codec", "--out", "results/report"),
        ("results/report",),
    ),
}
RANDOM_KILLS = 1


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, repo_root) -> tuple[Path, dict[str, Run], dict[str, dict]]:
    """A working folder with the corpus stages and then each stage of STAGES run once, uninterrupted: (folder, each
    stage's run, its output snapshots)."""
    root = tmp_path_factory.mktemp("kills_later")
    make_corpus(root, repo_root, TINY)
    with contextlib.chdir(root):  # the corpus stages are inputs here: run in this process, it is faster
        for verb, (args, _) in CORPUS_STAGES.items():
            assert cli.main([verb, "--params", "params.yaml", *args]) == 0
    fx.write_generate(root / "results", n_captions=2)  # the generate folders of two backbones and the reference
    fx.write_training(root / "results")  # train_lm runs and lm_plot (its codec folder is unused: data/codec is)
    runs, snapshots = {}, {}

    def run_in_order(verbs: list[str]) -> None:
        for verb in verbs:
            runs[verb], snapshots[verb] = run_stage(root, STAGES[verb]), outputs(root, STAGES[verb])
            if verb == "tokenize":  # the workflow's tokenize_manifest job (text_cache records its hash)
                params = load_params(root / "params.yaml")
                tokenize = section_to_dataclass(TokenizeConfig, params["tokenize"])
                finalize(root / "data/tokenize", tokenize, params["seed"])

    # The two independent chains side by side: on 2 cores, about the time of the longer one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        results = pool.submit(run_in_order, ["evaluate", "report"])
        run_in_order(["codec", "tokenize", "text-cache"])
        results.result()
    return root, runs, snapshots


@pytest.mark.parametrize("verb", list(STAGES))
def test_sigkill_at_random_times_leaves_nothing_behind(upstream, verb):
    """Kills right as the temporary output appears and at a seeded random point of the write phase: after each,
    every output path holds nothing or the complete output; the rerun equals the uninterrupted run and leaves no
    temporary."""
    root, runs, snapshots = upstream
    stage = STAGES[verb]
    assert runs[verb].seen is not None, f"{verb}: no temporary of its output was seen: is it written atomically?"
    rng = random.Random(f"kills-{verb}")
    mid_write = 0
    for k, after_s in enumerate([0.0] + [rng.uniform(0.0, 0.8) * runs[verb].writing for _ in range(RANDOM_KILLS)]):
        if verb == "text-cache" and k == 1:
            # The first kill hit the reuse of the previous output's caches (hard links); the next ones hit encoding.
            shutil.rmtree(root / "data/text_cache")
        running, left = kill_once(root, stage, after_s, snapshots[verb])
        mid_write += running and left
    assert mid_write >= 1, f"{verb}: no kill hit the write phase"
    rerun_matches(root, stage, snapshots[verb])
