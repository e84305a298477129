"""`ssmttm report`: one portable HTML page with the paper-style table, figures, audio and a listening test.

    ssmttm report --params params.yaml --generated results/generate --evaluate results/evaluate \\
        --runs results/train_lm/prefix_simba results/train_lm/cross_transformer --lm-plot results/lm_plot \\
        --codec data/codec --out results/report

Reads the `report` section and the global seed; `--runs`, `--lm-plot` and `--codec` are optional (their sections
then say what to pass). Output (one atomic folder, portable: every link in it is relative):

    index.html                the page: whether the paper's ordering of prefix_simba and cross_transformer holds,
                              the paper-style table (ours beside PAPER.md 8), the figures, every metric of every set,
                              training and codec numbers, failures, audio players per caption, the listening test
    figures/*.png             metrics against training steps; LM loss against steps and FLOPs
    audio/<set>/<caption>.wav the page's clips (copies of results/generate)
    cards/                    the evaluate stage's metric cards, linked from the full table
    listening/                the listening-test package (ssmttm.report.listening)
    metrics.json              flat summary for `dvc metrics show`: headline metrics per set, verdict counts
    comparisons.json          each ordering sentence with its verdict
    plots/metrics_vs_steps.csv  long format (step, backbone, variant, metric, value, ci, status) for `dvc plots`
    provenance.json
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ssmttm.artifacts import atomic_dir, sha256_file, write_json, write_provenance, write_text
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.evaluate.cards import slug
from ssmttm.progress import progress
from ssmttm.report import figures, listening, sections
from ssmttm.report.html import Notes, esc, page
from ssmttm.report.inputs import (
    REFERENCE_RUN,
    Evaluation,
    Generated,
    System,
    read_evaluation,
    read_generated,
    read_json_or_none,
)
from ssmttm.report.paper import HEADLINES, PAIR, Comparison, compare

log = logging.getLogger(__name__)

INDEX = "index.html"
METRICS_PNG = "figures/metrics_vs_steps.png"
LOSS_PNG = "figures/loss_curves.png"


@dataclass
class ReportConfig:
    table_variant: str = "two_stage"  # the variant of the paper-style table and the ordering sentences
    page_max_captions: int | None = None  # captions with audio players on the page (first by id); None = all
    listening_checkpoints: str = "last"  # last: each backbone's last checkpoint; all: every checkpoint
    listening_max_captions: int | None = None  # captions in the listening test (seeded choice); None = all
    listening_loudness_lufs: float | None = -23.0  # listening clips gain-normalised to this; None = as generated


# ----------------------------------------------------------------------------------------------- pieces


def ordering_comparisons(systems: list[System], evaluation: Evaluation) -> tuple[list[Comparison], str | None]:
    """The comparisons of PAIR at every step both have (paper metrics first), or why there are none."""
    by_run = {name: {s.step: s for s in systems if s.run == name} for name in PAIR}
    missing = [name for name in PAIR if not by_run[name]]
    if missing:
        return [], f"This run has no {' or '.join(missing)} systems of the table's variant: nothing to compare."
    steps = sorted(set(by_run[PAIR[0]]) & set(by_run[PAIR[1]]) - {None})
    if not steps:
        return [], f"{PAIR[0]} and {PAIR[1]} share no checkpoint step in this run: nothing to compare step by step."
    comparisons = []
    for headline in (h for h in HEADLINES if h.better is not None):
        for step in steps:
            a, b = (by_run[name][step] for name in PAIR)
            entries = [evaluation.metric(evaluation.set_of(s.run, s.step, s.variant), headline.metric) for s in (a, b)]
            comparisons.append(compare(headline, step, entries[0], entries[1], evaluation.confidence))
    return comparisons, None


def copy_page_audio(generated: Generated, captions: list[str], out: Path) -> dict[tuple[str, str], str]:
    """Copy the page's clips to out/audio/<set>/<caption>.wav; {(set name, caption id): relative path}."""
    paths: dict[tuple[str, str], str] = {}
    systems = [*generated.references.values(), *generated.systems]
    for system in progress(systems, "report: audio", unit="set"):
        for caption_id in captions:
            clip = system.clips.get(caption_id)
            if clip is None or clip.path is None:
                continue
            relative = f"audio/{slug(system.name)}/{slug(caption_id)}{clip.path.suffix or '.wav'}"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip.path, out / relative)
            paths[(system.name, caption_id)] = relative
    return paths


def _scalar(entry: dict[str, Any]) -> dict[str, Any]:
    ci = entry.get("ci") or [None, None]
    return {"value": entry.get("value"), "ci_low": ci[0], "ci_high": ci[1], "status": entry.get("status")}


def flat_metrics(
    generated: Generated, evaluation: Evaluation, comparisons: list[Comparison], listening_summary: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json: headline metrics of every set (value, interval, status), verdict counts, listening counts."""
    sets: dict[str, Any] = {}
    for system in [*generated.references.values(), *generated.systems]:
        entry = evaluation.set_of(system.run, system.step, system.variant)
        sets[system.name] = {"n_clips": system.n_ok}
        for headline in HEADLINES:
            sets[system.name][headline.metric] = _scalar(evaluation.metric(entry, headline.metric))
    verdicts = {v: sum(c.verdict == v for c in comparisons) for v in ("holds", "reversed", "better", "cannot tell")}
    return {
        "sets": sets,
        "ordering": {k.replace(" ", "_"): n for k, n in verdicts.items()},
        "listening": {"items": listening_summary["n_items"], "trials": listening_summary["n_trials"]},
    }


def metrics_csv(systems: list[System], evaluation: Evaluation) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "backbone", "variant", "metric", "value", "ci_low", "ci_high", "status"])
    for headline in HEADLINES:
        for system in systems:
            entry = evaluation.metric(evaluation.set_of(system.run, system.step, system.variant), headline.metric)
            flat = _scalar(entry)
            writer.writerow(
                [system.step, system.run, system.variant, headline.metric]
                + ["" if flat[k] is None else flat[k] for k in ("value", "ci_low", "ci_high", "status")]
            )
    return buffer.getvalue()


def _comparison_record(comparison: Comparison) -> dict[str, Any]:
    return {
        "metric": comparison.metric,
        "step": comparison.step,
        "verdict": comparison.verdict,
        "winner": comparison.winner,
        "point_estimates_favour": comparison.favoured,
        "paper": None if comparison.paper is None else asdict(comparison.paper),
        "sentence": comparison.sentence(),
    }


# ----------------------------------------------------------------------------------------------- the stage


@dataclass
class PageContent:
    """Everything the page shows, gathered by build_report."""

    generated: Generated
    evaluation: Evaluation
    cfg: ReportConfig
    comparisons: list[Comparison]
    comparison_problem: str | None  # why there is no comparison at all
    audio_paths: dict[tuple[str, str], str]  # (set name, caption id) -> path relative to the page
    captions: list[str]  # caption ids with players on the page
    listening: dict[str, Any]
    inputs: dict[str, Any]
    cards_dir: str | None = None
    lm_summary: dict[str, Any] | None = None
    codec_metrics: dict[str, Any] | None = None
    have_loss_curves: bool = False


def build_report(
    generated_folders: list[str | Path],
    evaluate: str | Path,
    out: str | Path,
    cfg: ReportConfig,
    seed: int,
    runs: list[str | Path] | None = None,
    lm_plot: str | Path | None = None,
    codec: str | Path | None = None,
    section: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the report folder `out`; return its metrics.json content."""
    if cfg.listening_checkpoints not in ("last", "all"):
        raise UserFacingError(f"report.listening_checkpoints = {cfg.listening_checkpoints!r}: use last or all")
    generated = read_generated(list(generated_folders))
    evaluation = read_evaluation(evaluate)
    codec_metrics = read_json_or_none(codec)
    lm_summary = read_json_or_none(lm_plot)
    table_systems = [s for s in generated.systems if s.variant == cfg.table_variant]
    if not table_systems and generated.systems:
        found = sorted({s.variant for s in generated.systems})
        log.warning("no generated set of variant %r (found %s): the paper-style table is empty", cfg.table_variant,
                    found)  # fmt: skip
    comparisons, problem = ordering_comparisons(table_systems, evaluation)
    captions = list(generated.captions())[: cfg.page_max_captions]
    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        figures.metrics_vs_steps(generated.systems, evaluation, HEADLINES, tmp / METRICS_PNG)
        if runs:
            figures.loss_curves(list(runs), tmp / LOSS_PNG)
            if lm_summary is None:
                from ssmttm.train.plots import read_runs, summary

                lm_summary = summary(read_runs(list(runs)))
        cards_dir = None
        if (evaluation.folder / "cards").is_dir():
            shutil.copytree(evaluation.folder / "cards", tmp / "cards")
            cards_dir = "cards"
        listening_summary = listening.build_package(
            generated,
            tmp / "listening",
            seed,
            cfg.listening_checkpoints,
            cfg.listening_max_captions,
            cfg.listening_loudness_lufs,
            evaluation.reference_variant,
        )
        inputs = _inputs(generated, evaluation, runs, lm_plot, codec)
        content = PageContent(
            generated, evaluation, cfg, comparisons, problem, copy_page_audio(generated, captions, tmp), captions,
            listening_summary, inputs, cards_dir, lm_summary, codec_metrics, bool(runs),
        )  # fmt: skip
        write_text(tmp / INDEX, page("ssmttm report", _body(content, Notes())))
        result = flat_metrics(generated, evaluation, comparisons, listening_summary)
        write_json(tmp / "metrics.json", result)
        write_json(tmp / "comparisons.json", [_comparison_record(c) for c in comparisons])
        write_text(tmp / "plots/metrics_vs_steps.csv", metrics_csv(generated.systems, evaluation))
        write_provenance(
            tmp, "report", section if section is not None else asdict(cfg), seed, inputs=_input_hashes(inputs)
        )
    return result


def _body(content: PageContent, notes: Notes) -> str:
    generated, evaluation, variant = content.generated, content.evaluation, content.cfg.table_variant
    reference_sets = [generated.references[v] for v in sorted(generated.references)]
    parts = [
        "<h1>ssmttm report: text-to-music with state-space language models</h1>",
        sections.contents(),
        sections.intro(generated, evaluation, variant),
        sections.ordering_section(content.comparisons, content.comparison_problem, notes),
        '<h2 id="table">Paper-style table</h2>',
        f"<p>Variant <code>{esc(variant)}</code>; ours beside the paper's values (PAPER.md 8) where the paper reports "
        "that backbone and step (grey rows: the paper only).</p>",
        sections.paper_table([s for s in generated.systems if s.variant == variant], evaluation, notes),
        "<h3>Other variants and the references</h3>",
        sections.systems_table(
            [s for s in generated.systems if s.variant != variant] + reference_sets,
            evaluation,
            notes,
            lambda s: sections.reference_label(s.variant) if s.run == REFERENCE_RUN else s.label,
        ),
        '<h2 id="figures">Figures</h2>',
        f'<p><img class="figure" src="{METRICS_PNG}" alt="metrics against training steps"></p>',
        f'<p><img class="figure" src="{LOSS_PNG}" alt="training loss against steps and FLOPs"></p>'
        if content.have_loss_curves
        else "<p>No training runs given: pass <code>--runs results/train_lm/&lt;backbone&gt;...</code> for the loss "
        "curves.</p>",
        '<h2 id="all-metrics">All metrics of every set</h2>',
        sections.full_metrics_table(evaluation, notes, content.cards_dir),
        '<h2 id="training">Training</h2>',
        sections.training_table(content.lm_summary)
        if content.lm_summary
        else "<p>No training summary given (pass <code>--lm-plot results/lm_plot</code>).</p>",
        sections.codec_section(content.codec_metrics, evaluation, notes),
        sections.generation_section(generated),
        sections.audio_section(generated, content.audio_paths, content.captions, evaluation.reference_variant),
        sections.listening_section(content.listening),
        sections.provenance_section(content.inputs, evaluation),
        '<h2 id="notes">Notes</h2>',
        notes.render("Why a number is missing or flagged"),
    ]
    return "\n".join(parts)


def _inputs(
    generated: Generated,
    evaluation: Evaluation,
    runs: list[str | Path] | None,
    lm_plot: str | Path | None,
    codec: str | Path | None,
) -> dict[str, Any]:
    inputs: dict[str, Any] = {"evaluate": str(evaluation.folder / "metrics.json")}
    inputs.update({f"generate/{run}": path for run, path in sorted(generated.summaries.items())})
    inputs.update({f"run/{Path(r).name}": str(Path(r) / "history.jsonl") for r in runs or []})
    if lm_plot is not None:
        inputs["lm_plot"] = str(Path(lm_plot) / "metrics.json" if Path(lm_plot).is_dir() else lm_plot)
    if codec is not None:
        inputs["codec"] = str(Path(codec) / "metrics.json" if Path(codec).is_dir() else codec)
    return inputs


def _input_hashes(inputs: dict[str, Any]) -> dict[str, Any]:
    return {name: {"path": path, "sha256": sha256_file(path)} for name, path in inputs.items()}


# --------------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generated",
        nargs="+",
        required=True,
        metavar="DIR",
        help="results/generate (one folder per backbone plus reference/), or `ssmttm generate --out` folders",
    )
    parser.add_argument("--evaluate", required=True, help="the `ssmttm evaluate --out` folder (results/evaluate)")
    parser.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR", help="train-lm run folders (loss curves)")
    parser.add_argument("--lm-plot", help="the `ssmttm lm-plot --out` folder (training summary table)")
    parser.add_argument("--codec", help="the codec folder (data/codec): its held-out metrics")
    parser.add_argument("--out", default="results/report", help="output folder (default: results/report)")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    section = params.get("report") or {}
    cfg = section_to_dataclass(ReportConfig, section)
    result = build_report(
        args.generated,
        args.evaluate,
        args.out,
        cfg,
        int(params["seed"]),
        runs=args.runs,
        lm_plot=args.lm_plot,
        codec=args.codec,
        section=section,
    )
    verdicts = ", ".join(f"{n} {k}" for k, n in result["ordering"].items() if n)
    print(f"{args.out}/{INDEX}: {len(result['sets'])} sets; ordering: {verdicts or 'no comparison'}")
    return 0
