"""Learning-rate schedule: linear warm-up, then cosine decay to `min_lr_ratio` x lr. Two modes (`train_lm.lr_schedule`).

as_written (default): the schedule the official code writes, advanced per OPTIMIZER step. The scheduler is registered
with `interval: "step"`, which Lightning advances after each optimizer step (not after each accumulated micro-batch):

    factor(s) = (s + 1) / warmup                                              s < warmup
              = r + (1 - r) * (1 + cos(pi * (s - warmup) / (T - warmup))) / 2     afterwards, r = min_lr_ratio

`s` is the number of optimizer steps already taken, so the first update uses lr / warmup and update number `warmup`
uses the full lr; T = `schedule_steps` (default `max_steps`), after which the factor stays at r.

as_run: what the official run actually did (PAPER.md section 9). Lonian6/SSM-TTM `pl_model.py`,
`Text_Mmamba_pl.configure_optimizers`, builds a LambdaLR whose multiplier is written in steps,

    official(i) = i / warmup                                                  i < warmup
                = (5e-4 + (0.1 - 5e-4) * (1 + cos(pi * (i - warmup) / (T - warmup))) / 2) / 0.1   afterwards

(so r = 5e-4 / 0.1 = 0.005 and official(warmup) = 1), with warmup = 500 and T = Lightning's
`trainer.estimated_stepping_batches + 1`: 500 epochs (`main_pl.py`: `max_epochs=500`) x steps per epoch + 1, where
an epoch's steps are ceil(micro-batches / 32) (the last, partial accumulation also steps).
It calls `scheduler.step()` once itself and returns the scheduler without an interval, so Lightning steps it at the
end of every epoch: during epoch e (from 0) the counter i is e + 1. At optimizer step s that is

    factor(s) = official(floor(s / steps_per_epoch) + 1)

With about 425 optimizer steps per epoch the 500-step warm-up lasts 500 epochs (212k steps): at 100k steps the rate
is 1e-4 x 236 / 500 = 4.72e-5, and the cosine never gets going. Both modes are pure functions of the step, so
resuming from a checkpoint continues the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ssmttm.train.config import TrainConfig


def warmup_cosine(i: float, warmup: int, cosine_end: int, min_lr_ratio: float) -> float:
    """i / warmup below `warmup`, then the cosine from 1 down to min_lr_ratio at `cosine_end` (held there after)."""
    if i < warmup:
        return i / warmup
    span = max(cosine_end - warmup, 1)
    progress = min(max((i - warmup) / span, 0.0), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class WarmupCosine:
    """as_written: the multiplier of optimizer step `step` for LambdaLR. Picklable; its fields land in the
    scheduler's state_dict, so a resume restores them. `max_steps` is the cosine's length T (train_lm.schedule_steps,
    default train_lm.max_steps); the field keeps its old name so the scheduler state of earlier checkpoints loads."""

    warmup_steps: int
    max_steps: int
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return warmup_cosine(step, self.warmup_steps, self.max_steps, self.min_lr_ratio)


@dataclass
class PerEpochWarmupCosine:
    """as_run: the official multiplier evaluated at the epoch counter the official run fed it (module docstring).

    LambdaLR still calls it once per optimizer step; the epoch is computed from the step, so the rate moves once every
    `steps_per_epoch` steps exactly as Lightning's per-epoch stepping moved it. Past T the official cosine would rise
    again; here it stays at min_lr_ratio (the official run's counter stops at 501, far below T = 212501)."""

    warmup_steps: int
    cosine_steps: int  # T of the official formula: estimated_stepping_batches + 1
    min_lr_ratio: float
    steps_per_epoch: int

    def __call__(self, step: int) -> float:
        counter = step // self.steps_per_epoch + 1  # LambdaLR's last_epoch during epoch e: e + 1
        return warmup_cosine(counter, self.warmup_steps, self.cosine_steps, self.min_lr_ratio)


def lr_multiplier(cfg: TrainConfig) -> WarmupCosine | PerEpochWarmupCosine:
    """The multiplier of `train_lm.lr_schedule`; the cosine's length is `schedule_steps` (default max_steps)."""
    if cfg.lr_schedule == "as_run":
        return PerEpochWarmupCosine(cfg.warmup_steps, cfg.cosine_steps, cfg.min_lr_ratio, cfg.steps_per_epoch)
    return WarmupCosine(cfg.warmup_steps, cfg.cosine_steps, cfg.min_lr_ratio)


def lr_at(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """as_written learning rate used by optimizer update number `step + 1` (after `step` updates)."""
    return lr * WarmupCosine(warmup_steps, max_steps, min_lr_ratio)(step)


def build_scheduler(
    optimizer: torch.optim.Optimizer, multiplier: WarmupCosine | PerEpochWarmupCosine
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def lightning_scheduler_config(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """The `lr_scheduler` entry of `configure_optimizers`: stepped after every optimizer step (both modes)."""
    return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"}
