"""Benchmark: LM training throughput (tokens/s) per backbone through the real train_lm pipeline (Lightning, loader,
text cache, optimizer), on synthetic token shards.

    python bench/bench_train.py --quick                       # CPU, demo size (params.yaml `lm`), 2 runs
    python bench/bench_train.py --runs prefix_simba cross_transformer --steps 30
    python bench/bench_train.py --gpu-steps 30 --peak-flops 989e12   # on a CUDA machine: also the paper size

Each backbone's model and batch size are those its train_lm run uses: the `lm` and `train_lm` sections with their
`runs` entries applied (pipeline.run_sections). CPU: the demo sizes of params.yaml, fp32. GPU (only when
CUDA is available): the paper sizes of configs/paper.yaml (prefix_simba: the released 281 M, 24 x 1024, d_state 512,
2588 positions, batch 4; prefix_mamba 19 blocks, ...; PAPER.md section 4) in bf16 mixed precision, with model FLOPs
utilisation MFU = 6 N tokens/s / peak (N as in ssmttm.train.flops; the peak defaults to an H100's dense bf16
989 TFLOP/s). Tokens/s is the median over logged steps after a warm-up, so start-up and checkpointing are left
out. Prints a table and writes results/bench/train.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmttm.artifacts import write_json
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.models.lm import LMConfig
from ssmttm.pipeline import run_sections
from ssmttm.text.encoder import TextConfig, TextEncoding
from ssmttm.tokens.shards import TokenRow, finalize_manifest, write_shard
from ssmttm.train.config import TrainConfig
from ssmttm.train.flops import H100_BF16_DENSE_FLOPS, mfu
from ssmttm.train.recorder import TIMING_LOG_FILE, read_history
from ssmttm.train.stage import train_lm

WARMUP_STEPS = 3  # logged steps left out of the median (first-call overheads, allocator warm-up)
MINILM_WIDTH = 384  # the demo's text encoder
FLAN_T5_BASE_WIDTH = 768  # the paper's


@dataclasses.dataclass
class BenchConfig:
    run_names: tuple[str, ...] = ("prefix_simba", "cross_transformer")  # named runs of `params`
    steps: int = 20  # optimizer steps per CPU run (one micro-batch each)
    gpu_steps: int = 20
    gpu_run_names: tuple[str, ...] = ("prefix_simba",)  # named runs of `gpu_params`
    peak_flops: float = H100_BF16_DENSE_FLOPS
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    params: str = "params.yaml"  # CPU runs: the demo sizes
    gpu_params: str = "configs/paper.yaml"  # GPU runs: the paper sizes
    seed: int = 0


class RandomTextEncoder:
    """Caption -> fixed pseudo-random features of the real encoder's width (the text is cached; only shapes matter)."""

    def __init__(self, width: int, max_length: int):
        self.hidden_size, self.max_length = width, max_length

    def encode(self, captions: list[str]) -> TextEncoding:
        hidden = torch.zeros(len(captions), self.max_length, self.hidden_size)
        mask = torch.zeros(len(captions), self.max_length, dtype=torch.bool)
        for i, caption in enumerate(captions):
            n = min(len(caption.split()) + 1, self.max_length)
            seed = int(hashlib.sha256(caption.encode()).hexdigest()[:8], 16)
            hidden[i, :n] = torch.randn(n, self.hidden_size, generator=torch.Generator().manual_seed(seed))
            mask[i, :n] = True
        return TextEncoding(hidden, mask)


def synthetic_shards(folder: Path, n_clips: int, n_frames: int, n_codebooks: int, vocab: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = [
        TokenRow(
            clip_id=f"c{i:05d}-0000",
            track_id=f"c{i:05d}",
            split="valid" if i % 10 == 9 else "train",
            caption=f"synthetic clip {i % 7} with some words",
            duration_s=n_frames / 86.13,
            codes=rng.integers(0, vocab, (n_codebooks, n_frames), dtype=np.int16),
        )
        for i in range(n_clips)
    ]
    codec = {
        "model": "dac",
        "variant": "synthetic",
        "n_codebooks": n_codebooks,
        "codebook_size": vocab,
        "sample_rate": 44100,
        "hop_length": 512,
        "codebook_dim": 8,
        "encode_window_s": 10.0,
    }
    write_shard(
        folder / "shard-00000.parquet",
        rows,
        {"ssmttm.codec": codec, "ssmttm.params_sha256": "bench"},
        row_group_size=16,
        store_latents=False,
    )
    finalize_manifest(folder)
    return folder


def run_one(lm_cfg: LMConfig, train_cfg: TrainConfig, d_text: int, workdir: Path, seed: int) -> dict:
    n_clips = train_cfg.batch_size * (train_cfg.max_steps + 2) * 10 // 9 + 10
    shards = synthetic_shards(
        workdir / "shards", n_clips, lm_cfg.seq_len, lm_cfg.n_codebooks, lm_cfg.codebook_size, seed
    )
    text_cfg = TextConfig(encoder=f"random-{d_text}", max_length=32)
    start = time.perf_counter()
    metrics = train_lm(
        shards,
        lm_cfg,
        text_cfg,
        train_cfg,
        workdir / "run",
        seed,
        text_cache_dir=workdir / "cache",
        text_encoder=RandomTextEncoder(d_text, 32),
        resume=False,
    )
    wall = time.perf_counter() - start
    rows = [r for r in read_history(workdir / "run" / TIMING_LOG_FILE) if "tokens_per_s" in r][WARMUP_STEPS:]
    rate = statistics.median(r["tokens_per_s"] for r in rows)
    tokens_per_step = train_cfg.batch_size * train_cfg.accumulate_grad_batches * lm_cfg.seq_len
    return {
        "backbone": lm_cfg.backbone,
        "n_layers": lm_cfg.n_layers,
        "d_model": lm_cfg.d_model,
        "params": metrics["params"],
        "flops_params": metrics["flops_params"],
        "batch": train_cfg.batch_size,
        "seq_len": lm_cfg.seq_len,
        "steps": train_cfg.max_steps,
        "precision": metrics["precision"],
        "tokens_per_s": rate,
        "step_ms": 1e3 * tokens_per_step / rate,
        "first_loss": metrics["first_loss"],
        "last_loss": metrics["last_loss"],
        "wall_s": wall,
    }


def throughput_train_config(steps: int, **hardware) -> TrainConfig:
    """A short run that only measures speed: one checkpoint and one validation batch at the end."""
    return TrainConfig(
        accumulate_grad_batches=1,
        max_steps=steps,
        warmup_steps=2,
        checkpoint_every=steps,
        keep_last_checkpoints=1,
        val_every=steps,
        val_batches=1,
        log_every=1,
        deterministic=False,
        **hardware,
    )


def named_runs(params: Mapping[str, Any], names: tuple[str, ...], steps: int, **hardware) -> list[tuple]:
    """(LMConfig, TrainConfig) per named run: its sections (run_sections: its `runs` entry applied), the LM's text
    width left to the encoder, and a throughput-only training config with the run's batch size."""
    runs = []
    for name in names:
        sections = run_sections(params, name)
        lm = dataclasses.replace(section_to_dataclass(LMConfig, sections["lm"]), d_text=None)
        batch_size = int((sections["train_lm"] or {}).get("batch_size", 8))
        runs.append((lm, throughput_train_config(steps, batch_size=batch_size, **hardware)))
    return runs


def cpu_runs(cfg: BenchConfig) -> list[tuple]:
    hardware = {"lr": 1e-3, "accelerator": "cpu", "precision": "32-true"}
    return named_runs(load_params(cfg.params), cfg.run_names, cfg.steps, **hardware)


def gpu_runs(cfg: BenchConfig) -> list[tuple]:
    hardware = {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed", "num_workers": 2}
    return named_runs(load_params(cfg.gpu_params), cfg.gpu_run_names, cfg.gpu_steps, **hardware)


def bench_cpu(cfg: BenchConfig) -> list[dict]:
    results = []
    for lm, train in cpu_runs(cfg):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_one(lm, train, MINILM_WIDTH, Path(tmp), cfg.seed))
    return results


def bench_gpu(cfg: BenchConfig) -> list[dict] | dict:
    if not torch.cuda.is_available():
        return {"skipped": "CUDA is not available"}
    results = []
    for lm, train in gpu_runs(cfg):
        torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            row = run_one(lm, train, FLAN_T5_BASE_WIDTH, Path(tmp), cfg.seed)
        row["mfu"] = mfu(row["flops_params"], row["tokens_per_s"], cfg.peak_flops)
        row["peak_flops"] = cfg.peak_flops
        row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["device"] = torch.cuda.get_device_name()
        results.append(row)
    return results


def print_table(title: str, rows: list[dict] | dict) -> None:
    print(f"\n{title}")
    if isinstance(rows, dict):
        print(f"  skipped: {rows['skipped']}")
        return
    print(f"  {'backbone':<20} {'blocks':>6} {'params':>12} {'tokens/s':>12} {'ms/step':>9} {'loss':>15} {'MFU':>7}")
    for r in rows:
        mfu_text = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
        print(
            f"  {r['backbone']:<20} {r['n_layers']:>6} {r['params']:>12,} {r['tokens_per_s']:>12,.0f} "
            f"{r['step_ms']:>9.1f} {r['first_loss']:>7.3f}->{r['last_loss']:<7.3f} {mfu_text:>7}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (CPU 10, GPU 10)")
    parser.add_argument("--runs", nargs="+", default=list(BenchConfig.run_names), help="named runs of --params")
    parser.add_argument("--steps", type=int, default=BenchConfig.steps)
    parser.add_argument(
        "--gpu-runs", nargs="+", default=list(BenchConfig.gpu_run_names), help="named runs of --gpu-params"
    )
    parser.add_argument("--gpu-steps", type=int, default=BenchConfig.gpu_steps)
    parser.add_argument(
        "--peak-flops",
        type=float,
        default=H100_BF16_DENSE_FLOPS,
        help="accelerator peak FLOP/s for MFU (default: H100 SXM dense bf16, 989e12)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--params", default="params.yaml", help="params file of the CPU runs (demo sizes)")
    parser.add_argument(
        "--gpu-params", default=BenchConfig.gpu_params, help="params file of the GPU runs (default: the paper sizes)"
    )
    parser.add_argument("--out", default="results/bench/train.json")
    args = parser.parse_args(argv)
    cfg = BenchConfig(
        run_names=tuple(args.runs),
        steps=10 if args.quick else args.steps,
        gpu_steps=10 if args.quick else args.gpu_steps,
        gpu_run_names=tuple(args.gpu_runs),
        peak_flops=args.peak_flops,
        threads=args.threads,
        params=args.params,
        gpu_params=args.gpu_params,
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    logging.basicConfig(level=logging.WARNING)
    result = {
        "config": dataclasses.asdict(cfg),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu": bench_cpu(cfg),
        "gpu": bench_gpu(cfg),
    }
    print_table(f"CPU, demo size ({cfg.params}), fp32, {torch.get_num_threads()} threads", result["cpu"])
    print_table(f"GPU, sizes of {cfg.gpu_params}, bf16-mixed, MFU against {cfg.peak_flops:.3g} FLOP/s", result["gpu"])
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
