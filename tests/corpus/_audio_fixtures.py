"""Small audio files for the segment/caption/audio tests: soundfile for wav/flac/ogg, ffmpeg for mp3/opus/aac."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SOUNDFILE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
FFMPEG_CODECS = {
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    ".opus": ["-c:a", "libopus", "-b:a", "96k"],
    ".m4a": ["-c:a", "aac", "-b:a", "128k"],
}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def tone(freq: float, seconds: float, rate: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """(C, N) float32 sine; channel c has frequency freq * (c + 1) so a downmix is not a copy of one channel."""
    t = np.arange(round(seconds * rate)) / rate
    return np.stack([amp * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write (C, N) audio in the format named by the suffix (soundfile, or a wav piped through ffmpeg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in SOUNDFILE_FORMATS:
        fmt, subtype = SOUNDFILE_FORMATS[suffix]
        sf.write(str(path), samples.T, rate, format=fmt, subtype=subtype)
        return path
    wav = path.with_suffix(".src.wav")
    sf.write(str(wav), samples.T, rate, subtype="FLOAT")
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(wav), *FFMPEG_CODECS[suffix], str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    wav.unlink()
    return path


def dominant_freq(x: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the largest FFT bin of a (N,) signal."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return float(np.argmax(spectrum) * rate / x.shape[0])


def write_kept(selected_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """A select-stage kept.jsonl with the fields segment reads (sorted keys, like the real one)."""
    selected_dir.mkdir(parents=True, exist_ok=True)
    path = selected_dir / "kept.jsonl"
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path


def kept_row(track_id: str, audio_path: Path, tags: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    info = sf.info(str(audio_path)) if audio_path.suffix in SOUNDFILE_FORMATS else None
    return {
        "id": track_id,
        "audio_path": str(audio_path),
        "licence": "CC-BY-4.0",
        "licence_sources": {},
        "tags": tags or {},
        "source": "demo",
        "sha256": "0" * 64,
        "bytes": audio_path.stat().st_size,
        "duration_s": info.duration if info else None,
        "sample_rate": info.samplerate if info else None,
        "channels": info.channels if info else None,
        **extra,
    }


TINY_HTDEMUCS_KWARGS = {
    "sources": ["drums", "bass", "other", "vocals"],
    "audio_channels": 2,
    "samplerate": 44100,
    "segment": 1,
    "channels": 4,
    "depth": 3,
    "nfft": 256,
    "t_layers": 1,
    "t_heads": 2,
    "dconv_comp": 2,
    "t_hidden_scale": 1.0,
    "norm_starts": 10,
}


def tiny_htdemucs(seed: int = 0):
    """A randomly initialised HTDemucs with tiny channels/depth (20k parameters, 1 s training segment).

    For plumbing tests only: its stems are noise-like, not a separation.
    """
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    return HTDemucs(**TINY_HTDEMUCS_KWARGS).eval()
