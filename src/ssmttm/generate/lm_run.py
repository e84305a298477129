"""`ssmttm generate --lm-run`: every kept checkpoint of a train-lm run x the caption set x the variants -> WAVs.

Per checkpoint (oldest first) and batch of captions, the LM samples the tokens once (tokens.generate_tokens) and
every variant still missing for a caption is made from them (generate.config):

    two_stage       codebook 1 of the tokens -> refiner (synth.refine_codebook1) -> decode
    codebook1_only  codebook 1 of the tokens decoded alone
    single_stage    all the tokens decoded (an LM over all the codec's codebooks; skipped otherwise)

A clip's key hashes what it is a function of: the codec and LM weights, the caption, its seed, the LM settings (and
the refiner's weights and settings for two_stage), the device, the length. A clip recorded with its current key is
kept; changing a refiner setting remakes the two-stage clips only.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssmttm import stand_ins
from ssmttm.artifacts import hash_params, sha256_file
from ssmttm.codec import CodecHandle, load_codec, resolve_device
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import ClipFolder, write_clip
from ssmttm.generate.captions import Caption, load_captions
from ssmttm.generate.checkpoints import STEP_RE, Checkpoint, kept_checkpoints
from ssmttm.generate.common import (
    SUMMARY_FORMAT,
    AudioFormat,
    EncoderFactory,
    Encoders,
    batches,
    clip_row,
    finish,
    load_checked_refiner,
    prune_subfolders,
)
from ssmttm.generate.config import GenerateConfig
from ssmttm.generate.memory import check_sampling_fits, checkpoint_lm_config
from ssmttm.generate.synth import decode_clip, variant_codes_of
from ssmttm.generate.tokens import caption_seed, generate_tokens
from ssmttm.models.lm import WEIGHTS_FILE, load_lm
from ssmttm.progress import progress as report_progress

log = logging.getLogger(__name__)


def lm_variants(wanted: Sequence[str], lm_codebooks: int, codec_codebooks: int) -> tuple[list[str], dict[str, str]]:
    """The variants a checkpoint can make, and the reasons for the others."""
    chosen, skipped = [], {}
    for variant in wanted:
        if variant == "single_stage" and lm_codebooks != codec_codebooks:
            skipped[variant] = (
                f"the LM models {lm_codebooks} codebook(s), the codec {codec_codebooks}: single_stage needs an LM "
                "trained over all of them (lm.n_codebooks = codec codebooks)"
            )
        else:
            chosen.append(variant)
    return chosen, skipped


@dataclass
class RunInputs:
    """What every checkpoint of a run shares."""

    cfg: GenerateConfig
    out: Path
    device: torch.device
    codec: CodecHandle
    captions: list[Caption]
    seeds: dict[str, int]  # caption id -> clip seed
    audio: AudioFormat
    encoders: Encoders
    refiner: Any  # refine.model.Refiner, or None without two_stage
    refiner_id: str | None
    refiner_dir: str | Path | None
    progress: bool


def variant_codes(
    run: RunInputs, variant: str, codes: torch.Tensor, rows: list[int], batch: list[Caption]
) -> torch.Tensor:
    """The codes (len(rows), K', T) a variant decodes, from the LM's tokens (B, K_lm, T) of a batch."""
    encoder = None
    if variant == "two_stage":
        encoder = run.encoders.get(
            run.refiner.text, f"the refiner {run.refiner_dir}", run.refiner.secondary.cfg.context_dim
        )
    texts = [batch[i].text for i in rows]
    seeds = [run.seeds[batch[i].caption_id] for i in rows]
    return variant_codes_of(variant, codes[rows], texts, seeds, run.codec, run.cfg, run.refiner, encoder)


def generate_checkpoint(run: RunInputs, ckpt: Checkpoint) -> tuple[dict[str, ClipFolder], dict[str, str], Counter]:
    """The clips of one checkpoint: (its folders by "step-N/variant", skipped variants, generated/reused counts)."""
    cfg, codec, audio = run.cfg, run.codec, run.audio
    model, lm_cfg, trained_text = load_lm(ckpt.folder, device=run.device)
    if lm_cfg.codebook_size != codec.identity["codebook_size"]:
        raise UserFacingError(
            f"{ckpt.folder}: the LM has {lm_cfg.codebook_size} codes per codebook, the codec "
            f"{codec.identity['codebook_size']}; generate with the codec whose tokens it was trained on"
        )
    if audio.n_frames > lm_cfg.seq_len:
        log.warning("%s: %d frames asked, the LM was trained on %d", ckpt.folder, audio.n_frames, lm_cfg.seq_len)
    variants, skipped = lm_variants(cfg.variants, lm_cfg.n_codebooks, codec.n_codebooks)
    lm_encoder = run.encoders.get(trained_text, f"the LM {ckpt.folder}", lm_cfg.d_text)
    prune_subfolders(run.out / ckpt.name, set(variants), lambda name: True)
    common = {
        "codec": codec.identity["weights_sha256"],
        "lm": sha256_file(ckpt.folder / WEIGHTS_FILE),
        "lm_settings": cfg.lm_settings(),
        "device": run.device.type,
        "num_samples": audio.n_samples,
        "sample_rate": audio.sample_rate,
    }
    ids = {c.caption_id for c in run.captions}
    folders, keys, todo, counts = {}, {}, {}, Counter()
    for variant in variants:
        folder = folders[variant] = ClipFolder(run.out / ckpt.name / variant)
        folder.prune(ids)
        refined = (
            {"refiner": run.refiner_id, "refine_settings": cfg.refine_settings()} if variant == "two_stage" else {}
        )
        keys[variant] = {
            c.caption_id: hash_params(
                {**common, **refined, "variant": variant, "caption": c.text, "seed": run.seeds[c.caption_id]}
            )
            for c in run.captions
        }
        todo[variant] = {i for i in ids if not folder.done(i, keys[variant][i])}
        counts["reused"] += len(ids) - len(todo[variant])
    pending = [c for c in run.captions if any(c.caption_id in todo[v] for v in variants)]
    log.info("%s: %d of %d captions to generate", ckpt.name, len(pending), len(run.captions))
    batch_list = batches(pending, cfg.batch_size)
    for batch in report_progress(batch_list, f"generate {ckpt.name}", "batch", enabled=run.progress):
        seeds = [run.seeds[c.caption_id] for c in batch]
        tokens = generate_tokens(model, lm_encoder, [c.text for c in batch], audio.n_frames, cfg, seeds, progress=False)
        for variant in variants:
            rows = [i for i, c in enumerate(batch) if c.caption_id in todo[variant]]
            if not rows:
                continue
            settings = {**cfg.lm_settings(), **(cfg.refine_settings() if variant == "two_stage" else {})}
            for clip_codes, i in zip(variant_codes(run, variant, tokens, rows, batch), rows, strict=True):
                caption, folder = batch[i], folders[variant]
                path = folder.wav_path(caption.caption_id)
                fields = write_clip(path, decode_clip(codec, clip_codes), audio.sample_rate, audio.n_samples)
                key = keys[variant][caption.caption_id]
                folder.record(
                    clip_row(
                        caption,
                        variant,
                        key,
                        fields,
                        audio,
                        seed=seeds[i],
                        step=ckpt.step,
                        checkpoint=ckpt.name,
                        settings={**settings, "device": run.device.type},
                    )
                )
                counts["generated"] += 1
            folders[variant].flush()  # after each batch: what a kill leaves is recorded
    for folder in folders.values():
        folder.flush()
    return {f"{ckpt.name}/{v}": folders[v] for v in variants}, skipped, counts


def generate_run(
    cfg: GenerateConfig,
    lm_run: str | Path,
    codec_dir: str | Path,
    out: str | Path,
    seed: int,
    *,
    refiner_dir: str | Path | None = None,
    shards_dir: str | Path | None = None,
    text_section: dict[str, Any] | None = None,
    section: dict[str, Any] | None = None,
    encoder_factory: EncoderFactory | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every kept checkpoint of `lm_run` x the caption set x the variants -> WAVs under `out`; returns the summary
    (plus the `generated` and `reused` clip counts of this call, which are not written: reruns give the same files)."""
    device = resolve_device(cfg.device)
    codec = load_codec(codec_dir, device)
    captions = load_captions(cfg, shards_dir)
    checkpoints = kept_checkpoints(lm_run)
    refiner, refiner_id = None, None
    if "two_stage" in cfg.variants:
        refiner, refiner_id = load_checked_refiner(refiner_dir, codec, device)
    run = RunInputs(
        cfg=cfg,
        out=Path(out),
        device=device,
        codec=codec,
        captions=captions,
        seeds={c.caption_id: caption_seed(seed, c.caption_id) for c in captions},
        audio=AudioFormat.of(codec, cfg.seconds),
        encoders=Encoders(text_section, device, encoder_factory),
        refiner=refiner,
        refiner_id=refiner_id,
        refiner_dir=refiner_dir,
        progress=progress,
    )
    for ckpt in checkpoints:  # before anything is written: a length that cannot fit is refused up front
        lm_cfg = checkpoint_lm_config(ckpt.folder)
        check_sampling_fits(lm_cfg, cfg.batch_size, cfg.guidance_scale, run.audio.n_frames, "generate.seconds", device)
    run.out.mkdir(parents=True, exist_ok=True)
    prune_subfolders(run.out, {c.name for c in checkpoints}, lambda name: bool(STEP_RE.match(name)))
    folders, skipped, counts = {}, {}, Counter()
    for ckpt in checkpoints:
        ckpt_folders, ckpt_skipped, ckpt_counts = generate_checkpoint(run, ckpt)
        folders.update(ckpt_folders)
        skipped.update(ckpt_skipped)
        counts.update(ckpt_counts)
    summary = {
        "format": SUMMARY_FORMAT,
        "mode": "lm_run",
        "lm_run": str(lm_run),
        "checkpoints": [{"step": c.step, "folder": c.name, "source": c.folder.name} for c in checkpoints],
        "variants": [v for v in cfg.variants if v not in skipped],
        "skipped": skipped,
        "captions": {"set": cfg.captions, "path": cfg.captions_path, "count": len(captions)},
        "audio": run.audio.describe(),
        "settings": {**cfg.lm_settings(), **cfg.refine_settings(), "device": device.type},
    }
    inputs = {
        "lm_run": str(lm_run),
        "lm_weights_sha256": {c.name: sha256_file(c.folder / WEIGHTS_FILE) for c in checkpoints},
        "refiner": str(refiner_dir) if refiner is not None else None,
        "refiner_sha256": refiner_id,
        "codec_weights_sha256": codec.identity["weights_sha256"],
        **stand_ins.provenance_fields(
            stand_ins.inherited([lm_run, codec_dir, refiner_dir if refiner is not None else None])
        ),
    }
    finish(run.out, summary, folders, cfg, seed, section, inputs)
    log.info("%s: %d clips generated, %d reused", run.out, counts["generated"], counts["reused"])
    return {**summary, "generated": counts["generated"], "reused": counts["reused"]}
