"""`ssmttm preflight --slurm-profile`: the shipped slurm profile's requests against a cluster's node sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmttm.preflight.report import FAIL, PASS, WARN
from ssmttm.preflight.slurm import DEFAULT, parse_sinfo, slurm_checks

PROFILE = Path(__file__).resolve().parents[1] / "workflow/profiles/slurm"
# `sinfo -h -N -o '%P|%c|%m'` of the one-node test cluster (scripts/slurm/up.sh): one line per partition.
SMALL_CLUSTER = "cpu*|2|24105\ngpu|2|24105\n"


@pytest.fixture(autouse=True)
def no_caps(monkeypatch):
    for name in ("SSMTTM_SLURM_MAX_CPUS", "SSMTTM_SLURM_MAX_MEM_MB", "SSMTTM_SLURM_POLL_S"):
        monkeypatch.delenv(name, raising=False)


def _by_name(checks):
    return {c.name: c for c in checks}


def test_sinfo_sizes_per_partition():
    sizes = parse_sinfo("cpu*|2|24105\ngpu|8|64000\ngpu|16|512000\n")
    assert (sizes["cpu"].cpus, sizes["cpu"].mem_mb) == (2, 24105)
    assert (sizes["gpu"].cpus, sizes["gpu"].mem_mb) == (16, 512000)


def test_requests_beyond_every_node_fail_naming_the_rule_and_the_one_place_to_cap(monkeypatch):
    checks = _by_name(slurm_checks(PROFILE, SMALL_CLUSTER, min_job_age_s=300))
    train = checks["train_lm request"]
    assert train.status == FAIL
    assert "16 CPUs and 128000 MB in partition gpu" in train.detail and "pend forever" in train.detail
    assert "SSMTTM_SLURM_MAX_CPUS=2 SSMTTM_SLURM_MAX_MEM_MB=24105" in train.fix
    assert checks[f"{DEFAULT} request"].status == FAIL  # 4 CPUs for every other rule
    assert checks["job states"].status == PASS

    monkeypatch.setenv("SSMTTM_SLURM_MAX_CPUS", "2")
    monkeypatch.setenv("SSMTTM_SLURM_MAX_MEM_MB", "24105")
    capped = slurm_checks(PROFILE, SMALL_CLUSTER, min_job_age_s=300)
    assert [c.name for c in capped if c.status != PASS] == []
    assert "2 CPUs and 24105 MB in partition gpu fits" in _by_name(capped)["train_lm request"].detail


def test_an_unknown_partition_fails():
    checks = _by_name(slurm_checks(PROFILE, "batch*|128|512000\n", min_job_age_s=300))
    assert checks["train_lm request"].status == FAIL
    assert "partition 'gpu' does not exist" in checks["train_lm request"].detail


def test_a_short_min_job_age_warns_that_a_scancelled_job_would_go_unnoticed(monkeypatch):
    checks = _by_name(slurm_checks(PROFILE, SMALL_CLUSTER, min_job_age_s=60))
    assert checks["job states"].status == WARN and "CANCELLED by" in checks["job states"].fix
    monkeypatch.setenv("SSMTTM_SLURM_POLL_S", "10")
    assert _by_name(slurm_checks(PROFILE, SMALL_CLUSTER, min_job_age_s=60))["job states"].status == PASS
