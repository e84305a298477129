"""Mamba2 mixer in pure PyTorch, parameter-compatible with `mamba_ssm.Mamba2` (mamba_ssm 2.x).

One layer maps u (B, L, D) to (B, L, D):

    z, xBC, dt = split(in_proj(u))               # gate (d_inner), conv input (conv_dim), step sizes (nheads)
    x, B, C    = split(silu(causal_conv(xBC)))   # depthwise conv over time, kernel d_conv
    dt         = softplus(dt + dt_bias);  A = -exp(A_log)
    y          = SSD(x, dt, A, B, C) + D * x     # the selective scan, see ssd.py
    y          = rmsnorm(y * silu(z)) * weight   # gated RMSNorm per group (or y * silu(z) without rmsnorm)
    out        = out_proj(y)

Parameter names and shapes equal mamba_ssm's, so its state dicts load unchanged. On CUDA, when mamba_ssm's Triton
kernels import, forward/step call them (`use_kernels`); otherwise (CPU, CI) the reference scans in ssd.py run.
Generation is recurrent: forward(prompt, state) fills a `Mamba2State`, then step() advances it one token at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ssmttm.models.few_rows import linear_few_rows
from ssmttm.models.ssd import ssd_chunked, ssd_step

# Kernels exist only on CUDA machines with the `cuda` extra. Any failure (missing package, broken CUDA/Triton build)
# means: use the reference path.
try:
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    HAS_MAMBA_SSM_KERNELS = True
except Exception:
    mamba_chunk_scan_combined = selective_state_update = None
    HAS_MAMBA_SSM_KERNELS = False
try:
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
except Exception:
    causal_conv1d_fn = causal_conv1d_update = None


@dataclass
class Mamba2Config:
    d_model: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    conv_bias: bool = True
    bias: bool = False
    rmsnorm: bool = True  # gated RMSNorm before out_proj (mamba_ssm's RMSNormGated, norm_before_gate=False)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    A_init_range: tuple[float, float] = (1.0, 16.0)

    def __post_init__(self) -> None:
        self.A_init_range = tuple(self.A_init_range)  # YAML gives lists
        if self.d_inner % self.headdim:
            raise ValueError(
                f"Mamba2Config: expand*d_model = {self.d_inner} must be a multiple of headdim = {self.headdim}"
            )
        if self.nheads % self.ngroups:
            raise ValueError(f"Mamba2Config: nheads = {self.nheads} must be a multiple of ngroups = {self.ngroups}")
        if not 0 < self.A_init_range[0] <= self.A_init_range[1]:
            raise ValueError(f"Mamba2Config: A_init_range {self.A_init_range} must satisfy 0 < low <= high")
        if min(self.d_state, self.d_conv, self.chunk_size) < 1:
            raise ValueError("Mamba2Config: d_state, d_conv and chunk_size must be positive")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:  # channels through the conv: x, B and C
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def d_in_proj(self) -> int:  # [z, xBC, dt]
        return self.d_inner + self.conv_dim + self.nheads


@dataclass
class Mamba2State:
    """Per-layer recurrent state, updated in place by forward(x, state) and step()."""

    conv_state: Tensor  # (B, conv_dim, d_conv): the last d_conv conv inputs (xBC before the conv), newest last
    ssm_state: Tensor  # (B, nheads, headdim, d_state)


def _f32(t: Tensor) -> Tensor:
    """At least float32 (float64 stays float64): the precision of the reference path's pointwise math."""
    return t if t.dtype == torch.float64 else t.float()


def mamba2_param_count(config: Mamba2Config) -> int:
    """Number of parameters of Mamba2(config), from the shapes alone."""
    c = config
    n = c.d_model * c.d_in_proj + (c.d_in_proj if c.bias else 0)  # in_proj
    n += c.conv_dim * c.d_conv + (c.conv_dim if c.conv_bias else 0)  # depthwise conv1d
    n += 3 * c.nheads  # dt_bias, A_log, D
    n += c.d_inner if c.rmsnorm else 0  # norm.weight
    n += c.d_inner * c.d_model + (c.d_model if c.bias else 0)  # out_proj
    return n


class _CausalTaps(torch.autograd.Function):
    """Depthwise causal conv as shifted multiply-adds: padded (B, K - 1 + L, C), weight (C, K), bias (C,) or None
    -> (B, L, C), out[t] = bias + sum_k weight[:, k] * padded[t + k].

    Backward is written out (each tap adds its share of the gradient in place into one buffer) because autograd
    through the slices allocates and zero-fills a full-size gradient per tap.
    """

    @staticmethod
    def forward(ctx, padded: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        width, length = weight.shape[1], padded.shape[1] - weight.shape[1] + 1
        first = padded[:, :length]
        out = first * weight[:, 0] if bias is None else torch.addcmul(bias, first, weight[:, 0])
        for k in range(1, width):
            out.addcmul_(padded[:, k : k + length], weight[:, k])
        ctx.save_for_backward(padded, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        padded, weight = ctx.saved_tensors
        width, length = weight.shape[1], grad.shape[1]
        grad_padded = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_padded = torch.zeros_like(padded)
            for k in range(width):
                grad_padded[:, k : k + length].addcmul_(grad, weight[:, k])
        if ctx.needs_input_grad[1]:
            taps = [(grad * padded[:, k : k + length]).sum(dim=(0, 1)) for k in range(width)]
            grad_weight = torch.stack(taps, dim=1).to(weight.dtype)  # (C, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 1))
        return grad_padded, grad_weight, grad_bias


class GatedRMSNorm(nn.Module):
    """rmsnorm(y * silu(z)) * weight, normalised over groups of `group_size` channels, in float32 (or float64)."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.group_size, self.eps = group_size, eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:  # y, z (..., dim)
        g = (_f32(y) * F.silu(_f32(z))).unflatten(-1, (-1, self.group_size))  # (..., groups, group_size)
        g = g * torch.rsqrt(g.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (g.flatten(-2) * _f32(self.weight)).to(y.dtype)


class Mamba2(nn.Module):
    def __init__(self, config: Mamba2Config, layer_idx: int | None = None, device=None, dtype=None):
        super().__init__()
        c = self.config = config
        factory = {"device": device, "dtype": dtype}
        self.layer_idx = layer_idx
        self.use_kernels = HAS_MAMBA_SSM_KERNELS  # settable: False forces the reference path
        self.last_path: str | None = None  # "kernels" or "reference": what the last forward/step ran
        # Modules are created in mamba_ssm's order, so one seed gives the same initial weights as theirs on CPU.
        self.in_proj = nn.Linear(c.d_model, c.d_in_proj, bias=c.bias, **factory)
        self.conv1d = nn.Conv1d(
            c.conv_dim, c.conv_dim, c.d_conv, groups=c.conv_dim, padding=c.d_conv - 1, bias=c.conv_bias, **factory
        )
        param_dtype = dtype or torch.get_default_dtype()
        # Initial step sizes log-uniform in [dt_min, dt_max]; dt_bias is their inverse softplus, so that
        # softplus(0 + dt_bias) reproduces them: softplus^-1(s) = s + log(1 - exp(-s)).
        log_lo, log_hi = math.log(c.dt_min), math.log(c.dt_max)
        dt0 = torch.exp(torch.rand(c.nheads, device=device) * (log_hi - log_lo) + log_lo).clamp(min=c.dt_init_floor)
        self.dt_bias = nn.Parameter((dt0 + torch.log(-torch.expm1(-dt0))).to(param_dtype))
        # Decay rates A = -exp(A_log) with -A uniform in A_init_range.
        A0 = torch.empty(c.nheads, dtype=torch.float32, device=device).uniform_(*c.A_init_range)
        self.A_log = nn.Parameter(torch.log(A0).to(param_dtype))
        self.D = nn.Parameter(torch.ones(c.nheads, **factory))  # skip connection y += D * x
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # same marker as mamba_ssm, for optimiser param groups
        self.norm = GatedRMSNorm(c.d_inner, c.d_inner // c.ngroups, eps=1e-5, **factory) if c.rmsnorm else None
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=c.bias, **factory)

    # ------------------------------------------------------------------------------------------------ state

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        """Zero state (= an empty history) for `batch_size` sequences; dtype defaults to the weights' dtype."""
        c, w = self.config, self.in_proj.weight
        device, dtype = device or w.device, dtype or w.dtype
        return Mamba2State(
            conv_state=torch.zeros(batch_size, c.conv_dim, c.d_conv, device=device, dtype=dtype),
            ssm_state=torch.zeros(batch_size, c.nheads, c.headdim, c.d_state, device=device, dtype=dtype),
        )

    def _kernels_active(self, x: Tensor) -> bool:
        fast = bool(self.use_kernels and HAS_MAMBA_SSM_KERNELS and x.is_cuda)
        self.last_path = "kernels" if fast else "reference"
        return fast

    # ------------------------------------------------------------------------------------------------ shared parts

    def _split_in_proj(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c = self.config
        z, xBC, dt = torch.split(self.in_proj(u), [c.d_inner, c.conv_dim, c.nheads], dim=-1)
        return z, xBC, dt  # (..., d_inner), (..., conv_dim), (..., nheads)

    def _split_xBC(self, xBC: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c = self.config
        x, B, C = torch.split(xBC, [c.d_inner, c.ngroups * c.d_state, c.ngroups * c.d_state], dim=-1)
        x = x.unflatten(-1, (c.nheads, c.headdim))  # (..., H, P)
        return x, B.unflatten(-1, (c.ngroups, c.d_state)), C.unflatten(-1, (c.ngroups, c.d_state))  # (..., G, N)

    def _gate_and_project(self, y: Tensor, z: Tensor) -> Tensor:  # y, z (..., d_inner) -> (..., d_model)
        y = self.norm(y, z) if self.norm is not None else y * F.silu(z)
        return self.out_proj(y)

    def _conv(self, xBC: Tensor, state: Mamba2State | None, fast: bool) -> Tensor:
        """Causal depthwise conv + SiLU over time: (B, L, conv_dim) -> (B, L, conv_dim).

        The left context is the state's last d_conv - 1 inputs (zeros without a state); the state is then replaced
        by the last d_conv inputs seen. Off the kernels the d_conv taps are shifted multiply-adds over time: on CPU a
        grouped F.conv1d is several times slower than that (its backward most of all).
        """
        if fast and state is None and causal_conv1d_fn is not None:
            weight = self.conv1d.weight.squeeze(1)  # (conv_dim, d_conv)
            xt = xBC.transpose(1, 2)  # (B, conv_dim, L)
            return causal_conv1d_fn(xt, weight, self.conv1d.bias, activation="silu").transpose(1, 2)
        width = self.config.d_conv
        if state is None:
            padded = F.pad(xBC, (0, 0, width - 1, 0))  # (B, d_conv - 1 + L, conv_dim)
        else:
            left = state.conv_state[:, :, 1:].transpose(1, 2).to(xBC.dtype)  # (B, d_conv - 1, conv_dim)
            padded = torch.cat([left, xBC], dim=1)
            state.conv_state.copy_(padded[:, -width:].transpose(1, 2).detach())
        out = _CausalTaps.apply(padded, self.conv1d.weight[:, 0], self.conv1d.bias)  # (B, L, conv_dim)
        return F.silu(out).to(xBC.dtype)

    # ------------------------------------------------------------------------------------------------ forward

    def forward(self, x: Tensor, state: Mamba2State | None = None) -> Tensor:
        """x (B, L, D) -> (B, L, D).

        With `state`, the sequence continues from it (a fresh `allocate_state()` means an empty history) and the state
        is overwritten in place with the state after the last position, so step() can go on (prefill).
        """
        c = self.config
        fast = self._kernels_active(x)
        z, xBC, dt = self._split_in_proj(x)  # (B, L, d_inner), (B, L, conv_dim), (B, L, H)
        xs, B, C = self._split_xBC(self._conv(xBC, state, fast))  # (B, L, H, P), (B, L, G, N) x 2
        A = -torch.exp(_f32(self.A_log))  # (H,) negative: every head decays
        initial = None if state is None else state.ssm_state
        if fast:
            out = mamba_chunk_scan_combined(
                xs,
                dt,
                A,
                B,
                C,
                chunk_size=c.chunk_size,
                D=self.D,
                z=None,
                dt_bias=self.dt_bias,
                dt_softplus=True,
                initial_states=initial,
                return_final_states=state is not None,
            )
            y, final = out if state is not None else (out, None)
        else:
            dt = F.softplus(_f32(dt) + _f32(self.dt_bias))  # (B, L, H)
            y, final = ssd_chunked(xs, dt, A, B, C, c.chunk_size, initial_state=initial)  # (B, L, H, P)
            y = y + xs * self.D[:, None].to(xs.dtype)
        if state is not None:
            state.ssm_state.copy_(final.detach())
        return self._gate_and_project(y.flatten(-2), z)  # (B, L, D)

    def step(self, x: Tensor, state: Mamba2State) -> Tensor:
        """One recurrent token: x (B, D) -> (B, D); `state` is advanced in place.

        CUDA with mamba_ssm: its kernels. Otherwise the in-place path below: the same arithmetic as
        `step_reference` (which keeps the out-of-place formulation of ssd.ssd_step as the oracle) in about half the
        operations, with no temporary copy of the state, and the projections in few_rows' order.
        """
        if self._kernels_active(x):
            return self._step_kernels(x, state)
        c = self.config
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        if state.ssm_state.dtype != acc or not state.ssm_state.is_contiguous():
            return self.step_reference(x, state)  # a state kept in low precision goes the out-of-place way
        batch, G, R, P, N = x.shape[0], c.ngroups, c.nheads // c.ngroups, c.headdim, c.d_state
        z, xBC, dt = torch.split(linear_few_rows(self.in_proj, x), [c.d_inner, c.conv_dim, c.nheads], dim=-1)
        window = torch.cat([state.conv_state[:, :, 1:], xBC[..., None].to(state.conv_state.dtype)], dim=-1)
        state.conv_state.copy_(window)  # (B, conv_dim, d_conv): drop the oldest input, append xBC
        xBC = (_f32(window) * _f32(self.conv1d.weight[:, 0])).sum(dim=-1)  # (B, conv_dim)
        if self.conv1d.bias is not None:
            xBC = xBC + _f32(self.conv1d.bias)
        xBC = F.silu(xBC).to(x.dtype)
        xs, B, C = torch.split(xBC, [c.d_inner, G * N, G * N], dim=-1)  # (B, d_inner), (B, G*N) x 2
        dt = F.softplus(_f32(dt) + _f32(self.dt_bias))  # (B, H)
        decay = torch.exp(dt * -torch.exp(_f32(self.A_log)))  # (B, H)
        xs_acc = xs.to(acc).view(batch, c.nheads, P)
        # Head h = g * R + r reads group g: B and C per head, (B, H, 1, N), a stride-0 view when G = 1. The state is
        # updated as it is stored, not through a view of it: torch.compile then writes it back in the same pass that
        # reads it (through a view, Inductor added a temporary and a copy, three passes over the state).
        B_head, C_head = (
            t.to(acc).view(batch, G, 1, N).expand(batch, G, R, N).reshape(batch, c.nheads, 1, N) for t in (B, C)
        )
        ssm = state.ssm_state  # (B, H, P, N)
        ssm.mul_(decay[..., None, None])
        ssm.addcmul_((xs_acc * dt[..., None])[..., None], B_head)
        # y = state C as a product and a sum: a batched matrix-vector product costs 4x more at these sizes (MKL).
        y = (ssm * C_head).sum(dim=-1)  # (B, H, P)
        y = torch.addcmul(y, xs_acc, _f32(self.D)[:, None]).to(x.dtype)  # + D x
        y = y.view(batch, c.d_inner)
        return linear_few_rows(self.out_proj, self.norm(y, z) if self.norm is not None else y * F.silu(z))  # (B, D)

    def step_reference(self, x: Tensor, state: Mamba2State) -> Tensor:
        """`step` written with the reference recurrence ssd.ssd_step, out of place (the oracle of the tests)."""
        self.last_path = "reference"
        z, xBC, dt = self._split_in_proj(x)  # (B, d_inner), (B, conv_dim), (B, H)
        window = torch.cat([state.conv_state[:, :, 1:], xBC[..., None].to(state.conv_state.dtype)], dim=-1)
        state.conv_state.copy_(window.detach())  # (B, conv_dim, d_conv): drop the oldest input, append xBC
        xBC = (_f32(window) * _f32(self.conv1d.weight.squeeze(1))).sum(dim=-1)  # (B, conv_dim)
        if self.conv1d.bias is not None:
            xBC = xBC + _f32(self.conv1d.bias)
        xBC = F.silu(xBC).to(x.dtype)
        xs, B, C = self._split_xBC(xBC)  # (B, H, P), (B, G, N) x 2
        A = -torch.exp(_f32(self.A_log))  # (H,)
        dt = F.softplus(_f32(dt) + _f32(self.dt_bias))  # (B, H)
        y, new_state = ssd_step(state.ssm_state, xs, dt, A, B, C)  # (B, H, P), (B, H, P, N)
        state.ssm_state.copy_(new_state.detach())
        y = y + xs * self.D[:, None].to(xs.dtype)
        return self._gate_and_project(y.flatten(-2), z)  # (B, D)

    def _step_kernels(self, x: Tensor, state: Mamba2State) -> Tensor:
        """`step` with mamba_ssm's selective_state_update (and causal_conv1d_update when it imports)."""
        c = self.config
        z, xBC, dt = self._split_in_proj(x)  # (B, d_inner), (B, conv_dim), (B, H)
        weight = self.conv1d.weight.squeeze(1)  # (conv_dim, d_conv)
        if causal_conv1d_update is not None:
            xBC = causal_conv1d_update(xBC, state.conv_state, weight, self.conv1d.bias, "silu")
        else:
            window = torch.cat([state.conv_state[:, :, 1:], xBC[..., None].to(state.conv_state.dtype)], dim=-1)
            state.conv_state.copy_(window)
            xBC = (_f32(window) * _f32(weight)).sum(dim=-1)
            if self.conv1d.bias is not None:
                xBC = xBC + _f32(self.conv1d.bias)
            xBC = F.silu(xBC).to(x.dtype)
        xs, B, C = self._split_xBC(xBC)  # (B, H, P), (B, G, N) x 2
        A = -torch.exp(_f32(self.A_log))  # (H,)
        # The kernel takes per-(head, headdim) parameters; stride-0 expands mark them as tied across headdim.
        H, P, N = c.nheads, c.headdim, c.d_state
        y = selective_state_update(
            state.ssm_state,
            xs,
            dt[..., None].expand(-1, H, P),
            A[:, None, None].expand(H, P, N),
            B,
            C,
            D=self.D[:, None].expand(H, P),
            z=None,
            dt_bias=self.dt_bias[:, None].expand(H, P),
            dt_softplus=True,
        )  # (B, H, P); ssm_state updated in place
        return self._gate_and_project(y.flatten(-2), z)  # (B, D)
