"""`ssmttm generate --reference`: the references of the caption set.

    original             the reference clip itself, at the codec rate, cropped
    codec                its codes, all K codebooks, decoded: the codec's floor
    codebook1_only       its codebook 1 decoded alone
    reference_codebook1  the refiner on its own codebook 1 (caption, CFG, seed of the caption): the refiner's ceiling

The reference clips come from the segment folders (`--clips`) for the test split, whose codes are in the token
shards; for musiccaps and file captions they are the clips `ssmttm fetch-references` fetched (`--fetched`), paired
with the captions by id, resampled to the codec rate, cropped to `generate.seconds` and encoded with the codec in the
token shards' encode window (one clip per call, so codes never depend on the batch). They do not depend on any LM,
so every backbone's clips are compared with the same references. A reference shorter than `generate.seconds` is
recorded as failed (short), never padded; a caption whose clip could not be fetched is recorded as failed (missing).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmttm import stand_ins
from ssmttm.artifacts import hash_params, read_jsonl, sha256_file
from ssmttm.audio import load_mono
from ssmttm.codec import CodecHandle, check_codec_matches, load_codec, resolve_device
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import ClipFolder, write_clip
from ssmttm.generate.captions import Caption, Reference, load_captions, load_references, shards_codec
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


FETCHED_FORMAT = "ssmttm.fetch_references/1"


def load_fetched_references(
    cfg: GenerateConfig, fetched_dir: str | Path
) -> tuple[list[Reference], dict[str, Path], dict[str, str]]:
    """The caption set's references from a fetch-references folder: (references without codes, caption id -> clip
    file, caption id -> why it has no clip). Every caption of the set is returned, fetched or not."""
    fetched_dir = Path(fetched_dir)
    summary_path, table = fetched_dir / "summary.json", fetched_dir / "clips.jsonl"
    if not summary_path.is_file() or not table.is_file():
        raise UserFacingError(
            f"--fetched {fetched_dir}: no summary.json / clips.jsonl; run `ssmttm fetch-references --out {fetched_dir}`"
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    fetched_for = (summary.get("captions") or {}).get("set")
    if summary.get("format") != FETCHED_FORMAT or fetched_for != cfg.captions:
        raise UserFacingError(
            f"--fetched {fetched_dir}: fetched for generate.captions {fetched_for!r}, not {cfg.captions!r}; rerun "
            "`ssmttm fetch-references` with these params"
        )
    captions = load_captions(cfg, None)
    rows = {row["id"]: row for row in read_jsonl(table)}
    failures = {}
    failures_path = fetched_dir / "failures.tsv"
    if failures_path.is_file():
        for line in failures_path.read_text(encoding="utf-8").splitlines()[1:]:
            caption_id, _url, kind, reason = (line.split("\t") + ["", "", ""])[:4]
            failures[caption_id] = f"{kind}: {reason}"
    references, clips, unusable = [], {}, {}
    for caption in captions:
        row = rows.get(caption.caption_id)
        if row is not None and row["caption"] != caption.text:
            raise UserFacingError(
                f"--fetched {fetched_dir}: clip {caption.caption_id} was fetched for another caption "
                f"({row['caption'][:60]!r}); rerun `ssmttm fetch-references` with these params"
            )
        references.append(Reference(Caption(caption.caption_id, caption.text, caption.caption_id), None))
        if row is None:
            why = failures.get(caption.caption_id, f"not in {table}")
            unusable[caption.caption_id] = f"missing: the reference clip was not fetched ({why})"
            continue
        path = Path(row["path"])  # relative to the repository root (the working directory)
        clips[caption.caption_id] = path if path.is_file() else fetched_dir / "clips" / path.name
    return references, clips, unusable


def generate_references(
    cfg: GenerateConfig,
    codec_dir: str | Path,
    shards_dir: str | Path,
    out: str | Path,
    seed: int,
    *,
    refiner_dir: str | Path | None,
    clip_dirs: Sequence[str | Path] | None = None,
    fetched_dir: str | Path | None = None,
    text_section: dict[str, Any] | None = None,
    section: dict[str, Any] | None = None,
    encoder_factory: EncoderFactory | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The reference variants of the caption set (generate.config) -> WAVs under `out`; returns the summary.

    test_split: clips from `clip_dirs` (segment folders), codes from the token shards. musiccaps / file: clips and
    codes from `fetched_dir` (a fetch-references folder); `clip_dirs` is then not used.
    """
    fetched = cfg.captions != "test_split"
    if fetched and fetched_dir is None:
        raise UserFacingError(
            f"generate.captions is {cfg.captions!r}: its references are fetched clips; run `ssmttm fetch-references "
            "--out data/fetch_references` and pass --fetched data/fetch_references"
        )
    if not fetched and fetched_dir is not None:
        log.info("--fetched %s not used: the test_split references are the segment clips (--clips)", fetched_dir)
    device = resolve_device(cfg.device)
    out = Path(out)
    codec = load_codec(codec_dir, device)
    tokens_codec = shards_codec(shards_dir)
    check_codec_matches(tokens_codec, codec)
    unusable: dict[str, str] = {}  # caption id -> why no variant of it can be made
    if fetched:
        references, clips, unusable = load_fetched_references(cfg, fetched_dir)
    else:
        references = load_references(cfg, shards_dir)
    # fetched clips are encoded the way the training clips were tokenized: in the token shards' encode window
    window = int(tokens_codec.get("encode_window_samples") or codec.window_samples(cfg.seconds))
    audio = AudioFormat.of(codec, cfg.seconds)
    refiner, refiner_id = load_checked_refiner(refiner_dir, codec, device)
    encoder = Encoders(text_section, device, encoder_factory).get(
        refiner.text, f"the refiner {refiner_dir}", refiner.secondary.cfg.context_dim
    )
    variants = ["codec", "codebook1_only", "reference_codebook1"]
    skipped = {}
    if fetched:
        variants.insert(0, "original")
    elif clip_dirs:
        variants.insert(0, "original")
        clips = index_clips(clip_dirs)
    else:
        clips = {}
        skipped["original"] = "no --clips given (the segment folders holding the reference clips)"
    clip_hashes: dict[str, str | None] = {}

    def clip_sha256(clip_id: str | None) -> str | None:
        if clip_id not in clip_hashes:
            source = clips.get(clip_id) if clip_id else None
            clip_hashes[clip_id] = sha256_file(source) if source is not None and source.is_file() else None
        return clip_hashes[clip_id]

    ids = {r.caption.caption_id for r in references}
    out.mkdir(parents=True, exist_ok=True)
    prune_subfolders(out, set(variants), lambda name: not STEP_RE.match(name))

    def key(variant: str, ref: Reference) -> str:
        caption_id = ref.caption.caption_id
        parts: dict[str, Any] = {"variant": variant, "num_samples": audio.n_samples, "sample_rate": audio.sample_rate}
        if variant == "original":
            parts["clip_sha256"] = clip_sha256(ref.caption.clip_id)
        else:
            if ref.codes is None:  # a fetched clip: its codes are a function of the clip, the codec and the window
                parts |= {"clip_sha256": clip_sha256(ref.caption.clip_id), "encode_window_samples": window}
            else:
                parts["codes"] = hash_params(ref.codes.tolist())
            parts |= {"codec": codec.identity["weights_sha256"], "device": device.type}
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
        if fetched:
            coded = {v for v in variants if v != "original"}
            needs_codes = [r for r in batch if any(r.caption.caption_id in todo[v] for v in coded)]
            encoded = encode_fetched(needs_codes, codec, clips, audio, window, unusable)
            batch = [encoded.get(r.caption.caption_id, r) for r in batch]
        for variant in variants:
            rows = [r for r in batch if r.caption.caption_id in todo[variant]]
            if not rows:
                continue
            sources = reference_audio(variant, rows, codec, clips, audio, refiner, encoder, cfg, seed, unusable)
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
    if fetched:
        summary["captions"]["fetched"] = str(fetched_dir)
    clip_inputs = [str(c) for c in clip_dirs or []] if not fetched else []
    read = [shards_dir, codec_dir, refiner_dir, fetched_dir if fetched else None, *clip_inputs]
    inputs = {
        "shards": str(shards_dir),
        "clips": clip_inputs,
        "fetched": str(fetched_dir) if fetched else None,
        "refiner": str(refiner_dir),
        "refiner_sha256": refiner_id,
        "codec_weights_sha256": codec.identity["weights_sha256"],
        **stand_ins.provenance_fields(stand_ins.inherited(read)),
    }
    finish(out, summary, {v: folders[v] for v in variants}, cfg, seed, section, inputs)
    reused = sum(len(ids) - len(todo[v]) for v in variants)
    log.info("%s: %d reference clips made, %d reused", out, generated, reused)
    return {**summary, "generated": generated, "reused": reused}


def encode_fetched(
    refs: list[Reference],
    codec: CodecHandle,
    clips: dict[str, Path],
    audio: AudioFormat,
    window: int,
    unusable: dict[str, str],
) -> dict[str, Reference]:
    """caption id -> the reference with the codes (K, n_frames) of its fetched clip, resampled to the codec rate and
    cropped to `audio.n_samples`; a clip that is missing or shorter goes into `unusable` with the reason instead."""
    encoded = {}
    for ref in refs:
        caption_id = ref.caption.caption_id
        if caption_id in unusable:
            continue
        path = clips.get(ref.caption.clip_id)
        if path is None or not path.is_file():
            unusable[caption_id] = f"missing: the fetched clip {path} is not there; rerun `ssmttm fetch-references`"
            continue
        samples = load_mono(path, audio.sample_rate)  # (N,)
        if samples.shape[0] < audio.n_samples:
            unusable[caption_id] = f"short: the fetched clip has {samples.shape[0]} samples, {audio.n_samples} needed"
            continue
        clip = torch.from_numpy(np.ascontiguousarray(samples[: audio.n_samples]))[None, None]  # (1, 1, n_samples)
        codes, _ = codec.encode_windowed(clip, window)  # (1, K, n_frames)
        encoded[caption_id] = dataclasses.replace(ref, codes=codes[0].cpu().numpy().astype(np.int64))
    return encoded


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
    unusable: dict[str, str] | None = None,
) -> list[np.ndarray | str]:
    """Audio (N,) of each reference for one variant, or the reason it cannot be made (`unusable`: caption id ->
    why none of its variants can be made)."""
    unusable = unusable or {}
    if variant == "original":
        out: list[np.ndarray | str] = []
        for ref in refs:
            path = clips.get(ref.caption.clip_id)
            if ref.caption.caption_id in unusable and unusable[ref.caption.caption_id].startswith("missing"):
                out.append(unusable[ref.caption.caption_id])
            elif path is None or not path.is_file():
                out.append(f"missing: clip {ref.caption.clip_id} is not in the --clips folders")
            else:
                out.append(load_mono(path, audio.sample_rate))
        return out
    short = {
        ref.caption.caption_id: f"short: the reference has {ref.codes.shape[1]} frames, {audio.n_frames} needed"
        for ref in refs
        if ref.codes is not None and ref.codes.shape[1] < audio.n_frames
    }
    short |= {
        ref.caption.caption_id: unusable[ref.caption.caption_id] for ref in refs if ref.caption.caption_id in unusable
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
