"""Train a small DAC on the corpus clips (the offline demo's codec), with descript-audio-codec's own pieces.

Model `dac.model.DAC`, discriminator `dac.model.Discriminator`, losses from `dac.nn.loss` (MelSpectrogramLoss with
DAC's 7-scale settings, MultiScaleSTFTLoss, L1Loss, GANLoss) and the VQ commitment/codebook losses of the model
output. The step mirrors DAC's `scripts/train.py`: a discriminator update on the detached reconstruction, then a
generator update on the weighted sum of losses (weights default to DAC's `conf/base.yml` lambdas: mel 15,
feature matching 2, adversarial 1, commitment 0.25, codebook 1; the STFT and waveform L1 losses are computed there
with weight 0 and are skipped here unless given a weight). AdamW with betas (0.8, 0.99), per-step ExponentialLR,
gradient clipping 1e3 (generator) and 10 (discriminator) as in DAC.

Training reads random crops of `segment_s` seconds from the clips of the training tracks; a fixed set of tracks
(chosen by a seeded hash of the track id) is held out. The held-out score is DAC's mel distance (the mel loss above:
L1 of log10 mel magnitudes at 7 scales) between held-out clips and their reconstruction, for the trained model and
for the same architecture untrained with the same seed (its initial weights).

Runs are deterministic on CPU for a given thread count: seeded RNGs, deterministic algorithms, and the global torch
RNG/threads/determinism flags restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from ssmttm.artifacts import read_jsonl, stable_unit_float
from ssmttm.codec import build_dac
from ssmttm.errors import UserFacingError

log = logging.getLogger(__name__)

# DAC conf/base.yml MelSpectrogramLoss: used for training and for the held-out mel distance.
MEL_N_MELS = (5, 10, 20, 40, 80, 160, 320)
MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
STFT_WINDOWS = (2048, 512)


@dataclass
class DiscriminatorConfig:
    """dac.model.Discriminator sub-discriminators; all empty = no GAN losses (reconstruction + VQ losses only)."""

    periods: tuple[int, ...] = ()  # MPD periods (DAC: 2, 3, 5, 7, 11; heavy on CPU)
    fft_sizes: tuple[int, ...] = (512,)  # MRD STFT sizes (DAC: 2048, 1024, 512)
    rates: tuple[int, ...] = ()  # MSD rates (DAC: none)


@dataclass
class LossWeights:
    mel: float = 15.0
    feature: float = 2.0
    adversarial: float = 1.0
    commitment: float = 0.25
    codebook: float = 1.0
    stft: float = 0.0
    waveform: float = 0.0


@dataclass
class CodecTrainConfig:
    encoder_dim: int = 4
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int = 64
    decoder_dim: int = 64
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    n_codebooks: int = 4
    codebook_size: int = 1024
    codebook_dim: int = 8
    quantizer_dropout: float = 0.0
    steps: int = 100
    batch_size: int = 4
    segment_s: float = 0.3  # random crop length per training item
    lr: float = 1e-3
    betas: tuple[float, float] = (0.8, 0.99)
    lr_gamma: float = 0.999996  # ExponentialLR per step
    grad_clip_generator: float = 1000.0
    grad_clip_discriminator: float = 10.0
    loss_weights: LossWeights = field(default_factory=LossWeights)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    holdout_fraction: float = 0.15  # share of tracks held out for the mel distance (at least one track)
    eval_clips: int = 8  # held-out clips scored
    eval_seconds: float = 5.0  # scored from each clip's start
    log_every: int = 10
    num_threads: int = 1  # torch CPU threads: results are reproducible for a given count


@dataclass(frozen=True)
class Clip:
    clip_id: str
    track_id: str
    path: Path
    n_samples: int  # real audio (tail padding excluded)
    sample_rate: int


# ----------------------------------------------------------------------------------------------- clips


def resolve_audio_path(row: dict[str, Any], clips_dir: Path) -> Path:
    """clips.jsonl paths are relative to the repository root (the working directory); fall back to the folder."""
    path = Path(row["audio_path"])
    if path.is_file():
        return path
    local = clips_dir / "clips" / f"{row['clip_id']}.wav"
    return local if local.is_file() else path


def read_clips(clip_dirs: Sequence[str | Path]) -> list[Clip]:
    """All clips of the segment folders, sorted by clip_id."""
    if not clip_dirs:
        raise UserFacingError("codec.mode is 'train' but no clips were given: pass --clips data/segment/shard-*")
    clips = []
    for folder in map(Path, clip_dirs):
        table = folder / "clips.jsonl"
        if not table.is_file():
            raise UserFacingError(f"{table}: clips.jsonl not found; run `ssmttm segment` for this shard first")
        for row in read_jsonl(table):
            real = min(int(row["num_samples"]), round(float(row["duration_s"]) * int(row["sample_rate"])))
            clips.append(
                Clip(row["clip_id"], row["track_id"], resolve_audio_path(row, folder), real, int(row["sample_rate"]))
            )
    if not clips:
        raise UserFacingError(f"no clips in {', '.join(map(str, clip_dirs))}: the codec has nothing to train on")
    rates = sorted({c.sample_rate for c in clips})
    if len(rates) != 1:
        raise UserFacingError(f"clips have mixed sample rates {rates}; re-run segment with one segment.sample_rate")
    return sorted(clips, key=lambda c: c.clip_id)


def split_holdout(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """(train, held-out) by track: the tracks with the smallest seeded hash are held out, at least one each side."""
    tracks = sorted({c.track_id for c in clips}, key=lambda t: (stable_unit_float(seed, "codec_holdout", t), t))
    if len(tracks) < 2:
        raise UserFacingError(f"the codec needs clips of at least 2 tracks (a held-out one), got {len(tracks)}")
    n_held = min(len(tracks) - 1, max(1, round(fraction * len(tracks))))
    held = set(tracks[:n_held])
    return [c for c in clips if c.track_id not in held], [c for c in clips if c.track_id in held]


def read_segment(clip: Clip, start: int, frames: int) -> np.ndarray:
    """(frames,) float32 from `start`, zero-padded past the clip's real audio."""
    take = max(0, min(frames, clip.n_samples - start))
    data, _ = sf.read(str(clip.path), start=start, frames=take, dtype="float32", always_2d=True)  # (n, C)
    out = np.zeros(frames, dtype=np.float32)
    out[: data.shape[0]] = data[:, 0]
    return out


def batches(clips: list[Clip], cfg: CodecTrainConfig, segment: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless seeded batches (B, 1, segment) of random crops of random training clips."""
    rng = np.random.default_rng([seed, 0xC0DEC])
    while True:
        picks = rng.integers(0, len(clips), size=cfg.batch_size)
        items = []
        for i in picks:
            clip = clips[int(i)]
            start = int(rng.integers(0, max(1, clip.n_samples - segment + 1)))
            items.append(read_segment(clip, start, segment))
        yield torch.from_numpy(np.stack(items))[:, None, :]  # (B, 1, segment)


# ----------------------------------------------------------------------------------------------- model and losses


def model_kwargs(cfg: CodecTrainConfig, sample_rate: int) -> dict[str, Any]:
    if math.prod(cfg.encoder_rates) != math.prod(cfg.decoder_rates):
        raise UserFacingError(
            f"codec.train: encoder_rates {list(cfg.encoder_rates)} and decoder_rates "
            f"{list(cfg.decoder_rates)} must have the same product (the hop length)"
        )
    if cfg.decoder_dim % 2 ** len(cfg.decoder_rates):
        raise UserFacingError(
            f"codec.train.decoder_dim {cfg.decoder_dim} must be divisible by "
            f"2^{len(cfg.decoder_rates)} (each decoder block halves the channels)"
        )
    if not 1 <= cfg.codebook_size <= 1024:
        raise UserFacingError("codec.train.codebook_size must be in 1..1024 (1024 is the LM's special id)")
    return {
        "encoder_dim": cfg.encoder_dim,
        "encoder_rates": list(cfg.encoder_rates),
        "latent_dim": cfg.latent_dim,
        "decoder_dim": cfg.decoder_dim,
        "decoder_rates": list(cfg.decoder_rates),
        "n_codebooks": cfg.n_codebooks,
        "codebook_size": cfg.codebook_size,
        "codebook_dim": cfg.codebook_dim,
        "quantizer_dropout": cfg.quantizer_dropout,
        "sample_rate": sample_rate,
    }


def mel_loss_fn() -> torch.nn.Module:
    from dac.nn.loss import MelSpectrogramLoss

    return MelSpectrogramLoss(
        n_mels=list(MEL_N_MELS),
        window_lengths=list(MEL_WINDOWS),
        mel_fmin=[0.0] * 7,
        mel_fmax=[None] * 7,
        pow=1.0,
        mag_weight=0.0,
        clamp_eps=1e-5,
    )


@torch.no_grad()
def heldout_mel_distance(model: torch.nn.Module, clips: list[Clip], seconds: float, device: torch.device) -> float:
    """Mean DAC mel distance between held-out clips (first `seconds`) and their reconstruction."""
    from audiotools import AudioSignal

    mel = mel_loss_fn()
    was_training = model.training
    model.eval()
    scores = []
    for clip in clips:
        n = min(clip.n_samples, round(seconds * clip.sample_rate))
        x = torch.from_numpy(read_segment(clip, 0, n))[None, None].to(device)  # (1, 1, n)
        y = model(x, clip.sample_rate)["audio"]  # (1, 1, n)
        scores.append(float(mel(AudioSignal(y, clip.sample_rate), AudioSignal(x, clip.sample_rate))))
    model.train(was_training)
    return float(np.mean(scores))


@contextlib.contextmanager
def reproducible(seed: int, threads: int, device: torch.device) -> Iterator[None]:
    """Seeded, deterministic torch for the block; global RNG, thread count and flags restored after."""
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous_det, warn_only=previous_warn)
            torch.set_num_threads(previous_threads)


# ----------------------------------------------------------------------------------------------- training


def train_codec(
    cfg: CodecTrainConfig, clip_dirs: Sequence[str | Path], seed: int, device: torch.device
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train; return (model in eval mode on CPU, metrics dict). Deterministic for a given seed on CPU."""
    from audiotools import AudioSignal
    from dac.model import Discriminator
    from dac.nn.loss import GANLoss, L1Loss, MultiScaleSTFTLoss

    clips = read_clips(clip_dirs)
    sample_rate = clips[0].sample_rate
    train, held = split_holdout(clips, cfg.holdout_fraction, seed)
    held_eval = sorted(held, key=lambda c: (stable_unit_float(seed, "codec_eval", c.clip_id), c.clip_id))
    held_eval = held_eval[: cfg.eval_clips]
    kwargs = model_kwargs(cfg, sample_rate)
    hop = math.prod(cfg.encoder_rates)
    segment = max(1, round(cfg.segment_s * sample_rate / hop)) * hop
    if segment <= max(MEL_WINDOWS) // 2:
        raise UserFacingError(
            f"codec.train.segment_s = {cfg.segment_s} gives {segment} samples; the mel loss needs "
            f"more than {max(MEL_WINDOWS) // 2}: use a longer segment"
        )
    weights = cfg.loss_weights
    use_gan = bool(cfg.discriminator.periods or cfg.discriminator.fft_sizes or cfg.discriminator.rates)

    with reproducible(seed, cfg.num_threads, device), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # weight_norm deprecation inside DAC
        warnings.filterwarnings("ignore", message="stft_data changed shape")  # audiotools, harmless
        generator = build_dac(kwargs).to(device)
        untrained = heldout_mel_distance(generator, held_eval, cfg.eval_seconds, device)
        opt_g = torch.optim.AdamW(generator.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, cfg.lr_gamma)
        if use_gan:
            disc = Discriminator(
                rates=list(cfg.discriminator.rates),
                periods=list(cfg.discriminator.periods),
                fft_sizes=list(cfg.discriminator.fft_sizes),
                sample_rate=sample_rate,
            ).to(device)
            gan = GANLoss(disc)
            opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
            sched_d = torch.optim.lr_scheduler.ExponentialLR(opt_d, cfg.lr_gamma)
        mel_loss, stft_loss, l1_loss = mel_loss_fn(), MultiScaleSTFTLoss(window_lengths=list(STFT_WINDOWS)), L1Loss()

        curve: list[dict[str, float]] = []
        recent: list[dict[str, float]] = []
        started = time.monotonic()
        data = batches(train, cfg, segment, seed)
        generator.train()
        for step in range(1, cfg.steps + 1):
            audio = next(data).to(device)  # (B, 1, segment)
            signal = AudioSignal(audio, sample_rate)
            out = generator(signal.audio_data, sample_rate)
            recons = AudioSignal(out["audio"], sample_rate)
            terms: dict[str, torch.Tensor] = {}
            if use_gan:
                loss_d = gan.discriminator_loss(recons, signal)
                opt_d.zero_grad()
                loss_d.backward()
                torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.grad_clip_discriminator)
                opt_d.step()
                sched_d.step()
                terms["discriminator"] = loss_d.detach()
                terms["adversarial"], terms["feature"] = gan.generator_loss(recons, signal)
            terms["mel"] = mel_loss(recons, signal)
            if weights.stft:
                terms["stft"] = stft_loss(recons, signal)
            if weights.waveform:
                terms["waveform"] = l1_loss(recons, signal)
            terms["commitment"] = out["vq/commitment_loss"]
            terms["codebook"] = out["vq/codebook_loss"]
            loss = sum(getattr(weights, k) * v for k, v in terms.items() if k != "discriminator")
            opt_g.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(generator.parameters(), cfg.grad_clip_generator)
            opt_g.step()
            sched_g.step()
            record = {k: round(float(v.detach()), 6) for k, v in terms.items()}
            record["total"] = round(float(loss.detach()), 6)
            recent = (recent + [record])[-cfg.log_every :]
            if step % cfg.log_every == 0 or step == cfg.steps:
                curve.append({"step": step, **record})
                log.info("codec step %d/%d: %s (%.1fs)", step, cfg.steps, record, time.monotonic() - started)
        trained = heldout_mel_distance(generator, held_eval, cfg.eval_seconds, device)

    final = {k: round(float(np.mean([r[k] for r in recent])), 6) for k in recent[0]} if recent else {}
    metrics = {
        "steps": cfg.steps,
        "segment_samples": segment,
        "sample_rate": sample_rate,
        "train": {"clips": len(train), "tracks": len({c.track_id for c in train})},
        "final_losses": final,  # mean over the last `log_every` steps
        "loss_curve": curve,
        "heldout": {
            "clips": [c.clip_id for c in held_eval],
            "tracks": sorted({c.track_id for c in held}),
            "seconds": cfg.eval_seconds,
            "mel_distance_trained": round(trained, 6),
            "mel_distance_untrained": round(untrained, 6),
            "metric": "DAC MelSpectrogramLoss (L1 of log10 mel magnitudes, 7 scales 32..2048)",
        },
    }
    return generator.eval().cpu(), metrics
