"""Pretrained mode plumbing with a tiny random DAC saved in descript's own .pth format (no real weights needed)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from ssmttm.artifacts import sha256_file
from ssmttm.codec import CODEC_JSON, WEIGHTS_FILE, build_dac, load_codec
from ssmttm.codec.pretrained import PretrainedConfig
from ssmttm.codec.stage import CodecConfig, run_codec
from ssmttm.errors import MissingWeightsError, UserFacingError
from tests.codec import TINY_KWARGS


@pytest.fixture
def dac_pth(tmp_path):
    """(model, path): a tiny DAC written by audiotools' BaseModel.save(package=False), the release format."""
    torch.manual_seed(3)
    model = build_dac(TINY_KWARGS).eval()
    path = tmp_path / "weights_tiny.pth"
    model.save(str(path), package=False)
    return model, path


def _pretrained(path, sha256=None, **kw) -> CodecConfig:
    return CodecConfig(
        mode="pretrained", pretrained=PretrainedConfig(path=str(path) if path else None, sha256=sha256, **kw)
    )


def test_local_path_with_sha256_converts_to_safetensors(dac_pth, tmp_path):
    model, path = dac_pth
    out = tmp_path / "codec"
    identity = run_codec(_pretrained(path, sha256_file(path)), [], out, seed=0)
    assert sorted(p.name for p in out.iterdir()) == [CODEC_JSON, "host.json", "provenance.json", WEIGHTS_FILE]
    assert identity["weights_sha256"] == sha256_file(out / WEIGHTS_FILE)
    assert identity["source"]["sha256"] == sha256_file(path) and identity["variant"] == "44khz"
    assert json.loads((out / CODEC_JSON).read_text())["model_kwargs"]["n_codebooks"] == 2
    handle = load_codec(out)
    audio = 0.2 * torch.randn(1, 1, 400, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.encode(model.preprocess(audio, 16000))[1]
    assert torch.equal(handle.encode(audio)[0], expected)


def test_wrong_sha256_is_refused_and_writes_nothing(dac_pth, tmp_path):
    _, path = dac_pth
    with pytest.raises(UserFacingError, match="does not match codec.pretrained.sha256"):
        run_codec(_pretrained(path, "0" * 64), [], tmp_path / "codec", seed=0)
    assert not (tmp_path / "codec").exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folder left behind


def test_missing_file_names_file_place_and_command(tmp_path):
    missing = tmp_path / "weights.pth"
    with pytest.raises(MissingWeightsError) as info:
        run_codec(_pretrained(missing), [], tmp_path / "codec", seed=0)
    message = str(info.value)
    assert str(missing) in message and "python -m dac download --model_type 44khz" in message


def test_default_cache_and_download(dac_pth, tmp_path, monkeypatch):
    _, path = dac_pth
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(MissingWeightsError, match=r"\.cache/descript/dac/weights_44khz_8kbps_0\.0\.1\.pth"):
        run_codec(_pretrained(None), [], tmp_path / "codec", seed=0)
    calls = []

    def fake_download(model_type, model_bitrate, tag):  # the package's downloader, without the network
        calls.append((model_type, model_bitrate, tag))
        return path

    import dac.utils

    monkeypatch.setattr(dac.utils, "download", fake_download)
    run_codec(_pretrained(None, download=True), [], tmp_path / "codec", seed=0)
    assert calls == [("44khz", "8kbps", "latest")]
    assert load_codec(tmp_path / "codec").n_codebooks == 2


def test_pickle_needing_full_unpickle_requires_a_checksum(dac_pth, tmp_path):
    model, _ = dac_pth
    path = tmp_path / "odd.pth"
    # A non-tensor object in the metadata: weights_only loading refuses it.
    torch.save(
        {"state_dict": model.state_dict(), "metadata": {"kwargs": dict(TINY_KWARGS), "args": argparse.Namespace(x=1)}},
        path,
    )
    with pytest.raises(UserFacingError, match="only done for a checksum-verified file"):
        run_codec(_pretrained(path), [], tmp_path / "a", seed=0)
    run_codec(_pretrained(path, sha256_file(path)), [], tmp_path / "b", seed=0)
    assert load_codec(tmp_path / "b").identity["n_codebooks"] == 2
