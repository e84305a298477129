"""`ssmttm train-refiner`: learning, exact resume after a real SIGKILL, reuse of a finished run, errors, text caches."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ssmttm.artifacts import TMP_MARK
from ssmttm.cli import main
from ssmttm.errors import UserFacingError
from ssmttm.refine import stage
from ssmttm.refine.data import LatentCrops
from ssmttm.refine.model import load_refiner
from ssmttm.refine.normalise import LatentStats, compute_stats
from ssmttm.refine.train import RefinerTrainer
from ssmttm.train.text_cache import RefinerTextConfig, cache_folder, text_cache
from tests.refine._train_fixtures import (
    TEXT_CFG,
    K,
    WordHashEncoder,
    build_cache,
    make_latent_shards,
    tiny_refiner,
    tiny_train,
    write_params,
)

SEED = 7


@pytest.fixture
def data(tmp_path):
    shards = make_latent_shards(tmp_path / "tokenize")
    build_cache(shards, tmp_path / "text_cache")
    return shards, tmp_path / "text_cache"


def train(data, out, refiner=None, train_cfg=None, **kwargs):
    shards, cache = data
    return stage.train_refiner(
        shards,
        refiner or tiny_refiner(),
        TEXT_CFG,
        train_cfg or tiny_train(),
        out,
        SEED,
        text_cache_dir=cache,
        **kwargs,
    )


def test_training_lowers_the_loss_and_stores_stats_and_text(data, tmp_path):
    metrics = train(data, tmp_path / "run", train_cfg=tiny_train(steps=40, val_every=20, checkpoint_every=20))
    assert metrics["steps"] == 40
    assert metrics["last_val_loss"] < 0.8 * metrics["initial_val_loss"]
    assert metrics["last_val_loss_primary"] < 0.95 * metrics["initial_val_loss_primary"]  # half the steps, text only
    assert metrics["last_loss"] < metrics["first_loss"]
    assert set(metrics["params"]) == {"primary", "secondary"} and metrics["total_params"] == sum(
        metrics["params"].values()
    )
    refiner = load_refiner(tmp_path / "run" / "final")
    assert refiner.stats == compute_stats(data[0], "train")  # from the train split, stored with the weights
    assert LatentStats.load(tmp_path / "run" / "final").source["split"] == "train"
    assert refiner.text_config == TEXT_CFG and refiner.codec["n_codebooks"] == K
    enc = WordHashEncoder().encode(["a calm piece"])
    out = refiner.refine(torch.zeros(1, 2, 10), enc.hidden, enc.mask, seeds=[0], steps=2)
    assert out.shape == (1, K * 2, 10)
    rows = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 20, 40]
    assert not (tmp_path / "run" / "step-0000020").exists() or (tmp_path / "run" / "step-0000040").is_dir()
    assert "wall_time_s" in json.loads((tmp_path / "run" / "timing.json").read_text())
    assert "wall_time_s" not in (tmp_path / "run" / "metrics.json").read_text()


def test_a_sigkilled_run_resumes_to_the_same_bytes(data, tmp_path, repo_root):
    cfg = tiny_train(steps=30, checkpoint_every=5, val_every=15)
    reference = tmp_path / "reference"
    train(data, reference, train_cfg=cfg)

    params = write_params(tmp_path / "params.yaml", repo_root, tiny_refiner(), cfg, seed=SEED)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ssmttm", "train-refiner", "--params", str(params), "--shards", str(data[0])]
    command += ["--text-cache", str(data[1]), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "step-0000005").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr
    assert not (out / "final").exists(), "the run finished before the kill; the test needs more steps"

    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run" in resumed.stderr
    for name in ("final/model.safetensors", "history.jsonl", "metrics.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_a_finished_run_is_reused_and_a_changed_config_trains_afresh(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(data, out)
    weights = (out / "final" / "model.safetensors").read_bytes()
    key = json.loads((out / "run.json").read_text())["run_key"]
    (out / "metrics.json").unlink()  # what Snakemake does to a declared output before rerunning the job
    monkeypatch.setattr(RefinerTrainer, "step", lambda self: pytest.fail("a finished run was retrained"))
    metrics = train(data, out, train_cfg=tiny_train(log_every=3))  # a free key: the same run
    assert metrics["steps"] == 12 and (out / "final" / "model.safetensors").read_bytes() == weights

    monkeypatch.undo()
    train(data, out, train_cfg=tiny_train(lr=1e-3))
    assert json.loads((out / "run.json").read_text())["run_key"] != key
    assert (out / "previous" / key / "final" / "model.safetensors").read_bytes() == weights
    assert (out / "final" / "model.safetensors").read_bytes() != weights


def test_crops_resume_from_their_position_and_pad_short_clips(data):
    stats = compute_stats(data[0], "train")
    stream = LatentCrops(data[0], stats, 16, seed=3)
    first = [stream.batch(5) for _ in range(2)]
    state = stream.state_dict()
    later = [stream.batch(5) for _ in range(3)]  # 25 items: across the epoch boundary (14 train clips)
    assert stream.state_dict()["epoch"] == 1

    again = LatentCrops(data[0], stats, 16, seed=3)
    again.load_state_dict(state)
    for a, b in zip(later, [again.batch(5) for _ in range(3)], strict=True):
        assert a.clip_ids == b.clip_ids and torch.equal(a.latents, b.latents)
    batch = first[0]
    short = [i for i in range(len(batch)) if not batch.frame_mask[i].all()]
    assert short and all(int(batch.frame_mask[i].sum()) == 12 for i in short)
    assert all(float(batch.latents[i, :, 12:].abs().sum()) == 0 for i in short)


def test_errors_name_the_fix(data, tmp_path):
    bare = make_latent_shards(tmp_path / "no_latents", store_latents=False)
    build_cache(bare, tmp_path / "bare_cache")
    with pytest.raises(UserFacingError, match="store_latents: true"):
        stage.train_refiner(
            bare, tiny_refiner(), TEXT_CFG, tiny_train(), tmp_path / "a", 7, text_cache_dir=tmp_path / "bare_cache"
        )
    other_text = dataclasses.replace(TEXT_CFG, max_length=6)
    with pytest.raises(UserFacingError, match="ssmttm text-cache"):
        stage.train_refiner(
            data[0], tiny_refiner(), other_text, tiny_train(), tmp_path / "b", 7, text_cache_dir=data[1]
        )
    with pytest.raises(UserFacingError, match="multiple of 2"):
        train(data, tmp_path / "c", train_cfg=tiny_train(crop_frames=15))


def test_text_cache_builds_the_refiners_cache_when_its_setting_differs(tmp_path):
    shards = make_latent_shards(tmp_path / "tokenize", n_shards=1)
    same = RefinerTextConfig().resolve(TEXT_CFG)
    assert text_cache(shards, [TEXT_CFG, same], tmp_path / "one", encoder=WordHashEncoder()) == [
        cache_folder(tmp_path / "one", TEXT_CFG)
    ]
    longer = RefinerTextConfig(encoder="word-hash-large", max_length=6).resolve(TEXT_CFG)
    assert (longer.encoder, longer.max_length, longer.cache_dtype) == ("word-hash-large", 6, TEXT_CFG.cache_dtype)
    build_cache(shards, tmp_path / "two")  # the LM's cache exists: only the refiner's is encoded (6 tokens)
    folders = text_cache(shards, [TEXT_CFG, longer], tmp_path / "two", encoder=WordHashEncoder(6))
    assert folders == [cache_folder(tmp_path / "two", TEXT_CFG), cache_folder(tmp_path / "two", longer)]
    assert json.loads((folders[1] / "cache.json").read_text())["max_length"] == 6
    provenance = json.loads((tmp_path / "two" / "provenance.json").read_text())
    assert set(provenance["caches"]) == {f.name for f in folders}


def test_text_cache_rerun_replaces_the_folder_whole_and_links_the_caches_that_still_cover(tmp_path):
    """The stage output is one atomic folder (tests/test_kills_later_stages.py kills it); a rerun hard-links the
    previous caches that cover the captions instead of encoding again, and drops caches of other settings."""
    shards = make_latent_shards(tmp_path / "tokenize", n_shards=1)
    out = tmp_path / "text_cache"
    (folder,) = text_cache(shards, [TEXT_CFG], out, encoder=WordHashEncoder())
    (out / "0123456789abcdef").mkdir()  # a cache of settings no longer asked for
    files = {p.name: p.stat().st_ino for p in folder.iterdir()}

    class Refuses:
        def encode(self, captions):
            raise AssertionError("encoded again")

    assert text_cache(shards, [TEXT_CFG], out, encoder=Refuses()) == [folder]
    assert {p.name: p.stat().st_ino for p in folder.iterdir()} == files
    assert sorted(p.name for p in out.iterdir()) == sorted([folder.name, "host.json", "provenance.json"])
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-refiner", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--shards", "--text-cache", "--out", "--no-resume"))
