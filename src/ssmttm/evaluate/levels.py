"""Level normalisations the two embedding-metric families apply before their networks, and the audio they prepare.

    audiocraft      generated clips only (audiocraft's MusicGenSolver.evaluate_audio_generation normalises `y_pred`,
                    never the reference `y`, and its codec-floor path `use_gt` replaces `y_pred` after the
                    normalisation): `normalize_audio(strategy='loudness', loudness_headroom_db=14)`, i.e. gain to
                    -14 LUFS integrated loudness (ITU-R BS.1770), clips whose RMS is below 2e-3 left as they are,
                    then clamped to [-1, 1]; applied at the clip's own rate, then resampled to the metric's rate
    stable_audio    every clip, reference included: `pyloudnorm.normalize.peak(audio, -1.0)`, a gain that puts the
                    clip's largest |sample| at -1 dBFS; OpenL3's FD applies it at the file's rate before resampling
                    to 44.1 kHz, PaSST and CLAP after loading at 32 / 48 kHz (as stable-audio-metrics does)

Loudness is measured with pyloudnorm (audiocraft uses torchaudio.transforms.Loudness; both implement BS.1770-4).
Digital silence has no peak and no loudness: it is left as it is (pyloudnorm would divide by zero).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ssmttm.audio import resample
from ssmttm.evaluate.clipsets import ClipSet
from ssmttm.evaluate.features import integrated_loudness

AUDIOCRAFT_LOUDNESS_LUFS = -14.0  # audiocraft's generate.audio.loudness_headroom_db = 14
AUDIOCRAFT_ENERGY_FLOOR = 2e-3  # audiocraft's normalize_loudness(energy_floor): quieter clips are not rescaled
SAM_PEAK_DBFS = -1.0  # stable-audio-metrics: pyln.normalize.peak(audio, -1.0)

Level = Callable[[np.ndarray, int], np.ndarray]  # (N,) audio at a rate -> (N,) levelled audio


def _finite(audio: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(audio, np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def audiocraft_loudness(
    audio: np.ndarray, sample_rate: int, target_lufs: float = AUDIOCRAFT_LOUDNESS_LUFS
) -> np.ndarray:
    """audiocraft's `normalize_audio(wav, strategy='loudness')` on a mono clip: (N,) -> (N,) float64."""
    x = _finite(audio)
    if x.size == 0 or float(np.sqrt(np.mean(x * x))) < AUDIOCRAFT_ENERGY_FLOOR:
        return x
    loudness = integrated_loudness(x, sample_rate)
    if loudness is None:  # shorter than one 400 ms block, or gated to nothing
        return x
    return np.clip(x * 10.0 ** ((target_lufs - loudness) / 20.0), -1.0, 1.0)


def peak_normalise(audio: np.ndarray, sample_rate: int = 0, target_dbfs: float = SAM_PEAK_DBFS) -> np.ndarray:
    """pyloudnorm.normalize.peak: (N,) -> (N,) float64 whose largest |sample| is 10 ** (target_dbfs / 20)."""
    x = _finite(audio)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (10.0 ** (target_dbfs / 20.0) / peak) if peak > 0 else x


def levelled_then_resampled(clip_set: ClipSet, sample_rate: int, level: Level) -> list[np.ndarray]:
    """Every clip levelled at its own rate, then resampled (soxr HQ) to `sample_rate`: list of (N,) float32.
    Not cached: a second copy of a large set at every rate would not fit in memory."""
    return [
        resample(level(clip.audio, clip.sample_rate)[None].astype(np.float32), clip.sample_rate, sample_rate)[0]
        for clip in clip_set.clips
    ]


def resampled_then_levelled(clip_set: ClipSet, sample_rate: int, level: Level) -> list[np.ndarray]:
    """Every clip resampled to `sample_rate` (the set's cache), then levelled: list of (N,) float32."""
    return [level(audio, sample_rate).astype(np.float32) for audio in clip_set.audio_at(sample_rate)]
