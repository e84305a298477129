"""Fault injection for the stages after the corpus: generate, decode, evaluate, report, train-refiner and text-cache
(bench/bench_faults.py runs it after the corpus stages).

Every case runs the real CLI (`python -m ssmttm <verb>`, as Snakemake runs it) in a working folder whose inputs are
the finished demo's artifacts (data/codec, data/tokenize, data/text_cache, the first run's final LM, the refiner,
results/generate, results/evaluate, results/lm_plot: linked, never written). Without a finished `make demo` the
part is not run, and says so.

- bad inputs: broken files, arrays and numbers; each must be refused with a clear error (exit 1 or 2, nothing written).
  An internal error (exit 70) is a crash; an exit 0 is a silent acceptance, counted as a leak (garbage published).
- kills: a SIGKILL at a seeded time of an uninterrupted run's duration; the output path must then hold nothing, an
  unfinished folder (no provenance.json, which every stage writes last; a trainer: no final/) or the complete output
  (else a leak), and the rerun must equal the uninterrupted run byte for byte (else a loss). The uninterrupted run
  is repeated right before each case, so edits to the source tree meanwhile (code versions are in provenance) never
  count.
- full disk: the output's folder on a tmpfs of half the output's size (needs root and mount; otherwise "not run"
  with the reason): one line "no space left on the device holding ...", exit 1, no output and no temporary left
  (else a leak); after the tmpfs is enlarged the same command must equal the uninterrupted run (else a loss).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ssmttm.artifacts import TMP_MARK

DEMO_INPUTS = {  # in the working folder -> in the repository (the demo's artifacts)
    "data/codec": "data/codec",
    "data/tokenize": "data/tokenize",
    "data/text_cache": "data/text_cache",
    "lm": None,  # the first run's final/ (set in `run`)
    "refiner": "results/train_refiner/final",
    "results/generate": "results/generate",
    "results/evaluate_in": "results/evaluate",
    "results/lm_plot": "results/lm_plot",
}
SMALL = {  # the demo profile made cheap enough for a benchmark (tiny refiner, few resamples, 1 s clips)
    "evaluate": {"bootstrap_resamples": 20},
    "generate": {"seconds": 1.0, "refine_steps": 2},
    "refiner": {"unet": "tiny", "unet_overrides": {}, "primary": False},
    "train_refiner": {"steps": 6, "batch_size": 2, "checkpoint_every": 2, "val_every": 3, "log_every": 1},
}
UNHASHED = ("timing.json", "timing.jsonl", "host.json")  # measurements, not part of an artifact (.dvcignore)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _ssmttm(*args: str, timeout_s: float = 900) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "ssmttm", *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    return done.returncode, done.stderr


def _last_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    return lines[-1][:240] if lines else ""


def _snapshot(path: Path) -> dict[str, bytes] | None:
    if path.is_file():
        return {path.name: path.read_bytes()}
    if not path.exists():
        return None
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in UNHASHED and "dvclive" not in p.parts
    }


def _temporaries(*folders: Path) -> list[str]:
    return [str(p) for f in folders if f.exists() for p in f.rglob("*") if TMP_MARK in p.name]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- the jobs


def _jobs(run_name: str) -> dict[str, tuple[list[str], str, tuple[str, ...]]]:
    """verb -> (arguments, output, files compared for the resuming trainer (empty: the whole output))."""
    p = ["--params", "params.yaml"]
    return {
        "generate": (
            ["generate", *p, "--checkpoint", "lm", "--codec", "data/codec", "--seconds", "1", "--seed", "3"]
            + ["--captions", "calm piano at 80 BPM", "energetic electronic drums", "--out", "out/codes.npz"],
            "out/codes.npz",
            (),
        ),
        "decode": (
            ["decode", *p, "--codec", "data/codec", "--codes", "codes.npz", "--out", "out/decoded", "--no-progress"],
            "out/decoded",
            (),
        ),
        "evaluate": (
            ["evaluate", *p, "--reference", "results/generate/reference", "--generated"]
            + [f"results/generate/{run_name}", "--out", "out/evaluate"],
            "out/evaluate",
            (),
        ),
        "report": (
            ["report", *p, "--generated", "results/generate", "--evaluate", "results/evaluate_in"]
            + ["--lm-plot", "results/lm_plot", "--codec", "data/codec", "--out", "out/report"],
            "out/report",
            (),
        ),
        "text-cache": (
            ["text-cache", *p, "--shards", "data/tokenize", "--out", "out/text_cache"],
            "out/text_cache",
            (),
        ),
        "train-refiner": (
            ["train-refiner", *p, "--shards", "data/tokenize", "--text-cache", "data/text_cache"]
            + ["--out", "out/refiner"],
            "out/refiner",
            ("final/model.safetensors", "history.jsonl", "metrics.json"),
        ),
    }


def _compare(path: Path, reference: dict[str, bytes] | None, files: tuple[str, ...]) -> bool:
    now = _snapshot(path)
    if files:
        return now is not None and reference is not None and all(now.get(f) == reference.get(f) for f in files)
    return now == reference


# ----------------------------------------------------------------------------------------------- bad inputs


def _write_bad_files() -> None:
    Path("bad").mkdir(exist_ok=True)
    Path("bad/latin1.txt").write_bytes("caf\xe9 m\xfasica tranquila\n".encode("latin-1"))
    Path("bad/empty.txt").write_text("")
    Path("bad/wrong-type.jsonl").write_text('{"caption": 42}\n')
    Path("bad/not-npz.npz").write_text("this is not an npz\n")
    np.savez("bad/zero-frames.npz", codes=np.zeros((1, 4, 0), np.int64))
    np.savez("bad/float-codes.npz", codes=np.full((1, 4, 50), 1.5, np.float32))
    np.savez("bad/out-of-range.npz", codes=np.full((1, 4, 50), 10**6, np.int64))
    np.savez("bad/nan-latents.npz", latents=np.full((1, 32, 50), np.nan, np.float32))
    Path("bad/lm").mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        Path("bad/lm", name).write_bytes(b"\x00garbage")
    Path("bad/shards").mkdir(exist_ok=True)
    Path("bad/shards/shard-00000.parquet").write_text("not parquet\n")
    Path("bad/evaluate").mkdir(exist_ok=True)
    Path("bad/evaluate/metrics.json").write_text("{not json")
    Path("bad/generated").mkdir(exist_ok=True)
    Path("bad/generated/x.wav").write_text("not audio")


def _bad_params(name: str, section: str, change: dict[str, Any]) -> str:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params[section] = {**params[section], **change}
    path = f"bad/{name}.yaml"
    Path(path).write_text(yaml.safe_dump(params))
    return path


def _bad_cases(run_name: str) -> list[tuple[str, list[str], str]]:
    """(name, argv, output that must not appear)."""
    gen = ["generate", "--params", "params.yaml", "--checkpoint", "lm", "--codec", "data/codec"]
    dec = ["decode", "--params", "params.yaml", "--codec", "data/codec", "--out", "bad-out/decoded"]
    ev = ["evaluate", "--reference", "results/generate/reference", "--out", "bad-out/evaluate"]
    rep = ["report", "--generated", "results/generate", "--lm-plot", "results/lm_plot", "--out", "bad-out/report"]
    ref = ["train-refiner", "--text-cache", "data/text_cache", "--out", "bad-out/refiner"]
    out_npz = ["--out", "bad-out/codes.npz"]
    cases = [
        ("generate: --seconds nan", [*gen, "--captions", "x", "--seconds", "nan", *out_npz]),
        ("generate: --seconds inf", [*gen, "--captions", "x", "--seconds", "inf", *out_npz]),
        ("generate: --seconds 1e12", [*gen, "--captions", "x", "--seconds", "1e12", *out_npz]),
        ("generate: --seconds -1", [*gen, "--captions", "x", "--seconds", "-1", *out_npz]),
        ("generate: captions not UTF-8", [*gen, "--captions-file", "bad/latin1.txt", "--seconds", "1", *out_npz]),
        ("generate: empty captions file", [*gen, "--captions-file", "bad/empty.txt", "--seconds", "1", *out_npz]),
        ("generate: JSONL caption not a string", [*gen, "--captions-file", "bad/wrong-type.jsonl", *out_npz]),
        ("generate: checkpoint of garbage", [*gen[:3], "--checkpoint", "bad/lm", "--captions", "x", *out_npz]),
        ("generate: missing checkpoint", [*gen[:3], "--checkpoint", "bad/none", "--captions", "x", *out_npz]),
        ("decode: codes with zero frames", [*dec, "--codes", "bad/zero-frames.npz"]),
        ("decode: non-integer codes", [*dec, "--codes", "bad/float-codes.npz"]),
        ("decode: codes out of range", [*dec, "--codes", "bad/out-of-range.npz"]),
        ("decode: latents all NaN", [*dec, "--latents", "bad/nan-latents.npz"]),
        ("decode: not an npz", [*dec, "--codes", "bad/not-npz.npz"]),
        ("decode: missing file", [*dec, "--codes", "bad/none.npz"]),
        ("evaluate: missing generated folder", [*ev, "--generated", "bad/none"]),
        ("evaluate: generated WAV not audio", [*ev, "--generated", "bad/generated"]),
        (
            "evaluate: bootstrap_resamples 0",
            [*ev, "--params", _bad_params("resamples0", "evaluate", {"bootstrap_resamples": 0}), "--generated"]
            + [f"results/generate/{run_name}"],
        ),
        ("report: metrics.json not JSON", [*rep, "--evaluate", "bad/evaluate"]),
        ("report: missing evaluate folder", [*rep, "--evaluate", "bad/none"]),
        ("train-refiner: shard not parquet", [*ref, "--shards", "bad/shards"]),
        ("train-refiner: missing shards", [*ref, "--shards", "bad/none"]),
        (
            "train-refiner: infinite learning rate",
            [*ref, "--shards", "data/tokenize", "--params", _bad_params("lr-inf", "train_refiner", {"lr": "inf"})],
        ),
        ("text-cache: shard not parquet", ["text-cache", "--shards", "bad/shards", "--out", "bad-out/text_cache"]),
        ("text-cache: missing shards", ["text-cache", "--shards", "bad/none", "--out", "bad-out/text_cache"]),
    ]
    for name, change in (
        ("guidance_scale nan", ("generate", "guidance_scale", float("nan"))),
        ("seed 2**70", (None, "seed", 2**70)),
    ):
        params = yaml.safe_load(Path("params.yaml").read_text())
        section, key, value = change
        (params[section] if section else params)[key] = value
        path = f"bad/{key}.yaml"
        Path(path).write_text(yaml.safe_dump(params))
        cases.append(
            (f"generate: params {name}", [*gen, "--params", path, "--captions", "x", "--seconds", "1", *out_npz])
        )
    return [(name, argv, argv[argv.index("--out") + 1]) for name, argv in cases]


def _run_bad_inputs(run_name: str) -> list[dict[str, Any]]:
    _write_bad_files()
    rows = []
    for name, argv, out in _bad_cases(run_name):
        code, stderr = _ssmttm(*argv)
        written = Path(out).exists()
        rows.append(
            {
                "case": name,
                "exit": code,
                "crash": code not in (0, 1, 2),
                "silently_accepted": code == 0,
                "output_written": written,
                "message": _last_line(stderr),
            }
        )
        if written:
            _remove(Path(out))
    return rows


# ----------------------------------------------------------------------------------------------- kills, full disk


def _reference(argv: list[str], out: str) -> tuple[dict[str, bytes] | None, float]:
    """An uninterrupted run's output and seconds, taken right before a case: other work on the source tree (code
    versions are part of provenance) must not count as a difference."""
    _remove(Path(out))
    start = time.perf_counter()
    _ssmttm(*argv)
    return _snapshot(Path(out)), time.perf_counter() - start


def _looks_complete(path: Path, files: tuple[str, ...]) -> bool:
    """What a reader would take for a finished output: a file, a folder with its provenance.json (every stage
    writes it last; a folder without one is unfinished, as a resumable stage leaves it), or a trainer's final
    artifact."""
    if files:
        return (path / files[0]).exists()
    return path.is_file() or (path / "provenance.json").is_file()


def _kill_case(verb: str, argv: list[str], out: str, files: tuple[str, ...]) -> dict:
    reference, duration = _reference(argv, out)
    rng = random.Random(f"faults-later-{verb}")
    leaks = crashes = 0
    for fraction in (rng.uniform(0.3, 0.9),):
        _remove(Path(out))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "ssmttm", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(fraction * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        leaks += _looks_complete(Path(out), files) and not _compare(Path(out), reference, files)
    code, stderr = _ssmttm(*argv)
    crashes += code not in (0, 1, 2)
    equal = code == 0 and _compare(Path(out), reference, files)
    left = _temporaries(Path(out).parent)
    return {
        "verb": verb,
        "kills": 1,
        "rerun_exit": code,
        "rerun_equals_uninterrupted": equal,
        "temporaries_after_rerun": len(left),
        "leaks": leaks + len(left),
        "crashes": crashes,
        "losses": int(not equal),
        "message": _last_line(stderr) if code else "",
    }


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "not run: mounting a small tmpfs needs root"
    probe = Path("mount-probe")
    probe.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
    if done.returncode != 0:
        return f"not run: mount -t tmpfs failed: {done.stderr.decode().strip()[:200]}"
    subprocess.run(["umount", str(probe)], check=True)
    return None


def _full_disk_case(verb: str, argv: list[str], out: str, files: tuple[str, ...]) -> dict:
    reference, _ = _reference(argv, out)
    size = sum(len(b) for b in (reference or {}).values())
    _remove(Path(out))
    disk = Path(out).parent / "disk"
    disk.mkdir(parents=True, exist_ok=True)
    moved = str(disk / Path(out).name)
    argv = [moved if a == out else a for a in argv]
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={max(size // 2, 4096)}", "tmpfs", str(disk)], check=True)
    try:
        code, stderr = _ssmttm(*argv)
        message = _last_line(stderr)
        clear = code == 1 and message.startswith("error: no space left on the device holding ")
        looks_complete = _looks_complete(Path(moved), files)
        left = _temporaries(disk)
        subprocess.run(["mount", "-o", "remount,size=512m", str(disk)], check=True)
        rerun_code, rerun_err = _ssmttm(*argv)
        equal = rerun_code == 0 and _compare(Path(moved), reference, files)
        left_after = _temporaries(disk)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
    return {
        "verb": verb,
        "exit": code,
        "message": message,
        "clear_one_line": clear,
        "crashes": int(code not in (0, 1, 2)) + int(rerun_code not in (0, 1, 2)),
        "leaks": int(looks_complete) + len(left) + len(left_after),
        "losses": int(not equal),
        "rerun_equals_uninterrupted": equal,
        "rerun_message": _last_line(rerun_err) if rerun_code else "",
    }


# ----------------------------------------------------------------------------------------------- the part


def _link_inputs(repo: Path, run_name: str) -> str | None:
    sources = {**DEMO_INPUTS, "lm": f"results/train_lm/{run_name}/final"}
    missing = [s for s in sources.values() if not (repo / s).exists()]
    if missing:
        return f"not run: needs a finished `make demo` ({', '.join(missing)} missing)"
    for here, there in sources.items():
        Path(here).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(repo / there, here)
    return None


def run_later_stages(repo: Path, workdir: Path) -> dict[str, Any]:
    """Run every later-stage case in `workdir` (made current for the run); the part's result."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    run_name = next(iter(params.get("runs") or {"prefix_simba": {}}))
    previous = Path.cwd()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    try:
        why_not = _link_inputs(repo, run_name)
        if why_not:
            return {"not_run": why_not}
        Path("params.yaml").write_text(yaml.safe_dump(_merge(params, SMALL)))
        jobs = _jobs(run_name)
        durations, first_exits, first_messages = {}, {}, {}
        for verb, (argv, out, _files) in jobs.items():
            start = time.perf_counter()
            first_exits[verb], stderr = _ssmttm(*argv)
            durations[verb] = round(time.perf_counter() - start, 2)
            first_messages[verb] = _last_line(stderr) if first_exits[verb] else ""
            if verb == "generate" and first_exits[verb] == 0:
                shutil.copyfile(out, "codes.npz")  # decode's input
        bad = _run_bad_inputs(run_name)
        kills = [
            _kill_case(verb, argv, out, files) for verb, (argv, out, files) in jobs.items() if first_exits[verb] == 0
        ]
        mount_problem = _can_mount()
        full_disk: list[dict[str, Any]] | str = mount_problem or [
            _full_disk_case(verb, argv, out, files)
            for verb, (argv, out, files) in jobs.items()
            if verb in ("generate", "decode", "train-refiner", "text-cache") and first_exits[verb] == 0
        ]
    finally:
        os.chdir(previous)
    disk_rows = full_disk if isinstance(full_disk, list) else []
    counts = {
        "cases": len(bad) + len(kills) + len(disk_rows) + len(jobs),
        "crashes": sum(r["crash"] for r in bad)
        + sum(r["crashes"] for r in kills + disk_rows)
        + sum(code not in (0, 1, 2) for code in first_exits.values()),
        "leaks": sum(r["silently_accepted"] or r["output_written"] for r in bad) + sum(r["leaks"] for r in kills),
        "losses": sum(r["losses"] for r in kills + disk_rows) + sum(code != 0 for code in first_exits.values()),
        "bad_inputs": len(bad),
        "bad_inputs_refused_clearly": sum(r["exit"] in (1, 2) and not r["output_written"] for r in bad),
        "silently_accepted": sum(r["silently_accepted"] for r in bad),
        "kill_cases": len(kills),
        "full_disk_cases": len(disk_rows),
        "full_disk_clear": sum(r["clear_one_line"] for r in disk_rows),
    }
    counts["leaks"] += sum(r["leaks"] for r in disk_rows)
    return {
        "counts": counts,
        "uninterrupted_exit_codes": first_exits,
        "uninterrupted_seconds": durations,
        "uninterrupted_messages": first_messages,
        "bad_inputs": bad,
        "kills": kills,
        "full_disk": full_disk,
    }


def print_later(part: dict[str, Any]) -> None:
    if "not_run" in part:
        print(f"later stages: {part['not_run']}")
        return
    for row in part["bad_inputs"]:
        mark = "ok " if row["exit"] in (1, 2) and not row["output_written"] else "BAD"
        print(f"{mark} {row['case']:<42} exit {row['exit']}: {row['message'][:100]}")
    for row in part["kills"]:
        mark = "ok " if not (row["leaks"] or row["losses"] or row["crashes"]) else "BAD"
        print(f"{mark} kill {row['verb']:<14} rerun equal: {row['rerun_equals_uninterrupted']} {row['message'][:80]}")
    if isinstance(part["full_disk"], str):
        print(f"full disk: {part['full_disk']}")
    else:
        for row in part["full_disk"]:
            mark = "ok " if row["clear_one_line"] and not (row["leaks"] or row["losses"]) else "BAD"
            print(
                f"{mark} full disk {row['verb']:<14} {row['message'][:90]}; "
                f"rerun equal {row['rerun_equals_uninterrupted']}"
            )
    print(f"later stages: {json.dumps(part['counts'])}")
