"""Token generation: captions -> audio codes, with recurrent decoding and classifier-free guidance.

The text is encoded once and the prefix (projected text, or a BOS for cross models) is run once; then every new
position is one recurrent `step` of the backbone (SSM state / KV cache). The official code re-runs the whole
sequence for every token (PAPER.md section 9); `recurrent=False` does that here too, for tests and benchmarks only.

Guidance runs the conditional and unconditional ("" caption) rows as one batch of 2B:
logits = uncond + g * (cond - uncond). The special id (BOS/pad) is never sampled; with K > 1 codebooks the delay
pattern decides which (codebook, position) pairs are sampled and which are the special id, and the result is
un-delayed to (B, K, n_frames).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssmttm.artifacts import atomic_path
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.models.delay import delay_valid_mask, delayed_length, undo_delay
from ssmttm.models.lm import MusicLM, load_lm
from ssmttm.progress import progress as report_progress
from ssmttm.text.encoder import TextConfig, TextEncoder, TextEncoding

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    temperature: float = 1.2  # <= 0 means greedy (argmax)
    top_k: int = 250  # 0 = no top-k filtering
    guidance_scale: float = 3.0  # 1.0 = no guidance (the unconditional half is skipped)
    batch_size: int = 8  # captions per batch (the model sees 2x that with guidance)
    seconds: float = 10.0  # default length when the CLI gives neither --seconds nor --frames
    frame_rate: float = 44100 / 512  # codec frames per second (DAC 44 kHz: 86.13)
    device: str = "auto"  # auto, cpu or cuda

    def __post_init__(self) -> None:
        if self.top_k < 0 or self.batch_size < 1 or self.frame_rate <= 0:
            raise ValueError("generate: top_k must be >= 0, batch_size >= 1 and frame_rate > 0")


def sample_next(
    logits: torch.Tensor, cfg: GenerateConfig, special_id: int, generator: torch.Generator | None
) -> torch.Tensor:
    """logits (B, K, V) -> tokens (B, K): special id masked, temperature, top-k, then one draw per row."""
    logits = logits.float().clone()
    logits[..., special_id] = float("-inf")  # the special id is never an audio token
    if cfg.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / cfg.temperature
    if cfg.top_k:
        k = min(cfg.top_k, logits.shape[-1] - 1)
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, K, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1).flatten(0, -2)  # (B*K, V)
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])


def _guided(logits: torch.Tensor, n: int, scale: float, guide: bool) -> torch.Tensor:
    """(2n, K, V) with cond rows first -> uncond + scale * (cond - uncond), (n, K, V)."""
    if not guide:
        return logits
    cond, uncond = logits[:n].float(), logits[n:].float()
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def _generate_batch(
    model: MusicLM,
    text: TextEncoding,
    n_frames: int,
    cfg: GenerateConfig,
    generator: torch.Generator,
    recurrent: bool,
    progress: bool,
) -> torch.Tensor:
    """text: cond rows (n) followed by uncond rows (n) when guiding -> codes (n, K, n_frames)."""
    K, special = model.cfg.n_codebooks, model.cfg.special_id
    guide = cfg.guidance_scale != 1.0
    n = len(text) // 2 if guide else len(text)
    length = delayed_length(n_frames, K)
    device = text.hidden.device
    valid = delay_valid_mask(n_frames, K, device=device)  # (K, L): where a real code goes
    seq = torch.full((len(text), K, length), special, dtype=torch.long, device=device)  # (2n or n, K, L)
    cache = None
    for t in report_progress(range(length), "generate", "token", enabled=progress, leave=False):
        if recurrent:
            if t == 0:
                logits, cache = model.start(text.hidden, text.mask, max_new=length)  # (2n, K, V)
            else:
                logits = model.step(seq[:, :, t - 1], cache)
        else:  # the official code's way: the whole sequence again for every token
            logits = model(seq[:, :, : t + 1], text.hidden, text.mask)[:, :, t]
        tokens = sample_next(_guided(logits, n, cfg.guidance_scale, guide), cfg, special, generator)  # (n, K)
        tokens = torch.where(valid[:, t], tokens, special)
        seq[:, :, t] = tokens.repeat(2, 1) if guide else tokens
    return undo_delay(seq[:n], special)  # (n, K, n_frames)


def generate_tokens(
    model: MusicLM,
    text_encoder: TextEncoder,
    captions: Sequence[str],
    n_frames: int,
    cfg: GenerateConfig,
    seed: int,
    *,
    recurrent: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Codes (B, K, n_frames) for `captions`, reproducible for a given seed and batch size."""
    if n_frames < 1:
        raise UserFacingError(f"generate: n_frames must be >= 1, got {n_frames}")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, len(captions), cfg.batch_size):
        chunk = list(captions[i : i + cfg.batch_size])
        text = text_encoder.encode(chunk).to(device)
        if cfg.guidance_scale != 1.0:
            uncond = text_encoder.uncond(len(chunk)).to(device)
            text = TextEncoding(torch.cat([text.hidden, uncond.hidden]), torch.cat([text.mask, uncond.mask]))
        out.append(_generate_batch(model, text, n_frames, cfg, generator, recurrent, progress).cpu())
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


def read_captions(path: str | Path) -> list[str]:
    """One caption per line (.txt), or the `caption` field of .jsonl rows."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"--captions-file {path} not found")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        try:
            return [json.loads(line)["caption"] for line in lines]
        except (KeyError, json.JSONDecodeError) as exc:
            raise UserFacingError(f"{path}: every line must be a JSON object with a 'caption' field ({exc})") from None
    return lines


# ---------------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model folder with model.safetensors + config.json")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--captions", nargs="+", metavar="TEXT", help="captions to generate from")
    source.add_argument("--captions-file", help="one caption per line (.txt) or .jsonl rows with 'caption'")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="length in seconds (default: generate.seconds)")
    length.add_argument("--frames", type=int, help="length in codec frames")
    parser.add_argument("--out", required=True, help="output .npz or .parquet of codes (B, K, T)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: the params' seed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    if Path(args.out).suffix not in (".npz", ".parquet"):
        raise UserFacingError(f"--out {args.out}: use a .npz or .parquet file name")
    params = load_params(args.params)
    cfg = section_to_dataclass(GenerateConfig, params.get("generate"))
    seed = args.seed if args.seed is not None else int(params.get("seed", 0))
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    model, lm_cfg, trained_text = load_lm(args.checkpoint, device=device)
    # The encoder and padding the model was trained with win over params.yaml: they must match training exactly.
    text_section = dict(params.get("text") or {})
    for key in ("encoder", "max_length"):
        if trained_text and key in trained_text:
            if key in text_section and text_section[key] != trained_text[key]:
                log.warning(
                    "text.%s: using the checkpoint's %r, not params' %r", key, trained_text[key], text_section[key]
                )
            text_section[key] = trained_text[key]
    text_cfg = section_to_dataclass(TextConfig, text_section)
    encoder = TextEncoder(text_cfg, device=device)
    if encoder.hidden_size != lm_cfg.d_text:
        raise UserFacingError(
            f"text encoder {text_cfg.encoder} gives {encoder.hidden_size} features but the "
            f"checkpoint {args.checkpoint} expects {lm_cfg.d_text}"
        )
    captions = args.captions if args.captions else read_captions(args.captions_file)
    if args.frames is not None:
        n_frames = args.frames
    else:
        n_frames = round((args.seconds if args.seconds is not None else cfg.seconds) * cfg.frame_rate)
    codes = generate_tokens(model, encoder, captions, n_frames, cfg, seed, progress=not args.no_progress)
    meta = {
        "checkpoint": str(args.checkpoint),
        "seed": seed,
        "n_frames": n_frames,
        "generate": vars(cfg).copy(),
        "lm": {"backbone": lm_cfg.backbone, "n_codebooks": lm_cfg.n_codebooks, "special_id": lm_cfg.special_id},
    }
    write_codes(args.out, captions, codes, meta)
    print(f"wrote {len(captions)} x {tuple(codes.shape[1:])} codes to {args.out}")
    return 0
