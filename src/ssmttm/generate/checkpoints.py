"""The kept checkpoints of a train-lm run folder, each generated once and named by its step.

A run folder (results/train_lm/<backbone>) holds `step-NNNNNNN/` folders and `final/`, which duplicates the last
step (hard links; its config.json records the step). `final/` adds a checkpoint only when its step folder is gone
(pruned by train_lm.keep_last_checkpoints). A step folder needs only its weights and config: the steps of
train_lm.keep_weights_at_steps outlive pruning without their optimizer state and are generated like the newest.
A checkpoint folder given directly is its own one-checkpoint run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ssmttm.artifacts import is_temporary
from ssmttm.errors import UserFacingError
from ssmttm.models.lm import CONFIG_FILE, WEIGHTS_FILE

STEP_RE = re.compile(r"^step-(\d{7})$")
FINAL_DIR = "final"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    folder: Path

    @property
    def name(self) -> str:
        return f"step-{self.step:07d}"


def _is_checkpoint(folder: Path) -> bool:
    return (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def recorded_step(folder: Path) -> int:
    step = json.loads((folder / CONFIG_FILE).read_text()).get("step")
    if not isinstance(step, int):
        raise UserFacingError(
            f"{folder / CONFIG_FILE} records no training step; pass a folder written by `ssmttm train-lm` "
            "(its step-NNNNNNN/ and final/ checkpoints record their step)"
        )
    return step


def kept_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Checkpoints of a run, oldest first: every complete step folder, plus `final/` if its step has no folder."""
    run_dir = Path(run_dir)
    if _is_checkpoint(run_dir):
        match = STEP_RE.match(run_dir.name)
        return [Checkpoint(int(match.group(1)) if match else recorded_step(run_dir), run_dir)]
    found: dict[int, Path] = {}
    if run_dir.is_dir():
        for child in sorted(run_dir.iterdir()):
            match = STEP_RE.match(child.name)
            if match and child.is_dir() and not is_temporary(child) and _is_checkpoint(child):
                found[int(match.group(1))] = child
    final = run_dir / FINAL_DIR
    if _is_checkpoint(final):
        found.setdefault(recorded_step(final), final)
    if not found:
        raise UserFacingError(
            f"--lm-run {run_dir}: no checkpoints (step-NNNNNNN/ or final/ with {WEIGHTS_FILE} and {CONFIG_FILE}); "
            "train it first with `ssmttm train-lm`"
        )
    return [Checkpoint(step, folder) for step, folder in sorted(found.items())]
