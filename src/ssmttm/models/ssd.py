"""Reference scans for Mamba2's state-space duality (SSD) layer, in pure PyTorch.

Per batch item and head (head h reads the B/C of group h // (H // G)), with a scalar A < 0 per head and a scalar
step size dt_t > 0 per position:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        state h_t: (P, N)
    y_t = h_t C_t                                           output y_t: (P,)

Unrolled, y_t = sum_{s <= t} (C_t . B_s) * exp(dt_{s+1} A + ... + dt_t A) * dt_s x_s: causal "attention" whose mask
is a decay matrix. `ssd_chunked` uses both views: it cuts the sequence into chunks of Q positions and

  1. inside each chunk evaluates that quadratic (Q x Q) form directly (matmuls),
  2. summarises each chunk by the state it leaves at its end when started from zero,
  3. carries the state across chunks: the recurrence over chunks, unrolled into one small (chunks x chunks) decay
     matrix per head and applied in one matmul,
  4. adds to every position the decayed contribution of the state entering its chunk.

`ssd_sequential` is the naive per-position recurrence, kept as the ground truth for tests and benchmarks; `ssd_step`
is one position of it, out of place (the oracle of `Mamba2.step`, which does the same arithmetic in place). The skip
term D * x and the gating are not part of the scan.

Shapes: x (B, L, H, P), dt (B, L, H), A (H,), B and C (B, L, G, N), state (B, H, P, N); H % G == 0.
Everything accumulates in float32 (float64 if the inputs are float64); y comes back in x's dtype and the state in the
accumulation dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Log-decays below this (a factor under 1e-26, far below float32 resolution next to the undecayed terms) are taken as
# the floor (as -inf in the small matrix that carries states across chunks, where -inf is also its causal mask):
# without it the scan runs into subnormal floats, which x86 processes tens of times slower (measured: 15 % of a CPU
# training step).
LOG_DECAY_FLOOR = -60.0


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    batch, length, nheads, _ = x.shape
    if dt.shape != (batch, length, nheads) or A.shape != (nheads,):
        raise ValueError(f"ssd: dt {tuple(dt.shape)} / A {tuple(A.shape)} do not match x {tuple(x.shape)}")
    if B.shape != C.shape or B.shape[:2] != (batch, length) or nheads % B.shape[2] != 0:
        raise ValueError(f"ssd: B {tuple(B.shape)} / C {tuple(C.shape)} do not match x {tuple(x.shape)}")


def segsum(a: Tensor) -> Tensor:
    """Segment sums of log-decays: a (..., T) -> S (..., T, T), S[i, j] = a[j+1] + ... + a[i] for j <= i, else -inf.

    exp(S) is the causal decay mask (1 on the diagonal, 0 above it). Summing masked copies of `a` instead of taking
    differences of one cumulative sum (cs[i] - cs[j]) keeps short segments exact when the running sums are large;
    it costs five passes over (..., T, T), so the scan uses it across chunks (T = chunks + 1), not within them.
    """
    T = a.shape[-1]
    rows = a[..., :, None].expand(*a.shape, T)  # (..., T, T): rows[k, j] = a[k]
    strictly_lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)
    S = rows.masked_fill(~strictly_lower, 0.0).cumsum(dim=-2)  # S[i, j] = sum_{j < k <= i} a[k]
    causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(0)
    return S.masked_fill(~causal, float("-inf"))


class _DecayWithinChunk(torch.autograd.Function):
    """decay_within_chunk with its backward written out: d exp(d) / d d is the output itself, so backward is one
    product and two sums, where autograd through sub/clamp/exp makes about twice as many passes over (..., Q, Q)."""

    @staticmethod
    def forward(ctx, a_cum: Tensor) -> Tensor:
        decay = (a_cum[..., :, None] - a_cum[..., None, :]).clamp_(LOG_DECAY_FLOOR, 0.0).exp_()
        ctx.save_for_backward(decay)
        return decay

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (decay,) = ctx.saved_tensors
        g = grad * decay  # (..., Q, Q): gradient of the differences a_cum[i] - a_cum[j]
        return g.sum(dim=-1) - g.sum(dim=-2)


def decay_within_chunk(a_cum: Tensor) -> Tensor:
    """Decays between the positions of a chunk, from running sums of log-decays: a_cum (..., Q) -> M (..., Q, Q).

    M[i, j] = exp(a_cum[i] - a_cum[j]) = exp(a[j+1] + ... + a[i]) for j <= i. Above the diagonal M is 1, not 0: the
    scan applies the causal mask to its C.B scores, R = H / G times smaller than M, so the gradient reaching M there
    is 0 (the backward relies on it). Log-decays below LOG_DECAY_FLOOR count as the floor.
    Differences of running sums lose about |a_cum| * eps to cancellation, as in mamba_ssm's kernels; within a chunk
    that stays far below the tolerance the float32 scan is tested to, and it takes three passes over (..., Q, Q)
    where `segsum` takes five (and backward two where autograd through `segsum` takes about ten).
    """
    return _DecayWithinChunk.apply(a_cum)


def ssd_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """One position of the recurrence, out of place.

    state (B, H, P, N), x (B, H, P), dt (B, H) (already softplus'ed), A (H,), B/C (B, G, N)
    -> y (B, H, P) in x's dtype, new state (B, H, P, N) in the accumulation dtype.
    """
    acc = _acc_dtype(x)
    nheads, ngroups = x.shape[1], B.shape[1]
    B = B.to(acc).repeat_interleave(nheads // ngroups, dim=1)  # (B, H, N): head h reads group h // (H // G)
    C = C.to(acc).repeat_interleave(nheads // ngroups, dim=1)  # (B, H, N)
    dt = dt.to(acc)
    decay = torch.exp(dt * A.to(acc))[..., None, None]  # (B, H, 1, 1)
    update = (dt[..., None] * x.to(acc))[..., None] * B[:, :, None, :]  # (B, H, P, N): dt * x B^T
    state = decay * state.to(acc) + update
    y = torch.einsum("bhpn,bhn->bhp", state, C)  # (B, H, P)
    return y.to(x.dtype), state


def ssd_sequential(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Naive recurrence, one position at a time: x (B, L, H, P) ... -> y (B, L, H, P), final state (B, H, P, N)."""
    _check_shapes(x, dt, A, B, C)
    batch, length, nheads, headdim = x.shape
    state = initial_state
    if state is None:
        state = x.new_zeros(batch, nheads, headdim, B.shape[-1], dtype=_acc_dtype(x))
    ys = []
    for t in range(length):
        y_t, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)
    return torch.stack(ys, dim=1), state  # (B, L, H, P), (B, H, P, N)


def _pad_time(t: Tensor, pad: int) -> Tensor:
    """Append `pad` zero positions along dim 1."""
    return torch.cat([t, t.new_zeros(t.shape[0], pad, *t.shape[2:])], dim=1) if pad else t


def ssd_chunked(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Chunked SSD scan: same result as `ssd_sequential` in O(L / Q) sequential steps.

    x (B, L, H, P), dt (B, L, H) (already softplus'ed), A (H,), B/C (B, L, G, N), initial_state (B, H, P, N) or None
    -> y (B, L, H, P), final state (B, H, P, N). L need not be a multiple of chunk_size.

    Layout, chosen so that the contractions are batched matmuls with few copies: x stays in its (b, c, q, h, p) order,
    where the h = g * R + r heads of group g and their channels form one (R * P)-wide row per position; chunk states
    are kept transposed as (b, c, g, n, r * p). Letters: b batch, c chunk (nc chunks), q (i, j) position in the chunk,
    g group, r head within the group, p head channel, n state channel.
    """
    _check_shapes(x, dt, A, B, C)
    batch, length, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    R, Q = nheads // ngroups, chunk_size
    in_dtype, acc = x.dtype, _acc_dtype(x)
    # Pad to whole chunks with dt = 0: a padded step neither decays (exp(0) = 1) nor adds input, so the final state
    # is the state after the last real position.
    pad = (-length) % Q
    nchunks = (length + pad) // Q
    x, dt, B, C = (_pad_time(t.to(acc), pad) for t in (x, dt, B, C))
    x = x.view(batch, nchunks, Q, nheads, headdim)  # (b, c, q, h, p)
    dt = dt.view(batch, nchunks, Q, nheads)  # (b, c, q, h)
    B = B.view(batch, nchunks, Q, ngroups, dstate).transpose(2, 3)  # (b, c, g, q, n)
    C = C.view(batch, nchunks, Q, ngroups, dstate).transpose(2, 3)  # (b, c, g, q, n)
    xdt = x * dt[..., None]  # (b, c, q, h, p): input scaled by its step size
    a_cum = (dt * A.to(acc)).cumsum(dim=2)  # (b, c, q, h): log-decay from the chunk start through position q

    # 1. Within each chunk: y_i = sum_{j <= i} (C_i . B_j) exp(a_cum[i] - a_cum[j]) dt_j x_j.
    CB = (C @ B.transpose(-1, -2)).tril()  # (b, c, g, i, j), causal: 0 for j > i
    # contiguous: (b, c, h, i, j) in that order in memory (the small a_cum's layout would otherwise carry over).
    decay = decay_within_chunk(a_cum.transpose(2, 3).contiguous())  # (b, c, h, i, j)
    scores = decay.view(batch, nchunks, ngroups, R, Q, Q) * CB[:, :, :, None]  # (b, c, g, r, i, j)
    y = scores.view(batch, nchunks, nheads, Q, Q) @ xdt.transpose(2, 3)  # (b, c, h, i, p)

    # 2. State each chunk leaves at its end when started from zero: sum_j exp(a_cum[last] - a_cum[j]) dt_j x_j B_j^T.
    to_end = torch.exp((a_cum[:, :, -1:] - a_cum).clamp_min(LOG_DECAY_FLOOR))  # (b, c, q, h)
    rows = (xdt * to_end[..., None]).view(batch, nchunks, Q, ngroups, R * headdim).transpose(2, 3)  # (b,c,g,q,rp)
    chunk_states = B.transpose(-1, -2) @ rows  # (b, c, g, n, r * p)

    # 3. States entering the chunks, all at once. With s_c the log-decay over chunk c and S = [h_0, chunk_states[0],
    # ..., chunk_states[nc - 1]] (nc chunks), the state entering chunk c (c = nc: the final state) is
    # sum_{j <= c} exp(s_j + ... + s_{c-1}) S[j]: one (nc + 1) x (nc + 1) matrix per head, exp(segsum([0, s_0, ...])),
    # applied in one matmul (a loop over chunks costs several small operations per chunk, backward included).
    chunk_sums = F.pad(a_cum[:, :, -1].transpose(1, 2), (1, 0))  # (b, h, nc + 1): [0, s_0, ..., s_{nc-1}]
    seg = segsum(chunk_sums)  # (b, h, nc + 1, nc + 1), -inf above the diagonal
    # Below the floor -inf (exact zeros) rather than the floor itself: -inf is this matrix's causal mask too.
    mix = torch.exp(seg.masked_fill(seg < LOG_DECAY_FLOOR, float("-inf")))  # (b, h, nc + 1, nc + 1)
    per_head = chunk_states.view(batch, nchunks, ngroups, dstate, R, headdim).permute(0, 2, 4, 1, 3, 5)
    per_head = per_head.reshape(batch, nheads, nchunks, dstate * headdim)  # (b, h, c, n * p)
    if initial_state is None:
        states = mix[..., 1:] @ per_head  # (b, h, nc + 1, n * p): h_0 = 0
    else:
        h0 = initial_state.to(acc).transpose(-1, -2).reshape(batch, nheads, 1, dstate * headdim)
        states = mix @ torch.cat([h0, per_head], dim=2)
    states = states.view(batch, ngroups, R, nchunks + 1, dstate, headdim)  # (b, g, r, c + 1, n, p)
    h_in = states[:, :, :, :-1].permute(0, 3, 1, 4, 2, 5).reshape(batch, nchunks, ngroups, dstate, R * headdim)
    final = states[:, :, :, -1].reshape(batch, nheads, dstate, headdim).transpose(-1, -2).contiguous()  # (b, h, p, n)

    # 4. Contribution of the entering state, decayed from the chunk start through i: exp(a_cum[i]) C_i h_in.
    y_in = (C @ h_in).view(batch, nchunks, ngroups, Q, R, headdim).transpose(2, 3)  # (b, c, q, g, r, p)
    y_in = (
        y_in.reshape(batch, nchunks, Q, nheads, headdim) * torch.exp(a_cum.clamp_min(LOG_DECAY_FLOOR))[..., None]
    )  # (b, c, q, h, p)
    y = (y.transpose(2, 3) + y_in).reshape(batch, nchunks * Q, nheads, headdim)[:, :length]  # (B, L, H, P)
    return y.to(in_dtype), final
