"""segment: cut the kept tracks of one shard into fixed-length mono clips at the codec rate.

Per track: decode (mp3, ogg/opus, flac, wav...), optionally remove vocals with Demucs (on the whole track, at the
model's rate), downmix to mono, resample with soxr to `sample_rate`, then cut clips of `clip_seconds` every
`hop_seconds`. The last, shorter piece follows `tail`: `drop` it, `pad` it with zeros to a full clip, or `keep` it
shorter; with `pad`/`keep` it must hold at least `min_tail_seconds` of audio. Clips holding NaN or infinite samples
(`non_finite`) and clips quieter than `silence_db` (RMS dBFS, `silent`) are dropped. Every dropped piece gets a row
in dropped.tsv; clip ids count dropped pieces too, so an id never changes meaning when a threshold moves.

Output (docs/ARTIFACTS.md): clips/<clip_id>.wav or .flac (`audio_format`; 16-bit PCM either way), clips.jsonl,
dropped.tsv, provenance.json, written through `atomic_dir` so an interrupted run leaves no folder that looks complete.
FLAC is lossless: a reader gets the same 16-bit samples from either file, in ~57% of the disk on music (the
paper corpus is ~1.2 TB of 30 s WAV clips). Readers find each clip by its `audio_path`, never by its suffix.
"""

from __future__ import annotations

import argparse
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ssmttm import stand_ins
from ssmttm.artifacts import (
    atomic_dir,
    atomic_path,
    read_jsonl,
    remove_stale_temporaries_in,
    sha256_file,
    write_jsonl,
    write_provenance,
)
from ssmttm.audio import load_audio, resample, rms_db, to_mono, write_wav
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.corpus.licences import normalise_licence
from ssmttm.corpus.vocals import VocalRemovalConfig
from ssmttm.errors import UserFacingError
from ssmttm.progress import progress

log = logging.getLogger(__name__)

TAILS = ("drop", "pad", "keep")
CLIP_FORMATS = ("wav", "flac")  # `segment.audio_format`: both hold 16-bit PCM, and FLAC is lossless
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class SegmentConfig:
    sample_rate: int = 44100
    clip_seconds: float = 10.0
    hop_seconds: float = 10.0
    tail: str = "drop"  # drop | pad | keep
    min_tail_seconds: float = 5.0
    silence_db: float = -50.0
    max_clips_per_track: int | None = None
    vocal_removal: VocalRemovalConfig = field(default_factory=VocalRemovalConfig)
    audio_format: str = "wav"  # wav | flac: how clips are stored (flac: lossless, ~57% of the WAV size on music)

    def __post_init__(self) -> None:
        if self.tail not in TAILS:
            raise UserFacingError(f"segment.tail = {self.tail!r}; must be one of {', '.join(TAILS)}")
        if self.audio_format not in CLIP_FORMATS:
            raise UserFacingError(
                f"segment.audio_format = {self.audio_format!r}; must be one of {', '.join(CLIP_FORMATS)}"
            )
        if self.clip_seconds <= 0 or self.hop_seconds <= 0:
            raise UserFacingError("segment.clip_seconds and segment.hop_seconds must be > 0")


# A separator maps (C, N) audio at some rate to (N',) mono audio at its own `sample_rate` (see vocals.VocalRemover).
Separator = Callable[[np.ndarray, int], np.ndarray]
Dropped = tuple[str, str, str]  # (clip_id, reason, detail): one row of dropped.tsv


@dataclass(frozen=True)
class Piece:
    """One candidate clip of a track, in samples at the segment rate."""

    index: int  # k in the clip id
    start: int
    length: int  # real audio samples (< clip length only for the tail)
    is_tail: bool


def plan_pieces(n_samples: int, clip_len: int, hop_len: int) -> list[Piece]:
    """Every full clip that fits, then at most one shorter tail piece: the next window, when it runs past the end
    and holds audio that no full clip covers (with overlapping hops the end may already be covered)."""
    pieces: list[Piece] = []
    start = 0
    while start + clip_len <= n_samples:
        pieces.append(Piece(len(pieces), start, clip_len, is_tail=False))
        start += hop_len
    covered = pieces[-1].start + clip_len if pieces else 0
    if start < n_samples and covered < n_samples:
        pieces.append(Piece(len(pieces), start, n_samples - start, is_tail=True))
    return pieces


def _read_kept(selected_dir: Path) -> list[dict[str, Any]]:
    kept = selected_dir / "kept.jsonl"
    if not kept.is_file():
        raise UserFacingError(f"{kept}: not found; run `ssmttm select` for this shard first")
    rows = read_jsonl(kept)
    for row in rows:
        track_id = str(row.get("id", ""))
        if not SAFE_ID.match(track_id) or ".." in track_id:
            raise UserFacingError(f"{kept}: track id {track_id!r} is not a safe file name ([A-Za-z0-9._-]+, no '..')")
        if not row.get("audio_path"):
            raise UserFacingError(f"{kept}: track {track_id} has no audio_path")
        if not isinstance(row.get("licence"), str) or normalise_licence(row["licence"]) != row["licence"]:
            # select writes only allowed, normalised licence ids: anything else did not come through select
            raise UserFacingError(
                f"{kept}: track {track_id} has licence {row.get('licence')!r}, not a licence id that select keeps; "
                "rebuild kept.jsonl with `ssmttm select`"
            )
    return sorted(rows, key=lambda r: r["id"])


def _crop_excerpt(samples: np.ndarray, rate: int, row: dict[str, Any]) -> np.ndarray:
    """Keep [start_s, end_s) when the manifest gave an excerpt (MusicCaps) and the file still holds the whole
    recording; a file already cut to the excerpt is shorter than end_s and is left as it is."""
    start_s, end_s = row.get("start_s"), row.get("end_s")
    if start_s is None or end_s is None or samples.shape[-1] < round(float(end_s) * rate):
        return samples
    return samples[..., round(float(start_s) * rate) : round(float(end_s) * rate)]


def load_track(
    path: str | Path, cfg: SegmentConfig, separator: Separator | None = None, row: dict[str, Any] | None = None
) -> np.ndarray:
    """Decode one track to (N,) float32 mono at cfg.sample_rate, vocals removed when a separator is given."""
    samples, rate = load_audio(path)  # (C, N)
    samples = _crop_excerpt(samples, rate, row or {})
    if separator is not None:
        mono = separator(samples, rate)  # (N',) at the separator's rate
        return resample(mono[None], separator.sample_rate, cfg.sample_rate)[0]
    return resample(to_mono(samples), rate, cfg.sample_rate)[0]


def wav_samples(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,) float -> (N,) int16: exactly the samples a 16-bit WAV clip of `samples` holds (libsndfile's own float
    conversion, clipped to full scale). FLAC clips store these, because libsndfile quantises floats differently for
    FLAC: a clip's samples must not depend on segment.audio_format."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    buffer.seek(0)
    return sf.read(buffer, dtype="int16")[0]


def write_clip(path: Path, samples: np.ndarray, sample_rate: int, audio_format: str) -> None:
    """Write (N,) float audio atomically as a 16-bit clip in `audio_format`: the same samples as wav or as flac."""
    if audio_format == "wav":
        write_wav(path, samples, sample_rate)  # 16-bit PCM, the bytes the demo's clips always had
        return
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wav_samples(samples, sample_rate), sample_rate, subtype="PCM_16", format="FLAC")


def _display_path(path: Path) -> str:
    """Paths stored in artifacts are relative to the repository root (the working directory) when possible."""
    if path.is_absolute():
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def segment_track(
    samples: np.ndarray,
    row: dict[str, Any],
    cfg: SegmentConfig,
    clips_dir: Path,
    final_clips_dir: Path,
    vocals_removed: bool,
) -> tuple[list[dict[str, Any]], list[Dropped]]:
    """Cut one track's (N,) samples; write kept clips into `clips_dir`. Returns (clip rows, dropped rows)."""
    rate = cfg.sample_rate
    clip_len = max(1, round(cfg.clip_seconds * rate))
    hop_len = max(1, round(cfg.hop_seconds * rate))
    min_tail = round(cfg.min_tail_seconds * rate)
    track_id = row["id"]
    clips: list[dict[str, Any]] = []
    dropped: list[Dropped] = []
    for piece in plan_pieces(samples.shape[0], clip_len, hop_len):
        clip_id = f"{track_id}-{piece.index:04d}"
        seconds = piece.length / rate
        if piece.is_tail and cfg.tail == "drop":
            dropped.append((clip_id, "short_tail", f"{seconds:.3f} s (tail=drop)"))
            continue
        if piece.is_tail and piece.length < min_tail:
            dropped.append((clip_id, "short_tail", f"{seconds:.3f} s < min_tail_seconds {cfg.min_tail_seconds}"))
            continue
        if cfg.max_clips_per_track is not None and len(clips) >= cfg.max_clips_per_track:
            dropped.append((clip_id, "max_clips", f"max_clips_per_track={cfg.max_clips_per_track}"))
            continue
        audio = samples[piece.start : piece.start + piece.length]  # (n,)
        non_finite = int(audio.size - np.count_nonzero(np.isfinite(audio)))
        if non_finite:
            dropped.append((clip_id, "non_finite", f"{non_finite} NaN or infinite samples"))
            continue
        level = rms_db(audio)
        if level < cfg.silence_db:
            dropped.append((clip_id, "silent", f"rms {level:.1f} dBFS < silence_db {cfg.silence_db}"))
            continue
        if piece.is_tail and cfg.tail == "pad":
            audio = np.pad(audio, (0, clip_len - piece.length))  # (clip_len,), zeros after the real audio
        file_name = f"{clip_id}.{cfg.audio_format}"
        write_clip(clips_dir / file_name, audio, rate, cfg.audio_format)
        clips.append(
            {
                "clip_id": clip_id,
                "track_id": track_id,
                "audio_path": _display_path(final_clips_dir / file_name),
                "start_s": round(piece.start / rate, 6),
                "duration_s": round(seconds, 6),
                "num_samples": int(audio.shape[0]),
                "sample_rate": rate,
                "licence": row.get("licence"),
                "tags": row.get("tags") or {},
                "vocals_removed": vocals_removed,
            }
        )
    return clips, dropped


def segment_shard(
    selected_dir: str | Path, cfg: SegmentConfig, out_dir: str | Path, seed: int = 0, separator: Separator | None = None
) -> Path:
    """Segment every track of `selected_dir/kept.jsonl` into `out_dir`; returns `out_dir`.

    `separator` replaces the pretrained Demucs model when vocal removal is enabled (tests inject a small one).
    """
    selected_dir, out_dir = Path(selected_dir), Path(out_dir)
    remove_stale_temporaries_in(out_dir.parent)  # what killed runs left (kill -9 skips every clean-up)
    rows = _read_kept(selected_dir)
    removal = cfg.vocal_removal.enabled
    if separator is not None and not removal:
        raise ValueError("a separator was given but segment.vocal_removal.enabled is false")
    if removal and separator is None and rows:
        from ssmttm.corpus.vocals import load_vocal_remover

        separator = load_vocal_remover(cfg.vocal_removal, seed=seed)
    all_clips: list[dict[str, Any]] = []
    all_dropped: list[Dropped] = []
    with atomic_dir(out_dir) as tmp:
        clips_dir = tmp / "clips"
        clips_dir.mkdir()
        for row in progress(rows, f"segment {selected_dir.name}", "track"):
            samples = load_track(row["audio_path"], cfg, separator if removal else None, row)
            clips, dropped = segment_track(samples, row, cfg, clips_dir, out_dir / "clips", removal)
            all_clips += clips
            all_dropped += dropped
        all_clips.sort(key=lambda r: r["clip_id"])
        write_jsonl(tmp / "clips.jsonl", all_clips)
        with atomic_path(tmp / "dropped.tsv") as path:
            lines = ["clip_id\treason\tdetail"] + ["\t".join(_clean(v) for v in r) for r in sorted(all_dropped)]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_provenance(
            tmp,
            "segment",
            dataclass_to_dict(cfg),
            seed,
            inputs={"kept.jsonl": sha256_file(selected_dir / "kept.jsonl")},
            counts={"tracks": len(rows), "clips": len(all_clips), "dropped": len(all_dropped)},
            vocal_removal=separator.describe() if removal and hasattr(separator, "describe") else None,
            **stand_ins.provenance_fields(
                {f"segment.vocal_removal (demucs {cfg.vocal_removal.model})": getattr(separator, "stand_in", None)}
            ),
        )
    log.info("%s: %d tracks -> %d clips (%d dropped)", out_dir, len(rows), len(all_clips), len(all_dropped))
    return out_dir


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--selected", required=True, help="select output folder of one shard (has kept.jsonl)")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/segment/shard-00003")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = section_to_dataclass(SegmentConfig, params.get("segment"))
    segment_shard(args.selected, cfg, args.out, seed=int(params.get("seed", 0)))
    return 0
