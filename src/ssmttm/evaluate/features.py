"""The weight-free layer: per-clip measures that need no network and no download, computed for every clip set.

Per clip (`clip_health` on the file's own audio; `clip_features` on audio resampled to `FeatureConfig.sample_rate`
and, when `loudness_target_lufs` is set, gain-normalised to that integrated loudness first):

- signal health: non-finite samples, peak, clipping ratio, silence ratio (50 ms frames below `silence_db`),
  integrated loudness (ITU-R BS.1770 via pyloudnorm), effective bandwidth (frequency below which 99% of the energy
  lies);
- frame features for Fréchet distances (each frame is one sample): log-mel (the 64-band HTK log-mel of
  `ssmttm.signal`, 64 ms / 16 ms frames), MFCC (DCT-II of that log-mel) with first-order deltas, chroma
  (librosa `chroma_stft`);
- attribute estimates: tempo (librosa `feature.tempo` on the log-mel's onset envelope: autocorrelation with
  librosa's log-normal prior around 120 BPM) and key (Krumhansl-Schmuckler: the mean chroma correlated with the
  Krumhansl-Kessler major and minor profiles in all 12 transpositions);
- repetition: mean-removed log-mel segments of `repetition_segment_s`; for each lag from `repetition_min_lag_s` to
  half the clip, the mean cosine similarity of segments that far apart; the clip's repetition is the largest of
  those means (1 for a loop or a static sound, about 0 when nothing recurs);
- the clip's mean log-mel vector, from which between-clip diversity is computed.

Captions of the demo corpus carry the asked-for tempo ("... 120 BPM") and key ("... in F# minor"):
`caption_tempo` and `caption_key` read them; `tempo_hits` and `key_score` compare an estimate with a target
(`key_score` is the MIREX weighted key score, as `mir_eval.key.weighted_score`).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from ssmttm import signal

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_ACCIDENTALS = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
TEMPO_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)  # "acc2": octave (and third) errors allowed, as in MIREX
_TEMPO = re.compile(r"(\d{2,3}(?:\.\d+)?)\s*bpm\b", re.IGNORECASE)
_KEY = re.compile(r"\b([A-G])\s*([#b♯♭]?)\s+(major|minor)\b")


@dataclass
class FeatureConfig:
    sample_rate: int = 16000  # rate of the frame features, tempo, key and repetition
    loudness_target_lufs: float | None = -23.0  # gain-normalise before features; null keeps each file's level
    n_mfcc: int = 20
    chroma_n_fft: int = 4096
    chroma_hop: int = 1024
    silence_db: float = -60.0  # a 50 ms frame below this RMS (dBFS) is silent
    clip_level: float = 0.999  # |sample| at or above this counts as clipped
    tempo_tolerance: float = 0.08  # relative tempo error counted as a hit
    repetition_segment_s: float = 0.25
    repetition_min_lag_s: float = 1.0


def library_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------- signal health

SILENCE_FRAME_S = 0.05
BANDWIDTH_ENERGY = 0.99
BANDWIDTH_FFT = 2048


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float | None:
    """BS.1770 integrated loudness in LUFS; None for clips shorter than one 400 ms block or fully gated (silence)."""
    import pyloudnorm

    if audio.shape[0] < int(0.4 * sample_rate) + 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns on silence (log of zero) and on clipping
        loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(audio.astype(np.float64))
    return float(loudness) if math.isfinite(loudness) else None


def effective_bandwidth(audio: np.ndarray, sample_rate: int) -> float | None:
    """Frequency (Hz) below which BANDWIDTH_ENERGY of the clip's spectral energy lies; None for silence."""
    x = np.asarray(audio, np.float64)
    if x.shape[0] < BANDWIDTH_FFT:
        x = np.pad(x, (0, BANDWIDTH_FFT - x.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(x, BANDWIDTH_FFT)[:: BANDWIDTH_FFT // 4]
    power = (np.abs(np.fft.rfft(frames * np.hanning(BANDWIDTH_FFT), axis=1)) ** 2).sum(axis=0)  # (F,)
    total = power.sum()
    if total <= 0:
        return None
    index = int(np.searchsorted(np.cumsum(power) / total, BANDWIDTH_ENERGY))
    return float(index * sample_rate / BANDWIDTH_FFT)


def clip_health(audio: np.ndarray, sample_rate: int, cfg: FeatureConfig) -> dict[str, Any]:
    """Signal health of one clip at its own rate; non-finite samples are counted, then read as 0 by the rest."""
    x = np.asarray(audio, np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(x)))
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    frame = max(1, int(SILENCE_FRAME_S * sample_rate))
    n_frames = max(1, x.shape[0] // frame)
    frames = np.pad(x, (0, max(0, n_frames * frame - x.shape[0])))[: n_frames * frame].reshape(n_frames, frame)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    with np.errstate(divide="ignore"):
        frame_db = 20.0 * np.log10(rms)
    return {
        "duration_s": x.shape[0] / sample_rate,
        "nonfinite_samples": nonfinite,
        "peak_dbfs": 20.0 * math.log10(peak) if peak > 0 else None,
        "clipping_ratio": float(np.mean(np.abs(x) >= cfg.clip_level)) if x.size else 0.0,
        "silence_ratio": float(np.mean(frame_db < cfg.silence_db)),
        "loudness_lufs": integrated_loudness(x, sample_rate),
        "bandwidth_hz": effective_bandwidth(x, sample_rate),
    }


# ----------------------------------------------------------------------------------------------- frame features


@dataclass
class ClipFeatures:
    logmel: np.ndarray  # (frames, 64) dB
    mfcc: np.ndarray  # (frames, 2 * n_mfcc): MFCC then deltas
    chroma: np.ndarray  # (chroma frames, 12)
    mean_logmel: np.ndarray  # (64,) dB: the clip's average spectrum, for diversity
    tempo_bpm: float | None
    key: tuple[int, str] | None  # (tonic pitch class, "major" | "minor")
    repetition: float | None
    gain_db: float  # gain applied before the features (loudness normalisation)


def normalise_loudness(
    audio: np.ndarray, sample_rate: int, target_lufs: float | None, loudness: float | None = None
) -> tuple[np.ndarray, float]:
    """(audio with its integrated loudness moved to `target_lufs`, gain in dB); silence and None keep gain 0.

    `loudness`: the clip's loudness if already measured (signal health measures it on the file's own rate)."""
    if target_lufs is None:
        return audio, 0.0
    if loudness is None:
        loudness = integrated_loudness(audio, sample_rate)
    if loudness is None:
        return audio, 0.0
    gain_db = target_lufs - loudness
    return audio * 10.0 ** (gain_db / 20.0), gain_db


def mfcc_with_deltas(logmel: np.ndarray, n_mfcc: int) -> np.ndarray:
    """(frames, bands) log-mel dB -> (frames, 2 n_mfcc): orthonormal DCT-II coefficients and their time gradient."""
    import scipy.fft

    coefficients = scipy.fft.dct(logmel, type=2, norm="ortho", axis=1)[:, :n_mfcc]
    deltas = np.gradient(coefficients, axis=0) if coefficients.shape[0] > 1 else np.zeros_like(coefficients)
    return np.concatenate([coefficients, deltas], axis=1)


def estimate_key(mean_chroma: np.ndarray) -> tuple[int, str] | None:
    """Krumhansl-Schmuckler: the (tonic, mode) whose rotated profile correlates best with the mean chroma (12,)."""
    chroma = np.asarray(mean_chroma, np.float64)
    if not np.all(np.isfinite(chroma)) or np.ptp(chroma) <= 0:
        return None
    best, best_r = None, -np.inf
    for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if r > best_r:
                best, best_r = (tonic, mode), r
    return best


def repetition_score(logmel: np.ndarray, frame_hop_s: float, segment_s: float, min_lag_s: float) -> float | None:
    """Largest mean cosine similarity between mean-removed log-mel segments `lag` apart, over lags from `min_lag_s`
    to half the clip; None when the clip is too short for one such lag."""
    per_segment = max(1, round(segment_s / frame_hop_s))
    n_segments = logmel.shape[0] // per_segment
    min_lag = max(1, math.ceil(min_lag_s / segment_s - 1e-9))
    if n_segments < 2 * min_lag:
        return None
    segments = logmel[: n_segments * per_segment].reshape(n_segments, per_segment, -1).mean(axis=1)  # (S, bands)
    segments = segments - segments.mean(axis=0)
    norms = np.linalg.norm(segments, axis=1)
    if float(np.sum(norms * norms)) / segments.size < 1e-6:  # nothing changes at all: a static sound repeats fully
        return 1.0
    unit = segments / np.maximum(norms, 1e-9)[:, None]
    similarity = unit @ unit.T  # (S, S)
    lags = range(min_lag, n_segments // 2 + 1)
    return float(max(np.mean(np.diagonal(similarity, offset=lag)) for lag in lags))


def estimate_tempo(logmel: np.ndarray, sample_rate: int) -> float | None:
    """Tempo (BPM) from the log-mel (frames, bands): onset strength = mean over bands of the positive frame-to-frame
    dB increase (librosa's onset_strength on this log-mel), then librosa.feature.tempo (autocorrelation tempogram,
    log-normal prior around 120 BPM)."""
    import librosa

    if logmel.shape[0] < 3:
        return None
    onset = np.maximum(0.0, np.diff(logmel, axis=0)).mean(axis=1)  # (frames - 1,)
    _, hop = signal.frame_sizes(sample_rate)
    tempo = float(librosa.feature.tempo(onset_envelope=onset, sr=sample_rate, hop_length=hop)[0])
    return tempo if tempo > 0 else None


def clip_features(audio: np.ndarray, cfg: FeatureConfig, loudness_lufs: float | None = None) -> ClipFeatures:
    """Frame features and estimates of one clip given at `cfg.sample_rate` (`loudness_lufs`: see
    normalise_loudness)."""
    import librosa

    rate = cfg.sample_rate
    x = np.nan_to_num(np.asarray(audio, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    x, gain_db = normalise_loudness(x, rate, cfg.loudness_target_lufs, loudness_lufs)
    logmel = signal.log_mel_db(x, rate).T  # (frames, 64)
    chroma = librosa.feature.chroma_stft(
        y=x.astype(np.float32), sr=rate, n_fft=cfg.chroma_n_fft, hop_length=cfg.chroma_hop, tuning=0.0
    ).T  # (frames, 12); tuning fixed at A440: estimating it costs more than all the other features together
    silent = not np.any(x)
    tempo = None if silent else estimate_tempo(logmel, rate)
    return ClipFeatures(
        logmel=logmel,
        mfcc=mfcc_with_deltas(logmel, cfg.n_mfcc),
        chroma=chroma,
        mean_logmel=logmel.mean(axis=0),
        tempo_bpm=tempo,
        key=None if silent else estimate_key(chroma.mean(axis=0)),
        repetition=repetition_score(logmel, signal.DYN_HOP_S, cfg.repetition_segment_s, cfg.repetition_min_lag_s),
        gain_db=gain_db,
    )


def feature_card(cfg: FeatureConfig) -> dict[str, Any]:
    """How the weight-free features are computed: the common part of their metric cards."""
    window, hop = signal.frame_sizes(cfg.sample_rate)
    return {
        "implementation": "ssmttm.evaluate.features (weight-free; comparable only within this pipeline)",
        "libraries": {name: library_version(name) for name in ("numpy", "scipy", "librosa", "pyloudnorm", "soxr")},
        "sample_rate": cfg.sample_rate,
        "mono": True,
        "level_normalisation": (
            f"integrated loudness (BS.1770, pyloudnorm, measured at the file's rate) set to "
            f"{cfg.loudness_target_lufs} LUFS before features"
            if cfg.loudness_target_lufs is not None
            else "none"
        ),
        "log_mel": f"{signal.DYN_N_MELS} HTK mel bands 0 Hz-Nyquist, power in dB re full scale, periodic Hann "
        f"window {window} samples, hop {hop} samples, no centring",
        "mfcc": f"{cfg.n_mfcc} orthonormal DCT-II coefficients of the log-mel, plus np.gradient deltas",
        "chroma": f"librosa.feature.chroma_stft n_fft {cfg.chroma_n_fft}, hop {cfg.chroma_hop}, tuning 0 (A440)",
        "tempo": "onset strength of the log-mel (mean positive dB increase per frame) -> librosa.feature.tempo "
        "(autocorrelation tempogram, log-normal prior at 120 BPM)",
        "key": "Krumhansl-Schmuckler on the mean chroma (Krumhansl-Kessler profiles, 24 keys)",
    }


# ----------------------------------------------------------------------------------------------- caption targets


def caption_tempo(caption: str) -> float | None:
    """The BPM a caption asks for ('... at 120 BPM', 'Tempo: 96 BPM'), or None."""
    match = _TEMPO.search(caption)
    return float(match.group(1)) if match else None


def caption_key(caption: str) -> tuple[int, str] | None:
    """The key a caption asks for ('in F# minor', 'Key: Bb major') as (tonic pitch class, mode), or None."""
    match = _KEY.search(caption)
    if not match:
        return None
    note, accidental, mode = match.groups()
    return (PITCH_CLASSES.index(note) + _ACCIDENTALS[accidental]) % 12, mode


def key_name(key: tuple[int, str] | None) -> str | None:
    return f"{PITCH_CLASSES[key[0]]} {key[1]}" if key else None


def tempo_hits(estimate: float | None, target: float, tolerance: float) -> tuple[float, float]:
    """(acc1, acc2): the estimate within `tolerance` of the target; or of 1/3, 1/2, 2 or 3 times it."""
    if estimate is None:
        return 0.0, 0.0
    acc1 = abs(estimate - target) <= tolerance * target
    acc2 = any(abs(estimate - f * target) <= tolerance * f * target for f in TEMPO_FACTORS)
    return float(acc1), float(acc2)


def key_score(estimate: tuple[int, str] | None, target: tuple[int, str]) -> float:
    """MIREX weighted key score: same key 1, estimate a fifth above (same mode) 0.5, relative key 0.3, parallel
    key 0.2, otherwise 0."""
    if estimate is None:
        return 0.0
    (est_tonic, est_mode), (ref_tonic, ref_mode) = estimate, target
    if est_mode == ref_mode:
        if est_tonic == ref_tonic:
            return 1.0
        return 0.5 if est_tonic == (ref_tonic + 7) % 12 else 0.0
    if est_tonic == ref_tonic:
        return 0.2
    relative = (ref_tonic + 9) % 12 if ref_mode == "major" else (ref_tonic + 3) % 12
    return 0.3 if est_tonic == relative else 0.0
