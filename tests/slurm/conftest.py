"""The real one-node Slurm of scripts/slurm/up.sh: the `slurm` tests run against it and are skipped, with the
reason, when it is not there. As root with CI=true the session brings it up itself and takes it down after."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ACCOUNT = "ssmttm_test"  # created by scripts/slurm/up.sh
PARTITIONS = {"cpu": "cpu", "gpu": "gpu"}  # the profile's partition names -> this cluster's


def cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, text=True).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster(repo_root: Path):
    """The cluster, up; skips when it cannot be (not root, or down and not in CI)."""
    if os.geteuid() != 0:
        pytest.skip("slurm tests need root (scripts/slurm/up.sh installs and starts the daemons)")
    started = False
    if not cluster_answers():
        if os.environ.get("CI") != "true":
            pytest.skip("no Slurm cluster up: run scripts/slurm/up.sh as root (CI=true brings it up by itself)")
        subprocess.run([repo_root / "scripts/slurm/up.sh"], check=True, timeout=900)
        started = True
    yield
    if started:
        subprocess.run([repo_root / "scripts/slurm/down.sh"], check=True, timeout=300)


def make_test_profile(repo_root: Path, target: Path) -> Path:
    """A copy of workflow/profiles/slurm that differs only in account and partitions (what the README says a user
    edits); the node's size goes in through the profile's own caps (SSMTTM_SLURM_MAX_*), see `slurm_env`."""
    text = (repo_root / "workflow/profiles/slurm/config.yaml").read_text()
    lines = []
    for line in text.splitlines(keepends=True):
        if "slurm_account:" in line:
            line = line.replace('"my_account"', f'"{ACCOUNT}"')
        for ours, theirs in PARTITIONS.items():
            if "slurm_partition:" in line:
                line = line.replace(f'"{ours}"', f'"{theirs}"')
        lines.append(line)
    target.mkdir(parents=True)
    (target / "config.yaml").write_text("".join(lines))
    return target


def slurm_env(**extra: str) -> dict[str, str]:
    """Caps that fit the 2-core node (each job 1 CPU, 3 GB: two jobs side by side) and a short status poll."""
    from tests.workflow.project import env

    return {
        **env(),
        "SSMTTM_SLURM_MAX_CPUS": "1",
        "SSMTTM_SLURM_MAX_MEM_MB": "3000",
        "SSMTTM_SLURM_POLL_S": "3",
        **extra,
    }
