"""Codec and token tests. Shared builders (imported by tests/tokens/test_tokenize.py and test_loader.py too):
a tiny synthetic corpus written per the segment/caption contracts, and a tiny DAC that runs in milliseconds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ssmttm.artifacts import write_jsonl
from ssmttm.codec import build_dac, model_identity, save_codec
from ssmttm.codec.train import CodecTrainConfig, DiscriminatorConfig, LossWeights

RATE = 16000
# Hop 8 at 16 kHz: 2000 frames/s; 2 codebooks of 16 codes in 4 dims.
TINY_KWARGS = {
    "encoder_dim": 4,
    "encoder_rates": [2, 4],
    "latent_dim": 8,
    "decoder_dim": 16,
    "decoder_rates": [4, 2],
    "n_codebooks": 2,
    "codebook_size": 16,
    "codebook_dim": 4,
    "sample_rate": RATE,
}
# The demo's shape in small: an odd decoder rate (DAC's decoder returns 2 samples short per frame count: padded and
# cropped), hop 10 at 16 kHz.
TINY_ODD_KWARGS = {**TINY_KWARGS, "encoder_rates": [2, 5], "decoder_rates": [5, 2]}
# Trained like the demo (no GAN: mel + VQ losses), hop 10.
TINY_TRAIN = CodecTrainConfig(
    encoder_dim=4,
    encoder_rates=(2, 5),
    latent_dim=8,
    decoder_dim=16,
    decoder_rates=(5, 2),
    n_codebooks=2,
    codebook_size=16,
    codebook_dim=4,
    steps=3,
    batch_size=2,
    segment_s=0.1,
    lr=1e-3,
    holdout_fraction=0.34,
    eval_clips=2,
    eval_seconds=0.25,
    log_every=1,
    loss_weights=LossWeights(feature=0.0, adversarial=0.0),
    discriminator=DiscriminatorConfig(),
)
# The same with DAC's GAN terms (one small MRD discriminator, DAC's loss weights).
TINY_GAN = dataclasses.replace(
    TINY_TRAIN, loss_weights=LossWeights(), discriminator=DiscriminatorConfig(fft_sizes=(128,))
)


def synth_clip(track: str, k: int, n: int, rate: int = RATE) -> np.ndarray:
    """(n,) float32: a seeded chord (fundamental 110-440 Hz, 4 harmonics) plus noise; all tracks share one
    distribution, so a codec trained on some tracks can be scored on another."""
    rng = np.random.default_rng([sum(map(ord, track)), k])
    t = np.arange(n) / rate
    base = rng.uniform(110.0, 440.0)
    x = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * base * (h + 1) * t + rng.uniform(0, 6.3)) for h in range(4))
    return (x + 0.02 * rng.standard_normal(n)).astype(np.float32)


def write_corpus(
    root: Path,
    tracks: dict[str, int],
    seconds: float = 0.25,
    rate: int = RATE,
    shard: str = "00000",
    tail: dict[str, float] | None = None,
) -> tuple[Path, Path]:
    """segment/shard-X (clips/*.wav + clips.jsonl) and caption/shard-X (captions.jsonl) under root.

    tracks: track_id -> number of clips; tail: clip_id -> real seconds (the rest of the file is zero padding).
    """
    seg, cap = root / "segment" / f"shard-{shard}", root / "caption" / f"shard-{shard}"
    (seg / "clips").mkdir(parents=True, exist_ok=True)
    n = round(seconds * rate)
    clips, captions = [], []
    for track, count in tracks.items():
        for k in range(count):
            clip_id = f"{track}-{k:04d}"
            audio = synth_clip(track, k, n, rate)
            real = round((tail or {}).get(clip_id, seconds) * rate)
            audio[real:] = 0.0
            path = seg / "clips" / f"{clip_id}.wav"
            sf.write(str(path), audio, rate, subtype="PCM_16")
            clips.append(
                {
                    "clip_id": clip_id,
                    "track_id": track,
                    "audio_path": str(path),
                    "start_s": k * seconds,
                    "duration_s": real / rate,
                    "num_samples": n,
                    "sample_rate": rate,
                    "licence": "MIT",
                    "tags": {"mood": "calm"},
                    "vocals_removed": False,
                }
            )
            captions.append(
                {
                    "clip_id": clip_id,
                    "track_id": track,
                    "caption": f"calm music from {track}, part {k}",
                    "caption_source": "tags",
                }
            )
    write_jsonl(seg / "clips.jsonl", sorted(clips, key=lambda r: r["clip_id"]))
    write_jsonl(cap / "captions.jsonl", sorted(captions, key=lambda r: r["clip_id"]))
    return seg, cap


def tiny_codec(folder: Path, seed: int = 0, kwargs: dict | None = None) -> Path:
    """A randomly initialised tiny DAC (TINY_KWARGS by default) saved as a codec folder (weights + codec.json)."""
    torch.manual_seed(seed)
    model = build_dac(kwargs or TINY_KWARGS).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_codec(folder, model, model_identity(model, variant="trained"))
    return folder
