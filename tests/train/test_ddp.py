"""Two data-parallel CPU processes (Lightning ddp_spawn, gloo): disjoint data per rank, identical final weights."""

from __future__ import annotations

import json

import pytest

from ssmttm.train.stage import train_lm

from ._fixtures import TEXT_CFG, FakeTextEncoder, make_shards, tiny_lm, tiny_train


@pytest.mark.timeout(120)
def test_two_cpu_ranks_see_disjoint_data_and_agree_on_weights(tmp_path):
    shards = make_shards(tmp_path / "shards", n_shards=2, clips_per_shard=12)  # 20 train clips, 10 per rank
    train = tiny_train(
        batch_size=2,
        accumulate_grad_batches=1,
        max_steps=3,
        checkpoint_every=3,
        val_every=3,
        devices=2,
        strategy="ddp_spawn",
    )
    out = tmp_path / "run"
    metrics = train_lm(
        shards,
        tiny_lm(),
        TEXT_CFG,
        train,
        out,
        seed=3,
        text_cache_dir=tmp_path / "cache",
        text_encoder=FakeTextEncoder(),
        record_clip_ids=True,
    )

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["micro_step"] == 3 for r in ranks)
    ids0, ids1 = ranks[0]["clip_ids"], ranks[1]["clip_ids"]
    assert len(ids0) == len(ids1) == 6  # 3 steps x 2 clips, within the first epoch
    assert len(set(ids0)) == 6 and not set(ids0) & set(ids1)
    # Gradients were all-reduced: both processes end with the same weights although they saw different clips.
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    assert metrics["tokens"] == 3 * 2 * 2 * tiny_lm().seq_len  # global batch counts both ranks
    assert (out / "step-0000003" / "model.safetensors").is_file()
