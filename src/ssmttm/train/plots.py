"""Loss curves of several training runs: against optimizer steps and against training FLOPs (6 N D), one PNG.

Reads each run's `metrics.json` (for the backbone name) and the `history.jsonl` beside it (one row per logged step:
`step`, `loss`, `flops`, and `val_loss` on validation rows). The FLOPs panel is the paper's efficiency view: at equal
compute, which backbone reaches the lower loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssmttm.artifacts import atomic_path, read_jsonl
from ssmttm.errors import UserFacingError

HISTORY_FILE = "history.jsonl"


def read_run(metrics_path: str | Path) -> dict[str, Any]:
    """{"name", "train": [(step, flops, loss)], "val": [(step, flops, val_loss)]} of one run folder."""
    metrics_path = Path(metrics_path)
    if not metrics_path.is_file():
        raise UserFacingError(f"{metrics_path}: not found; pass the metrics.json of finished `ssmttm train-lm` runs")
    metrics = json.loads(metrics_path.read_text())
    history_path = metrics_path.parent / HISTORY_FILE
    if not history_path.is_file():
        raise UserFacingError(f"{history_path}: not found beside {metrics_path.name}; re-run `ssmttm train-lm`")
    rows = read_jsonl(history_path)
    train = [(r["step"], r["flops"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["flops"], r["val_loss"]) for r in rows if "val_loss" in r]
    return {"name": metrics.get("backbone", metrics_path.parent.name), "train": train, "val": val}


def plot_loss_curves(metrics_paths: list[str | Path], out_path: str | Path) -> Path:
    """Two panels (loss vs step, loss vs FLOPs, log x) with one colour per run; dashed lines are validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics_paths:
        raise UserFacingError("no metrics.json given to plot; pass results/train_lm/*/metrics.json")
    runs = [read_run(p) for p in metrics_paths]
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
    fig.suptitle("LM training loss per backbone")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out_path
