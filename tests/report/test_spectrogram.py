"""The mel-spectrogram picture shared by the report and the app: where a tone's energy lands, shapes, light files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ssmttm.report.spectrogram import N_MELS, mel_spectrogram_png, mel_spectrogram_png_bytes

RATE = 16000


def _tone(frequency: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _brightest_row(png: bytes) -> int:
    picture = Image.open(io.BytesIO(png))
    levels = np.asarray(picture)  # palette indices: 0 = 80 dB below the peak, higher = louder
    return int(np.argmax(levels.mean(axis=1)))


def test_low_tones_sit_below_high_tones():
    low, high = mel_spectrogram_png_bytes(_tone(220.0), RATE), mel_spectrogram_png_bytes(_tone(3000.0), RATE)
    assert _brightest_row(low) > _brightest_row(high) + 10  # row 0 is the top of the picture (high frequencies)


def test_picture_shape_and_weight(tmp_path):
    path = tmp_path / "sub" / "clip.png"
    stereo = np.stack([_tone(440.0, 10.0), _tone(660.0, 10.0)])  # (channels, T)
    mel_spectrogram_png(stereo, RATE, path)
    picture = Image.open(path)
    assert picture.mode == "P" and picture.height == N_MELS and 200 <= picture.width <= 300
    assert path.stat().st_size < 16_000  # a page of a hundred players stays light
    buffer = io.BytesIO()
    mel_spectrogram_png(stereo, RATE, buffer)
    assert buffer.getvalue() == path.read_bytes()


def test_short_silent_and_empty_clips():
    assert Image.open(io.BytesIO(mel_spectrogram_png_bytes(np.zeros(100, np.float32), RATE))).height == N_MELS
    with pytest.raises(ValueError, match="non-empty"):
        mel_spectrogram_png_bytes(np.zeros(0, np.float32), RATE)
