"""Ours against transformers' Mamba2 (its pure-PyTorch path), same Mamba2 configuration, in one process.

For each shape, both implementations get the same number of Mamba2 mixer layers, width, d_state, headdim, chunk
size and vocabulary (1025), random weights, float32:
- ours: MusicLM with the prefix_mamba backbone, a text prefix of PREFIX positions, and dropout, label smoothing and
  caption dropout off (work transformers does not do). A prefix_mamba block holds two Mamba2 sublayers, so `layers`
  Mamba2 layers are layers / 2 blocks: the issue's "4 layers" are 2 blocks here against 4 transformers blocks;
- transformers: Mamba2ForCausalLM with `layers` Mamba2 blocks and a prompt of PREFIX tokens.
Before timing, one of our mixers is loaded with the weights of one of theirs and both run the same input: the
outputs must agree to float32 rounding, or the benchmark stops.

Generation, a batch of 2 rows: ours is one caption with classifier-free guidance (cond + uncond rows, guidance 3,
special id masked, temperature 1.2, top-k 250, one draw, the token fed to both rows: the generate stage's own
token loop, ssmttm.generate.tokens.generate_batch, whose Sampler draws with torch.multinomial's algorithm inside the
compiled step), transformers' `generate` with
its cache draws for both rows with the same temperature and top-k; tokens/s = generated positions per second.
Ours is timed in each decode mode that runs here (models.decoding: eager; compile unless --no-compile, after a
warm-up call that compiles; on CUDA also CUDA graphs), and must sample the same tokens in every mode. The report
also says which mode "auto" (the default) picks for one such generation in a fresh process: on CPU, compile only
once the process's generations add up to models.decoding.COMPILE_PAYS_AFTER_ROW_STEPS rows x positions.
Training: forward + backward of the loss, batch x positions through the backbone (ours: PREFIX text positions + the
audio tokens). Timings alternate between the implementations, `repeats` times each, and the
medians are reported with the process's CPU time beside the wall time (equal when no other process competed for
the cores); peak memory is the resident-set high-water mark a call adds (CPU) or max allocated (CUDA).
On CUDA the paper-size model (prefix_mamba, 19 blocks x 1024, d_state 512, bf16) also reports its per-token latency
against the memory-bandwidth floor: bytes of weights and states read and written per step / HBM bandwidth.

    python bench/bench_vs_transformers.py --quick     # 200 tokens, 1 thread, the small shape: < 3 min on 2 cores
    python bench/bench_vs_transformers.py             # 500 tokens, 1 and 2 threads, both shapes, 5 repeats
Writes results/bench/vs_transformers.json.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from ssmttm.artifacts import library_versions, write_json  # noqa: E402
from ssmttm.generate.config import GenerateConfig  # noqa: E402
from ssmttm.generate.tokens import generate_batch  # noqa: E402
from ssmttm.models.decoding import COMPILE_PAYS_AFTER_ROW_STEPS, resolve_mode  # noqa: E402
from ssmttm.models.lm import LMConfig, MusicLM, lm_loss  # noqa: E402
from ssmttm.models.mamba2 import Mamba2, Mamba2Config  # noqa: E402
from ssmttm.text.encoder import TextEncoding  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_generation import measure_peak  # noqa: E402  (one memory/time measurement for both benchmarks)

VOCAB = 1025  # 1024 codes + the special id
SPECIAL = 1024
PREFIX = 32  # text positions (ours) / prompt tokens (transformers)
D_TEXT = 64  # width of the (random) text features ours projects
GUIDANCE, TEMPERATURE, TOP_K = 3.0, 1.2, 250
SAMPLING = GenerateConfig(guidance_scale=GUIDANCE, temperature=TEMPERATURE, top_k=TOP_K, batch_size=1)
HBM_BYTES_PER_S = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L40S": 0.864e12, "A10": 0.6e12}


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    d_model: int
    layers: int  # Mamba2 mixer layers on both sides
    d_state: int
    headdim: int
    chunk_size: int

    def ours(self) -> LMConfig:
        return LMConfig(
            backbone="prefix_mamba",
            d_model=self.d_model,
            n_layers=self.layers // 2,
            d_state=self.d_state,
            headdim=self.headdim,
            chunk_size=self.chunk_size,
            dropout=0.0,
            n_codebooks=1,
            codebook_size=VOCAB - 1,
            special_id=SPECIAL,
            d_text=D_TEXT,
            p_drop_caption=0.0,
            p_drop_token=0.0,
            label_smoothing=0.0,
        )

    def theirs(self):
        from transformers import Mamba2Config as HFMamba2Config

        return HFMamba2Config(
            vocab_size=VOCAB,
            hidden_size=self.d_model,
            num_hidden_layers=self.layers,
            state_size=self.d_state,
            head_dim=self.headdim,
            num_heads=2 * self.d_model // self.headdim,
            expand=2,
            n_groups=1,
            chunk_size=self.chunk_size,
            bos_token_id=0,
            pad_token_id=0,
            eos_token_id=None,  # never stop early: both sides generate exactly n tokens
            tie_word_embeddings=False,
        )


# The configuration, and one with the paper's headdim, chunk size and d_state at a width a CPU can train.
SMALL = Shape("small", d_model=256, layers=4, d_state=64, headdim=32, chunk_size=64)
PAPER_LIKE = Shape("paper_like", d_model=512, layers=8, d_state=512, headdim=64, chunk_size=256)
PAPER = Shape("paper", d_model=1024, layers=38, d_state=512, headdim=64, chunk_size=256)  # 19 prefix_mamba blocks


# ---------------------------------------------------------------------------------------------------- measuring


def _release_freed_memory() -> None:
    """Return memory freed by earlier calls to the OS (glibc keeps it otherwise), so the next peak is the call's own."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float, float]:
    """Run fn(); return (seconds, CPU seconds of this process, peak MiB it added over the memory in use before)."""
    if device.type != "cuda":
        _release_freed_memory()
    _, seconds, cpu_seconds, peak_mib, _ = measure_peak(fn, device)
    return seconds, cpu_seconds, peak_mib


def alternate(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, dict]:
    """Time every fn `repeats` times, interleaved (A B A B ...) so that load changes hit all alike; medians.

    cpu_seconds (this process's CPU time) next to seconds shows how much of a wall time was waiting for a core."""
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(timed(fn, device))
    return {
        name: {
            "seconds": statistics.median(r[0] for r in rs),
            "cpu_seconds": statistics.median(r[1] for r in rs),
            "all_seconds": [r[0] for r in rs],
            "peak_mib": max(r[2] for r in rs),
        }
        for name, rs in runs.items()
    }


# ---------------------------------------------------------------------------------------------------- parity


@torch.no_grad()
def mixer_parity(shape: Shape, device: torch.device) -> dict:
    """Our Mamba2 mixer with the weights of transformers' Mamba2Mixer: largest difference of the outputs."""
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    torch.manual_seed(0)
    theirs = Mamba2Mixer(shape.theirs(), layer_idx=0).to(device).eval()
    with torch.no_grad():  # move the weights off their initial values so that every parameter matters
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = Mamba2(
        Mamba2Config(shape.d_model, shape.d_state, headdim=shape.headdim, chunk_size=shape.chunk_size), device=device
    )
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.use_kernels = False  # the reference path on every device: the one transformers' torch path mirrors
    u = torch.randn(2, 2 * shape.chunk_size + 5, shape.d_model, device=device)
    y_ours, y_theirs = ours(u), theirs(u)
    rel = ((y_ours - y_theirs).norm() / y_theirs.norm()).item()
    return {"max_abs_diff": (y_ours - y_theirs).abs().max().item(), "relative_error": rel, "ok": rel < 1e-5}


# ---------------------------------------------------------------------------------------------------- generation


def generate_ours(model: MusicLM, text: tuple[torch.Tensor, torch.Tensor], n: int, decode: str) -> torch.Tensor:
    """n tokens of one caption with guidance (text: the cond row, then the uncond row), by the generate stage's own
    loop (ssmttm.generate.tokens.generate_batch) in decode mode `decode`: guidance, special masked, temperature,
    top-k, one draw, the token fed to both rows."""
    generators = [torch.Generator(device=text[0].device).manual_seed(0)]
    return generate_batch(model, TextEncoding(*text), n, SAMPLING, generators, True, False, decode)[0]  # (K, n)


@torch.no_grad()
def generate_theirs(model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=n,
        do_sample=True,
        top_k=TOP_K,
        temperature=TEMPERATURE,
        use_cache=True,
    )
    if out.shape[1] != prompt.shape[1] + n:
        raise RuntimeError(f"transformers generated {out.shape[1] - prompt.shape[1]} tokens instead of {n}")
    return out


def decode_modes(compile_step: bool, device: torch.device) -> list[str]:
    modes = ["eager"]
    if compile_step:
        modes.append("compile")
    if device.type == "cuda":
        from ssmttm.models.mamba2 import HAS_MAMBA_SSM_KERNELS

        if HAS_MAMBA_SSM_KERNELS:
            modes.append("cuda_graph")
    return modes


def bench_generation(shape: Shape, n: int, threads: int, repeats: int, modes: list[str], device: torch.device) -> dict:
    from transformers import Mamba2ForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ours = MusicLM(shape.ours()).to(device).eval()
    theirs = Mamba2ForCausalLM(shape.theirs()).to(device).eval()
    g = torch.Generator().manual_seed(1)
    text = (
        torch.randn(2, PREFIX, D_TEXT, generator=g).to(device),
        torch.ones(2, PREFIX, dtype=torch.bool, device=device),
    )
    prompt = torch.randint(0, VOCAB - 1, (2, PREFIX), generator=g).to(device)
    fns: dict[str, Callable[[], object]] = {"transformers": lambda: generate_theirs(theirs, prompt, n)}
    warmup_s = {}
    for mode in modes:
        start = time.perf_counter()
        generate_ours(ours, text, 8, mode)  # compiles (compile) / captures (cuda_graph) for this batch size
        warmup_s[mode] = time.perf_counter() - start
        fns[f"ours_{mode}"] = lambda mode=mode: generate_ours(ours, text, n, mode)
    generate_theirs(theirs, prompt, 8)
    same_tokens = {
        m: torch.equal(generate_ours(ours, text, 64, m), generate_ours(ours, text, 64, "eager")) for m in modes
    }
    rows = alternate(fns, repeats, device)
    for row in rows.values():
        row["tokens_per_s"] = n / row["seconds"]
    base = rows["transformers"]["tokens_per_s"]
    return {
        "shape": shape.name,
        "tokens": n,
        "threads": threads,
        "rows": rows,
        "ratio": {m: rows[f"ours_{m}"]["tokens_per_s"] / base for m in modes},
        "warmup_s": warmup_s,
        # What "auto" resolves to for one generation of n positions x 2 rows in a fresh process (the work it counts).
        "auto_picks": resolve_mode(ours, "auto", device, row_steps=2 * n),
        "auto_compiles_after_row_steps": COMPILE_PAYS_AFTER_ROW_STEPS if device.type == "cpu" else None,
        "same_tokens_as_eager": same_tokens,
        "compile_fallback": getattr(ours.__dict__.get("_compiled_step"), "failed", None),
    }


# ---------------------------------------------------------------------------------------------------- training


def bench_training(shape: Shape, batch: int, positions: int, threads: int, repeats: int, device: torch.device) -> dict:
    from transformers import Mamba2ForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ours = MusicLM(shape.ours()).to(device).train()
    theirs = Mamba2ForCausalLM(shape.theirs()).to(device).train()
    g = torch.Generator().manual_seed(2)
    audio = positions - PREFIX + 1  # PREFIX text positions + audio tokens, less the last token, = positions
    tokens = torch.randint(0, VOCAB - 1, (batch, 1, audio), generator=g).to(device)
    hidden = torch.randn(batch, PREFIX, D_TEXT, generator=g).to(device)
    mask = torch.ones(batch, PREFIX, dtype=torch.bool, device=device)
    ids = torch.randint(0, VOCAB - 1, (batch, positions), generator=g).to(device)

    def step_ours() -> None:
        ours.zero_grad(set_to_none=True)
        logits = ours(tokens, hidden, mask)
        lm_loss(logits, tokens, SPECIAL, 0.0).backward()

    def step_theirs() -> None:
        theirs.zero_grad(set_to_none=True)
        theirs(ids, labels=ids).loss.backward()

    step_ours(), step_theirs()  # warm-up
    rows = alternate({"transformers": step_theirs, "ours": step_ours}, repeats, device)
    for row in rows.values():
        row["tokens_per_s"] = batch * positions / row["seconds"]
    return {
        "shape": shape.name,
        "batch": batch,
        "positions": positions,
        "threads": threads,
        "rows": rows,
        "ratio": rows["ours"]["tokens_per_s"] / rows["transformers"]["tokens_per_s"],
    }


# ---------------------------------------------------------------------------------------------------- CUDA, paper size


def hbm_bandwidth(explicit: float | None) -> float | None:
    if explicit:
        return explicit
    name = torch.cuda.get_device_name()
    return next((bw for key, bw in HBM_BYTES_PER_S.items() if key in name), None)


@torch.no_grad()
def bench_paper_latency(n: int, bandwidth: float | None, device: torch.device) -> dict:
    """Per-token latency of the paper-size prefix_mamba in bf16 (2 rows, CUDA graphs) vs the bandwidth floor."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(PAPER.ours(), d_text=768)
    model = MusicLM(cfg).to(device=device, dtype=torch.bfloat16).eval()
    text = (
        torch.randn(2, PREFIX, 768, device=device, dtype=torch.bfloat16),
        torch.ones(2, PREFIX, dtype=torch.bool, device=device),
    )
    _, cache = model.start(*text, max_new=8)
    mode = cache.extra["decoder"].mode
    generate_ours(model, text, 8, "auto")
    seconds, _ = timed(lambda: generate_ours(model, text, n, "auto"), device)
    # Every weight is read once per step except the embedding tables (B rows) and the text projection (prefix only).
    weights = sum(
        p.numel() * p.element_size()
        for name, p in model.named_parameters()
        if not name.startswith(("emb.", "text_proj."))
    )
    state = sum(
        t.numel() * t.element_size()
        for s in cache.states
        for st in s
        if st is not None
        for t in (st.conv_state, st.ssm_state)
    )
    per_token_bytes = weights + 2 * state  # every weight read once per step; states read and written
    row = {
        "mode": mode,
        "tokens": n,
        "ms_per_token": 1e3 * seconds / n,
        "weight_bytes": weights,
        "state_bytes": state,
        "device": torch.cuda.get_device_name(),
    }
    if bandwidth:
        floor_ms = 1e3 * per_token_bytes / bandwidth
        row |= {
            "hbm_bytes_per_s": bandwidth,
            "floor_ms_per_token": floor_ms,
            "of_floor": floor_ms / row["ms_per_token"],
        }
    return row


# ---------------------------------------------------------------------------------------------------- report


def print_report(result: dict) -> None:
    print(f"parity (one mixer, their weights): {result['parity']}")
    for row in result["generation"]:
        print(f"\ngeneration, {row['shape']}, {row['tokens']} tokens, batch 2 rows, {row['threads']} thread(s)")
        for name, r in row["rows"].items():
            print(f"  {name:<18} {r['tokens_per_s']:>9.1f} tokens/s   peak +{r['peak_mib']:.0f} MiB")
        ratios = ", ".join(f"{m} {v:.2f}x" for m, v in row["ratio"].items())
        print(
            f"  ours / transformers: {ratios}; warm-up s {row['warmup_s']}; same tokens {row['same_tokens_as_eager']}"
        )
        if row["auto_compiles_after_row_steps"]:
            print(
                f"  decode 'auto' here: {row['auto_picks']} (compiles once a process has started "
                f"{row['auto_compiles_after_row_steps']:,} rows x positions)"
            )
    for row in result["training"]:
        print(
            f"\ntraining fwd+bwd, {row['shape']}, batch {row['batch']} x {row['positions']}, {row['threads']} thread(s)"
        )
        for name, r in row["rows"].items():
            print(f"  {name:<18} {r['tokens_per_s']:>9.0f} tokens/s   peak +{r['peak_mib']:.0f} MiB")
        print(f"  ours / transformers: {row['ratio']:.2f}x")
    if result.get("paper_latency"):
        print(f"\nCUDA, paper size: {result['paper_latency']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="200 tokens, 3 repeats, generation at 1 thread, the small shape only"
    )
    parser.add_argument("--tokens", type=int, help="tokens per generation (default 500, quick 200)")
    parser.add_argument("--repeats", type=int, help="timed runs per implementation (default 5, quick 3)")
    parser.add_argument(
        "--gen-threads", type=int, nargs="+", help="thread counts for generation (default 1 2, quick 1)"
    )
    parser.add_argument("--train-threads", type=int, default=2, help="threads for training (default 2)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile decode mode")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hbm-bandwidth", type=float, help="bytes/s for the CUDA floor (default: by device name)")
    parser.add_argument("--out", default="results/bench/vs_transformers.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()  # its per-call notes on missing kernels and padding side
    device = torch.device(args.device)
    n = args.tokens or (200 if args.quick else 500)
    repeats = args.repeats or (3 if args.quick else 5)
    gen_threads = args.gen_threads or ([1] if args.quick else [1, 2])
    modes = decode_modes(not args.no_compile, device)
    start = time.perf_counter()

    parity = {shape.name: mixer_parity(shape, device) for shape in (SMALL, PAPER_LIKE)}
    if not all(p["ok"] for p in parity.values()):
        raise SystemExit(f"our mixer and transformers' disagree with the same weights: {parity}")
    generation = [bench_generation(SMALL, n, t, repeats, modes, device) for t in gen_threads]
    training = [bench_training(SMALL, 4, 1024, args.train_threads, repeats, device)]
    if not args.quick:
        generation.append(bench_generation(PAPER_LIKE, n // 5, gen_threads[0], repeats, modes, device))
        training.append(bench_training(PAPER_LIKE, 1, 1024, args.train_threads, max(1, repeats // 2), device))
    paper_latency = None
    if device.type == "cuda":
        paper_latency = bench_paper_latency(n, hbm_bandwidth(args.hbm_bandwidth), device)
    result = {
        "benchmark": "vs_transformers",
        "quick": args.quick,
        "command": "python bench/bench_vs_transformers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "shapes": {s.name: dataclasses.asdict(s) for s in (SMALL, PAPER_LIKE)},
        "sampling": {"guidance": GUIDANCE, "temperature": TEMPERATURE, "top_k": TOP_K, "rows": 2},
        "parity": parity,
        "generation": generation,
        "training": training,
        "paper_latency": paper_latency,
        "wall_s": time.perf_counter() - start,
        "device": str(device),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "libraries": library_versions(),
    }
    print_report(result)
    write_json(args.out, result)
    print(f"\nwrote {args.out} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
