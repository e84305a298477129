"""What the SIGKILL tests share (tests/test_kills.py, tests/test_kills_later_stages.py): a stage run as Snakemake runs
it (`python -m ssmttm <verb>` in the working folder), watched for its temporary output and killed on cue, and
snapshots of its outputs to compare byte for byte.
"""

from __future__ import annotations

import glob
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from ssmttm.artifacts import TMP_MARK

RATE = 16000
TRACKS = 6
CORPUS_STAGES = {  # verb -> (arguments after the verb, output folder): one shard, the workflow's paths
    "manifest": (["--out", "data/manifest"], "data/manifest"),
    "fetch": (
        ["--manifest", "data/manifest/manifest.jsonl", "--shard", "0", "--out", "data/fetch/shard-00000"],
        "data/fetch/shard-00000",
    ),
    "select": (["--fetched", "data/fetch/shard-00000", "--out", "data/select/shard-00000"], "data/select/shard-00000"),
    "segment": (
        ["--selected", "data/select/shard-00000", "--out", "data/segment/shard-00000"],
        "data/segment/shard-00000",
    ),
    "caption": (
        ["--clips", "data/segment/shard-00000", "--out", "data/caption/shard-00000"],
        "data/caption/shard-00000",
    ),
}


@dataclass(frozen=True)
class Stage:
    """One stage job: `ssmttm <verb> --params params.yaml <args>`, run in the working folder."""

    verb: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]  # what the job publishes (folders or files), relative to the working folder
    temp_folders: tuple[str, ...] = ()  # other folders it writes temporaries into (besides its outputs' folders)
    watch: tuple[str, ...] = ()  # globs of the temporaries that start its write phase (default: its outputs')

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "ssmttm", self.verb, "--params", "params.yaml", *self.args]

    @property
    def watched(self) -> tuple[str, ...]:
        return self.watch or tuple(f"{glob.escape(out)}{TMP_MARK}*" for out in self.outputs)

    @property
    def folders(self) -> list[str]:
        """Where a killed run's temporaries can stay: the outputs' folders and `temp_folders`."""
        return sorted({str(Path(out).parent) for out in self.outputs} | set(self.temp_folders))


@dataclass(frozen=True)
class Run:
    seen: float | None  # seconds until an output's temporary appeared (None: never seen)
    done: float | None  # seconds until every output existed (meaningful for a run that starts without them)
    total: float  # seconds until the end or the kill
    running: bool  # still running when killed

    @property
    def writing(self) -> float:
        """Seconds from the temporary's appearance to the outputs' (0 if no temporary was seen)."""
        if self.seen is None:
            return 0.0
        return (self.done if self.done is not None else self.total) - self.seen


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file of an output folder (or the output file) by relative path; None if the path does not exist."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    if not path.exists():
        return None
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def temporaries(root: Path, folders: list[str]) -> list[Path]:
    return [
        p for folder in folders if (root / folder).is_dir() for p in (root / folder).iterdir() if TMP_MARK in p.name
    ]


def run_stage(root: Path, stage: Stage, kill_after_tmp_s: float | None = None, timeout_s: float = 300) -> Run:
    """Run a stage, watching for a new temporary that starts its write phase (`Stage.watched`; one a killed run left
    does not count). Without `kill_after_tmp_s` it runs to the end (and must succeed); with it, it gets a SIGKILL
    that many seconds after the temporary appears (or at once if it finished first)."""

    def present() -> set[Path]:
        return {p for pattern in stage.watched for p in root.glob(pattern)}

    stale = present()
    start = time.monotonic()
    process = subprocess.Popen(stage.command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = done = None
    while process.poll() is None and time.monotonic() - start < timeout_s:
        now = time.monotonic() - start
        if seen is None and present() - stale:
            seen = now
        if done is None and seen is not None and all((root / out).exists() for out in stage.outputs):
            done = now
        if seen is not None and kill_after_tmp_s is not None and now >= seen + kill_after_tmp_s:
            break
        time.sleep(0.002)
    running = process.poll() is None
    if kill_after_tmp_s is None:
        assert process.wait(timeout=timeout_s) == 0, process.stderr.read().decode()
    else:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    process.stderr.close()
    return Run(seen, done, time.monotonic() - start, running)


def outputs(root: Path, stage: Stage) -> dict[str, dict[str, bytes] | None]:
    return {out: snapshot(root / out) for out in stage.outputs}


def kill_once(
    root: Path, stage: Stage, after_s: float, expected: dict[str, dict[str, bytes] | None]
) -> tuple[bool, bool]:
    """Kill a run `after_s` seconds after its temporary output appears; each output path must then hold nothing or
    the complete output (`expected`, from an uninterrupted run). Returns (it was still running when killed, a
    temporary was left behind)."""
    run = run_stage(root, stage, kill_after_tmp_s=after_s)
    for out, now in outputs(root, stage).items():
        assert now is None or now == expected[out], f"{stage.verb}: {out} is partial after a kill at +{after_s:.3f}s"
    return run.running, bool(temporaries(root, stage.folders))


def rerun_matches(root: Path, stage: Stage, expected: dict[str, dict[str, bytes] | None]) -> None:
    """The rerun after the kills equals the uninterrupted run byte for byte and leaves no temporary."""
    run_stage(root, stage)
    for out, now in outputs(root, stage).items():
        assert now == expected[out], f"{stage.verb}: the rerun's {out} differs from an uninterrupted run"
    assert temporaries(root, stage.folders) == []


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def make_corpus(root: Path, repo_root: Path, overrides: dict | None = None) -> None:
    """A working folder with a small local corpus (TRACKS sine tracks of 8 s at 16 kHz, file: URLs) and a
    params.yaml of one shard and 1 s clips, plus `overrides`; running the stages is left to the caller."""
    lines = ["id,url,licence,tags"]
    (root / "src").mkdir()
    t = np.arange(8 * RATE) / RATE
    for k in range(TRACKS):
        sf.write(str(root / f"src/t{k}.wav"), 0.3 * np.sin(2 * np.pi * (220 + 55 * k) * t), RATE)
        lines.append(f't{k},file:src/t{k}.wav,MIT,"{{""mood"": ""calm"", ""genre"": ""ambient""}}"')
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    corpus = {
        "corpus": {"source": "manifest", "manifest_path": "m.csv", "n_shards": 1},
        "fetch": {"cache_dir": "data/cache/fetch", "retries": 0, "allow_file_urls": True},
        "select": {"min_duration_s": 1, "max_duration_s": 60},
        "segment": {"clip_seconds": 1, "hop_seconds": 1, "min_tail_seconds": 0.5},
    }
    params = merge(merge(yaml.safe_load((repo_root / "params.yaml").read_text()), corpus), overrides or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
