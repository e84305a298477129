"""The stable-audio-metrics family's semantics, pinned with stand-ins whose outputs are known, and the level
normalisations of both families (ssmttm.evaluate.sam, ssmttm.evaluate.levels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmttm.evaluate import levels, metrics, sam
from ssmttm.evaluate.embeddings import kl_divergence
from ssmttm.evaluate.features import integrated_loudness
from ssmttm.evaluate.frechet import frechet_between

RATE = 8000
TARGET_PEAK = 10 ** (-1 / 20)


# ----------------------------------------------------------------------------------------------- levels


def test_peak_normalisation_puts_the_largest_sample_at_minus_1_dbfs():
    rng = np.random.default_rng(0)
    for scale in (0.01, 0.5, 3.0):
        clip = scale * rng.standard_normal(1000)
        clip[17] = -2 * scale * np.abs(clip).max()  # a negative peak counts as the peak
        out = levels.peak_normalise(clip)
        assert np.max(np.abs(out)) == pytest.approx(TARGET_PEAK, rel=1e-12)
        np.testing.assert_allclose(out / clip, TARGET_PEAK / np.abs(clip).max())  # one gain for the whole clip
    assert not np.any(levels.peak_normalise(np.zeros(100)))  # silence: no division by zero
    assert np.all(np.isfinite(levels.peak_normalise(np.array([np.nan, 0.5]))))


def test_audiocraft_loudness_normalisation_floor_and_clamp():
    t = np.arange(3 * RATE) / RATE
    quiet = 0.02 * np.sin(2 * np.pi * 440 * t)  # RMS 0.014: above audiocraft's floor of 2e-3
    out = levels.audiocraft_loudness(quiet, RATE, -20.0)
    assert integrated_loudness(out, RATE) == pytest.approx(-20.0, abs=0.05) and np.max(np.abs(out)) < 1
    below_floor = 0.002 * np.sin(2 * np.pi * 440 * t)  # RMS 0.0014 < 2e-3: left as it is
    np.testing.assert_array_equal(levels.audiocraft_loudness(below_floor, RATE, -14.0), below_floor)
    loud = levels.audiocraft_loudness(quiet, RATE, 0.0)  # 0 LUFS needs peaks above 1: clamped to [-1, 1]
    assert np.max(np.abs(loud)) == 1.0 and np.mean(np.abs(loud) == 1.0) > 0.05


# ----------------------------------------------------------------------------------------------- KL_passt


class WindowRecorder:
    """A PaSST stand-in: logits = (mean, max, first sample) of the window, so windows are visible in its output."""

    sample_rate = RATE

    def __init__(self) -> None:
        self.windows: list[np.ndarray] = []

    def logits(self, window: np.ndarray) -> np.ndarray:
        self.windows.append(np.asarray(window))
        return np.array([window.mean(), window.max(), window[0]])

    def card(self) -> dict:
        return {}


def test_a_25_s_clip_gives_10_s_windows_at_0_5_10_15_s():
    ramp = np.arange(25 * RATE, dtype=np.float64)  # each sample's value is its index
    assert sam.passt_window_starts(ramp.size, RATE) == [0, 5 * RATE, 10 * RATE, 15 * RATE]
    windows = sam.passt_windows(ramp, RATE)
    assert [int(w[0]) for w in windows] == [0, 5 * RATE, 10 * RATE, 15 * RATE]
    assert all(w.size == 10 * RATE for w in windows)  # the last window ends exactly at 25 s: no padding
    assert windows[-1][-1] == ramp[-1]


def test_the_tail_window_is_zero_padded_and_a_very_short_clip_fed_as_it_is():
    ramp = np.arange(1, 22 * RATE + 1, dtype=np.float64)
    windows = sam.passt_windows(ramp, RATE)  # starts while start < 22 - 5 s: 0, 5, 10, 15 s
    assert [int(w[0]) - 1 for w in windows] == [0, 5 * RATE, 10 * RATE, 15 * RATE]
    tail = windows[-1]
    assert tail.size == 10 * RATE and np.all(tail[7 * RATE :] == 0) and np.all(tail[: 7 * RATE] > 0)
    assert sam.passt_window_starts(12 * RATE, RATE) == [0, 5 * RATE]  # 12 s: windows at 0 and 5 s (7 s + padding)
    assert sam.passt_window_starts(10 * RATE, RATE) == [0]
    assert [w.size for w in sam.passt_windows(np.ones(3 * RATE), RATE)] == [10 * RATE]  # 3 s: padded to 10 s
    assert [w.size for w in sam.passt_windows(np.ones(RATE), RATE)] == [RATE]  # 1 s <= 1.5 s: fed unpadded


def test_probabilities_are_the_softmax_of_the_mean_window_logits():
    rng = np.random.default_rng(1)
    clip = rng.uniform(-0.5, 0.5, 25 * RATE)
    model = WindowRecorder()
    probabilities = sam.passt_probabilities(model, clip)
    logits = np.stack([model.logits(w) for w in sam.passt_windows(clip, RATE)])  # (4, 3)
    assert len(model.windows) == 4 + 4
    np.testing.assert_allclose(probabilities, sam.softmax(logits.mean(axis=0)), rtol=1e-12)
    mean_of_softmaxes = np.mean([sam.softmax(z) for z in logits], axis=0)  # the audiocraft family's pooling
    assert not np.allclose(probabilities, mean_of_softmaxes, rtol=1e-6)


def test_kl_is_generated_given_reference_as_stable_audio_metrics_computes_it():
    generated = np.array([0.10, 0.40, 0.50])
    reference = np.array([0.80, 0.15, 0.05])
    by_hand = sum(g * np.log(g / (r + 1e-6)) for g, r in zip(generated, reference, strict=True))
    assert by_hand == pytest.approx(1.33567, abs=1e-5)  # stable-audio-metrics' src/test_kld.py, example 2
    assert sam.kl_generated_reference(reference, generated) == pytest.approx(by_hand, rel=1e-12)
    torch_kl = torch.nn.functional.kl_div(
        (torch.tensor(reference, dtype=torch.float64) + 1e-6).log(),
        torch.tensor(generated, dtype=torch.float64),
        reduction="sum",
        log_target=False,
    )
    assert sam.kl_generated_reference(reference, generated) == pytest.approx(float(torch_kl), rel=1e-12)
    # the other direction (the audiocraft family's KL(reference || generated)) is a different number
    other = kl_divergence(reference, generated)
    assert other == pytest.approx(sum(r * np.log(r / (g + 1e-6)) for g, r in zip(generated, reference, strict=True)))
    assert other == pytest.approx(1.40129, abs=1e-5) and abs(other - by_hand) > 0.05
    # a class the generated clip never gives contributes 0; one the reference never gives is bounded by eps
    assert sam.kl_generated_reference(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(np.log(2), 1e-5)
    assert sam.kl_generated_reference(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(
        0.5 * np.log(0.5 / (1 + 1e-6)) + 0.5 * np.log(0.5 / 1e-6)
    )


# ----------------------------------------------------------------------------------------------- FD_openl3


def test_a_mono_clip_fed_as_two_identical_channels_doubles_the_fd_exactly():
    """A linear per-channel embedder: the stereo embedding is [W x_L, W x_R]; for a mono clip x_L = x_R."""
    rng = np.random.default_rng(2)
    weights = rng.standard_normal((16, 6))

    def embed(clip: np.ndarray) -> np.ndarray:  # (160,) -> (10, 6): ten 16-sample windows, linear
        return clip.reshape(10, 16) @ weights

    generated = [embed(rng.standard_normal(160) * 1.3 + 0.2) for _ in range(30)]
    reference = [embed(rng.standard_normal(160)) for _ in range(30)]
    mono = frechet_between(np.concatenate(generated), np.concatenate(reference))
    stereo = frechet_between(
        np.concatenate([sam.channel_frames(f, 2) for f in generated]),
        np.concatenate([sam.channel_frames(f, 2) for f in reference]),
    )
    # exactly 2x up to rounding: the duplicated blocks' zero eigenvalues come out as +-1e-16, whose clipped square
    # roots add ~1e-8 each
    assert mono > 1 and stereo == pytest.approx(2 * mono, rel=1e-6)
    np.testing.assert_array_equal(sam.channel_frames(generated[0], 1), generated[0])
    assert sam.channel_frames(generated[0], 2).shape == (10, 12)
    # the stage's shortcut (channels x the mono FD, with its interval) gives the concatenated embeddings' FD
    boot = metrics.Bootstrap(resamples=30, confidence=0.9, seed=3, min_clips=2)
    scaled, details = metrics.frechet_metric(generated, reference, boot, "set", "fd_openl3_sam", scale=2)
    plain, plain_details = metrics.frechet_metric(generated, reference, boot, "set", "fd_openl3_sam")
    assert scaled["value"] == pytest.approx(stereo, rel=1e-5)
    assert scaled["ci"] == pytest.approx([2 * c for c in plain["ci"]], rel=1e-5)
    assert details["bootstrap_bias"] == pytest.approx(2 * plain_details["bootstrap_bias"], rel=1e-5)
    with pytest.raises(Exception, match="evaluate.sam.channels must be 1 or 2"):
        sam.channel_frames(generated[0], 3)
