"""Recurrent generation vs re-running the whole sequence per token (the official code's way).

Model: the LM of a named train_lm run (the `lm` section with its `runs` entry applied, pipeline.run_sections;
default the first of `runs`, demo: a tiny prefix_simba) with random weights, text from the
`text` section's encoder; one caption with classifier-free guidance (a batch of 2 rows). Both modes draw from the
same seeded generator, so they must produce the same tokens; the table reports tokens/s, their ratio and the peak
memory each mode adds (CPU: peak resident set over the run, VmHWM reset before each; CUDA: max allocated).

    python bench/bench_generation.py            # 1000 tokens
    python bench/bench_generation.py --quick    # 200 tokens
Writes results/bench/generation.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import time
from pathlib import Path

import torch

from ssmttm.artifacts import library_versions, write_json
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.generate import GenerateConfig, generate_tokens
from ssmttm.models.lm import LMConfig, MusicLM, param_count, resolve_d_text
from ssmttm.pipeline import run_names, run_sections
from ssmttm.text.encoder import TextConfig, TextEncoder


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_peak(fn, device: torch.device):
    """Run fn(); return (result, seconds, CPU seconds of this process, peak MiB added over the memory in use before
    the call, method). bench_vs_transformers.py measures with this too."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        return out, time.perf_counter() - start, time.process_time() - cpu, peak, "cuda_max_alloc"
    before = _status_kb("VmRSS")
    try:  # writing 5 to clear_refs resets the peak RSS (VmHWM) of this process (Linux)
        Path("/proc/self/clear_refs").write_text("5")
        method = "rss_hwm"
    except OSError:
        method = "ru_maxrss (monotonic, approximate)"
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak = _status_kb("VmHWM") if method == "rss_hwm" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out, seconds, cpu_seconds, max(0, (peak or 0) - (before or 0)) / 1024, method


def lm_config(params: dict, run: str | None, d_text: int) -> LMConfig:
    """The LM of the named run `run` (the first of `runs` when None), its text width `d_text` when the params leave
    it open."""
    run = run or run_names(params)[0]
    return resolve_d_text(section_to_dataclass(LMConfig, run_sections(params, run)["lm"]), d_text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 tokens instead of 1000")
    parser.add_argument("--tokens", type=int, default=None, help="frames to generate (overrides --quick)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--run", help="whose LM, a named run of --params (default: the first of `runs`)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-mkldnn",
        action="store_true",
        help="disable oneDNN: its primitive cache keeps one entry per conv input length, which "
        "inflates the full-rerun peak memory (each token is a new length)",
    )
    parser.add_argument("--out", default="results/bench/generation.json")
    args = parser.parse_args()
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    torch.set_num_threads(args.threads)
    n_frames = args.tokens or (200 if args.quick else 1000)
    device = torch.device(args.device)

    params = load_params(args.params)
    encoder = TextEncoder(section_to_dataclass(TextConfig, params.get("text")), device=device)
    cfg = lm_config(params, args.run, encoder.hidden_size)
    gen_cfg = dataclasses.replace(section_to_dataclass(GenerateConfig, params.get("generate")), batch_size=1)
    torch.manual_seed(0)
    model = MusicLM(cfg).to(device).eval()
    captions = ["a calm piano melody with soft strings"]

    for recurrent in (True, False):  # warm-up: one-time allocations and lazy initialisation stay out of the peaks
        generate_tokens(model, encoder, captions, 8, gen_cfg, seed=0, recurrent=recurrent, progress=False)
    rows = {}
    for mode in ("recurrent", "full_rerun"):
        recurrent = mode == "recurrent"
        codes, seconds, _, peak_mib, method = measure_peak(
            lambda recurrent=recurrent: generate_tokens(
                model, encoder, captions, n_frames, gen_cfg, seed=0, recurrent=recurrent, progress=False
            ),
            device,
        )
        rows[mode] = {
            "codes": codes,
            "seconds": seconds,
            "tokens_per_s": n_frames / seconds,
            "peak_mib": peak_mib,
            "memory_method": method,
        }

    same = torch.equal(rows["recurrent"]["codes"], rows["full_rerun"]["codes"])
    ratio = rows["recurrent"]["tokens_per_s"] / rows["full_rerun"]["tokens_per_s"]
    print(
        f"{cfg.backbone} d_model {cfg.d_model} x {cfg.n_layers} ({param_count(cfg) / 1e6:.2f} M params), "
        f"{n_frames} tokens, guidance batch 2, {args.threads} thread(s) on {device}"
    )
    print(f"{'mode':<12} {'seconds':>9} {'tokens/s':>10} {'peak MiB':>9}")
    for mode, row in rows.items():
        print(f"{mode:<12} {row['seconds']:>9.2f} {row['tokens_per_s']:>10.1f} {row['peak_mib']:>9.1f}")
    print(f"speed-up {ratio:.1f}x (goal >= 20x at 1000 tokens); identical tokens: {same}")
    if device.type == "cpu" and not args.no_mkldnn:
        print("note: the full-rerun peak includes oneDNN's per-length primitive cache; --no-mkldnn leaves it out")

    result = {
        "benchmark": "generation",
        "n_frames": n_frames,
        "quick": args.quick,
        "backbone": cfg.backbone,
        "lm": dataclasses.asdict(cfg),
        "params": param_count(cfg),
        "generate": dataclasses.asdict(gen_cfg),
        "modes": {m: {k: v for k, v in r.items() if k != "codes"} for m, r in rows.items()},
        "speedup": ratio,
        "identical_tokens": same,
        "device": str(device),
        "threads": args.threads,
        "mkldnn": torch.backends.mkldnn.enabled,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "libraries": library_versions(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
