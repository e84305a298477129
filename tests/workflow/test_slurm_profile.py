"""The slurm profile submits the paper profile's GPU jobs with their GPU resources.

A dry run with the slurm executor resolves every job's resources exactly as a real submission would; the test
then builds the plugin's own GPU submission arguments for the train_lm job.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("snakemake_executor_plugin_slurm")


@pytest.fixture(scope="module")
def dry_run_output(repo_root, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("slurm")
    shutil.copy(repo_root / "Snakefile", root / "Snakefile")
    shutil.copytree(repo_root / "workflow", root / "workflow")
    shutil.copy(repo_root / "configs/paper.yaml", root / "params.yaml")
    # the corpus stages' outputs are materialised, so the dry run is about the GPU stages
    (root / "data/tokenize").mkdir(parents=True)
    (root / "data/tokenize/_manifest.json").write_text("{}")
    (root / "data/text_cache").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            "workflow/profiles/slurm",
            "--dry-run",
            "results/train_lm/prefix_simba/metrics.json",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _job_resources(output: str, rule: str) -> dict[str, str]:
    block = output.split(f"rule {rule}:", 1)[1]
    line = re.search(r"resources: (.*)", block).group(1)
    return dict(item.strip().split("=", 1) for item in line.split(","))


def test_train_lm_goes_to_the_gpu_partition_with_a_gpu(dry_run_output, repo_root):
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    resources = _job_resources(dry_run_output, "train_lm")
    paper = yaml.safe_load((repo_root / "configs/paper.yaml").read_text())
    assert resources["slurm_partition"] == "gpu"
    assert int(resources["gpu"]) == paper["train_lm"]["devices"] >= 1
    assert int(resources["runtime"]) == paper["train_lm"]["max_hours"] * 60
    job = SimpleNamespace(resources=SimpleNamespace(get=lambda key, default=None: resources.get(key, default)))
    assert set_gres_string(job).strip() == f"--gpus={resources['gpu']}"


def test_slurm_profile_is_valid_yaml_with_executor(repo_root):
    profile = yaml.safe_load((repo_root / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert Path(repo_root / "workflow/profiles/default/config.yaml").is_file()
