"""Token sampling: captions -> audio codes, with recurrent decoding and classifier-free guidance.

The text is encoded once and the prefix (projected text, or a BOS for cross models) is run once; then every new
position is one recurrent `step` of the backbone (SSM state / KV cache). The official code re-runs the whole
sequence for every token (PAPER.md section 9); `recurrent=False` does that here too, for tests and benchmarks only.

Guidance runs the conditional and unconditional ("" caption) rows as one batch of 2B:
logits = uncond + g * (cond - uncond). The special id (BOS/pad) is never sampled; with K > 1 codebooks the delay
pattern decides which (codebook, position) pairs are sampled and which are the special id, and the result is
un-delayed to (B, K, n_frames).

Batch independence: each caption has its own seed and its own torch.Generator, and every batch runs at exactly
`batch_size` captions (the last one padded with copies of its first row, dropped afterwards). CPU matrix kernels
change with the number of rows (one row, two or three, four and more take different code paths and round
differently), while at a fixed shape a row's result depends neither on its position nor on its neighbours; so a
caption's codes are a function of (caption, seed, settings) only, whichever batch it lands in. Captions are encoded
one at a time for the same reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssmttm.artifacts import atomic_path, stable_int
from ssmttm.errors import UserFacingError
from ssmttm.generate.config import GenerateConfig
from ssmttm.models.delay import delay_valid_mask, delayed_length, undo_delay
from ssmttm.models.lm import MusicLM
from ssmttm.progress import progress as report_progress
from ssmttm.text.encoder import TextEncoding

Generators = torch.Generator | Sequence[torch.Generator] | None


def caption_seed(seed: int, caption_id: str) -> int:
    """The seed of one caption's clip: a function of the params seed and the caption's id only (63 bits)."""
    return stable_int("generate", seed, caption_id) % 2**63


@dataclass(frozen=True)
class Sampler:
    """How one position's tokens are chosen from the model's logits, as one function of tensors.

    logits (R, K, V) (R = 2n rows, cond first, when guiding; else n) -> the tokens of the position for all R rows
    (R, K): guidance, the special id masked, temperature, top-k, then one draw per (row, codebook), the special id
    where the delay pattern has no code (`valid`), and the chosen token copied to the unconditional row.

    The draw is torch.multinomial's own one-sample algorithm written out (an exponential race: the token maximising
    p / q with q ~ Exp(1), the argmax form of the Gumbel trick): `noise` holds the q's, drawn by `draw` from the
    same generators in the same order as multinomial draws them, so the tokens are those of torch.multinomial for a
    seed (tested). Drawing them apart from the logits lets a compiled decode step sample in the same graph
    (MusicLM.start's `finish`): the random numbers are an input, the rest is arithmetic.
    """

    rows: int  # n: the rows that are sampled (captions)
    guidance_scale: float
    temperature: float
    top_k: int
    special_id: int

    @property
    def guide(self) -> bool:
        return self.guidance_scale != 1.0

    def noise_buffer(self, n_codebooks: int, vocab: int, device: torch.device) -> torch.Tensor | None:
        """(n, K, V) float32 for `draw`; None for greedy decoding (temperature 0 draws nothing)."""
        if self.temperature <= 0:
            return None
        return torch.empty(self.rows, n_codebooks, vocab, device=device)

    def draw(self, noise: torch.Tensor | None, generator: Generators) -> None:
        """Fill `noise` with Exp(1) draws: one call per row with its own generator (row i's K draws), or one call
        for the whole batch with a single generator (None: torch's default one), as torch.multinomial would."""
        if noise is None:
            return
        if generator is None or isinstance(generator, torch.Generator):
            noise.exponential_(1.0, generator=generator)
            return
        if len(generator) != noise.shape[0]:
            raise ValueError(f"{len(generator)} generators for {noise.shape[0]} rows: pass one per row")
        for row, g in zip(noise, generator, strict=True):
            row.exponential_(1.0, generator=g)

    def __call__(
        self, logits: torch.Tensor, noise: torch.Tensor | None, valid: torch.Tensor, nonfinite: torch.Tensor
    ) -> torch.Tensor:
        """logits (R, K, V), noise (n, K, V) from `draw`, valid (K,) bool -> tokens (R, K).

        `nonfinite` (0-d bool) is set when a row's probabilities are not finite (NaN or infinite logits, which
        torch.multinomial refused): checked by the caller once per batch, so that a compiled step never syncs."""
        n = self.rows
        logits = logits.float()
        if self.guide:
            cond, uncond = logits[:n], logits[n:]
            logits = uncond + self.guidance_scale * (cond - uncond)  # (n, K, V)
        else:
            logits = logits.clone()
        logits[..., self.special_id] = float("-inf")  # the special id is never an audio token
        if noise is None:
            tokens = logits.argmax(dim=-1)
        else:
            logits = logits / self.temperature
            if self.top_k:
                k = min(self.top_k, logits.shape[-1] - 1)
                kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (n, K, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)  # (n, K, V)
            nonfinite |= probs.isnan().any()
            tokens = (probs / noise).argmax(dim=-1)  # (n, K): torch.multinomial(probs, 1) for these draws
        tokens = torch.where(valid, tokens, self.special_id)
        return tokens.repeat(2, 1) if self.guide else tokens


def sample_next(logits: torch.Tensor, cfg: GenerateConfig, special_id: int, generator: Generators) -> torch.Tensor:
    """logits (B, K, V) -> tokens (B, K): special id masked, temperature, top-k, then the draws (no guidance).

    `generator`: one per row (row i's K draws use generator[i]) or a single one for the whole batch."""
    sampler = Sampler(logits.shape[0], 1.0, cfg.temperature, cfg.top_k, special_id)
    noise = sampler.noise_buffer(logits.shape[1], logits.shape[2], logits.device)
    sampler.draw(noise, generator)
    nonfinite = torch.zeros((), dtype=torch.bool, device=logits.device)
    tokens = sampler(logits, noise, torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device), nonfinite)
    if nonfinite:
        raise ValueError("sample_next: the logits are not finite (NaN or infinite)")
    return tokens


@torch.no_grad()
def generate_batch(
    model: MusicLM,
    text: TextEncoding,
    n_frames: int,
    cfg: GenerateConfig,
    generators: Generators,
    recurrent: bool,
    progress: bool,
    decode: str = "auto",
) -> torch.Tensor:
    """text: cond rows (n) followed by uncond rows (n) when guiding -> codes (n, K, n_frames). `decode`: how the
    recurrent steps run (models.decoding: auto, eager, compile, cuda_graph); bench/bench_vs_transformers.py times this
    same loop in each mode."""
    K, special = model.cfg.n_codebooks, model.cfg.special_id
    guide = cfg.guidance_scale != 1.0
    n = len(text) // 2 if guide else len(text)
    sampler = Sampler(n, cfg.guidance_scale, cfg.temperature, cfg.top_k, special)
    length = delayed_length(n_frames, K)
    device = text.hidden.device
    # (L, K): where a real code goes; a position's row is contiguous whatever L, as a compiled step was built for
    valid = delay_valid_mask(n_frames, K, device=device).t().contiguous()
    noise = sampler.noise_buffer(K, model.cfg.vocab_size, device)  # (n, K, V), refilled every position
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    seq = torch.full((len(text), K, length), special, dtype=torch.long, device=device)  # (2n or n, K, L)
    cache = None
    for t in report_progress(range(length), "generate", "token", enabled=progress, leave=False):
        sampler.draw(noise, generators)
        if recurrent and t > 0:  # one recurrent step, the sampling in the same call (compiled with it, or not)
            seq[:, :, t] = model.step(seq[:, :, t - 1], cache, noise, valid[t], nonfinite)
            continue
        if recurrent:
            logits, cache = model.start(text.hidden, text.mask, max_new=length, decode=decode, finish=sampler)
        else:  # the official code's way: the whole sequence again for every token
            logits = model(seq[:, :, : t + 1], text.hidden, text.mask)[:, :, t]
        seq[:, :, t] = sampler(logits, noise, valid[t], nonfinite)
    if nonfinite:
        raise UserFacingError(
            "generate: the model's logits became NaN or infinite while sampling; the checkpoint is probably "
            "diverged (see its training loss curve) or its weights are damaged"
        )
    return undo_delay(seq[:n], special)  # (n, K, n_frames)


def encode_one_by_one(text_encoder, captions: Sequence[str]) -> TextEncoding:
    """Each caption encoded alone (its encoding cannot depend on the others), stacked: (B, S, E), (B, S)."""
    parts = [text_encoder.encode([caption]) for caption in captions]
    return TextEncoding(torch.cat([p.hidden for p in parts]), torch.cat([p.mask for p in parts]))


def pad_rows(items: Sequence, size: int) -> list:
    """`items` followed by copies of its first item up to `size` (every batch runs at the configured size)."""
    return list(items) + [items[0]] * (size - len(items))


def generate_tokens(
    model: MusicLM,
    text_encoder,
    captions: Sequence[str],
    n_frames: int,
    cfg: GenerateConfig,
    seed: int | Sequence[int],
    *,
    recurrent: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Codes (B, K, n_frames) for `captions`.

    `seed`: one per caption, or one int from which caption i gets `caption_seed(seed, str(i))`. A caption's codes
    depend on its text, its seed and `cfg` only, not on the other captions of the call."""
    if n_frames < 1:
        raise UserFacingError(f"generate: n_frames must be >= 1, got {n_frames}")
    seeds = [caption_seed(seed, str(i)) for i in range(len(captions))] if isinstance(seed, int) else list(seed)
    if len(seeds) != len(captions):
        raise ValueError(f"{len(seeds)} seeds for {len(captions)} captions")
    model.eval()
    device = next(model.parameters()).device
    guide = cfg.guidance_scale != 1.0
    uncond = text_encoder.uncond(cfg.batch_size).to(device) if guide and captions else None
    out = []
    for i in range(0, len(captions), cfg.batch_size):
        chunk = list(captions[i : i + cfg.batch_size])
        chunk_seeds = pad_rows(seeds[i : i + cfg.batch_size], cfg.batch_size)
        text = encode_one_by_one(text_encoder, pad_rows(chunk, cfg.batch_size)).to(device)
        if guide:
            text = TextEncoding(torch.cat([text.hidden, uncond.hidden]), torch.cat([text.mask, uncond.mask]))
        generators = [torch.Generator(device=device).manual_seed(s) for s in chunk_seeds]
        codes = generate_batch(model, text, n_frames, cfg, generators, recurrent, progress)
        out.append(codes[: len(chunk)].cpu())
    if not out:
        return torch.zeros(0, model.cfg.n_codebooks, n_frames, dtype=torch.long)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------- output


def write_codes(path: str | Path, captions: Sequence[str], codes: torch.Tensor, meta: dict) -> Path:
    """codes (B, K, T) -> .npz (`codes` int16 (B, K, T), `captions`, `meta` JSON) or .parquet (one row a caption)."""
    path = Path(path)
    array = codes.numpy().astype(np.int16)
    if path.suffix == ".npz":
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                codes=array,
                captions=np.array(list(captions), dtype=str),
                meta=np.array(json.dumps(meta, sort_keys=True)),
            )
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "index": pa.array(range(len(captions)), pa.int32()),
                "caption": pa.array(list(captions), pa.string()),
                "n_frames": pa.array([array.shape[2]] * len(captions), pa.int32()),
                "codes": pa.array([row.tolist() for row in array], pa.list_(pa.list_(pa.int16()))),
            }
        ).replace_schema_metadata({"ssmttm.generate": json.dumps(meta, sort_keys=True)})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    else:
        raise UserFacingError(f"--out {path}: use a .npz or .parquet file name")
    return path
