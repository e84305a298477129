"""Tiny token shards with latents, a word-hash text encoder and tiny refiner configs for the train-refiner tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ssmttm.config import dataclass_to_dict
from ssmttm.refine.model import RefinerConfig
from ssmttm.refine.train import TrainRefinerConfig
from ssmttm.text.encoder import TextConfig, TextEncoding
from ssmttm.tokens.shards import TokenRow, finalize_manifest, write_shard
from ssmttm.train.text_cache import build_text_cache, shard_captions

K, D, E = 3, 2, 8  # codebooks, dims per codebook, text width
CODEC = {"model": "dac", "variant": "synthetic", "n_codebooks": K, "codebook_size": 16, "codebook_dim": D}
MOODS = ["calm", "dark", "epic"]
FRAMES = (40, 28, 12)  # clip lengths cycle through these: longer and shorter than the tests' 16-frame crops
TEXT_CFG = TextConfig(encoder="word-hash", max_length=4, batch_size=8, device="cpu")


def synthetic_latents(index: int, n_frames: int) -> np.ndarray:
    """(K*D, T) float16: codebook 1 a sine whose frequency follows the mood; codebooks 2..K fixed maps of it."""
    t = np.arange(n_frames)
    freq = 0.2 + 0.15 * (index % len(MOODS))
    cb1 = np.stack([np.sin(freq * t + index), np.cos(freq * t + index)]) * 2 + 0.5  # (D, T)
    rest = [(-0.5 * (k + 1)) * cb1 + k for k in range(K - 1)]
    noise = np.random.default_rng(index).normal(scale=0.05, size=(K * D, n_frames))
    return (np.concatenate([cb1, *rest]) + noise).astype(np.float16)


def make_latent_shards(folder: Path, n_shards: int = 2, clips_per_shard: int = 9, store_latents: bool = True) -> Path:
    """Shards of `clips_per_shard` clips in row groups of 4; every 4th clip goes to the valid split."""
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for shard in range(n_shards):
        rows = []
        for _ in range(clips_per_shard):
            frames = FRAMES[index % len(FRAMES)]
            rows.append(
                TokenRow(
                    clip_id=f"t{index:03d}-0000",
                    track_id=f"t{index:03d}",
                    split="valid" if index % 4 == 3 else "train",
                    caption=f"a {MOODS[index % len(MOODS)]} piece",
                    duration_s=frames / 50.0,
                    codes=np.zeros((K, frames), np.int16),
                    latents=synthetic_latents(index, frames) if store_latents else None,
                )
            )
            index += 1
        write_shard(
            folder / f"shard-{shard:05d}.parquet",
            rows,
            {"ssmttm.codec": CODEC, "ssmttm.params_sha256": "r"},
            row_group_size=4,
            store_latents=store_latents,
        )
    finalize_manifest(folder)
    return folder


class WordHashEncoder:
    """Deterministic stand-in for TextEncoder: each word's state is drawn from a generator seeded by the word."""

    hidden_size = E

    def __init__(self, max_length: int = TEXT_CFG.max_length):
        self.max_length = max_length

    def encode(self, captions: list[str]) -> TextEncoding:
        hidden = torch.zeros(len(captions), self.max_length, E)
        mask = torch.zeros(len(captions), self.max_length, dtype=torch.bool)
        for i, caption in enumerate(captions):
            for j, word in enumerate((caption.split() or ["<empty>"])[: self.max_length]):
                hidden[i, j] = torch.randn(E, generator=torch.Generator().manual_seed(sum(map(ord, word)) * 7919))
                mask[i, j] = True
        return TextEncoding(hidden, mask)


def build_cache(shards: Path, root: Path, text_cfg: TextConfig = TEXT_CFG) -> Path:
    return build_text_cache(shard_captions(shards), text_cfg, root, encoder=WordHashEncoder(text_cfg.max_length))


def tiny_refiner(**overrides: Any) -> RefinerConfig:
    return RefinerConfig(**{"unet": "tiny", "primary": True, **overrides})


def tiny_train(**overrides: Any) -> TrainRefinerConfig:
    base = dict(
        steps=12,
        batch_size=4,
        accumulate_grad_batches=1,
        crop_frames=16,
        lr=3e-3,
        warmup_steps=2,
        gradient_clip_val=1.0,
        checkpoint_every=4,
        keep_last_checkpoints=2,
        val_every=6,
        val_clips=None,
        val_timesteps=4,
        log_every=2,
        num_threads=1,
        device="cpu",
    )
    return TrainRefinerConfig(**{**base, **overrides})


def write_params(path: Path, repo_root: Path, refiner: RefinerConfig, train: TrainRefinerConfig, seed: int) -> Path:
    """The repository's params.yaml with the seed, text, refiner and train_refiner sections of these tests."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["seed"] = seed
    params["portable_cpu"] = False
    params["text"] = dataclass_to_dict(TEXT_CFG)
    params["refiner_text"] = {"encoder": None, "max_length": None}
    params["refiner"] = dataclass_to_dict(refiner)
    params["train_refiner"] = dataclass_to_dict(train)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
