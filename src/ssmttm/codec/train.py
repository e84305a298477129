"""Train a small DAC on the corpus clips (the offline demo's codec), with descript-audio-codec's own pieces.

Model `dac.model.DAC`, discriminator `dac.model.Discriminator`, losses from `dac.nn.loss` (MelSpectrogramLoss with
DAC's 7-scale settings, MultiScaleSTFTLoss, L1Loss, GANLoss) and the VQ commitment/codebook losses of the model
output. The step mirrors DAC's `scripts/train.py`: a discriminator update on the detached reconstruction, then a
generator update on the weighted sum of losses (weights default to DAC's `conf/base.yml` lambdas: mel 15,
feature matching 2, adversarial 1, commitment 0.25, codebook 1; the STFT and waveform L1 losses are computed there
with weight 0 and are skipped here unless given a weight). AdamW with betas (0.8, 0.99) (weight_decay 0: Adam),
per-step ExponentialLR, gradient clipping 1e3 (generator) and 10 (discriminator) as in DAC.

No GAN: a discriminator is built and stepped only when it has parts (periods, fft_sizes or rates) and the adversarial
or feature-matching weight is above 0; otherwise the step is the generator update on mel + VQ losses alone (the
demo's recipe, docs DEMO_CODEC.md: at a few minutes of CPU a GAN slows convergence and costs ~14x per step).

Training reads random crops of `segment_s` seconds from the clips of the training tracks; a fixed set of tracks
(chosen by a seeded hash of the track id) is held out. Held-out clips (their first `eval_seconds`) go through the
codec as the pipeline uses it (CodecHandle encode -> codes -> decode) before and after training, i.e. for the trained
model and for the same architecture untrained with the same seed, and are scored with `ssmttm.signal`: DAC's
mel distance (the training loss), dyncorr (structure in time: noise with the right spectrum scores 0) and the log-mel
L1 in dB. With `heldout_dir`, the trained model's reconstructions are written there as 16-bit WAVs beside their
references (`<clip_id>.reference.wav`, `<clip_id>.reconstruction.wav`) with an index.json of hashes and scores.

Runs are deterministic on CPU for a given thread count: seeded RNGs, deterministic algorithms, and the global torch
RNG/threads/determinism flags restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from ssmttm.artifacts import read_jsonl, sha256_file, stable_unit_float, write_json
from ssmttm.audio import write_wav
from ssmttm.codec import CodecHandle, build_dac, decode_to_length, model_identity
from ssmttm.errors import UserFacingError
from ssmttm.progress import progress
from ssmttm.signal import MEL_WINDOWS, dyncorr, log_mel_l1_db, mel_distance, mel_loss_fn

log = logging.getLogger(__name__)

STFT_WINDOWS = (2048, 512)
HELDOUT_INDEX = "index.json"
# Held-out scores (ssmttm.signal) -> what metrics.json says they are.
HELDOUT_MEASURES = {
    "mel_distance": "DAC MelSpectrogramLoss (L1 of log10 mel magnitudes, 7 scales 32..2048)",
    "dyncorr": "correlation of band-mean-removed log-mels (64 bands, 80 dB range; 1 = same dynamics, 0 = noise)",
    "log_mel_l1_db": "mean |log-mel difference| in dB (64 bands, floored 80 dB below the reference maximum)",
}


@dataclass
class DiscriminatorConfig:
    """dac.model.Discriminator sub-discriminators; all empty = no GAN losses (reconstruction + VQ losses only)."""

    periods: tuple[int, ...] = ()  # MPD periods (DAC: 2, 3, 5, 7, 11; heavy on CPU)
    fft_sizes: tuple[int, ...] = ()  # MRD STFT sizes (DAC: 2048, 1024, 512)
    rates: tuple[int, ...] = ()  # MSD rates (DAC: none)

    @property
    def has_parts(self) -> bool:
        return bool(self.periods or self.fft_sizes or self.rates)


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
    """Defaults: the demo recipe of docs/DEMO_CODEC.md (hop 320 at 16 kHz, 0.51 M parameters, no GAN)."""

    encoder_dim: int = 8
    encoder_rates: tuple[int, ...] = (2, 4, 5, 8)
    latent_dim: int | None = None  # None: encoder_dim * 2^len(encoder_rates) (128 here)
    decoder_dim: int = 64
    decoder_rates: tuple[int, ...] = (8, 5, 4, 2)
    n_codebooks: int = 4
    codebook_size: int = 1024
    codebook_dim: int = 8
    quantizer_dropout: float = 0.0
    steps: int = 160
    batch_size: int = 8
    segment_s: float = 0.5  # random crop length per training item
    lr: float = 1e-3
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay; 0 = Adam (DAC trains with torch's default 0.01)
    lr_gamma: float = 0.999996  # ExponentialLR per step
    grad_clip_generator: float = 1000.0
    grad_clip_discriminator: float = 10.0
    loss_weights: LossWeights = field(default_factory=lambda: LossWeights(feature=0.0, adversarial=0.0))
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
    """clips.jsonl paths are relative to the repository root (the working directory); fall back to the folder.

    The fallback keeps the recorded file name, so WAV and FLAC clips (segment.audio_format) are found alike.
    """
    path = Path(row["audio_path"])
    if path.is_file():
        return path
    local = clips_dir / "clips" / path.name
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


# ----------------------------------------------------------------------------------------------- held-out evaluation


@dataclass
class HeldoutResult:
    """One held-out clip through the codec: reference and reconstruction (n,) float32 at the codec rate, scores."""

    clip: Clip
    reference: np.ndarray
    reconstruction: np.ndarray
    scores: dict[str, float]


def evaluate_heldout(
    model: torch.nn.Module, clips: list[Clip], seconds: float, device: torch.device
) -> list[HeldoutResult]:
    """Encode each clip's first `seconds` to codes and decode them (CodecHandle, the pipeline's path); score both."""
    was_training = model.training
    model.eval()
    handle = CodecHandle(model=model, identity=model_identity(model, variant="heldout"), device=device)
    results = []
    for clip in clips:
        n = min(clip.n_samples, round(seconds * clip.sample_rate))
        reference = read_segment(clip, 0, n)  # (n,)
        codes, _ = handle.encode(torch.from_numpy(reference)[None, None])  # (1, K, ceil(n / hop))
        reconstruction = handle.decode(codes)[0, 0, :n].cpu().numpy()  # (n,)
        scores = {
            "mel_distance": mel_distance(reference, reconstruction, clip.sample_rate),
            "dyncorr": dyncorr(reference, reconstruction, clip.sample_rate),
            "log_mel_l1_db": log_mel_l1_db(reference, reconstruction, clip.sample_rate),
        }
        results.append(HeldoutResult(clip, reference, reconstruction, scores))
    model.train(was_training)
    return results


def mean_scores(results: list[HeldoutResult]) -> dict[str, float]:
    return {name: round(float(np.mean([r.scores[name] for r in results])), 6) for name in HELDOUT_MEASURES}


def write_heldout_audio(folder: Path, results: list[HeldoutResult], seconds: float) -> dict[str, Any]:
    """<clip_id>.reference.wav and <clip_id>.reconstruction.wav (16-bit PCM) plus index.json; return the index."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for result in results:
        row: dict[str, Any] = {"clip_id": result.clip.clip_id, "track_id": result.clip.track_id}
        for role, audio in (("reference", result.reference), ("reconstruction", result.reconstruction)):
            name = f"{result.clip.clip_id}.{role}.wav"
            write_wav(folder / name, audio, result.clip.sample_rate)
            row[role] = {"path": name, "sha256": sha256_file(folder / name)}
        row.update(samples=int(result.reference.shape[0]), **{k: round(v, 6) for k, v in result.scores.items()})
        rows.append(row)
    index = {
        "sample_rate": results[0].clip.sample_rate if results else None,
        "seconds": seconds,
        "subtype": "PCM_16",
        "scores": "trained codec, reconstruction vs reference: "
        + "; ".join(f"{k}: {v}" for k, v in HELDOUT_MEASURES.items()),
        "clips": rows,
    }
    write_json(folder / HELDOUT_INDEX, index)
    return index


# ----------------------------------------------------------------------------------------------- training


def train_codec(
    cfg: CodecTrainConfig,
    clip_dirs: Sequence[str | Path],
    seed: int,
    device: torch.device,
    heldout_dir: str | Path | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train; return (model in eval mode on CPU, metrics dict). Deterministic for a given seed on CPU.

    `heldout_dir`: also write the trained model's held-out reconstructions and references there (WAV + index.json).
    """
    from audiotools import AudioSignal
    from dac.nn.loss import L1Loss, MultiScaleSTFTLoss

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
    use_gan = cfg.discriminator.has_parts and (weights.adversarial > 0 or weights.feature > 0)

    with reproducible(seed, cfg.num_threads, device), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # weight_norm deprecation inside DAC
        warnings.filterwarnings("ignore", message="stft_data changed shape")  # audiotools, harmless
        generator = build_dac(kwargs).to(device)
        untrained = mean_scores(evaluate_heldout(generator, held_eval, cfg.eval_seconds, device))
        opt_g = torch.optim.AdamW(
            generator.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, cfg.lr_gamma)
        gan = build_gan(cfg, sample_rate, device) if use_gan else None
        mel_loss, stft_loss, l1_loss = mel_loss_fn(), MultiScaleSTFTLoss(window_lengths=list(STFT_WINDOWS)), L1Loss()

        curve: list[dict[str, float]] = []
        recent: list[dict[str, float]] = []
        data = batches(train, cfg, segment, seed)
        generator.train()
        for step in progress(range(1, cfg.steps + 1), "codec training", unit="step"):
            audio = next(data).to(device)  # (B, 1, segment)
            signal = AudioSignal(audio, sample_rate)
            z, _, _, commitment, codebook = generator.encode(generator.preprocess(audio, sample_rate))
            recons = AudioSignal(decode_to_length(generator, z, segment), sample_rate)  # (B, 1, segment)
            terms: dict[str, torch.Tensor] = {}
            if gan is not None:
                terms.update(gan.step(recons, signal))
            terms["mel"] = mel_loss(recons, signal)
            if weights.stft:
                terms["stft"] = stft_loss(recons, signal)
            if weights.waveform:
                terms["waveform"] = l1_loss(recons, signal)
            terms["commitment"] = commitment
            terms["codebook"] = codebook
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
                log.debug("codec step %d/%d: %s", step, cfg.steps, record)
        results = evaluate_heldout(generator, held_eval, cfg.eval_seconds, device)
        trained = mean_scores(results)
        if heldout_dir is not None:
            write_heldout_audio(Path(heldout_dir), results, cfg.eval_seconds)

    final = {k: round(float(np.mean([r[k] for r in recent])), 6) for k in recent[0]} if recent else {}
    log.info("codec: final losses (mean of the last %d steps) %s", len(recent), final)
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
            **{f"{name}_trained": trained[name] for name in HELDOUT_MEASURES},
            **{f"{name}_untrained": untrained[name] for name in HELDOUT_MEASURES},
            "metric": "; ".join(f"{name}: {text}" for name, text in HELDOUT_MEASURES.items()),
        },
    }
    return generator.eval().cpu(), metrics


@dataclass
class GanTerms:
    """DAC's discriminator with its optimizer: `step` updates it on the detached reconstruction and returns the
    generator's adversarial and feature-matching losses (and the discriminator loss, for the log)."""

    loss: Any  # dac.nn.loss.GANLoss wrapping the discriminator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    grad_clip: float

    def step(self, recons: Any, signal: Any) -> dict[str, torch.Tensor]:
        loss_d = self.loss.discriminator_loss(recons, signal)
        self.optimizer.zero_grad()
        loss_d.backward()
        torch.nn.utils.clip_grad_norm_(self.loss.discriminator.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        adversarial, feature = self.loss.generator_loss(recons, signal)
        return {"discriminator": loss_d.detach(), "adversarial": adversarial, "feature": feature}


def build_gan(cfg: CodecTrainConfig, sample_rate: int, device: torch.device) -> GanTerms:
    from dac.model import Discriminator
    from dac.nn.loss import GANLoss

    disc = Discriminator(
        rates=list(cfg.discriminator.rates),
        periods=list(cfg.discriminator.periods),
        fft_sizes=list(cfg.discriminator.fft_sizes),
        sample_rate=sample_rate,
    ).to(device)
    optimizer = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, cfg.lr_gamma)
    return GanTerms(GANLoss(disc), optimizer, scheduler, cfg.grad_clip_discriminator)
