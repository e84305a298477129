"""`ssmttm decode`: codes (.npz, .parquet, token shards) and latents to checked WAVs."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from ssmttm import cli
from ssmttm.artifacts import read_jsonl
from ssmttm.codec import load_codec
from ssmttm.generate.audio_out import MANIFEST_FILE, write_clip
from ssmttm.generate.synth import decode_clip
from ssmttm.generate.tokens import write_codes
from tests.codec import tiny_codec
from tests.generate._fixtures import make_shards


@pytest.fixture
def codec_dir(tmp_path):
    return tiny_codec(tmp_path / "codec")


def decode(*args: str) -> int:
    return cli.main(["decode", "--no-progress", *args])


def random_codes(b: int, k: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 16, (b, k, t), generator=torch.Generator().manual_seed(seed))


def test_codes_npz_and_parquet_give_the_same_wavs(codec_dir, tmp_path, capsys):
    codes = random_codes(2, 2, 30)
    write_codes(tmp_path / "c.npz", ["soft piano", "drums"], codes, {})
    write_codes(tmp_path / "c.parquet", ["soft piano", "drums"], codes, {})
    assert decode("--codec", str(codec_dir), "--codes", str(tmp_path / "c.npz"), "--out", str(tmp_path / "a")) == 0
    assert "2 WAVs written, 0 failed" in capsys.readouterr().out
    assert decode("--codec", str(codec_dir), "--codes", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "b")) == 0
    rows = read_jsonl(tmp_path / "a" / MANIFEST_FILE)
    assert [(r["caption_id"], r["caption"], r["status"]) for r in rows] == [
        ("00000", "soft piano", "ok"),
        ("00001", "drums", "ok"),
    ]
    for name in ("00000.wav", "00001.wav"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        data, rate = sf.read(str(tmp_path / "a" / name))
        assert rate == 16000 and data.shape == (30 * 8,)
    expected = write_clip(tmp_path / "x.wav", decode_clip(load_codec(codec_dir), codes[1]), 16000, 240)
    assert rows[1]["sha256"] == expected["sha256"]
    one = ["--codebooks", "1", "--out", str(tmp_path / "cb1")]
    assert decode("--codec", str(codec_dir), "--codes", str(tmp_path / "c.npz"), *one) == 0
    assert read_jsonl(tmp_path / "cb1" / MANIFEST_FILE)[0]["codebooks"] == 1
    assert (tmp_path / "a" / "00000.wav").read_bytes() != (tmp_path / "cb1" / "00000.wav").read_bytes()


def test_latents_become_their_nearest_codes(codec_dir, tmp_path):
    codec = load_codec(codec_dir)
    audio = 0.3 * torch.randn(2, 1, 160, generator=torch.Generator().manual_seed(1))
    codes, latents = codec.encode(audio)
    np.savez(tmp_path / "l.npz", latents=latents.numpy(), ids=np.array(["one", "two"]))
    np.savez(tmp_path / "c.npz", codes=codes.numpy(), ids=np.array(["one", "two"]))
    assert decode("--codec", str(codec_dir), "--latents", str(tmp_path / "l.npz"), "--out", str(tmp_path / "l")) == 0
    assert decode("--codec", str(codec_dir), "--codes", str(tmp_path / "c.npz"), "--out", str(tmp_path / "c")) == 0
    for name in ("one.wav", "two.wav"):
        assert (tmp_path / "l" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def test_token_shards_are_decoded_only_with_their_codec(codec_dir, tmp_path, capsys):
    shards, _ = make_shards(tmp_path, codec_dir)
    shard = str(shards / "shard-00000.parquet")
    assert decode("--codec", str(codec_dir), "--codes", shard, "--split", "test", "--out", str(tmp_path / "s")) == 0
    assert sorted(p.name for p in (tmp_path / "s").glob("*.wav")) == [
        "trackA-0000.wav",
        "trackA-0001.wav",
        "trackB-0000.wav",
    ]
    # a split without rows is refused, not answered with an empty folder (issue 23: no empty result with exit code 0)
    assert decode("--codec", str(codec_dir), "--codes", shard, "--split", "train", "--out", str(tmp_path / "t")) == 1
    assert "no items to decode" in capsys.readouterr().err and not (tmp_path / "t").exists()
    other = tiny_codec(tmp_path / "other", seed=1)
    assert decode("--codec", str(other), "--codes", shard, "--out", str(tmp_path / "o")) == 1
    assert "another codec" in capsys.readouterr().err


def test_bad_inputs_are_user_errors(codec_dir, tmp_path, capsys):
    np.savez(tmp_path / "big.npz", codes=np.full((1, 2, 4), 99))
    assert decode("--codec", str(codec_dir), "--codes", str(tmp_path / "big.npz"), "--out", str(tmp_path / "x")) == 1
    assert "outside 0..15" in capsys.readouterr().err
    np.savez(tmp_path / "three.npz", codes=np.zeros((1, 3, 4), dtype=np.int64))
    assert decode("--codec", str(codec_dir), "--codes", str(tmp_path / "three.npz"), "--out", str(tmp_path / "y")) == 1
    assert "3 codebooks" in capsys.readouterr().err
    np.savez(tmp_path / "lat.npz", latents=np.zeros((1, 5, 4), dtype=np.float32))
    assert decode("--codec", str(codec_dir), "--latents", str(tmp_path / "lat.npz"), "--out", str(tmp_path / "z")) == 1
    assert "expects (B, 8, T)" in capsys.readouterr().err
