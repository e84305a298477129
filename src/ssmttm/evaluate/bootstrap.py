"""Seeded bootstrap confidence intervals over clips.

Each resample draws n clips with replacement and is represented by its draw counts, a (B, n) integer matrix whose
rows sum to n: a statistic written as a function of clip weights (weighted mean, pooled Gaussian, weighted pair
average) evaluates all B resamples at once. The interval is the percentile interval of the resampled statistic.
Seeds are derived from the evaluation seed and the metric's name (`metric_seed`), so a metric's interval does not
depend on which other metrics ran before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssmttm.artifacts import stable_int

CI_METHOD = "percentile bootstrap over clips (resampled with replacement; each set resampled independently)"


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int  # clips (or pairs) the value is computed on


def metric_seed(seed: int, *names: object) -> int:
    """A 32-bit seed that depends only on the evaluation seed and the metric's names."""
    return stable_int("evaluate-bootstrap", seed, *names) % 2**32


def draw_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) draw counts of n clips resampled with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n), np.int64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1)
    return counts


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Central `confidence` interval of the finite resampled values; (None, None) when there are none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, n_resamples: int, confidence: float, seed: int
) -> Estimate:
    """`statistic(weights (B, n)) -> (B,)` at the identity weighting (the value) and over resampled weightings."""
    if n < 1:
        raise ValueError("bootstrap needs at least one clip")
    value = float(np.asarray(statistic(np.ones((1, n))))[0])
    if n < 2 or n_resamples < 1:
        return Estimate(value, None, None, n)
    low, high = percentile_interval(statistic(draw_counts(n, n_resamples, seed)), confidence)
    return Estimate(value, low, high, n)


def bootstrap_mean(values: np.ndarray, n_resamples: int, confidence: float, seed: int) -> Estimate:
    """Mean of per-clip values with its interval."""
    values = np.asarray(values, np.float64)
    return bootstrap(lambda w: (w @ values) / w.sum(axis=1), values.size, n_resamples, confidence, seed)


def weighted_pair_mean(matrix: np.ndarray, weights: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean of matrix[i, j] over pairs of resampled draws (i, j) allowed by `mask` (default: i != j).

    matrix (n, n), weights (B, n) -> (B,). Pairs drawing the same clip twice are never counted (the mask's diagonal
    is cleared), so a resample with duplicates does not look less diverse than its clips are; NaN when a resample
    holds no allowed pair.
    """
    matrix = np.asarray(matrix, np.float64)
    allowed = (
        ~np.eye(len(matrix), dtype=bool) if mask is None else np.asarray(mask, bool) & ~np.eye(len(matrix), dtype=bool)
    )
    allowed &= np.isfinite(matrix)
    values = np.where(allowed, matrix, 0.0)
    total = np.einsum("bi,ij,bj->b", weights, values, weights)
    pairs = np.einsum("bi,ij,bj->b", weights, allowed.astype(np.float64), weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, total / np.where(pairs > 0, pairs, 1.0), np.nan)


def bootstrap_pair_mean(
    matrix: np.ndarray, n_resamples: int, confidence: float, seed: int, mask: np.ndarray | None = None
) -> Estimate:
    """Mean of an (n, n) pair matrix over the pairs `mask` allows (diversity, random-pairing chance), with its
    interval."""
    matrix = np.asarray(matrix, np.float64)
    return bootstrap(lambda w: weighted_pair_mean(matrix, w, mask), len(matrix), n_resamples, confidence, seed)
