"""params.yaml `generate`: token sampling, the refiner's sampler, which captions and which variants.

Variants of a trained LM run (one folder each under `<out>/step-NNNNNNN/`):

    two_stage       LM codebook-1 codes -> codebook vectors -> refiner (same caption, CFG) -> all K codebooks -> decode
    codebook1_only  LM codebook-1 codes decoded alone (no refiner): what the first stage says by itself
    single_stage    an LM trained over all K codebooks of the codec (delay pattern), its codes decoded directly

A K-codebook LM also gives the first two from its codebook 1; a 1-codebook LM skips `single_stage` (recorded in
summary.json with the reason). References of the caption set (`ssmttm generate --reference`; the clips are the
test split's segment clips, or for musiccaps / file captions those `ssmttm fetch-references` fetched):

    original             the reference clip itself, at the codec rate, cropped to `seconds`
    codec                its codes, all K codebooks, decoded: the codec's floor
    codebook1_only       its codebook 1 decoded alone
    reference_codebook1  the refiner on its own codebook 1: the second stage's ceiling
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssmttm.config import ParamsError

VARIANTS = ("two_stage", "codebook1_only", "single_stage")
REFERENCE_VARIANTS = ("original", "codec", "codebook1_only", "reference_codebook1")
REFINER_VARIANTS = ("two_stage", "reference_codebook1")  # the variants that need the refiner
CAPTION_SETS = ("test_split", "musiccaps", "file")
REFINE_SAMPLERS = ("ddpm", "ddim", "dpm++")


@dataclass
class GenerateConfig:
    temperature: float = 1.2  # <= 0 means greedy (argmax)
    top_k: int = 250  # 0 = no top-k filtering
    guidance_scale: float = 3.0  # 1.0 = no guidance (the unconditional half is skipped)
    batch_size: int = 8  # captions per batch (the model sees 2x that with guidance); every batch runs at this size
    seconds: float = 10.0  # length of every generated clip (and of the references, cropped)
    device: str = "auto"  # auto, cpu or cuda
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    captions: str = "test_split"  # one of CAPTION_SETS
    captions_path: str | None = None  # the MusicCaps CSV, or a .txt / .jsonl caption file
    max_captions: int | None = None  # the first N captions of the set (None = all)
    refine_sampler: str = "ddpm"  # one of REFINE_SAMPLERS
    refine_steps: int = 100
    refine_guidance_scale: float = 3.0

    def __post_init__(self) -> None:
        if self.top_k < 0 or self.batch_size < 1 or self.seconds <= 0 or self.refine_steps < 1:
            raise ParamsError("generate: top_k must be >= 0, batch_size and refine_steps >= 1, seconds > 0")
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown or not self.variants:
            raise ParamsError(f"generate.variants {self.variants}: choose one or more of {', '.join(VARIANTS)}")
        if self.captions not in CAPTION_SETS:
            raise ParamsError(f"generate.captions = {self.captions!r}; choose one of {', '.join(CAPTION_SETS)}")
        if self.captions in ("musiccaps", "file") and not self.captions_path:
            raise ParamsError(f"generate.captions is {self.captions!r}: set generate.captions_path to its file")
        if self.refine_sampler not in REFINE_SAMPLERS:
            raise ParamsError(
                f"generate.refine_sampler = {self.refine_sampler!r}; choose one of {', '.join(REFINE_SAMPLERS)}"
            )
        if self.max_captions is not None and self.max_captions < 1:
            raise ParamsError(f"generate.max_captions must be >= 1 or null, got {self.max_captions}")

    def lm_settings(self) -> dict:
        """What decides an LM clip besides caption, seed, checkpoint and length."""
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "guidance_scale": self.guidance_scale,
            "batch_size": self.batch_size,
        }

    def refine_settings(self) -> dict:
        return {
            "refine_sampler": self.refine_sampler,
            "refine_steps": self.refine_steps,
            "refine_guidance_scale": self.refine_guidance_scale,
            "batch_size": self.batch_size,
        }
