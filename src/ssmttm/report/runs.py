"""What the report knows about each named run and baseline, read from params (never from run names).

A run (params `runs.<name>`) is a backbone plus its own overrides of `lm` and `train_lm`; its resolved sections come
from ssmttm.pipeline.run_sections. From them the report takes the backbone, the size (blocks x width, codebooks),
the learning-rate schedule it trained with, and which of the paper's systems it is (ssmttm.report.paper:
PAPER_SYSTEMS, matched by backbone and size, or declared a stand-in in `report.paper_stand_ins`). A baseline
(params `baselines.<name>`, e.g. MusicGen-small's public weights) has no schedule of ours and no checkpoint steps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssmttm.errors import UserFacingError
from ssmttm.pipeline import run_sections
from ssmttm.report.html import number
from ssmttm.report.paper import MODEL_CARD_VALUES, PAPER_SYSTEMS, PaperSystem

log = logging.getLogger(__name__)

RUN, BASELINE = "run", "baseline"


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule of one run (train_lm: ssmttm.train.schedule)."""

    lr_schedule: str  # as_written (per optimizer step) | as_run (per epoch, as the official run stepped it)
    lr: float | None
    warmup_steps: int | None
    cosine_steps: int | None  # T: schedule_steps, or max_steps when schedule_steps is null
    schedule_steps_set: bool  # whether T was set explicitly (schedule_steps) or follows max_steps
    min_lr_ratio: float | None
    steps_per_epoch: int | None  # as_run only
    max_steps: int | None

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two runs' rates differ at the same step (max_steps only matters through T)."""
        per_epoch = self.steps_per_epoch if self.lr_schedule == "as_run" else None
        return (self.lr_schedule, self.lr, self.warmup_steps, self.cosine_steps, self.min_lr_ratio, per_epoch)

    def describe(self) -> str:
        counter = "steps" if self.lr_schedule == "as_written" else "epochs"
        length = (
            f"T = schedule_steps = {self.cosine_steps}"
            if self.schedule_steps_set
            else f"T = max_steps = {self.cosine_steps} (schedule_steps null)"
        )
        text = (
            f"{self.lr_schedule}: lr {number(self.lr)}, {self.warmup_steps} warm-up {counter}, cosine to "
            f"{number(self.min_lr_ratio)} x lr over {length}"
        )
        if self.lr_schedule == "as_run":
            text += f", stepped once per epoch of {self.steps_per_epoch} optimizer steps"
        return text


@dataclass(frozen=True)
class RunInfo:
    name: str
    kind: str  # RUN | BASELINE
    backbone: str | None = None
    n_layers: int | None = None
    d_model: int | None = None
    n_codebooks: int | None = None
    schedule: Schedule | None = None
    paper_system: str | None = None  # the paper's system this run is (or stands in for)
    stand_in: bool = False  # declared in report.paper_stand_ins: the paper's backbone, not its size
    description: str = ""

    @property
    def size(self) -> str:
        if self.kind == BASELINE:
            return "public weights"
        blocks = f"{self.n_layers} blocks x {self.d_model}" if self.n_layers is not None else "size unknown"
        return f"{blocks}, {self.n_codebooks} codebook(s)"

    def paper_text(self) -> str:
        if self.paper_system is None:
            return "—"
        if self.stand_in:
            paper = PAPER_SYSTEMS[self.paper_system]
            return (
                f"stands in for the paper's {self.paper_system} (report.paper_stand_ins; the paper's is "
                f"{paper.n_layers} blocks x {paper.d_model})"
            )
        return f"the paper's {self.paper_system}"

    def schedule_text(self) -> str:
        if self.kind == BASELINE:
            return "pretrained public weights: not trained here"
        return self.schedule.describe() if self.schedule else "unknown (train_lm not in params)"


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _schedule(train_lm: Mapping[str, Any]) -> Schedule:
    max_steps = _int(train_lm.get("max_steps"))
    schedule_steps = _int(train_lm.get("schedule_steps"))
    return Schedule(
        lr_schedule=str(train_lm.get("lr_schedule") or "as_written"),
        lr=train_lm.get("lr"),
        warmup_steps=_int(train_lm.get("warmup_steps")),
        cosine_steps=schedule_steps if schedule_steps is not None else max_steps,
        schedule_steps_set=schedule_steps is not None,
        min_lr_ratio=train_lm.get("min_lr_ratio"),
        steps_per_epoch=_int(train_lm.get("steps_per_epoch")),
        max_steps=max_steps,
    )


def is_paper_size(paper: PaperSystem, backbone: str | None, lm: Mapping[str, Any]) -> bool:
    return (
        backbone == paper.backbone
        and _int(lm.get("n_layers")) == paper.n_layers
        and _int(lm.get("d_model")) == paper.d_model
        and _int(lm.get("n_codebooks")) == paper.n_codebooks
    )


def read_runs(params: Mapping[str, Any] | None, stand_ins: Mapping[str, str] | None = None) -> dict[str, RunInfo]:
    """Every named run and baseline of `params` (empty without params), in params order, runs first."""
    if not params:
        if stand_ins:
            raise UserFacingError("report.paper_stand_ins names runs but no params were given; pass --params")
        return {}
    stand_ins = dict(stand_ins or {})
    infos: dict[str, RunInfo] = {}
    for name, entry in (params.get("runs") or {}).items():
        entry = entry or {}
        sections = run_sections(params, name)
        lm, backbone = sections["lm"], sections["lm"].get("backbone")
        paper_system = next((p for p, s in PAPER_SYSTEMS.items() if is_paper_size(s, backbone, lm)), None)
        stand_in = False
        if paper_system is None and name in stand_ins:
            paper_system = _checked_stand_in(name, stand_ins[name], backbone, lm)
            stand_in = paper_system is not None
        infos[name] = RunInfo(
            name, RUN, backbone, _int(lm.get("n_layers")), _int(lm.get("d_model")), _int(lm.get("n_codebooks")) or 1,
            _schedule(sections.get("train_lm") or {}), paper_system, stand_in, str(entry.get("description") or ""),
        )  # fmt: skip
    for name, entry in (params.get("baselines") or {}).items():
        entry = entry or {}
        what = ", ".join(str(entry[k]) for k in ("kind", "name_or_path") if entry.get(k))
        card = MODEL_CARD_VALUES.get(str(entry.get("name_or_path")))
        what += f"; {card}" if card else ""
        infos[name] = RunInfo(name, BASELINE, description=str(entry.get("description") or what))
    unknown = sorted(set(stand_ins) - {n for n, i in infos.items() if i.kind == RUN})
    if unknown:
        raise UserFacingError(
            f"report.paper_stand_ins names {', '.join(unknown)}, which params `runs` does not define; "
            f"runs: {', '.join(params.get('runs') or {}) or 'none'}"
        )
    return infos


def _checked_stand_in(name: str, paper_system: str, backbone: str | None, lm: Mapping[str, Any]) -> str | None:
    """The paper system a run stands in for; None (with a warning) when the run is no longer of its kind, as after an
    experiment that swapped the run's backbone (`dvc exp run -S runs.NAME.backbone=...`): it is then just a run."""
    paper = PAPER_SYSTEMS.get(paper_system)
    if paper is None:
        raise UserFacingError(
            f"report.paper_stand_ins.{name} = {paper_system!r}: the paper reports values for "
            f"{', '.join(PAPER_SYSTEMS)} only"
        )
    if backbone != paper.backbone or (_int(lm.get("n_codebooks")) or 1) != paper.n_codebooks:
        log.warning(
            "report.paper_stand_ins.%s = %s ignored: run %s is backbone %s with %s codebook(s); a stand-in needs the "
            "paper's backbone %s and %s codebook(s)",
            name, paper_system, name, backbone, lm.get("n_codebooks"), paper.backbone, paper.n_codebooks,
        )  # fmt: skip
        return None
    return paper_system
