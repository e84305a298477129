"""`ssmttm lm-plot`: the loss curves and final losses of several training runs, side by side.

    ssmttm lm-plot --params params.yaml --runs results/train_lm/prefix_simba results/train_lm/cross_transformer \\
        --out results/lm_plot

Reads each run folder's `metrics.json` (run name, backbone, parameter count) and `history.jsonl` (one row per logged
step: `step`, `loss`, `flops`, and `val_loss` on validation rows); no params section. Writes the folder `--out` whole
(atomically):

    loss_curves.png   loss against optimizer steps and against training FLOPs (6 N D, log x); dashed = validation.
                      The FLOPs panel is the paper's efficiency view: at equal compute, which run is lower
    metrics.json      {run: {best_val_loss, last_val_loss, last_loss, steps, params, flops}}
    train_loss.csv    step,run,loss: training loss per run and logged step (`dvc plots` overlays the runs)
    val_loss.csv      step,run,val_loss: the same for the validation loss
    provenance.json   the runs and the sha256 of the files read

Runs are named by their run name (params `runs`; the folder's name for runs written before named runs, or when two
share one) and sorted by name; numbers are written
as Python's shortest round-trip repr and the PNG without a software tag, so the same runs give the same bytes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ssmttm import stand_ins
from ssmttm.artifacts import atomic_dir, sha256_file, write_json, write_provenance
from ssmttm.errors import UserFacingError

HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"
PLOT_FILE = "loss_curves.png"
TRAIN_CSV = "train_loss.csv"
VAL_CSV = "val_loss.csv"
SUMMARY_KEYS = ("best_val_loss", "last_val_loss", "last_loss", "steps", "params", "flops")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """{"name", "dir", "metrics", "train": [(step, flops, loss)], "val": [(step, flops, val_loss)]} of a run folder.

    A path to a run's metrics.json is taken as its folder.
    """
    run_dir = Path(run_dir)
    if run_dir.name == METRICS_FILE and run_dir.is_file():
        run_dir = run_dir.parent
    metrics_path, history_path = run_dir / METRICS_FILE, run_dir / HISTORY_FILE
    for path in (metrics_path, history_path):
        if not path.is_file():
            raise UserFacingError(f"{path}: not found; pass the folders of finished `ssmttm train-lm` runs")
    metrics = json.loads(metrics_path.read_text())
    rows = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["flops"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["flops"], r["val_loss"]) for r in rows if "val_loss" in r]
    name = metrics.get("run") or run_dir.name  # the run's name (runs written before named runs: their folder's)
    return {"name": name, "dir": run_dir, "metrics": metrics, "train": train, "val": val}


def read_runs(run_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """The runs, sorted by name; runs sharing a name are named by their folder (or its path) instead."""
    if not run_dirs:
        raise UserFacingError("no runs given to plot; pass --runs results/train_lm/<run> ...")
    runs = [read_run(d) for d in run_dirs]
    for attempt in (lambda r: r["dir"].name, lambda r: str(r["dir"])):
        names = [r["name"] for r in runs]
        for run in runs:
            if names.count(run["name"]) > 1:
                run["name"] = attempt(run)
    if len({r["name"] for r in runs}) < len(runs):
        raise UserFacingError(f"the same run folder is given twice: {[str(d) for d in run_dirs]}")
    return sorted(runs, key=lambda r: r["name"])


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """metrics.json: the deterministic final numbers of every run (no timings)."""
    return {run["name"]: {k: run["metrics"].get(k) for k in SUMMARY_KEYS} for run in runs}


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def long_csv(runs: list[dict[str, Any]], series: str, column: str) -> str:
    """`step,run,<column>`: one row per run and logged step, runs in name order, steps ascending.

    Long rather than one column per run, so that the DVC plot (template .dvc/plots/by_run.json, colour by `run`)
    overlays whichever runs ran without dvc.yaml naming them.
    """
    lines = [f"step,run,{column}"]
    for run in runs:
        lines += [f"{step},{run['name']},{_number(loss)}" for step, _, loss in sorted(run[series])]
    return "\n".join(lines) + "\n"


def plot_loss_curves(runs: list[dict[str, Any]], out_path: str | Path) -> Path:
    """Two panels (loss vs step, loss vs FLOPs, log x) with one colour per run; dashed lines are validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for i, run in enumerate(runs):
        colour = f"C{i}"
        for ax, x_index in ((axes[0], 0), (axes[1], 1)):
            if run["train"]:
                ax.plot(
                    [r[x_index] for r in run["train"]],
                    [r[2] for r in run["train"]],
                    color=colour,
                    lw=1,
                    label=f"{run['name']} train",
                )
            if run["val"]:
                ax.plot(
                    [r[x_index] for r in run["val"]],
                    [r[2] for r in run["val"]],
                    color=colour,
                    lw=1.5,
                    ls="--",
                    marker="o",
                    ms=3,
                    label=f"{run['name']} valid",
                )
    axes[0].set_xlabel("optimizer step")
    axes[1].set_xlabel("training FLOPs (6 N D)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("cross-entropy (summed over codebooks)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("LM training loss per run")
    out_path = Path(out_path)
    # No "Software" text chunk (the matplotlib version): the bytes depend on the runs only.
    fig.savefig(out_path, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    return out_path


def lm_plot(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """The `lm_plot` stage: write loss_curves.png, metrics.json, the two loss CSVs and provenance into `out_dir`."""
    runs = read_runs(run_dirs)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        plot_loss_curves(runs, tmp / PLOT_FILE)
        write_json(tmp / METRICS_FILE, summary(runs))
        (tmp / TRAIN_CSV).write_text(long_csv(runs, "train", "loss"))
        (tmp / VAL_CSV).write_text(long_csv(runs, "val", "val_loss"))
        inputs = {
            run["name"]: {
                "dir": str(run["dir"]),
                "metrics_sha256": sha256_file(run["dir"] / METRICS_FILE),
                "history_sha256": sha256_file(run["dir"] / HISTORY_FILE),
            }
            for run in runs
        }
        standin = stand_ins.provenance_fields(stand_ins.inherited(run_dirs))
        write_provenance(tmp, "lm_plot", {}, None, runs=inputs, **standin)
    return out_dir


# --------------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", nargs="+", required=True, metavar="RUN_DIR", help="run folders of `ssmttm train-lm` to compare"
    )
    parser.add_argument("--out", default="results/lm_plot", help="output folder (default: results/lm_plot)")


def run_from_args(args: argparse.Namespace) -> int:
    print(lm_plot(args.runs, args.out))
    return 0
