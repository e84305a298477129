"""Benchmark: chunked SSD scan vs the per-position recurrence on CPU (pure PyTorch reference paths).

    python bench/bench_scan.py            # L = 256 ... 4096
    python bench/bench_scan.py --quick    # L = 256 ... 1024, fewer repeats

Prints a table and writes results/bench/scan.json (median milliseconds per forward call, speed-up, and the largest
difference between the two outputs, which should be at float32 rounding level).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ssmttm.artifacts import write_json
from ssmttm.models.ssd import ssd_chunked, ssd_sequential


@dataclass
class ScanBenchConfig:
    batch: int = 1
    nheads: int = 4
    headdim: int = 16
    ngroups: int = 1
    d_state: int = 32
    chunk_size: int = 64
    lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    repeats: int = 5
    threads: int = 1
    seed: int = 0


def make_inputs(cfg: ScanBenchConfig, length: int, generator: torch.Generator):
    x = torch.randn(cfg.batch, length, cfg.nheads, cfg.headdim, generator=generator)  # (B, L, H, P)
    # Step sizes and decay rates in the range of a trained Mamba2 (softplus(dt) ~ 1e-3..1e-1, -A in 1..16).
    dt = torch.exp(torch.empty(cfg.batch, length, cfg.nheads).uniform_(-6.9, -2.3, generator=generator))  # (B, L, H)
    A = -torch.empty(cfg.nheads).uniform_(1.0, 16.0, generator=generator)  # (H,)
    B = torch.randn(cfg.batch, length, cfg.ngroups, cfg.d_state, generator=generator)  # (B, L, G, N)
    C = torch.randn(cfg.batch, length, cfg.ngroups, cfg.d_state, generator=generator)  # (B, L, G, N)
    return x, dt, A, B, C


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, first-call overheads)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def run(cfg: ScanBenchConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    generator = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for length in cfg.lengths:
        inputs = make_inputs(cfg, length, generator)
        y_chunked, _ = ssd_chunked(*inputs, chunk_size=cfg.chunk_size)
        y_sequential, _ = ssd_sequential(*inputs)
        chunked = median_ms(lambda inputs=inputs: ssd_chunked(*inputs, chunk_size=cfg.chunk_size), cfg.repeats)
        sequential = median_ms(lambda inputs=inputs: ssd_sequential(*inputs), cfg.repeats)
        rows.append(
            {
                "length": length,
                "chunked_ms": round(chunked, 3),
                "sequential_ms": round(sequential, 3),
                "speedup": round(sequential / chunked, 2),
                "max_abs_diff": float((y_chunked - y_sequential).abs().max()),
            }
        )
    return {
        "benchmark": "ssd_scan",
        "config": asdict(cfg),
        "device": "cpu",
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print(f"{'L':>6} {'chunked ms':>11} {'sequential ms':>14} {'speed-up':>9} {'max |diff|':>11}")
    for row in result["rows"]:
        print(
            f"{row['length']:>6} {row['chunked_ms']:>11.2f} {row['sequential_ms']:>14.2f} "
            f"{row['speedup']:>8.1f}x {row['max_abs_diff']:>11.2e}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L up to 1024 and 2 repeats (a smoke run)")
    parser.add_argument("--out", default="results/bench/scan.json", help="JSON output path")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: comparable runs)")
    parser.add_argument("--chunk-size", type=int, default=ScanBenchConfig.chunk_size)
    args = parser.parse_args(argv)
    cfg = ScanBenchConfig(threads=args.threads, chunk_size=args.chunk_size)
    if args.quick:
        cfg.lengths, cfg.repeats = (256, 512, 1024), 2
    result = run(cfg)
    print_table(result)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
