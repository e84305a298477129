"""`ssmttm report`: one portable HTML page with the paper-style table, figures, audio and a listening test.

    ssmttm report --params params.yaml --generated results/generate --evaluate results/evaluate \\
        --runs results/train_lm/prefix_simba results/train_lm/cross_transformer --lm-plot results/lm_plot \\
        --codec data/codec --out results/report

Reads the `report` section, the global seed, and the named runs and baselines of params (`runs`, `baselines`:
backbone, size, learning-rate schedule, which of the paper's systems a run is); `--runs`, `--lm-plot` and `--codec`
are optional (their sections then say what to pass). Output (one atomic folder, portable: every link is relative):

    index.html                the page, top down: a summary (what ran, the headline sentence and its verdict, one
                              line of what was not computed and how to enable it); the comparisons of
                              `report.comparisons` (ssmttm.report.comparisons) step by step with a verdict sentence
                              per metric, whether the paper's ordering holds (sentences with no value collapsed);
                              the prompt grid (a prompt per row, a system per column, each a player and its mel
                              spectrogram); the runs and their LR schedules, the paper-style table (ours beside
                              PAPER.md 8), the figures, every metric of every set by family, training and codec
                              numbers, failures, the listening test. Wide tables scroll inside their own box.
    figures/*.png             metrics against training steps; LM loss against steps and FLOPs
    audio/<set>/<caption>.wav the page's clips (copies of results/generate)
    spectrograms/<set>/<caption>.png  each clip's mel spectrogram, shown under its player (ssmttm.report.players)
    cards/                    the evaluate stage's metric cards, linked from the full table
    listening/                the listening-test package (ssmttm.report.listening)
    metrics.json              flat summary for `dvc metrics show`: headline metrics per set, verdict counts (all
                              and per comparison), whether each comparison's runs followed one LR schedule
    comparisons.json          each comparison: its systems (or why not run), schedule warning, and every sentence
                              with its verdict
    plots/metrics_vs_steps.csv  long format (step, run, variant, metric, value, ci, status) for `dvc plots`
    provenance.json
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssmttm import stand_ins
from ssmttm.artifacts import atomic_dir, sha256_file, write_json, write_provenance, write_text
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.report import figures, listening, players, sections
from ssmttm.report.banner import stand_in_banner
from ssmttm.report.comparisons import ComparisonResult, default_spec, parse_specs, run_comparison
from ssmttm.report.html import Notes, esc, page
from ssmttm.report.inputs import (
    REFERENCE_RUN,
    Evaluation,
    Generated,
    System,
    read_codec,
    read_evaluation,
    read_generated,
    read_json_or_none,
)
from ssmttm.report.paper import HEADLINES, Comparison
from ssmttm.report.runs import RunInfo
from ssmttm.report.runs import read_runs as read_run_infos
from ssmttm.report.summary import summary_section

log = logging.getLogger(__name__)

INDEX = "index.html"
METRICS_PNG = "figures/metrics_vs_steps.png"
LOSS_PNG = "figures/loss_curves.png"


@dataclass
class ReportConfig:
    table_variant: str = "two_stage"  # the variant of the paper-style table; the comparisons' default variant
    page_max_captions: int | None = None  # captions with audio players on the page (first by id); None = all
    listening_checkpoints: str = "last"  # last: each backbone's last checkpoint; all: every checkpoint
    listening_max_captions: int | None = None  # captions in the listening test (seeded choice); None = all
    listening_loudness_lufs: float | None = -23.0  # listening clips gain-normalised to this; None = as generated
    # named comparisons ({title, systems: ["run" | "run:variant"...], variant, claim}: ssmttm.report.comparisons);
    # empty: one comparison of every run and baseline
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    # run -> paper system: runs that stand in for the paper's system at another size (a scaled-down demo)
    paper_stand_ins: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- pieces


def comparison_results(
    cfg: ReportConfig, evaluation: Evaluation, runs: Mapping[str, RunInfo], generated: Generated
) -> list[ComparisonResult]:
    """Every comparison of `report.comparisons` (or the default one), resolved and compared step by step."""
    specs = parse_specs(cfg.comparisons, cfg.table_variant) or [default_spec(runs, evaluation, cfg.table_variant)]
    return [run_comparison(spec, evaluation, runs, generated) for spec in specs]


def _scalar(entry: dict[str, Any]) -> dict[str, Any]:
    ci = entry.get("ci") or [None, None]
    return {"value": entry.get("value"), "ci_low": ci[0], "ci_high": ci[1], "status": entry.get("status")}


def _verdict_counts(comparisons: list[Comparison]) -> dict[str, int]:
    return {v.replace(" ", "_"): sum(c.verdict == v for c in comparisons) for v in sections.VERDICTS}


def flat_metrics(
    generated: Generated,
    evaluation: Evaluation,
    results: list[ComparisonResult],
    listening_summary: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json: headline metrics of every set (value, interval, status), verdict counts (all comparisons, then
    each), listening counts."""
    sets: dict[str, Any] = {}
    for system in [*generated.references.values(), *generated.systems]:
        entry = evaluation.set_of(system.run, system.step, system.variant)
        sets[system.name] = {"n_clips": system.n_ok}
        for headline in HEADLINES:
            sets[system.name][headline.metric] = _scalar(evaluation.metric(entry, headline.metric))
    per_comparison = {
        r.spec.title: {
            **_verdict_counts(r.comparisons),
            "not_run": len(r.not_run),
            "same_lr_schedule": r.schedule_warning is None,
        }
        for r in results
    }
    return {
        "sets": sets,
        "ordering": _verdict_counts([c for r in results for c in r.comparisons]),
        "comparisons": per_comparison,
        "listening": {"items": listening_summary["n_items"], "trials": listening_summary["n_trials"]},
    }


def metrics_csv(systems: list[System], evaluation: Evaluation) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "run", "variant", "metric", "value", "ci_low", "ci_high", "status"])
    for headline in HEADLINES:
        for system in systems:
            entry = evaluation.metric(evaluation.set_of(system.run, system.step, system.variant), headline.metric)
            flat = _scalar(entry)
            writer.writerow(
                [system.step, system.run, system.variant, headline.metric]
                + ["" if flat[k] is None else flat[k] for k in ("value", "ci_low", "ci_high", "status")]
            )
    return buffer.getvalue()


def _sentence_record(comparison: Comparison) -> dict[str, Any]:
    return {
        "metric": comparison.metric,
        "step": comparison.step,
        "verdict": comparison.verdict,
        "winner": comparison.winner,
        "point_estimates_favour": comparison.favoured,
        "best_of_all": {"favoured": comparison.overall.favoured, "sure": comparison.overall.sure},
        "paper": None if comparison.paper is None else asdict(comparison.paper),
        "values": {m.label: _scalar(m.entry) for m in comparison.members},
        "sentence": comparison.sentence(),
    }


def _comparison_record(result: ComparisonResult) -> dict[str, Any]:
    systems = []
    for system in result.systems:
        info = system.info
        systems.append({
            "system": system.label, "run": system.ref.run, "variant": system.variant,
            "kind": info.kind if info else None, "backbone": info.backbone if info else None,
            "paper_system": system.paper_system, "stand_in": bool(info and info.stand_in and system.paper_system),
            "steps": sorted(s for s in system.sets if s is not None),
            "lr_schedule": info.schedule_text() if info else None, "not_run": system.not_run,
        })  # fmt: skip
    return {
        "title": result.spec.title,
        "claim": result.spec.claim,
        "variant": result.spec.variant,
        "systems": systems,
        "steps": result.steps,
        "steps_not_shared": {str(step): labels for step, labels in result.steps_not_shared.items()},
        "schedule_warning": result.schedule_warning,
        "problem": result.problem,
        "verdicts": _verdict_counts(result.comparisons),
        "sentences": [_sentence_record(c) for c in result.comparisons],
    }


# ----------------------------------------------------------------------------------------------- the stage


@dataclass
class PageContent:
    """Everything the page shows, gathered by build_report."""

    generated: Generated
    evaluation: Evaluation
    cfg: ReportConfig
    comparisons: list[ComparisonResult]
    runs: dict[str, RunInfo]  # the named runs and baselines of params
    media: dict[tuple[str, str], players.Media]  # (set name, caption id) -> its clip and spectrogram on the page
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
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the report folder `out`; return its metrics.json content. `runs` are train-lm run folders (loss curves);
    `params` (the whole params dict) gives the named runs and baselines: backbone, size, LR schedule."""
    if cfg.listening_checkpoints not in ("last", "all"):
        raise UserFacingError(f"report.listening_checkpoints = {cfg.listening_checkpoints!r}: use last or all")
    generated = read_generated(list(generated_folders))
    evaluation = read_evaluation(evaluate)
    codec_metrics, codec_file = read_codec(codec)
    lm_summary = read_json_or_none(lm_plot)
    run_infos = read_run_infos(params, cfg.paper_stand_ins)
    table_systems = [s for s in generated.systems if s.variant == cfg.table_variant]
    if not table_systems and generated.systems:
        found = sorted({s.variant for s in generated.systems})
        log.warning("no generated set of variant %r (found %s): the paper-style table is empty", cfg.table_variant,
                    found)  # fmt: skip
    results = comparison_results(cfg, evaluation, run_infos, generated)
    captions = list(generated.captions())[: cfg.page_max_captions]
    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        paper_runs = sections.paper_runs(run_infos, cfg.table_variant)
        figures.metrics_vs_steps(generated.systems, evaluation, HEADLINES, tmp / METRICS_PNG, paper_runs)
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
        inputs = _inputs(generated, evaluation, runs, lm_plot, codec_file)
        content = PageContent(
            generated, evaluation, cfg, results, run_infos, players.copy_media(generated, captions, tmp), captions,
            listening_summary, inputs, cards_dir, lm_summary, codec_metrics, bool(runs),
        )  # fmt: skip
        # what upstream of the page ran on random stand-in weights (ssmttm.stand_ins): a banner, and in the metrics
        standin = stand_ins.inherited([evaluation.folder, *generated_folders, *(runs or []), codec, lm_plot])
        write_text(tmp / INDEX, page("ssmttm report", stand_in_banner(standin) + _body(content, Notes())))
        result = {**flat_metrics(generated, evaluation, results, listening_summary), **stand_ins.card_fields(standin)}
        write_json(tmp / "metrics.json", result)
        write_json(tmp / "comparisons.json", [_comparison_record(r) for r in results])
        write_text(tmp / "plots/metrics_vs_steps.csv", metrics_csv(generated.systems, evaluation))
        write_provenance(
            tmp,
            "report",
            section if section is not None else asdict(cfg),
            seed,
            inputs=_input_hashes(inputs),
            **stand_ins.provenance_fields(standin),
        )
    return result


def _body(content: PageContent, notes: Notes) -> str:
    generated, evaluation, variant = content.generated, content.evaluation, content.cfg.table_variant
    table_systems = [s for s in generated.systems if s.variant == variant or s.step is None]
    reference_sets = [generated.references[v] for v in sorted(generated.references)]
    parts = [
        "<h1>ssmttm report: text-to-music with state-space language models</h1>",
        summary_section(generated, evaluation, content.comparisons, content.runs, notes),
        sections.contents(),
        sections.intro(generated, evaluation, variant),
        sections.comparisons_section(content.comparisons, notes),
        players.audio_section(generated, content.media, content.captions, variant, evaluation.reference_variant),
        sections.runs_section(content.runs, generated),
        '<h2 id="table">Paper-style table</h2>',
        f"<p>Variant <code>{esc(variant)}</code> and the baselines; ours beside the paper's values (PAPER.md 8, FD / "
        "KL / CLAP beside our stable-audio-metrics family) where the run is the paper's system (see Runs) and the "
        "paper reports that step; grey rows: the paper only.</p>",
        sections.paper_table(table_systems, evaluation, notes, content.runs, variant),
        "<h3>Other variants and the references</h3>",
        sections.systems_table(
            [s for s in generated.systems if s.variant != variant and s.step is not None] + reference_sets,
            evaluation,
            notes,
            lambda s: sections.reference_label(s.variant) if s.run == REFERENCE_RUN else s.label,
        ),
        '<h2 id="figures">Figures</h2>',
        f'<p><img class="figure" src="{METRICS_PNG}" alt="metrics against training steps"></p>',
        f'<p><img class="figure" src="{LOSS_PNG}" alt="training loss against steps and FLOPs"></p>'
        if content.have_loss_curves
        else "<p>No training runs given: pass <code>--runs results/train_lm/&lt;run&gt;...</code> for the loss "
        "curves.</p>",
        '<h2 id="all-metrics">All metrics of every set</h2>',
        sections.full_metrics_details(evaluation, notes, content.cards_dir),
        '<h2 id="training">Training</h2>',
        sections.training_table(content.lm_summary)
        if content.lm_summary
        else "<p>No training summary given (pass <code>--lm-plot results/lm_plot</code>).</p>",
        sections.codec_section(content.codec_metrics, evaluation, notes),
        sections.generation_section(generated),
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
        inputs["codec"] = str(codec)
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
        help="results/generate (one folder per run and baseline, plus reference/), or `ssmttm generate --out` folders",
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
        params=params,
    )
    verdicts = ", ".join(f"{n} {k}" for k, n in result["ordering"].items() if n)
    not_run = sum(c["not_run"] for c in result["comparisons"].values())
    print(
        f"{args.out}/{INDEX}: {len(result['sets'])} sets; {len(result['comparisons'])} comparison(s): "
        f"{verdicts or 'no verdict'}" + (f"; {not_run} system(s) not run" if not_run else "")
    )
    return 0
