"""`ssmttm generate --baseline`: a MusicGen reference system from its weights, on a tiny random MusicGen.

The stand-in (scripts/standins/musicgen.py) is a real MusicgenForConditionalGeneration + MusicgenProcessor saved with
save_pretrained, so the CLI loads it exactly as it would load facebook/musicgen-small; its audio is noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from scripts.standins.musicgen import SAMPLE_RATE, save_tiny_musicgen
from ssmttm.artifacts import sha256_file
from ssmttm.cli import main
from ssmttm.config import ParamsError, load_params
from ssmttm.evaluate import cards
from ssmttm.evaluate.clipsets import read_clip_sets
from ssmttm.generate.baseline import MusicgenBaselineConfig
from ssmttm.generate.tokens import caption_seed
from tests.evaluate._fixtures import music, write_folder

SECONDS = 1.0
SEED = 3
CAPTIONS = {  # id -> caption (three of one text length bucket, one longer than TEXT_BUCKET tokens)
    "calm": "a calm piano piece with strings",
    "upbeat": "an upbeat electronic track with drums, 128 bpm",
    "slow": "slow guitar",
    "long": "an epic piece " + "with dark strings and slow drums " * 12,
}


def write_params(tmp: Path, repo_root: Path, captions: dict[str, str], name: str, **entry) -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    caption_file = tmp / f"{name}-captions.jsonl"
    caption_file.write_text("".join(json.dumps({"id": i, "caption": c}) + "\n" for i, c in captions.items()))
    params["seed"] = SEED
    params["generate"].update(captions="file", captions_path=str(caption_file), seconds=SECONDS, max_captions=None)
    params["evaluate"]["bootstrap_resamples"] = 10
    params["baselines"] = {"musicgen_small": {"kind": "musicgen", "batch_size": 2, "device": "cpu", **entry}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_cli(params: Path, out: Path) -> int:
    return main(["generate", "--params", str(params), "--baseline", "musicgen_small", "--out", str(out)])


def wavs(folder: Path) -> dict[str, str]:
    return {p.stem: sha256_file(p) for p in sorted((folder / "pretrained").glob("*.wav"))}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_musicgen(tmp_path_factory.mktemp("tiny-musicgen"))


@pytest.fixture(scope="module")
def generated(tiny, tmp_path_factory, repo_root) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("baseline")
    params = write_params(tmp, repo_root, CAPTIONS, "params", name_or_path=str(tiny))
    out = tmp / "results/generate/musicgen_small"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests' own runs (conftest): CPU float results depend on the thread count
    try:
        assert run_cli(params, out) == 0
    finally:
        torch.set_num_threads(threads)
    return {"tmp": tmp, "params": params, "out": out}


def test_one_clip_per_caption_at_musicgens_rate_with_the_runs_seeds(generated, capsys):
    out = generated["out"]
    rows = [json.loads(line) for line in (out / "pretrained/manifest.jsonl").read_text().splitlines()]
    assert [r["caption_id"] for r in rows] == sorted(CAPTIONS)
    for row in rows:
        assert row["status"] == "ok" and row["caption"] == CAPTIONS[row["caption_id"]]
        assert row["seed"] == caption_seed(SEED, row["caption_id"])  # the seed the LM runs give this caption
        assert row["step"] is None and row["variant"] == "pretrained" and row["baseline"] == "musicgen_small"
        info = sf.info(str(out / "pretrained" / row["path"]))
        assert (info.samplerate, info.frames, info.channels) == (SAMPLE_RATE, round(SECONDS * SAMPLE_RATE), 1)
        assert sha256_file(out / "pretrained" / row["path"]) == row["sha256"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["mode"] == "baseline" and summary["variants"] == ["pretrained"]
    assert summary["folders"] == {"pretrained": {"ok": 4, "failed": 0}}
    assert summary["audio"]["sample_rate"] == SAMPLE_RATE and summary["audio"]["frame_rate"] == 50.0
    assert summary["settings"]["guidance_scale"] == 3.0 and summary["settings"]["top_k"] == 250
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["files"]["model.safetensors"] == sha256_file(
        Path(summary["model"]["folder"]) / "model.safetensors"
    )
    audio = [sf.read(str(p))[0] for p in sorted((out / "pretrained").glob("*.wav"))]
    assert all(np.abs(a - audio[0]).max() > 1e-3 for a in audio[1:])  # each caption and seed its own clip


def test_a_rerun_gives_the_same_bytes_and_a_clip_does_not_depend_on_its_batch(generated, tiny, repo_root):
    tmp, first = generated["tmp"], wavs(generated["out"])
    again = tmp / "again"
    assert run_cli(generated["params"], again) == 0
    assert wavs(again) == first
    # "upbeat" alone: its batch is [upbeat, upbeat (padding)] instead of [calm, upbeat]
    alone = write_params(tmp, repo_root, {"upbeat": CAPTIONS["upbeat"]}, "alone", name_or_path=str(tiny))
    assert run_cli(alone, tmp / "alone") == 0
    assert wavs(tmp / "alone") == {"upbeat": first["upbeat"]}


def test_a_run_resumes_clip_by_clip(generated, capsys):
    out, first = generated["out"], wavs(generated["out"])
    (out / "pretrained/slow.wav").unlink()  # what a kill before the last batch leaves (the row names a missing file)
    assert run_cli(generated["params"], out) == 0
    assert "1 made now, 3 kept" in capsys.readouterr().out
    assert wavs(out) == first


def test_evaluate_reads_the_folder_as_one_set(generated, tmp_path):
    reference = tmp_path / "reference"
    clips = [
        ({"caption_id": i, "caption": c, "variant": "original"}, music(100, "C", "major", 1.5))
        for i, c in CAPTIONS.items()
    ]
    write_folder(reference / "original", clips)
    out = tmp_path / "evaluate"
    argv = ["evaluate", "--params", str(generated["params"]), "--reference", str(reference), "--generated"]
    assert main([*argv, str(generated["out"]), "--out", str(out)]) == 0
    sets = json.loads((out / "metrics.json").read_text())["sets"]
    assert list(sets) == ["musicgen_small/pretrained"]
    entry = sets["musicgen_small/pretrained"]
    assert entry["n_clips"] == 4 and entry["n_paired"] == 4 and entry["role"] == "generated"


def test_absent_weights_give_a_not_computed_summary_and_evaluate_shows_it(
    generated, repo_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    params = write_params(tmp_path, repo_root, CAPTIONS, "hub", name_or_path="facebook/musicgen-small")
    out = tmp_path / "musicgen_small"
    assert run_cli(params, out) == 0
    assert "hf download facebook/musicgen-small" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "not computed" and summary["fetch"] == "hf download facebook/musicgen-small"
    assert "not in the Hugging Face cache" in summary["reason"] and summary["captions"]["count"] == 4
    assert not list(out.rglob("*.wav")) and (out / "provenance.json").is_file()

    [empty] = read_clip_sets(out)
    assert empty.name == "musicgen_small/pretrained" and not empty.clips and "hf download" in empty.not_computed
    reference = tmp_path / "reference"
    write_folder(reference / "original", [({"caption_id": "calm", "caption": "x"}, music(100, "C", "major", 1.5))])
    argv = ["evaluate", "--params", str(params), "--reference", str(reference), "--generated", str(out)]
    assert main([*argv, "--out", str(tmp_path / "evaluate")]) == 0
    entry = json.loads((tmp_path / "evaluate/metrics.json").read_text())["sets"]["musicgen_small/pretrained"]
    assert entry["metrics"]["all"]["status"] == cards.NOT_COMPUTED
    assert "not in the Hugging Face cache" in entry["metrics"]["all"]["reason"]


def test_weights_gone_remove_the_clips_of_earlier_weights(generated, repo_root, tmp_path):
    out = tmp_path / "musicgen_small"
    out.mkdir()
    (out / "pretrained").mkdir()
    (out / "pretrained/calm.wav").write_bytes(b"stale")
    params = write_params(tmp_path, repo_root, CAPTIONS, "gone", name_or_path=str(tmp_path / "models/musicgen"))
    assert run_cli(params, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "not computed" and "does not exist" in summary["reason"]
    assert summary["fetch"].endswith(f"--local-dir {tmp_path / 'models/musicgen'}")
    assert not (out / "pretrained").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"colour": "blue"}, "unknown key 'baselines.musicgen_small.colour'"),
        ({"guidance_scale": float("inf")}, "guidance_scale = inf is not a finite number"),
        ({"kind": "audioldm"}, "is not allowed"),
        ({"guidance_scale": 0.5}, "out of range"),
    ],
)
def test_the_schema_guards_the_section(repo_root, tmp_path, entry, message):
    params = write_params(tmp_path, repo_root, CAPTIONS, "bad", name_or_path="facebook/musicgen-small", **entry)
    with pytest.raises(ParamsError, match=message):
        load_params(params)


def test_nan_and_a_reserved_name_are_refused(repo_root, tmp_path):
    params = write_params(tmp_path, repo_root, CAPTIONS, "names", name_or_path="facebook/musicgen-small")
    data = yaml.safe_load(params.read_text())
    data["baselines"]["reference"] = data["baselines"]["musicgen_small"]
    params.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match="reference"):
        load_params(params)
    with pytest.raises(ParamsError, match="finite"):
        MusicgenBaselineConfig(temperature=math.nan)
    del data["baselines"]["reference"]
    data["baselines"]["musicgen_small"]["temperature"] = math.nan
    params.write_text(yaml.safe_dump(data))
    assert main(["generate", "--params", str(params), "--baseline", "musicgen_small", "--out", str(tmp_path)]) == 2


def test_an_unknown_baseline_name_is_a_clear_error(generated, tmp_path, capsys):
    assert main(["generate", "--params", str(generated["params"]), "--baseline", "nope", "--out", str(tmp_path)]) == 1
    assert "baselines.nope" in capsys.readouterr().err
