"""Checkpoints: folder format, pruning, RNG round trip, and a killed-then-resumed run repeating an uninterrupted one."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from ssmttm.models.lm import load_lm
from ssmttm.train.checkpoint import (
    TRAINER_STATE_FILE,
    capture_rng_state,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_training_checkpoint,
    prune_checkpoints,
    restore_rng_state,
)
from ssmttm.train.recorder import HISTORY_FILE, METRICS_FILE, read_history
from ssmttm.train.stage import train_lm

from ._fixtures import TEXT_CFG, FakeTextEncoder, make_shards, tiny_lm, tiny_train


def _fake_checkpoint(folder, step, complete=True):
    path = folder / checkpoint_name(step)
    path.mkdir(parents=True)
    names = ["model.safetensors", "config.json", TRAINER_STATE_FILE][: 3 if complete else 2]
    for name in names:
        (path / name).write_text("x")
    return path


def test_listing_ignores_incomplete_and_temporary_folders(tmp_path):
    _fake_checkpoint(tmp_path, 500)
    _fake_checkpoint(tmp_path, 1000)
    _fake_checkpoint(tmp_path, 1500, complete=False)  # killed while saving
    (tmp_path / "step-0002000.tmp-123-abcd").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [500, 1000]
    assert latest_checkpoint(tmp_path).name == "step-0001000"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_prune_keeps_the_newest(tmp_path):
    for step in (500, 1000, 1500, 2000):
        _fake_checkpoint(tmp_path, step)
    assert prune_checkpoints(tmp_path, None) == []
    removed = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ["step-0000500", "step-0001000"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1500, 2000]


def test_prune_keeps_the_newest_full_and_the_weights_of_chosen_steps(tmp_path):
    from ssmttm.generate.checkpoints import kept_checkpoints

    for step in range(500, 5001, 500):
        _fake_checkpoint(tmp_path, step)
    milestones = (1000, 2500, 100_000)  # a step not reached yet changes nothing
    removed = prune_checkpoints(tmp_path, 2, milestones)
    assert [p.name for p in removed] == [checkpoint_name(s) for s in (500, 1500, 2000, 3000, 3500, 4000)]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4500, 5000]  # what a resume may start from
    for step in (1000, 2500):
        assert sorted(p.name for p in (tmp_path / checkpoint_name(step)).iterdir()) == [
            "config.json",
            "model.safetensors",
        ]
    assert [c.step for c in kept_checkpoints(tmp_path)] == [1000, 2500, 4500, 5000]  # what generate makes audio from
    assert prune_checkpoints(tmp_path, 2, milestones) == []  # pruning again keeps the same set
    _fake_checkpoint(tmp_path, 5500)
    assert [p.name for p in prune_checkpoints(tmp_path, 2, milestones)] == ["step-0004500"]
    assert [c.step for c in kept_checkpoints(tmp_path)] == [1000, 2500, 5000, 5500]


def test_weights_are_kept_only_at_steps_that_have_a_checkpoint():
    assert tiny_train(keep_weights_at_steps=[8, 4, 4]).keep_weights_at_steps == (4, 8)
    assert tiny_train(keep_weights_at_steps=[8, 400]).keep_weights_at_steps == (8, 400)  # beyond max_steps: unused
    with pytest.raises(ValueError, match=r"keep_weights_at_steps \[6\]: no checkpoint is saved there"):
        tiny_train(keep_weights_at_steps=[4, 6])  # checkpoint_every 4, max_steps 8


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


class Killed(RuntimeError):
    pass


class KillAt:
    """A callback that 'kills' training at the end of a given optimizer step (after the recorder ran)."""

    def __new__(cls, step):
        import lightning as L

        class _Kill(L.Callback):
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                if trainer.global_step == step:
                    raise Killed(f"killed at step {step}")

        return _Kill()


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_history(run_dir / HISTORY_FILE) if "loss" in r}


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    shards = make_shards(tmp_path / "shards")
    lm, train = tiny_lm(), tiny_train(max_steps=8, checkpoint_every=4, keep_last_checkpoints=1)
    common = dict(
        shards_dir=shards,
        lm_cfg=lm,
        text_cfg=TEXT_CFG,
        train_cfg=train,
        seed=7,
        text_cache_dir=tmp_path / "cache",
        text_encoder=FakeTextEncoder(),
    )

    full = train_lm(out_dir=tmp_path / "full", **common)
    # Killed at step 6: checkpoint 4 exists, history already has rows 5 and 6 that the resume must replace.
    with pytest.raises(Killed):
        train_lm(out_dir=tmp_path / "cut", callbacks=[KillAt(6)], **common)
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [4]
    assert not (tmp_path / "cut" / METRICS_FILE).exists()
    assert max(_losses(tmp_path / "cut")) == 6
    resumed = train_lm(out_dir=tmp_path / "cut", **common)

    expected, got = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, 9))  # each step logged once
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    assert expected[8] != expected[5]  # the comparison is not vacuous
    assert resumed["last_loss"] == pytest.approx(full["last_loss"], abs=1e-6)
    assert resumed["best_val_loss"] == pytest.approx(full["best_val_loss"], abs=1e-6)

    # Same final weights; keep_last_checkpoints=1 left only the last folder, which generation can load.
    a = load_training_checkpoint(latest_checkpoint(tmp_path / "full"))["state_dict"]
    b = load_training_checkpoint(latest_checkpoint(tmp_path / "cut"))["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [8]
    model, cfg, text = load_lm(tmp_path / "cut" / "final")
    assert cfg.backbone == "prefix_simba" and text["max_length"] == TEXT_CFG.max_length
    config = json.loads((latest_checkpoint(tmp_path / "cut") / "config.json").read_text())
    assert config["step"] == 8 and config["train_lm"]["max_steps"] == 8

    # A finished run is not retrained.
    assert train_lm(out_dir=tmp_path / "cut", **common)["steps"] == 8
    # Killed between the last checkpoint and the summary: the resume only writes the summary.
    (tmp_path / "cut" / METRICS_FILE).unlink()
    shutil.rmtree(tmp_path / "cut" / "final")
    again = train_lm(out_dir=tmp_path / "cut", **common)
    assert again["last_loss"] == resumed["last_loss"] and (tmp_path / "cut" / "final" / "model.safetensors").is_file()
    assert _losses(tmp_path / "cut") == got
    # Other params: the old run is moved to previous/<its key>/, never mixed with (or deleted by) the new one.
    changed = tiny_train(max_steps=8, lr=1e-2)
    fresh = train_lm(out_dir=tmp_path / "fresh", **{**common, "train_cfg": changed})
    restarted = train_lm(out_dir=tmp_path / "cut", **{**common, "train_cfg": changed})
    assert restarted["first_loss"] == pytest.approx(fresh["first_loss"], abs=1e-6)
    assert restarted["last_loss"] == pytest.approx(fresh["last_loss"], abs=1e-6)
    assert restarted["last_loss"] != pytest.approx(resumed["last_loss"], abs=1e-6)
    (archived,) = (tmp_path / "cut" / "previous").iterdir()
    assert _losses(archived) == got


def _eight_step_run(tmp_path, **train_overrides):
    """train_lm's arguments for an 8-step tiny run checkpointed every 2 steps (out_dir and callbacks left out)."""
    return dict(
        shards_dir=make_shards(tmp_path / "shards"),
        lm_cfg=tiny_lm(),
        text_cfg=TEXT_CFG,
        train_cfg=tiny_train(max_steps=8, checkpoint_every=2, **train_overrides),
        seed=7,
        text_cache_dir=tmp_path / "cache",
        text_encoder=FakeTextEncoder(),
    )


def test_resume_after_pruning_to_milestone_weights_repeats_the_uninterrupted_run(tmp_path):
    """keep_last_checkpoints=1 with milestones: a kill leaves one full checkpoint plus weights-only milestones; the
    resume starts from the full one and ends with the same weights, milestones and losses as an uninterrupted run."""
    from ssmttm.generate.checkpoints import kept_checkpoints

    common = _eight_step_run(tmp_path, keep_last_checkpoints=1, keep_weights_at_steps=[2, 4])
    train_lm(out_dir=tmp_path / "full", **common)
    with pytest.raises(Killed):
        train_lm(out_dir=tmp_path / "cut", callbacks=[KillAt(7)], **common)
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [6]
    assert not (tmp_path / "cut" / checkpoint_name(4) / TRAINER_STATE_FILE).exists()
    train_lm(out_dir=tmp_path / "cut", **common)

    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "full"), abs=1e-6)
    for run in ("full", "cut"):
        assert [s for s, _ in list_checkpoints(tmp_path / run)] == [8]
        assert [c.step for c in kept_checkpoints(tmp_path / run)] == [2, 4, 8]
    for step in (4, 8):  # milestone weights load for generation and match the uninterrupted run's
        a, _, _ = load_lm(tmp_path / "full" / checkpoint_name(step))
        b, _, _ = load_lm(tmp_path / "cut" / checkpoint_name(step))
        a, b = a.state_dict(), b.state_dict()
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


# Files whose bytes record when or how long, not what was computed.
TIMING_PARTS = ("dvclive", "timing", "provenance")


def _artifact_bytes(run_dir):
    """{relative path: bytes} of every file of a run folder but timing records (dvclive, timing, provenance)."""
    return {
        str(path.relative_to(run_dir)): path.read_bytes()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and not any(part in str(path.relative_to(run_dir)) for part in TIMING_PARTS)
    }


def test_a_resumed_run_writes_the_bytes_of_an_uninterrupted_run(tmp_path):
    """Checkpoints written after a resume are byte-identical to an uninterrupted run's (trainer_state.pt included),
    so the DVC hash of results/train_lm does not depend on whether the run was interrupted."""
    common = _eight_step_run(tmp_path, keep_last_checkpoints=None)
    train_lm(out_dir=tmp_path / "full", **common)
    with pytest.raises(Killed):
        train_lm(out_dir=tmp_path / "cut", callbacks=[KillAt(3)], **common)
    train_lm(out_dir=tmp_path / "cut", **common)

    expected, got = _artifact_bytes(tmp_path / "full"), _artifact_bytes(tmp_path / "cut")
    assert sorted(got) == sorted(expected)
    assert f"{checkpoint_name(8)}/{TRAINER_STATE_FILE}" in got  # written by the resumed process
    assert [name for name in expected if got[name] != expected[name]] == []
