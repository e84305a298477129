"""The LR schedule: warm-up then cosine to min_lr_ratio x lr, per optimizer step (as_written) or, as the official run
stepped it, once per epoch (as_run). Expected values are computed by hand from the formulas in the comments."""

import math
import warnings

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from ssmttm.train.config import TrainConfig
from ssmttm.train.schedule import (
    PerEpochWarmupCosine,
    WarmupCosine,
    build_scheduler,
    lightning_scheduler_config,
    lr_at,
    lr_multiplier,
)

# The paper profile (configs/paper.yaml): lr 1e-4, 500 warm-up steps, cosine to 0.005 x lr.
LR, WARMUP, MIN_RATIO = 1e-4, 500, 0.005
# as_run: 425 optimizer steps per epoch; T = Lightning's estimated_stepping_batches + 1 = 500 epochs x 425 + 1.
STEPS_PER_EPOCH, OFFICIAL_T = 425, 212_501


def paper_train(**overrides) -> TrainConfig:
    base = dict(lr=LR, warmup_steps=WARMUP, min_lr_ratio=MIN_RATIO, max_steps=100_000, steps_per_epoch=STEPS_PER_EPOCH)
    return TrainConfig(**{**base, **overrides})


# as_written, per optimizer step s: (s + 1) / 500 in the warm-up, then with p = (s - 500) / (T - 500),
# lr = 1e-4 x (0.005 + 0.995 x (1 + cos(pi p)) / 2), held at 5e-7 from T on.
AS_WRITTEN_100K = {  # prefix_simba, T = max_steps = 100k
    0: 2.0e-7,  # 1 / 500 x 1e-4
    499: 1.0e-4,  # 500 / 500
    500: 1.0e-4,  # p = 0
    10_000: 9.777870984e-05,  # p = 9500 / 99500
    100_000: 5.0e-7,  # p = 1
    212_000: 5.0e-7,  # held
}
AS_WRITTEN_400K = {  # cross_transformer, T = max_steps = 400k
    10_000: 9.986123674e-05,  # p = 9500 / 399500
    100_000: 8.553214835e-05,  # p = 99500 / 399500
    212_000: 4.565964912e-05,  # p = 211500 / 399500
    400_000: 5.0e-7,  # p = 1
}
# as_run: the official multiplier at the counter i = floor(s / 425) + 1 (epoch e from 0 runs at counter e + 1):
# i / 500 while i < 500, then (5e-4 + (0.1 - 5e-4) (1 + cos(pi (i - 500) / (212501 - 500))) / 2) / 0.1.
AS_RUN = {
    0: 2.0e-7,  # e 0, i 1: 1 / 500
    499: 4.0e-7,  # e 1 (425 <= 499 < 850), i 2
    500: 4.0e-7,
    10_000: 4.8e-6,  # e 23 (9775 <= s < 10200), i 24
    100_000: 4.72e-5,  # e 235 (99875 <= s < 100300), i 236: still warming up
    212_000: 9.98e-5,  # e 498, i 499: the last warm-up epoch
    212_500: 9.999999999e-05,  # e 500, i 501: cosine at p = 1 / 212001
    400_000: 9.999893284e-05,  # e 941, i 942: p = 442 / 212001, the cosine has barely moved
}


@pytest.mark.parametrize(
    "cfg,expected",
    [
        (paper_train(), AS_WRITTEN_100K),
        (paper_train(max_steps=400_000), AS_WRITTEN_400K),
        (paper_train(lr_schedule="as_run", schedule_steps=OFFICIAL_T), AS_RUN),
        (paper_train(max_steps=400_000, lr_schedule="as_run", schedule_steps=OFFICIAL_T), AS_RUN),
    ],
    ids=["as_written-100k", "as_written-400k", "as_run-100k", "as_run-400k"],
)
def test_paper_rates_at_chosen_steps(cfg, expected):
    multiplier = lr_multiplier(cfg)
    for step, lr in expected.items():
        assert LR * multiplier(step) == pytest.approx(lr, rel=1e-9, abs=1e-15), step


def test_lambda_lr_stepped_per_optimizer_step_gives_the_rates():
    """What module.configure_optimizers builds, stepped once per optimizer step as Lightning's `interval: step` does."""
    for cfg, expected in (
        (paper_train(), AS_WRITTEN_100K),
        (paper_train(lr_schedule="as_run", schedule_steps=OFFICIAL_T), AS_RUN),
    ):
        optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        scheduler = build_scheduler(optimizer, lr_multiplier(cfg))
        seen = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scheduler stepped without optimizer.step()
            for step in range(1001):
                seen[step] = optimizer.param_groups[0]["lr"]
                scheduler.step()
        for step in (0, 499, 500):
            assert seen[step] == pytest.approx(expected[step], rel=1e-12), step
        if cfg.lr_schedule == "as_run":  # one rate per epoch of 425 steps
            assert len({seen[s] for s in range(425)}) == 1 and len({seen[s] for s in range(425, 850)}) == 1
            assert seen[850] == pytest.approx(6e-7)  # epoch 2, counter 3


# ------------------------------------------------------------------------------------------ the official mechanism


def official_multiplier(warmup: int, total: int):
    """The official code's multiplier (Lonian6/SSM-TTM pl_model.py, configure_optimizers), restated: i / warmup in the
    warm-up, then a cosine between 0.1 and 5e-4 over `total`, divided by 0.1."""

    def factor(i: int) -> float:
        if i < warmup:
            return i / warmup
        return (5e-4 + 0.5 * (0.1 - 5e-4) * (1.0 + math.cos((i - warmup) / (total - warmup) * math.pi))) / 0.1

    return factor


class OneWeight(L.LightningModule):
    """A one-parameter module recording the learning rate of every optimizer step."""

    def __init__(self, micro_batches_per_epoch: int, configure):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.micro_batches_per_epoch, self.configure = micro_batches_per_epoch, configure
        self.rates: list[float] = []

    def train_dataloader(self):
        return DataLoader(torch.ones(self.micro_batches_per_epoch, 1), batch_size=1)

    def training_step(self, batch, batch_idx):
        return (self.weight * batch).sum()

    def on_before_optimizer_step(self, optimizer):
        self.rates.append(optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        return self.configure(self)


def configure_as(cfg: TrainConfig):
    """What LMTrainModule.configure_optimizers returns for `cfg`, for a OneWeight module."""

    def configure(module):
        optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr)
        scheduler = build_scheduler(optimizer, lr_multiplier(cfg))
        return {"optimizer": optimizer, "lr_scheduler": lightning_scheduler_config(scheduler)}

    return configure


def fit(module: OneWeight, **trainer_args) -> list[float]:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    return module.rates


def test_as_run_equals_the_official_lightning_run():
    """The official configuration run through Lightning 2.6 (LambdaLR, one explicit step, Lightning's default
    per-epoch interval, T = estimated_stepping_batches + 1) gives the rates of as_run stepped per optimizer step.
    7 micro-batches per epoch with accumulation 2 make 4 optimizer steps per epoch (the last one after a single
    micro-batch), 12 epochs 48 steps."""
    lr, warmup, epochs, accumulate, micro_batches = 1e-3, 5, 12, 2, 7

    def official(module):
        optimizer = torch.optim.AdamW(module.parameters(), lr=lr)
        total = module.trainer.estimated_stepping_batches + 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, official_multiplier(warmup, total))
        scheduler.step()
        return [optimizer], [scheduler]

    official_rates = fit(OneWeight(micro_batches, official), max_epochs=epochs, accumulate_grad_batches=accumulate)
    assert len(official_rates) == 48

    cfg = TrainConfig(
        lr=lr, warmup_steps=warmup, max_steps=48, lr_schedule="as_run", schedule_steps=49, steps_per_epoch=4
    )

    our_rates = fit(OneWeight(micro_batches, configure_as(cfg)), max_steps=48, accumulate_grad_batches=accumulate)
    assert our_rates == pytest.approx(official_rates, rel=1e-12)
    assert official_rates[:8] == pytest.approx([lr / 5] * 4 + [2 * lr / 5] * 4)  # one warm-up step per epoch


def test_as_written_in_lightning_moves_every_optimizer_step():
    cfg = TrainConfig(lr=1e-3, warmup_steps=4, max_steps=12, min_lr_ratio=0.1)

    rates = fit(OneWeight(7, configure_as(cfg)), max_steps=12, accumulate_grad_batches=2)
    assert rates == pytest.approx([lr_at(s, 1e-3, 4, 12, 0.1) for s in range(12)], rel=1e-12)


# ------------------------------------------------------------------------------------------ settings and formulas


def test_schedule_settings():
    assert paper_train().cosine_steps == 100_000  # schedule_steps null = max_steps
    assert paper_train(schedule_steps=OFFICIAL_T).cosine_steps == OFFICIAL_T
    assert isinstance(lr_multiplier(paper_train()), WarmupCosine)
    assert lr_multiplier(paper_train(lr_schedule="as_run")) == PerEpochWarmupCosine(500, 100_000, 0.005, 425)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainConfig(lr_schedule="as_run")
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="per_epoch")
    with pytest.raises(ValueError, match="schedule_steps"):
        TrainConfig(warmup_steps=500, schedule_steps=100)


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
    assert PerEpochWarmupCosine(0, 100, 0.1, 10)(0) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 100)))


@pytest.mark.parametrize(
    "multiplier,fields",
    [
        (WarmupCosine(4, 20, 0.01), {"warmup_steps": 4, "max_steps": 20, "min_lr_ratio": 0.01}),
        (
            PerEpochWarmupCosine(4, 20, 0.01, 3),
            {"warmup_steps": 4, "cosine_steps": 20, "min_lr_ratio": 0.01, "steps_per_epoch": 3},
        ),
    ],
)
def test_scheduler_state_round_trips(multiplier, fields):
    """The multiplier is a picklable object: its fields travel in the scheduler's state_dict (resume)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = build_scheduler(opt, multiplier)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert state["lr_lambdas"][0] == fields
    opt2 = torch.optim.AdamW([param], lr=1e-3)
    sched2 = build_scheduler(opt2, type(multiplier)(**{**fields, "warmup_steps": 1}))
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3 * multiplier(7))
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
