"""train_lm end to end on tiny synthetic shards: learning, LR schedule, data stream, text cache, CLI, lm-plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ssmttm.artifacts import write_jsonl
from ssmttm.cli import main as cli_main
from ssmttm.errors import UserFacingError
from ssmttm.train.data import TrainData
from ssmttm.train.module import LMTrainModule
from ssmttm.train.plots import lm_plot
from ssmttm.train.recorder import HISTORY_FILE, read_history
from ssmttm.train.schedule import lr_at
from ssmttm.train.stage import train_lm
from ssmttm.train.text_cache import TextCache, build_text_cache, cache_folder, caption_key, shard_captions

from ._fixtures import TEXT_CFG, FakeTextEncoder, make_shards, tiny_lm, tiny_train


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))


@pytest.mark.parametrize("backbone", ["prefix_simba", "cross_transformer"])
def test_training_loss_decreases(shards, tmp_path, backbone):
    train = tiny_train(
        max_steps=40,
        batch_size=4,
        accumulate_grad_batches=1,
        lr=5e-3,
        warmup_steps=4,
        checkpoint_every=20,
        val_every=20,
        keep_last_checkpoints=1,
    )
    metrics = train_lm(
        shards,
        tiny_lm(),
        TEXT_CFG,
        train,
        tmp_path / "run",
        seed=11,
        backbone=backbone,
        text_cache_dir=tmp_path / "cache",
        text_encoder=FakeTextEncoder(),
    )
    losses = [r["loss"] for r in read_history(tmp_path / "run" / HISTORY_FILE) if "loss" in r]
    assert len(losses) == 40 and metrics["backbone"] == backbone
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)  # the counting pattern is learnable: a clear drop, not noise
    assert metrics["last_val_loss"] < metrics["first_loss"]
    assert metrics["flops"] == pytest.approx(6 * metrics["flops_params"] * metrics["tokens"])
    assert metrics["tokens"] == 40 * 4 * tiny_lm().seq_len
    assert 0 < metrics["flops_params"] < metrics["params"]  # the embedding table is left out of N


def test_learning_rate_moves_once_per_optimizer_step(shards, tmp_path):
    """With 3 micro-batches per step, step s uses lr_at(s - 1): the schedule is in optimizer steps (not epochs)."""
    train = tiny_train(
        max_steps=6,
        batch_size=2,
        accumulate_grad_batches=3,
        warmup_steps=3,
        min_lr_ratio=0.1,
        checkpoint_every=6,
        val_every=6,
    )
    train_lm(
        shards,
        tiny_lm(dropout=0.0),
        TEXT_CFG,
        train,
        tmp_path / "run",
        seed=1,
        text_cache_dir=tmp_path / "cache",
        text_encoder=FakeTextEncoder(),
    )
    rows = [r for r in read_history(tmp_path / "run" / HISTORY_FILE) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows:
        assert row["lr"] == pytest.approx(lr_at(row["step"] - 1, train.lr, 3, 6, 0.1))
        assert row["micro_batches"] == 3 * row["step"]


def _clip_ids(loader, n_batches):
    out = []
    for i, batch in enumerate(loader):
        if i == n_batches:
            break
        out.append(tuple(batch["clip_id"]))
    return out


def test_endless_stream_is_worker_invariant_and_resumes_without_replay(shards):
    data = TrainData(shards, tiny_lm(), tiny_train(batch_size=3, num_workers=0), seed=5)
    reference = _clip_ids(data.train_loader(0, 1, 0), 16)  # 20 train clips: 6 batches an epoch, ~2.7 epochs
    assert all(len(b) == 3 for b in reference)
    epoch0 = [c for b in reference[:6] for c in b]
    assert len(set(epoch0)) == 18  # no clip twice within an epoch
    assert reference[6:12] != reference[:6]  # each epoch reshuffled

    workers = TrainData(shards, tiny_lm(), tiny_train(batch_size=3, num_workers=2), seed=5)
    assert _clip_ids(workers.train_loader(0, 1, 0), 16) == reference
    assert _clip_ids(workers.train_loader(0, 1, 7), 9) == reference[7:]  # resume mid-epoch 1
    assert _clip_ids(data.train_loader(0, 1, 4), 12) == reference[4:]

    rank0 = {c for b in _clip_ids(data.train_loader(0, 2, 0), 3) for c in b}
    rank1 = {c for b in _clip_ids(data.train_loader(1, 2, 0), 3) for c in b}
    assert len(rank0) == len(rank1) == 9 and not rank0 & rank1


def test_caption_dropout_only_in_training(shards, tmp_path):
    cache = TextCache(build_text_cache(["calm", "dark", "a b c"], TEXT_CFG, tmp_path, encoder=FakeTextEncoder()))
    module = LMTrainModule(
        tiny_lm(dropout=0.0, p_drop_caption=1.0, p_drop_token=0.0, d_text=12), tiny_train(), cache, None, seed=0
    )
    codes = torch.randint(0, 16, (2, 1, 33))
    calm, dark = {"codes": codes, "caption": ["calm", "calm"]}, {"codes": codes, "caption": ["dark", "dark"]}
    module.train()
    assert torch.equal(module.batch_loss(calm), module.batch_loss(dark))  # every caption replaced by ""
    module.eval()
    assert not torch.allclose(module.batch_loss(calm), module.batch_loss(dark))


def test_text_cache_matches_the_encoder_and_is_reused(tmp_path):
    encoder = FakeTextEncoder()
    captions = ["a calm piece", "dark drums", "x " * 10]
    folder = build_text_cache(captions, TEXT_CFG, tmp_path, encoder=encoder)
    assert folder == cache_folder(tmp_path, TEXT_CFG)
    cache = TextCache(folder)
    got, want = cache.encode(captions), encoder.encode(captions)
    assert torch.equal(got.hidden, want.hidden) and torch.equal(got.mask, want.mask)
    assert torch.equal(cache.uncond(2).mask, encoder.encode(["", ""]).mask)
    assert "a calm piece" in cache and "unseen" not in cache
    with pytest.raises(UserFacingError, match="no encoding"):
        cache.encode(["unseen"])
    stamp = (folder / "cache.json").stat().st_mtime_ns
    build_text_cache(captions[:2], TEXT_CFG, tmp_path, encoder=None)  # covered: no encoder is even loaded
    assert (folder / "cache.json").stat().st_mtime_ns == stamp
    build_text_cache([*captions, "new"], TEXT_CFG, tmp_path, encoder=encoder)  # not covered: rebuilt
    assert "new" in TextCache(folder)


def test_cli_trains_with_the_minilm_encoder_and_plots(shards, tmp_path, repo_root, monkeypatch):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["lm"].update(
        d_model=32,
        n_layers=1,
        d_state=8,
        headdim=8,
        chunk_size=8,
        mlp_hidden=64,
        codebook_size=16,
        special_id=16,
        seq_len=33,
        n_heads=4,
    )
    params["text"].update(encoder="minilm", max_length=8)
    params["train_lm"].update(
        max_steps=4,
        batch_size=4,
        accumulate_grad_batches=1,
        checkpoint_every=2,
        keep_last_checkpoints=1,
        val_every=2,
        log_every=1,
        warmup_steps=1,
    )
    # A named run whose name is not its backbone: the folder, run.json and metrics carry the name.
    params["runs"]["transformer_narrow"] = {"backbone": "prefix_transformer", "lm": {"n_heads": 2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    shutil.copytree(shards, tmp_path / "data" / "tokenize")
    assert cli_main(["text-cache", "--params", "params.yaml", "--shards", "data/tokenize", "--out", "data/cache"]) == 0
    (cache,) = [p for p in (tmp_path / "data" / "cache").iterdir() if p.is_dir()]
    assert json.loads((cache / "cache.json").read_text())["dtype"] == "float32"
    assert set(TextCache(cache).info["captions"]) >= {caption_key(c) for c in shard_captions(shards)}
    assert json.loads((tmp_path / "data" / "cache" / "provenance.json").read_text())["stage"] == "text_cache"
    train = ["train-lm", "--params", "params.yaml", "--run", "transformer_narrow", "--text-cache", "data/cache"]
    assert cli_main(train) == 0
    run = tmp_path / "results" / "train_lm" / "transformer_narrow"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["backbone"] == "prefix_transformer"
    assert metrics["run"] == "transformer_narrow"
    assert json.loads((run / "final" / "config.json").read_text())["lm"]["n_heads"] == 2  # the run's own override
    assert [p.name for p in run.glob("step-*")] == ["step-0000004"]
    assert not (run / "text_cache").exists()  # the shared cache was used
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["lm"]["d_text"] == 384  # taken from MiniLM
    assert (run / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    dvclive_summary = json.loads((run / "dvclive" / "metrics.json").read_text())
    assert dvclive_summary["step"] == 4 and "loss" in dvclive_summary["train"]
    assert "tokens_per_s" in dvclive_summary["train"]  # from timing.jsonl

    # A second call finds the run finished and does not train again.
    before = (run / HISTORY_FILE).read_text()
    assert cli_main(train) == 0
    assert (run / HISTORY_FILE).read_text() == before

    assert cli_main(["lm-plot", "--params", "params.yaml", "--runs", str(run), "--out", "results/lm_plot"]) == 0
    out = tmp_path / "results" / "lm_plot"
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["transformer_narrow"]["steps"] == 4
    assert cli_main(["train-lm", "--params", "params.yaml", "--run", "nope"]) == 1
    assert cli_main(["train-lm", "--params", "params.yaml"]) == 1  # several runs: --run is needed


def _fake_run(folder: Path, run: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True)
    write_jsonl(folder / HISTORY_FILE, rows)
    train, val = [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]
    metrics = {
        "run": run,  # the name the plot uses, not the folder's
        "backbone": "prefix_simba",
        "best_val_loss": min(r["val_loss"] for r in val),
        "last_val_loss": val[-1]["val_loss"],
        "last_loss": train[-1]["loss"],
        "steps": rows[-1]["step"],
        "params": 1000,
        "flops": rows[-1]["flops"],
        "precision": "32-true",
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_lm_plot_writes_long_csvs_and_identical_bytes(tmp_path):
    a = _fake_run(
        tmp_path / "runs" / "a",
        "prefix_simba",
        [
            {"step": 1, "loss": 3.0, "flops": 10.0},
            {"step": 2, "loss": 2.5, "flops": 20.0},
            {"step": 2, "val_loss": 2.75, "flops": 20.0},
        ],
    )
    b = _fake_run(
        tmp_path / "runs" / "b",
        "cross_transformer",
        [
            {"step": 1, "loss": 3.5, "flops": 12.0},
            {"step": 3, "loss": 2.0, "flops": 36.0},
            {"step": 3, "val_loss": 2.25, "flops": 36.0},
        ],
    )
    first = lm_plot([a, b], tmp_path / "plot1")
    lm_plot([b, a], tmp_path / "plot2")
    assert (first / "train_loss.csv").read_text() == (
        "step,run,loss\n1,cross_transformer,3.5\n3,cross_transformer,2.0\n1,prefix_simba,3.0\n2,prefix_simba,2.5\n"
    )
    assert (first / "val_loss.csv").read_text() == (
        "step,run,val_loss\n3,cross_transformer,2.25\n2,prefix_simba,2.75\n"
    )
    summary = json.loads((first / "metrics.json").read_text())
    assert summary["prefix_simba"] == {
        "best_val_loss": 2.75,
        "last_val_loss": 2.75,
        "last_loss": 2.5,
        "steps": 2,
        "params": 1000,
        "flops": 20.0,
    }
    names = ["loss_curves.png", "metrics.json", "train_loss.csv", "val_loss.csv", "provenance.json"]
    assert sorted(p.name for p in first.iterdir()) == sorted(names)
    for name in names[:4]:  # provenance names the input folders, the rest is byte-identical
        assert (first / name).read_bytes() == (tmp_path / "plot2" / name).read_bytes(), name
    with pytest.raises(UserFacingError, match="not found"):
        lm_plot([tmp_path / "runs" / "missing"], tmp_path / "plot3")
