"""ssmttm.api.TextToMusic on a tiny trained workspace: the audio it returns, that the default path runs the refiner,
its settings checks, and the one-line errors for a missing run, checkpoint, refiner or codec."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

import ssmttm.inputs
from ssmttm.api import MAX_CONTEXT_MULTIPLE, InvalidSetting, TextToMusic, available_runs
from ssmttm.codec import load_codec
from ssmttm.errors import UserFacingError
from ssmttm.refine.model import Refiner
from tests.api._workspace import SECONDS, TRAINED_RUN, UNTRAINED_RUN, make_workspace

PROMPTS = ["calm acoustic piano", "energetic rock drums"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, repo_root):
    return make_workspace(tmp_path_factory.mktemp("api") / "workspace", repo_root)


@pytest.fixture(scope="module")
def model(workspace):
    return TextToMusic.load(workspace, run=TRAINED_RUN)


def rms_db(wav: torch.Tensor) -> float:
    return 20 * math.log10(float(wav.pow(2).mean().sqrt()) + 1e-12)


def test_generate_returns_finite_audible_clips_of_the_asked_length_at_the_codec_rate(model, workspace):
    codec = load_codec(workspace / "data" / "codec")
    wav, sample_rate = model.generate(PROMPTS, seconds=0.03, seed=5)
    assert sample_rate == model.sample_rate == codec.sample_rate == 16000
    assert wav.shape == (2, 1, round(0.03 * 16000)) and wav.dtype == torch.float32
    assert torch.isfinite(wav).all()
    assert all(rms_db(clip) > -60 for clip in wav)
    assert (model.run, model.step, model.steps) == (TRAINED_RUN, 4, [2, 4])
    default, _ = model.generate(PROMPTS[:1])  # params generate.seconds
    assert default.shape == (1, 1, round(SECONDS * 16000))


def test_default_path_runs_the_refiner_and_codebook1_only_does_not(model, monkeypatch):
    calls = []
    original = Refiner.refine

    def counting(self, *args, **kwargs):
        calls.append(args[0].shape)  # codebook-1 vectors (batch_size, D, T)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Refiner, "refine", counting)
    refined, _ = model.generate(PROMPTS, seed=7)
    assert len(calls) == 2  # one batch of generate.batch_size = 1 per prompt
    plain, _ = model.generate(PROMPTS, seed=7, codebook1_only=True)
    assert len(calls) == 2
    assert refined.shape == plain.shape
    assert not torch.allclose(refined, plain)  # same LM tokens, other codebooks filled in by the refiner


def test_same_seed_same_audio_whatever_the_other_prompts(model):
    both, _ = model.generate(PROMPTS, seed=11)
    again, _ = model.generate(PROMPTS, seed=11)
    alone, _ = model.generate(PROMPTS[:1], seed=11)
    other_seed, _ = model.generate(PROMPTS, seed=12)
    assert torch.equal(both, again)
    assert torch.equal(both[:1], alone)
    assert not torch.equal(both, other_seed)


@pytest.mark.parametrize(
    "setting",
    [
        {"seconds": float("nan")},
        {"seconds": float("inf")},
        {"seconds": 0.0},
        {"seconds": -1.0},
        {"seconds": 1e-6},  # not one sample
        {"seed": -1},
        {"seed": 2**63},
        {"seed": 1.5},
        {"guidance": float("nan")},
        {"guidance": float("inf")},
        {"sampler": "euler"},
        {"sampler_steps": 0},
        {"codebook1_only": True, "single_stage": True},
    ],
)
def test_bad_settings_are_refused(model, setting):
    with pytest.raises(InvalidSetting):
        model.generate(PROMPTS[:1], **setting)


def test_seconds_are_bounded_by_the_trained_context(model):
    # the tiny LM was trained on 64 positions (63 frames with the delay of 1 codebook) at 2000 frames/s
    assert model.max_seconds == pytest.approx(MAX_CONTEXT_MULTIPLE * 63 / 2000)
    with pytest.raises(InvalidSetting, match="at most"):
        model.settings(seconds=model.max_seconds * 1.01)
    assert model.settings(seconds=model.max_seconds).seconds == model.max_seconds


def test_single_stage_needs_an_lm_over_every_codebook(model):
    with pytest.raises(UserFacingError, match="single-stage.*1 codebook"):
        model.generate(PROMPTS[:1], single_stage=True)


def test_runs_and_steps(workspace):
    assert available_runs(workspace) == [TRAINED_RUN]  # cross_transformer is in params but untrained
    assert TextToMusic.load(workspace).run == TRAINED_RUN  # the first trained run
    assert TextToMusic.load(workspace, step=2).step == 2
    with pytest.raises(UserFacingError, match=r"no checkpoint at step 3; its checkpoints are at steps 2, 4"):
        TextToMusic.load(workspace, step=3)
    with pytest.raises(UserFacingError, match=r"unknown run 'nope'.*prefix_simba, cross_transformer"):
        TextToMusic.load(workspace, run="nope")
    with pytest.raises(UserFacingError, match=rf"no checkpoint for run '{UNTRAINED_RUN}'.*snakemake"):
        TextToMusic.load(workspace, run=UNTRAINED_RUN)


def test_without_the_refiner_two_stage_says_how_to_train_it_and_codebook1_only_works(workspace, tmp_path):
    partial = tmp_path / "workspace"
    shutil.copytree(workspace, partial, ignore=shutil.ignore_patterns("train_refiner"))
    model = TextToMusic.load(partial)
    assert not model.has_refiner
    with pytest.raises(UserFacingError, match=r"no refiner in .*train_refiner/final; train it with .*--codebook1-only"):
        model.generate(PROMPTS[:1])
    wav, _ = model.generate(PROMPTS[:1], codebook1_only=True)
    assert wav.shape == (1, 1, round(SECONDS * 16000))


def test_missing_codec_and_not_a_workspace(workspace, tmp_path):
    partial = tmp_path / "workspace"
    shutil.copytree(workspace, partial, ignore=shutil.ignore_patterns("codec"))
    with pytest.raises(UserFacingError, match=r"no codec in .*data/codec.*snakemake --cores 2 data/codec"):
        TextToMusic.load(partial)
    with pytest.raises(UserFacingError, match="neither a workspace .* nor an exported model"):
        TextToMusic.load(tmp_path / "nothing")


def test_a_length_whose_token_loop_would_not_fit_in_memory_is_refused(model, monkeypatch):
    monkeypatch.setattr(ssmttm.inputs, "available_memory_bytes", lambda device="cpu": 1000)  # a 1 KB machine
    with pytest.raises(InvalidSetting, match=r"seconds: sampling \d+ frames .* needs about .* of memory"):
        model.settings(seconds=SECONDS)
