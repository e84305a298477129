"""The sections of the report page, each a function of what it shows returning HTML.

Nothing is dropped: every set the evaluate stage wrote has a column in the full metrics table, every metric a row,
every skipped variant and failed clip is listed, and each not-computed or flagged number carries its note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ssmttm.report.comparisons import ComparisonResult
from ssmttm.report.html import Notes, esc, metric_cell, number, table
from ssmttm.report.inputs import REFERENCE_RUN, Evaluation, Generated, System
from ssmttm.report.paper import (
    FAMILY_ORDER,
    HEADLINES,
    PAPER_SOURCE,
    PAPER_SYSTEMS,
    PAPER_VALUES,
    PAPER_VARIANT,
    Comparison,
    Headline,
    metric_family,
    paper_value,
)
from ssmttm.report.runs import BASELINE, RunInfo

REFERENCE_LABELS = {
    "original": "reference (original clip)",
    "codec": "codec reconstruction (all codebooks)",
    "codebook1_only": "codec, codebook 1 only",
    "reference_codebook1": "refiner on the reference's codebook 1",
}
PAPER_HEADLINES = [h for h in HEADLINES if h.metric in PAPER_VALUES]
OTHER_HEADLINES = [h for h in HEADLINES if h.metric not in PAPER_VALUES]
PAIRED_MEASURES = ("dyncorr", "log_mel_l1_db", "mel_distance")  # of each reconstruction against its reference clip
VERDICTS = ("holds", "reversed", "better", "cannot tell")


def reference_label(variant: str) -> str:
    return REFERENCE_LABELS.get(variant, f"reference: {variant}")


def _link(anchor: str, text: str) -> str:
    return f'<a href="#{esc(anchor)}">{esc(text)}</a>'


def contents() -> str:
    links = [
        ("summary", "Summary"),
        ("comparisons", "Comparisons"),
        ("audio", "Audio"),
        ("runs", "Runs"),
        ("table", "Paper-style table"),
        ("figures", "Figures"),
        ("all-metrics", "All metrics"),
        ("training", "Training"),
        ("codec", "Codec"),
        ("generation", "Generation"),
        ("listening", "Listening test"),
        ("provenance", "Inputs"),
    ]
    return "<p>" + " · ".join(_link(a, t) for a, t in links) + "</p>"


def intro(generated: Generated, evaluation: Evaluation, table_variant: str) -> str:
    steps = sorted({s.step for s in generated.systems if s.step is not None})
    variants = sorted({s.variant for s in generated.systems})
    boot = evaluation.data.get("bootstrap") or {}
    counts = sorted({s.n_ok for s in generated.systems})
    return (
        f"<p>Runs: {esc(', '.join(generated.runs()) or 'none')}; checkpoint steps: "
        f"{esc(', '.join(map(str, steps)) or 'none')}; variants: {esc(', '.join(variants) or 'none')} "
        f"(the paper-style table shows <code>{esc(table_variant)}</code>, the paper's two-stage systems); clips per "
        f"set: {esc(', '.join(map(str, counts)) or '0')}.</p>"
        f"<p class=small>Every number is the evaluate stage's: value [{float(boot.get('confidence', 0.95)):.0%} "
        f"confidence interval: {esc(boot.get('method', 'bootstrap'))}, {esc(boot.get('resamples', '?'))} resamples]"
        ", N (clips). "
        f"<span class=flag>⚠ N too small</span> marks a value over fewer than {esc(boot.get('min_clips', '?'))} clips "
        "(or a rank-deficient Fréchet fit): kept for inspection, not for conclusions. <span class=nc>not "
        "computed</span> means the metric has no number in this run; its note says why and how to enable it; "
        "<span class=n>n/a</span>: the metric does not apply to that kind of set. Each "
        "set's metric card (implementation, weights, sample rate, windows, N) is linked in the full table.</p>"
    )


# ----------------------------------------------------------------------------------------------- comparisons


def runs_section(runs: Mapping[str, RunInfo], generated: Generated) -> str:
    """Each run and baseline of params: backbone, size, the paper system it is, the LR schedule it followed."""
    parts = ['<h2 id="runs">Runs</h2>']
    if not runs:
        parts.append(
            "<p>No params with <code>runs</code> were given (pass <code>--params</code>): backbones, sizes and "
            "learning-rate schedules are unknown, and no run is matched with the paper's systems.</p>"
        )
        return "".join(parts)
    parts.append(
        "<p>From params <code>runs</code> and <code>baselines</code>. A run is the paper's system when it has that "
        "system's backbone at the paper's size (PAPER.md 4: "
        + ", ".join(f"{esc(n)} {p.n_layers} blocks x {p.d_model}, {p.n_codebooks} codebook" for n, p in
                    PAPER_SYSTEMS.items())
        + "); only then do the paper's values sit beside its two-stage numbers.</p>"
    )  # fmt: skip
    generated_runs = set(generated.runs())
    rows = []
    for info in runs.values():
        kind = "baseline" if info.kind == BASELINE else "run"
        made = "" if info.name in generated_runs else ' <span class="nc">no clips generated</span>'
        rows.append([
            f"<code>{esc(info.name)}</code>{made}", esc(kind), esc(info.backbone or "—"), esc(info.size),
            esc(info.paper_text()), esc(info.schedule_text()), esc(info.description or ""),
        ])  # fmt: skip
    parts.append(table(["name", "kind", "backbone", "size", "paper system", "learning-rate schedule", "about"], rows))
    return "".join(parts)


def comparisons_section(results: list[ComparisonResult], notes: Notes) -> str:
    parts = ['<h2 id="comparisons">Comparisons</h2>']
    parts.append(
        f'<p class="small">Paper values: {esc(PAPER_SOURCE)}. Per metric and step: the best point estimate, and '
        "whether that is sure (every value computed, none flagged, the best one's interval overlapping no other); "
        "where two of the systems are the paper's systems, whether the paper's ordering of them holds.</p>"
    )
    for index, result in enumerate(results, 1):
        parts.append(_comparison_html(result, f"comparison-{index}", notes))
    return "".join(parts)


def _system_rows(result: ComparisonResult) -> list[list[str]]:
    rows = []
    for system in result.systems:
        info = system.info
        if system.not_run is not None:
            shown = f'<span class="nc">not run</span>: {esc(system.not_run)}'
        elif system.stepped:
            steps = sorted(s for s in system.sets if s is not None)
            shown = f"{len(steps)} checkpoint(s): {esc(', '.join(map(str, steps)))}"
        else:
            shown = "no checkpoint steps: compared at every step"
        rows.append([
            f"<code>{esc(system.label)}</code>", esc(info.backbone if info and info.backbone else "—"),
            esc(info.size if info else "not in params"), esc(system.variant or "—"),
            esc(info.paper_text() if info and system.paper_system else "—"), shown,
            esc(info.schedule_text() if info else "unknown (not in params)"),
        ])  # fmt: skip
    return rows


def _comparison_html(result: ComparisonResult, anchor: str, notes: Notes) -> str:
    spec = result.spec
    parts = [f'<h3 id="{esc(anchor)}">{esc(spec.title)}</h3>']
    if spec.claim:
        parts.append(f"<p>Claim: <i>{esc(spec.claim)}</i></p>")
    parts.append(f"<p class=small>Variant <code>{esc(spec.variant)}</code> unless a system names its own.</p>")
    header = ["system", "backbone", "size", "variant", "paper system", "in the evaluation", "learning-rate schedule"]
    parts.append(table(header, _system_rows(result)))
    if result.schedule_warning:
        parts.append(f'<p class="warn">{esc(result.schedule_warning)}</p>')
    if result.not_run:
        names = ", ".join(s.label for s in result.not_run)
        parts.append(f'<p class="warn">Not run: {esc(names)} (see the table): left out of every sentence below.</p>')
    if result.steps_not_shared:
        listed = "; ".join(f"{step}: {', '.join(labels)} only" for step, labels in result.steps_not_shared.items())
        parts.append(f"<p class=small>Steps not every system has (not compared): {esc(listed)}.</p>")
    if result.problem:
        parts.append(f"<p>{esc(result.problem)}</p>")
        return "".join(parts)
    missing = [c for c in result.comparisons if c.nothing_computed]
    parts.append(f"<p class=small>Verdicts: {esc(verdict_counts(result.comparisons))}.</p>")
    computed = [c for c in result.comparisons if not c.nothing_computed]
    paper_metrics = [c for c in computed if c.metric in PAPER_VALUES]
    other = [c for c in computed if c.metric not in PAPER_VALUES]
    parts.append("<h4>The paper's metrics (stable-audio-metrics family)</h4>")
    parts.append(
        _sentences(paper_metrics, notes)
        if paper_metrics
        else "<p>No system has a value of the paper's metrics (see <i>not computed</i> below).</p>"
    )
    if other:
        parts.append(
            f"<details><summary>Other metrics ({len(other)} sentences: the paper reports no ordering; which system "
            f"is better here)</summary>{_sentences(other, notes)}</details>"
        )
    if missing:
        titles = ", ".join(dict.fromkeys(c.title for c in missing))
        parts.append(
            f'<details class="not-computed"><summary>Not computed: {len(missing)} sentences with no value for any '
            f"system ({esc(titles)}); the summary at the top says how to enable them</summary>"
            f"{_sentences(missing, notes)}</details>"
        )
    return "".join(parts)


def verdict_counts(comparisons: list[Comparison]) -> str:
    """The counts of each verdict, e.g. "3 better, 36 cannot tell (21 of them not computed)"."""
    counts = {v: sum(c.verdict == v for c in comparisons) for v in VERDICTS}
    text = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no sentence"
    missing = sum(c.nothing_computed for c in comparisons)
    return text + (f" ({missing} of them not computed)" if missing else "")


def _sentences(comparisons: list[Comparison], notes: Notes) -> str:
    items = []
    for comparison in comparisons:
        css = {"holds": "holds", "reversed": "reversed", "better": "better"}.get(comparison.verdict, "cannot")
        sentence = sentence_html(comparison, notes)
        items.append(f'<li class="verdict-{css}"><b>{esc(comparison.verdict)}</b>: {sentence}</li>')
    return f"<ul class=sentences>{''.join(items) or '<li>none</li>'}</ul>"


def sentence_html(comparison: Comparison, notes: Notes) -> str:
    """The comparison's sentence, escaped, with note marks (HTML) where it names a reason."""
    marks: list[str] = []

    def note(reason: str) -> str:
        marks.append(notes.mark(reason))
        return f"\x00{len(marks) - 1}\x00"  # a placeholder that escaping leaves alone

    return re.sub("\x00(\\d+)\x00", lambda m: marks[int(m.group(1))], esc(comparison.sentence(note=note)))


# ----------------------------------------------------------------------------------------------- tables


def _headline_header(headline: Headline) -> str:
    arrow = {"lower": " ↓", "higher": " ↑"}.get(str(headline.better), "")
    return f"{esc(headline.title)}{arrow}<br><code>{esc(headline.metric)}</code>"


def paper_runs(runs: Mapping[str, RunInfo], variant: str) -> dict[str, str]:
    """{run: the paper system it is} for the runs whose `variant` sets are the paper's systems (two-stage only)."""
    if variant != PAPER_VARIANT:
        return {}
    return {name: info.paper_system for name, info in runs.items() if info.paper_system is not None}


def paper_table(
    systems: list[System], evaluation: Evaluation, notes: Notes, runs: Mapping[str, RunInfo], variant: str
) -> str:
    """Rows run x step: ours beside the paper's for FD / KL / CLAP (stable-audio-metrics family) where the run is the
    paper's system; grey rows: the paper's values at steps no run of that system has."""
    header = ["run", "paper system", "step"]
    for headline in PAPER_HEADLINES:
        header += [f"{_headline_header(headline)}<br>ours", f"{esc(headline.paper_name)}<br>paper"]
    header += [_headline_header(h) for h in OTHER_HEADLINES] + ["clips"]
    mapped = paper_runs(runs, variant)
    order = list(runs) + sorted({s.run for s in systems} - set(runs))
    rows, classes = [], []
    covered: dict[str, set[int]] = {paper: set() for paper in PAPER_SYSTEMS}  # steps where a run shows the paper's
    for run in (r for r in order if r in {s.run for s in systems}):
        for system in (s for s in systems if s.run == run):
            paper = mapped.get(run) if system.variant == variant else None
            entry = evaluation.set_of(run, system.step, system.variant)
            label = esc(run) + ("" if system.variant == variant else f" <span class=n>{esc(system.variant)}</span>")
            row = [label, esc(paper or "—"), esc(system.step if system.step is not None else "—")]
            for headline in PAPER_HEADLINES:
                row += [metric_cell(evaluation.metric(entry, headline.metric), notes),
                        number(paper_value(headline.metric, paper, system.step))]  # fmt: skip
            row += [metric_cell(evaluation.metric(entry, h.metric), notes) for h in OTHER_HEADLINES]
            row.append(_clip_count(system))
            rows.append(row)
            classes.append("")
            if paper is not None and system.step is not None:
                covered[paper].add(system.step)
    for paper in PAPER_SYSTEMS:
        steps = sorted({step for metric in PAPER_VALUES.values() for step in metric.get(paper, {})} - covered[paper])
        for step in steps:
            row = ["paper only", esc(paper), esc(step)]
            for headline in PAPER_HEADLINES:
                row += ["", number(paper_value(headline.metric, paper, step))]
            rows.append(row + [""] * (len(OTHER_HEADLINES) + 1))
            classes.append("paper-only")
    return table(header, rows, classes)


def _clip_count(system: System) -> str:
    failed = len(system.clips) - system.n_ok
    return f"{system.n_ok}" + (f' <span class="failed">({failed} failed)</span>' if failed else "")


def systems_table(systems: list[System], evaluation: Evaluation, notes: Notes, label_of: Any) -> str:
    header = ["set"] + [_headline_header(h) for h in HEADLINES] + ["clips"]
    rows = []
    for system in systems:
        entry = evaluation.set_of(system.run, system.step, system.variant)
        rows.append(
            [esc(label_of(system))]
            + [metric_cell(evaluation.metric(entry, h.metric), notes) for h in HEADLINES]
            + [_clip_count(system)]
        )
    return table(header, rows)


def full_metrics_table(evaluation: Evaluation, notes: Notes, cards_dir: str | None) -> str:
    """Every metric (rows) of every set the evaluate stage wrote (columns), with links to the sets' cards."""
    sets: list[tuple[str, dict[str, Any]]] = [("reference", evaluation.reference)]
    sets += sorted((name, entry) for name, entry in evaluation.data.get("sets", {}).items())
    header = ["metric", "family"]
    for name, entry in sets:
        card = entry.get("card")
        label = esc(name).replace("/", "/<wbr>")
        if cards_dir and card:
            markdown = str(card).removesuffix(".json") + ".md"
            label += f'<br><a class=small href="{esc(cards_dir)}/{esc(markdown.removeprefix("cards/"))}">card</a>'
        header.append(label)
    rows = [
        [f"<code>{esc(metric)}</code>", esc(metric_family(metric))]
        + [metric_cell(evaluation.metric(entry, metric), notes) for _, entry in sets]
        for metric in sorted(evaluation.metric_names(), key=lambda m: (FAMILY_ORDER.index(metric_family(m)), m))
    ]
    rows.append(["clips", ""] + [esc(entry.get("n_clips", "—")) for _, entry in sets])
    return table(header, rows)


def full_metrics_details(evaluation: Evaluation, notes: Notes, cards_dir: str | None) -> str:
    """The full table, collapsed: reference material below the headline tables."""
    n_sets = 1 + len(evaluation.data.get("sets", {}))
    return (
        f'<details class="all-metrics"><summary>Every metric ({len(evaluation.metric_names())}) of every set '
        f"({n_sets}), with each set's metric card</summary>{full_metrics_table(evaluation, notes, cards_dir)}"
        "</details>"
    )


def training_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    keys = ("params", "steps", "flops", "last_loss", "last_val_loss", "best_val_loss")
    rows = [[esc(name)] + [number(values.get(k)) for k in keys] for name, values in sorted(summary.items())]
    return table(["run", *keys], rows)


def codec_section(codec: Mapping[str, Any] | None, evaluation: Evaluation, notes: Notes) -> str:
    parts = ['<h2 id="codec">Codec</h2>']
    floor = [evaluation.set_of(REFERENCE_RUN, None, v) for v in ("codec", "codebook1_only")]
    parts.append(
        "<p>Reconstructions of the reference clips (the codec floor: no language model can do better than its codec)"
        " are in the tables above and below as <i>codec reconstruction</i> and <i>codec, codebook 1 only</i>.</p>"
    )
    if any(floor):
        rows = []
        for variant, entry in zip(("codec", "codebook1_only"), floor, strict=True):
            if entry is None:
                continue
            cells = [metric_cell(evaluation.metric(entry, m), notes) for m in PAIRED_MEASURES]
            rows.append([esc(reference_label(variant)), *cells])
        parts.append(table(["set", "dyncorr ↑", "log-mel L1 (dB) ↓", "mel distance ↓"], rows))
    if codec is None:
        parts.append("<p>No codec metrics given (pass <code>--codec data/codec</code>).</p>")
        return "".join(parts)
    if codec.get("model_kwargs") is not None and "heldout" not in codec:  # codec.json of a pretrained codec
        source = codec.get("source") or {}
        parts.append(
            f"<p>Pretrained codec ({esc(source.get('model_type', codec.get('model', '')))}, "
            f"{esc(codec.get('n_codebooks'))} codebooks at {esc(codec.get('sample_rate'))} Hz): not trained here, so "
            "no held-out training scores; its floor is the codec reconstruction of the references above.</p>"
        )
        return "".join(parts)
    heldout = codec.get("heldout") or {}
    measures = sorted({k.rsplit("_", 1)[0] for k in heldout if k.endswith(("_trained", "_untrained"))})
    if measures:
        rows = [[esc(m), number(heldout.get(f"{m}_trained")), number(heldout.get(f"{m}_untrained"))] for m in measures]
        parts.append(f"<p>Held-out clips of the codec stage ({esc(len(heldout.get('clips', [])))} clips):</p>")
        parts.append(table(["measure", "trained codec", "untrained codec (same architecture)"], rows))
        if heldout.get("metric"):
            parts.append(f'<p class="small">{esc(heldout["metric"])}</p>')
    other = {k: v for k, v in codec.items() if k in ("sample_rate", "steps", "final_losses", "train", "source")}
    if other:
        items = "".join(f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in other.items())
        parts.append(f"<ul class=small>{items}</ul>")
    return "".join(parts)


def generation_section(generated: Generated) -> str:
    parts = ['<h2 id="generation">Generation</h2>']
    if generated.skipped:
        items = "".join(
            f"<li><b>{esc(run)}</b>: {esc(variant)} skipped: {esc(reason)}</li>"
            for run, reasons in sorted(generated.skipped.items())
            for variant, reason in sorted(reasons.items())
        )
        parts.append(f"<p>Variants not generated:</p><ul>{items}</ul>")
    failures = [
        f"<li>{esc(system.name)} / {esc(clip.caption_id)}: {esc(clip.reason)}</li>"
        for system in [*generated.references.values(), *generated.systems]
        for clip in system.clips.values()
        if clip.path is None
    ]
    parts.append(
        f"<p>Failed clips ({len(failures)}):</p><ul class=failed>{''.join(failures)}</ul>"
        if failures
        else "<p>No clip failed in generation.</p>"
    )
    return "".join(parts)


def listening_section(summary: Mapping[str, Any]) -> str:
    systems = "".join(f"<li>{esc(s)}</li>" for s in summary["systems"])
    return (
        '<h2 id="listening">Listening test</h2>'
        f'<p>A package for raters: <a href="listening/{esc(summary["form"])}">the rating form</a> '
        f"({esc(summary['n_items'])} anonymised clips in {esc(summary['n_trials'])} shuffled trials, overall quality "
        "and relevance to the text on 1-5, as MusicGen's OVL and REL; answers download as CSV or JSON). Hand raters "
        "the folder <code>listening/rater/</code> only; the answer key (<code>listening/answer_key.csv</code>) "
        "and how to join it with the answers are described in <code>listening/README.md</code>. Systems in the "
        f"test:</p><ul class=small>{systems}</ul>"
    )


def provenance_section(inputs: Mapping[str, Any], evaluation: Evaluation) -> str:
    items = "".join(f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in inputs.items())
    models = "".join(
        f"<li><code>{esc(name)}</code>: {esc(status)}</li>"
        for name, status in sorted((evaluation.data.get("models") or {}).items())
    )
    return (
        f'<h2 id="provenance">Inputs</h2><ul class=small>{items}</ul>'
        f"<p>Metric networks of the evaluate stage:</p><ul class=small>{models or '<li>none configured</li>'}</ul>"
        '<p class="small">provenance.json beside this page records the params, code version and sha256 of every '
        "input file.</p>"
    )
