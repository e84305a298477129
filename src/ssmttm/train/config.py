"""The `train_lm` params section: optimisation, schedule, checkpoints, logging and the Lightning hardware settings.

Defaults are the paper's recipe (PAPER.md section 5): AdamW lr 1e-4, weight decay 0.02, betas (0.9, 0.999), eps 1e-7,
500 warm-up steps then cosine to 0.005 x lr per optimizer step, batch 4 x 32 accumulation = 128 clips, bf16 mixed
precision on GPU, a checkpoint every 500 steps, no gradient clipping. The demo profile shrinks the step counts only.
Hardware (accelerator, devices, num_nodes, strategy, precision) comes from here and nowhere else, so the same code
runs on a laptop CPU and on several GPU nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true")
LR_SCHEDULES = ("as_written", "as_run")  # train.schedule: per optimizer step (intended) / per epoch (official run)


@dataclass
class TrainConfig:
    # optimisation
    batch_size: int = 4  # clips per micro-batch and device
    accumulate_grad_batches: int = 32  # micro-batches per optimizer step: 4 x 32 = 128 clips
    max_steps: int = 100_000  # optimizer steps
    lr: float = 1e-4
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7
    warmup_steps: int = 500
    min_lr_ratio: float = 0.005  # the cosine ends at min_lr_ratio x lr
    lr_schedule: str = "as_written"  # one of LR_SCHEDULES (train.schedule)
    schedule_steps: int | None = None  # the cosine's length T; None = max_steps
    steps_per_epoch: int | None = None  # as_run: optimizer steps per epoch of the official run (paper 425)
    gradient_clip_val: float | None = None  # the paper does not clip
    # checkpoints, validation, logging (all counted in optimizer steps)
    checkpoint_every: int = 500
    keep_last_checkpoints: int | None = None  # full checkpoints (to resume from) kept; None keeps every checkpoint
    # steps whose weights outlive pruning (optimizer state dropped): the metrics-against-steps figure, for generate
    keep_weights_at_steps: tuple[int, ...] = ()
    val_every: int = 500
    val_batches: int | None = None  # micro-batches per validation run; None = the whole valid split
    log_every: int = 10
    # data
    num_workers: int = 0  # DataLoader worker processes per device
    num_threads: int | None = None  # torch CPU threads per process; None keeps torch's default (all cores)
    # hardware: Lightning Trainer arguments
    accelerator: str = "auto"
    devices: int | str = 1  # an int, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"  # auto = bf16-mixed on GPU, 32-true on CPU
    deterministic: bool = True  # torch.use_deterministic_algorithms; exact reruns on CPU
    max_hours: float = 1.0  # wall-clock budget requested from the scheduler (Snakemake runtime resource)

    def __post_init__(self) -> None:
        self.keep_weights_at_steps = tuple(sorted(set(self.keep_weights_at_steps)))
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        positive = (
            "batch_size",
            "accumulate_grad_batches",
            "max_steps",
            "checkpoint_every",
            "val_every",
            "log_every",
            "num_nodes",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train_lm.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"train_lm.num_threads must be >= 1 or null, got {self.num_threads}")
        if self.warmup_steps < 0:
            raise ValueError(f"train_lm.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train_lm.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        self._check_schedule()
        if self.keep_last_checkpoints is not None and self.keep_last_checkpoints < 1:
            raise ValueError(
                f"train_lm.keep_last_checkpoints must be >= 1 or null (keep all), got {self.keep_last_checkpoints}"
            )
        self._check_kept_steps()
        for name, allowed in (
            ("accelerator", ACCELERATORS),
            ("strategy", STRATEGIES),
            ("precision", PRECISIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train_lm.{name} = {getattr(self, name)!r}; must be one of {', '.join(allowed)}")

    def _check_kept_steps(self) -> None:
        """Every step of keep_weights_at_steps must be one where a checkpoint is saved: a multiple of checkpoint_every
        (steps beyond max_steps are never reached and keep nothing), or max_steps."""
        steps = self.keep_weights_at_steps
        if any(step < 1 for step in steps):
            raise ValueError(f"train_lm.keep_weights_at_steps must be steps >= 1, got {list(steps)}")
        unsaved = [s for s in steps if s % self.checkpoint_every and s != self.max_steps]
        if unsaved:
            raise ValueError(
                f"train_lm.keep_weights_at_steps {unsaved}: no checkpoint is saved there; checkpoints are saved every "
                f"checkpoint_every = {self.checkpoint_every} steps and at max_steps = {self.max_steps}"
            )

    def _check_schedule(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train_lm.lr_schedule = {self.lr_schedule!r}; must be one of {', '.join(LR_SCHEDULES)}")
        if self.schedule_steps is not None and self.schedule_steps < max(self.warmup_steps, 1):
            raise ValueError(
                f"train_lm.schedule_steps = {self.schedule_steps} must be >= 1 and >= train_lm.warmup_steps "
                f"({self.warmup_steps}), or null (= max_steps)"
            )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"train_lm.steps_per_epoch must be >= 1 or null, got {self.steps_per_epoch}")
        if self.lr_schedule == "as_run" and self.steps_per_epoch is None:
            raise ValueError(
                "train_lm.lr_schedule = as_run evaluates the schedule once per epoch of the official run: set "
                "train_lm.steps_per_epoch (425 optimizer steps in the paper's run)"
            )

    @property
    def cosine_steps(self) -> int:
        """T, the step (as_written) or epoch counter (as_run) at which the cosine reaches min_lr_ratio."""
        return self.schedule_steps if self.schedule_steps is not None else self.max_steps

    @property
    def clips_per_step(self) -> int:
        """Clips per optimizer step on one device (times the data-parallel world size for the global batch)."""
        return self.batch_size * self.accumulate_grad_batches
