"""The paper test profile (configs/paper-test.yaml in a scratch workspace, as `make paper-test` makes it:
scripts/paper_test/workspace.py) on a real one-node Slurm (scripts/slurm/up.sh), through a copy of
workflow/profiles/slurm that differs only in account and partitions (tests/slurm/conftest.py):

- `SSMTTM_SNAKEMAKE_PROFILE=<copy> dvc repro` runs the whole paper DAG through Slurm, uninterrupted (each DVC stage
  runs Snakemake with the profile's copy, so every job of the DAG goes through the executor and sbatch);
- then, in that same workspace, one run's training is thrown away and `snakemake --profile <copy>` rebuilds it while
  its train_lm job is `scancel`led after its first checkpoint: the run finishes (Snakemake notices the cancelled job
  and retries it), the retry resumes from the checkpoint, nothing is left behind (no job, no process, no temporary
  or lock file, no duplicate history row), every versioned file equals the uninterrupted run's bytes (README
  "Interrupted runs": a resumed run is byte-identical) and DVC finds the workspace up to date.

Rebuilding one run in the DVC-built workspace, not a second whole workspace, keeps the module near 13 minutes on
2 idle cores (the second build was another 14). The workspace passes scripts/paper_test/check.py (the whole matrix,
and the stand-in labels) after each part. One run is longer than the profile's
(`runs.prefix_simba_small.train_lm.max_steps`), so that there is time to cancel it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scripts.paper_test import check, summary, workspace
from tests.slurm.conftest import make_test_profile, slurm_env
from tests.workflow.project import dvc

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(7200)]

REPO = Path(__file__).resolve().parents[2]
PROFILE = "slurm-test"  # the profile's copy, inside the workspace
RUN_TIMEOUT_S = 3600
CANCELLED_RUN = "prefix_simba_small"  # one block: the quickest steps, so the longer run costs least
LONGER = {f"runs.{CANCELLED_RUN}.train_lm.max_steps": 40}  # checkpoints every 2 steps (the profile's)


def _source_digest() -> str:
    """sha256 over the package's source files: the code every job runs (and hashes into provenance and recipes)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "src/ssmttm").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def _code_hash_only(name: str, provenance_before: dict[str, str], folder: Path) -> bool:
    """Whether a versioned file changed only in code hashes: a recipe, or a provenance.json equal to its text before
    but for `code_version`."""
    if name.endswith(("/_recipe", ".recipe")):
        return True
    if name in provenance_before:
        x, y = json.loads(provenance_before[name]), json.loads((folder / name).read_text())
        return {**x, "code_version": None} == {**y, "code_version": None}
    return False


@pytest.fixture(scope="module")
def source_at_start() -> str:
    return _source_digest()


@pytest.fixture(scope="module")
def scratch(slurm_cluster, tmp_path_factory, source_at_start):
    """(scratch folder, served files, stand-ins), the local server up for the whole module."""
    root = tmp_path_factory.mktemp("paper-slurm")
    standins = workspace.build_standins(root)
    with workspace.served(root) as served_root:
        yield root, served_root, standins


def _workspace(scratch, name: str) -> tuple[Path, dict[str, str]]:
    """A paper test workspace with the longer run and the profile's copy; the environment its jobs get."""
    root, served_root, standins = scratch
    folder = workspace.make_workspace(root / name, served_root, standins)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for dotted, value in LONGER.items():
        *parents, leaf = dotted.split(".")
        section = params
        for key in parents:
            section = section.setdefault(key, {})  # a run's own train_lm section may not be there yet
        section[leaf] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    make_test_profile(REPO, folder / PROFILE)
    return folder, workspace.standin_env(standins, slurm_env(SSMTTM_SNAKEMAKE_PROFILE=PROFILE))


@pytest.fixture(scope="module")
def dvc_on_slurm(scratch):
    """(workspace, output) of `dvc repro` through Slurm, uninterrupted."""
    folder, env = _workspace(scratch, "dvc")
    workspace.init_dvc_repo(folder)
    started = time.monotonic()
    proc = subprocess.run(dvc("repro"), cwd=folder, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    print(f"dvc repro on slurm: {time.monotonic() - started:.0f} s")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    return folder, output, env


def test_dvc_repro_runs_the_paper_test_profile_through_slurm(dvc_on_slurm):
    folder, output, _ = dvc_on_slurm
    assert "SLURM jobid" in output or "SLURM run ID" in output, output[-4000:]  # the jobs went through Slurm
    status = subprocess.run(dvc("status"), cwd=folder, capture_output=True, text=True, check=True).stdout
    assert "up to date" in status, status
    assert check.check(folder) == []


def _jobs() -> list[dict[str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, check=True).stdout
    return [dict(zip(("id", "comment", "state"), line.split("|"), strict=True)) for line in out.splitlines() if line]


def _running_with_checkpoint(folder: Path, run: str) -> str | None:
    """The slurm job id of `run`'s train_lm job while it runs and its run folder holds a checkpoint, or None."""
    for job in _jobs():
        if job["state"] == "RUNNING" and job["comment"] == f"rule_train_lm_wildcards_{run}":
            if any((folder / "results/train_lm" / run).glob("step-*/trainer_state.pt")):
                return job["id"]
    return None


def _processes_naming(folder: Path) -> list[str]:
    """Command lines of live processes that name the workspace (an orphaned trainer would be one)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in text:
            found.append(text)
    return found


def test_snakemake_on_slurm_finishes_the_run_after_a_scancelled_train_lm(dvc_on_slurm, tmp_path, source_at_start):
    folder, _, env = dvc_on_slurm
    before = summary.versioned_hashes(folder)  # the versioned files as the uninterrupted dvc repro built them
    provenance_before = {name: (folder / name).read_text() for name in before if name.endswith("provenance.json")}
    shutil.rmtree(folder / "results/train_lm" / CANCELLED_RUN)
    log_path = tmp_path / "snakemake.log"
    command = [str(Path(sys.executable).parent / "snakemake"), "--profile", PROFILE]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            job_id = None
            while job_id is None and proc.poll() is None and time.monotonic() < deadline:
                job_id = _running_with_checkpoint(folder, CANCELLED_RUN)
                time.sleep(0.5)
            assert job_id is not None, (
                f"{CANCELLED_RUN}: no running train_lm job with a checkpoint:\n" + (log_path.read_text()[-6000:])
            )
            subprocess.run(["scancel", job_id], check=True)
            rc = proc.wait(timeout=max(60.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)
    output = log_path.read_text()
    assert rc == 0, output[-8000:]
    assert re.search(rf"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'", output), output[-8000:]
    assert "Trying to restart job" in output
    train_log = (folder / "logs/train_lm" / f"{CANCELLED_RUN}.log").read_text()
    assert "Restored all states from the checkpoint" in train_log  # the retry resumed, it did not start over
    history = [json.loads(line) for line in (folder / "results/train_lm" / CANCELLED_RUN / "history.jsonl").open()]
    steps = [row["step"] for row in history if "loss" in row]
    assert len(steps) == len(set(steps))  # one writer: no duplicate rows
    # Nothing left behind: no job, no process, no temporary or lock file.
    assert not [job for job in _jobs() if job["comment"].startswith("rule_")]
    assert _processes_naming(folder) == []
    leftovers = [
        p
        for p in (folder / "results").rglob("*")
        if ".tmp-" in p.name or p.name == ".run.lock" or p.name.endswith(".ssmttm-lock")
    ]
    assert leftovers == []
    assert check.check(folder) == []
    # The bytes of the uninterrupted run, in every versioned file (the retrained run and what Snakemake rebuilt after
    # it). Where the package's source was edited during the session (a working tree shared with others), the code
    # hashes in provenance and recipes may differ between the two runs, and only they.
    after = summary.versioned_hashes(folder)
    assert set(after) == set(before), sorted(set(after) ^ set(before))[:20]
    differ = sorted(name for name in before if before[name] != after[name])
    if _source_digest() != source_at_start:
        differ = [name for name in differ if not _code_hash_only(name, provenance_before, folder)]
    assert differ == []
    status = subprocess.run(dvc("status"), cwd=folder, capture_output=True, text=True, check=True).stdout
    assert "up to date" in status, status
