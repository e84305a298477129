"""What a preflight found: one `Check` per question (pass / warn / fail / skip, with the fix for a failure), one
`StagePlan` per pipeline stage (jobs, GPU hours, storage) and the assumptions behind every estimate.

`PreflightReport.render()` is the text the CLI prints; `to_dict()` the JSON `--json` writes. Measured figures and
estimates are separate fields, so nothing assumed is ever shown as a measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
GROUPS = ("weights", "inputs", "disk", "gpu", "network", "slurm")


@dataclass
class Check:
    group: str  # one of GROUPS
    name: str  # the setting checked, e.g. "codec.pretrained.path"
    status: str  # PASS, WARN, FAIL or SKIP
    detail: str  # what was found
    fix: str | None = None  # what to do (failures and warnings)


@dataclass
class StagePlan:
    stage: str
    jobs: int
    jobs_basis: str  # why that many: "per shard (corpus.n_shards = 100)", "one per backbone", ...
    device: str  # the stage's device setting, "-" for stages that never use one
    storage_bytes: float | None
    storage_basis: str
    gpu_hours_measured: float | None = None
    measured_basis: str = ""  # the benchmark file and device the figure comes from
    gpu_hours_estimate: float | None = None
    estimate_basis: str = ""  # the FLOP count, the assumed peak and MFU


@dataclass
class PreflightReport:
    params_path: str
    profile: str
    checks: list[Check] = field(default_factory=list)
    plan: list[StagePlan] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == WARN]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params_path,
            "profile": self.profile,
            "ok": self.ok,
            "failures": len(self.failures),
            "warnings": len(self.warnings),
            "checks": [asdict(c) for c in self.checks],
            "plan": [asdict(p) for p in self.plan],
            "total_storage_bytes": total_storage(self.plan),
            "assumptions": self.assumptions,
        }

    def render(self) -> str:
        lines = [f"ssmttm preflight: {self.params_path} (profile {self.profile})"]
        for group in GROUPS:
            checks = [c for c in self.checks if c.group == group]
            if checks:
                lines.append(f"\n{group}")
                lines.extend(_render_check(c) for c in checks)
        lines.append("\nplan")
        lines.extend(_render_plan(self.plan))
        if self.assumptions:
            lines.append("\nassumptions behind the estimates")
            lines.extend(f"  - {a}" for a in self.assumptions)
        verdict = "ready" if self.ok else "NOT ready: fix the FAIL lines above, then rerun `make preflight`"
        lines.append(f"\nresult: {len(self.failures)} failed, {len(self.warnings)} warnings: {verdict}")
        return "\n".join(lines)


def total_storage(plan: list[StagePlan]) -> float:
    return float(sum(p.storage_bytes or 0.0 for p in plan))


def human_bytes(n: float | None) -> str:
    if n is None:
        return "small"
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_hours(hours: float | None) -> str:
    if hours is None:
        return "-"
    if hours < 0.01:
        return "< 0.01 h"
    return f"{hours:.2g} h" if hours < 10 else f"{hours:,.0f} h"


def _render_check(check: Check) -> str:
    line = f"  {check.status.upper():<4}  {check.name}: {check.detail}"
    if check.fix and check.status in (FAIL, WARN):
        line += f"\n        fix: {check.fix}"
    return line


def _render_plan(plan: list[StagePlan]) -> list[str]:
    header = f"  {'stage':<14}{'jobs':>5}  {'device':<8}{'storage':>10}  {'GPU h measured':>15}  {'GPU h estimate':>15}"
    lines = [header]
    for p in plan:
        lines.append(
            f"  {p.stage:<14}{p.jobs:>5}  {p.device:<8}{human_bytes(p.storage_bytes):>10}  "
            f"{human_hours(p.gpu_hours_measured):>15}  {human_hours(p.gpu_hours_estimate):>15}"
        )
    lines.append(f"  {'total':<14}{sum(p.jobs for p in plan):>5}  {'':<8}{human_bytes(total_storage(plan)):>10}")
    lines.append("  per stage:")
    for p in plan:
        notes = [f"jobs: {p.jobs_basis}", f"storage: {p.storage_basis}"]
        if p.measured_basis:
            notes.append(f"GPU hours measured: {p.measured_basis}")
        if p.estimate_basis:
            notes.append(f"GPU hours ESTIMATE (not a measurement): {p.estimate_basis}")
        lines.append(f"    {p.stage}: " + "; ".join(notes))
    return lines
