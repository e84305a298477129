"""Set-level metrics: per-clip measures (features.py, embeddings.py) turned into numbers with intervals and cards.

Every function returns {metric name: (entry, details)}: the entry is what metrics.json shows (cards.reported /
cards.not_computed) and the details go into the set's card beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssmttm.errors import UserFacingError
from ssmttm.evaluate import cards
from ssmttm.evaluate.bootstrap import CI_METHOD, bootstrap_mean, bootstrap_pair_mean, metric_seed
from ssmttm.evaluate.clipsets import RESAMPLER, ClipSet
from ssmttm.evaluate.embeddings import cosine
from ssmttm.evaluate.features import (
    TEMPO_FACTORS,
    ClipFeatures,
    caption_key,
    caption_tempo,
    key_score,
    tempo_hits,
)
from ssmttm.evaluate.frechet import (
    COVARIANCE_ESTIMATOR,
    FRECHET_METHOD,
    bootstrap_frechet,
    fit_gaussian,
    package_frechet_distance,
)

Results = dict[str, tuple[dict[str, Any], dict[str, Any]]]


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn, and the evaluation seed each metric's own seed is derived from."""

    resamples: int
    confidence: float
    seed: int
    min_clips: int

    def seed_for(self, set_name: str, metric: str) -> int:
        return metric_seed(self.seed, set_name, metric)


def _mean_metric(
    values: list[float | None], boot: Bootstrap, set_name: str, metric: str, better: str | None, what: str = "clips"
) -> tuple[dict[str, Any], int]:
    """Bootstrap mean of the defined per-clip values; (entry, how many were defined)."""
    defined = np.array([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if defined.size == 0:
        return cards.not_computed(f"no clip of the set has a defined {metric}"), 0
    estimate = bootstrap_mean(defined, boot.resamples, boot.confidence, boot.seed_for(set_name, metric))
    return cards.reported(estimate, better, cards.small_n_warnings(defined.size, boot.min_clips, what=what)), int(
        defined.size
    )


# ----------------------------------------------------------------------------------------------- signal health

HEALTH_MEANS = {  # per-clip field -> (metric, better)
    "loudness_lufs": ("loudness_lufs", None),
    "peak_dbfs": ("peak_dbfs", None),
    "clipping_ratio": ("clipping_ratio", "lower"),
    "silence_ratio": ("silence_ratio", "lower"),
    "bandwidth_hz": ("bandwidth_hz", "higher"),
    "duration_s": ("duration_s", None),
}
HEALTH_FLAGS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "nonfinite_clip_fraction": lambda h: h["nonfinite_samples"] > 0,
    "silent_clip_fraction": lambda h: h["silence_ratio"] > 0.5,
    "clipped_clip_fraction": lambda h: h["clipping_ratio"] > 0,
}


def health_metrics(health: list[dict[str, Any]], clip_set: ClipSet, boot: Bootstrap, details: dict) -> Results:
    results: Results = {}
    for field, (metric, better) in HEALTH_MEANS.items():
        entry, n = _mean_metric([h[field] for h in health], boot, clip_set.name, metric, better)
        results[metric] = (entry, {**details, "statistic": f"mean over clips of {field}", "n_defined": n})
    for metric, flag in HEALTH_FLAGS.items():
        entry, _ = _mean_metric([float(flag(h)) for h in health], boot, clip_set.name, metric, "lower")
        results[metric] = (entry, {**details, "statistic": f"fraction of clips: {metric.removesuffix('_fraction')}"})
    return results


# ----------------------------------------------------------------------------------------------- Fréchet distances


def frechet_metric(
    frames: list[np.ndarray],
    reference_frames: list[np.ndarray],
    boot: Bootstrap,
    set_name: str,
    metric: str,
    scale: float = 1.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """FD (lower is better) between two clip lists of (windows, d) arrays, flagged when N is too small.

    `scale` multiplies the distance, its interval and its bootstrap bias: the FD of embeddings repeated k times
    side by side ([e, e] for a mono clip fed as two identical channels) is exactly k times the FD of e, and
    computing it that way keeps the per-clip (d, d) moments at d, not k * d."""
    result = bootstrap_frechet(
        frames, reference_frames, boot.resamples, boot.confidence, boot.seed_for(set_name, metric)
    )
    if scale != 1.0:
        estimate = result.estimate
        result = dataclasses.replace(
            result,
            estimate=dataclasses.replace(
                estimate,
                value=estimate.value * scale,
                ci_low=None if estimate.ci_low is None else estimate.ci_low * scale,
                ci_high=None if estimate.ci_high is None else estimate.ci_high * scale,
            ),
            bootstrap_bias=None if result.bootstrap_bias is None else result.bootstrap_bias * scale,
        )
    warnings = cards.small_n_warnings(len(frames), boot.min_clips, result.n_windows, result.dim)
    warnings += [
        f"reference: {w}"
        for w in cards.small_n_warnings(
            result.n_reference_clips, boot.min_clips, result.n_reference_windows, result.dim
        )
    ]
    details = {
        "n_clips": len(frames),
        "n_windows": result.n_windows,
        "n_reference_clips": result.n_reference_clips,
        "n_reference_windows": result.n_reference_windows,
        "dim": result.dim,
        "covariance": COVARIANCE_ESTIMATOR,
        "frechet_method": FRECHET_METHOD,
        "interval": "bias-shifted percentile bootstrap: resampled FDs minus their mean excess over the value "
        "(bootstrap_bias), clipped at 0",
        "bootstrap_bias": None if result.bootstrap_bias is None else float(f"{result.bootstrap_bias:.6g}"),
        "small_n": "FD is biased upward at small N; compare only sets of equal N",
    }
    return cards.reported(result.estimate, "lower", warnings), details


FEATURE_FDS = {"fd_mel": "logmel", "fd_mfcc": "mfcc", "fd_chroma": "chroma"}


def feature_frechet_metrics(
    features: list[ClipFeatures], reference: list[ClipFeatures], boot: Bootstrap, set_name: str, details: dict
) -> Results:
    results: Results = {}
    for metric, attribute in FEATURE_FDS.items():
        entry, fd_details = frechet_metric(
            [getattr(f, attribute) for f in features],
            [getattr(f, attribute) for f in reference],
            boot,
            set_name,
            metric,
        )
        results[metric] = (entry, {**details, "features": attribute, **fd_details})
    return results


def split_half_frechet(reference: list[ClipFeatures], boot: Bootstrap) -> Results:
    """FD between two seeded random halves of the reference: the value two samples of the same music get at this
    N (the floor any generated set should be read against)."""
    if len(reference) < 4:
        reason = f"the reference has {len(reference)} clips; a split-half FD needs at least 4"
        return {f"{m}_split_half": (cards.not_computed(reason), {}) for m in FEATURE_FDS}
    order = np.random.default_rng(boot.seed_for("reference", "split_half")).permutation(len(reference))
    first, second = order[: len(order) // 2], order[len(order) // 2 :]
    results: Results = {}
    for metric, attribute in FEATURE_FDS.items():
        entry, details = frechet_metric(
            [getattr(reference[i], attribute) for i in first],
            [getattr(reference[i], attribute) for i in second],
            boot,
            "reference",
            f"{metric}_split_half",
        )
        results[f"{metric}_split_half"] = (entry, {"halves": "seeded random split of the reference clips", **details})
    return results


# ----------------------------------------------------------------------------------------------- adherence


def _different_caption_mask(caption_ids: list[str]) -> np.ndarray:
    ids = np.array(caption_ids, dtype=object)
    return ids[:, None] != ids[None, :]


def adherence_metrics(
    features: list[ClipFeatures], captions: list[str], caption_ids: list[str], tolerance: float, boot: Bootstrap,
    set_name: str,
) -> tuple[Results, list[dict[str, Any]]]:  # fmt: skip
    """Tempo and key adherence of each clip to its caption, and the random-pairing chance level: the same score
    of clip i's estimate against the caption of clip j, averaged over pairs with different captions."""
    results: Results = {}
    per_clip: list[dict[str, Any]] = [{} for _ in features]
    tempo_rows = [i for i, c in enumerate(captions) if caption_tempo(c) is not None]
    key_rows = [i for i, c in enumerate(captions) if caption_key(c) is not None]
    common = {"pairing": "clip i's estimate scored against clip j's caption, i and j with different captions"}

    if not tempo_rows:
        for metric in ("tempo_acc1", "tempo_acc2", "tempo_acc1_chance", "tempo_acc2_chance"):
            results[metric] = (cards.not_computed("no caption of the set states a tempo in BPM"), {})
    else:
        targets = [caption_tempo(captions[i]) for i in tempo_rows]
        estimates = [features[i].tempo_bpm for i in tempo_rows]
        for i, target in zip(tempo_rows, targets, strict=True):
            per_clip[i].update(tempo_target_bpm=target, tempo_bpm=features[i].tempo_bpm)
        pairs = np.array([[tempo_hits(e, t, tolerance) for t in targets] for e in estimates])  # (n, n, 2)
        mask = _different_caption_mask([caption_ids[i] for i in tempo_rows])
        for k, name in enumerate(("tempo_acc1", "tempo_acc2")):
            hits = np.diagonal(pairs[..., k]).astype(np.float64)
            entry, _ = _mean_metric(list(hits), boot, set_name, name, "higher")
            rule = "within" if k == 0 else f"within (after any of the factors {list(TEMPO_FACTORS)}) of"
            results[name] = (
                entry,
                {"statistic": f"fraction of clips whose tempo estimate is {rule} {tolerance:.0%} of the caption's BPM"},
            )
            results[f"{name}_chance"] = _chance(pairs[..., k], mask, boot, set_name, f"{name}_chance", common)
    if not key_rows:
        for metric in ("key_score", "key_score_chance"):
            results[metric] = (cards.not_computed("no caption of the set states a key"), {})
    else:
        targets_k = [caption_key(captions[i]) for i in key_rows]
        estimates_k = [features[i].key for i in key_rows]
        for i, target in zip(key_rows, targets_k, strict=True):
            per_clip[i].update(key_target=target, key=features[i].key)
        scores = np.array([[key_score(e, t) for t in targets_k] for e in estimates_k])  # (n, n)
        entry, _ = _mean_metric(list(np.diagonal(scores)), boot, set_name, "key_score", "higher")
        results["key_score"] = (
            entry,
            {"statistic": "MIREX weighted key score (1 same, 0.5 fifth above, 0.3 relative, 0.2 parallel), mean"},
        )
        mask = _different_caption_mask([caption_ids[i] for i in key_rows])
        results["key_score_chance"] = _chance(scores, mask, boot, set_name, "key_score_chance", common)
    return results, per_clip


def _chance(
    matrix: np.ndarray, mask: np.ndarray, boot: Bootstrap, set_name: str, metric: str, details: dict
) -> tuple[dict[str, Any], dict[str, Any]]:
    if not mask.any():
        return cards.not_computed("every clip has the same caption: no random pairing exists"), details
    estimate = bootstrap_pair_mean(matrix, boot.resamples, boot.confidence, boot.seed_for(set_name, metric), mask)
    return cards.reported(estimate, None, cards.small_n_warnings(estimate.n, boot.min_clips)), details


# ----------------------------------------------------------------------------------------------- repetition, diversity


def repetition_diversity_metrics(
    features: list[ClipFeatures], caption_ids: list[str], boot: Bootstrap, set_name: str, details: dict
) -> Results:
    results: Results = {}
    entry, n = _mean_metric([f.repetition for f in features], boot, set_name, "repetition", None)
    results["repetition"] = (
        entry,
        {**details, "statistic": "mean over clips of the best lag's mean cosine similarity of mean-removed log-mel "
         "segments (1 = loop or static, ~0 = nothing recurs)", "n_defined": n},
    )  # fmt: skip
    vectors = np.stack([f.mean_logmel for f in features])  # (n, 64) dB
    distances = np.sqrt(np.mean((vectors[:, None, :] - vectors[None, :, :]) ** 2, axis=-1))  # (n, n) RMS dB
    different = _different_caption_mask(caption_ids)
    statistic = "mean over pairs of clips of the RMS difference (dB) of their mean log-mel spectra"
    for metric, mask, which in (
        ("diversity", different, "with different captions"),
        ("diversity_same_caption", ~different, "with the same caption (different seeds)"),
    ):
        if not (mask & ~np.eye(len(mask), dtype=bool)).any():
            results[metric] = (cards.not_computed(f"no pair of clips {which}"), {})
            continue
        estimate = bootstrap_pair_mean(
            distances, boot.resamples, boot.confidence, boot.seed_for(set_name, metric), mask
        )
        warnings = cards.small_n_warnings(len(features), boot.min_clips)
        results[metric] = (cards.reported(estimate, None, warnings), {**details, "statistic": f"{statistic} {which}"})
    return results


# ----------------------------------------------------------------------------------------------- paired signal measures


def paired_signal_metrics(
    pairs: list[tuple[np.ndarray, np.ndarray]], sample_rate: int, boot: Bootstrap, set_name: str
) -> tuple[Results, list[dict[str, float | None]]]:
    """dyncorr, log-mel L1 and DAC mel distance of each reconstruction against its reference clip."""
    from ssmttm import signal

    measures: dict[str, tuple[Callable[..., float], str]] = {
        "dyncorr": (signal.dyncorr, "higher"),
        "log_mel_l1_db": (signal.log_mel_l1_db, "lower"),
        "mel_distance": (signal.mel_distance, "lower"),
    }
    results: Results = {}
    per_clip: list[dict[str, float | None]] = [{} for _ in pairs]
    details = {
        "implementation": "ssmttm.signal",
        "sample_rate": sample_rate,
        "resampler": RESAMPLER,
        "pairing": "each clip against the reference clip of its caption id, cut to the shorter length",
    }
    for metric, (measure, better) in measures.items():
        try:
            values = [measure(reference, clip, sample_rate) for reference, clip in pairs]
        except ImportError as exc:  # mel_distance needs descript-audio-codec
            results[metric] = (cards.not_computed(f"{exc.name or exc} not installed (extra `dac`)"), details)
            continue
        except ValueError as exc:  # lengths too far apart: the reconstruction is not of that clip
            raise UserFacingError(f"{set_name}: {exc}; regenerate the set with the reference's clip length") from exc
        for row, value in zip(per_clip, values, strict=True):
            row[metric] = value
        entry, _ = _mean_metric(list(values), boot, set_name, metric, better, what="pairs")
        results[metric] = (entry, details)
    return results, per_clip


# ----------------------------------------------------------------------------------------------- embedding metrics


def embedding_frechet(
    model: Any,
    clips: list[np.ndarray],
    reference_frames: list[np.ndarray],
    boot: Bootstrap,
    set_name: str,
    metric: str,
    scale: float = 1.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """FD between the pooled window embeddings of a set (embedded here, a FrameEmbedder) and the reference's
    (embedded once by the caller); `scale`: see frechet_metric."""
    frames = [model.embed(a) for a in clips]
    entry, details = frechet_metric(frames, reference_frames, boot, set_name, metric, scale)
    check = package_cross_check(frames, reference_frames, scale)
    return entry, {**model.card(), "resampler": RESAMPLER, **details, **check}


def package_cross_check(
    frames: list[np.ndarray], reference_frames: list[np.ndarray], scale: float = 1.0
) -> dict[str, Any]:
    """The `frechet-audio-distance` package's formula on the same embeddings (the cluster extra), beside ours."""
    generated, reference = (fit_gaussian(np.concatenate(f)) for f in (frames, reference_frames))
    value, note = package_frechet_distance(generated.mean, generated.cov, reference.mean, reference.cov)
    if value is not None and scale != 1.0:
        value, note = value * scale, f"{note}, times {scale:g}"
    return {"package_cross_check": {"value": None if value is None else float(f"{value:.6g}"), "implementation": note}}


def paired_divergence_metric(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    divergence: Callable[[np.ndarray, np.ndarray], float],
    boot: Bootstrap,
    set_name: str,
    metric: str,
) -> tuple[dict[str, Any], list[float]]:
    """Mean of divergence(reference probabilities, generated probabilities) over caption-paired clips."""
    if not pairs:
        return cards.not_computed("no clip of the set has a reference clip with its caption id"), []
    values = [float(divergence(reference, generated)) for reference, generated in pairs]
    entry, _ = _mean_metric(values, boot, set_name, metric, "lower", what="pairs")
    return entry, values


def clap_score_metric(
    model: Any, clips: list[np.ndarray], captions: list[str], boot: Bootstrap, set_name: str, metric: str
) -> tuple[dict[str, Any], list[float]]:
    """Mean cosine of each clip's audio embedding and its caption's text embedding (a TextAudioEmbedder)."""
    audio = np.stack([model.embed_audio(a) for a in clips])  # (n, d)
    scores = [float(s) for s in cosine(audio, model.embed_text(list(captions)))]
    entry, _ = _mean_metric(scores, boot, set_name, metric, "higher")
    return entry, scores


def clap_metrics(
    model: Any,
    clips: list[np.ndarray],
    captions: list[str],
    reference: list[np.ndarray] | None,
    boot: Bootstrap,
    set_name: str,
) -> tuple[Results, list[float]]:
    """CLAP score (mean audio-text cosine) and, with the reference clips' (d,) audio embeddings, FAD-CLAP on clip
    embeddings (a TextAudioEmbedder)."""
    details = {**model.card(), "resampler": RESAMPLER}
    audio = np.stack([model.embed_audio(a) for a in clips])  # (n, d)
    text = model.embed_text(list(captions))  # (n, d)
    scores = [float(s) for s in cosine(audio, text)]
    entry, _ = _mean_metric(scores, boot, set_name, "clap_score", "higher")
    results: Results = {"clap_score": (entry, {**details, "statistic": "mean cosine(audio, caption text)"})}
    if reference is not None:
        reference_audio = [e[None] for e in reference]  # one (1, d) window per reference clip
        entry, fd_details = frechet_metric([a[None] for a in audio], reference_audio, boot, set_name, "fad_clap")
        results["fad_clap"] = (entry, {**details, **fd_details, "windows": "one embedding per clip"})
    return results, scores


def bootstrap_card(boot: Bootstrap) -> dict[str, Any]:
    return {
        "method": CI_METHOD,
        "resamples": boot.resamples,
        "confidence": boot.confidence,
        "evaluation_seed": boot.seed,
        "seed_per_metric": "ssmttm.evaluate.bootstrap.metric_seed(seed, set name, metric)",
        "min_clips": boot.min_clips,
    }
