"""The LR schedule: warm-up then cosine to min_lr_ratio x lr, advanced once per optimizer step (not per epoch)."""

import math

import pytest
import torch

from ssmttm.train.schedule import WarmupCosine, build_scheduler, lr_at


def test_warmup_is_linear_and_reaches_the_peak():
    f = WarmupCosine(warmup_steps=500, max_steps=100_000, min_lr_ratio=0.005)
    assert f(0) == pytest.approx(1 / 500)
    assert f(249) == pytest.approx(250 / 500)
    assert f(499) == pytest.approx(1.0)
    assert f(500) == pytest.approx(1.0)  # cosine starts at the peak


def test_cosine_ends_at_min_ratio_and_stays_there():
    f = WarmupCosine(warmup_steps=10, max_steps=110, min_lr_ratio=0.005)
    assert f(60) == pytest.approx(0.005 + 0.995 * 0.5)  # half-way: cos(pi/2) = 0
    assert f(110) == pytest.approx(0.005)
    assert f(10_000) == pytest.approx(0.005)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay


def test_lr_at_matches_the_paper_numbers():
    assert lr_at(0, 1e-4, 500, 100_000, 0.005) == pytest.approx(2e-7)
    assert lr_at(99_999, 1e-4, 500, 100_000, 0.005) == pytest.approx(5e-7, rel=1e-3)


def test_no_warmup():
    f = WarmupCosine(warmup_steps=0, max_steps=100, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_scheduler_state_round_trips():
    """The multiplier is a picklable object: its fields travel in the scheduler's state_dict (resume)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = build_scheduler(opt, warmup_steps=4, max_steps=20, min_lr_ratio=0.01)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert state["lr_lambdas"][0] == {"warmup_steps": 4, "max_steps": 20, "min_lr_ratio": 0.01}
    opt2 = torch.optim.AdamW([param], lr=1e-3)
    sched2 = build_scheduler(opt2, warmup_steps=1, max_steps=2, min_lr_ratio=0.5)
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3 * WarmupCosine(4, 20, 0.01)(7))
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
