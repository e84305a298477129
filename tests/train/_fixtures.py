"""Tiny synthetic token shards, a tiny LM config and a fake text encoder for the training tests (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssmttm.models.lm import LMConfig
from ssmttm.text.encoder import TextConfig, TextEncoding
from ssmttm.tokens.shards import TokenRow, finalize_manifest, write_shard
from ssmttm.train.config import TrainConfig
from tests.models._lm_utils import tiny_cfg

VOCAB = 16  # codebook size of the synthetic codes; the special id is 16
CODEC = {
    "model": "dac",
    "variant": "synthetic",
    "sample_rate": 44100,
    "hop_length": 512,
    "n_codebooks": 2,
    "codebook_size": VOCAB,
    "codebook_dim": 8,
    "encode_window_s": 10.0,
}
MOODS = ["calm", "dark", "happy", "epic"]


def synthetic_codes(index: int, n_codebooks: int, n_frames: int) -> np.ndarray:
    """A learnable pattern: codebook k counts up by k + 1 from a clip-dependent start (mod VOCAB)."""
    t = np.arange(n_frames)
    rows = [((index * 3 + k) + (k + 1) * t) % VOCAB for k in range(n_codebooks)]
    return np.stack(rows).astype(np.int16)  # (K, T)


def make_shards(
    folder: Path,
    n_shards: int = 2,
    clips_per_shard: int = 12,
    n_frames: int = 40,
    n_codebooks: int = 2,
    valid_every: int = 6,
) -> Path:
    """Shards of `clips_per_shard` clips; every `valid_every`-th track goes to the valid split. Returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for shard in range(n_shards):
        rows = []
        for _ in range(clips_per_shard):
            track = f"t{index:03d}"
            split = "valid" if index % valid_every == valid_every - 1 else "train"
            # Clip lengths vary so that crop and padding both happen.
            frames = n_frames - (index % 3) * 7
            rows.append(
                TokenRow(
                    clip_id=f"{track}-0000",
                    track_id=track,
                    split=split,
                    caption=f"a {MOODS[index % len(MOODS)]} synthetic piece number {index % 5}",
                    duration_s=frames / 86.13,
                    codes=synthetic_codes(index, n_codebooks, frames),
                )
            )
            index += 1
        write_shard(
            folder / f"shard-{shard:05d}.parquet",
            rows,
            {"ssmttm.codec": CODEC, "ssmttm.params_sha256": "t"},
            row_group_size=4,
            store_latents=False,
        )
    finalize_manifest(folder)
    return folder


def tiny_lm(backbone: str = "prefix_simba", **overrides) -> LMConfig:
    """The LM tests' tiny config, with training-time regularisation on (dropout, caption dropout, smoothing)."""
    training = dict(
        chunk_size=8,
        dropout=0.1,
        codebook_size=VOCAB,
        special_id=VOCAB,
        seq_len=33,
        d_text=None,
        p_drop_caption=0.1,
        p_drop_token=0.1,
        label_smoothing=0.1,
    )
    return tiny_cfg(backbone, **{**training, **overrides})


def tiny_train(**overrides) -> TrainConfig:
    base = dict(
        batch_size=4,
        accumulate_grad_batches=2,
        max_steps=8,
        lr=3e-3,
        warmup_steps=2,
        min_lr_ratio=0.1,
        checkpoint_every=4,
        keep_last_checkpoints=None,
        val_every=4,
        log_every=1,
        accelerator="cpu",
        devices=1,
        strategy="auto",
        precision="auto",
        deterministic=True,
    )
    base.update(overrides)
    return TrainConfig(**base)


TEXT_CFG = TextConfig(encoder="fake", max_length=6, batch_size=8, device="cpu")
D_TEXT = 12


class FakeTextEncoder:
    """Deterministic stand-in for TextEncoder: a caption's encoding depends on its words only."""

    hidden_size = D_TEXT

    def encode(self, captions: list[str]) -> TextEncoding:
        hidden = torch.zeros(len(captions), TEXT_CFG.max_length, D_TEXT)
        mask = torch.zeros(len(captions), TEXT_CFG.max_length, dtype=torch.bool)
        for i, caption in enumerate(captions):
            words = (caption.split() or ["</s>"])[: TEXT_CFG.max_length]
            for j, word in enumerate(words):
                g = torch.Generator().manual_seed(sum(map(ord, word)) * 131 + len(word))
                hidden[i, j] = torch.randn(D_TEXT, generator=g)
                mask[i, j] = True
        return TextEncoding(hidden, mask)
