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
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from ssmttm.artifacts import TMP_MARK

RATE = 16000
TRACKS = 6
# stage -> (arguments after the verb, output folder, other folders whose temporaries it writes)
STAGES = {
    "manifest": (["--out", "data/manifest"], "data/manifest", []),
    "fetch": (
        ["--manifest", "data/manifest/manifest.jsonl", "--shard", "0", "--out", "data/fetch/shard-00000"],
        "data/fetch/shard-00000",
        ["data/cache/fetch", "data/cache/fetch/audio", "data/cache/fetch/items"],
    ),
    "select": (
        ["--fetched", "data/fetch/shard-00000", "--out", "data/select/shard-00000"],
        "data/select/shard-00000",
        [],
    ),
    "segment": (
        ["--selected", "data/select/shard-00000", "--out", "data/segment/shard-00000"],
        "data/segment/shard-00000",
        [],
    ),
    "caption": (
        ["--clips", "data/segment/shard-00000", "--out", "data/caption/shard-00000"],
        "data/caption/shard-00000",
        [],
    ),
}
RANDOM_KILLS = 2


def _command(verb: str) -> list[str]:
    return [sys.executable, "-m", "ssmttm", verb, "--params", "params.yaml", *STAGES[verb][0]]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(root: Path, folders: list[str]) -> list[Path]:
    return [
        p for folder in folders if (root / folder).is_dir() for p in (root / folder).iterdir() if TMP_MARK in p.name
    ]


def _run(root: Path, verb: str, kill_after_tmp_s: float | None = None) -> tuple[float | None, float, bool]:
    """Run a stage, watching for its temporary output. Without `kill_after_tmp_s` it runs to the end; with it, it
    gets a SIGKILL that many seconds after the temporary appears (or at once if it finished first).

    Returns (seconds until the temporary appeared, seconds until the end or the kill, whether it was still
    running when killed).
    """
    pattern = f"{Path(STAGES[verb][1]).name}{TMP_MARK}*"
    parent = (root / STAGES[verb][1]).parent
    start = time.monotonic()
    process = subprocess.Popen(_command(verb), cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = None
    while process.poll() is None and time.monotonic() - start < 300:
        if seen is None and parent.is_dir() and any(parent.glob(pattern)):
            seen = time.monotonic() - start
        if seen is not None and kill_after_tmp_s is not None and time.monotonic() - start >= seen + kill_after_tmp_s:
            break
        time.sleep(0.002)
    running = process.poll() is None
    if kill_after_tmp_s is None:
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    else:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    process.stderr.close()
    return seen, time.monotonic() - start, running


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repo_root) -> tuple[Path, dict[str, float], dict[str, dict[str, bytes]]]:
    """A working folder with every corpus stage run once, uninterrupted: (folder, seconds each stage spends
    writing its temporary output, output snapshots)."""
    root = tmp_path_factory.mktemp("kills")
    lines = ["id,url,licence,tags"]
    (root / "src").mkdir()
    t = np.arange(8 * RATE) / RATE
    for k in range(TRACKS):
        sf.write(str(root / f"src/t{k}.wav"), 0.3 * np.sin(2 * np.pi * (220 + 55 * k) * t), RATE)
        lines.append(f't{k},file:src/t{k}.wav,MIT,"{{""mood"": ""calm"", ""genre"": ""ambient""}}"')
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["corpus"].update({"source": "manifest", "manifest_path": "m.csv", "n_shards": 1})
    params["fetch"].update({"cache_dir": "data/cache/fetch", "retries": 0, "allow_file_urls": True})
    params["select"].update({"min_duration_s": 1, "max_duration_s": 60})
    params["segment"].update({"clip_seconds": 1, "hop_seconds": 1, "min_tail_seconds": 0.5})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    writing, snapshots = {}, {}
    for verb in STAGES:
        seen, total, _ = _run(root, verb)
        writing[verb] = total - (seen if seen is not None else total)
        snapshots[verb] = _snapshot(root / STAGES[verb][1])
    return root, writing, snapshots


@pytest.mark.parametrize("verb", list(STAGES))
def test_sigkill_at_random_times_leaves_nothing_behind(corpus, verb):
    """Kills at seeded random points of the write phase (plus one right as it starts): after each, the output
    path holds nothing or the complete output; the rerun equals the uninterrupted run and leaves no temporary."""
    root, writing, snapshots = corpus
    _, out, extra_folders = STAGES[verb]
    folders = [str(Path(out).parent), *extra_folders]
    rng = random.Random(f"kills-{verb}")
    if verb == "fetch":
        shutil.rmtree(root / "data/cache/fetch")  # the kills then hit downloads
    kills_while_running = 0
    for after_s in [0.0] + [rng.uniform(0.0, 1.2) * writing[verb] for _ in range(RANDOM_KILLS)]:
        _, _, running = _run(root, verb, kill_after_tmp_s=after_s)
        kills_while_running += running
        if running:
            assert _temporaries(root, folders), f"{verb}: killed mid-write, so its temporary must still be there"
        if (root / out).exists():  # the earlier complete output, or this run's if it finished before the kill
            assert _snapshot(root / out) == snapshots[verb], f"{verb}: a partial output after a kill at +{after_s}s"
    assert kills_while_running >= 2
    _run(root, verb)
    assert _snapshot(root / out) == snapshots[verb]
    assert _temporaries(root, folders) == []


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
