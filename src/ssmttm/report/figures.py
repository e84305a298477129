"""The report's PNG figures (matplotlib, Agg): metrics against training steps, and the LM loss curves.

Metrics against steps: one panel per headline metric; one colour per run, one line style per variant; the
bars are the evaluate stage's confidence intervals; hollow markers are values flagged unreliable (N too small);
squares on a thin dashed line are the paper's values (PAPER.md 8), in the colour of the run that is that paper system
(grey when none is); horizontal lines are the reference's own value (adherence ceiling, split-half FD floor), the
codec reconstruction's (the codec floor) and each baseline's (public weights: no steps). A panel whose metric was
not computed says so with the reason. Steps are on a log axis, so the paper's 20k..400k and a demo's hundreds fit.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from ssmttm.report.inputs import NOT_COMPUTED, OK, REFERENCE_RUN, UNRELIABLE, Evaluation, System
from ssmttm.report.paper import PAPER_VALUES, Headline

LINESTYLES = ("-", "--", ":", "-.")
VARIANT_ORDER = ("two_stage", "single_stage", "codebook1_only")  # solid line for the paper's two-stage systems
DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    # No "Software" text chunk (the matplotlib version): the bytes depend on the inputs only.
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    _pyplot().close(fig)
    return path


def _points(
    systems: list[System], evaluation: Evaluation, metric: str
) -> list[tuple[int, dict[str, Any]]]:  # (step, entry) sorted by step
    points = []
    for system in systems:
        if system.step is None:
            continue
        entry = evaluation.metric(evaluation.set_of(system.run, system.step, system.variant), metric)
        points.append((system.step, entry))
    return sorted(points, key=lambda p: p[0])


def _reference_lines(evaluation: Evaluation, metric: str, baselines: list[System]) -> list[tuple[str, float, str]]:
    """(label, value, line style) of the reference's own value (or split-half FD), the codec floor, the baselines."""
    lines = []
    own = evaluation.metric(evaluation.reference, metric)
    split = evaluation.metric(evaluation.reference, f"{metric}_split_half")
    candidates = [
        ("reference", own, ":"),
        ("reference split-half", split, ":"),
        ("codec reconstruction", evaluation.metric(evaluation.set_of(REFERENCE_RUN, None, "codec"), metric), "-."),
    ]
    candidates += [
        (b.name, evaluation.metric(evaluation.set_of(b.run, None, b.variant), metric), "--") for b in baselines
    ]
    for label, entry, style in candidates:
        if entry.get("status") in (OK, UNRELIABLE) and entry.get("value") is not None:
            flag = " (unreliable)" if entry["status"] == UNRELIABLE else ""
            lines.append((label + flag, float(entry["value"]), style))
    return lines


def _step_text(step: int) -> str:
    return f"{step // 1000}k" if step >= 1000 and step % 1000 == 0 else str(step)


def _step_axis(ax: Any, steps: list[int]) -> None:
    """Log x axis ticked at the steps shown, labelled 150, 20k... (no 10^n labels)."""
    ax.set_xscale("log")
    ax.set_xticks(steps)
    ax.set_xticklabels([_step_text(s) for s in steps], fontsize=7)
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(alpha=0.3)
    ax.set_xlabel("training step", fontsize=8)
    if len(steps) > 1:
        ax.set_xlim(steps[0] / 1.3, steps[-1] * 1.3)


def _first_reason(systems: list[System], evaluation: Evaluation, metric: str) -> str:
    for _, entry in _points(systems, evaluation, metric):
        if entry.get("status") == NOT_COMPUTED:
            return str(entry.get("reason", ""))
    return "no generated set has a value"


def metrics_vs_steps(
    systems: list[System],
    evaluation: Evaluation,
    headlines: list[Headline],
    out_path: str | Path,
    paper_runs: dict[str, str] | None = None,
) -> Path:
    """One panel per headline metric, values against training steps (see the module docstring). `paper_runs`:
    {run: the paper system it is}, which colours the paper's values."""
    plt = _pyplot()
    baselines = [s for s in systems if s.step is None]
    systems = [s for s in systems if s.step is not None]
    backbones = sorted({s.run for s in systems})
    variants = sorted({s.variant for s in systems}, key=lambda v: (VARIANT_ORDER + (v,)).index(v))
    colours = {name: f"C{i}" for i, name in enumerate(backbones)}
    styles = {name: LINESTYLES[i % len(LINESTYLES)] for i, name in enumerate(variants)}
    n_cols = 3
    n_rows = -(-len(headlines) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.3 * n_cols, 3.1 * n_rows), squeeze=False)
    for ax, headline in zip(axes.flat, headlines, strict=False):
        drawn, steps_shown = False, set()
        for backbone in backbones:
            for variant in variants:
                chosen = [s for s in systems if s.run == backbone and s.variant == variant]
                points = [
                    (step, e)
                    for step, e in _points(chosen, evaluation, headline.metric)
                    if e.get("status") in (OK, UNRELIABLE) and e.get("value") is not None
                ]
                if not points:
                    continue
                drawn = True
                steps = [p[0] for p in points]
                steps_shown |= set(steps)
                values = [float(p[1]["value"]) for p in points]
                ax.plot(steps, values, color=colours[backbone], ls=styles[variant], lw=1.2)
                for step, entry in points:
                    ci = entry.get("ci")
                    if ci and None not in ci:
                        low, high = float(ci[0]), float(ci[1])
                        value = float(entry["value"])
                        ax.errorbar(
                            step,
                            value,
                            yerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]],
                            color=colours[backbone],
                            capsize=3,
                            lw=1,
                        )
                    hollow = entry["status"] == UNRELIABLE
                    ax.plot(
                        step,
                        float(entry["value"]),
                        marker="o",
                        ms=6,
                        color=colours[backbone],
                        markerfacecolor="white" if hollow else colours[backbone],
                    )
        paper_colours = {paper: colours[run] for run, paper in (paper_runs or {}).items() if run in colours}
        for paper_system, by_step in PAPER_VALUES.get(headline.metric, {}).items():
            steps = sorted(by_step)
            ax.plot(
                steps,
                [by_step[s] for s in steps],
                color=paper_colours.get(paper_system, "grey"),
                ls="--",
                lw=0.8,
                marker="s",
                ms=4,
                alpha=0.7,
            )
            steps_shown |= set(steps)
        for label, value, style in _reference_lines(evaluation, headline.metric, baselines):
            ax.axhline(value, color="0.35", ls=style, lw=1)
            ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), fontsize=6, color="0.35", va="bottom")
        if not drawn:
            reason = textwrap.fill(f"ours not computed: {_first_reason(systems, evaluation, headline.metric)}", 48)
            box = {"facecolor": "white", "alpha": 0.9, "edgecolor": "0.7"}
            ax.text(0.5, 0.5, reason, ha="center", va="center", fontsize=7, transform=ax.transAxes, bbox=box)
        if steps_shown:
            _step_axis(ax, sorted(steps_shown))
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        arrow = {"lower": " (lower is better)", "higher": " (higher is better)"}.get(str(headline.better), "")
        ax.set_title(headline.title + arrow, fontsize=9)
    for ax in list(axes.flat)[len(headlines) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colours[b], lw=2, label=b) for b in backbones]
    handles += [plt.Line2D([], [], color="0.2", ls=styles[v], label=v) for v in variants]
    handles += [
        plt.Line2D([], [], color="0.2", marker="o", ls="", markerfacecolor="white", label="flagged: N too small"),
        plt.Line2D([], [], color="0.2", marker="s", ls="--", lw=0.8, label="paper (PAPER.md 8)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle("Metrics against training steps (bars: confidence intervals of the evaluate stage)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return _save(fig, Path(out_path))


def loss_curves(run_dirs: list[str | Path], out_path: str | Path) -> Path:
    """Training and validation loss against steps and against FLOPs, the lm-plot stage's figure of the same runs."""
    from ssmttm.train.plots import plot_loss_curves, read_runs

    return plot_loss_curves(read_runs(list(run_dirs)), Path(out_path))
