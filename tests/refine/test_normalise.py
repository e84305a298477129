"""Per-codebook latent normalisation: round trip, paper constants, statistics from token shards, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssmttm.errors import UserFacingError
from ssmttm.refine.normalise import (
    PAPER_DAC44K_STATS,
    STATS_FILE,
    LatentStats,
    compute_stats,
    denormalise,
    normalise,
)
from ssmttm.tokens.shards import TokenRow, write_shard

K, D = 3, 4
CODEC = {"model": "dac", "variant": "synthetic", "n_codebooks": K, "codebook_size": 16, "codebook_dim": D}
MEANS, STDS = np.array([2.0, -1.0, 0.5]), np.array([3.0, 1.5, 0.25])


def synthetic_latents(index: int, n_frames: int, split: str) -> np.ndarray:
    """(K*D, T) float16 with codebook k ~ N(MEANS[k], STDS[k]); valid rows are far off (must be ignored)."""
    rng = np.random.default_rng(index)
    z = rng.normal(size=(K, D, n_frames)) * STDS[:, None, None] + MEANS[:, None, None]
    if split == "valid":
        z = z * 10 + 100
    return z.reshape(K * D, n_frames).astype(np.float16)


def make_latent_shards(folder, store_latents=True):
    """2 shards x 5 clips, row groups of 2, every 4th clip in the valid split; returns the train latents."""
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for s in range(2):
        rows = []
        for j in range(5):
            i = s * 5 + j
            split, frames = ("valid" if i % 4 == 3 else "train"), 20 + 3 * i
            z = synthetic_latents(i, frames, split)
            if split == "train":
                train.append(z)
            rows.append(
                TokenRow(
                    f"c{i:03d}", f"t{i:03d}", split, "a caption", frames / 86.13, np.zeros((K, frames), np.int16), z
                )
            )
        write_shard(
            folder / f"shard-{s:05d}.parquet",
            rows,
            {"ssmttm.codec": CODEC, "ssmttm.params_sha256": "x"},
            row_group_size=2,
            store_latents=store_latents,
        )
    return train


def test_round_trip_and_first_codebooks_only():
    x = torch.randn(2, 72, 10) * 4 + 0.5
    assert torch.allclose(denormalise(normalise(x, PAPER_DAC44K_STATS), PAPER_DAC44K_STATS), x, atol=1e-5)
    cb1 = x[0, :8]  # (D, T): codebook 1 alone, as the LM's codes give it
    assert torch.allclose(normalise(cb1, PAPER_DAC44K_STATS), normalise(x, PAPER_DAC44K_STATS)[0, :8])
    assert torch.allclose(normalise(x, PAPER_DAC44K_STATS)[:, 8:16], (x[:, 8:16] + 0.11) / 4.00)
    with pytest.raises(ValueError, match="multiple of 8"):
        normalise(torch.zeros(1, 12, 4), PAPER_DAC44K_STATS)
    with pytest.raises(ValueError, match="up to 72"):
        normalise(torch.zeros(1, 80, 4), PAPER_DAC44K_STATS)


def test_paper_constants():
    s = PAPER_DAC44K_STATS
    assert (s.n_codebooks, s.codebook_dim) == (9, 8)
    assert s.means[0] == 0.58 and s.means[7] == 0.0 and s.stds[0] == 4.95 and s.stds[-1] == 2.79


def test_stats_from_token_shards(tmp_path):
    train = make_latent_shards(tmp_path / "tokenize")
    stats = compute_stats(tmp_path / "tokenize")
    values = np.concatenate([z.astype(np.float64).reshape(K, -1) for z in train], axis=1)  # (K, D * frames)
    assert stats.codebook_dim == D and stats.n_codebooks == K
    assert np.allclose(stats.means, values.mean(axis=1), atol=1e-9)
    assert np.allclose(stats.stds, values.std(axis=1), atol=1e-9)
    assert np.allclose(stats.means, MEANS, atol=0.15) and np.allclose(stats.stds, STDS, rtol=0.1)  # not valid's
    assert stats.source["clips"] == len(train) and stats.source["split"] == "train"
    normed = normalise(torch.from_numpy(np.concatenate(train, axis=1)).float(), stats).reshape(K, -1)
    assert torch.allclose(normed.mean(1), torch.zeros(K), atol=1e-4)
    assert torch.allclose(normed.std(1, unbiased=False), torch.ones(K), atol=1e-4)

    model_dir = tmp_path / "refiner"
    model_dir.mkdir()
    path = stats.save(model_dir)
    assert path.name == STATS_FILE and json.loads(path.read_text())["format"] == "ssmttm.latent_stats/1"
    assert LatentStats.load(model_dir) == stats


def test_stats_need_latents(tmp_path):
    make_latent_shards(tmp_path / "tok", store_latents=False)
    with pytest.raises(UserFacingError, match="store_latents"):
        compute_stats(tmp_path / "tok")
    with pytest.raises(UserFacingError, match="no token shards"):
        compute_stats(tmp_path / "empty")
    make_latent_shards(tmp_path / "tok2")
    with pytest.raises(UserFacingError, match="no 'test' clip"):
        compute_stats(tmp_path / "tok2", split="test")
