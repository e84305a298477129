"""How much audio the profile makes, and how many bytes each data stage writes (check 3 and the plan's storage).

Every figure is an estimate and says what it rests on. Selection (licences, decodability) can only shrink the
corpus, so the clip counts are upper bounds; parquet's zstd barely compresses codes and float16 latents, so token
shards are counted uncompressed.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from typing import Any

from ssmttm.preflight.context import Context
from ssmttm.preflight.inputs import MTG_ARCHIVES, archive_indices
from ssmttm.preflight.network import sample_rows

MTG_TRACKS = 55_701  # raw_30s_cleantags.tsv (PAPER.md section 1)
MTG_MP3_BYTES = 508e9  # the 100 raw_30s TARs (PAPER.md section 1)
MP3_BITS_PER_S = 320_000  # MTG-Jamendo's 320 kbps MP3
MTG_TAR_BYTES = MTG_MP3_BYTES / MTG_ARCHIVES  # one archive in flight per fetch job
ASSUMED_TRACK_S = 240.0  # a remote track without start_s/end_s (assumption)
PCM16_BYTES = 2
FLAC_RATIO = 0.6  # FLAC size / 16-bit PCM size for music: an estimate, not a measurement
CAPTION_ROW_BYTES = 400  # caption text and ids per clip (jsonl, parquet columns)
# descript-audio-codec 44 kHz (PAPER.md section 2): sample rate, hop, codebooks, codebook dim.
DAC_LAYOUTS = {"44khz": (44100, 512, 9, 8)}
SIZE_SAMPLE = 400  # local files whose duration is read (more rows are scaled from this sample)


@dataclass(frozen=True)
class TrackGroup:
    count: float  # tracks with this duration (fractional after scaling)
    seconds: float
    bytes_each: float


@dataclass(frozen=True)
class Corpus:
    groups: list[TrackGroup]
    basis: str

    @property
    def tracks(self) -> float:
        return sum(g.count for g in self.groups)

    @property
    def source_bytes(self) -> float:
        return sum(g.count * g.bytes_each for g in self.groups)


@dataclass(frozen=True)
class CodecLayout:
    sample_rate: int
    hop: int
    n_codebooks: int
    codebook_dim: int
    basis: str


def corpus(ctx: Context) -> Corpus:
    if ctx.get("corpus.source", "demo") == "mtg_jamendo":
        return mtg_corpus(ctx)
    rows = ctx.corpus_rows
    if not isinstance(rows, list) or not rows:
        return Corpus([], "no readable manifest rows (see the inputs check): counted as empty")
    return rows_corpus(ctx, rows)


def mtg_corpus(ctx: Context) -> Corpus:
    indices = archive_indices(ctx)
    tracks = MTG_TRACKS * len(indices) / MTG_ARCHIVES  # archives hold about equal numbers of tracks
    max_tracks = ctx.get("corpus.max_tracks")
    if max_tracks is not None:
        tracks = min(tracks, max_tracks)
    seconds = MTG_MP3_BYTES * 8 / MP3_BITS_PER_S / MTG_TRACKS  # about 228 s a track
    basis = (
        f"{tracks:,.0f} MTG-Jamendo tracks ({len(indices)} of {MTG_ARCHIVES} archives), {seconds:.0f} s each on "
        f"average (508 GB of {MP3_BITS_PER_S // 1000} kbps MP3 for {MTG_TRACKS:,} tracks)"
    )
    return Corpus([TrackGroup(tracks, seconds, MTG_MP3_BYTES / MTG_TRACKS)], basis)


def rows_corpus(ctx: Context, rows: list[dict[str, Any]]) -> Corpus:
    """Durations and sizes of manifest rows: local files are measured, remote ones assumed (320 kbps)."""
    max_tracks = ctx.get("corpus.max_tracks")
    total = min(len(rows), max_tracks) if max_tracks is not None else len(rows)
    sampled = sample_rows(sorted(rows, key=lambda r: r["id"])[:total], SIZE_SAMPLE)
    scale = total / len(sampled) if sampled else 0.0
    groups = [TrackGroup(scale, *row_duration_and_bytes(ctx, row)) for row in sampled]
    assumed = sum(1 for row in sampled if row.get("end_s") is None and not _is_local(row["url"]))
    basis = f"{total:,} tracks of the {ctx.get('corpus.source')} manifest"
    basis += f", durations of {len(sampled)} read" if len(sampled) < total else ", durations read"
    if assumed:
        basis += f" ({assumed} remote without start_s/end_s assumed {ASSUMED_TRACK_S:.0f} s at 320 kbps)"
    return Corpus(groups, basis)


def _is_local(url: str) -> bool:
    from ssmttm.corpus.urls import is_local

    return is_local(url)


def row_duration_and_bytes(ctx: Context, row: dict[str, Any]) -> tuple[float, float]:
    window = None
    if row.get("start_s") is not None and row.get("end_s") is not None:
        window = float(row["end_s"]) - float(row["start_s"])
    if _is_local(row["url"]):
        import soundfile as sf

        from ssmttm.corpus.urls import local_path

        path = local_path(row["url"], ctx.root)
        try:
            seconds = sf.info(str(path)).duration
            size = float(path.stat().st_size)
        except (OSError, RuntimeError):  # missing or undecodable: the network/select checks report it
            return 0.0, 0.0
        return (min(seconds, window) if window else seconds), size
    seconds = window if window is not None else ASSUMED_TRACK_S
    return seconds, seconds * MP3_BITS_PER_S / 8


# ----------------------------------------------------------------------------------------------- clips


def clips_per_track(ctx: Context, seconds: float) -> int:
    """Clips the segment stage cuts from a track of `seconds` (select's duration limits applied first)."""
    if not ctx.get("select.min_duration_s", 0) <= seconds <= ctx.get("select.max_duration_s", math.inf):
        return 0
    clip, hop = float(ctx.get("segment.clip_seconds", 10)), float(ctx.get("segment.hop_seconds", 10))
    keeps_tail = ctx.get("segment.tail", "drop") != "drop"
    min_tail = float(ctx.get("segment.min_tail_seconds", 5))
    full = 0 if seconds < clip else int((seconds - clip) // hop) + 1
    tail = seconds - full * hop
    n = full + (1 if keeps_tail and tail >= min_tail else 0)
    cap = ctx.get("segment.max_clips_per_track")
    return min(n, cap) if cap is not None else n


def clip_count(ctx: Context, data: Corpus) -> float:
    return sum(g.count * clips_per_track(ctx, g.seconds) for g in data.groups)


def segment_format(ctx: Context) -> tuple[float, str]:
    """Bytes per sample of a clip file and how that was decided (segment.audio_format, default wav)."""
    fmt = ctx.get("segment.audio_format", "wav")
    if fmt == "flac":
        return PCM16_BYTES * FLAC_RATIO, f"FLAC at about {FLAC_RATIO} of 16-bit PCM (an estimate for music)"
    return float(PCM16_BYTES), "16-bit PCM WAV"


def segment_bytes(ctx: Context, clips: float) -> tuple[float, str]:
    per_sample, fmt = segment_format(ctx)
    rate, seconds = int(ctx.get("segment.sample_rate", 44100)), float(ctx.get("segment.clip_seconds", 10))
    basis = f"{clips:,.0f} clips x {seconds:g} s x {rate} Hz mono, {fmt}; at most (select drops tracks)"
    return clips * seconds * rate * per_sample, basis


# ----------------------------------------------------------------------------------------------- tokens


def codec_layout(ctx: Context) -> CodecLayout:
    if ctx.get("codec.mode", "train") == "pretrained":
        model_type = ctx.get("codec.pretrained.model_type", "44khz")
        rate, hop, k, d = DAC_LAYOUTS.get(model_type, DAC_LAYOUTS["44khz"])
        known = model_type in DAC_LAYOUTS
        basis = f"DAC {model_type}: {k} codebooks x {d} dims, hop {hop}" + ("" if known else " (assumed 44khz layout)")
        return CodecLayout(rate, hop, k, d, basis)
    train = ctx.section("codec").get("train") or {}
    hop = math.prod(train.get("encoder_rates") or [2, 4, 8, 8])
    k, d = int(train.get("n_codebooks", 9)), int(train.get("codebook_dim", 8))
    rate = int(ctx.get("segment.sample_rate", 44100))
    return CodecLayout(rate, hop, k, d, f"trained codec: {k} codebooks x {d} dims, hop {hop} at {rate} Hz")


def frames_per_clip(ctx: Context, layout: CodecLayout) -> int:
    return math.ceil(float(ctx.get("segment.clip_seconds", 10)) * layout.sample_rate / layout.hop)


def token_bytes(ctx: Context, clips: float, layout: CodecLayout) -> tuple[float, str]:
    frames = frames_per_clip(ctx, layout)
    per_clip = layout.n_codebooks * frames * 2  # int16 codes
    latents = bool(ctx.get("tokenize.store_latents", False))
    if latents:
        per_clip += layout.n_codebooks * layout.codebook_dim * frames * 2  # float16 latents
    basis = f"{clips:,.0f} clips x {frames} frames: int16 codes" + (" + float16 latents" if latents else "")
    return clips * (per_clip + CAPTION_ROW_BYTES), f"{basis} ({layout.basis}), uncompressed"


def text_cache_bytes(ctx: Context, clips: float, widths: dict[str, int]) -> tuple[float, str]:
    """One cache per distinct (encoder, max_length): `widths` maps each encoder name to its output width."""
    dtype = ctx.get("text.cache_dtype", "float32")
    dtype_bytes = 4 if dtype == "float32" else 2
    lm_cache = (ctx.get("text.encoder"), ctx.get("text.max_length", 128))
    refiner_cache = (ctx.get("refiner_text.encoder") or lm_cache[0], ctx.get("refiner_text.max_length") or lm_cache[1])
    caches = {lm_cache, refiner_cache}  # one folder when the refiner encodes like the LM
    total = sum(clips * length * widths.get(name, 768) * dtype_bytes for name, length in caches)
    names = ", ".join(f"{name} ({widths.get(name, 768)}-d, {length} tokens)" for name, length in sorted(caches))
    return total, f"one caption per clip, {dtype}; {names}; at most (only real tokens are stored)"


def caption_count(ctx: Context, clips: float) -> tuple[float, str]:
    """Evaluation captions generate writes audio for."""
    which = ctx.get("generate.captions", "test_split")
    if which == "test_split":
        n, basis = clips * float(ctx.get("tokenize.test_fraction", 0.1)), "test split of the clips"
    else:
        path = ctx.path(ctx.get("generate.captions_path") or "")
        n, basis = (count_caption_rows(path), f"rows of {path}") if path.is_file() else (0.0, f"{path} missing")
    cap = ctx.get("generate.max_captions")
    return (min(n, cap), basis + f", at most {cap}") if cap is not None else (n, basis)


def count_caption_rows(path) -> float:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return float(sum(1 for _ in csv.DictReader(handle)))
    return float(sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()))
