"""Run folders: byte-identical reruns, run keys, reuse of a finished run, previous runs kept and restored."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssmttm.train.recorder import HISTORY_FILE, METRICS_FILE, TIMING_FILE, TIMING_LOG_FILE, read_history
from ssmttm.train.stage import PREVIOUS_DIR, RUN_FILE, train_lm

from ._fixtures import TEXT_CFG, FakeTextEncoder, make_shards, tiny_lm, tiny_train

VARYING = ("dvclive", TIMING_FILE, TIMING_LOG_FILE)  # measurements of the machine; .dvcignore leaves them out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))


def _digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of a run folder, except the ones that may vary and earlier runs under previous/."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_file() and rel.parts[0] not in (*VARYING, PREVIOUS_DIR):
            out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _stamps(run_dir: Path) -> dict[str, int]:
    return {p.relative_to(run_dir).as_posix(): p.stat().st_mtime_ns for p in run_dir.glob("step-*/*")}


class NoTraining(Exception):
    pass


def _no_training():
    """A callback that fails the test if training starts."""
    import lightning as L

    class _Guard(L.Callback):
        def on_train_start(self, trainer, module):
            raise NoTraining("the run was trained again")

    return _Guard()


def _train(shards, out, cache, **overrides):
    kwargs = dict(
        shards_dir=shards,
        lm_cfg=tiny_lm(),
        text_cfg=TEXT_CFG,
        train_cfg=tiny_train(max_steps=4, checkpoint_every=2, val_every=2, keep_last_checkpoints=1),
        out_dir=out,
        seed=5,
        text_cache_dir=cache,
        text_encoder=FakeTextEncoder(),
    )
    kwargs.update(overrides)
    return train_lm(**kwargs)


def test_two_identical_runs_give_identical_files(shards, tmp_path):
    _train(shards, tmp_path / "a", tmp_path / "cache")
    # What another process would start with: other numpy / Python global RNG states.
    np.random.seed(12345)
    random.seed(678)
    _train(shards, tmp_path / "b", tmp_path / "cache")
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert {"run.json", "metrics.json", "history.jsonl", "provenance.json", "final/model.safetensors"} <= set(a)
    assert {"step-0000004/trainer_state.pt", "step-0000004/config.json"} <= set(a)
    assert a == b
    # The measurements are in the timing files only.
    history = read_history(tmp_path / "a" / HISTORY_FILE)
    assert history and not any({"elapsed_s", "tokens_per_s"} & set(row) for row in history)
    metrics = json.loads((tmp_path / "a" / METRICS_FILE).read_text())
    assert "wall_time_s" not in metrics and "tokens_per_s" not in metrics
    timing = read_history(tmp_path / "a" / TIMING_LOG_FILE)
    assert [r["step"] for r in timing if "tokens_per_s" in r] == [r["step"] for r in history if "loss" in r]
    assert json.loads((tmp_path / "a" / TIMING_FILE).read_text())["wall_time_s"] > 0
    run = json.loads((tmp_path / "a" / RUN_FILE).read_text())
    provenance = json.loads((tmp_path / "a" / "provenance.json").read_text())
    assert len(run["run_key"]) == 16 and provenance["run_key"] == run["run_key"]
    assert provenance["data"] == run["data"] and set(run["data"]) == {"shards_manifest_sha256", "text_cache_sha256"}


def test_finished_run_is_reused_and_its_metrics_rewritten(shards, tmp_path):
    run = tmp_path / "run"
    first = _train(shards, run, tmp_path / "cache")
    metrics_bytes, stamps, digests = (run / METRICS_FILE).read_bytes(), _stamps(run), _digests(run)
    (run / METRICS_FILE).unlink()  # what Snakemake does before a forced rerun
    again = _train(shards, run, tmp_path / "cache", callbacks=[_no_training()])
    assert again == first and (run / METRICS_FILE).read_bytes() == metrics_bytes
    assert _stamps(run) == stamps and _digests(run) == digests  # checkpoints untouched
    # Logging cadence and text-encoder batching do not change what is computed: same run key, still no training.
    _train(
        shards,
        run,
        tmp_path / "cache",
        train_cfg=tiny_train(max_steps=4, checkpoint_every=2, val_every=2, keep_last_checkpoints=1, log_every=3),
        callbacks=[_no_training()],
    )
    assert _stamps(run) == stamps and not (run / PREVIOUS_DIR).exists()


def test_other_params_keep_the_previous_run_and_switching_back_restores_it(shards, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    base = _train(shards, run, cache)
    key_a = json.loads((run / RUN_FILE).read_text())["run_key"]
    files_a = _digests(run)

    changed = tiny_train(max_steps=4, checkpoint_every=2, val_every=2, keep_last_checkpoints=1, lr=1e-2)
    other = _train(shards, run, cache, train_cfg=changed)
    key_b = json.loads((run / RUN_FILE).read_text())["run_key"]
    assert key_b != key_a and other["last_loss"] != base["last_loss"]
    assert sorted(p.name for p in (run / PREVIOUS_DIR).iterdir()) == [key_a]
    assert _digests(run / PREVIOUS_DIR / key_a) == files_a  # moved whole, metrics included
    assert json.loads((run / PREVIOUS_DIR / key_a / METRICS_FILE).read_text()) == base

    # Back to the first params: run A comes back from previous/, run B goes there; nothing is trained.
    restored = _train(shards, run, cache, callbacks=[_no_training()])
    assert restored == base and _digests(run) == files_a
    assert sorted(p.name for p in (run / PREVIOUS_DIR).iterdir()) == [key_b]

    # --no-resume: a fresh run of the same key; the old one is kept in previous/.
    again = _train(shards, run, cache, resume=False)
    assert again == base
    assert sorted(p.name for p in (run / PREVIOUS_DIR).iterdir()) == sorted([key_a, key_b])


def test_other_data_is_another_run(shards, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    _train(shards, run, cache)
    key_a = json.loads((run / RUN_FILE).read_text())["run_key"]
    more = make_shards(tmp_path / "more", clips_per_shard=16)
    _train(more, run, cache)
    assert json.loads((run / RUN_FILE).read_text())["run_key"] != key_a
    assert (run / PREVIOUS_DIR / key_a / METRICS_FILE).is_file()


def test_a_run_from_before_run_keys_is_kept(shards, tmp_path):
    run = tmp_path / "run"
    _train(shards, run, tmp_path / "cache")
    (run / RUN_FILE).unlink()
    shutil.copytree(run, tmp_path / "old")
    _train(shards, run, tmp_path / "cache")
    assert _digests(run / PREVIOUS_DIR / "unkeyed") == _digests(tmp_path / "old")
