"""Tiny inputs of the generate stage (CPU, about a second to build): a codec, an LM run, a refiner, token shards
with a test split and the segment clips they came from.

Codec: tests.codec's tiny DAC (16 kHz, hop 8, 2 codebooks of 16 codes in 4 dims). LM run: step-0000002/,
step-0000004/ and final/ (= step 4), tiny prefix_simba over `lm_codebooks` codebooks. Refiner: the tiny U-Net preset.
Text: tests.models' FakeTextEncoder (12 features), or the real MiniLM (`real_text=True`, for subprocess tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ssmttm.codec import load_codec
from ssmttm.generate.config import GenerateConfig
from ssmttm.models.lm import MusicLM, save_lm
from ssmttm.refine.model import RefinerConfig, init_refiner, save_refiner
from ssmttm.refine.normalise import LatentStats
from ssmttm.text.encoder import TextConfig
from ssmttm.tokens.shards import CODEC_KEY, TokenRow, write_shard
from tests.codec import tiny_codec, write_corpus
from tests.models._lm_utils import FakeTextEncoder, tiny_cfg

MINILM_WIDTH = 384
TRACKS = {"trackA": 2, "trackB": 1}  # three 0.25 s clips, all in the test split
CLIP_SECONDS = 0.25


@dataclass
class Inputs:
    root: Path
    codec: Path
    lm_run: Path
    refiner: Path
    shards: Path
    segment: Path


def fake_encoder_factory(cfg: TextConfig, device: torch.device) -> FakeTextEncoder:
    return FakeTextEncoder()


def gen_cfg(**overrides) -> GenerateConfig:
    base = dict(
        temperature=1.2,
        top_k=8,
        guidance_scale=3.0,
        batch_size=2,
        seconds=0.02,  # 320 samples, 40 frames of the tiny codec
        device="cpu",
        variants=["two_stage", "codebook1_only", "single_stage"],
        captions="test_split",
        refine_sampler="dpm++",
        refine_steps=3,
        refine_guidance_scale=3.0,
    )
    return GenerateConfig(**{**base, **overrides})


def text_section(real_text: bool) -> dict:
    return {"encoder": "minilm" if real_text else "fake", "max_length": 8 if real_text else 6, "device": "cpu"}


def make_lm_run(folder: Path, lm_codebooks: int = 1, real_text: bool = False, seed: int = 0) -> Path:
    """step-0000002/, step-0000004/ and final/ (the weights of step 4) of a tiny LM over the tiny codec's codes."""
    width = MINILM_WIDTH if real_text else FakeTextEncoder.hidden_size
    cfg = tiny_cfg("prefix_simba", n_codebooks=lm_codebooks, codebook_size=16, special_id=16, d_text=width)
    for step in (2, 4):
        torch.manual_seed(seed + step)
        model = MusicLM(cfg).eval()
        for name in (f"step-{step:07d}", "final") if step == 4 else (f"step-{step:07d}",):
            save_lm(model, cfg, folder / name, text_cfg=text_section(real_text), extra={"step": step})
    return folder


def make_refiner(folder: Path, codec_dir: Path, real_text: bool = False, seed: int = 0) -> Path:
    codec = load_codec(codec_dir)
    stats = LatentStats(means=(0.1, -0.2), stds=(1.5, 2.0), codebook_dim=4)
    width = MINILM_WIDTH if real_text else FakeTextEncoder.hidden_size
    text = TextConfig(**text_section(real_text))
    refiner = init_refiner(RefinerConfig(unet="tiny"), stats, width, text, codec.identity, seed)
    return save_refiner(folder, refiner)


def make_shards(root: Path, codec_dir: Path) -> tuple[Path, Path]:
    """segment/shard-00000 (WAV clips) and tokenize/shard-00000.parquet (their codes, all in the test split)."""
    segment, captions = write_corpus(root / "data", TRACKS, seconds=CLIP_SECONDS)
    codec = load_codec(codec_dir)
    rows = []
    for wav in sorted((segment / "clips").glob("*.wav")):
        audio, _ = sf.read(str(wav), dtype="float32")
        codes, _ = codec.encode(torch.from_numpy(audio)[None, None])
        clip_id = wav.stem
        rows.append(
            TokenRow(
                clip_id=clip_id,
                track_id=clip_id.rsplit("-", 1)[0],
                split="test",
                caption=f"calm music from {clip_id}",
                duration_s=CLIP_SECONDS,
                codes=codes[0].numpy().astype(np.int16),
            )
        )
    shards = root / "data" / "tokenize"
    write_shard(shards / "shard-00000.parquet", rows, {CODEC_KEY: codec.identity}, 4, store_latents=False)
    return shards, segment


def make_inputs(root: Path, lm_codebooks: int = 1, real_text: bool = False) -> Inputs:
    codec = tiny_codec(root / "codec")
    shards, segment = make_shards(root, codec)
    return Inputs(
        root=root,
        codec=codec,
        lm_run=make_lm_run(root / "lm_run", lm_codebooks, real_text),
        refiner=make_refiner(root / "refiner", codec, real_text),
        shards=shards,
        segment=segment.parent,
    )
