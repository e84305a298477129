"""scripts/snakemake, which every DVC stage command calls, passes a cluster profile through from the environment."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

FAKE_SNAKEMAKE = '#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n'  # prints the arguments it got, one a line


@pytest.fixture
def fake_path(tmp_path) -> str:
    """A PATH whose `snakemake` only reports its arguments (it wins over .venv, as an activated environment does)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "snakemake"
    fake.write_text(FAKE_SNAKEMAKE)
    fake.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def _stage_args(repo_root: Path, stage: str) -> list[str]:
    """The arguments a DVC stage gives scripts/snakemake."""
    cmd = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    program, *args = shlex.split(cmd)
    assert program == "scripts/snakemake"
    return args


def _run(repo_root: Path, path: str, args: list[str], profile: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSMTTM_SNAKEMAKE_PROFILE"}
    if profile is not None:
        env["SSMTTM_SNAKEMAKE_PROFILE"] = profile
    proc = subprocess.run(
        [str(repo_root / "scripts/snakemake"), *args],
        cwd=repo_root,
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return proc.stdout.splitlines()


@pytest.mark.parametrize("stage", ["fetch", "train_lm"])
def test_profile_from_the_environment_goes_before_the_stage_arguments(repo_root, fake_path, stage):
    args = _stage_args(repo_root, stage)
    got = _run(repo_root, fake_path, args, "workflow/profiles/slurm")
    assert got == ["--profile", "workflow/profiles/slurm", *args]  # before `-- TARGET`, which ends the options


def test_without_the_variable_the_arguments_are_passed_unchanged(repo_root, fake_path):
    args = _stage_args(repo_root, "train_lm")
    assert _run(repo_root, fake_path, args, None) == args
    assert _run(repo_root, fake_path, args, "") == args
    assert _run(repo_root, fake_path, ["-n", "a target"], "my profiles/slurm") == [
        "--profile",
        "my profiles/slurm",
        "-n",
        "a target",
    ]
