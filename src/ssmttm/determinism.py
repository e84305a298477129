"""Portable CPU mode: the same float bytes from codec training, tokenize and LM training on any x86-64 CPU.

Natively, three libraries inside torch pick their kernels by the CPU's instruction set at run time, so float results
(weights, codes) differ between an AVX-512 and an AVX2 machine although each reruns byte-identically: ATen (torch's
own kernels: elementwise, reductions, softmax, AdamW), MKL (matmul/linear and the im2col convolutions) and oneDNN
(convolutions, GELU). Portable mode pins each to one code path that every x86-64 host runs, and pins the thread count.
Not covered: a different software stack (torch wheel, glibc, numpy) or a different thread count gives other bytes.

Use: read the params (no torch import), then `os.environ.update(apply_portable_env(os.environ, threads))` before
anything imports torch, then `apply_runtime_settings(True, threads)` after; record `cpu_description()`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

PORTABLE_ENV: dict[str, str] = {
    # ATen: use the non-vectorised "default" build of every kernel (no FMA contraction, no SIMD reduction order).
    # avx2/avx512 builds give different bytes (measured), and "default" exists on every x86-64 CPU.
    "ATEN_CPU_CAPABILITY": "default",
    # MKL: conditional numerical reproducibility on the SSE2 branch. COMPATIBLE is the only branch MKL honours on
    # non-Intel CPUs (MKL_CBWR=AVX2 or AVX512 falls back to AUTO on AMD: MKL_VERBOSE shows "CNR:AUTO"), and it fixes
    # cache-size blocking and reduction order too. MKL_ENABLE_INSTRUCTIONS alone does not pin AMD's path.
    "MKL_CBWR": "COMPATIBLE",
    # oneDNN: apply_runtime_settings turns it off in torch (its JIT kernels depend on ISA and cache sizes); the cap
    # only limits whatever might still call it.
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    # Threads: ATen reductions and MKL CNR are reproducible only for a fixed thread count (work is split per thread),
    # so the count is part of the result; MKL must not lower it by itself according to the host's cores.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_DYNAMIC": "FALSE",
}
# ISA flags (/proc/cpuinfo names) that decide which kernels run natively.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
# What cpu_description reports: the knobs above plus those used to emulate a smaller host.
REPORTED_ENV = (*PORTABLE_ENV, "MKL_ENABLE_INSTRUCTIONS", "GLIBC_TUNABLES")


def apply_portable_env(environ: Mapping[str, str], threads: int = 1) -> dict[str, str]:
    """A copy of `environ` with the portable knobs set (they override what is there), for a subprocess or os.environ.

    Must take effect before torch is imported: ATen, MKL and OpenMP read these variables once, at first use.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    env = dict(environ)
    env.update(PORTABLE_ENV)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def portable_active() -> bool:
    """Whether this process runs in portable CPU mode: ATEN_CPU_CAPABILITY is set to PORTABLE_ENV's value.

    Read from the environment (no torch import, so callers may ask before torch starts). That knob is the one that
    decides whether ATen's kernels depend on the host, which is what callers such as decoding's "auto" (no host-built
    Inductor code in portable mode) need to know; `apply_runtime_settings(True)` refuses to run without it, so in a
    process that checked its mode it stands for the whole mode. `cpu_description` applies a stricter test.
    """
    return os.environ.get("ATEN_CPU_CAPABILITY") == PORTABLE_ENV["ATEN_CPU_CAPABILITY"]


def apply_runtime_settings(portable: bool, threads: int | None = None) -> None:
    """What can only be set after `import torch`; raises if portable mode's environment came too late.

    Portable: oneDNN (mkldnn) and NNPACK off (their kernels are chosen by ISA and cache size; torch then falls back to
    its own convolution on MKL), deterministic algorithms on, the thread count set. Native: only threads/determinism.
    """
    import torch

    if portable:  # checked first: a refusal changes nothing
        wanted, got = PORTABLE_ENV["ATEN_CPU_CAPABILITY"].upper(), torch.backends.cpu.get_cpu_capability()
        # Not portable_active(): this validates the mode that was asked for, MKL's knob too, and names what is missing.
        missing = [k for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR") if os.environ.get(k) != PORTABLE_ENV[k]]
        if missing:
            raise RuntimeError(f"portable CPU mode: {missing} not set; use apply_portable_env() before importing torch")
        if got != wanted:
            raise RuntimeError(f"portable CPU mode: ATen runs {got} kernels, not {wanted}: torch ran before the env")
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    if portable:
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return platform.processor() or platform.machine(), set()
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", platform.machine()), set(fields.get("flags", "").split())


def cpu_description() -> dict[str, Any]:
    """Provenance of the CPU numerics: model, ISA flags, torch's kernel level, mode, knobs in force, threads."""
    import torch

    model, flags = _cpuinfo()
    env = {k: os.environ.get(k) for k in REPORTED_ENV}
    # Stricter than portable_active(): provenance says "portable" only with every numerics knob in force (thread
    # counts aside, reported apart) and oneDNN off, so a partly set environment is recorded as native.
    portable = all(env[k] == v for k, v in PORTABLE_ENV.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    mkldnn = torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled()
    return {
        "cpu_model": model,
        "machine": platform.machine(),
        "isa_flags": {f: f in flags for f in ISA_FLAGS},
        "torch": torch.__version__,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mode": "portable" if portable and not mkldnn else "native",
        "env": env,
        "mkldnn_enabled": bool(mkldnn),
        "nnpack_enabled": bool(torch._C._get_nnpack_enabled()),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "num_threads": torch.get_num_threads(),
    }
