"""`ssmttm generate --baseline NAME`: a reference system of the paper's comparison, from its public weights.

    ssmttm generate --params params.yaml --baseline musicgen_small --shards data/tokenize \\
        --out results/generate/musicgen_small

The entry `baselines.NAME` of params names the system (kind musicgen: transformers' MusicgenForConditionalGeneration
and AutoProcessor, PAPER.md section 5: CFG 3.0, top-k 250); `generate` gives the caption set (captions,
captions_path, max_captions) and the length (seconds), exactly as for the runs, and each caption's seed is the runs'
(`tokens.caption_seed(seed, caption_id)`). Layout of --out (one clip set for evaluate, named `NAME/pretrained`):

    pretrained/<caption_id>.wav, manifest.jsonl   at MusicGen's own sample rate (32 kHz for musicgen-small), mono
    summary.json      status ("ok" or "not computed" with the reason and the command that fetches the weights),
                      the model, the caption set, the audio format, the settings, the ok/failed counts
    provenance.json   params (generate + the baseline entry), the weights' fingerprint, code and library versions

Weights are read from a local folder or the Hugging Face cache only; when they are not there, the folder holds the
summary alone ("not computed") and the command exits 0, so the rest of the pipeline runs and shows the gap.

A clip is a function of its caption, its seed, the weights and the settings, never of its batch, so a killed run
resumes clip by clip (audio_out.ClipFolder) with the bytes of an uninterrupted one:
- sampling draws each caption's random numbers from its own generator (`SeededDraws`, the exponential race of
  tokens.Sampler: the token maximising p / q, q ~ Exp(1)), with guidance, temperature and top-k applied first; HF's
  generate then only takes that token (greedy over a one-hot score);
- every batch runs at `batch_size` captions (the last padded with copies of its first), and the captions are
  tokenized to a length that depends on the caption only (the next multiple of TEXT_BUCKET tokens) and batched by
  that length, so every tensor a caption meets has a shape fixed by the caption and the settings.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ssmttm import stand_ins
from ssmttm.artifacts import hash_params, sha256_file, write_json, write_provenance
from ssmttm.codec import resolve_device
from ssmttm.config import ParamsError, dataclass_to_dict, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import ClipFolder, write_clip
from ssmttm.generate.captions import Caption, load_captions
from ssmttm.generate.common import SUMMARY_FILE, SUMMARY_FORMAT, AudioFormat, batches, clip_row
from ssmttm.generate.config import GenerateConfig
from ssmttm.generate.tokens import caption_seed, pad_rows
from ssmttm.progress import progress as report_progress

log = logging.getLogger(__name__)

VARIANT = "pretrained"  # the one clip folder of a baseline: evaluate names the set "<name>/pretrained"
KINDS = ("musicgen",)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TEXT_BUCKET = 64  # captions are padded to the next multiple of this many tokens (a shape fixed by the caption alone)
NOT_COMPUTED = "not computed"
DEFAULT_REPO = {"musicgen": "facebook/musicgen-small"}  # what the fetch command suggests for a missing local folder
HF_BLOB = re.compile(r"^[0-9a-f]{64}$")  # the Hugging Face cache names a large (LFS) file's blob by its sha256


@dataclass
class MusicgenBaselineConfig:
    """One entry of params `baselines` (kind musicgen); defaults are the MusicGen recipe (PAPER.md section 5)."""

    kind: str = "musicgen"
    name_or_path: str = "facebook/musicgen-small"
    guidance_scale: float = 3.0  # 1 = no guidance (HF's MusicGen guides only above 1)
    top_k: int = 250  # 0 = no top-k filtering
    temperature: float = 1.0  # <= 0 = greedy
    device: str = "auto"
    batch_size: int = 8
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ParamsError(f"baselines: kind {self.kind!r} is not supported; choose one of {', '.join(KINDS)}")
        for key in ("guidance_scale", "temperature"):
            value = getattr(self, key)
            # JSON Schema bounds cannot catch NaN (every comparison with it is false): refused here
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ParamsError(f"baselines: {key} = {value!r} must be a finite number")
        if self.guidance_scale < 1 or self.temperature < 0 or self.top_k < 0 or self.batch_size < 1:
            raise ParamsError("baselines: guidance_scale must be >= 1, temperature and top_k >= 0, batch_size >= 1")
        if self.dtype not in DTYPES:
            raise ParamsError(f"baselines: dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")

    def settings(self) -> dict[str, Any]:
        """What decides a clip besides caption, seed, weights and length."""
        return {
            "guidance_scale": self.guidance_scale,
            "top_k": self.top_k,
            "temperature": self.temperature,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "text_bucket": TEXT_BUCKET,
        }


def baseline_config(params: dict[str, Any], name: str) -> MusicgenBaselineConfig:
    """The entry `baselines.NAME` of params."""
    entries = params.get("baselines") or {}
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise UserFacingError(f"--baseline {name}: params has no baselines.{name} (baselines defined: {known})")
    return section_to_dataclass(MusicgenBaselineConfig, entries[name])


# ----------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class Located:
    """Where the weights are (folder) or why they are not usable (reason, with the command that fetches them)."""

    folder: Path | None
    reason: str | None = None
    fetch: str | None = None

    @property
    def stand_in(self) -> str | None:
        """The STANDIN.txt text in the weights folder (random stand-in weights), or None."""
        return stand_ins.label_beside(self.folder)


def locate_weights(name_or_path: str, kind: str = "musicgen") -> Located:
    """A local folder, or a Hugging Face repo id looked up in the local cache only (never downloads)."""
    from ssmttm.hf_cache import hf_cached_model, missing_model_files

    local = Path(name_or_path).expanduser()
    looks_like_path = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") != 1
    if local.is_dir() or looks_like_path:
        fetch = f"hf download {DEFAULT_REPO[kind]} --local-dir {name_or_path}"
        if not local.is_dir():
            return Located(None, f"the folder {local} does not exist", fetch)
        folder, where = local, f"the folder {local}"
    else:
        from huggingface_hub import constants

        fetch = f"hf download {name_or_path}"
        cached = hf_cached_model(name_or_path)
        if cached is None:
            return Located(
                None,
                f"{name_or_path} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}); the pipeline never "
                "downloads weights",
                fetch,
            )
        folder, where = cached, f"the Hugging Face cache ({cached})"
    missing = missing_model_files(folder)
    if missing:
        return Located(None, f"{where} lacks {', '.join(missing)}", fetch)
    return Located(folder)


def file_sha256(path: Path) -> str:
    """sha256 of a file; a Hugging Face cache link to an LFS blob carries it in the blob's name (multi-GB weights
    are not read again)."""
    target = path.resolve()
    if path.is_symlink() and target.parent.name == "blobs" and HF_BLOB.match(target.name):
        return target.name
    return sha256_file(target)


def weights_fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file from_pretrained reads: configs, processor files and the weights (safetensors when there
    are any, as transformers prefers them; else the .bin files)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    has_safetensors = any(p.suffix == ".safetensors" for p in files)
    skipped = {".bin", ".h5", ".msgpack"} if has_safetensors else {".h5", ".msgpack"}
    return {p.name: file_sha256(p) for p in files if p.suffix not in skipped and p.name != "README.md"}


# ----------------------------------------------------------------------------------------------- sampling


class SeededDraws:
    """A transformers LogitsProcessor that chooses every token itself, each caption from its own generator.

    scores (R*K, V) float32, R = 2n rows (cond first) while HF's MusicGen guides, n once guided; rows caption-major
    (row r*K + k is codebook k of caption r) -> scores (R*K, V) that are 0 at the chosen token and -1 elsewhere,
    the same for a caption's cond and uncond rows. HF's guidance processor (which may run after this one) leaves
    such scores as they are, and generate(do_sample=False) takes their argmax: the chosen token.
    """

    def __init__(self, cfg: MusicgenBaselineConfig, n_codebooks: int, generators: Sequence[torch.Generator]):
        self.cfg, self.n_codebooks, self.generators = cfg, n_codebooks, list(generators)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n, k = len(self.generators), self.n_codebooks
        logits = scores.float().reshape(-1, k, scores.shape[-1])  # (R, K, V)
        if logits.shape[0] == 2 * n:
            cond, uncond = logits[:n], logits[n:]
            logits = uncond + self.cfg.guidance_scale * (cond - uncond)  # (n, K, V)
        elif logits.shape[0] != n:
            raise RuntimeError(f"SeededDraws: {logits.shape[0]} rows of scores for {n} captions")
        if self.cfg.temperature <= 0:
            tokens = logits.argmax(dim=-1)  # (n, K)
        else:
            logits = logits / self.cfg.temperature
            if self.cfg.top_k:
                kth = torch.topk(logits, min(self.cfg.top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (n, K, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)  # (n, K, V)
            if not torch.isfinite(probs).all():
                raise UserFacingError(
                    "generate --baseline: the model's logits became NaN or infinite; check the weights and the dtype "
                    "(float16 can overflow: try float32 or bfloat16)"
                )
            noise = torch.empty_like(probs)
            for row, generator in zip(noise, self.generators, strict=True):
                row.exponential_(1.0, generator=generator)  # caption r's K x V draws for this position
            tokens = (probs / noise).argmax(dim=-1)  # (n, K): torch.multinomial(probs, 1) for these draws
        rows = scores.shape[0] // k
        chosen = torch.full((rows, k, scores.shape[-1]), -1.0, dtype=scores.dtype, device=scores.device)
        chosen.scatter_(-1, tokens.repeat(rows // n, 1)[..., None], 0.0)
        return chosen.reshape(scores.shape)


@dataclass
class Musicgen:
    """A loaded MusicGen: model, processor and its audio format."""

    model: Any
    processor: Any
    device: torch.device
    audio: AudioFormat

    @property
    def n_codebooks(self) -> int:
        return int(self.model.decoder.num_codebooks)

    @property
    def frame_delay(self) -> int:
        """Tokens generated beyond the frames: the delay pattern's offset of the last codebook of a channel."""
        channels = int(self.model.config.decoder.audio_channels)
        return self.n_codebooks // channels - 1

    def text_length(self, text: str) -> int:
        """The padded token length of a caption: the next multiple of TEXT_BUCKET."""
        n_tokens = len(self.processor.tokenizer(text).input_ids)
        return TEXT_BUCKET * max(1, math.ceil(n_tokens / TEXT_BUCKET))

    @torch.no_grad()
    def generate(self, texts: list[str], seeds: list[int], cfg: MusicgenBaselineConfig, text_length: int) -> Any:
        """Audio (B, N) float32 numpy, mono, for a full batch of captions of one text length."""
        from transformers import GenerationConfig, LogitsProcessorList

        inputs = self.processor(
            text=texts, padding="max_length", max_length=text_length, truncation=False, return_tensors="pt"
        ).to(self.device)
        generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        # greedy over SeededDraws' one-hot scores: the draws are its own (the checkpoint's sampling flags unset)
        settings = {**self.model.generation_config.to_dict(), "do_sample": False, "max_length": None}
        settings |= {"top_k": None, "top_p": None, "temperature": None, "min_length": None, "min_new_tokens": None}
        settings["guidance_scale"] = cfg.guidance_scale if cfg.guidance_scale > 1 else None
        settings["max_new_tokens"] = self.audio.n_frames + self.frame_delay
        generation = GenerationConfig(**settings)
        self.model.generation_config = generation  # generate() fills unset flags from it: none must come back
        audio = self.model.generate(
            **inputs,
            generation_config=generation,
            logits_processor=LogitsProcessorList([SeededDraws(cfg, self.n_codebooks, generators)]),
        )  # (B, channels, N)
        return audio.float().mean(dim=1).cpu().numpy()  # mono: a stereo MusicGen's channels averaged


def load_musicgen(folder: Path, cfg: MusicgenBaselineConfig, seconds: float) -> Musicgen:
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    device = resolve_device(cfg.device)
    try:
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        model = MusicgenForConditionalGeneration.from_pretrained(
            str(folder), local_files_only=True, dtype=DTYPES[cfg.dtype]
        )
    except (OSError, ValueError) as exc:
        raise UserFacingError(f"{folder}: not a loadable MusicGen model and processor ({exc})") from None
    model = model.to(device).eval()
    codec = model.config.audio_encoder
    hop = math.prod(codec.upsampling_ratios)  # samples per EnCodec frame (640 at 32 kHz for musicgen-small)
    return Musicgen(model, processor, device, AudioFormat(float(seconds), int(codec.sampling_rate), int(hop)))


# ----------------------------------------------------------------------------------------------- the stage


def generate_baseline(
    cfg_generate: GenerateConfig,
    baseline_cfg: MusicgenBaselineConfig,
    name: str,
    out_dir: str | Path,
    seed: int,
    *,
    shards_dir: str | Path | None = None,
    section: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The baseline's clip for every caption of the caption set -> `out_dir`/pretrained/; returns the summary (plus
    this call's `generated` and `reused` counts). Without the weights: a "not computed" summary, no clips."""
    out = Path(out_dir)
    captions = load_captions(cfg_generate, shards_dir)
    located = locate_weights(baseline_cfg.name_or_path, baseline_cfg.kind)
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "mode": "baseline",
        "baseline": name,
        "kind": baseline_cfg.kind,
        "name_or_path": baseline_cfg.name_or_path,
        "captions": {"set": cfg_generate.captions, "path": cfg_generate.captions_path, "count": len(captions)},
        "settings": baseline_cfg.settings(),
    }
    provenance_section = {"generate": section if section is not None else dataclass_to_dict(cfg_generate)}
    provenance_section["baseline"] = {"name": name, **asdict(baseline_cfg)}
    out.mkdir(parents=True, exist_ok=True)
    if located.folder is None:
        shutil.rmtree(out / VARIANT, ignore_errors=True)  # clips of earlier weights must not stand for these
        summary |= {"status": NOT_COMPUTED, "reason": located.reason, "fetch": located.fetch, "variants": []}
        summary |= {"skipped": {VARIANT: f"{NOT_COMPUTED}: {located.reason}"}, "folders": {}}
        write_json(out / SUMMARY_FILE, summary)
        write_provenance(out, "generate", provenance_section, seed, weights=None)
        log.warning("%s %s: %s (fetch with `%s`)", name, NOT_COMPUTED, located.reason, located.fetch)
        return {**summary, "generated": 0, "reused": 0}

    fingerprint = weights_fingerprint(located.folder)
    weights_id = hash_params(fingerprint)
    musicgen = load_musicgen(located.folder, baseline_cfg, cfg_generate.seconds)
    audio, device = musicgen.audio, musicgen.device
    seeds = {c.caption_id: caption_seed(seed, c.caption_id) for c in captions}
    settings = {**baseline_cfg.settings(), "device": device.type}
    common = {"weights": weights_id, "settings": settings, "num_samples": audio.n_samples}
    keys = {c.caption_id: hash_params({**common, "caption": c.text, "seed": seeds[c.caption_id]}) for c in captions}
    folder = ClipFolder(out / VARIANT)
    folder.prune(set(keys))
    pending = [c for c in captions if not folder.done(c.caption_id, keys[c.caption_id])]
    log.info("%s: %d of %d captions to generate", name, len(pending), len(captions))
    by_length: dict[int, list[Caption]] = {}
    for caption in pending:
        by_length.setdefault(musicgen.text_length(caption.text), []).append(caption)
    work = [
        (length, batch) for length in sorted(by_length) for batch in batches(by_length[length], baseline_cfg.batch_size)
    ]
    counts = Counter()
    for length, batch in report_progress(work, f"generate {name}", "batch", enabled=progress):
        texts = pad_rows([c.text for c in batch], baseline_cfg.batch_size)
        batch_seeds = pad_rows([seeds[c.caption_id] for c in batch], baseline_cfg.batch_size)
        clips = musicgen.generate(texts, batch_seeds, baseline_cfg, length)
        for caption, samples in zip(batch, clips, strict=False):  # the padding rows are dropped
            fields = write_clip(folder.wav_path(caption.caption_id), samples, audio.sample_rate, audio.n_samples)
            row = clip_row(
                caption,
                VARIANT,
                keys[caption.caption_id],
                fields,
                audio,
                seed=seeds[caption.caption_id],
                step=None,
                checkpoint=None,
                settings=settings,
                baseline=name,
            )
            folder.record(row)
            counts["generated"] += 1
        folder.flush()  # after each batch: what a kill leaves is recorded
    folder.flush()
    counts["reused"] = len(captions) - len(pending)
    summary |= {"status": "ok", "variants": [VARIANT], "skipped": {}, "audio": audio.describe()}
    standin = stand_ins.provenance_fields({f"baselines.{name} ({baseline_cfg.name_or_path})": located.stand_in})
    model = {"folder": str(located.folder), "weights_sha256": weights_id, "device": device.type}
    summary |= {"model": {**model, **standin}}
    summary["folders"] = {VARIANT: folder.counts()}
    write_json(out / SUMMARY_FILE, summary)
    write_provenance(
        out,
        "generate",
        provenance_section,
        seed,
        cpu_numerics=True,
        weights=str(located.folder),
        files=fingerprint,
        **standin,
    )
    log.info("%s: %d clips generated, %d reused", out, counts["generated"], counts["reused"])
    return {**summary, "generated": counts["generated"], "reused": counts["reused"]}
