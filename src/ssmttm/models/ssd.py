"""Reference scans for Mamba2's state-space duality (SSD) layer, in pure PyTorch.

Per batch item and head (head h reads the B/C of group h // (H // G)), with a scalar A < 0 per head and a scalar
step size dt_t > 0 per position:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        state h_t: (P, N)
    y_t = h_t C_t                                           output y_t: (P,)

Unrolled, y_t = sum_{s <= t} (C_t . B_s) * exp(dt_{s+1} A + ... + dt_t A) * dt_s x_s: causal "attention" whose mask
is a decay matrix. `ssd_chunked` uses both views: it cuts the sequence into chunks of Q positions and

  1. inside each chunk evaluates that quadratic (Q x Q) form directly (matmuls),
  2. summarises each chunk by the state it leaves at its end when started from zero,
  3. carries the state across chunks with the recurrence (one step per chunk, not per position),
  4. adds to every position the decayed contribution of the state entering its chunk.

`ssd_sequential` is the naive per-position recurrence, kept as the ground truth for tests and benchmarks; `ssd_step`
is one position of it (used for recurrent generation). The skip term D * x and the gating are not part of the scan.

Shapes: x (B, L, H, P), dt (B, L, H), A (H,), B and C (B, L, G, N), state (B, H, P, N); H % G == 0.
Everything accumulates in float32 (float64 if the inputs are float64); y comes back in x's dtype and the state in the
accumulation dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
    differences of one cumulative sum (cs[i] - cs[j]) keeps short segments exact when the running sums are large.
    """
    T = a.shape[-1]
    rows = a[..., :, None].expand(*a.shape, T)  # (..., T, T): rows[k, j] = a[k]
    strictly_lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)
    S = rows.masked_fill(~strictly_lower, 0.0).cumsum(dim=-2)  # S[i, j] = sum_{j < k <= i} a[k]
    causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(0)
    return S.masked_fill(~causal, float("-inf"))


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
    Heads are indexed as (g, r) inside: head h = g * R + r reads group g, R = H // G heads per group, so C.B is
    computed once per group rather than once per head.
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
    x = x.view(batch, nchunks, Q, ngroups, R, headdim)  # (b, c, q, g, r, p)
    dt = dt.view(batch, nchunks, Q, ngroups, R)  # (b, c, q, g, r)
    B = B.view(batch, nchunks, Q, ngroups, dstate)  # (b, c, q, g, n)
    C = C.view(batch, nchunks, Q, ngroups, dstate)  # (b, c, q, g, n)
    xdt = x * dt[..., None]  # (b, c, q, g, r, p): input scaled by its step size

    a = (dt * A.to(acc).view(ngroups, R)).permute(0, 3, 4, 1, 2)  # (b, g, r, c, q): log-decay per step, <= 0
    a_cum = a.cumsum(dim=-1)  # (b, g, r, c, q): log-decay from the chunk start through position i
    decay = torch.exp(segsum(a))  # (b, g, r, c, q, q): decay[i, j] from just after j to i (0 for j > i)

    # 1. Within each chunk: y_i = sum_{j <= i} (C_i . B_j) decay[i, j] dt_j x_j.
    CB = torch.einsum("bcign,bcjgn->bgcij", C, B)  # (b, g, c, q, q)
    scores = CB[:, :, None] * decay  # (b, g, r, c, q, q)
    y = torch.einsum("bgrcij,bcjgrp->bcigrp", scores, xdt)  # (b, c, q, g, r, p)

    # 2. State each chunk leaves at its end when started from zero: sum_j decay[last, j] dt_j x_j B_j^T.
    to_end = decay[..., -1, :]  # (b, g, r, c, q)
    chunk_states = torch.einsum("bgrcj,bcjgn,bcjgrp->bcgrpn", to_end, B, xdt)  # (b, c, g, r, p, n)

    # 3. Carry the state across chunks: h_in[c + 1] = exp(sum of a over chunk c) h_in[c] + chunk_states[c].
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, g, r, c)
    if initial_state is None:
        state = x.new_zeros(batch, ngroups, R, headdim, dstate)
    else:
        state = initial_state.to(acc).reshape(batch, ngroups, R, headdim, dstate)
    entering = []
    for c in range(nchunks):
        entering.append(state)
        state = chunk_decay[..., c, None, None] * state + chunk_states[:, c]
    h_in = torch.stack(entering, dim=1)  # (b, c, g, r, p, n): state entering each chunk

    # 4. Contribution of the entering state, decayed from the chunk start through i: exp(a_cum[i]) C_i h_in.
    y = y + torch.einsum("bcign,bcgrpn,bgrci->bcigrp", C, h_in, torch.exp(a_cum))

    y = y.reshape(batch, nchunks * Q, nheads, headdim)[:, :length]  # (B, L, H, P)
    return y.to(in_dtype), state.reshape(batch, nheads, headdim, dstate)
