"""Token shard format: nested arrays, row groups, sorting, metadata, sidecars, and readers other than ours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssmttm.tokens.shards import (
    TokenRow,
    array_to_matrices,
    failures_path,
    list_shards,
    matrices_to_array,
    read_failures,
    read_shard_metadata,
    write_failures,
    write_shard,
)

META = {"ssmttm.codec": {"model": "dac", "weights_sha256": "ab" * 32, "n_codebooks": 3}, "ssmttm.params_sha256": "cd"}


def make_rows(n: int = 7, k: int = 3, seed: int = 0) -> list[TokenRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = int(rng.integers(1, 40))
        rows.append(
            TokenRow(
                clip_id=f"clip-{(i * 5) % n:03d}",
                track_id=f"trk{i % 3}",
                split=["train", "valid", "test"][i % 3],
                caption=f"caption {i}\twith a tab",
                duration_s=t / 10,
                codes=rng.integers(0, 1024, size=(k, t)).astype(np.int16),
                latents=rng.standard_normal((k * 2, t)).astype(np.float16),
            )
        )
    return rows


@pytest.fixture
def shard(tmp_path):
    rows = make_rows()
    path = write_shard(tmp_path / "shard-00000.parquet", rows, META, row_group_size=3, store_latents=True)
    return path, rows


def test_nested_array_roundtrip():
    mats = [np.arange(6, dtype=np.int16).reshape(2, 3), np.zeros((2, 0), np.int16), np.ones((1, 5), np.int16)]
    back = array_to_matrices(matrices_to_array(mats, pa.int16()), np.int16)
    assert [b.shape for b in back] == [(2, 3), (2, 0), (1, 5)]
    assert all(np.array_equal(a, b) for a, b in zip(mats, back, strict=True))


def test_layout_sorting_row_groups_and_metadata(shard):
    path, rows = shard
    pf = pq.ParquetFile(str(path))
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [3, 3, 1]
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    table = pf.read()
    ids = table.column("clip_id").to_pylist()
    assert ids == sorted(r.clip_id for r in rows)
    by_id = {r.clip_id: r for r in rows}
    codes = array_to_matrices(table.column("codes"), np.int16)
    latents = array_to_matrices(table.column("latents"), np.float16)
    for clip_id, c, z, n in zip(ids, codes, latents, table.column("n_frames").to_pylist(), strict=True):
        assert np.array_equal(c, by_id[clip_id].codes) and np.array_equal(z, by_id[clip_id].latents)
        assert n == by_id[clip_id].n_frames
    meta = read_shard_metadata(path)
    assert meta["codec"] == META["ssmttm.codec"] and meta["params_sha256"] == "cd"


def test_rewrite_is_byte_identical(shard, tmp_path):
    path, rows = shard
    again = write_shard(tmp_path / "again.parquet", list(reversed(rows)), META, row_group_size=3, store_latents=True)
    assert again.read_bytes() == path.read_bytes()


def test_without_latents(tmp_path):
    rows = make_rows(3)
    path = write_shard(tmp_path / "s.parquet", rows, META, row_group_size=8, store_latents=False)
    assert "latents" not in pq.ParquetFile(str(path)).schema_arrow.names


def test_failures_sidecar(tmp_path):
    shard_path = tmp_path / "shard-00003.parquet"
    side = failures_path(shard_path)
    assert side.name == "shard-00003.failures.tsv"
    write_failures(side, [("b", "unreadable", "bad\theader\nline"), ("a", "missing_caption", "x")])
    assert read_failures(side) == [
        {"clip_id": "a", "reason": "missing_caption", "detail": "x"},
        {"clip_id": "b", "reason": "unreadable", "detail": "bad header line"},
    ]
    write_failures(side, [])
    assert side.read_text() == "clip_id\treason\tdetail\n"


def test_list_shards_ignores_temporaries(shard, tmp_path):
    path, _ = shard
    (tmp_path / "shard-00001.parquet.tmp-123-abcdef12").write_bytes(b"half a file")
    (tmp_path / "notes.parquet").write_bytes(b"")
    assert list_shards(tmp_path) == [path]


def test_readable_with_pandas(shard):
    path, rows = shard
    frame = pd.read_parquet(path)
    assert list(frame.columns) == [
        "clip_id",
        "track_id",
        "split",
        "caption",
        "duration_s",
        "n_frames",
        "codes",
        "latents",
    ]
    first = frame.iloc[0]
    expected = min(rows, key=lambda r: r.clip_id)
    assert np.array_equal(np.stack(first["codes"]), expected.codes)
    assert first["caption"] == expected.caption


def test_readable_with_duckdb(shard):
    duckdb = pytest.importorskip("duckdb")
    path, rows = shard
    result = duckdb.sql(
        f"SELECT split, count(*) AS n, sum(len(codes[1])) AS frames FROM '{path}' GROUP BY split ORDER BY split"
    ).fetchall()
    expected = {}
    for r in rows:
        n, f = expected.get(r.split, (0, 0))
        expected[r.split] = (n + 1, f + r.n_frames)
    assert result == [(s, *expected[s]) for s in sorted(expected)]


def test_readable_with_hf_datasets(shard, tmp_path):
    datasets = pytest.importorskip("datasets")
    path, rows = shard
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == len(rows)
    expected = min(rows, key=lambda r: r.clip_id)
    assert ds[0]["clip_id"] == expected.clip_id
    assert np.array_equal(np.asarray(ds[0]["codes"], dtype=np.int16), expected.codes)
    assert np.allclose(np.asarray(ds[0]["latents"], dtype=np.float32), expected.latents.astype(np.float32))
