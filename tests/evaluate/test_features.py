"""The weight-free layer: signal health, frame features, tempo and key against captions, repetition."""

from __future__ import annotations

import numpy as np
import pytest

from ssmttm.corpus.caption_templates import TEMPLATES, parse_tags, tag_caption
from ssmttm.evaluate import features as F
from tests.evaluate._fixtures import RATE, chord, clicks

CFG = F.FeatureConfig()


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.__name__)
def test_every_demo_caption_template_states_a_readable_tempo_and_key(template):
    parts = parse_tags({"bpm": 128, "key": "F#m", "mood": "calm", "genre": "rock", "instruments": "piano"})
    caption = template(parts, "piece")
    assert F.caption_tempo(caption) == 128.0
    assert F.caption_key(caption) == (6, "minor")
    assert F.caption_tempo(tag_caption({"bpm": 72, "key": "Bb"}, "clip-0")) == 72.0


def test_caption_parsing_spellings_and_absence():
    assert F.caption_key("Key: Bb major.") == (10, "major")
    assert F.caption_key("in Eb minor") == (3, "minor")
    assert F.caption_key("A calm piece.") is None
    assert F.caption_tempo("Tempo: 96.5 BPM.") == 96.5
    assert F.caption_tempo("a slow piece") is None


def test_mirex_key_score_table():
    c_major, a_minor = (0, "major"), (9, "minor")
    assert F.key_score((0, "major"), c_major) == 1.0
    assert F.key_score((7, "major"), c_major) == 0.5  # a fifth above
    assert F.key_score((5, "major"), c_major) == 0.0  # a fifth below does not count
    assert F.key_score((9, "minor"), c_major) == 0.3  # relative minor
    assert F.key_score((0, "major"), a_minor) == 0.3  # relative major
    assert F.key_score((0, "minor"), c_major) == 0.2  # parallel
    assert F.key_score((1, "major"), c_major) == 0.0
    assert F.key_score(None, c_major) == 0.0


def test_tempo_hits_with_and_without_octave_errors():
    assert F.tempo_hits(123.0, 120.0, 0.08) == (1.0, 1.0)
    assert F.tempo_hits(240.0, 120.0, 0.08) == (0.0, 1.0)
    assert F.tempo_hits(40.5, 120.0, 0.08) == (0.0, 1.0)  # a third
    assert F.tempo_hits(150.0, 120.0, 0.08) == (0.0, 0.0)
    assert F.tempo_hits(None, 120.0, 0.08) == (0.0, 0.0)


@pytest.mark.parametrize("bpm", [70, 120, 150])
def test_tempo_of_a_click_track(bpm):
    assert F.clip_features(clicks(bpm, 5.0), CFG).tempo_bpm == pytest.approx(bpm, rel=0.04)


@pytest.mark.parametrize(("tonic", "mode", "expected"), [("C", "major", 0), ("A", "minor", 9), ("F#", "minor", 6)])
def test_key_of_a_chord_over_its_scale(tonic, mode, expected):
    assert F.clip_features(chord(tonic, mode, 3.0), CFG).key == (expected, mode)


def test_key_estimate_of_a_profile_is_the_profile_key():
    assert F.estimate_key(np.roll(F.KK_MINOR, 4)) == (4, "minor")
    assert F.estimate_key(np.zeros(12)) is None


def test_feature_shapes_and_loudness_normalisation():
    audio = chord("D", "major", 2.0) * 0.05
    f = F.clip_features(audio, CFG)
    assert f.logmel.shape[1] == 64 and f.mfcc.shape == (f.logmel.shape[0], 2 * CFG.n_mfcc)
    assert f.chroma.shape[1] == 12 and f.mean_logmel.shape == (64,)
    normalised, gain = F.normalise_loudness(audio, RATE, -23.0)
    assert F.integrated_loudness(normalised, RATE) == pytest.approx(-23.0, abs=0.05)
    assert f.gain_db == pytest.approx(gain)
    assert F.normalise_loudness(np.zeros(RATE), RATE, -23.0)[1] == 0.0  # silence is not amplified


def test_health_of_a_sine_closed_forms():
    t = np.arange(3 * RATE) / RATE
    sine = 0.1 * np.sin(2 * np.pi * 997 * t)  # -20 dBFS peak: BS.1770 gives -3.01 - 20 = -23.0 LUFS
    health = F.clip_health(sine, RATE, CFG)
    assert health["loudness_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert health["peak_dbfs"] == pytest.approx(-20.0, abs=0.01)
    assert health["bandwidth_hz"] == pytest.approx(997, abs=2 * RATE / F.BANDWIDTH_FFT)
    assert (health["clipping_ratio"], health["silence_ratio"], health["nonfinite_samples"]) == (0.0, 0.0, 0)
    assert health["duration_s"] == 3.0


def test_health_flags_silence_clipping_and_non_finite_samples():
    silent = F.clip_health(np.zeros(RATE), RATE, CFG)
    assert silent["silence_ratio"] == 1.0 and silent["loudness_lufs"] is None and silent["peak_dbfs"] is None
    square = np.sign(np.sin(2 * np.pi * 100 * np.arange(RATE) / RATE))
    assert F.clip_health(square, RATE, CFG)["clipping_ratio"] > 0.9
    broken = np.full(RATE, 0.1)
    broken[:10] = np.nan
    assert F.clip_health(broken, RATE, CFG)["nonfinite_samples"] == 10


def test_repetition_tells_a_loop_from_noise():
    rng = np.random.default_rng(0)
    bar = rng.standard_normal(RATE) * np.repeat(rng.uniform(0.05, 1.0, 8), RATE // 8)  # 1 s of shaped noise
    loop = np.tile(bar, 6) * 0.3
    noise = rng.standard_normal(6 * RATE) * 0.3
    assert F.clip_features(loop, CFG).repetition > 0.8
    assert F.clip_features(noise, CFG).repetition < 0.3
    assert F.clip_features(np.zeros(6 * RATE), CFG).repetition == 1.0  # static
    assert F.clip_features(np.zeros(RATE), CFG).repetition is None  # too short for a 1 s lag
