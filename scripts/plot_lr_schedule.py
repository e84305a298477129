"""Plot the paper profile's learning rate against optimizer steps, as written and as run: docs/lr_schedule.png.

    .venv/bin/python scripts/plot_lr_schedule.py [--params configs/paper.yaml] [--out docs/lr_schedule.png]

The curves come from the training code itself (ssmttm.train.schedule.lr_multiplier) applied to each backbone's
resolved `train_lm` section (pipeline.run_sections), so the figure shows what `ssmttm train-lm` would use.
docs/LR_SCHEDULE.md explains them.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ssmttm.config import load_params, section_to_dataclass  # noqa: E402
from ssmttm.pipeline import run_sections  # noqa: E402
from ssmttm.train.config import TrainConfig  # noqa: E402
from ssmttm.train.schedule import lr_multiplier  # noqa: E402

OFFICIAL_EPOCHS = 500  # Lonian6/SSM-TTM main_pl.py trains max_epochs = 500
ZOOM_STEPS = 2_000  # the right panel (log scale): the warm-up and the first per-epoch stairs


def train_config(params: dict, backbone: str) -> TrainConfig:
    return section_to_dataclass(TrainConfig, run_sections(params, backbone)["train_lm"])


def as_run(cfg: TrainConfig) -> TrainConfig:
    """The official run: per-epoch stepping and T = estimated_stepping_batches + 1 = epochs x steps per epoch + 1."""
    official_t = OFFICIAL_EPOCHS * cfg.steps_per_epoch + 1
    return dataclasses.replace(cfg, lr_schedule="as_run", schedule_steps=official_t)


def as_written(cfg: TrainConfig) -> TrainConfig:
    return dataclasses.replace(cfg, lr_schedule="as_written")


def curves(params: dict) -> list[tuple[str, TrainConfig, str]]:
    """(label, config, line style) of each curve: as_written for both step budgets, and as_run."""
    simba, cross = train_config(params, "prefix_simba"), train_config(params, "cross_transformer")
    official = as_run(cross)
    return [
        (f"as_written, {simba.max_steps // 1000}k steps (prefix_simba)", as_written(simba), "-"),
        (f"as_written, {cross.max_steps // 1000}k steps (cross_transformer)", as_written(cross), "--"),
        (f"as_run: once per epoch of {official.steps_per_epoch} steps (official run)", official, "-"),
    ]


def plot(params: dict, out: Path) -> None:
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for label, cfg, style in curves(params):
        multiplier = lr_multiplier(cfg)
        steps = range(0, cfg.max_steps + 1, 100)  # each run ends at its own max_steps
        full.plot(list(steps), [cfg.lr * multiplier(s) for s in steps], style, label=label)
        near = range(ZOOM_STEPS + 1)
        zoom.plot(list(near), [cfg.lr * multiplier(s) for s in near], style, label=label)
    full.axvline(100_000, color="grey", lw=0.8, ls=":")
    full.text(100_000, 0.2e-4, "  100k: as_run still warming up", color="grey", fontsize=8)
    zoom.set_yscale("log")
    for axis, title in ((full, "whole runs"), (zoom, f"first {ZOOM_STEPS:,} steps (log scale)")):
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("learning rate")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    full.legend(fontsize=8, loc="center right")
    fig.suptitle(f"LR schedule of the {params.get('profile', '')} profile: as_written (default) and as_run")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="configs/paper.yaml")
    parser.add_argument("--out", default="docs/lr_schedule.png")
    args = parser.parse_args()
    plot(load_params(args.params), Path(args.out))
    print(args.out)


if __name__ == "__main__":
    main()
