"""MusicGen delay pattern for K parallel codebooks.

Codebook k (0-based) is shifted right by k + 1 positions and the gaps are filled with the special id (1024). The
shift of one for codebook 0 makes the first column all-special: it is the BOS every codebook starts from. The
delayed sequence is K steps longer than the input, so no code is lost and `undo_delay` is an exact inverse:

    codes    (K=3, T=4)          delayed (K=3, T+K=7)
    a0 a1 a2 a3                  S  a0 a1 a2 a3 S  S
    b0 b1 b2 b3          ->      S  S  b0 b1 b2 b3 S
    c0 c1 c2 c3                  S  S  S  c0 c1 c2 c3

With the delay, the token of codebook k at frame t is predicted after codebooks < k of the same frame, which is
what lets one step emit all K codebooks at once.
"""

from __future__ import annotations

import torch


def delayed_length(n_frames: int, n_codebooks: int) -> int:
    """Length of the delayed sequence for `n_frames` frames of `n_codebooks` codebooks."""
    return n_frames + n_codebooks


def apply_delay(codes: torch.Tensor, special_id: int) -> torch.Tensor:
    """(B, K, T) or (K, T) codes -> (B, K, T + K) delayed codes, gaps filled with `special_id`."""
    squeeze = codes.dim() == 2
    if squeeze:
        codes = codes.unsqueeze(0)
    if codes.dim() != 3:
        raise ValueError(f"apply_delay expects codes of shape (B, K, T) or (K, T), got {tuple(codes.shape)}")
    b, k, t = codes.shape
    out = codes.new_full((b, k, t + k), special_id)  # (B, K, T+K)
    for q in range(k):
        out[:, q, q + 1 : q + 1 + t] = codes[:, q]
    return out[0] if squeeze else out


def undo_delay(delayed: torch.Tensor, special_id: int) -> torch.Tensor:
    """Exact inverse of `apply_delay`: (B, K, T + K) or (K, T + K) -> (B, K, T) or (K, T).

    `special_id` is accepted for symmetry with `apply_delay` (and to keep both signatures alike for callers); the
    positions holding it in the delayed layout are simply dropped.
    """
    del special_id
    squeeze = delayed.dim() == 2
    if squeeze:
        delayed = delayed.unsqueeze(0)
    if delayed.dim() != 3:
        raise ValueError(f"undo_delay expects delayed codes of shape (B, K, L) or (K, L), got {tuple(delayed.shape)}")
    b, k, length = delayed.shape
    t = length - k
    if t < 0:
        raise ValueError(f"undo_delay: sequence of length {length} is shorter than the delay of {k} codebooks")
    out = torch.stack([delayed[:, q, q + 1 : q + 1 + t] for q in range(k)], dim=1)  # (B, K, T)
    return out[0] if squeeze else out


def delay_valid_mask(n_frames: int, n_codebooks: int, device: torch.device | None = None) -> torch.Tensor:
    """(K, T + K) bool: True where the delayed layout holds a real code, False where it must be the special id."""
    positions = torch.arange(n_frames + n_codebooks, device=device).unsqueeze(0)  # (1, T+K)
    start = torch.arange(n_codebooks, device=device).unsqueeze(1) + 1  # (K, 1)
    return (positions >= start) & (positions < start + n_frames)
