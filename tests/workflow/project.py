"""A tiny copy of the project that the workflow tests run for real, through Snakemake and through DVC.

`make_project` lays out a scratch repository with the project's workflow files, a copy of src/ (stage source files
are dependencies of both engines), a tiny params.yaml (3 demo tracks + 1 track whose licence is not allowed, 5 s
clips, a tiny codec, two tiny LMs, a tiny refiner, 1 s clips generated from the one test track's captions) and a
git + DVC repository with a local remote, as a user's clone would have.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from ssmttm.corpus.urls import package_url, resolve_url

DEMO_TRACKS = ["calm/calm_acoustic_1.opus", "energetic/energetic_electronic_2.opus", "happy/happy_acoustic_2.opus"]
ND_TRACK = "tender/tender_acoustic_1.opus"  # a real demo file, declared under a licence select must refuse
N_SHARDS = 2

TINY_OVERRIDES = {
    "corpus": {"source": "manifest", "manifest_path": "inputs/tiny_manifest.jsonl", "n_shards": N_SHARDS},
    "segment": {"clip_seconds": 5, "hop_seconds": 5, "max_clips_per_track": 3, "tail": "drop"},
    "codec": {
        "train": {
            "steps": 4,
            "batch_size": 2,
            "segment_s": 0.2,
            "eval_clips": 2,
            "eval_seconds": 1.0,
            "log_every": 2,
            "n_codebooks": 2,
            "codebook_size": 64,
        }
    },
    "tokenize": {"encode_window_s": 5.0, "row_group_size": 4, "valid_fraction": 0.34, "test_fraction": 0.06},
    "evaluate": {"bootstrap_resamples": 20},
    "generate": {"seconds": 1.0, "batch_size": 2, "refine_steps": 2, "top_k": 20},
    "refiner": {"unet": "tiny", "unet_overrides": {}, "primary": False},
    "train_refiner": {
        "steps": 4,
        "batch_size": 2,
        "crop_frames": 16,
        "warmup_steps": 1,
        "checkpoint_every": 2,
        "val_every": 2,
        "val_clips": 2,
        "val_timesteps": 2,
        "log_every": 1,
    },
    "lm": {
        "d_model": 32,
        "n_layers": 2,
        "d_state": 16,
        "headdim": 16,
        "chunk_size": 16,
        "n_heads": 2,
        "mlp_hidden": 64,
        "seq_len": 64,
        "codebook_size": 64,
        "special_id": 64,
        "n_codebooks": 1,
    },
    "train_lm": {
        "max_steps": 6,
        "batch_size": 2,
        "accumulate_grad_batches": 1,
        "warmup_steps": 2,
        "checkpoint_every": 3,
        "val_every": 3,
        "log_every": 1,
    },
}

PROJECT_FILES = ["Snakefile", "workflow", "profiles", "dvc.yaml", ".dvcignore", ".gitignore", "scripts/snakemake"]
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def manifest_rows() -> list[dict]:
    rows = []
    for relative in DEMO_TRACKS + [ND_TRACK]:
        track_id = Path(relative).stem
        rows.append(
            {
                "id": track_id,
                # A user's manifest names local files with file:// URLs (pkg:// is the demo source's own scheme).
                "url": resolve_url(package_url("immich_memories_music", f"tracks/{relative}")),
                "licence": "CC BY-ND 4.0" if relative == ND_TRACK else "MIT",
                "source": "manifest",
                "tags": {"mood": relative.split("/")[0], "style": track_id.split("_")[1]},
            }
        )
    return rows


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0")
    return out


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted((cwd / "logs").rglob("*.log")))
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-6000:]}{logs}")
    return output


def run_together(*cmds: list[str], cwd: Path) -> list[str]:
    """Run read-only commands (dry runs, status) side by side: each is one single-threaded Python process, so two
    of them take the time of one on a 2-core machine. Outputs in the order of `cmds`."""
    with ThreadPoolExecutor(max_workers=len(cmds)) as pool:
        return list(pool.map(lambda cmd: run(cmd, cwd), cmds))


def snakemake(*args: str) -> list[str]:
    """A bare `snakemake` as a user types it: the workflow profile is found on its own."""
    return [str(Path(sys.executable).parent / "snakemake"), "--cores", "2", *args]


def dvc(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dvc"), *args]


def make_project(repo_root: Path, folder: Path, remote: Path | None = None) -> Path:
    """A git + DVC repository holding a tiny copy of the project, committed; `remote` overrides the default one."""
    folder.mkdir(parents=True)
    for name in PROJECT_FILES:
        source, target = repo_root / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)
    params = merge(yaml.safe_load((repo_root / "params.yaml").read_text()), TINY_OVERRIDES)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "inputs").mkdir()
    with open(folder / "inputs/tiny_manifest.jsonl", "w") as handle:
        for row in manifest_rows():
            handle.write(json.dumps(row) + "\n")
    shutil.copytree(repo_root / "src", folder / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(["git", "init", "-q"], folder)
    run(dvc("init", "-q"), folder)
    shutil.copy(repo_root / ".dvc/config", folder / ".dvc/config")
    shutil.copytree(repo_root / ".dvc/plots", folder / ".dvc/plots", dirs_exist_ok=True)
    if remote is not None:
        run(dvc("remote", "add", "-f", "-d", "local", str(remote)), folder)
    commit(folder, "tiny project")
    return folder


def commit(folder: Path, message: str) -> None:
    run(["git", "add", "-A"], folder)
    run([*GIT, "commit", "-qm", message, "--allow-empty"], folder)


def set_param(folder: Path, dotted: str, value) -> None:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    section = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        section = section[key]
    section[leaf] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def tree_hashes(root: Path, folders: tuple[str, ...] = ("data", "results")) -> dict[str, str]:
    """sha256 of every versioned file (what DVC tracks: not the fetch cache, not .dvcignore'd timing logs)."""
    out = {}
    for top in folders:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or rel.startswith("data/cache/") or path.name == ".gitignore":
                continue
            if "/dvclive/" in rel or path.name.startswith("timing.") or path.name == "host.json":
                continue
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


JOB_LINE = re.compile(r"^(\w+)\s+(\d+)$")


def scheduled_jobs(output: str) -> dict[str, int]:
    """{rule: number of jobs} from the job-stats table of `snakemake --dry-run` (marker and target rules left out)."""
    jobs = {}
    for line in output.splitlines():
        match = JOB_LINE.match(line.strip())
        name = match.group(1) if match else ""
        if match and name not in ("total", "all", "default") and not name.endswith("_all"):
            jobs[match.group(1)] = int(match.group(2))
    return jobs
