"""Embedding models: only named local weights with a checked hash, never substitutes; VGGish's framing and layout."""

from __future__ import annotations

import hashlib
from importlib.util import find_spec

import numpy as np
import pytest
import torch

from ssmttm.errors import UserFacingError
from ssmttm.evaluate import embeddings as E


def test_no_weights_means_not_computed_with_the_way_to_enable_it():
    models = E.load_models(E.ModelsConfig(), seed=0)
    assert set(models) == {"vggish", "passt", "clap", "openl3", "openl3_sam", "passt_10s", "clap_fusion"}
    for family in E.FAMILIES:
        for name, (entry, _) in E.LOADED_MODELS[family].items():
            reason = models[name].reason
            assert f"evaluate.models.{entry}.weights_path is null" in reason and E.HOW_TO_ENABLE[entry] in reason
    assert "630k-audioset-fusion-best.pt" in models["clap_fusion"].reason
    assert "passt-s-f128-p16-s10-ap.476-swa.pt" in models["passt_10s"].reason
    # only the selected families' models are loaded; the stable-audio-metrics ones have their own entries
    assert set(E.load_models(E.ModelsConfig(), seed=0, families=("stable_audio",))) == {
        "openl3_sam",
        "passt_10s",
        "clap_fusion",
    }
    cfg = E.ModelsConfig()
    assert (cfg.passt_10s.pretrained_length_s, cfg.passt.pretrained_length_s) == (10, 20)
    assert (cfg.clap_fusion.enable_fusion, cfg.clap_fusion.audio_model) == (True, "HTSAT-tiny")
    assert (cfg.clap.enable_fusion, cfg.clap.audio_model) == (False, "HTSAT-base")
    with pytest.raises(UserFacingError, match="unknown"):
        E.load_models(cfg, seed=0, families=("audiocraft", "fadtk"))
    with pytest.raises(UserFacingError, match="passt_10s.pretrained_length_s must be 10"):
        E.load_models(E.ModelsConfig(passt_10s=E.PasstWeights(pretrained_length_s=20)), seed=0)


def test_missing_file_mismatched_hash_and_missing_package(tmp_path):
    absent = E.checked_weights("vggish", E.ModelWeights(str(tmp_path / "nope.pth")))
    assert isinstance(absent, E.Unavailable) and "not found" in absent.reason
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not the named weights")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert E.checked_weights("clap", E.ModelWeights(str(weights), digest.upper())) == (weights, digest)
    assert E.checked_weights("clap", E.ModelWeights(str(weights))) == (weights, digest)
    with pytest.raises(UserFacingError, match="not the named weights"):
        E.checked_weights("clap", E.ModelWeights(str(weights), "0" * 64))
    # the entries whose package is missing get the file (an installed loader refuses it: test_passt_standin.py)
    missing = {n for n in ("passt", "clap", "passt_10s", "clap_fusion", "openl3") if not find_spec(E.PACKAGES[n])}
    cfg = E.ModelsConfig(
        passt=E.PasstWeights(str(weights) if "passt" in missing else None),
        clap=E.ClapWeights(str(weights) if "clap" in missing else None),
        passt_10s=E.PasstWeights(str(weights) if "passt_10s" in missing else None, pretrained_length_s=10),
        clap_fusion=E.ClapWeights(
            str(weights) if "clap_fusion" in missing else None, enable_fusion=True, audio_model="HTSAT-tiny"
        ),
        openl3=E.ModelWeights(str(weights) if "openl3" in missing else None),
    )
    models = E.load_models(cfg, seed=0)
    for name in missing:  # a missing package is named, the file not replaced by anything
        assert f"{E.PACKAGES[name]} not installed" in models[name].reason
    if isinstance(models["openl3"], E.Unavailable):  # both families' OpenL3 come from the one openl3 entry
        assert models["openl3_sam"] == models["openl3"]


def test_vggish_refuses_weights_that_are_not_vggish(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(UserFacingError, match="not a torchvggish VGGish state dict"):
        E.load_models(E.ModelsConfig(vggish=E.ModelWeights(str(other))), seed=0)


def test_vggish_network_has_the_torchvggish_layout():
    network = E.vggish_network()
    expected = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")}
    expected |= {f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    state = network.state_dict()
    assert set(state) == expected
    assert state["embeddings.0.weight"].shape == (4096, 512 * 4 * 6) and state["embeddings.4.weight"].shape == (
        128,
        4096,
    )
    with torch.no_grad():
        out = network(torch.zeros(2, 1, E.VGGISH_FRAMES, E.VGGISH_BANDS))
    assert out.shape == (2, 128)
    assert (out < 0).any() or torch.all(out == network.embeddings[4].bias)  # no final ReLU


def test_vggish_framing_windows_and_mel():
    mel = E.vggish_mel_matrix()
    assert mel.shape == (257, 64) and np.all(mel[0] == 0) and np.all(mel.max(axis=0) > 0) and mel.max() <= 1
    rate = E.VGGISH_RATE
    tone = 0.01 * np.sin(2 * np.pi * 1000 * np.arange(int(3.2 * rate)) / rate)
    examples = E.vggish_examples(tone)
    assert examples.shape == (5, 96, 64)  # 1 s windows every 0.5 s in 3.2 s
    # peak-normalised: tones peaking at 0.2 and 0.5 both reach 1.0; the 0.01 one is capped at +20 dB (0.1)
    np.testing.assert_allclose(E.vggish_examples(tone * 20), E.vggish_examples(tone * 50), atol=1e-9)
    assert not np.allclose(examples, E.vggish_examples(tone * 50), atol=1e-3)
    band = int(np.argmax(examples[0].mean(axis=0)))
    edges = np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), 66)
    centre_hz = 700 * np.expm1(edges[1:-1] / 1127)
    assert abs(centre_hz[band] - 1000) < 60
    assert E.vggish_examples(np.zeros(1000)).shape == (1, 96, 64)  # a short clip is one padded window


def test_kl_and_cosine_closed_forms():
    p = np.array([0.5, 0.5, 0.0])
    assert E.kl_divergence(p, p, eps=0.0) == pytest.approx(0.0)
    q = np.array([0.25, 0.75, 0.0])
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert E.kl_divergence(p, q, eps=0.0) == pytest.approx(expected)
    assert np.isfinite(E.kl_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])))  # eps keeps it finite
    assert E.cosine(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [-1.0, -1.0]])) == pytest.approx([1, -1])
