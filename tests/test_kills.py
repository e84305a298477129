"""Real SIGKILLs of the corpus stages: a `kill -9` skips every `finally`, so only the atomic rename protects outputs.

Each stage runs as `python -m ssmttm <verb>` (as Snakemake runs it) over a small local corpus and is killed with
SIGKILL as its temporary output appears and at seeded random times of its write phase. After every kill,
whatever exists at the output path must be a complete output, identical to an uninterrupted run. The rerun must
finish, equal the uninterrupted run byte for byte, and leave no temporary in the output's folder (a DVC-tracked
folder) or in the fetch cache.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssmttm.artifacts import TMP_MARK
from tests._kills import CORPUS_STAGES, Stage, kill_once, make_corpus, outputs, rerun_matches, run_stage

FETCH_CACHE = ("data/cache/fetch", "data/cache/fetch/audio", "data/cache/fetch/items")
STAGES = {verb: Stage(verb, tuple(args), (out,)) for verb, (args, out) in CORPUS_STAGES.items()}
STAGES["fetch"] = Stage(  # its write phase starts with the downloads into the cache
    "fetch",
    STAGES["fetch"].args,
    STAGES["fetch"].outputs,
    FETCH_CACHE,
    STAGES["fetch"].watched + tuple(f"{folder}/*{TMP_MARK}*" for folder in FETCH_CACHE),
)
RANDOM_KILLS = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repo_root) -> tuple[Path, dict[str, float], dict[str, dict]]:
    """A working folder with every corpus stage run once, uninterrupted: (folder, seconds each stage spends
    writing, from its temporary's appearance to its output's, and output snapshots)."""
    root = tmp_path_factory.mktemp("kills")
    make_corpus(root, repo_root)
    writing, snapshots = {}, {}
    for verb, stage in STAGES.items():
        run = run_stage(root, stage)
        writing[verb] = run.writing
        snapshots[verb] = outputs(root, stage)
    return root, writing, snapshots


@pytest.mark.parametrize("verb", list(STAGES))
def test_sigkill_at_random_times_leaves_nothing_behind(corpus, verb):
    """Kills at seeded random points of the write phase (plus one right as it starts): after each, the output
    path holds nothing or the complete output; the rerun equals the uninterrupted run and leaves no temporary."""
    root, writing, snapshots = corpus
    stage = STAGES[verb]
    rng = random.Random(f"kills-{verb}")
    if verb == "fetch":
        shutil.rmtree(root / "data/cache/fetch")  # the kills then hit downloads (the write phase starts with them)
    mid_write = 0
    # Kills inside the first 80% of the write phase measured in the uninterrupted run. A phase of a few milliseconds
    # (select) varies between runs by about its own length, so one of them may land after the rename: the test
    # needs at least one kill that interrupted a write (a temporary left behind), not every one.
    for after_s in [0.0] + [rng.uniform(0.0, 0.8) * writing[verb] for _ in range(RANDOM_KILLS)]:
        running, left = kill_once(root, stage, after_s, snapshots[verb])
        mid_write += running and left
    assert mid_write >= 1, f"{verb}: no kill hit the write phase"
    rerun_matches(root, stage, snapshots[verb])


def test_dvc_ignores_temporaries_as_a_second_line_of_defence(repo_root):
    assert "*.tmp-*" in (repo_root / ".dvcignore").read_text().splitlines()


def test_stage_start_removes_only_dead_local_writers_temporaries(tmp_path):
    """A live writer's temporary, or one from another host (a shared file system), is never removed."""
    from ssmttm.artifacts import host_tag, remove_stale_temporaries_in

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "dead": f"shard-00001{TMP_MARK}{dead.pid}-{host_tag()}-0badc0de",
        "live": f"shard-00002{TMP_MARK}{os.getpid()}-{host_tag()}-0badc0de",
        "other_host": f"shard-00003{TMP_MARK}{dead.pid}-{'0' * 6 if host_tag() != '0' * 6 else '1' * 6}-0badc0de",
        "old_style_dead": f"x.wav{TMP_MARK}{dead.pid}-0badc0de",
        "an_output": "shard-00004",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    removed = remove_stale_temporaries_in(tmp_path)
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["old_style_dead"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["live"], names["other_host"], names["an_output"]]
    )
