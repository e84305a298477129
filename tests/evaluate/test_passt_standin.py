"""The PaSST stand-ins of scripts/standins/passt.py load through params the way real release files do.

Both release files (20 s for kl_passt, 10 s for kl_passt_sam) are built as make_all.py builds them (a tiny PaSST in
the release format with seeded random weights, STANDIN.txt beside them), loaded by `load_models` from a ModelsConfig
that names them, and give 527 AudioSet class probabilities for a short clip through both protocols (audiocraft's
segments and stable-audio-metrics' windows). The loader reads the network's sizes from the tensors: for the shapes of
the real releases it builds exactly hear21passt's get_model(arch) (checked without a 345 MB file). hear21passt is
installed without timm (scripts/setup_env.sh); without it, skipped.
"""

from __future__ import annotations

import contextlib
import io
import sys

import numpy as np
import pytest
import torch

from scripts.standins import common
from scripts.standins import passt as passt_standin
from ssmttm import stand_ins
from ssmttm.errors import UserFacingError
from ssmttm.evaluate import embeddings as E
from ssmttm.evaluate import passt_network, sam
from ssmttm.evaluate.passt_import import import_hear21passt_models

pytestmark = pytest.mark.skipif(
    passt_standin.missing_package() is not None, reason=f"PaSST stand-in: {passt_standin.missing_package()}"
)


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory):
    """models/eval as make_all.py writes it: both release file names, one STANDIN.txt."""
    folder = tmp_path_factory.mktemp("models") / "eval"
    for length_s, file_name in passt_standin.FILE_NAMES.items():
        passt_standin.build_random_passt(folder / file_name, length_s, seed=0)
    common.write_label(folder, "evaluation networks PaSST 20 s and 10 s", "PaSST-S (kkoutini/PaSST release)")
    return folder


def _config(folder) -> E.ModelsConfig:
    return E.ModelsConfig(
        passt=E.PasstWeights(str(folder / passt_standin.FILE_NAMES[20]), pretrained_length_s=20),
        passt_10s=E.PasstWeights(str(folder / passt_standin.FILE_NAMES[10]), pretrained_length_s=10),
    )


def test_both_stand_ins_load_from_params_and_give_527_class_probabilities(eval_folder):
    timm_before = "timm" in sys.modules
    models = E.load_models(_config(eval_folder), seed=0)
    assert isinstance(models["passt"], E.Passt) and isinstance(models["passt_10s"], E.Passt)
    assert ("timm" in sys.modules) == timm_before  # the import helper leaves no stand-in `timm` behind

    clip = np.random.default_rng(0).standard_normal(2 * E.Passt.sample_rate).astype(np.float32) * 0.1  # 2 s
    audiocraft = models["passt"].probabilities(clip)  # (527,) softmax, mean over 20 s segments
    stable_audio = sam.passt_probabilities(models["passt_10s"], clip)  # (527,) softmax of the window logits
    for probabilities in (audiocraft, stable_audio):
        assert probabilities.shape == (527,) and np.all(probabilities >= 0)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(audiocraft, audiocraft[0])  # random weights still tell the classes apart

    for name, length_s in (("passt", 20), ("passt_10s", 10)):
        card = models[name].card()
        assert card["weights"].endswith(passt_standin.FILE_NAMES[length_s]) and card["window_s"] == length_s
        assert stand_ins.label_beside(card["weights"]).startswith("RANDOM STAND-IN for plumbing tests")
        assert card["network"].startswith("64 wide, 2 blocks, 1 heads")
    # tiny: under 1 MB a file (the releases: 345 MB), the positional embeddings at the releases' 12 x 200 and 12 x 99
    assert all((eval_folder / name).stat().st_size < 1_000_000 for name in passt_standin.FILE_NAMES.values())
    assert models["passt"].model.net.time_new_pos_embed.shape == (1, 64, 1, 200)
    assert models["passt_10s"].model.net.time_new_pos_embed.shape == (1, 64, 1, 99)


def _refusal(path) -> str:
    with pytest.raises(UserFacingError) as refused:
        E.load_models(E.ModelsConfig(passt_10s=E.PasstWeights(str(path), pretrained_length_s=10)), seed=0)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_a_file_that_is_not_the_release_format_is_refused_in_one_line(eval_folder, tmp_path):
    garbage = tmp_path / passt_standin.FILE_NAMES[10]
    garbage.write_bytes(b"not a checkpoint")
    assert "not a PaSST checkpoint (torch.load cannot read it" in _refusal(garbage)
    # the 20 s release where the 10 s one belongs: its time positional embeddings have 200 patches, not 99
    assert "does not match PaSST passt_s_swa_p16_128_ap476 (positional embeddings for 12 x 200" in _refusal(
        eval_folder / passt_standin.FILE_NAMES[20]
    )
    other = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, other)
    assert "its tensors do not form a PaSST: no tensor patch_embed.proj.weight" in _refusal(other)

    release = torch.load(eval_folder / passt_standin.FILE_NAMES[10], weights_only=True)  # the 10 s stand-in's tensors

    def altered(name: str, without: str = "\0", **changes) -> object:
        """The stand-in's tensors less those whose names start with `without`, with `changes` replacing some."""
        path = tmp_path / f"{name}.pt"
        torch.save({**{k: v for k, v in release.items() if not k.startswith(without)}, **changes}, path)
        return path

    no_heads = altered("width_96", **{"patch_embed.proj.weight": torch.zeros(96, 1, 16, 16)})
    assert "embedding width 96 is not a multiple of the 64-wide attention heads" in _refusal(no_heads)
    assert "transformer blocks [1] are not blocks.0 .. blocks.N" in _refusal(altered("gap", without="blocks.0."))
    missing = altered("missing", without="blocks.1.norm1.weight")
    assert "does not match PaSST passt_s_swa_p16_128_ap476 (missing ['blocks.1.norm1.weight']" in _refusal(missing)
    wider_mlp = altered("mlp", **{"blocks.1.mlp.fc1.weight": torch.zeros(512, 64)})
    assert "does not match PaSST passt_s_swa_p16_128_ap476 (tensor shapes differ)" in _refusal(wider_mlp)
    fine_tuned = altered("openmic", **{"head.1.weight": torch.zeros(20, 64), "head.1.bias": torch.zeros(20)})
    assert "a PaSST with 20 classes, not the 527 AudioSet classes" in _refusal(fine_tuned)


@pytest.mark.parametrize("length_s", [10, 20, 30])
def test_the_real_release_shapes_give_exactly_get_models_network(length_s, monkeypatch):
    """get_model(arch) of the real release (randomly initialised, never saved) -> its state dict's shapes -> the
    inferred sizes are PaSST-S's, and the network built from them is get_model's, module by module."""
    passt_models = import_hear21passt_models()
    # structure only: skip the 86 M-parameter random initialisation (seconds) in both builds
    monkeypatch.setattr(passt_models.PaSST, "init_weights", lambda self, mode="": None)
    for layer in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm):
        monkeypatch.setattr(layer, "reset_parameters", lambda self: None)
    arch, input_tdim = E.PASST_ARCHS[length_s]
    with contextlib.redirect_stdout(io.StringIO()):
        reference = passt_models.get_model(arch=arch, pretrained=False, n_classes=527, input_tdim=input_tdim)

    architecture = passt_network.infer_architecture(reference.state_dict())
    assert architecture == passt_network.PasstArchitecture(
        embed_dim=768, depth=12, num_heads=12, freq_patches=12, time_patches=input_tdim // 10, n_classes=527
    )
    assert architecture.time_patches == {10: 99, 20: 200, 30: 300}[length_s]
    built = passt_network.build_network(architecture, arch, input_tdim)
    assert repr(built) == repr(reference) and built.default_cfg == reference.default_cfg
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    reference_modules = dict(reference.named_modules())
    for name, module in built.named_modules():  # every setting that is not a tensor: num_heads, scale, stride ...
        settings = {k: v for k, v in vars(module).items() if not k.startswith("_")}
        assert settings == {k: v for k, v in vars(reference_modules[name]).items() if not k.startswith("_")}, name


def test_a_rebuild_writes_the_same_bytes(eval_folder, tmp_path):
    again = passt_standin.build_random_passt(tmp_path / passt_standin.FILE_NAMES[10], 10, seed=0)
    assert again.read_bytes() == (eval_folder / passt_standin.FILE_NAMES[10]).read_bytes()
