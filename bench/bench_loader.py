"""Benchmark: training data loader throughput (tokens/s) vs what the demo-size LM consumes in training.

    python bench/bench_loader.py            # 5 s of loading, 10 LM steps
    python bench/bench_loader.py --quick    # 1 s of loading, 3 LM steps

Loader: `TokenShardDataset` + `collate` in one process (num_workers=0, the conservative case) over demo-shaped
shards: data/tokenize when the pipeline has made it, else the shard bench_tokenize.py wrote, else synthetic shards of
the demo's shape (4 codebooks x 862 frames per 10 s clip, float16 latents stored, which the loader must skip).
Epochs are chained until the time budget is spent. Tokens are seq_len x n_codebooks per item of the run's `lm`.

The run: a named run's (default the first of `runs`) `lm` and `train_lm` sections with its `runs` entry applied
(pipeline.run_sections), which give the model, seq_len, n_codebooks and the batch size.
LM: `ssmttm.models.lm.MusicLM` of that `lm` section (text width 384, the demo's MiniLM; random text features, since
the train stage caches the text encodings) doing forward + backward + AdamW steps on CPU; its tokens/s is the rate at
which training consumes data. Goal: loader >= 20x the LM. Writes results/bench/loader.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ssmttm.artifacts import write_json
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.pipeline import run_names, run_sections
from ssmttm.tokens.loader import TokenShardDataset, collate
from ssmttm.tokens.shards import TokenRow, list_shards, write_shard

REPO = Path(__file__).resolve().parents[1]
TOKENIZE_BENCH_SHARD = Path(tempfile.gettempdir()) / "ssmttm-bench-tokenize" / "tokens"
D_TEXT = 384  # all-MiniLM-L6-v2, the demo text encoder
TEXT_LEN = 32  # params.yaml text.max_length


def shards_for_bench(workdir: Path) -> tuple[Path, str]:
    if list_shards(REPO / "data" / "tokenize"):
        return REPO / "data" / "tokenize", "data/tokenize"
    if list_shards(TOKENIZE_BENCH_SHARD):
        return TOKENIZE_BENCH_SHARD, "bench_tokenize.py output (demo codec)"
    rng = np.random.default_rng(0)
    codec = {
        "model": "dac",
        "variant": "synthetic",
        "n_codebooks": 4,
        "codebook_size": 1024,
        "codebook_dim": 8,
        "sample_rate": 44100,
        "hop_length": 512,
        "encode_window_s": 10.0,
    }
    for s in range(2):
        rows = [
            TokenRow(
                clip_id=f"s{s}c{i:03d}",
                track_id=f"s{s}t{i // 3}",
                split="train",
                caption=f"clip {i}",
                duration_s=10.0,
                codes=rng.integers(0, 1024, (4, 862), dtype=np.int16),
                latents=rng.standard_normal((32, 862)).astype(np.float16),
            )
            for i in range(42)
        ]
        write_shard(
            workdir / f"shard-{s:05d}.parquet",
            rows,
            {"ssmttm.codec": codec, "ssmttm.params_sha256": "b"},
            row_group_size=16,
            store_latents=True,
        )
    return workdir, "synthetic demo-shaped shards"


def loader_rate(shards: Path, seq_len: int, n_codebooks: int, batch_size: int, seconds: float) -> dict:
    ds = TokenShardDataset(shards, seq_len=seq_len, n_codebooks=n_codebooks, seed=0, batch_size=batch_size)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=0, collate_fn=collate)
    items, epoch = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        ds.set_epoch(epoch)
        for batch in loader:
            items += batch["codes"].shape[0]
        epoch += 1
    elapsed = time.perf_counter() - started
    return {
        "items": items,
        "epochs": epoch,
        "seconds": round(elapsed, 2),
        "items_per_s": round(items / elapsed, 1),
        "tokens_per_s": round(items * seq_len * n_codebooks / elapsed),
    }


def lm_rate(lm_section: dict, batch_size: int, steps: int) -> dict:
    from ssmttm.models.lm import LMConfig, MusicLM

    cfg = dataclasses.replace(section_to_dataclass(LMConfig, lm_section), d_text=D_TEXT)
    torch.manual_seed(0)
    model = MusicLM(cfg).train()
    model.set_uncond(torch.zeros(1, TEXT_LEN, D_TEXT), torch.ones(1, TEXT_LEN, dtype=torch.bool))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, cfg.codebook_size, (batch_size, cfg.n_codebooks, cfg.seq_len))
    text = torch.randn(batch_size, TEXT_LEN, D_TEXT)
    mask = torch.ones(batch_size, TEXT_LEN, dtype=torch.bool)
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        loss, _ = model.loss(tokens, text, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step pays one-off costs
            times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    return {
        "backbone": cfg.backbone,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": batch_size,
        "seq_len": cfg.seq_len,
        "n_codebooks": cfg.n_codebooks,
        "step_s": round(step_s, 4),
        "tokens_per_s": round(batch_size * cfg.seq_len * cfg.n_codebooks / step_s),
    }


def run_settings(params: dict, run: str | None = None) -> tuple[dict, int]:
    """The `lm` section of the named run `run` (the first of `runs` when None; run_sections) and its training batch
    size."""
    sections = run_sections(params, run or run_names(params)[0])
    return sections["lm"], int((sections["train_lm"] or {}).get("batch_size", 8))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s of loading and 3 LM steps")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--run", help="a named run of --params (default: the first of `runs`)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "loader.json"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    lm_section, batch_size = run_settings(params, args.run)
    seq_len, n_codebooks = int(lm_section["seq_len"]), int(lm_section["n_codebooks"])

    with tempfile.TemporaryDirectory() as tmp:
        shards, source = shards_for_bench(Path(tmp))
        loader = loader_rate(shards, seq_len, n_codebooks, batch_size, 1.0 if args.quick else 5.0)
    try:
        lm = lm_rate(lm_section, batch_size, 3 if args.quick else 10)
        run = f"{lm_section['backbone']} run of {args.params}"
        consumer = f"ssmttm.models.lm.MusicLM ({run}), forward + backward + AdamW on CPU"
    except ImportError as exc:  # the LM module is another stage's; say so rather than guess a number
        lm, consumer = None, f"not measured: ssmttm.models.lm is not importable ({exc})"
    ratio = round(loader["tokens_per_s"] / lm["tokens_per_s"], 1) if lm else None
    result = {
        "benchmark": "loader",
        "quick": args.quick,
        "shards": source,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "n_codebooks": n_codebooks,
        "torch_threads": torch.get_num_threads(),
        "loader": loader,
        "lm": lm,
        "consumer": consumer,
        "ratio": ratio,
        "goal": "loader >= 20x the LM's training consumption",
        "meets_goal": bool(ratio and ratio >= 20),
    }
    print(f"{'':<10}{'tokens/s':>14}")
    print(f"{'loader':<10}{loader['tokens_per_s']:>14,}")
    if lm:
        print(f"{'LM train':<10}{lm['tokens_per_s']:>14,}   ({lm['backbone']}, {lm['params']:,} params)")
    print(f"ratio {ratio}x (goal >= 20x); shards: {source}; consumer: {consumer}")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
