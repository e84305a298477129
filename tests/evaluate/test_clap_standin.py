"""The LAION-CLAP stand-ins of scripts/standins/clap.py load through params the way the release files do.

Both release checkpoints (music_audioset_epoch_15_esc_90.14.pt, HTSAT-base, for clap_score and fad_clap;
630k-audioset-fusion-best.pt, HTSAT-tiny with fusion, for clap_score_sam) and the Hugging Face files laion_clap reads
(roberta-base, the bert-base-uncased and facebook/bart-base tokenizers) are built as make_all.py builds them, then a
child process with only that cache (HF_HUB_CACHE, offline) loads them with `load_models` from a ModelsConfig that
names them and computes audio and text embeddings and a CLAP score. A child process: huggingface_hub reads
HF_HUB_CACHE once per process, and laion_clap extends sys.path and imports torchvision for good. The loader reads
HTSAT's sizes from the tensors (the stand-ins' audio encoders are tiny): for the shapes of the real releases it builds
exactly laion_clap's CLAP_Module (checked on laion_clap's own HTSAT-base and HTSAT-tiny fusion models, unsaved).
laion-clap is installed by scripts/setup_env.sh; without it, skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.standins import clap as clap_standin
from scripts.standins import common
from ssmttm import stand_ins
from ssmttm.evaluate import clap_network

pytestmark = pytest.mark.skipif(
    clap_standin.missing_package() is not None, reason=f"CLAP stand-in: {clap_standin.missing_package()}"
)
REPO_ROOT = Path(__file__).resolve().parents[2]

# Run in the child: load both entries through params, embed, score; then the same with roberta-base's tokenizer
# files gone (transformers would build an empty tokenizer: the loader must refuse).
CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import torch
    from ssmttm.errors import UserFacingError
    from ssmttm.evaluate import embeddings as E
    from ssmttm.evaluate.metrics import Bootstrap, clap_score_metric

    eval_dir, roberta = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = E.ModelsConfig(
        clap=E.ClapWeights(str(eval_dir / "music_audioset_epoch_15_esc_90.14.pt")),
        clap_fusion=E.ClapWeights(
            str(eval_dir / "630k-audioset-fusion-best.pt"), enable_fusion=True, audio_model="HTSAT-tiny"
        ),
    )
    models = E.load_models(cfg, seed=0)
    rng = np.random.default_rng(0)
    # 3 s (padded to the 10 s window) and 12 s (cropped; the fusion model resizes its whole mel with torchvision)
    clips = [0.1 * rng.standard_normal(s * E.Clap.sample_rate).astype(np.float32) for s in (3, 12)]
    captions = ["a calm piano melody with soft strings", "an upbeat electronic dance track with heavy drums"]
    boot = Bootstrap(resamples=50, confidence=0.95, seed=0, min_clips=2)
    out = {}
    for name in ("clap", "clap_fusion"):
        model = models[name]
        audio = [model.embed_audio(c) for c in clips]
        entry, scores = clap_score_metric(model, clips, captions, boot, "test_set", "clap_score")
        out[name] = {
            "type": type(model).__name__,
            "audio": [a.tolist() for a in audio],
            "text": model.embed_text(captions).tolist(),
            "scores": scores,
            "entry": entry,
        }
    out["cards"] = {name: models[name].card()["network"] for name in ("clap", "clap_fusion")}
    odd_state = torch.load(cfg.clap.weights_path, map_location="cpu", weights_only=True)
    odd_state["state_dict"]["module.audio_projection.0.weight"] = torch.zeros(512, 96)  # HTSAT gives 128
    odd = eval_dir / "odd" / "music_audioset_epoch_15_esc_90.14.pt"
    odd.parent.mkdir(exist_ok=True)
    torch.save(odd_state, odd)
    try:
        E.Clap(odd, "0" * 64, cfg.clap, "cpu")
        out["odd"] = "loaded"
    except UserFacingError as exc:
        out["odd"] = str(exc)
    swapped = E.ClapWeights(cfg.clap.weights_path, enable_fusion=True, audio_model="HTSAT-tiny")
    try:  # the HTSAT-base release named as the fusion model
        E.Clap(Path(swapped.weights_path), "0" * 64, swapped, "cpu")
        out["swapped"] = "loaded"
    except UserFacingError as exc:
        out["swapped"] = str(exc)
    hidden = ("vocab.json", "merges.txt")
    for name in hidden:  # put back afterwards: the fixture's cache is shared by the module's tests
        (roberta / name).rename(roberta / f"{name}.hidden")
    try:
        E.Clap(Path(cfg.clap_fusion.weights_path), "0" * 64, cfg.clap_fusion, "cpu")
        out["without_tokenizer"] = "loaded"
    except UserFacingError as exc:
        out["without_tokenizer"] = str(exc)
    finally:
        for name in hidden:
            (roberta / f"{name}.hidden").rename(roberta / name)
    """
)

# Run in the same child next (one laion_clap import): laion_clap's own CLAP_Module for both releases (random, never
# saved); the sizes read from its state dict must rebuild it exactly. Then the stand-in writer once more, for its bytes.
RELEASE_SHAPES_CHILD = textwrap.dedent(
    """
    import dataclasses
    from scripts.standins import clap as clap_standin
    from ssmttm.evaluate import clap_network
    from ssmttm.evaluate.clap_import import import_laion_clap

    out["release_shapes"] = {}
    laion_clap = import_laion_clap()
    for audio_model, fusion in (("HTSAT-base", False), ("HTSAT-tiny", True)):
        torch.manual_seed(0)
        reference = laion_clap.CLAP_Module(enable_fusion=fusion, amodel=audio_model, device="cpu")
        state = reference.model.state_dict()
        architecture = clap_network.infer_architecture(state)
        built = clap_network.build_clap_module(architecture, audio_model, fusion, "cpu")
        built_state = built.model.state_dict()
        out["release_shapes"][audio_model] = {
            "architecture": dataclasses.asdict(architecture),
            "release": architecture.release_name(),
            "same_printout": repr(built.model) == repr(reference.model),
            "same_keys": list(built_state) == list(state),
            "same_shapes": all(built_state[k].shape == v.shape for k, v in state.items() if k in built_state),
            "same_buffers": all(torch.equal(built_state[k], v) for k, v in state.items() if k.endswith("_index")),
            "same_config": built.model_cfg == reference.model_cfg,
            "printout_lines": len(repr(reference.model).splitlines()),
        }
        del reference, built
    # after build_clap_module, laion_clap builds its own sizes again (its config and create_htsat_model are back)
    factory = sys.modules[laion_clap.hook.create_model.__module__]
    model_module = sys.modules[factory.CLAP.__module__]
    out["release_shapes"]["restored"] = (
        factory._MODEL_CONFIGS["HTSAT-base"]["embed_dim"] == 1024
        and model_module.create_htsat_model.__name__ == "create_htsat_model"
    )
    clap_standin._write_checkpoint(Path(sys.argv[3]), "clap_fusion", 0)
    print("RESULT " + json.dumps(out))
    """
)


def _child_env(hub) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HF_HOME", None)
    return env


def _run_child(script: str, hub, *args) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        env=_child_env(hub),
        cwd=REPO_ROOT,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """(hub cache, models/eval) as make_all.py writes them: labelled snapshots and both release checkpoints."""
    root = tmp_path_factory.mktemp("clap")
    hub, eval_dir = root / "hf", root / "models" / "eval"
    snapshots = clap_standin.build_hf_standins(hub, seed=0)
    clap_standin.build_checkpoints(eval_dir, hub, seed=0)
    common.write_label(eval_dir, "evaluation networks LAION-CLAP", "LAION-CLAP release checkpoints")
    return hub, eval_dir, snapshots


@pytest.fixture(scope="module")
def child_result(standins, tmp_path_factory):
    """What CHILD and RELEASE_SHAPES_CHILD found, in one child process, and where it wrote the stand-in again."""
    hub, eval_dir, snapshots = standins
    again = tmp_path_factory.mktemp("again") / "630k-audioset-fusion-best.pt"
    result = _run_child(CHILD + RELEASE_SHAPES_CHILD, hub, eval_dir, snapshots[clap_standin.ROBERTA], again)
    return result, again


def test_checkpoints_have_the_release_layout_that_load_ckpt_reads(standins):
    hub, eval_dir, snapshots = standins
    for entry, (file_name, _, fusion) in clap_standin.CHECKPOINTS.items():
        checkpoint = torch.load(eval_dir / file_name, map_location="cpu", weights_only=True)
        assert set(checkpoint) == {"epoch", "name", "state_dict"}
        state = checkpoint["state_dict"]
        assert all(key.startswith("module.") for key in state)  # saved from DistributedDataParallel
        assert state["module.text_branch.embeddings.position_ids"].shape == (1, clap_standin.ROBERTA_MAX_POSITIONS)
        # the text projection reads roberta's 768-d pooler output, whatever the stand-in's depth
        assert state["module.text_projection.0.weight"].shape[1] == 768
        assert "random stand-in" in checkpoint["name"]
        assert stand_ins.label_beside(eval_dir / file_name) is not None
        assert any(".fusion_model." in key for key in state) == fusion, entry  # fusion's attention weights
        # the tiny HTSAT: 16-wide patches, stage 3 (128 wide) feeds the audio projection
        assert state["module.audio_branch.patch_embed.proj.weight"].shape == (16, 1, 4, 4)
        assert state["module.audio_projection.0.weight"].shape == (512, 128)
        assert (eval_dir / file_name).stat().st_size < 40_000_000  # at HTSAT-base / -tiny size: 317 MB / 152 MB
    for repo_id, snapshot in snapshots.items():
        assert (snapshot / common.STANDIN_FILE).is_file(), repo_id
    vocab = json.loads((snapshots[clap_standin.ROBERTA] / "vocab.json").read_text(encoding="utf-8"))
    config = json.loads((snapshots[clap_standin.ROBERTA] / "config.json").read_text())
    assert config["vocab_size"] == len(vocab) and config["hidden_size"] == 768


def test_both_checkpoints_load_from_params_and_embed_audio_and_text(standins, child_result):
    _, eval_dir, _ = standins
    result, _ = child_result
    for name in ("clap", "clap_fusion"):
        got = result[name]
        assert got["type"] == "Clap"
        audio, text = np.array(got["audio"]), np.array(got["text"])  # (2, 512) each
        assert audio.shape == (2, 512) and text.shape == (2, 512)
        assert np.isfinite(audio).all() and np.isfinite(text).all()
        np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)  # laion_clap L2-normalises
        np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
        assert not np.allclose(audio[0], audio[1]) and not np.allclose(text[0], text[1])
        # clip i with caption i; clap_score_metric embeds the clips again: equal only if the seeded crop repeats
        expected = np.sum(audio * text, axis=1)
        np.testing.assert_allclose(got["scores"], expected, atol=1e-6)
        assert got["entry"]["value"] == pytest.approx(float(np.mean(expected)), abs=1e-6)
    for name in ("clap", "clap_fusion"):  # the tiny HTSAT the file holds, not laion_clap's fixed sizes
        assert result["cards"][name].startswith("HTSAT 16 wide, depths [1, 1, 1, 1], heads [1, 2, 4, 8], window 8")
    assert "not a LAION-CLAP checkpoint of HTSAT-tiny with fusion True" in result["swapped"]
    assert "CLAP with fusion False" in result["swapped"] and "\n" not in result["swapped"]
    assert result["odd"].startswith(str(eval_dir / "odd" / "music_audioset_epoch_15_esc_90.14.pt"))
    assert "audio_projection.0.weight has shape (512, 96), HTSAT gives 128" in result["odd"]
    assert "\n" not in result["odd"]
    assert "roberta-base" in result["without_tokenizer"] and "HF_HUB_CACHE" in result["without_tokenizer"]


def test_release_shapes_rebuild_laion_clap_exactly_and_the_stand_in_bytes_repeat(standins, child_result):
    _, eval_dir, _ = standins
    result, again = child_result
    result = result["release_shapes"]
    expected = {  # laion_clap 1.1.7's create_htsat_model for "base" and "tiny"
        "HTSAT-base": {"embed_dim": 128, "depths": [2, 2, 12, 2], "fusion": False},
        "HTSAT-tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "fusion": True},
    }
    for audio_model, sizes in expected.items():
        got = result[audio_model]
        assert got["architecture"] == {
            **sizes,
            "num_heads": [4, 8, 16, 32],
            "window_size": 8,
            "num_classes": 527,
        }
        assert got["release"] == audio_model
        assert got["printout_lines"] > 100  # the whole module tree is compared, not a summary line
        for check in ("same_printout", "same_keys", "same_shapes", "same_buffers", "same_config"):
            assert got[check], (audio_model, check)
    assert result["restored"]
    assert again.read_bytes() == (eval_dir / "630k-audioset-fusion-best.pt").read_bytes()  # seeded, same bytes


def _stand_in_state(eval_dir) -> dict:
    checkpoint = torch.load(eval_dir / "music_audioset_epoch_15_esc_90.14.pt", map_location="cpu", weights_only=True)
    return {key[len("module.") :]: tensor for key, tensor in checkpoint["state_dict"].items()}


def test_shapes_that_form_no_htsat_are_named(standins):
    _, eval_dir, _ = standins
    state = _stand_in_state(eval_dir)
    architecture = clap_network.infer_architecture(state)
    assert architecture.describe() == "HTSAT 16 wide, depths [1, 1, 1, 1], heads [1, 2, 4, 8], window 8, fusion False"
    assert architecture.num_features == 128 and architecture.release_name() is None
    broken = {
        "no stage 2": {k: v for k, v in state.items() if not k.startswith("audio_branch.layers.2.")},
        "window": {**state, "audio_branch.layers.1.blocks.0.attn.relative_position_bias_table": torch.zeros(48, 2)},
        "head width": {
            **state,
            "audio_branch.layers.3.blocks.0.attn.relative_position_bias_table": torch.zeros(225, 7),
        },
        "patches": {**state, "audio_branch.patch_embed.proj.weight": torch.zeros(16, 1, 8, 8)},
        "tscam": {**state, "audio_branch.tscam_conv.weight": torch.zeros(527, 64, 2, 3)},
    }
    messages = {}
    for name, odd in broken.items():
        with pytest.raises(clap_network.NotAClap) as refused:
            clap_network.infer_architecture(odd)
        messages[name] = str(refused.value)
    assert "stages [0, 1, 3] are not" in messages["no stage 2"]
    assert "has 48 rows, not (2W - 1)**2" in messages["window"]
    assert "7 heads do not form a 128 wide Swin block" in messages["head width"]
    assert "(16, 1, 8, 8)" in messages["patches"]
    assert "reads 64 channels, HTSAT gives 128" in messages["tscam"]
