"""Benchmark: tokenize throughput in seconds of audio per second, with the demo codec (CPU; GPU when present).

    python bench/bench_tokenize.py            # one whole demo shard (about 40 ten-second clips)
    python bench/bench_tokenize.py --quick    # its first 8 clips

The codec is data/codec when the pipeline has built it, else the demo architecture (params.yaml codec.train sizes)
with untrained weights: speed depends on the architecture, not on the weights. Clips come from data/segment or the
demo-like corpus of bench_codec.py. The full `tokenize_shard` runs (read, windowed encode, Parquet write). Prints a
table and writes results/bench/tokenize.json; the written shard is kept for bench_loader.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from ssmttm.artifacts import hash_params, read_jsonl, write_json, write_jsonl
from ssmttm.codec import build_dac, load_codec, model_identity, save_codec
from ssmttm.codec.stage import CodecConfig
from ssmttm.codec.train import model_kwargs, resolve_audio_path
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.tokens.tokenize import TokenizeConfig, tokenize_shard

REPO = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.gettempdir()) / "ssmttm-bench-tokenize"
SHARD_FOR_LOADER = WORK / "tokens" / "shard-00000.parquet"


def demo_codec(params: dict) -> tuple[Path, str]:
    """(codec folder, description): the pipeline's codec, else an untrained one of the demo architecture."""
    if (REPO / "data" / "codec" / "codec.json").is_file():
        return REPO / "data" / "codec", "data/codec"
    train = section_to_dataclass(CodecConfig, params["codec"]).train
    kwargs = model_kwargs(train, params["segment"]["sample_rate"])
    folder = WORK / f"codec-{hash_params(kwargs)[:12]}"  # one cached codec per architecture
    if not (folder / "codec.json").is_file():
        torch.manual_seed(0)
        model = build_dac(kwargs)
        folder.mkdir(parents=True, exist_ok=True)
        save_codec(folder, model.eval(), model_identity(model, variant="trained"))
    return folder, "demo architecture, untrained weights"


def subset(segment: Path, n: int | None) -> Path:
    """A segment folder with the first n clips (absolute audio paths), or the folder itself."""
    if n is None:
        return segment
    rows = read_jsonl(segment / "clips.jsonl")[:n]
    for row in rows:
        row["audio_path"] = str(resolve_audio_path(row, segment).resolve())
    folder = WORK / f"segment-first-{n}"
    write_jsonl(folder / "clips.jsonl", rows)
    return folder


def measure(cfg: TokenizeConfig, clips: Path, captions: Path, codec_dir: Path, device: str, out: Path) -> dict:
    handle = load_codec(codec_dir, device=device)
    cfg = dataclasses.replace(cfg, device=device)
    started = time.perf_counter()
    summary = tokenize_shard(cfg, clips, captions, handle, out, seed=0)
    seconds = time.perf_counter() - started
    return {
        "device": device,
        "clips": summary["rows"],
        "audio_seconds": round(summary["seconds"], 1),
        "wall_seconds": round(seconds, 2),
        "audio_seconds_per_second": round(summary["seconds"] / seconds, 1),
        "failures": summary["failures"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the first 8 clips of the shard")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "tokenize.json"))
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_codec import demo_corpus

    params = load_params(args.params)
    cfg = section_to_dataclass(TokenizeConfig, params["tokenize"])
    codec_dir, codec_note = demo_codec(params)
    segment, captions = demo_corpus()[0]
    clips = subset(segment, 8 if args.quick else None)
    rows = [measure(cfg, clips, captions, codec_dir, "cpu", SHARD_FOR_LOADER)]
    if torch.cuda.is_available():
        measure(cfg, clips, captions, codec_dir, "cuda", WORK / "gpu-warmup.parquet")  # CUDA init, cuDNN autotune
        rows.append(measure(cfg, clips, captions, codec_dir, "cuda", WORK / "tokens-gpu" / "shard-00000.parquet"))
    identity = load_codec(codec_dir).identity
    result = {
        "benchmark": "tokenize",
        "quick": args.quick,
        "codec": codec_note,
        "codec_identity": {k: identity[k] for k in ("sample_rate", "hop_length", "n_codebooks", "codebook_size")},
        "encode_window_s": cfg.encode_window_s,
        "batch_size": cfg.batch_size,
        "store_latents": cfg.store_latents,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "gpu": "measured" if torch.cuda.is_available() else "not computed (no CUDA device)",
    }
    print(f"{'device':<8}{'clips':>7}{'audio s':>10}{'wall s':>9}{'audio s / s':>13}")
    for r in rows:
        print(
            f"{r['device']:<8}{r['clips']:>7}{r['audio_seconds']:>10.1f}{r['wall_seconds']:>9.2f}"
            f"{r['audio_seconds_per_second']:>13.1f}"
        )
    print(f"codec: {codec_note}; GPU: {result['gpu']}")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
