"""Seeded bootstrap intervals over clips."""

from __future__ import annotations

import numpy as np
import pytest

from ssmttm.evaluate.bootstrap import (
    bootstrap_mean,
    bootstrap_pair_mean,
    draw_counts,
    metric_seed,
    percentile_interval,
    weighted_pair_mean,
)


def test_draw_counts_are_resamples_of_n_and_depend_only_on_the_seed():
    counts = draw_counts(7, 50, seed=3)
    assert counts.shape == (50, 7) and np.all(counts.sum(axis=1) == 7) and counts.min() >= 0
    np.testing.assert_array_equal(counts, draw_counts(7, 50, seed=3))
    assert not np.array_equal(counts, draw_counts(7, 50, seed=4))


def test_metric_seed_is_stable_and_separates_metrics():
    assert metric_seed(1, "set", "fd_mel") == metric_seed(1, "set", "fd_mel")
    assert len({metric_seed(1, "set", m) for m in ("fd_mel", "fd_mfcc", "key_score")}) == 3
    assert metric_seed(1, "set", "fd_mel") != metric_seed(2, "set", "fd_mel")


def test_bootstrap_mean_interval_brackets_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.standard_normal(10), rng.standard_normal(1000)
    a = bootstrap_mean(small, 300, 0.95, seed=1)
    b = bootstrap_mean(large, 300, 0.95, seed=1)
    assert a.value == pytest.approx(small.mean()) and a.ci_low < a.value < a.ci_high and a.n == 10
    assert (b.ci_high - b.ci_low) < (a.ci_high - a.ci_low) / 4
    constant = bootstrap_mean(np.full(5, 2.5), 100, 0.95, seed=1)
    assert (constant.value, constant.ci_low, constant.ci_high) == (2.5, 2.5, 2.5)
    single = bootstrap_mean(np.array([1.0]), 100, 0.95, seed=1)
    assert single.ci_low is None and single.value == 1.0


def test_percentile_interval_ignores_non_finite_values():
    assert percentile_interval(np.array([np.nan, np.inf]), 0.9) == (None, None)
    low, high = percentile_interval(np.array([np.nan, *range(101)]), 0.9)
    assert (low, high) == pytest.approx((5.0, 95.0))


def test_pair_mean_leaves_out_pairs_of_the_same_clip_and_respects_the_mask():
    matrix = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    assert weighted_pair_mean(matrix, np.ones((1, 3)))[0] == pytest.approx(2.0)
    # one clip drawn three times: no pair of different clips
    assert np.isnan(weighted_pair_mean(matrix, np.array([[3.0, 0.0, 0.0]]))[0])
    # clip 0 twice and clip 2 once: the pairs (0, 2) and (2, 0) twice each
    assert weighted_pair_mean(matrix, np.array([[2.0, 0.0, 1.0]]))[0] == pytest.approx(2.0)
    mask = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], bool)
    assert weighted_pair_mean(matrix, np.ones((1, 3)), mask)[0] == pytest.approx(1.0)
    estimate = bootstrap_pair_mean(matrix, 50, 0.9, seed=0)
    assert estimate.value == pytest.approx(2.0) and estimate.n == 3
