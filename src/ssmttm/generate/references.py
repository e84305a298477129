"""`ssmttm generate --reference`: the references of a caption set with reference clips (the test split).

    original             the reference clip itself (from the segment folders), at the codec rate, cropped
    codec                its codes, all K codebooks, decoded: the codec's floor
    codebook1_only       its codebook 1 decoded alone
    reference_codebook1  the refiner on its own codebook 1 (caption, CFG, seed of the caption): the refiner's ceiling

They do not depend on any LM, so every backbone's clips are compared with the same references. A reference shorter
than `generate.seconds` is recorded as failed (short), never padded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmttm.artifacts import hash_params, read_jsonl, sha256_file
from ssmttm.audio import load_mono
from ssmttm.codec import CodecHandle, check_codec_matches, load_codec, resolve_device
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import ClipFolder, write_clip
from ssmttm.generate.captions import Reference, load_references, shards_codec
from ssmttm.generate.checkpoints import STEP_RE
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
from ssmttm.generate.synth import decode_clip, refine_codebook1
from ssmttm.generate.tokens import caption_seed, encode_one_by_one
from ssmttm.progress import progress as report_progress

log = logging.getLogger(__name__)


def index_clips(clip_dirs: Sequence[str | Path]) -> dict[str, Path]:
    """clip_id -> audio file (WAV or FLAC) of the segment folders given (data/segment, or some of its shard-NNNNN
    folders)."""
    tables = []
    for folder in map(Path, clip_dirs):
        tables += (
            [folder / "clips.jsonl"] if (folder / "clips.jsonl").is_file() else sorted(folder.glob("*/clips.jsonl"))
        )
    if not tables:
        raise UserFacingError(f"--clips {' '.join(map(str, clip_dirs))}: no clips.jsonl found; pass data/segment")
    found = {}
    for table in tables:
        for row in read_jsonl(table):
            path = Path(row["audio_path"])  # relative to the repository root (the working directory)
            local = table.parent / "clips" / path.name  # the recorded name: .wav or .flac (segment.audio_format)
            found[row["clip_id"]] = path if path.is_file() else local
    return found


def generate_references(
    cfg: GenerateConfig,
    codec_dir: str | Path,
    shards_dir: str | Path,
    out: str | Path,
    seed: int,
    *,
    refiner_dir: str | Path | None,
    clip_dirs: Sequence[str | Path] | None = None,
    text_section: dict[str, Any] | None = None,
    section: dict[str, Any] | None = None,
    encoder_factory: EncoderFactory | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The reference variants of the caption set (generate.config) -> WAVs under `out`; returns the summary."""
    device = resolve_device(cfg.device)
    out = Path(out)
    codec = load_codec(codec_dir, device)
    check_codec_matches(shards_codec(shards_dir), codec)
    references = load_references(cfg, shards_dir)
    audio = AudioFormat.of(codec, cfg.seconds)
    refiner, refiner_id = load_checked_refiner(refiner_dir, codec, device)
    encoder = Encoders(text_section, device, encoder_factory).get(
        refiner.text, f"the refiner {refiner_dir}", refiner.secondary.cfg.context_dim
    )
    variants = ["codec", "codebook1_only", "reference_codebook1"]
    skipped = {}
    clips: dict[str, Path] = {}
    if clip_dirs:
        variants.insert(0, "original")
        clips = index_clips(clip_dirs)
    else:
        skipped["original"] = "no --clips given (the segment folders holding the reference clips)"
    ids = {r.caption.caption_id for r in references}
    out.mkdir(parents=True, exist_ok=True)
    prune_subfolders(out, set(variants), lambda name: not STEP_RE.match(name))

    def key(variant: str, ref: Reference) -> str:
        caption_id = ref.caption.caption_id
        parts: dict[str, Any] = {"variant": variant, "num_samples": audio.n_samples, "sample_rate": audio.sample_rate}
        if variant == "original":
            source = clips.get(ref.caption.clip_id)
            parts["clip_sha256"] = sha256_file(source) if source is not None and source.is_file() else None
        else:
            parts |= {"codes": hash_params(ref.codes.tolist()), "codec": codec.identity["weights_sha256"]}
            parts["device"] = device.type
        if variant == "reference_codebook1":
            parts |= {"refiner": refiner_id, "settings": cfg.refine_settings(), "caption": ref.caption.text}
            parts["seed"] = caption_seed(seed, caption_id)
        return hash_params(parts)

    folders = {v: ClipFolder(out / v) for v in variants}
    keys = {v: {r.caption.caption_id: key(v, r) for r in references} for v in variants}
    todo = {}
    for variant, folder in folders.items():
        folder.prune(ids)
        todo[variant] = {i for i in ids if not folder.done(i, keys[variant][i])}
    pending = [r for r in references if any(r.caption.caption_id in todo[v] for v in variants)]
    generated = 0
    for batch in report_progress(batches(pending, cfg.batch_size), "generate references", "batch", enabled=progress):
        for variant in variants:
            rows = [r for r in batch if r.caption.caption_id in todo[variant]]
            if not rows:
                continue
            sources = reference_audio(variant, rows, codec, clips, audio, refiner, encoder, cfg, seed)
            folder = folders[variant]
            for ref, source in zip(rows, sources, strict=True):
                caption_id = ref.caption.caption_id
                if isinstance(source, str):  # the reason the reference cannot be made
                    fields = {"status": "failed", "reason": source}
                    folder.wav_path(caption_id).unlink(missing_ok=True)
                else:
                    fields = write_clip(folder.wav_path(caption_id), source, audio.sample_rate, audio.n_samples)
                is_refined = variant == "reference_codebook1"
                folder.record(
                    clip_row(
                        ref.caption,
                        variant,
                        keys[variant][caption_id],
                        fields,
                        audio,
                        seed=caption_seed(seed, caption_id) if is_refined else None,
                        step=None,
                        checkpoint=None,
                        settings={**cfg.refine_settings(), "device": device.type} if is_refined else {},
                    )
                )
                generated += 1
            folder.flush()
    for folder in folders.values():
        folder.flush()
    summary = {
        "format": SUMMARY_FORMAT,
        "mode": "reference",
        "variants": variants,
        "skipped": skipped,
        "captions": {"set": cfg.captions, "path": cfg.captions_path, "count": len(references)},
        "audio": audio.describe(),
        "settings": {**cfg.refine_settings(), "device": device.type},
    }
    inputs = {
        "shards": str(shards_dir),
        "clips": [str(c) for c in clip_dirs or []],
        "refiner": str(refiner_dir),
        "refiner_sha256": refiner_id,
        "codec_weights_sha256": codec.identity["weights_sha256"],
    }
    finish(out, summary, {v: folders[v] for v in variants}, cfg, seed, section, inputs)
    reused = sum(len(ids) - len(todo[v]) for v in variants)
    log.info("%s: %d reference clips made, %d reused", out, generated, reused)
    return {**summary, "generated": generated, "reused": reused}


def reference_audio(
    variant: str,
    refs: list[Reference],
    codec: CodecHandle,
    clips: dict[str, Path],
    audio: AudioFormat,
    refiner,
    encoder,
    cfg: GenerateConfig,
    seed: int,
) -> list[np.ndarray | str]:
    """Audio (N,) of each reference for one variant, or the reason it cannot be made."""
    if variant == "original":
        out: list[np.ndarray | str] = []
        for ref in refs:
            path = clips.get(ref.caption.clip_id)
            if path is None or not path.is_file():
                out.append(f"missing: clip {ref.caption.clip_id} is not in the --clips folders")
            else:
                out.append(load_mono(path, audio.sample_rate))
        return out
    short = {
        ref.caption.caption_id: f"short: the reference has {ref.codes.shape[1]} frames, {audio.n_frames} needed"
        for ref in refs
        if ref.codes.shape[1] < audio.n_frames
    }
    usable = [ref for ref in refs if ref.caption.caption_id not in short]
    codes = torch.from_numpy(np.stack([ref.codes[:, : audio.n_frames] for ref in usable])) if usable else None
    if codes is None:
        made: list[torch.Tensor] = []
    elif variant == "codec":
        made = list(codes)
    elif variant == "codebook1_only":
        made = list(codes[:, :1])
    else:  # reference_codebook1: the refiner on the reference's own codebook 1
        text = encode_one_by_one(encoder, [ref.caption.text for ref in usable])
        seeds = [caption_seed(seed, ref.caption.caption_id) for ref in usable]
        made = list(refine_codebook1(refiner, codec, codes[:, :1], text, seeds, cfg))
    decoded = iter(decode_clip(codec, clip_codes) for clip_codes in made)
    return [short.get(ref.caption.caption_id) or next(decoded) for ref in refs]
