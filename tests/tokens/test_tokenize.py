"""tokenize: clips + captions + a tiny codec -> a Parquet shard, its failures, the manifest; determinism."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
import yaml

from ssmttm.artifacts import read_jsonl, sha256_file, write_jsonl
from ssmttm.cli import main
from ssmttm.codec import CodecMismatchError, check_codec_matches, load_codec
from ssmttm.config import dataclass_to_dict
from ssmttm.errors import UserFacingError
from ssmttm.tokens import shards as shards_module
from ssmttm.tokens.shards import array_to_matrices, list_shards, read_failures, read_shard_metadata
from ssmttm.tokens.tokenize import TokenizeConfig, assign_split, finalize, tokenize_shard
from tests.codec import RATE, tiny_codec, write_corpus

TRACKS = {f"trk{i:02d}": 1 + i % 3 for i in range(10)}
CFG = TokenizeConfig(
    encode_window_s=0.05,
    batch_size=3,
    device="cpu",
    store_latents=True,
    row_group_size=4,
    valid_fraction=0.25,
    test_fraction=0.25,
    max_failure_fraction=0.5,
)
SEED = 11


@pytest.fixture
def setup(tmp_path):
    seg, cap = write_corpus(tmp_path, TRACKS, seconds=0.25, tail={"trk01-0001": 0.1})
    return seg, cap, tiny_codec(tmp_path / "codec"), tmp_path / "tokenize"


def _read(path):
    table = pq.read_table(str(path))
    return (
        table,
        array_to_matrices(table.column("codes"), np.int16),
        array_to_matrices(table.column("latents"), np.float16),
    )


def test_shard_contents_match_the_codec(setup):
    seg, cap, codec_dir, out = setup
    summary = tokenize_shard(CFG, seg, cap, codec_dir, out / "shard-00000.parquet", SEED)
    n_clips = sum(TRACKS.values())
    assert summary["rows"] == n_clips and summary["failures"] == 0
    table, codes, latents = _read(out / "shard-00000.parquet")
    ids = table.column("clip_id").to_pylist()
    assert ids == sorted(ids) and len(ids) == n_clips
    handle = load_codec(codec_dir)
    clips = {r["clip_id"]: r for r in read_jsonl(seg / "clips.jsonl")}
    captions = {r["clip_id"]: r["caption"] for r in read_jsonl(cap / "captions.jsonl")}
    window = handle.window_samples(CFG.encode_window_s)
    for i, clip_id in enumerate(ids):
        row = clips[clip_id]
        audio, _ = sf.read(row["audio_path"], dtype="float32")
        real = round(row["duration_s"] * RATE)
        expected_codes, expected_latents = handle.encode_windowed(torch.from_numpy(audio[:real])[None, None], window)
        n_frames = math.ceil(real / 8)  # tail padding is not tokenized
        assert codes[i].shape == (2, n_frames) and table.column("n_frames")[i].as_py() == n_frames
        assert np.array_equal(codes[i], expected_codes[0].numpy())
        assert np.allclose(latents[i].astype(np.float32), expected_latents[0].numpy(), atol=2e-2, rtol=2e-3)
        assert table.column("caption")[i].as_py() == captions[clip_id]
        assert table.column("duration_s")[i].as_py() == row["duration_s"]
    meta = read_shard_metadata(out / "shard-00000.parquet")
    assert meta["codec"]["weights_sha256"] == handle.identity["weights_sha256"]
    assert meta["codec"]["encode_window_s"] == 0.05 and meta["codec"]["encode_window_samples"] == 800
    assert len(meta["params_sha256"]) == 64 and meta["provenance"]["stage"] == "tokenize"
    assert pq.ParquetFile(str(out / "shard-00000.parquet")).metadata.num_row_groups == math.ceil(n_clips / 4)


def test_splits_are_by_track_and_seeded(setup):
    seg, cap, codec_dir, out = setup
    tokenize_shard(CFG, seg, cap, codec_dir, out / "shard-00000.parquet", SEED)
    table = pq.read_table(str(out / "shard-00000.parquet"), columns=["track_id", "split"])
    pairs = set(zip(table.column("track_id").to_pylist(), table.column("split").to_pylist(), strict=True))
    assert len({t for t, _ in pairs}) == len(pairs)  # no track in two splits
    assert all(split == assign_split(track, SEED, 0.25, 0.25) for track, split in pairs)
    assert {s for _, s in pairs} == {"train", "valid", "test"}
    other_seed = {t: assign_split(t, SEED + 1, 0.25, 0.25) for t in TRACKS}
    assert other_seed != {t: assign_split(t, SEED, 0.25, 0.25) for t in TRACKS}


def test_rerun_is_byte_identical(setup):
    seg, cap, codec_dir, out = setup
    tokenize_shard(CFG, seg, cap, codec_dir, out / "a" / "shard-00000.parquet", SEED)
    # Another batch size changes how clips are grouped, not the tokens.
    tokenize_shard(dataclasses.replace(CFG, batch_size=1), seg, cap, codec_dir, out / "c" / "shard-00000.parquet", SEED)
    tokenize_shard(CFG, seg, cap, codec_dir, out / "b" / "shard-00000.parquet", SEED)
    first, second = out / "a" / "shard-00000.parquet", out / "b" / "shard-00000.parquet"
    assert first.read_bytes() == second.read_bytes()
    assert np.array_equal(
        np.concatenate([c.ravel() for c in _read(first)[1]]),
        np.concatenate([c.ravel() for c in _read(out / "c" / "shard-00000.parquet")[1]]),
    )


def test_failures_are_recorded_and_skipped(setup):
    seg, cap, codec_dir, out = setup
    (seg / "clips" / "trk02-0000.wav").write_bytes(b"RIFF not really a wav")
    captions = [r for r in read_jsonl(cap / "captions.jsonl") if r["clip_id"] != "trk04-0001"]
    write_jsonl(cap / "captions.jsonl", captions)
    summary = tokenize_shard(CFG, seg, cap, codec_dir, out / "shard-00000.parquet", SEED)
    failures = read_failures(out / "shard-00000.failures.tsv")
    assert [(f["clip_id"], f["reason"]) for f in failures] == [
        ("trk02-0000", "unreadable"),
        ("trk04-0001", "missing_caption"),
    ]
    ids = pq.read_table(str(out / "shard-00000.parquet"), columns=["clip_id"]).column("clip_id").to_pylist()
    assert "trk02-0000" not in ids and "trk04-0001" not in ids
    assert summary["rows"] == sum(TRACKS.values()) - 2
    manifest = finalize(out, CFG, SEED)
    assert manifest["failures"] == 2 and manifest["shards"][0]["failures"] == 2
    # Beyond max_failure_fraction the job fails (failures listed) and no shard is written.
    strict = dataclasses.replace(CFG, max_failure_fraction=0.0)
    with pytest.raises(UserFacingError, match="2 of 19 clips failed"):
        tokenize_shard(strict, seg, cap, codec_dir, out / "strict" / "shard-00000.parquet", SEED)
    assert not (out / "strict" / "shard-00000.parquet").exists()
    assert len(read_failures(out / "strict" / "shard-00000.failures.tsv")) == 2


def test_encoder_error_on_one_clip_is_isolated(setup, monkeypatch):
    seg, cap, codec_dir, out = setup
    handle = load_codec(codec_dir)
    real = handle.encode_windowed

    def flaky(audio, window):  # a clip made of one constant value fails, as a NaN-producing clip would
        if any(bool((a == a[0, 0]).all()) for a in audio):
            raise RuntimeError("boom")
        return real(audio, window)

    audio, _ = sf.read(seg / "clips" / "trk05-0000.wav", dtype="float32")
    sf.write(seg / "clips" / "trk05-0000.wav", np.full_like(audio, 0.25), RATE, subtype="PCM_16")
    monkeypatch.setattr(handle, "encode_windowed", flaky)
    summary = tokenize_shard(CFG, seg, cap, handle, out / "shard-00000.parquet", SEED)
    assert summary["rows"] == sum(TRACKS.values()) - 1
    assert [(f["clip_id"], f["reason"]) for f in read_failures(out / "shard-00000.failures.tsv")] == [
        ("trk05-0000", "encode_error")
    ]


def test_interrupted_write_leaves_no_shard(setup, monkeypatch):
    seg, cap, codec_dir, out = setup
    calls = []
    real = shards_module.rows_to_table

    def dying(rows, store_latents):  # the job dies after the first row group
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(rows, store_latents)

    monkeypatch.setattr(shards_module, "rows_to_table", dying)
    with pytest.raises(KeyboardInterrupt):
        tokenize_shard(CFG, seg, cap, codec_dir, out / "shard-00000.parquet", SEED)
    assert not (out / "shard-00000.parquet").exists()
    assert [p.name for p in out.iterdir()] == ["shard-00000.failures.tsv"]
    assert list_shards(out) == []


def test_decoding_with_another_codec_is_refused(setup, tmp_path):
    seg, cap, codec_dir, out = setup
    tokenize_shard(CFG, seg, cap, codec_dir, out / "shard-00000.parquet", SEED)
    kv = pq.ParquetFile(str(out / "shard-00000.parquet")).schema_arrow.metadata
    check_codec_matches(kv, load_codec(codec_dir))
    with pytest.raises(CodecMismatchError, match="another codec"):
        check_codec_matches(kv, load_codec(tiny_codec(tmp_path / "other", seed=1)))


def test_manifest(setup, tmp_path):
    seg, cap, codec_dir, out = setup
    seg1, cap1 = write_corpus(tmp_path, {"trkx": 2, "trky": 1}, shard="00001")
    tokenize_shard(CFG, seg, cap, codec_dir, out / "shard-00000.parquet", SEED)
    tokenize_shard(CFG, seg1, cap1, codec_dir, out / "shard-00001.parquet", SEED)
    manifest = finalize(out, CFG, SEED)
    assert json.loads((out / "_manifest.json").read_text()) == manifest
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.parquet", "shard-00001.parquet"]
    assert manifest["rows"] == sum(manifest["counts"].values()) == sum(TRACKS.values()) + 3
    splits = []
    for p in list_shards(out):
        splits += pq.read_table(str(p), columns=["split"]).column("split").to_pylist()
        assert manifest["shards"][int(p.stem[-1])]["sha256"] == sha256_file(p)
    assert manifest["counts"] == {s: splits.count(s) for s in ("train", "valid", "test")}
    assert manifest["codec"]["weights_sha256"] == load_codec(codec_dir).identity["weights_sha256"]
    # Shards made with other params, or checked against other params, are refused.
    with pytest.raises(UserFacingError, match="other tokenize params"):
        finalize(out, dataclasses.replace(CFG, row_group_size=5), SEED)
    tokenize_shard(dataclasses.replace(CFG, row_group_size=5), seg1, cap1, codec_dir, out / "shard-00001.parquet", SEED)
    with pytest.raises(UserFacingError, match="other tokenize params than shard-00000"):
        finalize(out, CFG, SEED)


def test_sample_rate_mismatch_is_a_clear_error(setup, tmp_path):
    _, _, codec_dir, out = setup
    seg, cap = write_corpus(tmp_path / "sr", {"a": 1}, rate=8000)
    with pytest.raises(UserFacingError, match="clips are at \\[8000\\] Hz but the codec works at 16000 Hz"):
        tokenize_shard(CFG, seg, cap, codec_dir, out / "shard-00000.parquet", SEED)


def test_cli(setup, tmp_path, repo_root):
    seg, cap, codec_dir, out = setup
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["seed"] = SEED
    params["tokenize"] = dataclass_to_dict(CFG)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    shard = out / "shard-00000.parquet"
    assert (
        main(
            [
                "tokenize",
                "--params",
                str(tmp_path / "p.yaml"),
                "--clips",
                str(seg),
                "--captions",
                str(cap),
                "--codec",
                str(codec_dir),
                "--out",
                str(shard),
            ]
        )
        == 0
    )
    assert main(["tokenize", "--params", str(tmp_path / "p.yaml"), "--finalize", str(out)]) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == sum(TRACKS.values())
    assert main(["tokenize", "--params", str(tmp_path / "p.yaml"), "--clips", str(seg)]) == 1  # missing arguments
