"""Check 7 (with --slurm-profile): every job of a Snakemake slurm profile fits a node of its partition.

Slurm accepts a job that asks for more CPUs or memory than any node of its partition has and leaves it pending
(reason PartitionConfig or Resources) forever, while Snakemake prints nothing. This check reads the profile the way
Snakemake does (YTE, environment caps included), asks `sinfo` for the largest node of each partition, and names
every rule that could never start, with the one place to change. It also warns when the executor would read job
states with sacct (MinJobAge too short for squeue), where a `scancel`led job is never noticed.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ssmttm.preflight.report import FAIL, PASS, SKIP, WARN, Check

GROUP = "slurm"
DEFAULT = "(default-resources)"  # the request of every rule without its own set-resources entry
SACCT_MISSES_CANCEL = (
    "sacct reports a scancelled job as 'CANCELLED by <uid>', which the executor does not recognise: the run "
    "would wait for it forever"
)


@dataclass(frozen=True)
class Request:
    partition: str
    cpus: int
    mem_mb: int


@dataclass(frozen=True)
class NodeSize:
    cpus: int
    mem_mb: int


def read_profile(profile_dir: str | Path) -> dict[str, str | list[str]]:
    """The profile as Snakemake parses it: YTE expressions evaluated, resources as 'key=value' strings."""
    from snakemake.profiles import ProfileConfigFileParser

    with open(Path(profile_dir) / "config.yaml") as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def _assignments(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def profile_requests(profile: dict[str, str | list[str]]) -> dict[str, Request]:
    """{rule: its request}, `DEFAULT` for every rule the profile does not name."""
    defaults = _assignments(list(profile.get("default-resources", [])))
    per_rule: dict[str, dict[str, str]] = {}
    for entry in profile.get("set-resources", []):
        rule, assignment = entry.split(":", 1)
        per_rule.setdefault(rule, {}).update(_assignments([assignment]))
    requests = {}
    for rule, own in {DEFAULT: {}, **per_rule}.items():
        merged = {**defaults, **own}
        requests[rule] = Request(
            partition=merged.get("slurm_partition", "").strip("'\""),
            cpus=int(merged.get("cpus_per_task", 1)),
            mem_mb=int(merged.get("mem_mb", 0)),
        )
    return requests


def parse_sinfo(text: str) -> dict[str, NodeSize]:
    """`sinfo -h -N -o '%P|%c|%m'` -> the largest CPU count and memory of a node in each partition."""
    sizes: dict[str, NodeSize] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, cpus, mem = line.split("|")
        partition = partition.rstrip("*")  # the default partition
        node = NodeSize(int(cpus.rstrip("+")), int(mem.rstrip("+")))
        old = sizes.get(partition, NodeSize(0, 0))
        sizes[partition] = NodeSize(max(old.cpus, node.cpus), max(old.mem_mb, node.mem_mb))
    return sizes


def query_sinfo() -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%c|%m"], capture_output=True, text=True, check=True).stdout


def query_min_job_age() -> int | None:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MinJobAge":
            return int(value.split()[0])
    return None


def slurm_checks(
    profile_dir: str | Path | None, sinfo_text: str | None = None, min_job_age_s: int | None = None
) -> list[Check]:
    """Checks of `profile_dir` against the cluster (`sinfo_text`, `min_job_age_s`: what the cluster reports,
    queried when None)."""
    if profile_dir is None:
        return []
    profile_dir = Path(profile_dir)
    if sinfo_text is None:
        if shutil.which("sinfo") is None:
            return [Check(GROUP, str(profile_dir), SKIP, "no `sinfo` here: run the check on the cluster's login node")]
        sinfo_text = query_sinfo()
        min_job_age_s = query_min_job_age()
    profile = read_profile(profile_dir)
    nodes = parse_sinfo(sinfo_text)
    where = f"{profile_dir / 'config.yaml'}"
    checks = []
    for rule, request in profile_requests(profile).items():
        name = f"{rule} request"
        node = nodes.get(request.partition)
        if node is None:
            checks.append(
                Check(
                    GROUP,
                    name,
                    FAIL,
                    f"partition {request.partition!r} does not exist (sinfo lists {', '.join(sorted(nodes))})",
                    f"set slurm_partition for {rule} in {where} to one of your cluster's partitions",
                )
            )
            continue
        asked = f"{request.cpus} CPUs and {request.mem_mb} MB in partition {request.partition}"
        if request.cpus > node.cpus or request.mem_mb > node.mem_mb:
            checks.append(
                Check(
                    GROUP,
                    name,
                    FAIL,
                    f"{asked}; its largest node has {node.cpus} CPUs and {node.mem_mb} MB: the job would pend "
                    "forever (reason PartitionConfig) while Snakemake prints nothing",
                    f"cap every request in one place: SSMTTM_SLURM_MAX_CPUS={node.cpus} "
                    f"SSMTTM_SLURM_MAX_MEM_MB={node.mem_mb} (environment, or MAX_CPUS / MAX_MEM_MB in {where}), "
                    f"or edit {rule}'s cpus_per_task / mem_mb there; a stage given less memory than it needs ends "
                    "OUT_OF_MEMORY",
                )
            )
        else:
            checks.append(Check(GROUP, name, PASS, f"{asked} fits (largest node {node.cpus} CPUs, {node.mem_mb} MB)"))
    checks.append(status_command_check(profile, min_job_age_s))
    return checks


def status_command_check(profile: dict[str, str | list[str]], min_job_age_s: int | None) -> Check:
    """The executor reads job states with squeue only when finished jobs stay visible 3x its first poll interval."""
    command = str(profile.get("slurm-status-command", "sacct"))
    poll_s = int(profile.get("slurm-init-seconds-before-status-checks", 40))
    if command != "squeue":
        return Check(GROUP, "job states", WARN, f"slurm-status-command is {command}", f"{SACCT_MISSES_CANCEL}")
    if min_job_age_s is None or min_job_age_s < 3 * poll_s:
        return Check(
            GROUP,
            "job states",
            WARN,
            f"the cluster's MinJobAge ({min_job_age_s} s) is under 3x the poll interval ({poll_s} s): the executor "
            "falls back to sacct",
            f"{SACCT_MISSES_CANCEL}; lower SSMTTM_SLURM_POLL_S to {max(1, (min_job_age_s or 0) // 3)} or below, or "
            "do not scancel jobs of a running workflow (stop Snakemake instead)",
        )
    return Check(GROUP, "job states", PASS, f"squeue (MinJobAge {min_job_age_s} s >= 3 x {poll_s} s poll)")
