"""Learning-rate schedule: linear warm-up, then cosine decay to `min_lr_ratio` x lr, per OPTIMIZER step.

The official code writes the schedule in steps but leaves Lightning's default `interval: "epoch"`, so the rate moves
once per epoch (about 425 optimizer steps) and the 500-step warm-up lasts 500 epochs (PAPER.md section 9). Here the
scheduler is registered with `interval: "step"`, which Lightning advances after each optimizer step (not after each
accumulated micro-batch).

    factor(s) = (s + 1) / warmup                                   s < warmup
              = r + (1 - r) * (1 + cos(pi * (s - warmup) / (max_steps - warmup))) / 2     afterwards, r = min ratio

`s` is the number of optimizer steps already taken, so the first update uses lr / warmup and update number `warmup`
uses the full lr. After `max_steps` the factor stays at r.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WarmupCosine:
    """Picklable multiplier for LambdaLR (its fields land in the scheduler's state_dict, so resume restores them)."""

    warmup_steps: int
    max_steps: int
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.max_steps - self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Learning rate used by optimizer update number `step + 1` (after `step` updates)."""
    return lr * WarmupCosine(warmup_steps, max_steps, min_lr_ratio)(step)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, max_steps, min_lr_ratio))


def lightning_scheduler_config(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """The `lr_scheduler` entry of `configure_optimizers`: stepped after every optimizer step."""
    return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"}
