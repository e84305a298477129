"""What an export keeps of the parts that do not ship as workspace weights: a pretrained codec by its identity (the
loader rebuilds it from descript's cache: a tiny DAC in descript's .pth format here), and a text encoder given as a
local folder as a copy of that folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ssmttm.api import TextToMusic
from ssmttm.artifacts import sha256_file
from ssmttm.codec import build_dac
from ssmttm.codec.pretrained import PretrainedConfig
from ssmttm.codec.stage import CodecConfig, run_codec
from ssmttm.errors import MissingWeightsError
from ssmttm.export import export_run
from ssmttm.model_parts import EXPORT_MANIFEST
from ssmttm.text.encoder import resolve_encoder
from tests.api._workspace import TRAINED_RUN, make_workspace
from tests.codec import TINY_KWARGS


def test_pretrained_codec_is_exported_by_identity_and_rebuilt_from_descripts_cache(tmp_path, repo_root, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    release = tmp_path / "home" / ".cache" / "descript" / "dac" / "weights_44khz_8kbps_0.0.1.pth"
    release.parent.mkdir(parents=True)
    torch.manual_seed(3)
    build_dac(TINY_KWARGS).eval().save(str(release), package=False)  # descript's release format
    pretrained = CodecConfig(mode="pretrained", pretrained=PretrainedConfig(sha256=sha256_file(release)))

    def converted_codec(folder: Path) -> Path:
        run_codec(pretrained, [], folder, seed=0)
        return folder

    workspace = make_workspace(tmp_path / "workspace", repo_root, codec=converted_codec)
    exported = export_run(workspace, TRAINED_RUN, tmp_path / "export")
    manifest = json.loads((exported / EXPORT_MANIFEST).read_text())
    assert not (exported / "codec").exists() and manifest["codec"]["path"] is None
    assert manifest["codec"]["identity"]["source"]["sha256"] == sha256_file(release)
    from_export, _ = TextToMusic.load(exported).generate(["calm piano"], seed=2)
    from_workspace, _ = TextToMusic.load(workspace).generate(["calm piano"], seed=2)
    assert from_export.equal(from_workspace)
    release.unlink()
    with pytest.raises(MissingWeightsError, match="python -m dac download --model_type 44khz"):
        TextToMusic.load(exported)


def test_a_local_encoder_folder_is_copied_into_the_export_and_loaded_from_there(tmp_path, repo_root):
    workspace = make_workspace(tmp_path / "workspace", repo_root)
    folder = tmp_path / "encoders" / "my-minilm"
    shutil.copytree(resolve_encoder("minilm"), folder)
    configs = [
        *workspace.glob("results/train_lm/*/*/config.json"),
        workspace / "results/train_refiner/final/config.json",
    ]
    for config in configs:  # the LM and the refiner as if trained with text.encoder: <that folder>
        data = json.loads(config.read_text())
        data["text"]["encoder"] = str(folder)
        config.write_text(json.dumps(data))
    exported = export_run(workspace, TRAINED_RUN, tmp_path / "export")
    shutil.rmtree(folder)  # only the export's copy is left
    entry = json.loads((exported / EXPORT_MANIFEST).read_text())["text_encoders"][str(folder)]
    assert entry["kind"] == "folder" and (exported / entry["path"] / "model.safetensors").is_file()
    model = TextToMusic.load(exported)
    assert Path(model.lm_encoder.source) == exported / entry["path"]
    wav, _ = model.generate(["calm piano"], seed=1)
    assert torch.isfinite(wav).all() and wav.abs().max() > 0
