"""Pre-norm residual sublayers and the backbone stack shared by every registered backbone.

A sublayer is `x + dropout(mixer(RMSNorm(x)))`; a block is a fixed sequence of sublayers (e.g. Mamba2 -> MLP);
a backbone is `n_layers` identical blocks with no final norm (the released model has none before its head).
The sublayer hides the small API differences between mixers so the backbone can run a whole sequence
(`forward`), fill a cache from a prefix (`prefill`) or advance one position (`step`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ssmttm.models.attention import RMSNorm

MIXER_KINDS = ("mamba", "mlp", "self_attn", "cross_attn")


@dataclass
class BackboneCache:
    """Recurrent state of a whole backbone: one entry per sublayer (SSM state, KV cache, text K/V or None)."""

    states: list[list[Any]]  # [block][sublayer]
    position: int = 0  # positions consumed so far (prefix included)
    max_len: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Sublayer(nn.Module):
    """RMSNorm -> mixer -> dropout -> residual."""

    def __init__(self, kind: str, d_model: int, mixer: nn.Module, dropout: float):
        super().__init__()
        if kind not in MIXER_KINDS:
            raise ValueError(f"unknown mixer kind {kind!r}; valid: {', '.join(MIXER_KINDS)}")
        self.kind = kind
        self.norm = RMSNorm(d_model)
        self.mixer = mixer
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None, text_mask: torch.Tensor | None) -> torch.Tensor:
        y = self.norm(x)  # (B, L, D)
        if self.kind == "cross_attn":
            y = self.mixer(y, text=text, text_mask=text_mask)
        else:
            y = self.mixer(y)
        return x + self.drop(y)

    def allocate(self, batch_size: int, max_len: int, device=None, dtype=None) -> Any:
        if self.kind == "mamba":
            return self.mixer.allocate_state(batch_size, device=device, dtype=dtype)
        return self.mixer.allocate(batch_size, max_len, device=device, dtype=dtype)

    def prefill(
        self, x: torch.Tensor, state: Any, text: torch.Tensor | None, text_mask: torch.Tensor | None
    ) -> torch.Tensor:
        y = self.norm(x)  # (B, L, D)
        if self.kind == "mamba":
            y = self.mixer(y, state=state)  # fills `state` with the state after the last position
        elif self.kind == "cross_attn":
            y = self.mixer.prefill(y, state, text=text, text_mask=text_mask)
        else:
            y = self.mixer.prefill(y, state)
        return x + self.drop(y)

    def step(self, x: torch.Tensor, state: Any) -> torch.Tensor:  # x (B, D)
        return x + self.drop(self.mixer.step(self.norm(x), state))


class Block(nn.Module):
    def __init__(self, sublayers: list[Sublayer]):
        super().__init__()
        self.layers = nn.ModuleList(sublayers)


class Backbone(nn.Module):
    """`n_layers` blocks. `text_mode` is "prefix" (text enters as the first positions of `h`) or "cross"."""

    def __init__(self, name: str, text_mode: str, blocks: list[Block]):
        super().__init__()
        self.name = name
        self.text_mode = text_mode
        self.blocks = nn.ModuleList(blocks)

    def sublayers(self):
        """Every sublayer in order (the order of a flattened BackboneCache.states)."""
        for block in self.blocks:
            yield from block.layers

    def forward(
        self, h: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h (B, L, D), text (B, S, D) projected text for cross models, text_mask (B, S) -> (B, L, D)."""
        self._check_text(text)
        for sub in self.sublayers():
            h = sub(h, text, text_mask)
        return h

    def allocate_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> BackboneCache:
        """Empty state for `batch_size` sequences of at most `max_len` positions (prefix included)."""
        states = [
            [sub.allocate(batch_size, max_len, device=device, dtype=dtype) for sub in block.layers]
            for block in self.blocks
        ]
        return BackboneCache(states=states, position=0, max_len=max_len)

    def prefill(
        self,
        h: torch.Tensor,
        cache: BackboneCache,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run a whole prefix h (B, L, D) once, leaving the state after it in `cache`; returns (B, L, D)."""
        self._check_text(text)
        if cache.position:
            raise ValueError("prefill expects a fresh cache (allocate_cache) at position 0")
        for block, block_states in zip(self.blocks, cache.states, strict=True):
            for sub, state in zip(block.layers, block_states, strict=True):
                h = sub.prefill(h, state, text, text_mask)
        cache.position = h.shape[1]
        return h

    def step(self, x: torch.Tensor, cache: BackboneCache) -> torch.Tensor:
        """One new position x (B, D) -> (B, D), advancing `cache` in place."""
        for block, block_states in zip(self.blocks, cache.states, strict=True):
            for sub, state in zip(block.layers, block_states, strict=True):
                x = sub.step(x, state)
        cache.position += 1
        return x

    def _check_text(self, text: torch.Tensor | None) -> None:
        if self.text_mode == "cross" and text is None:
            raise ValueError(f"backbone {self.name!r} cross-attends to text: pass text (B, S, D)")
