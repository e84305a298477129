"""Token shards: Parquet writing and reading, key-value metadata, failure sidecars and the folder manifest.

A shard `data/tokenize/shard-NNNNN.parquet` (see docs/ARTIFACTS.md) holds one row per clip, sorted by clip_id,
zstd-compressed, in row groups of a fixed number of rows:

    clip_id str, track_id str, split str (train/valid/test), caption str, duration_s float64, n_frames int32,
    codes list<list<int16>> (K x T), latents list<list<float16>> ((K*D) x T, optional)

Its key-value metadata holds `ssmttm.codec` (codec identity + encode window, JSON), `ssmttm.params_sha256` and
`ssmttm.provenance` (JSON). Beside it, `shard-NNNNN.failures.tsv` lists the clips that could not be encoded.
`finalize_manifest` writes `_manifest.json`: codec identity, params hash, counts per split, per-shard sha256.
Plain pyarrow, pandas, DuckDB and Hugging Face `datasets` read the shards (the nested lists are standard Arrow).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ssmttm import stand_ins
from ssmttm.artifacts import atomic_path, is_temporary, sha256_file, write_json, write_text
from ssmttm.config import canonical_json
from ssmttm.errors import UserFacingError

CODEC_KEY = "ssmttm.codec"
PARAMS_KEY = "ssmttm.params_sha256"
PROVENANCE_KEY = "ssmttm.provenance"
MANIFEST_FILE = "_manifest.json"
FAILURES_SUFFIX = ".failures.tsv"
FAILURES_HEADER = "clip_id\treason\tdetail\n"
SHARD_RE = re.compile(r"^shard-\d{5}\.parquet$")
SPLITS = ("train", "valid", "test")
ZSTD_LEVEL = 3  # fixed: the level is part of what makes reruns byte-identical
STRING_COLUMNS = ["clip_id", "track_id", "split", "caption"]


@dataclass
class TokenRow:
    clip_id: str
    track_id: str
    split: str
    caption: str
    duration_s: float
    codes: np.ndarray  # (K, T) int16
    latents: np.ndarray | None = None  # (K*D, T) float16

    @property
    def n_frames(self) -> int:
        return int(self.codes.shape[1])


def shard_schema(store_latents: bool) -> pa.Schema:
    fields = [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("n_frames", pa.int32(), nullable=False),
        pa.field("codes", pa.list_(pa.list_(pa.int16())), nullable=False),
    ]
    if store_latents:
        fields.append(pa.field("latents", pa.list_(pa.list_(pa.float16())), nullable=False))
    return pa.schema(fields)


# ----------------------------------------------------------------------------------------------- nested arrays


def matrices_to_array(matrices: Sequence[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    """[(R_i, T_i)] 2-D arrays -> list<list<value_type>>, each matrix a row of R_i lists of T_i values."""
    rows = [np.ascontiguousarray(m) for m in matrices]
    values = pa.array(np.concatenate([m.ravel() for m in rows]) if rows else np.zeros(0), type=value_type)
    inner_lengths = np.concatenate([np.full(m.shape[0], m.shape[1], dtype=np.int64) for m in rows]) if rows else []
    inner_offsets = np.concatenate([[0], np.cumsum(inner_lengths)]).astype(np.int32)
    outer_offsets = np.concatenate([[0], np.cumsum([m.shape[0] for m in rows])]).astype(np.int32)
    inner = pa.ListArray.from_arrays(pa.array(inner_offsets), values)
    return pa.ListArray.from_arrays(pa.array(outer_offsets), inner)


def array_to_matrices(column: pa.ChunkedArray | pa.ListArray, dtype: np.dtype) -> list[np.ndarray]:
    """list<list<x>> column -> [(R_i, T_i)] numpy views on the flat values (no per-value Python work)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list[np.ndarray] = []
    for chunk in chunks:
        outer = chunk.offsets.to_numpy()
        inner_array = chunk.values
        inner = inner_array.offsets.to_numpy()
        flat = inner_array.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        for i in range(len(chunk)):
            a, b = outer[i], outer[i + 1]
            start, stop = inner[a], inner[b]
            n_rows = b - a
            out.append(flat[start:stop].reshape(n_rows, -1) if n_rows else np.zeros((0, 0), dtype))
    return out


def rows_to_table(rows: Sequence[TokenRow], store_latents: bool) -> pa.Table:
    columns = {
        "clip_id": pa.array([r.clip_id for r in rows], pa.string()),
        "track_id": pa.array([r.track_id for r in rows], pa.string()),
        "split": pa.array([r.split for r in rows], pa.string()),
        "caption": pa.array([r.caption for r in rows], pa.string()),
        "duration_s": pa.array([float(r.duration_s) for r in rows], pa.float64()),
        "n_frames": pa.array([r.n_frames for r in rows], pa.int32()),
        "codes": matrices_to_array([r.codes.astype(np.int16, copy=False) for r in rows], pa.int16()),
    }
    if store_latents:
        if any(r.latents is None for r in rows):
            raise ValueError("store_latents is set but a row has no latents")
        columns["latents"] = matrices_to_array([r.latents.astype(np.float16, copy=False) for r in rows], pa.float16())
    return pa.Table.from_pydict(columns, schema=shard_schema(store_latents))


# ----------------------------------------------------------------------------------------------- writing


def write_shard(
    path: str | Path, rows: Iterable[TokenRow], metadata: Mapping[str, Any], row_group_size: int, store_latents: bool
) -> Path:
    """Write rows (sorted here by clip_id) to `path` atomically; metadata values are JSON-encoded unless str."""
    path = Path(path)
    ordered = sorted(rows, key=lambda r: r.clip_id)
    kv = {k: v if isinstance(v, str) else canonical_json(v) for k, v in sorted(metadata.items())}
    schema = shard_schema(store_latents).with_metadata(kv)
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(
            str(tmp),
            schema,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            use_dictionary=STRING_COLUMNS,
            write_statistics=STRING_COLUMNS + ["duration_s", "n_frames"],
        ) as w:
            # One table per row group: bounded memory and 32-bit list offsets even for long clips.
            for start in range(0, len(ordered), row_group_size):
                chunk = rows_to_table(ordered[start : start + row_group_size], store_latents)
                w.write_table(chunk.replace_schema_metadata(kv), row_group_size=row_group_size)
            if not ordered:
                w.write_table(rows_to_table([], store_latents).replace_schema_metadata(kv))
    return path


def failures_path(shard_path: str | Path) -> Path:
    shard_path = Path(shard_path)
    return shard_path.with_name(shard_path.name.removesuffix(".parquet") + FAILURES_SUFFIX)


def _tsv_field(text: str) -> str:
    return " ".join(str(text).split())  # no tabs or newlines inside a field


def write_failures(path: str | Path, failures: Iterable[tuple[str, str, str]]) -> None:
    """clip_id, reason, detail rows sorted by clip_id; the header is always written."""
    lines = [FAILURES_HEADER] + ["\t".join(_tsv_field(x) for x in row) + "\n" for row in sorted(failures)]
    write_text(path, "".join(lines))


def read_failures(path: str | Path) -> list[dict[str, str]]:
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t") if lines else []
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]


# ----------------------------------------------------------------------------------------------- reading


def read_shard_metadata(path: str | Path) -> dict[str, Any]:
    """{"codec": identity dict, "params_sha256": str, "provenance": dict} from a shard's key-value metadata."""
    kv = pq.ParquetFile(str(path)).schema_arrow.metadata or {}
    if CODEC_KEY.encode() not in kv:
        raise UserFacingError(
            f"{path}: no '{CODEC_KEY}' metadata; not a token shard of this pipeline (re-run `ssmttm tokenize`)"
        )
    return {
        "codec": json.loads(kv[CODEC_KEY.encode()]),
        "params_sha256": kv.get(PARAMS_KEY.encode(), b"").decode(),
        "provenance": json.loads(kv.get(PROVENANCE_KEY.encode(), b"{}")),
    }


def list_shards(folder: str | Path) -> list[Path]:
    """shard-NNNNN.parquet files of a tokenize folder, sorted; temporaries of killed jobs are ignored."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("shard-*.parquet") if SHARD_RE.match(p.name) and not is_temporary(p))


def finalize_manifest(folder: str | Path, params_sha256: str | None = None) -> dict[str, Any]:
    """Check the shards agree on codec and params, count rows per split, hash each shard; write _manifest.json."""
    folder = Path(folder)
    shards = list_shards(folder)
    if not shards:
        raise UserFacingError(f"{folder}: no shard-NNNNN.parquet files; run `ssmttm tokenize` on each shard first")
    entries, totals, codec, params = [], Counter(), None, None
    track_splits: dict[str, set[str]] = {s: set() for s in SPLITS}
    failures_total = 0
    standin_labels: dict[str, str] = {}  # ssmttm.stand_ins: what of the shards' inputs was a stand-in
    for shard in shards:
        meta = read_shard_metadata(shard)
        standin_labels.update(meta["provenance"].get(stand_ins.KEY) or {})
        if codec is None:
            codec, params = meta["codec"], meta["params_sha256"]
        elif meta["codec"] != codec:
            raise UserFacingError(
                f"{shard}: made with another codec than {shards[0].name}; re-run `ssmttm tokenize` for the stale shards"
            )
        elif meta["params_sha256"] != params:
            raise UserFacingError(
                f"{shard}: made with other tokenize params than {shards[0].name}; re-run "
                "`ssmttm tokenize` for the stale shards"
            )
        table = pq.read_table(str(shard), columns=["split", "track_id"])
        counts = Counter(table.column("split").to_pylist())
        for split, track in zip(table.column("split").to_pylist(), table.column("track_id").to_pylist(), strict=True):
            track_splits[split].add(track)
        fails = failures_path(shard)
        n_failed = len(read_failures(fails)) if fails.is_file() else 0
        failures_total += n_failed
        totals.update(counts)
        entries.append(
            {
                "file": shard.name,
                "sha256": sha256_file(shard),
                "rows": table.num_rows,
                "row_groups": pq.ParquetFile(str(shard)).num_row_groups,
                "splits": {s: counts.get(s, 0) for s in SPLITS},
                "failures": n_failed,
            }
        )
    if params_sha256 is not None and params != params_sha256:
        raise UserFacingError(
            f"{folder}: shards were made with other tokenize params than the current ones; re-run "
            "`ssmttm tokenize` for every shard"
        )
    manifest = {
        "codec": codec,
        "params_sha256": params,
        "rows": sum(totals.values()),
        "counts": {s: totals.get(s, 0) for s in SPLITS},  # rows per split
        "tracks": {s: len(track_splits[s]) for s in SPLITS},
        "failures": failures_total,
        "shards": entries,
        **stand_ins.provenance_fields(standin_labels),
    }
    write_json(folder / MANIFEST_FILE, manifest)
    return manifest


def require_token_shards(shards_dir: str | Path, fix: str) -> list[Path]:
    """The token shards of a tokenize folder, each a readable Parquet file with the pipeline's codec metadata."""
    shards = list_shards(shards_dir)
    if not shards:
        raise UserFacingError(f"{shards_dir}: no token shards (shard-NNNNN.parquet); {fix}")
    for shard in shards:
        try:
            metadata = pq.read_schema(str(shard)).metadata or {}
        except (pa.ArrowException, OSError) as exc:
            reason = " ".join(str(exc).split())[:120]
            raise UserFacingError(f"{shard}: not a readable Parquet token shard ({reason}); {fix}") from None
        if CODEC_KEY.encode() not in metadata:
            raise UserFacingError(f"{shard}: no '{CODEC_KEY}' metadata, not a token shard of this pipeline; {fix}")
    return shards
