"""Audio decoding, downmix, resampling and writing, shared by select, segment, codec and tokenize.

Decoding tries libsndfile first (wav, flac, ogg/vorbis, opus, mp3 in recent builds) and falls back to the ffmpeg
binary shipped by `imageio-ffmpeg`. Arrays are float32, shaped (channels, samples).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ssmttm.artifacts import atomic_path
from ssmttm.errors import UserFacingError


class AudioDecodeError(UserFacingError):
    """A file could not be decoded by libsndfile nor by ffmpeg."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    duration_s: float


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _decode_with_ffmpeg(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """Decode to float32 interleaved PCM through ffmpeg; keeps the channel count."""
    channels = _ffmpeg_channels(path)
    rate = sample_rate or _ffmpeg_rate(path)
    cmd = [
        _ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-f",
        "f32le",
        "-acodec",
        "pcm_f32le",
        "-ac",
        str(channels),
        "-ar",
        str(rate),
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise AudioDecodeError(f"{path}: cannot decode audio ({proc.stderr.decode(errors='replace').strip()[:200]})")
    samples = np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, channels).T  # (C, N)
    return np.ascontiguousarray(samples), rate


def _ffmpeg_probe(path: Path) -> str:
    proc = subprocess.run([_ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)], capture_output=True)
    return proc.stderr.decode("utf-8", errors="replace")  # tags in other encodings must not stop the probe


# One metadata line of ffmpeg's report: the key padded to 16 columns, ": ", the value ("  : value" continues one).
_METADATA_LINE = re.compile(r"(.*?)\s*:(?: (.*))?")


def ffmpeg_metadata(path: str | Path) -> list[tuple[str, str]] | None:
    """Every metadata entry ffmpeg reads from a file (container, streams, chapters), as (key, value) pairs.

    ffmpeg picks the container by content and reads tag formats mutagen does not (RIFF INFO, APEv2 on MP3,
    Matroska tags). None when ffmpeg finds no audio stream. Values spread over several lines are joined with "\n".
    """
    text = _ffmpeg_probe(Path(path))
    if "Audio:" not in text:
        return None
    pairs: list[tuple[str, str]] = []
    block_indent: int | None = None  # indent of the current "Metadata:" line; entries are indented further
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() == "Metadata:":
            block_indent = indent
            continue
        entry = _METADATA_LINE.match(line.strip())
        if block_indent is None or indent <= block_indent or entry is None:
            block_indent = None
            continue
        key, value = entry.group(1), entry.group(2) or ""
        if key:
            pairs.append((key, value))
        elif pairs:  # a continuation line ("   : more text") of a multi-line value
            pairs[-1] = (pairs[-1][0], f"{pairs[-1][1]}\n{value}")
    return pairs


def _ffmpeg_channels(path: Path) -> int:
    text = _ffmpeg_probe(path)
    if "Audio:" not in text:
        raise AudioDecodeError(f"{path}: no audio stream found")
    line = text.split("Audio:", 1)[1].split("\n", 1)[0]
    if "mono" in line:
        return 1
    return 2


def _ffmpeg_rate(path: Path) -> int:
    line = _ffmpeg_probe(path).split("Audio:", 1)[1].split("\n", 1)[0]
    for part in line.split(","):
        if part.strip().endswith("Hz"):
            return int(part.strip().split()[0])
    raise AudioDecodeError(f"{path}: cannot read the sample rate")


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (channels, samples) at its own sample rate."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"{path}: audio file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
        if data.size == 0:
            raise AudioDecodeError(f"{path}: file has no samples")
        return np.ascontiguousarray(data.T), int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return _decode_with_ffmpeg(path, None)


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channels and duration without decoding the whole file when libsndfile can read the header."""
    path = Path(path)
    try:
        info = sf.info(str(path))
        if info.frames > 0:
            return AudioInfo(int(info.samplerate), int(info.channels), info.frames / info.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    samples, rate = load_audio(path)
    return AudioInfo(rate, samples.shape[0], samples.shape[1] / rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(C, N) -> (1, N) by averaging channels."""
    return samples.mean(axis=0, keepdims=True).astype(np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """soxr high-quality resampling of (C, N) audio; deterministic."""
    if from_rate == to_rate:
        return samples
    out = soxr.resample(samples.T, from_rate, to_rate, quality="HQ")  # (N', C)
    return np.ascontiguousarray(out.T.astype(np.float32))


def load_mono(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode, downmix and resample: (N,) float32 at `sample_rate`."""
    samples, rate = load_audio(path)
    return resample(to_mono(samples), rate, sample_rate)[0]


def rms_db(samples: np.ndarray) -> float:
    """RMS level in dBFS (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write (N,) or (C, N) float audio atomically as WAV (16-bit by default: deterministic bytes)."""
    data = samples.T if samples.ndim == 2 else samples
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(data, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")
