"""Two runs at once in one workspace, started as a user starts them: two `ssmttm segment` processes on the same
shard (what `snakemake --nolock`, a job outliving its Slurm allocation or a stage run by hand beside a workflow
does), `snakemake` twice, and `snakemake` beside `dvc repro`.

The second writer of an output waits for the first (ssmttm.locks: an flock beside the output), then writes the same
bytes; with a short `--lock-wait` it stops with one line naming the output and the holder. Snakemake's own directory
lock refuses a second Snakemake whose jobs overlap, and `dvc repro`, whose stages run Snakemake, the same way. After
every case the output equals a single run's, byte for byte, and no temporary or lock file is left.

The first run is held with SIGSTOP once it holds its lock (or its Snakemake job waits for a file), so the two runs
overlap for certain, whatever the machine's load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssmttm import cli
from ssmttm.artifacts import TMP_MARK
from ssmttm.locks import output_lock_path
from tests._kills import CORPUS_STAGES, make_corpus, snapshot

ARGS, OUT = CORPUS_STAGES["segment"]
BIN = Path(sys.executable).parent
RULE = f"""rule segment:
    input: "data/select/shard-00000"
    output: directory("{OUT}")
    shell: "while [ ! -e release ]; do sleep 0.05; done; {sys.executable} -m ssmttm segment --params params.yaml \\
        --selected {{input}} --out {{output}}"
"""
DVC_YAML = f"""stages:
  segment:
    cmd: {BIN}/snakemake --cores 1 --forcerun segment -- {OUT}
    deps: [data/select/shard-00000]
    outs: [{OUT}]
"""


def env() -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "PYTHONPATH": os.pathsep.join(sys.path), "DVC_NO_ANALYTICS": "1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, repo_root) -> tuple[Path, dict[str, bytes]]:
    """A tiny workspace after select (6 tracks, one shard) and the snapshot of one uninterrupted segment run."""
    root = tmp_path_factory.mktemp("two_runs")
    make_corpus(root, repo_root)
    with contextlib.chdir(root):
        for verb in ("manifest", "fetch", "select", "segment"):
            args, _ = CORPUS_STAGES[verb]
            assert cli.main([verb, "--params", "params.yaml", *args]) == 0
    expected = snapshot(root / OUT)
    shutil.rmtree(root / OUT)
    return root, expected


def segment(root: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "ssmttm", "segment", "--params", "params.yaml", *ARGS, *extra]
    return subprocess.Popen(command, cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until(condition, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def first_run_holding_its_lock(root: Path) -> subprocess.Popen:
    """A segment run, stopped (SIGSTOP) once it holds the output's lock."""
    first = segment(root)
    wait_until(lambda: output_lock_path(root / OUT).exists() or first.poll() is not None, "the first run's lock")
    assert first.poll() is None, first.stderr.read()
    os.kill(first.pid, signal.SIGSTOP)
    return first


def assert_single_run_result(root: Path, expected: dict[str, bytes]) -> None:
    made = snapshot(root / OUT)
    made.pop(".snakemake_timestamp", None)  # Snakemake's mark in a directory() output
    assert made == expected
    left = [p.name for p in (root / OUT).parent.iterdir() if TMP_MARK in p.name or p.name.endswith("ssmttm-lock")]
    assert left == []
    shutil.rmtree(root / OUT)


def test_a_second_writer_waits_for_the_first_then_writes_the_same_bytes(workspace):
    root, expected = workspace
    first = first_run_holding_its_lock(root)
    second = segment(root)
    waiting = second.stderr.readline()
    while "waiting up to" not in waiting:
        assert waiting, "the second run ended without waiting"
        waiting = second.stderr.readline()
    assert f"{OUT} is in use (pid {first.pid} on " in waiting
    os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert second.wait(timeout=120) == 0, second.stderr.read()
    assert_single_run_result(root, expected)


def test_with_a_short_lock_wait_the_second_writer_stops_with_one_line(workspace):
    root, expected = workspace
    first = first_run_holding_its_lock(root)
    try:
        second = segment(root, "--lock-wait", "1")
        _, stderr = second.communicate(timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {OUT} is being written by another run (pid {first.pid} on "), stderr
    assert last.endswith("then rerun the same command") and "Traceback" not in stderr
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert_single_run_result(root, expected)


def snakemake_started(root: Path) -> subprocess.Popen:
    """`snakemake` whose segment job waits for the file `release`, returned once its job runs (it holds
    Snakemake's lock from then on)."""
    (root / "Snakefile").write_text(RULE)
    (root / "release").unlink(missing_ok=True)
    first = subprocess.Popen(
        [f"{BIN}/snakemake", "--cores", "1"], cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    locks = root / ".snakemake/locks"
    wait_until(lambda: first.poll() is not None or (locks.is_dir() and any(locks.iterdir())), "snakemake's lock")
    assert first.poll() is None, first.stderr.read().decode()
    return first


def release(root: Path, first: subprocess.Popen) -> None:
    (root / "release").touch()
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()[-3000:]


@pytest.mark.parametrize("second_engine", ["snakemake", "dvc repro"])
def test_a_second_engine_is_refused_by_snakemakes_lock(workspace, second_engine):
    root, expected = workspace
    if second_engine == "dvc repro" and not (root / ".dvc").is_dir():
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run([f"{BIN}/dvc", "init", "-q"], cwd=root, env=env(), check=True)
        (root / "dvc.yaml").write_text(DVC_YAML)
    first = snakemake_started(root)
    try:
        command = [f"{BIN}/snakemake", "--cores", "1"] if second_engine == "snakemake" else [f"{BIN}/dvc", "repro"]
        second = subprocess.run(command, cwd=root, env=env(), capture_output=True, text=True, timeout=300)
    finally:
        release(root, first)
    assert second.returncode != 0
    said = second.stdout + second.stderr
    assert "LockException" in said and "Directory cannot be locked" in said, said[-3000:]
    if second_engine == "dvc repro":
        assert "ERROR: failed to reproduce 'segment'" in said, said[-3000:]
    assert_single_run_result(root, expected)
