"""Tiny refiner configs, text and a recording U-Net wrapper for the refine tests (CPU, seconds)."""

from __future__ import annotations

import torch
from torch import nn

from ssmttm.refine.diffusion import DiffusionConfig, role_unet_config
from ssmttm.refine.unet import UNet1D

K, D, E = 3, 2, 12  # codebooks, dims per codebook, text width
CFG = DiffusionConfig(n_codebooks=K, codebook_dim=D)


def tiny_unet(role: str = "secondary", seed: int = 0, **overrides) -> UNet1D:
    torch.manual_seed(seed)
    return UNet1D(role_unet_config(CFG, role, "tiny", context_dim=E, **overrides)).eval()


def text_batch(b: int, s: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, E) token states and a (B, S) mask with 1..S real tokens per row."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, s, E, generator=g)
    lengths = torch.arange(b) % s + 1
    return hidden, torch.arange(s)[None, :] < lengths[:, None]


class Recorder(nn.Module):
    """Wraps a U-Net and records every call's input, timesteps and drop flags."""

    def __init__(self, model: UNet1D):
        super().__init__()
        self.model, self.cfg, self.calls = model, model.cfg, []

    def forward(self, x, timestep, text, text_mask, drop=None):
        self.calls.append({"x": x.clone(), "t": timestep.clone(), "drop": None if drop is None else drop.clone()})
        return self.model(x, timestep, text, text_mask, drop)
