"""The named comparisons of params `report.comparisons`, resolved against what the evaluate stage scored.

    report:
      comparisons:
        - title: SSM backbones against the Transformers
          systems: [prefix_simba, prefix_mamba, cross_simba, cross_transformer, prefix_transformer]
          variant: two_stage          # optional; default report.table_variant
          claim: SSM backbones beat the Transformer at the same steps     # optional, the paper's words
        - title: Single stage against two stage
          systems: [single_stage_simba:single_stage, prefix_simba:two_stage]

A system is a run or baseline name of params, optionally `name:variant` (the generated variant to use; default the
comparison's). A baseline (public weights, e.g. musicgen_small) has no checkpoint steps: its one set, whatever its
variant is called, is compared at every step. Each comparison is laid out at the checkpoint steps every one of its
stepped systems has (the others are listed); a system with no set in the evaluation is shown as "not run" with why.
Without `report.comparisons` the report makes one comparison of every run and baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ssmttm.errors import UserFacingError
from ssmttm.report.inputs import REFERENCE_RUN, Evaluation, Generated
from ssmttm.report.paper import HEADLINES, PAPER_VARIANT, Comparison, Member, compare
from ssmttm.report.runs import BASELINE, RUN, RunInfo

DEFAULT_TITLE = "Every run and baseline"


@dataclass(frozen=True)
class SystemRef:
    label: str  # as written in params: "run" or "run:variant"
    run: str
    variant: str | None  # None: the comparison's variant (a baseline: its only one)


@dataclass(frozen=True)
class ComparisonSpec:
    title: str
    systems: tuple[SystemRef, ...]
    variant: str
    claim: str | None = None


def parse_system(text: str, where: str) -> SystemRef:
    run, _, variant = str(text).partition(":")
    if not run or (":" in str(text) and not variant):
        raise UserFacingError(f"{where}: system {text!r} is not `run` or `run:variant`")
    return SystemRef(str(text), run, variant or None)


def parse_specs(raw: Sequence[Mapping[str, Any]] | None, default_variant: str) -> list[ComparisonSpec]:
    """`report.comparisons` as specs; each problem is a UserFacingError naming the comparison."""
    specs: list[ComparisonSpec] = []
    for index, item in enumerate(raw or []):
        where = f"report.comparisons[{index}]"
        title = str(item.get("title") or "").strip()
        if not title:
            raise UserFacingError(f"{where}: give it a title")
        systems = [parse_system(text, f"{where} ({title})") for text in item.get("systems") or []]
        if len(systems) < 2:
            raise UserFacingError(f"{where} ({title}): name at least two systems to compare")
        labels = [s.label for s in systems]
        if len(set(labels)) < len(labels):
            raise UserFacingError(f"{where} ({title}): a system is named twice in {labels}")
        if title in {s.title for s in specs}:
            raise UserFacingError(f"{where}: another comparison is already titled {title!r}; titles must differ")
        variant = str(item.get("variant") or default_variant)
        specs.append(ComparisonSpec(title, tuple(systems), variant, item.get("claim")))
    return specs


def default_spec(runs: Mapping[str, RunInfo], evaluation: Evaluation, variant: str) -> ComparisonSpec:
    """Every run and baseline of params, then any other run the evaluation scored."""
    names = list(runs)
    names += sorted({run for run, _, _ in evaluation.by_system if run != REFERENCE_RUN} - set(names))
    return ComparisonSpec(DEFAULT_TITLE, tuple(SystemRef(n, n, None) for n in names), variant)


# ----------------------------------------------------------------------------------------------- resolution


@dataclass
class Resolved:
    """One system of a comparison as the evaluation has it: its sets by step, or why it is "not run"."""

    ref: SystemRef
    info: RunInfo | None
    variant: str | None = None
    sets: dict[int | None, dict[str, Any]] = field(default_factory=dict)  # step -> the evaluation's set entry
    not_run: str | None = None  # why it is absent

    @property
    def label(self) -> str:
        return self.ref.label

    @property
    def stepped(self) -> bool:
        return any(step is not None for step in self.sets)

    @property
    def paper_system(self) -> str | None:
        """The paper system it is, for its two-stage sets only (the paper's figure shows two-stage systems)."""
        return self.info.paper_system if self.info and self.variant == PAPER_VARIANT else None


def resolve(ref: SystemRef, spec: ComparisonSpec, evaluation: Evaluation, runs: Mapping[str, RunInfo],
            generated: Generated | None = None) -> Resolved:  # fmt: skip
    info = runs.get(ref.run)
    by_variant: dict[str, dict[int | None, dict[str, Any]]] = {}
    for (run, step, variant), entry in evaluation.by_system.items():
        if run == ref.run:
            by_variant.setdefault(variant, {})[step] = entry
    variant = ref.variant or spec.variant
    baseline_like = (info is not None and info.kind == BASELINE) or (
        bool(by_variant) and all(step is None for sets in by_variant.values() for step in sets)
    )
    if ref.variant is None and variant not in by_variant and baseline_like and len(by_variant) == 1:
        variant = next(iter(by_variant))  # a baseline's one set, whatever generate called its variant
    resolved = Resolved(ref, info, variant)
    if variant in by_variant:
        resolved.sets = dict(by_variant[variant])
        return resolved
    if by_variant:
        resolved.not_run = (
            f"the evaluate stage scored {ref.run} as {', '.join(sorted(by_variant))}, not as {variant}"
            + ("" if ref.variant else f" (name it `{ref.run}:<variant>` to choose one)")
        )
    elif info is None:
        known = "params define no run or baseline of this name" if runs else "no params were given"
        resolved.not_run = f"{known} and the evaluate stage has no set of it"
    else:
        what = "run" if info.kind == RUN else "baseline"
        resolved.not_run = f"params define this {what} but the evaluate stage has no set of it"
        note = generated.notes.get(ref.run) if generated is not None else None
        resolved.not_run += f"; generate says: {note}" if note else ": train, generate and evaluate it"
    return resolved


@dataclass
class ComparisonResult:
    spec: ComparisonSpec
    members: list[Resolved]  # the systems the evaluation has, in the spec's order
    not_run: list[Resolved]
    steps: list[int | None]  # the steps compared (None: baselines only)
    steps_not_shared: dict[int, list[str]]  # a step some but not all stepped systems have -> those that have it
    schedule_warning: str | None
    problem: str | None  # why nothing is compared
    comparisons: list[Comparison]

    @property
    def systems(self) -> list[Resolved]:
        by_label = {r.label: r for r in [*self.members, *self.not_run]}
        return [by_label[ref.label] for ref in self.spec.systems]


def schedule_warning(members: Sequence[Resolved]) -> str | None:
    """A plain warning when the stepped runs of one comparison followed different learning-rate schedules."""
    trained = [m for m in members if m.stepped]
    unknown = [m.label for m in trained if m.info is None or m.info.schedule is None]
    known = {m.label: m.info.schedule for m in trained if m.info is not None and m.info.schedule is not None}
    warnings = []
    if len({s.key for s in known.values()}) > 1:
        groups: dict[tuple[Any, ...], list[str]] = {}
        for label, schedule in known.items():
            groups.setdefault(schedule.key, []).append(label)
        described = {schedule.key: schedule.describe() for schedule in known.values()}
        listed = "; ".join(f"{', '.join(labels)}: {described[key]}" for key, labels in groups.items())
        warnings.append(
            "Warning: these runs followed different learning-rate schedules, so at the same step they differ in more "
            f"than the model: {listed}."
        )
    if unknown and trained:
        warnings.append(
            f"The learning-rate schedule of {', '.join(unknown)} is unknown (not a run of params): cannot check that "
            "the runs followed the same schedule."
        )
    return " ".join(warnings) or None


def run_comparison(
    spec: ComparisonSpec,
    evaluation: Evaluation,
    runs: Mapping[str, RunInfo],
    generated: Generated | None = None,
) -> ComparisonResult:
    resolved = [resolve(ref, spec, evaluation, runs, generated) for ref in spec.systems]
    members = [r for r in resolved if r.not_run is None]
    not_run = [r for r in resolved if r.not_run is not None]
    stepped = [m for m in members if m.stepped]
    steps_of = {m.label: {s for s in m.sets if s is not None} for m in stepped}
    shared = set.intersection(*steps_of.values()) if steps_of else set()
    every = set().union(*steps_of.values()) if steps_of else set()
    not_shared = {step: [m for m, steps in steps_of.items() if step in steps] for step in sorted(every - shared)}
    problem = None
    steps: list[int | None] = sorted(shared) if stepped else [None]
    if len(members) < 2:
        problem = f"{len(members)} of its {len(resolved)} systems were run: nothing to compare."
        steps = []
    elif stepped and not shared:
        problem = f"{', '.join(steps_of)} share no checkpoint step: nothing to compare step by step."
    comparisons = []
    if problem is None:
        for headline in (h for h in HEADLINES if h.better is not None):
            for step in steps:
                entries = [
                    Member(
                        m.label,
                        m.paper_system,
                        evaluation.metric(m.sets.get(step) if m.stepped else m.sets.get(None), headline.metric),
                        bool(m.info and m.info.stand_in),
                    )
                    for m in members
                ]
                comparisons.append(compare(headline, step, entries, evaluation.confidence))
    return ComparisonResult(spec, members, not_run, steps, not_shared, schedule_warning(members), problem, comparisons)
