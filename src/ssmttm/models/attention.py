"""Attention family: RMSNorm, MLP, causal self-attention with a KV cache, cross-attention to text.

All projections are bias-free (the Transformer sizes of PAPER.md section 4 are reproduced that way); the MLP keeps
its biases like the released SiMBA MLP. Every mixer has the same incremental API as the Mamba2 mixer:
`forward` on a whole sequence, `prefill` (a whole prefix, filling a cache) and `step` (one position).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssmttm.models.few_rows import linear_few_rows


@dataclass
class AttentionConfig:
    d_model: int = 1024
    n_heads: int = 16
    mlp_hidden: int = 2048
    dropout: float = 0.0  # inside the MLP, between the two linears (the residual dropout lives in the block)

    def head_dim(self) -> int:
        # Checked by the attention layers only: an SSM backbone does not care about n_heads.
        if self.d_model % self.n_heads:
            raise ValueError(f"attention: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        return self.d_model // self.n_heads


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 (same parameter layout as mamba_ssm's RMSNorm: `weight` only)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class MLP(nn.Module):
    """d_model -> mlp_hidden -> d_model with GELU; position-wise, so it needs no state."""

    def __init__(self, cfg: AttentionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))

    def allocate(self, batch_size: int, max_len: int, device=None, dtype=None) -> None:
        return None

    def prefill(self, x: torch.Tensor, state: None, **_: object) -> torch.Tensor:
        return self.forward(x)

    def step(self, x: torch.Tensor, state: None) -> torch.Tensor:  # x (B, D): one decode position
        return linear_few_rows(self.fc2, self.drop(F.gelu(linear_few_rows(self.fc1, x))))


@dataclass
class KVCache:
    """Keys and values of every position seen so far, preallocated to `max_len`."""

    k: torch.Tensor  # (B, H, max_len, hd)
    v: torch.Tensor  # (B, H, max_len, hd)
    length: int = 0  # positions filled

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, n, hd) new keys/values; return all keys/values so far (B, H, length, hd)."""
        n = k.shape[2]
        end = self.length + n
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; cannot grow to {end}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class SelfAttention(nn.Module):
    """Causal multi-head self-attention (scaled_dot_product_attention; flash kernels on GPU)."""

    def __init__(self, cfg: AttentionConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim()
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, _ = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.n_heads, self.head_dim)  # (B, L, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        return q, k, v

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        b, _, length, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, length, -1))  # (B, L, D)

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:  # x (B, L, D)
        q, k, v = self._heads(x)
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def allocate(self, batch_size: int, max_len: int, device=None, dtype=None) -> KVCache:
        shape = (batch_size, self.n_heads, max_len, self.head_dim)
        dtype = dtype or self.qkv.weight.dtype
        device = device or self.qkv.weight.device
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def prefill(self, x: torch.Tensor, state: KVCache, **_: object) -> torch.Tensor:  # x (B, L, D)
        if state.length:
            raise ValueError("prefill expects an empty KV cache (allocate a new one per generation)")
        q, k, v = self._heads(x)
        state.append(k, v)
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def step(self, x: torch.Tensor, state: KVCache) -> torch.Tensor:  # x (B, D)
        q, k, v = self._heads(x.unsqueeze(1))  # (B, H, 1, hd)
        keys, values = state.append(k, v)  # (B, H, length, hd)
        # The new query sits after every cached key, so no mask is needed.
        return self._merge(F.scaled_dot_product_attention(q, keys, values))[:, 0]


@dataclass
class CrossKV:
    """Keys/values of the projected text, computed once per generation."""

    k: torch.Tensor  # (B, H, S, hd)
    v: torch.Tensor  # (B, H, S, hd)
    mask: torch.Tensor | None  # (B, 1, 1, S) bool, True = attend
    any_valid: torch.Tensor | None  # (B, 1, 1) rows with at least one text token to attend to


class CrossAttention(nn.Module):
    """Queries from the audio stream, keys/values from the projected text (B, S, D) with its mask (B, S).

    A caption whose every token is masked (token dropout can do that) attends to nothing: its output is zero
    instead of the NaN a fully masked softmax gives.
    """

    def __init__(self, cfg: AttentionConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim()
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def text_kv(self, text: torch.Tensor, text_mask: torch.Tensor | None) -> CrossKV:
        b, s, _ = text.shape
        kv = self.kv(text).view(b, s, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, H, S, hd)
        if text_mask is None:
            return CrossKV(kv[0], kv[1], None, None)
        mask = text_mask.bool()
        any_valid = mask.any(dim=-1)  # (B,)
        # Rows with no valid key attend everywhere (finite softmax) and are zeroed afterwards.
        mask = mask | ~any_valid[:, None]
        return CrossKV(kv[0], kv[1], mask[:, None, None, :], any_valid[:, None, None])

    def _attend(self, x: torch.Tensor, kv: CrossKV) -> torch.Tensor:  # x (B, L, D)
        b, length, _ = x.shape
        q = self.q(x).view(b, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        y = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=kv.mask)  # (B, H, L, hd)
        y = self.out(y.transpose(1, 2).reshape(b, length, -1))  # (B, L, D)
        if kv.any_valid is not None:
            y = y * kv.any_valid.to(y.dtype)
        return y

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None, **_: object
    ) -> torch.Tensor:
        return self._attend(x, self.text_kv(text, text_mask))

    def allocate(self, batch_size: int, max_len: int, device=None, dtype=None) -> dict:
        return {}  # filled by prefill, which is when the text is known

    def prefill(
        self, x: torch.Tensor, state: dict, text: torch.Tensor, text_mask: torch.Tensor | None = None, **_: object
    ) -> torch.Tensor:
        state["kv"] = self.text_kv(text, text_mask)
        return self._attend(x, state["kv"])

    def step(self, x: torch.Tensor, state: dict) -> torch.Tensor:  # x (B, D)
        return self._attend(x.unsqueeze(1), state["kv"])[:, 0]
