"""A trained refiner on disk and in memory: its U-Nets, diffusion settings, latent statistics and text setting.

    <folder>/model.safetensors   "secondary.<param>" (always) and "primary.<param>" (when trained) tensors
    <folder>/config.json         format, diffusion (DiffusionConfig), unets (UNetConfig per role), text (the text
                                 section the refiner was trained with), codec (identity of the codec whose latents
                                 it models)
    <folder>/latent_stats.json   per-codebook means and stds (refine.normalise), computed from the training shards

`Refiner.refine` is the two-stage glue of PAPER.md section 6: raw codebook-1 latents (B, D, T) -> normalise ->
secondary sampling with the caption -> denormalise -> raw latents of all codebooks (B, K*D, T), ready for the codec's
`latents_to_codes` and decode. Lengths that are not a multiple of the U-Net's 2**(levels-1) are padded with the
codebook mean (zero once normalised) and cropped back.

`init_refiner` builds a seeded, untrained refiner for `ssmttm train-refiner` (refine.stage), whose checkpoints and
`final/` are folders of `save_refiner`; `Refiner.text_config` is the text setting to encode captions with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ssmttm.artifacts import atomic_path, write_json
from ssmttm.config import ParamsError, dataclass_to_dict, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.refine.diffusion import (
    SCHEDULERS,
    DiffusionConfig,
    role_unet_config,
    row_generators,
    sample_primary,
    sample_secondary,
)
from ssmttm.refine.normalise import LATENT_STATS_CHOICES, STATS_FILE, LatentStats, denormalise, normalise
from ssmttm.refine.unet import UNet1D, UNetConfig
from ssmttm.text.encoder import TextConfig

REFINER_FORMAT = "ssmttm.refiner/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class RefinerConfig:
    """params.yaml `refiner`: which U-Nets and which diffusion objective (the codec sets K and D)."""

    unet: str = "small"  # preset of refine.unet.PRESETS: large, small (the paper's) or tiny
    unet_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. a smaller dim for the CPU demo
    primary: bool = False  # also train the primary U-Net (codebook 1 from text): the diffusion-only baseline
    num_train_timesteps: int = 100
    cond_drop_prob: float = 0.2
    p_primary: float = 0.5
    latent_stats: str = "computed"  # refine.normalise.select_stats: computed (our train split) or discodiff (PAPER 6)

    def __post_init__(self) -> None:
        if self.latent_stats not in LATENT_STATS_CHOICES:
            raise ParamsError(
                f"refiner.latent_stats = {self.latent_stats!r}; choose one of {', '.join(LATENT_STATS_CHOICES)}"
            )

    def diffusion(self, n_codebooks: int, codebook_dim: int) -> DiffusionConfig:
        return DiffusionConfig(
            n_codebooks=n_codebooks,
            codebook_dim=codebook_dim,
            num_train_timesteps=self.num_train_timesteps,
            cond_drop_prob=self.cond_drop_prob,
            p_primary=self.p_primary,
        )

    def unet_config(self, diffusion: DiffusionConfig, role: str, context_dim: int) -> UNetConfig:
        return role_unet_config(diffusion, role, self.unet, context_dim, **self.unet_overrides)


@dataclass
class Refiner:
    secondary: UNet1D
    primary: UNet1D | None
    diffusion: DiffusionConfig
    stats: LatentStats
    text: dict[str, Any]  # the text section it was trained with (encoder, max_length)
    codec: dict[str, Any]  # identity of the codec whose latents it models

    @property
    def device(self) -> torch.device:
        return next(self.secondary.parameters()).device

    @property
    def text_config(self) -> TextConfig:
        """The text setting the refiner was trained with: encode captions with it (or read its text cache)."""
        return section_to_dataclass(TextConfig, self.text)

    def unets(self) -> dict[str, UNet1D]:
        """The trained U-Nets by role: secondary, and primary when there is one."""
        return {"secondary": self.secondary, **({"primary": self.primary} if self.primary is not None else {})}

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        multiple = self.secondary.cfg.length_multiple
        n = x.shape[-1]
        return F.pad(x, (0, (-n) % multiple)), n

    @torch.no_grad()
    def refine(
        self,
        codebook1: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        seeds: Sequence[int],
        steps: int = 100,
        scheduler: str = "ddpm",
        guidance_scale: float = 3.0,
    ) -> torch.Tensor:
        """Raw codebook-1 latents (B, D, T) -> raw latents of all K codebooks (B, K*D, T), one seed per row."""
        if scheduler not in SCHEDULERS:
            raise UserFacingError(f"refiner sampler {scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
        d = self.diffusion.codebook_dim
        if codebook1.shape[1] != d:
            raise UserFacingError(f"codebook-1 latents have {codebook1.shape[1]} channels, the refiner expects {d}")
        x, n = self._pad(normalise(codebook1.float().to(self.device), self.stats))
        out = sample_secondary(
            self.secondary,
            x,
            text.to(self.device),
            text_mask.to(self.device),
            steps=steps,
            scheduler_name=scheduler,
            guidance_scale=guidance_scale,
            generator=row_generators(seeds),
            num_train_timesteps=self.diffusion.num_train_timesteps,
        )
        return denormalise(out[..., :n], self.stats)

    @torch.no_grad()
    def generate_codebook1(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        n_frames: int,
        seeds: Sequence[int],
        steps: int = 100,
        scheduler: str = "ddpm",
        guidance_scale: float = 3.0,
    ) -> torch.Tensor:
        """The diffusion-only baseline's first stage: text -> raw codebook-1 latents (B, D, n_frames)."""
        if self.primary is None:
            raise UserFacingError("this refiner has no primary U-Net; train it with refiner.primary: true")
        multiple = self.primary.cfg.length_multiple
        padded = n_frames + (-n_frames) % multiple
        x = sample_primary(
            self.primary,
            text.to(self.device),
            text_mask.to(self.device),
            padded,
            steps=steps,
            scheduler_name=scheduler,
            guidance_scale=guidance_scale,
            generator=row_generators(seeds),
            num_train_timesteps=self.diffusion.num_train_timesteps,
        )
        return denormalise(x[..., :n_frames], self.stats)


def init_refiner(
    cfg: RefinerConfig,
    stats: LatentStats,
    context_dim: int,
    text: TextConfig,
    codec: dict[str, Any],
    seed: int,
) -> Refiner:
    """A freshly initialised refiner for latents of `stats`' K x D and text states of width `context_dim`.

    The weights depend on `seed` only (drawn from a forked RNG: the caller's global RNG state is left as it was)."""
    diffusion = cfg.diffusion(stats.n_codebooks, stats.codebook_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        secondary = UNet1D(cfg.unet_config(diffusion, "secondary", context_dim))
        primary = UNet1D(cfg.unet_config(diffusion, "primary", context_dim)) if cfg.primary else None
    return Refiner(secondary, primary, diffusion, stats, dataclass_to_dict(text), dict(codec))


def save_refiner(folder: str | Path, refiner: Refiner, extra: dict[str, Any] | None = None) -> Path:
    """Write weights, config and statistics into `folder` (each file atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"secondary.{k}": v for k, v in refiner.secondary.state_dict().items()}
    unets = {"secondary": asdict(refiner.secondary.cfg)}
    if refiner.primary is not None:
        state.update({f"primary.{k}": v for k, v in refiner.primary.state_dict().items()})
        unets["primary"] = asdict(refiner.primary.cfg)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": REFINER_FORMAT})
    refiner.stats.save(folder / STATS_FILE)
    config = {
        "format": REFINER_FORMAT,
        "diffusion": asdict(refiner.diffusion),
        "unets": unets,
        "text": refiner.text,
        "codec": refiner.codec,
        **(extra or {}),
    }
    write_json(folder / CONFIG_FILE, config)
    return folder


def load_refiner(folder: str | Path, device: str | torch.device = "cpu") -> Refiner:
    """Inverse of save_refiner, in eval mode. Never unpickles."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE, STATS_FILE):
        if not (folder / name).is_file():
            raise UserFacingError(
                f"refiner {folder}: {name} not found; pass a folder written by `ssmttm train-refiner` "
                "(results/train_refiner/final or results/train_refiner/step-NNNNNNN)"
            )
    config = json.loads((folder / CONFIG_FILE).read_text())
    if config.get("format") != REFINER_FORMAT:
        raise UserFacingError(f"refiner {folder}: format {config.get('format')!r}, expected {REFINER_FORMAT!r}")
    weights = load_file(str(folder / WEIGHTS_FILE), device=str(device))
    models: dict[str, UNet1D | None] = {}
    for role in ("secondary", "primary"):
        if role not in config["unets"]:
            models[role] = None
            continue
        model = UNet1D(section_to_dataclass(UNetConfig, config["unets"][role]))
        prefix = f"{role}."
        model.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)
        models[role] = model.to(device).eval()
    return Refiner(
        secondary=models["secondary"],
        primary=models["primary"],
        diffusion=section_to_dataclass(DiffusionConfig, config["diffusion"]),
        stats=LatentStats.load(folder / STATS_FILE),
        text=dict(config.get("text") or {}),
        codec=dict(config.get("codec") or {}),
    )
