"""The Fréchet core against closed forms, and its bootstrap over clips."""

from __future__ import annotations

import numpy as np
import pytest

from ssmttm.evaluate.frechet import (
    bootstrap_frechet,
    clip_moments,
    fit_gaussian,
    frechet_between,
    frechet_distance,
    package_frechet_distance,
    shared_offset,
    trace_sqrt_product,
    weighted_gaussians,
)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 0.1 * np.eye(d)


def test_identical_sets_have_zero_distance_and_distance_is_symmetric():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((500, 16)), rng.standard_normal((300, 16)) * 2 + 1
    assert frechet_between(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_between(x, y) == pytest.approx(frechet_between(y, x), rel=1e-10)
    assert frechet_between(x, y) > 1.0


def test_unit_covariances_give_the_squared_mean_distance():
    m = np.array([1.0, -2.0, 0.5, 3.0])
    assert frechet_distance(np.zeros(4), np.eye(4), m, np.eye(4)) == pytest.approx(float(m @ m), rel=1e-12)


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 4.0, 32), rng.uniform(0.1, 4.0, 32)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_trace_term_agrees_with_the_eigenvalues_of_the_product():
    """tr sqrt(S1 S2) = sum of sqrt of the (real, non-negative) eigenvalues of S1 S2: an independent route."""
    rng = np.random.default_rng(2)
    s1, s2 = _spd(rng, 24), _spd(rng, 24)
    independent = np.sum(np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)))
    assert trace_sqrt_product(s1, s2) == pytest.approx(independent, rel=1e-9)


def test_shifted_and_scaled_copy_of_a_reference_set_matches_the_formula():
    """X' = c X + m has sample mean c mu + m and covariance c^2 S exactly, so
    FD(X, X') = |(c - 1) mu + m|^2 + (1 - c)^2 tr S."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12)) + rng.standard_normal(12)
    c, m = 1.7, rng.standard_normal(12)
    g = fit_gaussian(x)
    expected = np.sum(((c - 1) * g.mean + m) ** 2) + (1 - c) ** 2 * np.trace(g.cov)
    assert frechet_between(x, c * x + m) == pytest.approx(expected, rel=1e-9)
    assert frechet_between(x, x + m) == pytest.approx(float(m @ m), rel=1e-9)


def test_rank_deficient_covariances_give_finite_closed_form_values():
    a, b = np.array([2.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    value = frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b))
    assert np.isfinite(value)
    assert value == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-12)
    rng = np.random.default_rng(4)
    few = rng.standard_normal((5, 40))  # 5 samples in 40 dimensions: rank 4
    assert np.isfinite(frechet_between(few, rng.standard_normal((6, 40))))


def test_invariant_to_sample_order_and_stacks_match_single_calls():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((200, 8)), rng.standard_normal((150, 8)) + 0.3
    assert frechet_between(x[rng.permutation(200)], y[rng.permutation(150)]) == pytest.approx(
        frechet_between(x, y), rel=1e-10
    )
    means = rng.standard_normal((3, 2, 6))
    covs = np.stack([[_spd(rng, 6) for _ in range(2)] for _ in range(3)])
    stacked = frechet_distance(means[:, 0], covs[:, 0], means[:, 1], covs[:, 1])
    single = [frechet_distance(means[i, 0], covs[i, 0], means[i, 1], covs[i, 1]) for i in range(3)]
    np.testing.assert_allclose(stacked, single, rtol=1e-12)


def test_dimension_mismatch_is_refused():
    with pytest.raises(ValueError, match="matching dimensions"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_pooled_moments_reproduce_the_gaussian_of_all_frames():
    rng = np.random.default_rng(6)
    clips = [rng.standard_normal((n, 5)) * 3 + 7 for n in (10, 25, 4)]
    moments = clip_moments(clips, offset=np.full(5, 7.0))
    mean, cov, n = weighted_gaussians(moments, np.ones((1, 3)))
    whole = fit_gaussian(np.concatenate(clips))
    np.testing.assert_allclose(mean[0] + 7.0, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(cov[0], whole.cov, rtol=1e-10, atol=1e-12)
    assert n[0] == 39
    # weight 2 on a clip = that clip's frames twice
    mean2, cov2, _ = weighted_gaussians(moments, np.array([[2.0, 1.0, 0.0]]))
    twice = fit_gaussian(np.concatenate([clips[0], clips[0], clips[1]]))
    np.testing.assert_allclose(mean2[0] + 7.0, twice.mean, rtol=1e-12)
    np.testing.assert_allclose(cov2[0], twice.cov, rtol=1e-10, atol=1e-12)


def test_bootstrap_frechet_value_interval_and_determinism():
    rng = np.random.default_rng(7)
    ref = [rng.standard_normal((30, 4)) for _ in range(12)]
    gen = [rng.standard_normal((30, 4)) + 1.0 for _ in range(12)]
    result = bootstrap_frechet(gen, ref, 100, 0.9, seed=11)
    assert result.estimate.value == pytest.approx(frechet_between(np.concatenate(gen), np.concatenate(ref)), rel=1e-9)
    assert result.estimate.ci_low <= result.estimate.value <= result.estimate.ci_high
    assert (result.n_windows, result.n_reference_windows, result.dim) == (360, 360, 4)
    assert result.bootstrap_bias > 0  # duplicated clips make a resample look like a smaller, more distant set
    again = bootstrap_frechet(gen, ref, 100, 0.9, seed=11)
    assert (again.estimate, again.bootstrap_bias) == (result.estimate, result.bootstrap_bias)
    assert bootstrap_frechet(gen, ref, 100, 0.9, seed=12).estimate.ci_low != result.estimate.ci_low
    assert np.allclose(shared_offset(gen, ref), np.concatenate(gen + ref).mean(axis=0))


def test_package_cross_check_reports_why_it_is_absent():
    value, note = package_frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))
    if value is None:
        assert "frechet-audio-distance not usable" in note
    else:  # the cluster extra is installed: it must agree with the core
        assert value == pytest.approx(2.0, rel=1e-6)
