"""Check 3: the data root has room for what the plan says the stages write."""

from __future__ import annotations

import shutil
from pathlib import Path

from ssmttm.preflight.report import FAIL, PASS, WARN, Check, StagePlan, human_bytes, total_storage

GROUP = "disk"
HEADROOM = 0.10  # under 10% to spare is a warning: the estimates are rough and logs, temporaries and caches add up


def free_bytes(path: Path) -> float:
    """Free space of the file system holding `path` (its nearest existing parent when it does not exist yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return float(shutil.disk_usage(path).free)


def disk_check(plan: list[StagePlan], data_root: Path, free: float | None = None) -> Check:
    """`free`: bytes available (None: measured with shutil.disk_usage); tests pass a number."""
    need = total_storage(plan)
    free = free_bytes(data_root) if free is None else float(free)
    biggest = sorted(plan, key=lambda p: p.storage_bytes or 0.0, reverse=True)[:3]
    parts = ", ".join(f"{p.stage} {human_bytes(p.storage_bytes)}" for p in biggest if p.storage_bytes)
    detail = f"about {human_bytes(need)} needed ({parts}), {human_bytes(free)} free at {data_root}"
    not_counted = "not counted: DVC's cache (a second copy unless cache.type links), logs"
    if need > free:
        return Check(
            GROUP,
            "data root",
            FAIL,
            f"{detail}; short by {human_bytes(need - free)}",
            "free space, or point --data-root (and the data/ and results/ folders) at a larger file system, or "
            f"shrink the profile (corpus.max_tracks, train_lm.keep_last_checkpoints); {not_counted}",
        )
    if need > (1 - HEADROOM) * free:
        return Check(GROUP, "data root", WARN, f"{detail}: under {HEADROOM:.0%} to spare", not_counted)
    return Check(GROUP, "data root", PASS, f"{detail}; {not_counted}")
