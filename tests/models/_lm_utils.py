"""Tiny LM configs and a fake text encoder shared by the LM tests (CPU, milliseconds per forward)."""

from __future__ import annotations

import torch

from ssmttm.models.lm import LMConfig, MusicLM
from ssmttm.models.registry import backbone_names
from ssmttm.text.encoder import TextEncoding

ALL_BACKBONES = backbone_names()
D_TEXT = 12
SPECIAL = 16


def tiny_cfg(backbone: str = "prefix_simba", **overrides) -> LMConfig:
    base = dict(
        backbone=backbone,
        d_model=32,
        n_layers=2,
        d_state=8,
        d_conv=4,
        expand=2,
        headdim=8,
        ngroups=1,
        chunk_size=4,
        n_heads=4,
        mlp_hidden=64,
        dropout=0.0,
        n_codebooks=1,
        codebook_size=SPECIAL,
        special_id=SPECIAL,
        seq_len=64,
        d_text=D_TEXT,
        p_drop_caption=0.0,
        p_drop_token=0.0,
    )
    base.update(overrides)
    return LMConfig(**base)


def tiny_model(backbone: str = "prefix_simba", seed: int = 0, **overrides) -> MusicLM:
    torch.manual_seed(seed)
    return MusicLM(tiny_cfg(backbone, **overrides)).eval()


def random_text(batch: int, length: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (B, S, D_TEXT) zero at padding and mask (B, S) with a shorter second caption."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    if batch > 1:
        mask[1, length // 2 + 1 :] = False
    hidden = torch.randn(batch, length, D_TEXT, generator=g) * mask[..., None]
    return hidden, mask


class FakeTextEncoder:
    """Deterministic stand-in for TextEncoder: a caption's encoding depends on the caption only."""

    max_length = 6
    hidden_size = D_TEXT

    def __init__(self):
        self.calls: list[int] = []

    def _one(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(sum(map(ord, caption)) * 31 + len(caption))
        n = min(len(caption.split()) + 1, self.max_length)  # "" -> one token, like T5's </s>
        mask = torch.arange(self.max_length) < n
        return torch.randn(self.max_length, D_TEXT, generator=g) * mask[:, None], mask

    def encode(self, captions: list[str]) -> TextEncoding:
        self.calls.append(len(captions))
        pairs = [self._one(c) for c in captions]
        return TextEncoding(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))

    def uncond(self, batch_size: int = 1) -> TextEncoding:
        return self.encode([""]).expand(batch_size)
