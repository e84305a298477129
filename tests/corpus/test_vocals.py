"""Vocal removal plumbing with a tiny randomly initialised HTDemucs.

PLUMBING ONLY: the tiny model separates nothing meaningful. These tests check shapes, rates, channel handling,
that the kept signal is exactly the sum of the non-vocals stems (the vocals estimate removed), determinism, weight
loading from local files, and the offline error. Real separation quality needs the pretrained htdemucs weights.
"""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from ssmttm.corpus import vocals
from ssmttm.errors import MissingWeightsError, UserFacingError
from tests.corpus._audio_fixtures import TINY_HTDEMUCS_KWARGS, tiny_htdemucs, tone

MODEL_RATE = 44100


@pytest.fixture(scope="module")
def remover() -> vocals.VocalRemover:
    return vocals.VocalRemover(tiny_htdemucs(), segment_seconds=1.0, name="tiny")


def mixture(seconds: float, rate: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = 0.05 * rng.standard_normal((channels, round(seconds * rate))).astype(np.float32)
    return tone(220, seconds, rate, channels=channels) + noise  # (C, N)


@pytest.mark.parametrize(("channels", "rate"), [(1, 22050), (2, 48000), (2, MODEL_RATE)])
def test_output_is_mono_at_the_model_rate(remover, channels, rate):
    out = remover(mixture(1.2, rate, channels), rate)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.shape[0] - round(1.2 * MODEL_RATE)) <= 1
    assert np.isfinite(out).all() and np.abs(out).max() > 0


def test_mono_input_is_duplicated_to_the_model_channels(remover):
    mono = mixture(0.5, MODEL_RATE, 1)
    layout = remover._to_model_layout(mono, MODEL_RATE)  # (2, N)
    assert layout.shape == (2, mono.shape[1])
    np.testing.assert_array_equal(layout[0], layout[1])


def test_kept_signal_is_the_mixture_minus_the_vocals_estimate(remover):
    x = mixture(1.5, MODEL_RATE, 2)
    stems, mean = remover.separate(x, MODEL_RATE)  # (S, 2, N)
    assert stems.shape == (4, 2, x.shape[1])
    out = remover(x, MODEL_RATE)
    vocals_idx = remover.sources.index("vocals")
    all_stems = stems.sum(axis=0) + mean  # what the model reconstructs of the whole mixture
    np.testing.assert_allclose(out, (all_stems - stems[vocals_idx]).mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(out, (stems[[0, 1, 2]].sum(axis=0) + mean).mean(axis=0), atol=1e-6)
    assert np.abs(stems[vocals_idx]).max() > 1e-4  # the vocals estimate is not empty, so removing it matters
    assert not np.allclose(out, all_stems.mean(axis=0), atol=1e-5)


def test_stems_come_from_demucs_apply_model_on_the_standardised_mixture(remover):
    from demucs.apply import apply_model

    x = mixture(1.1, MODEL_RATE, 2)
    mix = torch.from_numpy(x)
    ref = mix.mean(0)
    direct = apply_model(
        remover.model, ((mix - ref.mean()) / (ref.std() + 1e-8))[None], shifts=0, split=True, overlap=0.25, segment=1.0
    )[0] * (ref.std() + 1e-8)  # (S, 2, N)
    stems, _ = remover.separate(x, MODEL_RATE)
    np.testing.assert_allclose(stems, direct.numpy(), atol=1e-6)


def test_vocals_source_is_found_by_name_not_position():
    kwargs = dict(TINY_HTDEMUCS_KWARGS, sources=["vocals", "drums", "bass", "other"])
    torch.manual_seed(1)
    from demucs.htdemucs import HTDemucs

    rem = vocals.VocalRemover(HTDemucs(**kwargs).eval(), segment_seconds=1.0)
    assert rem.keep == [1, 2, 3]
    x = mixture(0.8, MODEL_RATE, 2)
    stems, mean = rem.separate(x, MODEL_RATE)
    np.testing.assert_allclose(rem(x, MODEL_RATE), (stems[1:].sum(axis=0) + mean).mean(axis=0), atol=1e-6)


def test_deterministic(remover):
    x = mixture(1.0, 32000, 2)
    np.testing.assert_array_equal(remover(x, 32000), remover(x, 32000))


def test_configuration_errors():
    from demucs.htdemucs import HTDemucs

    no_vocals = HTDemucs(**dict(TINY_HTDEMUCS_KWARGS, sources=["drums", "bass", "other"]))
    with pytest.raises(UserFacingError, match="no 'vocals' source"):
        vocals.VocalRemover(no_vocals, segment_seconds=1.0)
    with pytest.raises(UserFacingError, match="segment_seconds = 7.8 exceeds"):
        vocals.VocalRemover(tiny_htdemucs(), segment_seconds=7.8)
    if not torch.cuda.is_available():
        with pytest.raises(UserFacingError, match="CUDA is not available"):
            vocals.resolve_device("cuda")
    assert vocals.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def _save_demucs_safetensors(model, path):
    """The single-model safetensors layout demucs' Hugging Face loader reads (class and kwargs in metadata)."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(
        state,
        str(path),
        metadata={"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": json.dumps(TINY_HTDEMUCS_KWARGS)},
    )


def test_load_from_local_safetensors_and_bag_folder(tmp_path, remover):
    x = mixture(0.7, MODEL_RATE, 2)
    expected = remover(x, MODEL_RATE)
    single = tmp_path / "tiny.safetensors"
    _save_demucs_safetensors(remover.model, single)
    bag_dir = tmp_path / "bag"
    bag_dir.mkdir()
    _save_demucs_safetensors(remover.model, bag_dir / "abc123.safetensors")
    (bag_dir / "htdemucs.yaml").write_text(yaml.safe_dump({"models": ["abc123"]}))
    for path in (single, bag_dir):
        cfg = vocals.VocalRemovalConfig(enabled=True, weights_path=str(path), device="cpu", segment_seconds=1.0)
        loaded = vocals.load_vocal_remover(cfg)
        np.testing.assert_allclose(loaded(x, MODEL_RATE), expected, atol=1e-6)
        assert loaded.describe()["kept_sources"] == ["drums", "bass", "other"]
        assert "device" not in loaded.describe()  # provenance must not depend on the machine


def test_missing_weights_name_the_place_and_the_fetch_command(tmp_path, monkeypatch):
    cfg = vocals.VocalRemovalConfig(enabled=True, weights_path=str(tmp_path / "nope.th"), device="cpu")
    with pytest.raises(MissingWeightsError, match=r"nope\.th: not found") as err:
        vocals.load_vocal_remover(cfg)
    assert "get_model('htdemucs')" in str(err.value)

    # Offline with empty caches: both network entry points of demucs.pretrained.get_model fail.
    import demucs.hf

    def hub_offline(*args, **kwargs):
        raise OSError("offline mode is enabled")

    def url_offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(demucs.hf, "get_hf_model", hub_offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", url_offline)
    cfg = vocals.VocalRemovalConfig(enabled=True, weights_path=None, device="cpu")
    with pytest.raises(MissingWeightsError) as err:
        vocals.load_vocal_remover(cfg)
    message = str(err.value)
    assert "htdemucs" in message and "models--adefossez--HTDemucs" in message and "checkpoints" in message
    assert "python -c \"from demucs.pretrained import get_model; get_model('htdemucs')\"" in message
