"""From codes to audio: the codec and the refiner glue of the two-stage system (PAPER.md section 6).

    codebook-1 codes (B, 1, T) -> codec.codes_to_vectors -> raw codebook-1 vectors (B, D, T)
      -> refiner.refine (caption, one seed per row, CFG) -> raw latents of all codebooks (B, K*D, T)
      -> codec.latents_to_codes (nearest code per codebook) -> codes (B, K, T) -> codec.decode -> audio

Every codec call runs on one clip (a batch of 1) and the refiner always runs `batch_size` rows (the last batch padded),
so a clip's bytes never depend on the batch it was made in (see generate.tokens on CPU kernels and shapes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ssmttm.artifacts import stable_int
from ssmttm.codec import CodecHandle, check_codec_matches
from ssmttm.errors import UserFacingError
from ssmttm.generate.config import GenerateConfig
from ssmttm.generate.tokens import encode_one_by_one, pad_rows
from ssmttm.refine.model import Refiner
from ssmttm.text.encoder import TextEncoding


def refiner_seed(clip_seed: int) -> int:
    """The refiner's noise seed of a clip, derived from the clip's seed (the LM sampling uses the clip seed)."""
    return stable_int("refine", clip_seed) % 2**63


def decode_clip(codec: CodecHandle, codes: torch.Tensor) -> np.ndarray:
    """codes (K', T) of one clip, K' <= K (the first K' codebooks) -> audio (T*hop,) float32."""
    return codec.decode(codes[None]).reshape(-1).cpu().numpy()


def check_refiner_fits(refiner: Refiner, codec: CodecHandle) -> None:
    """The refiner must model this codec's latents: same codebooks, same dims (and the same weights when recorded)."""
    d = refiner.diffusion
    if d.channels != codec.latent_channels or d.n_codebooks != codec.n_codebooks:
        raise UserFacingError(
            f"the refiner models {d.n_codebooks} x {d.codebook_dim} latent channels but the codec has "
            f"{codec.n_codebooks} codebooks ({codec.latent_channels} channels); train the refiner on this codec's "
            "tokens"
        )
    if refiner.codec.get("weights_sha256"):
        check_codec_matches(refiner.codec, codec)


@torch.no_grad()
def refine_codebook1(
    refiner: Refiner,
    codec: CodecHandle,
    codebook1: torch.Tensor,
    text: TextEncoding,
    clip_seeds: Sequence[int],
    cfg: GenerateConfig,
) -> torch.Tensor:
    """Codebook-1 codes (B, 1, T) with their captions' refiner text encodings (B, S, E) -> codes (B, K, T)."""
    b = codebook1.shape[0]
    if b > cfg.batch_size:
        raise ValueError(f"refine_codebook1: {b} rows for a batch size of {cfg.batch_size}")
    vectors = torch.cat([codec.codes_to_vectors(codebook1[i : i + 1]) for i in range(b)])  # (B, D, T)
    rows = pad_rows(list(range(b)), cfg.batch_size)  # indices, the padding repeats row 0
    latents = refiner.refine(
        vectors[rows],
        text.hidden[rows],
        text.mask[rows],
        seeds=[refiner_seed(clip_seeds[i]) for i in rows],
        steps=cfg.refine_steps,
        scheduler=cfg.refine_sampler,
        guidance_scale=cfg.refine_guidance_scale,
    )  # (batch_size, K*D, T)
    return torch.cat([codec.latents_to_codes(latents[i : i + 1]) for i in range(b)]).cpu()  # (B, K, T)


def variant_codes_of(
    variant: str,
    tokens: torch.Tensor,
    texts: Sequence[str],
    clip_seeds: Sequence[int],
    codec: CodecHandle,
    cfg: GenerateConfig,
    refiner: Refiner | None = None,
    refiner_encoder=None,
) -> torch.Tensor:
    """The codes (B, K', T) a variant decodes, from the LM's tokens (B, K_lm, T) of B captions (generate.config):
    two_stage refines codebook 1 (its captions encoded by `refiner_encoder`), codebook1_only keeps codebook 1,
    single_stage keeps every codebook."""
    if variant == "two_stage":
        text = encode_one_by_one(refiner_encoder, texts)
        return refine_codebook1(refiner, codec, tokens[:, :1], text, clip_seeds, cfg)
    if variant == "codebook1_only":
        return tokens[:, :1]
    return tokens  # single_stage
