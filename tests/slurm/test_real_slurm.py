"""The tiny project on a real one-node Slurm (scripts/slurm/up.sh), through a copy of workflow/profiles/slurm that
differs only in account and partitions: directly with Snakemake, with a train_lm job `scancel`led mid-run, and
through `SSMTTM_SNAKEMAKE_PROFILE=... dvc repro`. Each result must equal a local, uninterrupted run's bytes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm.conftest import make_test_profile, slurm_env
from tests.workflow.project import commit, dvc, make_project, run, set_param, snakemake, tree_hashes

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(3600)]

# Long enough that a train_lm job can be cancelled after its first checkpoint and before its end.
LONG_TRAIN = {"train_lm.max_steps": 400, "train_lm.checkpoint_every": 100, "train_lm.val_every": 100}
RUN_TIMEOUT_S = 1800
PROFILE = "slurm-test"  # the copy, inside the project


def _project(repo_root: Path, folder: Path) -> Path:
    project = make_project(repo_root, folder)
    for dotted, value in LONG_TRAIN.items():
        set_param(project, dotted, value)
    make_test_profile(repo_root, project / PROFILE)
    commit(project, "longer train_lm; slurm test profile")
    return project


def _artifacts(project: Path) -> dict[str, str]:
    """tree_hashes, but a `.recipe` file only where the project's copied src/ is the reference's: a recipe hashes
    the stage's source files, which can change between two copies of a working tree being edited."""
    hashes = tree_hashes(project)
    hashes["src"] = "".join(sorted(tree_hashes(project, ("src",)).values()))
    return hashes


def _same_artifacts(got: dict[str, str], expected: dict[str, str]) -> None:
    same_code = got["src"] == expected["src"]

    def keep(name: str) -> bool:
        return name != "src" and (same_code or not name.endswith(".recipe"))

    assert {k: v for k, v in got.items() if keep(k)} == {k: v for k, v in expected.items() if keep(k)}


@pytest.fixture(scope="module")
def reference(repo_root, tmp_path_factory) -> dict[str, str]:
    """The bytes of a local, uninterrupted run of the same project (bare snakemake)."""
    project = _project(repo_root, tmp_path_factory.mktemp("slurm") / "reference")
    run(snakemake(), project, timeout=RUN_TIMEOUT_S)
    return _artifacts(project)


def _jobs() -> list[dict[str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, check=True).stdout
    return [dict(zip(("id", "comment", "state"), line.split("|"), strict=True)) for line in out.splitlines() if line]


def _running_train_lm_with_checkpoint(project: Path) -> tuple[str, str] | None:
    """(slurm job id, run) of a running train_lm job whose run folder holds a checkpoint, or None."""
    for job in _jobs():
        match = re.match(r"rule_train_lm_wildcards_(\w+)", job["comment"])
        if job["state"] == "RUNNING" and match:
            run_name = match.group(1)
            if any((project / "results/train_lm" / run_name).glob("step-*/trainer_state.pt")):
                return job["id"], run_name
    return None


def _no_process_uses(project: Path) -> list[str]:
    """Command lines of live processes that name the project folder (an orphaned trainer would be one)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(project) in text:
            found.append(text)
    return found


def test_snakemake_on_slurm_finishes_the_run_after_a_scancelled_train_lm(slurm_cluster, repo_root, tmp_path, reference):
    project = _project(repo_root, tmp_path / "project")
    log_path = tmp_path / "snakemake.log"
    command = [str(Path(sys.executable).parent / "snakemake"), "--profile", PROFILE]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=project, env=slurm_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            target = None
            while target is None and proc.poll() is None and time.monotonic() < deadline:
                target = _running_train_lm_with_checkpoint(project)
                time.sleep(0.5)
            assert target is not None, f"no train_lm job ran with a checkpoint:\n{log_path.read_text()[-6000:]}"
            job_id, run_name = target
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
    train_log = (project / "logs/train_lm" / f"{run_name}.log").read_text()
    assert "Restored all states from the checkpoint" in train_log  # the retry resumed, it did not start over
    history = [json.loads(line) for line in (project / "results/train_lm" / run_name / "history.jsonl").open()]
    steps = [row["step"] for row in history if "loss" in row]
    assert len(steps) == len(set(steps))  # one writer: no duplicate rows
    # Nothing left behind: no job, no process, no temporary or lock file; the bytes of an uninterrupted run.
    assert not [job for job in _jobs() if job["comment"].startswith("rule_")]
    assert _no_process_uses(project) == []
    leftovers = [p for p in (project / "results").rglob("*") if ".tmp-" in p.name or p.name == ".run.lock"]
    assert leftovers == []
    _same_artifacts(_artifacts(project), reference)


def test_dvc_repro_on_slurm_matches_the_local_run(slurm_cluster, repo_root, tmp_path, reference):
    project = _project(repo_root, tmp_path / "project")
    env = slurm_env(SSMTTM_SNAKEMAKE_PROFILE=PROFILE)
    proc = subprocess.run(dvc("repro"), cwd=project, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
    assert "SLURM jobid" in proc.stdout + proc.stderr  # the jobs went through Slurm
    status = run(dvc("status"), project)
    assert "up to date" in status, status
    _same_artifacts(_artifacts(project), reference)
