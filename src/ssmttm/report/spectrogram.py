"""A small mel-spectrogram picture of a clip, for the report's players and the local app.

    mel_spectrogram_png(wav, sample_rate, "clip.png")          # or a binary buffer (io.BytesIO)

librosa computes the power mel spectrogram (its STFT and Slaney mel filters) and the decibel scale; matplotlib's
colour map colours it. The picture is one pixel per mel band and frame (about 256 frames wide whatever the clip's
length), stored as a 32-colour palette PNG so that a page with a hundred of them stays light (about 4 kB each); the
page scales it with CSS. Low frequencies are at the bottom.
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import BinaryIO

import numpy as np

N_MELS = 64  # picture height in pixels
TARGET_FRAMES = 256  # picture width in pixels, roughly: the hop is chosen from the clip's length
N_FFT = 1024  # 64 mel bands need no finer bins; half the work of 2048
TOP_DB = 80.0  # the colour scale spans this many dB below the clip's loudest bin
COLOUR_MAP = "magma"
COLOUR_LEVELS = 32  # 2.5 dB steps over TOP_DB: indistinguishable from 256 on screen, a third of the bytes


def mel_decibels(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N_MELS, frames) mel power in dB relative to the clip's maximum, in [-TOP_DB, 0]; rows run low to high."""
    import librosa
    from threadpoolctl import threadpool_limits

    samples = np.asarray(wav, dtype=np.float32)
    if samples.ndim == 2:  # (channels, T) as torchaudio and the codec write it: the mono mix
        samples = samples.mean(axis=0)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"a spectrogram needs a non-empty (T,) or (channels, T) clip, got shape {np.shape(wav)}")
    samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    if samples.size < N_FFT:  # shorter than one analysis window: pad with silence rather than shrink the window
        samples = np.pad(samples, (0, N_FFT - samples.size))
    hop = min(N_FFT, max(1, math.ceil(samples.size / TARGET_FRAMES)))
    power = np.abs(librosa.stft(samples, n_fft=N_FFT, hop_length=hop)) ** 2  # (N_FFT // 2 + 1, frames)
    with threadpool_limits(limits=1):  # a (64, 513) x (513, ~256) product: BLAS threads only contend (10x slower)
        mel = mel_filter_bank(sample_rate) @ power  # (N_MELS, frames)
    return librosa.power_to_db(mel, ref=np.max, top_db=TOP_DB)


@functools.lru_cache(maxsize=8)
def mel_filter_bank(sample_rate: int) -> np.ndarray:
    """librosa's Slaney mel filters (N_MELS, N_FFT // 2 + 1), as librosa.feature.melspectrogram uses them; built once
    per sample rate rather than once per clip."""
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=N_FFT, n_mels=N_MELS, fmax=sample_rate / 2)


def mel_spectrogram_png(wav: np.ndarray, sample_rate: int, path_or_buffer: str | Path | BinaryIO) -> None:
    """Write the clip's mel spectrogram as a palette PNG to a path or a binary buffer. `wav`: (T,) or (channels, T)
    floats at `sample_rate`."""
    from matplotlib import colormaps
    from PIL import Image

    decibels = mel_decibels(wav, sample_rate)
    top = COLOUR_LEVELS - 1
    levels = np.clip((decibels + TOP_DB) / TOP_DB * top, 0, top).round().astype(np.uint8)[::-1]  # low bands at bottom
    picture = Image.fromarray(np.ascontiguousarray(levels)).convert("P")
    palette = (colormaps[COLOUR_MAP](np.linspace(0.0, 1.0, COLOUR_LEVELS))[:, :3] * 255).round().astype(np.uint8)
    picture.putpalette(palette.reshape(-1).tolist())
    if isinstance(path_or_buffer, str | Path):
        Path(path_or_buffer).parent.mkdir(parents=True, exist_ok=True)
    picture.save(path_or_buffer, format="PNG")


def mel_spectrogram_png_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """The PNG of `mel_spectrogram_png` as bytes (for an app that serves it from memory)."""
    buffer = io.BytesIO()
    mel_spectrogram_png(wav, sample_rate, buffer)
    return buffer.getvalue()
