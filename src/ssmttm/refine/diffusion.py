"""Coarse-to-fine latent diffusion (DiscoDiff's "VALL-E" pattern, PAPER.md section 6): objective and sampling.

Latents are normalised continuous codec latents (B, K*D, T) (refine.normalise): codebook k holds channels
k*D .. (k+1)*D - 1, K codebooks of D dims (DAC 44 kHz: 9 x 8 = 72).

    secondary: input cat(clean codebook 1 (B, D, T), noisy codebooks 2..K (B, (K-1)*D, T)) -> v of codebooks 2..K
    primary:   input noisy codebook 1 (B, D, T)                                              -> v of codebook 1

The secondary model never receives a noisy codebook 1: in training it gets the ground truth, at sampling the given
codebook-1 latent (in the two-stage system, the LM's codebook-1 codes -> `quantizer.from_codes` -> normalise). The
optional primary model generates codebook 1 from text alone (the diffusion-only baseline). Training picks the primary
or the secondary with probability `p_primary` per step (0.5 in the paper).

Objective: v-prediction (target v = sqrt(abar_t) * noise - sqrt(1 - abar_t) * x0, diffusers' `get_velocity`), cosine
schedule, L1 loss, `num_train_timesteps` = 100. Condition drop: each row's caption is replaced by the U-Net's learned
null text with probability `cond_drop_prob` (0.2), and guidance at sampling is uncond + g * (cond - uncond) (g = 3).

Noise schedulers are diffusers': DDPMScheduler (training, and ancestral sampling), DDIMScheduler (eta 0) and
DPMSolverMultistepScheduler (dpmsolver++, 2nd order) for fewer steps; all with beta_schedule "squaredcos_cap_v2",
prediction_type "v_prediction" and "trailing" timestep spacing (the first sampling step is always t = N - 1, the
pure-noise end the model was trained on). clip_sample is off: normalised latents are not confined to [-1, 1].

Randomness: every draw takes a generator. Sampling takes one torch.Generator per row (a list, as diffusers
pipelines do), used for the row's initial noise and its DDPM noise, and the model treats rows independently, so a
row's result depends only on its own inputs and seed, not on the batch it was sampled in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

from ssmttm.refine.unet import UNet1D, UNetConfig, unet_preset

SCHEDULERS = ("ddpm", "ddim", "dpm++")
ROLES = ("primary", "secondary")
Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class DiffusionConfig:
    n_codebooks: int = 9  # K
    codebook_dim: int = 8  # D
    num_train_timesteps: int = 100
    cond_drop_prob: float = 0.2  # rows trained with the null text (classifier-free guidance)
    p_primary: float = 0.5  # probability that a training step trains the primary model (when there is one)
    guidance_scale: float = 3.0
    sample_steps: int = 100
    scheduler: str = "ddpm"  # one of SCHEDULERS, for sampling

    def __post_init__(self) -> None:
        if self.n_codebooks < 2:
            raise ValueError(
                f"refiner: n_codebooks must be >= 2 (codebook 1 + the ones to refine), got {self.n_codebooks}"
            )
        for name in ("cond_drop_prob", "p_primary"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"refiner.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"refiner.scheduler = {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")

    @property
    def channels(self) -> int:
        return self.n_codebooks * self.codebook_dim


def role_unet_config(
    cfg: DiffusionConfig, role: str, preset: str = "large", context_dim: int = 1024, **overrides
) -> UNetConfig:
    """U-Net channels of a role: secondary K*D -> (K-1)*D, primary D -> D."""
    d, c = cfg.codebook_dim, cfg.channels
    if role not in ROLES:
        raise ValueError(f"unknown refiner role {role!r}; choose one of {', '.join(ROLES)}")
    in_out = (c, c - d) if role == "secondary" else (d, d)
    return unet_preset(preset, *in_out, context_dim=context_dim, **overrides)


def make_scheduler(name: str = "ddpm", num_train_timesteps: int = 100):
    """A fresh diffusers scheduler (the multistep ones keep state: one per sampling run)."""
    common = dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    if name == "ddpm":
        return DDPMScheduler(**common, clip_sample=False)
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False)
    if name == "dpm++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


# ---------------------------------------------------------------------------------------------------- training


@dataclass
class TrainingBatch:
    model_input: torch.Tensor  # (B, C_in, T): secondary cat(clean cb1, noisy rest), primary noisy cb1
    target: torch.Tensor  # (B, C_out, T) velocity of the diffused channels
    timesteps: torch.Tensor  # (B,) int64 in [0, num_train_timesteps)
    noise: torch.Tensor  # (B, C_out, T)
    drop: torch.Tensor  # (B,) bool: rows trained with the null text


def training_batch(
    latents: torch.Tensor,
    cfg: DiffusionConfig,
    role: str = "secondary",
    scheduler: DDPMScheduler | None = None,
    generator: torch.Generator | None = None,
) -> TrainingBatch:
    """Draw timesteps, noise and condition drop for normalised latents (B, K*D, T) and build the model input."""
    b, c, _ = latents.shape
    d, device = cfg.codebook_dim, latents.device
    if c != cfg.channels:
        raise ValueError(f"latents have {c} channels, the refiner expects {cfg.n_codebooks} x {d} = {cfg.channels}")
    if role not in ROLES:
        raise ValueError(f"unknown refiner role {role!r}; choose one of {', '.join(ROLES)}")
    scheduler = scheduler or make_scheduler("ddpm", cfg.num_train_timesteps)
    gen_device = generator.device if generator is not None else device
    clean1, rest = latents[:, :d], latents[:, d:]  # (B, D, T), (B, (K-1)*D, T)
    x0 = rest if role == "secondary" else clean1
    t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=generator, device=gen_device).to(device)
    noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(device)
    drop = (torch.rand(b, generator=generator, device=gen_device) < cfg.cond_drop_prob).to(device)
    noisy = scheduler.add_noise(x0, noise, t)
    model_input = torch.cat([clean1, noisy], dim=1) if role == "secondary" else noisy
    target = scheduler.get_velocity(x0, noise, t)
    return TrainingBatch(model_input, target, t, noise, drop)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |pred - target| over (B, C, T), or over the frames where frame_mask (B, T) is True."""
    if frame_mask is None:
        return F.l1_loss(pred.float(), target.float())
    m = frame_mask.to(pred.device, torch.float32)[:, None, :]  # (B, 1, T)
    return ((pred.float() - target.float()).abs() * m).sum() / (m.sum() * pred.shape[1]).clamp(min=1)


def diffusion_loss(
    model: UNet1D,
    latents: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    cfg: DiffusionConfig,
    role: str = "secondary",
    frame_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    scheduler: DDPMScheduler | None = None,
) -> torch.Tensor:
    """L1 v-prediction loss of one role on normalised latents (B, K*D, T); text (B, S, E), text_mask (B, S)."""
    batch = training_batch(latents, cfg, role, scheduler, generator)
    pred = model(batch.model_input, batch.timesteps, text, text_mask, drop=batch.drop)
    return l1_loss(pred, batch.target, frame_mask)


def pick_role(cfg: DiffusionConfig, has_primary: bool, generator: torch.Generator | None = None) -> str:
    """The role a training step trains: primary with probability p_primary if there is a primary model."""
    if not has_primary:
        return "secondary"
    draw = torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu")
    return "primary" if float(draw) < cfg.p_primary else "secondary"


# ---------------------------------------------------------------------------------------------------- sampling


def guided(
    model: UNet1D,
    x: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guidance: uncond + g * (cond - uncond), both halves in one batch of 2B; g = 1 skips uncond."""
    b = x.shape[0]
    t = t.reshape(-1).expand(b).to(x.device)
    if guidance_scale == 1.0:
        return model(x, t, text, text_mask)
    drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x.device)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, text]), torch.cat([text_mask, text_mask]), drop)
    cond, uncond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def _check_generators(generator: Generators, batch_size: int) -> Generators:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    generator = list(generator)
    if len(generator) != batch_size:
        raise ValueError(f"{len(generator)} generators for a batch of {batch_size}: pass one per row")
    return generator


def row_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One seeded generator per row (CPU by default: the same seed gives the same noise on any device)."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def _denoise(
    model: UNet1D,
    shape: tuple[int, int, int],
    conditioning: torch.Tensor | None,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    steps: int,
    scheduler_name: str,
    guidance_scale: float,
    generator: Generators,
    num_train_timesteps: int,
) -> torch.Tensor:
    """Run the reverse process for the diffused channels (B, C, T); `conditioning` (clean cb1) is prepended."""
    device = text.device
    generator = _check_generators(generator, shape[0])
    scheduler = make_scheduler(scheduler_name, num_train_timesteps)
    with warnings.catch_warnings():  # diffusers' DPM-Solver calls np.array on a torch tensor (numpy 2 notice)
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning)
        scheduler.set_timesteps(steps, device=device)
    x = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        inp = inp if conditioning is None else torch.cat([conditioning, inp], dim=1)
        v = guided(model, inp, t, text, text_mask, guidance_scale)
        x = scheduler.step(v.float(), t, x, generator=generator).prev_sample
    return x


@torch.no_grad()
def sample_secondary(
    model: UNet1D,
    codebook1_latent: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    steps: int = 100,
    scheduler_name: str = "ddpm",
    guidance_scale: float = 3.0,
    generator: Generators = None,
    num_train_timesteps: int = 100,
) -> torch.Tensor:
    """Codebooks 2..K given codebook 1: normalised cb1 (B, D, T) -> normalised full latents (B, K*D, T).

    Channels 0..D-1 of the result are `codebook1_latent` unchanged. Pass `generator` as one generator per row
    (row_generators) for seeded, batch-independent results."""
    b, d, t = codebook1_latent.shape
    cfg = model.cfg
    if cfg.in_channels - cfg.out_channels != d:
        raise ValueError(
            f"codebook-1 latent has {d} channels but the secondary U-Net maps {cfg.in_channels} -> "
            f"{cfg.out_channels} channels (expects {cfg.in_channels - cfg.out_channels})"
        )
    cb1 = codebook1_latent.to(text.device, torch.float32)
    rest = _denoise(
        model,
        (b, cfg.out_channels, t),
        cb1,
        text,
        mask,
        steps,
        scheduler_name,
        guidance_scale,
        generator,
        num_train_timesteps,
    )
    return torch.cat([cb1, rest], dim=1)


@torch.no_grad()
def sample_primary(
    model: UNet1D,
    text: torch.Tensor,
    mask: torch.Tensor,
    n_frames: int,
    steps: int = 100,
    scheduler_name: str = "ddpm",
    guidance_scale: float = 3.0,
    generator: Generators = None,
    num_train_timesteps: int = 100,
) -> torch.Tensor:
    """Codebook 1 from text alone (diffusion-only baseline): normalised cb1 (B, D, n_frames)."""
    shape = (text.shape[0], model.cfg.out_channels, n_frames)
    return _denoise(
        model, shape, None, text, mask, steps, scheduler_name, guidance_scale, generator, num_train_timesteps
    )
