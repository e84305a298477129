"""`ssmttm decode`: codes or continuous latents -> WAVs with a codec folder.

    ssmttm decode --codec data/codec --codes codes.npz --out DIR          # `ssmttm generate --checkpoint` output
    ssmttm decode --codec data/codec --codes data/tokenize/shard-00000.parquet --split test --out DIR
    ssmttm decode --codec data/codec --latents latents.npz --out DIR      # raw latents (B, K*D, T), e.g. a refiner's

Inputs: a .npz with `codes` (B, K, T) (optional `captions`, `ids`), a .parquet with a `codes` column (K x T per row:
generate's codes files, or token shards, whose codec identity is checked against --codec), or a .npz with `latents`
(B, K*D, T), turned into codes by the nearest code per codebook. `--codebooks N` decodes the first N codebooks only.
Each item becomes DIR/<id>.wav (id: the clip id or `ids` entry, else the row number 00000, 00001, ...), T * hop
samples at the codec's rate, checked and written as by the generate stage (generate.audio_out), with manifest.jsonl
and provenance.json beside them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmttm.artifacts import sha256_file, write_provenance
from ssmttm.codec import CodecHandle, check_codec_matches, load_codec, resolve_device
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import ClipFolder, write_clip
from ssmttm.generate.captions import SAFE_ID
from ssmttm.inputs import check_codes_array, check_fits_in_memory, decoding_bytes, load_codes_npz, load_latents_npz
from ssmttm.progress import progress


@dataclass
class Item:
    item_id: str
    codes: torch.Tensor  # (K, T) int64
    caption: str | None = None


def _ids(names: list[Any] | None, n: int, source: Path) -> list[str]:
    ids = [str(x) for x in names] if names is not None else [f"{i:05d}" for i in range(n)]
    bad = [i for i in ids if not SAFE_ID.match(i)]
    if bad or len(set(ids)) != len(ids):
        raise UserFacingError(
            f"{source}: item ids must be unique file names (letters, digits, '.', '_', '-'); got {bad[:3] or 'repeats'}"
        )
    return ids


def read_codes_file(path: Path, codec: CodecHandle, split: str | None) -> list[Item]:
    """Codes of a .npz or .parquet file as items (K, T)."""
    if path.suffix == ".npz":
        size = int(codec.identity["codebook_size"])
        codes, captions, names = load_codes_npz(path, codec.n_codebooks, size)
        ids = _ids(names, len(codes), path)
        captions = captions or [None] * len(codes)
        return [Item(i, torch.from_numpy(c), cap) for i, c, cap in zip(ids, codes, captions, strict=True)]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ssmttm.tokens.shards import CODEC_KEY, array_to_matrices

        try:
            table = pq.read_table(str(path))
        except (pa.ArrowException, OSError) as exc:
            reason = " ".join(str(exc).split())[:120]
            raise UserFacingError(f"--codes {path}: unreadable Parquet file ({reason})") from None
        if "codes" not in table.column_names:
            raise UserFacingError(f"{path}: no 'codes' column")
        metadata = table.schema.metadata or {}
        if CODEC_KEY.encode() in metadata:  # a token shard: decode it only with the codec that made it
            check_codec_matches(metadata, codec)
        if split is not None:
            if "split" not in table.column_names:
                raise UserFacingError(f"{path}: --split given but the file has no 'split' column")
            table = table.filter(np.array([s == split for s in table.column("split").to_pylist()]))
        column = table.column("codes")
        if not pa.types.is_list(column.type) or not pa.types.is_list(column.type.value_type):
            raise UserFacingError(f"--codes {path}: the 'codes' column is {column.type}; it must hold K x T lists")
        if not pa.types.is_integer(column.type.value_type.value_type):
            raise UserFacingError(f"--codes {path}: codes of type {column.type.value_type.value_type}; use integers")
        try:
            matrices = array_to_matrices(column, np.int64)
        except ValueError:
            raise UserFacingError(
                f"--codes {path}: a row's codebooks have different lengths; each must be K x T"
            ) from None
        names = table.column("clip_id").to_pylist() if "clip_id" in table.column_names else None
        captions = table.column("caption").to_pylist() if "caption" in table.column_names else [None] * len(matrices)
        ids = _ids(names, len(matrices), path)
        return [Item(i, torch.from_numpy(m), c) for i, m, c in zip(ids, matrices, captions, strict=True)]
    raise UserFacingError(f"--codes {path}: use a .npz or .parquet file")


def read_latents_file(path: Path, codec: CodecHandle) -> list[Item]:
    """Raw latents (B, K*D, T) of a .npz -> items of codes (K, T), nearest code per codebook."""
    if path.suffix != ".npz":
        raise UserFacingError(f"--latents {path}: use a .npz file with a 'latents' array (B, K*D, T)")
    latents_array, captions, names = load_latents_npz(path, codec.latent_channels)
    latents = torch.from_numpy(latents_array)
    captions = captions or [None] * len(latents)
    ids = _ids(names, len(latents), path)
    codes = [codec.latents_to_codes(latents[i : i + 1])[0].cpu() for i in range(len(latents))]
    return [Item(i, c, cap) for i, c, cap in zip(ids, codes, captions, strict=True)]


def check_codes(items: list[Item], codec: CodecHandle, source: Path) -> None:
    """Every item's codes (K, T): integers in the codebook, 1..K codebooks, T >= 1, and decodable in memory."""
    if not items:
        raise UserFacingError(f"--codes {source}: no items to decode (is --split right?)")
    size = int(codec.identity["codebook_size"])
    for item in items:
        check_codes_array(item.codes.numpy(), f"{source} {item.item_id}", codec.n_codebooks, size)
    longest = max(item.codes.shape[1] for item in items)
    check_fits_in_memory(
        decoding_bytes(codec.identity, longest), f"{source}: decoding {longest} frames", "split the input"
    )


def decode_items(
    codec_dir: str | Path,
    out: str | Path,
    *,
    codes_path: str | Path | None = None,
    latents_path: str | Path | None = None,
    codebooks: int | None = None,
    split: str | None = None,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict[str, int]:
    """Decode every item of the input file into `out`; returns {"ok": n, "failed": m}."""
    if (codes_path is None) == (latents_path is None):
        raise UserFacingError("pass exactly one of --codes and --latents")
    codec = load_codec(codec_dir, resolve_device(device))
    source = Path(codes_path or latents_path)
    if not source.is_file():
        raise UserFacingError(f"{'--codes' if codes_path else '--latents'} {source}: file not found")
    if codebooks is not None and codebooks < 1:
        raise UserFacingError(f"--codebooks {codebooks}: must be >= 1")
    items = read_codes_file(source, codec, split) if codes_path else read_latents_file(source, codec)
    check_codes(items, codec, source)
    folder = ClipFolder(out)
    folder.rows = {}  # the manifest lists this input's items only
    folder.prune({item.item_id for item in items})
    for item in progress(items, f"decode {source.name}", "clip", enabled=show_progress):
        codes = item.codes[:codebooks] if codebooks else item.codes
        n_samples = codes.shape[1] * codec.hop_length
        audio = codec.decode(codes[None]).reshape(-1).cpu().numpy()
        fields = write_clip(folder.wav_path(item.item_id), audio, codec.sample_rate, n_samples)
        folder.record(
            {
                "caption_id": item.item_id,
                "caption": item.caption,
                "codebooks": int(codes.shape[0]),
                "n_frames": int(codes.shape[1]),
                "sample_rate": codec.sample_rate,
                "num_samples": n_samples,
                "path": None,
                "sha256": None,
                "reason": None,
                **fields,
            }
        )
    folder.flush()
    write_provenance(
        out,
        "decode",
        {"codebooks": codebooks, "split": split},
        None,
        cpu_numerics=True,
        source=str(source),
        source_sha256=sha256_file(source),
        codec_weights_sha256=codec.identity["weights_sha256"],
    )
    return folder.counts()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codec", default="data/codec", help="codec folder (default: data/codec)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--codes", help=".npz with codes (B, K, T), or .parquet with a codes column")
    source.add_argument("--latents", help=".npz with raw latents (B, K*D, T)")
    parser.add_argument("--out", required=True, help="output folder for <id>.wav and manifest.jsonl")
    parser.add_argument("--codebooks", type=int, default=None, help="decode only the first N codebooks")
    parser.add_argument("--split", default=None, help="token shards: only the rows of this split (e.g. test)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress reports")


def run_from_args(args: argparse.Namespace) -> int:
    if args.codebooks is not None and args.codebooks < 1:
        raise UserFacingError(f"--codebooks {args.codebooks}: must be >= 1")
    counts = decode_items(
        args.codec,
        args.out,
        codes_path=args.codes,
        latents_path=args.latents,
        codebooks=args.codebooks,
        split=args.split,
        device=args.device,
        show_progress=not args.no_progress,
    )
    print(f"{args.out}: {counts['ok']} WAVs written, {counts['failed']} failed (see manifest.jsonl)")
    return 0
