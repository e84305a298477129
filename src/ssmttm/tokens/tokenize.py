"""`ssmttm tokenize`: encode one shard of clips to DAC codes (and latents) in a Parquet shard; finalize the folder.

    ssmttm tokenize --params P --clips data/segment/shard-00003 --captions data/caption/shard-00003 \
        --codec data/codec --out data/tokenize/shard-00003.parquet
    ssmttm tokenize --params P --finalize data/tokenize          # writes data/tokenize/_manifest.json

Each clip's real audio (tail padding excluded) is encoded in consecutive windows of `encode_window_s` (the last one
zero-padded) and the codes concatenated: T = ceil(samples / hop) frames. DAC tokens depend on the window (DAC issue
39), so the window is part of the codec identity stored with the tokens. Splits are by track and seeded: a track's
clips all land in one split. A clip that cannot be encoded (unreadable, wrong rate, non-finite audio, no caption, an
encoder error) is listed in `shard-NNNNN.failures.tsv` and skipped; too many failures make the job fail. Reruns on
CPU give byte-identical shards.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from ssmttm import stand_ins
from ssmttm.artifacts import hash_params, provenance, read_jsonl, stable_unit_float
from ssmttm.codec import CodecHandle, load_codec, resolve_device
from ssmttm.codec.train import resolve_audio_path
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.tokens.shards import (
    CODEC_KEY,
    PARAMS_KEY,
    PROVENANCE_KEY,
    TokenRow,
    failures_path,
    finalize_manifest,
    write_failures,
    write_shard,
)

log = logging.getLogger(__name__)


@dataclass
class TokenizeConfig:
    encode_window_s: float = 10.0
    batch_size: int = 8
    device: str = "auto"
    store_latents: bool = True
    row_group_size: int = 16
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    max_failure_fraction: float = 0.05


@dataclass
class LoadedClip:
    row: dict[str, Any]
    caption: str
    audio: np.ndarray  # (N,) float32, real audio only


def assign_split(track_id: str, seed: int, valid_fraction: float, test_fraction: float) -> str:
    """train / valid / test from a seeded hash of the track id (all clips of a track share it)."""
    u = stable_unit_float(seed, "split", track_id)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def params_sha256(cfg: TokenizeConfig, seed: int) -> str:
    """Hash of what decides the tokens: the resolved tokenize section and the seed (splits)."""
    return hash_params({"seed": seed, "tokenize": dataclass_to_dict(cfg)})


def codec_metadata(codec: CodecHandle, cfg: TokenizeConfig) -> dict[str, Any]:
    """The codec identity as stored with the tokens: codec.json plus the encode window."""
    return {
        **codec.identity,
        "encode_window_s": cfg.encode_window_s,
        "encode_window_samples": codec.window_samples(cfg.encode_window_s),
        "frame_rate": codec.sample_rate / codec.hop_length,
    }


# ----------------------------------------------------------------------------------------------- reading clips


def load_clip(row: dict[str, Any], clips_dir: Path, sample_rate: int) -> np.ndarray:
    """The real audio of a clip as (N,) float32; raises ValueError with a short reason on a bad clip."""
    path = resolve_audio_path(row, clips_dir)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(f"unreadable: {path}: {exc}") from exc
    if rate != sample_rate:
        raise ValueError(f"sample_rate: {path} is {rate} Hz, the codec {sample_rate} Hz")
    real = min(data.shape[0], round(float(row["duration_s"]) * rate))
    audio = data[:real].mean(axis=1) if data.shape[1] > 1 else data[:real, 0]
    if audio.size == 0:
        raise ValueError(f"empty: {path} has no samples")
    if not np.isfinite(audio).all():
        raise ValueError(f"not_finite: {path} has NaN or infinite samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def read_inputs(clips_dir: Path, captions_dir: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    for table, verb in ((clips_dir / "clips.jsonl", "segment"), (captions_dir / "captions.jsonl", "caption")):
        if not table.is_file():
            raise UserFacingError(f"{table}: not found; run `ssmttm {verb}` for this shard first")
    clips = sorted(read_jsonl(clips_dir / "clips.jsonl"), key=lambda r: r["clip_id"])
    captions = {r["clip_id"]: r for r in read_jsonl(captions_dir / "captions.jsonl")}
    return clips, captions


# ----------------------------------------------------------------------------------------------- encoding


def encode_batch(codec: CodecHandle, clips: list[LoadedClip], window: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(codes (K, T_i) int16, latents (C, T_i) float16)] for clips of any lengths, in one windowed encode call.

    Clips are zero-padded to the longest; with a fixed window, each clip's codes depend only on its own windows.
    """
    longest = max(c.audio.shape[0] for c in clips)
    audio = np.zeros((len(clips), 1, longest), dtype=np.float32)
    for i, clip in enumerate(clips):
        audio[i, 0, : clip.audio.shape[0]] = clip.audio
    codes, latents = codec.encode_windowed(torch.from_numpy(audio), window)  # (B, K, T), (B, C, T)
    codes, latents = codes.cpu().numpy(), latents.cpu().numpy()
    out = []
    for i, clip in enumerate(clips):
        n = -(-clip.audio.shape[0] // codec.hop_length)  # ceil: frames of the real audio
        c, z = codes[i, :, :n], latents[i, :, :n]
        if not np.isfinite(z).all():
            raise ValueError("not_finite: the encoder produced NaN or infinite latents")
        out.append((c.astype(np.int16), z.astype(np.float16)))
    return out


def encode_clips(
    codec: CodecHandle, clips: list[LoadedClip], cfg: TokenizeConfig, failures: list[tuple[str, str, str]]
) -> list[tuple[LoadedClip, np.ndarray, np.ndarray]]:
    """Encode in batches; a failing batch is retried clip by clip so only the bad clip is recorded and skipped."""
    window = codec.window_samples(cfg.encode_window_s)
    done = []
    for start in range(0, len(clips), cfg.batch_size):
        batch = clips[start : start + cfg.batch_size]
        try:
            results = encode_batch(codec, batch, window)
            done.extend((clip, codes, latents) for clip, (codes, latents) in zip(batch, results, strict=True))
            continue
        except (ValueError, RuntimeError) as exc:
            log.warning("batch at clip %s failed (%s); encoding its clips one by one", batch[0].row["clip_id"], exc)
        for clip in batch:
            try:
                ((codes, latents),) = encode_batch(codec, [clip], window)
                done.append((clip, codes, latents))
            except (ValueError, RuntimeError) as exc:
                reason, _, detail = str(exc).partition(": ")
                failures.append((clip.row["clip_id"], reason if detail else "encode_error", detail or str(exc)))
    return done


def tokenize_shard(
    cfg: TokenizeConfig,
    clips_dir: str | Path,
    captions_dir: str | Path,
    codec: CodecHandle | str | Path,
    out: str | Path,
    seed: int,
) -> dict[str, Any]:
    """Encode the clips of one segment shard and write `out` (Parquet) and its failures sidecar; return a summary."""
    clips_dir, captions_dir, out = Path(clips_dir), Path(captions_dir), Path(out)
    if cfg.valid_fraction + cfg.test_fraction >= 1.0:
        raise UserFacingError(
            "tokenize.valid_fraction + tokenize.test_fraction must be below 1 (no training data otherwise)"
        )
    codec_dir = None if isinstance(codec, CodecHandle) else Path(codec)
    if not isinstance(codec, CodecHandle):
        codec = load_codec(codec, device=resolve_device(cfg.device))
    rows, captions = read_inputs(clips_dir, captions_dir)
    rates = sorted({int(r["sample_rate"]) for r in rows})
    if rates and rates != [codec.sample_rate]:
        raise UserFacingError(
            f"{clips_dir}: clips are at {rates} Hz but the codec works at {codec.sample_rate} Hz; "
            f"set segment.sample_rate to {codec.sample_rate} (or use a matching codec)"
        )

    failures: list[tuple[str, str, str]] = []
    loaded: list[LoadedClip] = []
    for row in rows:
        caption = captions.get(row["clip_id"])
        if caption is None:
            failures.append((row["clip_id"], "missing_caption", f"not in {captions_dir / 'captions.jsonl'}"))
            continue
        try:
            loaded.append(LoadedClip(row, str(caption["caption"]), load_clip(row, clips_dir, codec.sample_rate)))
        except ValueError as exc:
            reason, _, detail = str(exc).partition(": ")
            failures.append((row["clip_id"], reason, detail))
    encoded = encode_clips(codec, loaded, cfg, failures)

    token_rows = [
        TokenRow(
            clip_id=clip.row["clip_id"],
            track_id=clip.row["track_id"],
            split=assign_split(clip.row["track_id"], seed, cfg.valid_fraction, cfg.test_fraction),
            caption=clip.caption,
            duration_s=float(clip.row["duration_s"]),
            codes=codes,
            latents=latents if cfg.store_latents else None,
        )
        for clip, codes, latents in encoded
    ]
    # The sidecar first: a shard present means its failures are recorded too.
    write_failures(failures_path(out), failures)
    if rows and len(failures) > cfg.max_failure_fraction * len(rows):
        raise UserFacingError(
            f"{clips_dir}: {len(failures)} of {len(rows)} clips failed to encode (more than "
            f"tokenize.max_failure_fraction = {cfg.max_failure_fraction}); see "
            f"{failures_path(out)}"
        )
    section = dataclass_to_dict(cfg)
    metadata = {
        CODEC_KEY: codec_metadata(codec, cfg),
        PARAMS_KEY: params_sha256(cfg, seed),
        PROVENANCE_KEY: provenance(
            "tokenize",
            section,
            seed,
            device=codec.device.type,
            inputs={"clips": str(clips_dir), "captions": str(captions_dir)},
            **stand_ins.provenance_fields(stand_ins.inherited([clips_dir, captions_dir, codec_dir])),
        ),
    }
    write_shard(out, token_rows, metadata, cfg.row_group_size, cfg.store_latents)
    splits = {s: sum(r.split == s for r in token_rows) for s in ("train", "valid", "test")}
    return {
        "rows": len(token_rows),
        "failures": len(failures),
        "splits": splits,
        "seconds": float(sum(c.audio.shape[0] for c, _, _ in encoded) / codec.sample_rate),
    }


def finalize(folder: str | Path, cfg: TokenizeConfig, seed: int) -> dict[str, Any]:
    """Write `_manifest.json` for the shards of `folder` (they must agree with each other and with `cfg`)."""
    return finalize_manifest(folder, params_sha256(cfg, seed))


# ----------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", help="segment folder of one shard (data/segment/shard-NNNNN)")
    parser.add_argument("--captions", help="caption folder of the same shard (data/caption/shard-NNNNN)")
    parser.add_argument("--codec", default="data/codec", help="codec folder (default: data/codec)")
    parser.add_argument("--out", help="output shard (data/tokenize/shard-NNNNN.parquet)")
    parser.add_argument("--finalize", metavar="FOLDER", help="write FOLDER/_manifest.json from its shards instead")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = section_to_dataclass(TokenizeConfig, params.get("tokenize"))
    seed = int(params["seed"])
    if args.finalize:
        manifest = finalize(args.finalize, cfg, seed)
        print(
            f"{args.finalize}: {len(manifest['shards'])} shards, {manifest['counts']}, "
            f"{manifest['failures']} failed clips"
        )
        return 0
    missing = [name for name in ("clips", "captions", "out") if not getattr(args, name)]
    if missing:
        raise UserFacingError(f"ssmttm tokenize: missing --{', --'.join(missing)} (or use --finalize FOLDER)")
    summary = tokenize_shard(cfg, args.clips, args.captions, args.codec, args.out, seed)
    print(f"{args.out}: {summary['rows']} clips ({summary['splits']}), {summary['failures']} failed")
    return 0
