"""Portable CPU mode (ssmttm.determinism): the variables, the provenance, and one real cross-ISA check in subprocesses.

The real check runs a conv1d + GELU + linear model for a few AdamW steps in fresh interpreters: portable mode must give
the same bytes whatever host ISA the environment pretends (oneDNN/MKL/ATen caps, glibc's FMA variants masked), while
natively the AVX-512 (or AVX2) kernels and ATen's default kernels give different bytes on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ssmttm.determinism import (
    PORTABLE_ENV,
    apply_portable_env,
    apply_runtime_settings,
    cpu_description,
    portable_active,
)

KNOBS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "GLIBC_TUNABLES")
SMALLER_HOST = {  # what an AVX2-only x86-64 host's libraries would pick natively
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-FMA,-FMA4",
}
CHILD = """
import hashlib, sys, torch
from ssmttm.determinism import apply_runtime_settings
apply_runtime_settings(sys.argv[1] == "portable", threads=1)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv1d(4, 16, 7, padding=3), torch.nn.GELU(), torch.nn.Conv1d(16, 8, 3, stride=2))
head = torch.nn.Linear(8, 33)
opt = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=1e-2)
x, target = torch.randn(4, 4, 257), torch.arange(4 * 128) % 33
for _ in range(3):
    y = head(net(x).transpose(1, 2)).reshape(-1, 33)
    loss = torch.nn.functional.cross_entropy(y, target) + torch.tanh(y).exp().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in [*net.parameters(), *head.parameters()]))
print(torch.backends.cpu.get_cpu_capability(), digest.hexdigest())
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KNOBS}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def run_child(env: dict[str, str], mode: str) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    capability, digest = proc.stdout.split()
    return capability, digest


def test_apply_portable_env_sets_the_documented_variables():
    given = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "PATH": "/bin"}
    env = apply_portable_env(given, threads=2)
    assert given == {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "PATH": "/bin"}  # not mutated
    assert env["PATH"] == "/bin"
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["MKL_CBWR"] == "COMPATIBLE"
    assert env["ONEDNN_MAX_CPU_ISA"] == "SSE41" and env["MKL_DYNAMIC"] == "FALSE"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert all(env[k] == v for k, v in PORTABLE_ENV.items() if not k.endswith("NUM_THREADS"))
    assert apply_portable_env({})["OMP_NUM_THREADS"] == "1"
    with pytest.raises(ValueError, match="threads"):
        apply_portable_env({}, threads=0)


def test_portable_active_reads_atens_knob_only(monkeypatch):
    for key in PORTABLE_ENV:
        monkeypatch.delenv(key, raising=False)
    assert not portable_active()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert not portable_active()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", PORTABLE_ENV["ATEN_CPU_CAPABILITY"])
    assert portable_active()  # as decoding's "auto" always checked: the other knobs are apply_runtime_settings' job
    for key, value in apply_portable_env({}).items():
        monkeypatch.setenv(key, value)
    assert portable_active()


def test_cpu_description_has_the_provenance_keys():
    info = cpu_description()
    assert set(info) >= {"cpu_model", "isa_flags", "aten_cpu_capability", "mode", "env", "mkldnn_enabled"}
    assert set(info) >= {"num_threads", "torch", "deterministic_algorithms"}
    assert set(info["isa_flags"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert set(info["env"]) >= set(PORTABLE_ENV)
    assert info["mode"] in ("portable", "native") and info["num_threads"] == torch.get_num_threads()
    assert info["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_runtime_settings_refuse_an_environment_set_too_late(monkeypatch):
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this process already runs ATen's default kernels")
    before = torch.backends.mkldnn.enabled, torch.are_deterministic_algorithms_enabled()
    monkeypatch.delenv("MKL_CBWR", raising=False)
    with pytest.raises(RuntimeError, match="MKL_CBWR"):
        apply_runtime_settings(True)
    for key, value in PORTABLE_ENV.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match="before the env"):  # torch already picked its kernels in this process
        apply_runtime_settings(True)
    assert (torch.backends.mkldnn.enabled, torch.are_deterministic_algorithms_enabled()) == before


def test_portable_mode_gives_the_same_bytes_for_different_host_isas():
    here = run_child(apply_portable_env(clean_env()), "portable")
    smaller = run_child(apply_portable_env(clean_env(**SMALLER_HOST)), "portable")
    assert here == smaller and here[0] == "DEFAULT"

    native = run_child(clean_env(), "native")
    default = run_child(clean_env(ATEN_CPU_CAPABILITY="default"), "native")
    if native[0] == "DEFAULT":
        pytest.skip("this CPU has neither AVX2 nor AVX-512: native already runs ATen's default kernels")
    if native[1] == default[1]:
        pytest.skip(f"native {native[0]} and default kernels happened to agree on this CPU for this computation")
    assert native[1] != here[1]
