"""The Fréchet distance between two Gaussians fitted to feature sets, computed safely in float64.

    d^2 = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)

`scipy.linalg.sqrtm` gave wrong results in scipy 1.11.2-1.12 and 1.16.0 (docs EVALUATION.md), so the trace term is
computed from symmetric eigendecompositions only: R = sqrt(S1) from `eigh` of the symmetrised S1 (negative
eigenvalues clipped to 0), then tr sqrt(S1 S2) = tr sqrt(R S2 R) = sum of the square roots of the (clipped)
eigenvalues of the symmetric matrix R S2 R. Rank-deficient covariances give no NaN. The result is d^2 (what FAD
reports), clipped at 0 against rounding.

Every function accepts stacks: means (..., d) and covariances (..., d, d), so a bootstrap evaluates hundreds of
resampled distances in one call. Gaussians can also be fitted from weighted per-clip sufficient statistics
(`ClipMoments`), which is how the bootstrap resamples clips without touching the frames again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssmttm.evaluate.bootstrap import Estimate, draw_counts, percentile_interval

FRECHET_METHOD = (
    "float64; R = sqrt(sym S1) by eigh (eigenvalues clipped at 0); tr sqrt(S1 S2) = sum sqrt(eigvalsh(sym(R S2 R)) "
    "clipped at 0); d^2 clipped at 0; no scipy.linalg.sqrtm"
)
COVARIANCE_ESTIMATOR = "sample covariance with n - 1 (unbiased), float64, over all windows/frames pooled across clips"


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return 0.5 * (matrix + np.swapaxes(matrix, -1, -2))


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> np.ndarray:
    """tr sqrt(S1 S2) for symmetric PSD S1, S2 of shape (..., d, d) -> (...)."""
    cov1, cov2 = _symmetric(np.asarray(cov1, np.float64)), _symmetric(np.asarray(cov2, np.float64))
    eigenvalues, eigenvectors = np.linalg.eigh(cov1)  # (..., d), (..., d, d)
    root = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))[..., None, :]) @ np.swapaxes(eigenvectors, -1, -2)
    middle = _symmetric(root @ cov2 @ root)  # (..., d, d), similar to S1 S2 so same eigenvalues
    return np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum(axis=-1)


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> np.ndarray | float:
    """Squared Fréchet distance between N(mean1, cov1) and N(mean2, cov2); stacks broadcast, scalars come back as
    float."""
    mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mean1.shape[-1] != mean2.shape[-1] or cov1.shape[-2:] != cov2.shape[-2:] or cov1.shape[-1] != mean1.shape[-1]:
        raise ValueError(
            f"Fréchet distance needs matching dimensions: means {mean1.shape}, {mean2.shape}; "
            f"covariances {cov1.shape}, {cov2.shape}"
        )
    diff = mean1 - mean2
    trace_terms = np.trace(cov1, axis1=-2, axis2=-1) + np.trace(cov2, axis1=-2, axis2=-1)
    distance = np.maximum(np.sum(diff * diff, axis=-1) + trace_terms - 2.0 * trace_sqrt_product(cov1, cov2), 0.0)
    return float(distance) if np.ndim(distance) == 0 else distance


@dataclass(frozen=True)
class Gaussian:
    mean: np.ndarray  # (d,)
    cov: np.ndarray  # (d, d)
    n: int  # samples it was fitted on


def fit_gaussian(samples: np.ndarray) -> Gaussian:
    """Mean and unbiased covariance of (n, d) samples in float64; n must be at least 2."""
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(f"fitting a Gaussian needs (n >= 2, d) samples, got shape {samples.shape}")
    return Gaussian(samples.mean(axis=0), np.atleast_2d(np.cov(samples, rowvar=False, ddof=1)), samples.shape[0])


def frechet_between(a: np.ndarray, b: np.ndarray) -> float:
    """Squared Fréchet distance between Gaussians fitted to samples a (n1, d) and b (n2, d)."""
    ga, gb = fit_gaussian(a), fit_gaussian(b)
    return float(frechet_distance(ga.mean, ga.cov, gb.mean, gb.cov))


# ----------------------------------------------------------------------------------------------- per-clip moments


@dataclass(frozen=True)
class ClipMoments:
    """Sufficient statistics of each clip's frames, shifted by `offset` to keep the sums well conditioned.

    counts (n_clips,), sums (n_clips, d), outer (n_clips, d, d): sum over a clip's frames of x - offset and of
    (x - offset)(x - offset)^T. A weighting of the clips (bootstrap counts) gives the pooled Gaussian directly.
    """

    counts: np.ndarray
    sums: np.ndarray
    outer: np.ndarray
    offset: np.ndarray  # (d,)

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    @property
    def n_frames(self) -> int:
        return int(self.counts.sum())


def clip_moments(frames_per_clip: list[np.ndarray], offset: np.ndarray | None = None) -> ClipMoments:
    """Moments of each clip's (frames, d) array; `offset` defaults to the mean of all frames (any shift works: FD
    between two sets is unchanged when both use the same offset)."""
    if not frames_per_clip:
        raise ValueError("no clips to fit a Gaussian on")
    arrays = [np.asarray(f, np.float64).reshape(len(f), -1) for f in frames_per_clip]
    if offset is None:
        offset = np.concatenate(arrays).mean(axis=0)
    centred = [a - offset for a in arrays]
    return ClipMoments(
        counts=np.array([a.shape[0] for a in centred], np.float64),
        sums=np.stack([a.sum(axis=0) for a in centred]),
        outer=np.stack([a.T @ a for a in centred]),
        offset=np.asarray(offset, np.float64),
    )


def weighted_gaussians(moments: ClipMoments, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled Gaussians of the frames of clips weighted by `weights` (B, n_clips) (bootstrap draw counts).

    Returns means (B, d), covariances (B, d, d) with n - 1, and frame counts (B,). The offset is not added back:
    compare only moments that share it.
    """
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    n = weights @ moments.counts  # (B,)
    if np.any(n < 2):
        raise ValueError("a weighting keeps fewer than 2 frames: cannot fit a covariance")
    mean = (weights @ moments.sums) / n[:, None]  # (B, d)
    second = np.einsum("bc,cij->bij", weights, moments.outer)  # (B, d, d)
    cov = (second - n[:, None, None] * mean[:, :, None] * mean[:, None, :]) / (n - 1)[:, None, None]
    return mean, cov, n


def shared_offset(*frame_lists: list[np.ndarray]) -> np.ndarray:
    """Mean of every frame of every list: the common offset for moments that will be compared."""
    return np.concatenate(
        [np.asarray(f, np.float64).reshape(len(f), -1) for frames in frame_lists for f in frames]
    ).mean(axis=0)


@dataclass(frozen=True)
class FrechetResult:
    estimate: Estimate  # n = clips of the generated set
    n_windows: int  # windows (frames) of the generated set
    n_reference_windows: int
    n_reference_clips: int
    dim: int
    bootstrap_bias: float | None = None  # mean of the resampled FDs minus the FD, removed from the interval


BATCH_BYTES = 1 << 27  # covariance stacks evaluated per call (d = 512: 64 resamples at a time)


def bootstrap_frechet(
    frames: list[np.ndarray], reference_frames: list[np.ndarray], n_resamples: int, confidence: float, seed: int
) -> FrechetResult:
    """FD between the pooled windows of two clip lists (`frames`: one (windows, d) array per clip), with a
    bias-shifted percentile interval: clips of both sides resampled independently, the resampled FDs moved down by
    their mean excess over the FD (clipped at 0), then their central `confidence` range."""
    offset = shared_offset(frames, reference_frames)
    generated, reference = clip_moments(frames, offset), clip_moments(reference_frames, offset)
    n, n_ref, dim = len(frames), len(reference_frames), generated.dim

    def distances(weights: np.ndarray, reference_weights: np.ndarray) -> np.ndarray:
        out = []
        step = max(1, BATCH_BYTES // (8 * dim * dim))
        for start in range(0, len(weights), step):
            mean, cov, _ = weighted_gaussians(generated, weights[start : start + step])
            ref_mean, ref_cov, _ = weighted_gaussians(reference, reference_weights[start : start + step])
            out.append(np.atleast_1d(frechet_distance(mean, cov, ref_mean, ref_cov)))
        return np.concatenate(out)

    value = float(distances(np.ones((1, n)), np.ones((1, n_ref)))[0])
    low = high = bias = None
    if n_resamples > 0 and n >= 2 and n_ref >= 2:
        weights = draw_counts(n, n_resamples, seed)
        reference_weights = draw_counts(n_ref, n_resamples, seed + 1)
        # a resample keeping a single window per side cannot fit a covariance: drop those draws
        keep = (weights @ generated.counts >= 2) & (reference_weights @ reference.counts >= 2)
        if keep.any():
            resampled = distances(weights[keep], reference_weights[keep])
            # Duplicated clips make a resample look like a smaller set, and FD grows as N shrinks: the resampled
            # values sit above the value. Their spread is kept, their shift (the bootstrap bias) is removed.
            bias = float(np.mean(resampled) - value)
            low, high = percentile_interval(np.maximum(resampled - bias, 0.0), confidence)
    return FrechetResult(Estimate(value, low, high, n), generated.n_frames, reference.n_frames, n_ref, dim, bias)


# ----------------------------------------------------------------------------------------------- package cross-check


def package_frechet_distance(
    mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray
) -> tuple[float | None, str]:
    """The `frechet-audio-distance` package's own Fréchet formula on the same statistics, as a cross-check.

    Returns (value, note). The package is optional (extra `eval`, GPU/cluster machines); when it is not installed
    or cannot be imported (it hard-imports laion_clap and encodec), the value is None and the note says why. Its
    formula uses scipy.linalg.sqrtm, so a disagreement names a scipy defect, not ours.
    """
    try:
        from importlib import metadata

        version = metadata.version("frechet-audio-distance")
        from frechet_audio_distance import FrechetAudioDistance
    except Exception as exc:  # noqa: BLE001 - any import failure means "no cross-check", with its reason
        return None, f"frechet-audio-distance not usable here ({type(exc).__name__}: {str(exc)[:120]})"
    # The method does not use the instance; calling it unbound avoids building (and downloading) a model.
    value = FrechetAudioDistance.calculate_frechet_distance(None, mean1, cov1, mean2, cov2)
    return float(value), f"frechet-audio-distance {version} calculate_frechet_distance"
