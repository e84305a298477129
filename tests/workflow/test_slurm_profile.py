"""The slurm profile submits the paper profile's GPU stages with GPUs, and runs the network stages where the network is.

A dry run with the slurm executor resolves every job's resources exactly as a real submission would; the tests then
check them against one list of GPU rules, and build the plugin's own GPU submission argument for each.
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

PROFILE = "workflow/profiles/slurm"
# Every rule that can use a GPU, under the paper profile with a trained codec: the one list these tests check, both
# ways (each of them asks for a GPU in the GPU partition; no other rule does).
GPU_RULES = (
    "segment",
    "caption",
    "codec",
    "tokenize",
    "text_cache",
    "train_lm",
    "train_refiner",
    "generate",
    "generate_baseline",
    "generate_reference",
    "evaluate",
)
NETWORK_RULES = ("manifest", "fetch", "fetch_references")  # they download: run on the submit host (`localrules`)
GPU_PARTITION = "gpu"


def _dry_run(root: Path, params: dict, *targets: str) -> dict[str, dict[str, str]]:
    """The resources of the first job of every rule in a dry run of `targets` (default: the whole pipeline)."""
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", PROFILE, "--dry-run", *targets],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\n)", proc.stdout):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, re.MULTILINE)
        resources = re.search(r"^    resources: (.*)$", block, re.MULTILINE)
        if rule and resources:
            jobs.setdefault(rule.group(1), dict(i.strip().split("=", 1) for i in resources.group(1).split(",")))
    return jobs


@pytest.fixture(scope="module")
def workflow_copy(repo_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slurm")
    shutil.copy(repo_root / "Snakefile", root / "Snakefile")
    shutil.copytree(repo_root / "workflow", root / "workflow")
    return root


@pytest.fixture(scope="module")
def paper(repo_root) -> dict:
    return yaml.safe_load((repo_root / "configs/paper.yaml").read_text())


@pytest.fixture(scope="module")
def paper_jobs(workflow_copy, paper) -> dict[str, dict[str, str]]:
    """Every rule of the paper pipeline, with the codec trained (the one GPU stage the paper profile leaves off)."""
    params = {**paper, "codec": {**paper["codec"], "mode": "train"}}
    jobs = _dry_run(workflow_copy, params)
    assert set(GPU_RULES) <= set(jobs), f"not in the paper DAG: {set(GPU_RULES) - set(jobs)}"
    return jobs


def _gres(resources: dict[str, str]) -> str:
    """The GPU argument of the slurm plugin's own sbatch command for a job with these resources."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(resources=SimpleNamespace(get=lambda key, default=None: resources.get(key, default)))
    return set_gres_string(job).strip()


@pytest.mark.parametrize("rule", GPU_RULES)
def test_gpu_stage_asks_for_a_gpu_in_the_gpu_partition(paper_jobs, rule):
    resources = paper_jobs[rule]
    assert int(resources["gpu"]) >= 1, f"{rule}: no GPU requested"
    assert resources["slurm_partition"] == GPU_PARTITION, f"{rule}: partition {resources['slurm_partition']}"
    assert _gres(resources) == f"--gpus={resources['gpu']}"


def test_no_other_job_asks_for_a_gpu_or_waits_in_the_gpu_partition(paper_jobs):
    others = {rule: r for rule, r in paper_jobs.items() if rule not in GPU_RULES}
    assert {"manifest", "fetch", "select", "tokenize_manifest", "lm_plot", "report"} <= set(others)
    for rule, resources in others.items():
        assert int(resources["gpu"]) == 0 and resources["slurm_partition"] != GPU_PARTITION, rule


def test_gpu_rules_have_their_own_runtime_and_memory(repo_root, monkeypatch):
    from ssmttm.preflight.slurm import profile_requests, read_profile

    for name in ("SSMTTM_SLURM_MAX_CPUS", "SSMTTM_SLURM_MAX_MEM_MB"):
        monkeypatch.delenv(name, raising=False)
    profile = yaml.safe_load((repo_root / PROFILE / "config.yaml").read_text())
    requests = profile_requests(read_profile(repo_root / PROFILE))  # as Snakemake reads it (YTE)
    for rule in GPU_RULES:
        own = profile["set-resources"][rule]
        assert own["slurm_partition"] == GPU_PARTITION and requests[rule].mem_mb >= 32000, rule
        # train_lm's wall time is train_lm.max_hours (params): the profile leaves it alone
        assert ("runtime" in own) == (rule != "train_lm"), rule


def test_train_lm_gpus_and_wall_time_come_from_params(paper_jobs, paper):
    resources = paper_jobs["train_lm"]
    assert int(resources["gpu"]) == paper["train_lm"]["devices"] >= 1
    assert int(resources["runtime"]) == paper["train_lm"]["max_hours"] * 60


def test_params_decide_which_stages_use_a_gpu(workflow_copy, paper):
    """The paper profile's pretrained codec is a CPU job; a device set to "cpu" asks for no GPU."""
    jobs = _dry_run(workflow_copy, paper, "data/codec")
    assert int(jobs["codec"]["gpu"]) == 0
    on_cpu = {**paper, "text": {**paper["text"], "device": "cpu"}, "tokenize": {**paper["tokenize"], "device": "cpu"}}
    jobs = _dry_run(workflow_copy, on_cpu, "data/text_cache")
    assert int(jobs["text_cache"]["gpu"]) == 0 and int(jobs["tokenize"]["gpu"]) == 0


def test_network_stages_run_on_the_submit_host(repo_root):
    snakefile = (repo_root / "workflow/Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:[ \t]+\w+,?[ \t]*\n)+)", snakefile, re.MULTILINE)
    assert block, "workflow/Snakefile declares no localrules"
    local = set(re.findall(r"\w+", block.group(1)))
    assert local == set(NETWORK_RULES)  # the rest needs no network and belongs on compute nodes
    assert not local & set(GPU_RULES)


def test_a_killed_job_is_resubmitted_and_resumes(repo_root):
    """train_lm continues from its last checkpoint when rerun; the profile must rerun it."""
    profile = yaml.safe_load((repo_root / PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True
    assert Path(repo_root / "workflow/profiles/default/config.yaml").is_file()
