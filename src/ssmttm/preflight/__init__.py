"""`ssmttm preflight`: check a profile against this machine before any cluster job, and print the plan.

    make preflight                                   # = ssmttm preflight params.yaml
    ssmttm preflight configs/paper.yaml --skip-network --json preflight.json

Checks, each printed as one PASS / WARN / FAIL / SKIP line with what to do about a failure:
1. weights    every pretrained weight the profile uses is local (and has its pinned sha256)      (weights.py)
2. inputs     the TAR checksum list and other input files exist and parse                         (inputs.py)
3. disk       the data root has room for the estimated data, shards, checkpoints and audio        (disk.py)
4. gpu        every hard GPU request ("cuda", "gpu") finds a visible GPU                          (gpu.py)
5. network    the fetch stage's sources answer (HEAD requests; local URLs: the files exist)       (network.py)
6. plan       jobs, device, storage and GPU hours per stage, measured or estimated (labelled)     (plan.py)
7. slurm      with --slurm-profile: every rule's CPU and memory request fits a node of its partition
              (`sinfo`), and the executor will notice a scancelled job                              (slurm.py)

A failure makes the exit code non-zero; warnings (e.g. missing evaluation weights) do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ssmttm.preflight.compute import Assumptions
from ssmttm.preflight.context import Context
from ssmttm.preflight.disk import disk_check
from ssmttm.preflight.gpu import gpu_checks
from ssmttm.preflight.inputs import input_checks
from ssmttm.preflight.network import network_checks
from ssmttm.preflight.plan import build_plan
from ssmttm.preflight.report import Check, PreflightReport, StagePlan
from ssmttm.preflight.slurm import slurm_checks
from ssmttm.preflight.volume import FLAC_RATIO
from ssmttm.preflight.weights import weight_checks
from ssmttm.train.flops import H100_BF16_DENSE_FLOPS

ASSUMED_MFU = 0.30  # an assumption for FLOP estimates, not a measurement of this project

__all__ = ["Check", "PreflightReport", "StagePlan", "run_preflight"]


def run_preflight(
    params: Mapping[str, Any],
    *,
    root: str | Path = ".",
    params_path: str = "params.yaml",
    data_root: str | Path | None = None,
    network: bool = True,
    check_gpu: bool = True,
    gpus: list[str] | None = None,
    free_bytes: float | None = None,
    network_timeout_s: float = 10.0,
    url_sample: int = 5,
    peak_flops: float = H100_BF16_DENSE_FLOPS,
    mfu: float = ASSUMED_MFU,
    slurm_profile: str | Path | None = None,
) -> PreflightReport:
    """Check `params` (a loaded profile) against this machine. Relative paths in it are taken from `root`.

    `gpus` (visible GPU names) and `free_bytes` (free space of the data root) replace what the machine reports;
    tests use them. `peak_flops` and `mfu` are the assumptions of the FLOP estimates in the plan. `slurm_profile`:
    a Snakemake slurm profile folder whose requests are checked against `sinfo`.
    """
    root = Path(root)
    ctx = Context(params, root)
    assumptions = Assumptions(peak_flops, mfu)
    report = PreflightReport(params_path, str(params.get("profile", "?")))
    report.checks += weight_checks(ctx)
    report.checks += input_checks(ctx)
    report.plan = build_plan(ctx, assumptions)
    report.checks.append(disk_check(report.plan, Path(data_root) if data_root else root, free_bytes))
    report.checks += gpu_checks(ctx, gpus, enabled=check_gpu)
    report.checks += network_checks(ctx, enabled=network, timeout_s=network_timeout_s, sample=url_sample)
    report.checks += slurm_checks(slurm_profile)
    report.assumptions = [
        f"FLOP estimates: {assumptions.describe()} (an H100 SXM's dense bf16 peak by default; --peak-tflops, --mfu)",
        f"FLAC clips: about {FLAC_RATIO} of 16-bit PCM (segment.audio_format: flac); WAV: 16-bit PCM",
        "clip and caption counts are upper bounds: select drops tracks by licence, decodability and duration",
        "each run's model and schedule: lm / train_lm with its `runs` entry applied (pipeline.run_sections)",
    ]
    return report
