"""The report's first section: what ran, the headline comparison and its verdict, and one line saying what was not
computed and how to enable it. Everything here is a pointer into the sections below; nothing is computed anew."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ssmttm.report.comparisons import ComparisonResult
from ssmttm.report.html import Notes, esc
from ssmttm.report.inputs import NOT_COMPUTED, Evaluation, Generated
from ssmttm.report.paper import HEADLINES, PAPER_VALUES, Comparison
from ssmttm.report.runs import BASELINE, RunInfo
from ssmttm.report.sections import sentence_html, verdict_counts

MODEL_SETTING = re.compile(r"evaluate\.models\.(\w+)\.weights_path")


def what_ran(generated: Generated, runs: Mapping[str, RunInfo]) -> str:
    described = []
    for run in generated.runs():
        info = runs.get(run)
        own = [s for s in generated.systems if s.run == run]
        steps = sorted({s.step for s in own if s.step is not None})
        if info is not None and info.kind == BASELINE:
            what = "baseline, public weights"
        elif info is not None:
            what = f"backbone {info.backbone or 'unknown'}, {info.size}"
            if info.paper_system:
                what += f", {'stand-in for ' if info.stand_in else ''}the paper's {info.paper_system}"
        else:
            what = "not a run of params"
        at = f" at steps {', '.join(map(str, steps))}" if steps else ""
        described.append(f"<code>{esc(run)}</code> ({esc(what)}){esc(at)}")
    variants = sorted({s.variant for s in generated.systems})
    failed = sum(len(s.clips) - s.n_ok for s in generated.systems)
    clips = sorted({s.n_ok for s in generated.systems})
    per_set = "no" if not clips else str(clips[0]) if len(clips) == 1 else f"{clips[0]} to {clips[-1]}"
    return (
        f"{len(described)} system(s): {'; '.join(described) or 'none'}. Variants {esc(', '.join(variants) or 'none')}; "
        f"{len(generated.captions())} prompts, {per_set} clips per set"
        + (f', <span class="failed">{failed} failed</span>' if failed else "")
        + "."
    )


def headline_sentence(result: ComparisonResult) -> Comparison | None:
    """The sentence to lead with: at the last compared step, the first of the paper's metrics with a value, else the
    first metric with a verdict, else the first with any value."""
    if not result.comparisons:
        return None
    last = result.steps[-1] if result.steps else None
    at_last = [c for c in result.comparisons if c.step == last]
    with_value = [c for c in at_last if not c.nothing_computed]
    for choice in (
        [c for c in with_value if c.metric in PAPER_VALUES],
        [c for c in with_value if c.verdict != "cannot tell"],
        with_value,
    ):
        if choice:
            return choice[0]
    return None


def headline(results: list[ComparisonResult], notes: Notes) -> str:
    if not results:
        return "no comparison (fewer than two systems)."
    result = results[0]
    title = f'<a href="#comparison-1">{esc(result.spec.title)}</a>'
    if result.problem:
        return f"{title}: {esc(result.problem)}"
    chosen = headline_sentence(result)
    counts = f" All {len(result.comparisons)} sentences: {esc(verdict_counts(result.comparisons))}."
    if chosen is None:
        return f"{title}: no metric has a value for these systems, so there is no verdict.{counts}"
    css = {"holds": "holds", "reversed": "reversed", "better": "better"}.get(chosen.verdict, "cannot")
    return f'{title}: <b class="verdict-{css}">{esc(chosen.verdict)}</b>: {sentence_html(chosen, notes)}{counts}'


def not_computed_line(evaluation: Evaluation, notes: Notes) -> str:
    """Every metric without a value in some set, each with its note, then the settings that enable them."""
    reasons: dict[str, list[str]] = {}
    sets = [evaluation.reference, *evaluation.data.get("sets", {}).values()]
    for entry in sets:
        for metric, value in (entry.get("metrics") or {}).items():
            if isinstance(value, dict) and value.get("status") == NOT_COMPUTED:
                reasons.setdefault(metric, [])
                reason = str(value.get("reason") or "no reason given")
                if reason not in reasons[metric]:
                    reasons[metric].append(reason)
    for headline_metric in (h.metric for h in HEADLINES if h.metric not in evaluation.known_metrics):
        reasons[headline_metric] = [str(evaluation.metric({}, headline_metric)["reason"])]  # written for no set
    if not reasons:
        return "every metric was computed for every set."
    listed = ", ".join(
        f"<code>{esc(metric)}</code>" + "".join(notes.mark(r) for r in metric_reasons)
        for metric, metric_reasons in sorted(reasons.items())
    )
    models = sorted({m for rs in reasons.values() for r in rs for m in MODEL_SETTING.findall(r)})
    enable = (
        f"set <code>evaluate.models.&lt;model&gt;.weights_path</code> for {esc(', '.join(models))} and rerun "
        "<code>ssmttm evaluate</code> (each note names the file and the package)"
        if models
        else "see each note"
    )
    return f"{listed}; to enable: {enable}."


def summary_section(
    generated: Generated,
    evaluation: Evaluation,
    results: list[ComparisonResult],
    runs: Mapping[str, RunInfo],
    notes: Notes,
) -> str:
    return (
        '<section id="summary"><h2>Summary</h2><ul class="summary">'
        f"<li><b>What ran</b>: {what_ran(generated, runs)}</li>"
        f"<li><b>Headline</b>: {headline(results, notes)}</li>"
        f'<li class="not-computed-line"><b>Not computed</b>: {not_computed_line(evaluation, notes)}</li>'
        "</ul></section>"
    )
