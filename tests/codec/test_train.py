"""Train mode: a tiny DAC trained for a few steps on a synthetic corpus (seconds on CPU)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from ssmttm.artifacts import sha256_file
from ssmttm.cli import main
from ssmttm.codec import CODEC_JSON, METRICS_FILE, WEIGHTS_FILE, load_codec
from ssmttm.codec.stage import CodecConfig, run_codec
from ssmttm.codec.train import read_clips, split_holdout, train_codec
from ssmttm.config import dataclass_to_dict
from ssmttm.errors import UserFacingError
from tests.codec import TINY_TRAIN, write_corpus

TRACKS = {"trk_a": 2, "trk_b": 2, "trk_c": 1}


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path, TRACKS, seconds=0.25)[0]


def test_holdout_is_by_track_and_never_empty(corpus):
    clips = read_clips([corpus])
    train, held = split_holdout(clips, 0.34, seed=7)
    assert train and held
    assert not {c.track_id for c in train} & {c.track_id for c in held}
    assert sorted(c.clip_id for c in train + held) == sorted(c.clip_id for c in clips)
    # fraction 0 still holds one track out; fraction 1 still keeps one for training
    assert len({c.track_id for c in split_holdout(clips, 0.0, 7)[1]}) == 1
    assert len({c.track_id for c in split_holdout(clips, 1.0, 7)[0]}) == 1


def test_training_is_deterministic_and_restores_torch_state(corpus):
    torch.manual_seed(99)
    before = torch.rand(1)
    torch.manual_seed(99)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    model_a, metrics_a = train_codec(TINY_TRAIN, [corpus], seed=5, device=torch.device("cpu"))
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == det
    model_b, metrics_b = train_codec(TINY_TRAIN, [corpus], seed=5, device=torch.device("cpu"))
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert metrics_a == metrics_b
    assert [r["step"] for r in metrics_a["loss_curve"]] == [1, 2, 3]
    assert set(metrics_a["final_losses"]) >= {"mel", "commitment", "codebook", "adversarial", "feature", "total"}
    held = metrics_a["heldout"]
    assert held["mel_distance_untrained"] > 0 and held["mel_distance_trained"] > 0
    assert held["tracks"] and all(c.rsplit("-", 1)[0] in held["tracks"] for c in held["clips"])
    assert metrics_a["train"]["tracks"] + len(held["tracks"]) == len(TRACKS)
    _, metrics_c = train_codec(TINY_TRAIN, [corpus], seed=6, device=torch.device("cpu"))
    assert metrics_c["loss_curve"] != metrics_a["loss_curve"]


def test_training_lowers_the_heldout_mel_distance(corpus):
    cfg = dataclasses.replace(
        TINY_TRAIN, steps=30, lr=3e-3, discriminator=dataclasses.replace(TINY_TRAIN.discriminator, fft_sizes=())
    )
    _, metrics = train_codec(cfg, [corpus], seed=1, device=torch.device("cpu"))
    held = metrics["heldout"]
    assert held["mel_distance_trained"] < 0.8 * held["mel_distance_untrained"], held
    assert "adversarial" not in metrics["final_losses"]  # no discriminator configured: no GAN terms


def test_stage_writes_the_codec_folder(corpus, tmp_path):
    out = tmp_path / "codec"
    identity = run_codec(CodecConfig(mode="train", train=TINY_TRAIN), [corpus], out, seed=5)
    names = sorted(p.name for p in out.iterdir())
    assert names == [CODEC_JSON, "host.json", METRICS_FILE, "provenance.json", WEIGHTS_FILE]
    assert identity["variant"] == "trained" and identity["weights_sha256"] == sha256_file(out / WEIGHTS_FILE)
    assert identity["hop_length"] == 8 and identity["sample_rate"] == 16000
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert "mel_distance_trained" in metrics["heldout"]
    handle = load_codec(out)
    assert handle.encode(torch.zeros(1, 1, 80))[0].shape == (1, 2, 10)
    first = sha256_file(out / WEIGHTS_FILE)
    run_codec(CodecConfig(mode="train", train=TINY_TRAIN), [corpus], out, seed=5)
    assert sha256_file(out / WEIGHTS_FILE) == first  # rerun: same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caption", "codec", "segment"]  # no temporaries


def test_cli(corpus, tmp_path, repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["codec"] = {"mode": "train", "device": "cpu", "train": dataclass_to_dict(TINY_TRAIN)}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    assert (
        main(["codec", "--params", str(tmp_path / "p.yaml"), "--clips", str(corpus), "--out", str(tmp_path / "codec")])
        == 0
    )
    assert (tmp_path / "codec" / WEIGHTS_FILE).is_file()


def test_config_errors(corpus, tmp_path):
    bad = dataclasses.replace(TINY_TRAIN, decoder_rates=(4, 4))
    with pytest.raises(UserFacingError, match="same product"):
        train_codec(bad, [corpus], 0, torch.device("cpu"))
    one = write_corpus(tmp_path / "one", {"solo": 2})[0]
    with pytest.raises(UserFacingError, match="at least 2 tracks"):
        train_codec(TINY_TRAIN, [one], 0, torch.device("cpu"))
    with pytest.raises(UserFacingError, match="clips.jsonl not found"):
        train_codec(TINY_TRAIN, [tmp_path / "missing"], 0, torch.device("cpu"))
