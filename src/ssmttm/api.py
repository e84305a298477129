"""Text to music from Python: a trained run of a workspace, or a folder written by `ssmttm export`.

    from ssmttm.api import TextToMusic
    model = TextToMusic.load(".", run="prefix_simba")          # a workspace (params.yaml, results/, data/) ...
    model = TextToMusic.load("exports/prefix_simba")           # ... or a folder written by `ssmttm export`
    wav, sample_rate = model.generate(["a calm piano"], seconds=5.0, seed=0)   # wav: float32 (B, 1, T)

`generate` runs the generate stage's own pieces (ssmttm.generate), by default the two-stage path:

    prompts -> LM codebook-1 tokens (tokens.generate_tokens, CFG) -> refiner (synth.refine_codebook1) -> codec decode

`codebook1_only=True` decodes the LM's codebook 1 alone; `single_stage=True` decodes all the tokens of an LM trained
over every codebook of the codec. Sampling settings default to the workspace's params `generate` section (an
export keeps that section). Prompt i's audio depends on its text, `seed`, i and the settings only: every batch runs
at generate.batch_size rows (generate.tokens explains why), so the other prompts of a call do not change it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssmttm.codec import CodecHandle, resolve_device
from ssmttm.config import ParamsError, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.generate.common import AudioFormat, Encoders, batches, load_checked_refiner
from ssmttm.generate.config import REFINE_SAMPLERS, GenerateConfig
from ssmttm.generate.lm_run import lm_variants
from ssmttm.generate.memory import check_sampling_fits
from ssmttm.generate.synth import decode_clip, variant_codes_of
from ssmttm.generate.tokens import caption_seed, generate_tokens
from ssmttm.model_parts import ModelParts, find_parts, load_parts_codec
from ssmttm.model_parts import available_runs as _available_runs
from ssmttm.models.lm import load_lm
from ssmttm.progress import progress as report_progress
from ssmttm.text.encoder import TextConfig, TextEncoder

log = logging.getLogger(__name__)

__all__ = ["InvalidSetting", "SampleSettings", "TextToMusic", "available_runs"]

MAX_SEED = 2**63  # seeds are 63-bit, as the pipeline's caption seeds
# Longest clip, as a multiple of the LM's trained context: the recurrent state (and a Transformer's sinusoidal
# positions) carry on past it, but an LM trained on its context drifts further from music the longer it runs, and
# the KV cache and the refiner's U-Net grow with the length.
MAX_CONTEXT_MULTIPLE = 4


class InvalidSetting(UserFacingError, ValueError):
    """A generation setting out of range (seconds, seed, guidance, sampler...): `ssmttm sample` exits 2."""


def available_runs(workspace: str | Path) -> list[str]:
    """The run names of a workspace (or an export) that have at least one LM checkpoint, in params order."""
    return _available_runs(workspace)


@dataclass(frozen=True)
class SampleSettings:
    """Everything one `generate` call's audio depends on besides the prompts and the weights."""

    variant: str  # two_stage, codebook1_only or single_stage
    seconds: float
    seed: int
    cfg: GenerateConfig  # LM sampling (temperature, top_k, guidance_scale, batch_size) and refiner settings

    def clip_seeds(self, n: int) -> list[int]:
        """Prompt i's seed: a function of `seed` and i only (as generate_tokens does for an int seed)."""
        return [caption_seed(self.seed, str(i)) for i in range(n)]

    def describe(self) -> dict[str, Any]:
        refined = self.cfg.refine_settings() if self.variant == "two_stage" else {}
        return {
            "variant": self.variant,
            "seconds": self.seconds,
            "seed": self.seed,
            **self.cfg.lm_settings(),
            **refined,
        }


def finite(name: str, value: float) -> float:
    """`value` as a float, or InvalidSetting when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSetting(f"{name} = {value!r}: must be a finite number")
    return float(value)


def check_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_SEED:
        raise InvalidSetting(f"seed = {value!r}: must be an integer from 0 to 2**63 - 1")
    return int(value)


class TextToMusic:
    """One checkpoint of a trained run, with its refiner, codec and text encoders, ready to `generate`.

    Attributes: `run` (its name), `step` (the checkpoint's training step), `steps` (every checkpoint step the run
    has; an export: its one step), `sample_rate` (Hz of the audio `generate` returns), `max_seconds` (the longest
    clip `generate` accepts), `source` (the workspace or export folder), `has_refiner`, `has_single_stage`.
    """

    def __init__(self, parts: ModelParts, device: torch.device):
        self.parts, self.device = parts, device
        self.source, self.run, self.step, self.steps = parts.root, parts.run, parts.checkpoint.step, list(parts.steps)
        self.codec: CodecHandle = load_parts_codec(parts, device)
        self.lm, self.lm_cfg, trained_text = load_lm(parts.checkpoint.folder, device=device)
        if self.lm_cfg.codebook_size != self.codec.identity["codebook_size"]:
            raise UserFacingError(
                f"{parts.checkpoint.folder}: the LM has {self.lm_cfg.codebook_size} codes per codebook, the codec "
                f"{self.codec.identity['codebook_size']}; this run was trained on another codec's tokens"
            )
        self.defaults = section_to_dataclass(GenerateConfig, parts.generate_section)
        self.encoders = Encoders(parts.text_section, device, self._build_encoder)
        self.lm_encoder = self.encoders.get(trained_text, f"the LM {parts.checkpoint.folder}", self.lm_cfg.d_text)
        self.refiner, self.refiner_encoder = None, None
        if parts.refiner_dir is not None:
            self.refiner, _ = load_checked_refiner(parts.refiner_dir, self.codec, device)
            self.refiner_encoder = self.encoders.get(
                self.refiner.text, f"the refiner {parts.refiner_dir}", self.refiner.secondary.cfg.context_dim
            )
        _, skipped = lm_variants(["single_stage"], self.lm_cfg.n_codebooks, self.codec.n_codebooks)
        self.single_stage_missing = skipped.get("single_stage")

    @classmethod
    def load(
        cls,
        path: str | Path = ".",
        run: str | None = None,
        step: int | None = None,
        device: str | torch.device | None = None,
    ) -> TextToMusic:
        """A workspace's run (default: its first trained run) at `step` (default: its last checkpoint), or an
        exported folder; `device`: "cpu", "cuda" or "auto" (default: the params' generate.device)."""
        parts = find_parts(path, run, step)
        if device is None:
            device = str(parts.generate_section.get("device", "auto"))
        device = resolve_device(device) if isinstance(device, str) else device
        log.info("loading run %s step %d from %s on %s", parts.run, parts.checkpoint.step, parts.root, device)
        return cls(parts, device)

    def _build_encoder(self, cfg: TextConfig, device: torch.device) -> TextEncoder:
        """A text encoder; an exported local encoder folder, or a workspace-relative one, replaces its name."""
        local = self.parts.local_encoders.get(cfg.encoder)
        relative = self.parts.root / cfg.encoder
        if local is None and not Path(cfg.encoder).is_absolute() and "/" in cfg.encoder and relative.exists():
            local = str(relative)
        return TextEncoder(dataclasses.replace(cfg, encoder=local) if local else cfg, device=device)

    # ------------------------------------------------------------------------------------------- properties

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def has_refiner(self) -> bool:
        return self.refiner is not None

    @property
    def has_single_stage(self) -> bool:
        return self.single_stage_missing is None

    @property
    def frame_rate(self) -> float:
        return self.codec.sample_rate / self.codec.hop_length

    @property
    def trained_seconds(self) -> float:
        """The audio length of the LM's training sequences (its context without the delay pattern's positions)."""
        return (self.lm_cfg.seq_len - self.lm_cfg.n_codebooks) / self.frame_rate

    @property
    def max_seconds(self) -> float:
        return MAX_CONTEXT_MULTIPLE * self.trained_seconds

    # ------------------------------------------------------------------------------------------- generation

    def settings(
        self,
        *,
        seconds: float | None = None,
        seed: int | None = None,
        guidance: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        sampler: str | None = None,
        sampler_steps: int | None = None,
        refiner_guidance: float | None = None,
        codebook1_only: bool = False,
        single_stage: bool = False,
    ) -> SampleSettings:
        """The checked settings of a `generate` call (None: the workspace's params `generate` value, and its seed).
        Raises InvalidSetting for a number out of range (seconds: also a length whose token loop would not fit in
        memory, ssmttm.inputs), UserFacingError for a variant the model cannot make."""
        d = self.defaults
        seconds = finite("seconds", d.seconds if seconds is None else seconds)
        if seconds <= 0 or seconds > self.max_seconds:
            raise InvalidSetting(
                f"seconds = {seconds:g}: must be > 0 and at most {self.max_seconds:g} ({MAX_CONTEXT_MULTIPLE} x the "
                f"{self.trained_seconds:g} s this LM was trained on)"
            )
        if round(seconds * self.sample_rate) < 1:
            raise InvalidSetting(f"seconds = {seconds:g}: shorter than one sample at {self.sample_rate} Hz")
        if sampler is not None and sampler not in REFINE_SAMPLERS:
            raise InvalidSetting(f"sampler = {sampler!r}: choose one of {', '.join(REFINE_SAMPLERS)}")
        for name, value in (("sampler_steps", sampler_steps), ("top_k", top_k)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidSetting(f"{name} = {value!r}: must be a non-negative integer")
        if sampler_steps is not None and not 1 <= sampler_steps <= 10_000:
            raise InvalidSetting(f"sampler_steps = {sampler_steps}: must be from 1 to 10000")
        overrides = {
            "guidance_scale": None if guidance is None else finite("guidance", guidance),
            "temperature": None if temperature is None else finite("temperature", temperature),
            "refine_guidance_scale": None if refiner_guidance is None else finite("refiner_guidance", refiner_guidance),
            "top_k": top_k,
            "refine_sampler": sampler,
            "refine_steps": sampler_steps,
            "seconds": seconds,
        }
        try:
            cfg = dataclasses.replace(d, **{k: v for k, v in overrides.items() if v is not None})
        except ParamsError as exc:
            raise InvalidSetting(str(exc)) from None
        n_frames = AudioFormat.of(self.codec, seconds).n_frames
        try:  # the memory estimate of the token loop, as `ssmttm generate` checks it
            check_sampling_fits(self.lm_cfg, cfg.batch_size, cfg.guidance_scale, n_frames, "seconds", self.device)
        except UserFacingError as exc:
            raise InvalidSetting(str(exc)) from None
        if codebook1_only and single_stage:
            raise InvalidSetting("codebook1_only and single_stage: choose one of them (or neither: two-stage)")
        variant = "codebook1_only" if codebook1_only else "single_stage" if single_stage else "two_stage"
        if variant == "single_stage" and self.single_stage_missing:
            raise UserFacingError(f"run {self.run!r} has no single-stage variant: {self.single_stage_missing}")
        if variant == "two_stage" and self.refiner is None:
            raise UserFacingError(self.parts.refiner_missing or "no refiner")
        return SampleSettings(variant, seconds, check_seed(self.parts.seed if seed is None else seed), cfg)

    def generate(
        self,
        prompts: str | Sequence[str],
        seconds: float | None = None,
        seed: int | None = None,
        guidance: float | None = None,
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        sampler: str | None = None,
        sampler_steps: int | None = None,
        refiner_guidance: float | None = None,
        codebook1_only: bool = False,
        single_stage: bool = False,
        progress: bool = False,
    ) -> tuple[torch.Tensor, int]:
        """Prompts -> (audio (B, 1, round(seconds * sample_rate)) float32 on the CPU, sample_rate).

        `guidance`: the LM's classifier-free guidance scale (1 = none); `sampler`, `sampler_steps` and
        `refiner_guidance`: the refiner's (two-stage only). None takes the params' generate value."""
        settings = self.settings(
            seconds=seconds,
            seed=seed,
            guidance=guidance,
            temperature=temperature,
            top_k=top_k,
            sampler=sampler,
            sampler_steps=sampler_steps,
            refiner_guidance=refiner_guidance,
            codebook1_only=codebook1_only,
            single_stage=single_stage,
        )
        return self.generate_with(prompts, settings, progress=progress), self.sample_rate

    def generate_with(
        self, prompts: str | Sequence[str], settings: SampleSettings, *, progress: bool = False
    ) -> torch.Tensor:
        """Prompts -> audio (B, 1, N) float32 with settings from `settings()`."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InvalidSetting(f"prompts: give one or more strings, got {prompts!r}")
        cfg, audio = settings.cfg, AudioFormat.of(self.codec, settings.seconds)
        seeds = settings.clip_seeds(len(prompts))
        clips = []
        for rows in report_progress(batches(range(len(prompts)), cfg.batch_size), "sample", "batch", enabled=progress):
            texts, row_seeds = [prompts[i] for i in rows], [seeds[i] for i in rows]
            tokens = generate_tokens(self.lm, self.lm_encoder, texts, audio.n_frames, cfg, row_seeds, progress=progress)
            codes = variant_codes_of(
                settings.variant, tokens, texts, row_seeds, self.codec, cfg, self.refiner, self.refiner_encoder
            )  # (b, K', n_frames)
            clips += [torch.from_numpy(decode_clip(self.codec, c)[: audio.n_samples]) for c in codes]
        return torch.stack(clips)[:, None]  # (B, 1, N)

    def __repr__(self) -> str:
        return f"TextToMusic(run={self.run!r}, step={self.step}, source={str(self.source)!r}, device={self.device})"
