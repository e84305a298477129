"""ssmttm.audio: decoding of every corpus format, downmix, soxr resampling, levels and deterministic WAV writing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ssmttm import audio
from tests.corpus._audio_fixtures import dominant_freq, tone, write_audio

RATE = 44100


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_lossless_formats_round_trip(tmp_path, suffix):
    src = tone(440, 0.5, RATE, channels=2)
    path = write_audio(tmp_path / f"x{suffix}", src, RATE)
    samples, rate = audio.load_audio(path)
    assert rate == RATE
    assert samples.dtype == np.float32 and samples.shape == src.shape  # (C, N)
    np.testing.assert_allclose(samples, src, atol=1.5 / 32768)  # 16-bit quantisation only


@pytest.mark.parametrize(
    ("suffix", "rate", "channels"),
    [
        (".ogg", 44100, 2),  # vorbis via soundfile
        (".mp3", 44100, 2),  # libmp3lame via ffmpeg, decoded by libsndfile
        (".opus", 48000, 1),  # libopus via ffmpeg (opus always decodes at 48 kHz)
        (".m4a", 44100, 2),  # AAC: libsndfile cannot read it, so this exercises the ffmpeg fallback
    ],
)
def test_lossy_formats_decode_to_the_right_tone(tmp_path, suffix, rate, channels):
    seconds = 1.0
    path = write_audio(tmp_path / f"x{suffix}", tone(440, seconds, rate, channels=channels), rate)
    samples, got_rate = audio.load_audio(path)
    assert got_rate == rate
    assert samples.shape[0] == channels
    assert samples.dtype == np.float32
    # Encoders add priming/padding samples: allow a few codec frames.
    assert abs(samples.shape[1] / rate - seconds) < 0.1
    middle = samples[0, rate // 4 : 3 * rate // 4]
    assert abs(dominant_freq(middle, rate) - 440) < 5
    if channels == 2:  # the right channel carries the octave: channels are not swapped or merged
        assert abs(dominant_freq(samples[1, rate // 4 : 3 * rate // 4], rate) - 880) < 5


def test_audio_info_reads_headers(tmp_path):
    path = write_audio(tmp_path / "x.flac", tone(440, 0.75, 22050, channels=2), 22050)
    info = audio.audio_info(path)
    assert (info.sample_rate, info.channels) == (22050, 2)
    assert info.duration_s == pytest.approx(0.75, abs=1e-4)
    info = audio.audio_info(write_audio(tmp_path / "y.m4a", tone(440, 0.5, 44100), 44100))
    assert info.sample_rate == 44100 and info.channels == 1
    assert info.duration_s == pytest.approx(0.5, abs=0.1)


def test_missing_and_garbage_files_raise_a_user_facing_error(tmp_path):
    with pytest.raises(audio.AudioDecodeError, match="not found"):
        audio.load_audio(tmp_path / "nope.mp3")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio" * 100)
    with pytest.raises(audio.AudioDecodeError, match="junk.mp3"):
        audio.load_audio(junk)


def test_to_mono_averages_channels():
    left = tone(300, 0.1, 8000)[0]
    stereo = np.stack([left, -left])  # (2, N): opposite phase cancels
    np.testing.assert_allclose(audio.to_mono(stereo), np.zeros((1, left.size)), atol=1e-7)
    stereo = np.stack([left, np.full_like(left, 0.25)])
    mono = audio.to_mono(stereo)
    assert mono.shape == (1, left.size) and mono.dtype == np.float32
    np.testing.assert_allclose(mono[0], (left + 0.25) / 2, atol=1e-7)


@pytest.mark.parametrize(("from_rate", "to_rate"), [(48000, 44100), (44100, 16000), (22050, 44100)])
def test_soxr_resampling_keeps_pitch_and_length(from_rate, to_rate):
    src = tone(440, 1.0, from_rate, channels=2)
    out = audio.resample(src, from_rate, to_rate)
    assert out.dtype == np.float32 and out.shape[0] == 2
    assert abs(out.shape[1] - round(src.shape[1] * to_rate / from_rate)) <= 1
    assert abs(dominant_freq(out[0], to_rate) - 440) < 2
    assert abs(dominant_freq(out[1], to_rate) - 880) < 2
    np.testing.assert_array_equal(out, audio.resample(src, from_rate, to_rate))  # deterministic
    mid = slice(to_rate // 4, 3 * to_rate // 4)  # away from the filter's edge transients
    expected = tone(440, 1.0, to_rate, channels=2)[:, mid]
    np.testing.assert_allclose(out[:, mid], expected, atol=2e-3)


def test_resample_same_rate_is_identity():
    src = tone(440, 0.1, 16000)
    assert audio.resample(src, 16000, 16000) is src


def test_load_mono_downmixes_and_resamples(tmp_path):
    path = write_audio(tmp_path / "x.opus", tone(440, 1.0, 48000, channels=2), 48000)
    mono = audio.load_mono(path, 16000)
    assert mono.ndim == 1 and mono.dtype == np.float32
    assert abs(mono.shape[0] - 16000) < 1600
    peaks = np.abs(np.fft.rfft(mono[4000:12000]))
    bins = np.fft.rfftfreq(8000, 1 / 16000)
    strongest = set(np.round(bins[np.argsort(peaks)[-2:]] / 10) * 10)
    assert strongest == {440.0, 880.0}  # both channels survive the downmix


def test_rms_db():
    assert audio.rms_db(np.ones(100, dtype=np.float32)) == pytest.approx(0.0)
    assert audio.rms_db(tone(100, 1.0, 8000, amp=1.0)[0]) == pytest.approx(-3.0103, abs=1e-3)
    assert audio.rms_db(np.zeros(10)) == float("-inf")
    assert audio.rms_db(np.zeros(0)) == float("-inf")


def test_write_wav_is_16_bit_clipped_deterministic_and_atomic(tmp_path):
    samples = np.concatenate([tone(440, 0.2, 16000)[0], np.full(10, 1.7, dtype=np.float32)])
    first, second = tmp_path / "a.wav", tmp_path / "b.wav"
    audio.write_wav(first, samples, 16000)
    audio.write_wav(second, samples, 16000)
    assert first.read_bytes() == second.read_bytes()
    info = sf.info(str(first))
    assert (info.subtype, info.samplerate, info.channels, info.frames) == ("PCM_16", 16000, 1, samples.size)
    back, _ = sf.read(str(first), dtype="float32")
    assert back[-1] == pytest.approx(32767 / 32768)  # clipped to full scale, not wrapped around
    np.testing.assert_allclose(back[:-10], samples[:-10], atol=1 / 32768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]  # no temporary names left


def test_write_wav_multichannel(tmp_path):
    src = tone(440, 0.1, 16000, channels=2)  # (C, N)
    audio.write_wav(tmp_path / "s.wav", src, 16000)
    back, rate = audio.load_audio(tmp_path / "s.wav")
    assert rate == 16000 and back.shape == src.shape
