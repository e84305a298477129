"""Benchmark: does portable CPU mode (ssmttm.determinism) give the same bytes on every x86 CPU, and at what cost?

    python bench/bench_portable.py            # more steps, 2 timed runs per setting (about 12 minutes)
    python bench/bench_portable.py --quick    # about 3 minutes on one core

Three workloads, each run in a fresh subprocess per setting (one thread everywhere, so only the kernel choice varies):
  codec     a few steps of ssmttm.codec.train.train_codec (the demo codec's architecture, GAN on) on synthetic clips
  encode    tokenize's windowed encode of a 6 s clip with a fixed codec (codes and latents)
  lm        a few AdamW steps of ssmttm.models.lm.MusicLM (the demo prefix_simba and a cross_transformer) on seeded
            random tokens and text
Settings: native; ATEN_CPU_CAPABILITY=avx2 or =default alone; portable mode on this host; portable mode with extra
variables that make the libraries behave as on a smaller host (AVX2-only, or x86-64 baseline: oneDNN/MKL capped,
glibc's FMA math variants masked); portable mode with 2 threads. Portable runs must agree with each other across
the emulated hosts. Real other CPUs (Intel vs AMD MKL paths, cache sizes) cannot be emulated on one machine.
Prints a table and writes results/bench/portable.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "bench" / "portable.json"
RATE = 44100
DEMO_CODEC = {  # params.yaml codec.train architecture (hop 512 at 44.1 kHz)
    "encoder_dim": 4,
    "encoder_rates": [2, 4, 8, 8],
    "latent_dim": 64,
    "decoder_dim": 64,
    "decoder_rates": [8, 8, 4, 2],
    "n_codebooks": 4,
    "codebook_size": 1024,
    "codebook_dim": 8,
}
SMALLER_HOST = {  # what a host without AVX-512 would do natively (torch, oneDNN, MKL and glibc dispatch)
    "avx2_host": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX512BW,-AVX512DQ,-AVX512VL",
    },
    "x86_64_host": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA,-FMA4,-AVX",
    },
}


def settings(base: dict[str, str]) -> dict[str, tuple[dict[str, str], bool, int]]:
    """name -> (environment, portable, threads)."""
    from ssmttm.determinism import apply_portable_env

    one = {**base, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return {
        "native": (one, False, 1),
        "aten_avx2": ({**one, "ATEN_CPU_CAPABILITY": "avx2"}, False, 1),
        "aten_default": ({**one, "ATEN_CPU_CAPABILITY": "default"}, False, 1),
        "portable": (apply_portable_env(one, 1), True, 1),
        "portable@avx2_host": (apply_portable_env({**one, **SMALLER_HOST["avx2_host"]}, 1), True, 1),
        "portable@x86_64_host": (apply_portable_env({**one, **SMALLER_HOST["x86_64_host"]}, 1), True, 1),
        "portable_2threads": (apply_portable_env(one, 2), True, 2),
    }


# ----------------------------------------------------------------------------------------------- workloads (child)


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def synth(track: int, k: int, n: int):
    """A chord plus noise, (n,) float32 (numpy: written to WAV once by the parent, never computed in a child)."""
    import numpy as np

    rng = np.random.default_rng([track, k])
    t = np.arange(n) / RATE
    base = rng.uniform(110.0, 440.0)
    x = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * base * (h + 1) * t + rng.uniform(0, 6.3)) for h in range(4))
    return (x + 0.02 * rng.standard_normal(n)).astype(np.float32)


def prepare(work: Path) -> None:
    """Clips (PCM_16 WAV, clips.jsonl) and the fixed codec for the encode workload, made once."""
    import soundfile as sf
    import torch

    from ssmttm.artifacts import write_jsonl
    from ssmttm.codec import build_dac, model_identity, save_codec

    seg = work / "segment"
    (seg / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for track in range(3):
        for k in range(2):
            clip_id = f"trk{track}-{k:04d}"
            path = seg / "clips" / f"{clip_id}.wav"
            sf.write(str(path), synth(track, k, RATE), RATE, subtype="PCM_16")
            rows.append(
                dict(
                    clip_id=clip_id,
                    track_id=f"trk{track}",
                    audio_path=str(path),
                    duration_s=1.0,
                    num_samples=RATE,
                    sample_rate=RATE,
                )
            )
    write_jsonl(seg / "clips.jsonl", rows)
    sf.write(str(work / "long.wav"), synth(9, 0, 6 * RATE), RATE, subtype="PCM_16")
    torch.manual_seed(0)
    model = build_dac({**DEMO_CODEC, "sample_rate": RATE}).eval()
    (work / "codec").mkdir()
    save_codec(work / "codec", model, model_identity(model, variant="trained"))


def run_codec(work: Path, quick: bool) -> dict:
    import torch

    from ssmttm.codec.train import CodecTrainConfig, DiscriminatorConfig, train_codec

    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in DEMO_CODEC.items()}
    cfg = CodecTrainConfig(
        **arch,
        steps=3 if quick else 8,
        batch_size=2,
        segment_s=0.3,
        holdout_fraction=0.34,
        eval_clips=1,
        eval_seconds=0.5,
        discriminator=DiscriminatorConfig(fft_sizes=(512,)),
    )
    model, metrics = train_codec(cfg, [work / "segment"], seed=3, device=torch.device("cpu"))
    sd = model.state_dict()
    return {"sha256": digest(sd[k] for k in sorted(sd)), "mel_trained": metrics["heldout"]["mel_distance_trained"]}


def run_encode(work: Path, quick: bool) -> dict:
    import soundfile as sf
    import torch

    from ssmttm.codec import load_codec

    codec = load_codec(work / "codec")
    audio, _ = sf.read(str(work / "long.wav"), dtype="float32")
    reps = 2 if quick else 6  # the same clip encoded several times in a batch: more work, same codes per item
    x = torch.from_numpy(audio)[None, None].repeat(reps, 1, 1)
    codes, latents = codec.encode_windowed(x, codec.window_samples(2.0))
    return {
        "sha256": digest([codes.to(torch.int16), latents.to(torch.float16)]),  # what tokenize stores
        "codes_sha256": digest([codes.to(torch.int16)]),
        "latents_f32_sha256": digest([latents]),
    }


def run_lm(work: Path, quick: bool) -> dict:
    import torch

    from ssmttm.models.lm import LMConfig, MusicLM

    out = {}
    for backbone in ("prefix_simba", "cross_transformer"):
        cfg = LMConfig(
            backbone=backbone,
            d_model=128,
            n_layers=4 if backbone == "prefix_simba" else 2,
            d_state=32,
            headdim=32,
            chunk_size=64,
            n_heads=4,
            mlp_hidden=256,
            dropout=0.1,
            seq_len=256,
            d_text=32,
        )
        g = torch.Generator().manual_seed(7)
        torch.manual_seed(7)
        model = MusicLM(cfg).train()
        model.set_uncond(torch.zeros(1, 16, cfg.d_text), torch.ones(1, 16, dtype=torch.bool))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        for _ in range(3 if quick else 10):
            tokens = torch.randint(0, cfg.codebook_size, (4, 1, cfg.seq_len), generator=g)
            text = torch.randn(4, 16, cfg.d_text, generator=g)
            mask = torch.arange(16)[None] < torch.tensor([[16], [12], [9], [5]])
            loss, _ = model.loss(tokens, text, mask, generator=g)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sd = model.state_dict()
        out[backbone] = digest(sd[k] for k in sorted(sd))
    return {"sha256": hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest(), **out}


WORKLOADS = {"codec": run_codec, "encode": run_encode, "lm": run_lm}


def child(args: argparse.Namespace) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from ssmttm.determinism import apply_runtime_settings, cpu_description

    apply_runtime_settings(args.portable, args.threads)
    started = time.perf_counter()
    result = WORKLOADS[args.child](Path(args.work), args.quick)
    result["seconds"] = time.perf_counter() - started
    result["cpu"] = cpu_description()
    print("RESULT " + json.dumps(result))


# ----------------------------------------------------------------------------------------------- parent


def spawn(argv: list[str], env: dict[str, str], count_onednn: bool) -> tuple[dict, int | None]:
    """Run a child; returns its RESULT and (count_onednn) how many oneDNN primitives it ran (ONEDNN_VERBOSE: slow)."""
    env = {**env, "ONEDNN_VERBOSE": "1"} if count_onednn else env
    proc = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    if not count_onednn:
        return json.loads(lines[-1][7:]), None
    onednn = sum(",exec," in line for line in proc.stdout.splitlines() if line.startswith("onednn_verbose"))
    return json.loads(lines[-1][7:]), onednn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, help="timed runs per setting, fastest kept (default 1 quick, 2 full)")
    parser.add_argument("--child", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--portable", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        return prepare(Path(args.prepare))
    if args.child:
        return child(args)
    args.repeats = args.repeats or (1 if args.quick else 2)

    base = dict(os.environ)
    for key in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "GLIBC_TUNABLES"):
        base.pop(key, None)
    configs = settings(base)
    results: dict[str, dict[str, dict]] = {w: {} for w in WORKLOADS}
    with tempfile.TemporaryDirectory(prefix="ssmttm-portable-") as tmp:
        prep = subprocess.run(
            [sys.executable, __file__, "--prepare", tmp], env=configs["native"][0], capture_output=True
        )
        if prep.returncode:
            raise RuntimeError(prep.stderr.decode()[-3000:])
        for workload in WORKLOADS:
            for name, (env, portable, threads) in configs.items():
                argv = ["--child", workload, "--work", tmp, "--threads", str(threads)]
                argv += ["--portable"] * portable + ["--quick"] * args.quick
                result, onednn = spawn(argv, env, count_onednn=portable)
                times = [result["seconds"]]
                for _ in range(args.repeats - 1):  # timing noise: keep the fastest; a rerun must give the same bytes
                    again, _ = spawn(argv, env, count_onednn=False)
                    times.append(again["seconds"])
                    result["rerun_identical"] = (
                        result.get("rerun_identical", True) and again["sha256"] == result["sha256"]
                    )
                result["seconds"], result["all_seconds"] = min(times), times
                results[workload][name] = {**result, "onednn_exec_calls": onednn}
                print(f"  {workload:7s} {name:22s} {result['sha256'][:12]}  {result['seconds']:7.2f} s", flush=True)

    summary = {}
    print(f"\n{'setting':22s}" + "".join(f"{w + ' sha256':>16s}{'time':>8s}" for w in WORKLOADS) + "  oneDNN calls")
    for name in configs:
        row = f"{name:22s}"
        for w in WORKLOADS:
            r, nat = results[w][name], results[w]["native"]
            row += f"{r['sha256'][:12]:>16s}{100 * (r['seconds'] / nat['seconds'] - 1):+7.0f}%"
        calls = [results[w][name]["onednn_exec_calls"] for w in WORKLOADS]
        print(row + "  " + "/".join("-" if c is None else str(c) for c in calls))
    for w in WORKLOADS:
        portable = {n: r["sha256"] for n, r in results[w].items() if n.startswith("portable") and "threads" not in n}
        summary[w] = {
            "portable_agree_across_emulated_hosts": len(set(portable.values())) == 1,
            "native_differs_from_aten_default": results[w]["native"]["sha256"] != results[w]["aten_default"]["sha256"],
            "portable_differs_with_2_threads": results[w]["portable_2threads"]["sha256"] != portable["portable"],
            "portable_time_vs_native": round(results[w]["portable"]["seconds"] / results[w]["native"]["seconds"], 3),
            "distinct_hashes": len({r["sha256"] for r in results[w].values()}),
        }
        print(f"{w}: {summary[w]}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "quick": args.quick,
        "repeats": args.repeats,
        "cpu": results["codec"]["native"]["cpu"]["cpu_model"],
        "summary": summary,
        "settings": {
            n: {k: v for k, v in env.items() if k in (*SMALLER_HOST["avx2_host"], "MKL_CBWR", "OMP_NUM_THREADS")}
            for n, (env, _, _) in configs.items()
        },
        "results": results,
    }
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
