"""Training loop of the refiner (PAPER.md section 6): diffusers DDPM, L1 v-prediction, one role per optimizer step.

One optimizer step: the role is picked (primary with probability p_primary when there is a primary U-Net, else the
secondary, which always sees the ground-truth codebook 1), `accumulate_grad_batches` micro-batches of
`batch_size` crops are drawn from `LatentCrops`, their captions read from the text cache, and `diffusion_loss`
(timesteps, noise and condition drop from the run's generator) is back-propagated into that role's U-Net only. The
optimizer (Adam or AdamW) holds both U-Nets; the other role's parameters get no gradient, so Adam leaves them and
their moments as they are. The learning rate rises linearly over `warmup_steps`, then stays at `lr`.

Exact resume. All randomness of a step comes from one torch.Generator (role, timesteps, noise, condition drop) and
from the data position (crop offsets: refine.data). A checkpoint `step-NNNNNNN/` is a refiner folder
(refine.model.save_refiner) plus `trainer_state.pt`: the step, the optimizer state, the generator state, the data
position and the running sums of the current log window, read back with torch.load(weights_only=True). Restoring
them repeats the uninterrupted run bit for bit on the same machine and settings.

Validation is deterministic: the valid split's centred crops (refine.data.validation_batches), each at
`val_timesteps` evenly spaced timesteps, with noise from a generator seeded by the run seed afresh every time, and
no condition drop; the loss is the masked-frame mean of the L1 v-prediction error, per role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssmttm.artifacts import atomic_dir
from ssmttm.errors import UserFacingError
from ssmttm.refine.data import CropBatch, LatentCrops
from ssmttm.refine.diffusion import DiffusionConfig, diffusion_loss, l1_loss, make_scheduler, pick_role
from ssmttm.refine.model import Refiner, save_refiner
from ssmttm.refine.unet import UNet1D

log = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.pt"
TRAINER_FORMAT = "ssmttm.refiner_trainer/1"
OPTIMIZERS = ("adam", "adamw")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "32-true", "bf16-mixed")


@dataclass
class TrainRefinerConfig:
    """params.yaml `train_refiner`. Defaults: the paper's recipe where PAPER.md section 6 gives it."""

    steps: int = 100_000  # optimizer steps (not in PAPER.md)
    batch_size: int = 32  # crops per micro-batch
    accumulate_grad_batches: int = 8  # micro-batches per optimizer step: 32 x 8 = 256 crops (PAPER.md 6)
    crop_frames: int = 2320  # frames per crop (PAPER.md 6), a multiple of the U-Net's length_multiple
    optimizer: str = "adam"  # adam (PAPER.md 6) or adamw
    lr: float = 4e-5  # PAPER.md 6
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up, then constant lr
    gradient_clip_val: float | None = None  # gradient-norm clipping; None disables it
    checkpoint_every: int = 1000
    keep_last_checkpoints: int | None = 3  # None keeps every checkpoint
    val_every: int = 1000
    val_clips: int | None = 512  # valid clips per validation run; None: the whole valid split
    val_timesteps: int = 8  # evenly spaced timesteps each validation crop is scored at
    log_every: int = 50
    num_threads: int | None = None  # torch CPU threads; None keeps torch's default
    device: str = "auto"  # auto (cuda when available), cpu or cuda
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32-true on CPU

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        for name in ("steps", "batch_size", "accumulate_grad_batches", "crop_frames", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train_refiner.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_every", "val_timesteps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train_refiner.{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train_refiner.optimizer = {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.device not in DEVICES:
            raise ValueError(f"train_refiner.device = {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train_refiner.precision = {self.precision!r}; choose one of {', '.join(PRECISIONS)}")

    @property
    def clips_per_step(self) -> int:
        return self.batch_size * self.accumulate_grad_batches


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("train_refiner.device is cuda but torch sees no CUDA device; set it to auto or cpu")
    return torch.device(choice)


def use_bf16(cfg: TrainRefinerConfig, device: torch.device) -> bool:
    return cfg.precision == "bf16-mixed" or (cfg.precision == "auto" and device.type == "cuda")


def make_optimizer(refiner: Refiner, cfg: TrainRefinerConfig) -> torch.optim.Optimizer:
    """One optimizer over every U-Net, secondary first (the order the optimizer state is saved in)."""
    params = [p for model in refiner.unets().values() for p in model.parameters()]
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def learning_rate(step: int, cfg: TrainRefinerConfig) -> float:
    """lr of optimizer step `step` (0-based): linear warm-up over warmup_steps, then constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def check_crop(cfg: TrainRefinerConfig, refiner: Refiner) -> None:
    multiple = refiner.secondary.cfg.length_multiple
    if cfg.crop_frames % multiple:
        nearest = max(multiple, cfg.crop_frames - cfg.crop_frames % multiple)
        raise UserFacingError(
            f"train_refiner.crop_frames = {cfg.crop_frames} is not a multiple of {multiple}, the length the U-Net's "
            f"{refiner.secondary.cfg.levels} levels need; use e.g. {nearest}"
        )


def encode_captions(text: Any, captions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (B, S, E) token states and (B, S) mask on `device`, from a TextCache (or a TextEncoder)."""
    enc = text.encode(captions)
    return enc.hidden.to(device), enc.mask.to(device)


# ---------------------------------------------------------------------------------------------------- validation


def fixed_timesteps(n: int, num_train_timesteps: int) -> list[int]:
    """n timesteps spread evenly over [0, num_train_timesteps): the centres of n equal bins."""
    return sorted({min(num_train_timesteps - 1, int((i + 0.5) * num_train_timesteps / n)) for i in range(n)})


@torch.no_grad()
def validation_loss(
    model: UNet1D,
    role: str,
    batches: Iterable[CropBatch],
    text: Any,
    diffusion: DiffusionConfig,
    n_timesteps: int,
    seed: int,
    device: torch.device,
) -> float | None:
    """Masked-frame mean L1 v-prediction loss of `role` over the batches at fixed timesteps (None without clips)."""
    scheduler = make_scheduler("ddpm", diffusion.num_train_timesteps)
    generator = torch.Generator().manual_seed(seed)
    d = diffusion.codebook_dim
    was_training = model.training
    model.eval()
    total, frames = 0.0, 0
    for batch in batches:
        hidden, mask = encode_captions(text, batch.captions, device)
        latents, frame_mask = batch.latents.to(device), batch.frame_mask.to(device)
        clean1, rest = latents[:, :d], latents[:, d:]  # (B, D, T), (B, (K-1)*D, T)
        x0 = rest if role == "secondary" else clean1
        n_real = int(frame_mask.sum())
        for t_value in fixed_timesteps(n_timesteps, diffusion.num_train_timesteps):
            t = torch.full((len(batch),), t_value, dtype=torch.long, device=device)
            noise = torch.randn(x0.shape, generator=generator).to(device)
            noisy = scheduler.add_noise(x0, noise, t)
            model_input = torch.cat([clean1, noisy], dim=1) if role == "secondary" else noisy
            pred = model(model_input, t, hidden, mask)
            loss = l1_loss(pred, scheduler.get_velocity(x0, noise, t), frame_mask)
            total += float(loss) * n_real
            frames += n_real
    model.train(was_training)
    return total / frames if frames else None


# ---------------------------------------------------------------------------------------------------- trainer


class RefinerTrainer:
    """The refiner, its optimizer, data stream and generator at one optimizer step; `step()` advances one step."""

    def __init__(
        self,
        refiner: Refiner,
        cfg: TrainRefinerConfig,
        data: LatentCrops,
        text: Any,
        seed: int,
        device: torch.device,
    ):
        check_crop(cfg, refiner)
        self.refiner, self.cfg, self.data, self.text, self.seed = refiner, cfg, data, text, seed
        self.device = device
        for model in refiner.unets().values():
            model.to(device).train()
        self.optimizer = make_optimizer(refiner, cfg)
        self.generator = torch.Generator().manual_seed(seed)  # CPU: the same draws on any device
        self.scheduler = make_scheduler("ddpm", refiner.diffusion.num_train_timesteps)
        self.global_step = 0
        self.window: dict[str, float] = {}  # running sums of the current log window: loss_<role>, steps_<role>

    # ------------------------------------------------------------------------------------------------ one step

    def step(self) -> tuple[str, float]:
        """One optimizer step; returns its role and loss (mean over the micro-batches)."""
        cfg, diffusion = self.cfg, self.refiner.diffusion
        models = self.refiner.unets()
        role = pick_role(diffusion, "primary" in models, self.generator)
        model = models[role]
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.global_step, cfg)
        total = 0.0
        for _ in range(cfg.accumulate_grad_batches):
            batch = self.data.batch(cfg.batch_size)
            hidden, mask = encode_captions(self.text, batch.captions, self.device)
            latents, frame_mask = batch.latents.to(self.device), batch.frame_mask.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg, self.device)):
                loss = diffusion_loss(
                    model,
                    latents,
                    hidden,
                    mask,
                    diffusion,
                    role,
                    frame_mask=frame_mask,
                    generator=self.generator,
                    scheduler=self.scheduler,
                )
            (loss / cfg.accumulate_grad_batches).backward()
            total += float(loss.detach())
        if cfg.gradient_clip_val is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.gradient_clip_val)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # no gradient: the other role's parameters stay as they are
        self.global_step += 1
        loss_value = total / cfg.accumulate_grad_batches
        self.window[f"loss_{role}"] = self.window.get(f"loss_{role}", 0.0) + loss_value
        self.window[f"steps_{role}"] = self.window.get(f"steps_{role}", 0.0) + 1
        return role, loss_value

    def pop_window(self) -> dict[str, float]:
        """Mean training loss since the last call, overall and per role: {"loss", "loss_secondary", ...}."""
        window, self.window = self.window, {}
        steps = sum(v for k, v in window.items() if k.startswith("steps_"))
        sums = sum(v for k, v in window.items() if k.startswith("loss_"))
        row = {"loss": sums / steps} if steps else {}
        for role in self.refiner.unets():
            if window.get(f"steps_{role}"):
                row[f"loss_{role}"] = window[f"loss_{role}"] / window[f"steps_{role}"]
        return row

    def validate(self, batches: Callable[[], Iterable[CropBatch]], seed: int) -> dict[str, float]:
        """{"val_loss": secondary, "val_loss_primary": primary}; `batches()` gives the valid batches afresh, `seed`
        the noise (the same every time: the losses of two steps differ only by the weights)."""
        row = {}
        for role, model in self.refiner.unets().items():
            loss = validation_loss(
                model, role, batches(), self.text, self.refiner.diffusion, self.cfg.val_timesteps, seed, self.device
            )
            if loss is not None:
                row["val_loss" if role == "secondary" else f"val_loss_{role}"] = loss
        return row

    # ------------------------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": TRAINER_FORMAT,
            "step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "data": self.data.state_dict(),
            "window": dict(self.window),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != TRAINER_FORMAT:
            raise UserFacingError(f"trainer state format {state.get('format')!r}, expected {TRAINER_FORMAT!r}")
        self.global_step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.data.load_state_dict(state["data"])
        self.window = {k: float(v) for k, v in state["window"].items()}

    def save(self, folder: str | Path, extra: dict[str, Any]) -> Path:
        """Write the checkpoint folder atomically: the refiner (weights, config + `extra` + step, stats) and the
        trainer state."""
        with atomic_dir(folder) as tmp:
            save_refiner(tmp, self.refiner, extra={**extra, "step": self.global_step})
            torch.save(self.state_dict(), tmp / TRAINER_STATE_FILE)
        return Path(folder)


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """The trainer state of a checkpoint folder written by `RefinerTrainer.save` (tensors and containers only)."""
    path = Path(checkpoint) / TRAINER_STATE_FILE
    if not path.is_file():
        raise UserFacingError(
            f"checkpoint {checkpoint}: {TRAINER_STATE_FILE} not found; delete the folder to resume "
            "from an earlier checkpoint"
        )
    return torch.load(path, map_location="cpu", weights_only=True)
