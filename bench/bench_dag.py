"""Dry-run DAG of the paper profile for a 55,701-track manifest: build time and job count.

The paper corpus has 55,701 tracks; fan-out is per shard, so the DAG must stay at hundreds of jobs and build in
seconds (goal: under 30 s on a 2-core machine). The benchmark copies the workflow into a scratch folder with the
paper profile pointed at a synthetic manifest of that many tracks (the manifest is materialised, as after the
manifest stage), runs `snakemake --dry-run` three times and reports the median wall time and the job counts.

It also times the two commands a user runs on a finished project to ask "is anything out of date?": a no-op
`snakemake --dry-run` and `dvc status`, in the repository after `make demo` (or the folder given by --finished).

    python bench/bench_dag.py [--tracks 55701] [--repeats 3] [--finished .]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ssmttm.artifacts import shard_of, write_json  # noqa: E402


def make_scratch_workflow(root: Path, n_tracks: int) -> None:
    for name in ("Snakefile", "workflow"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, symlinks=False)
        else:
            shutil.copy(src, root / name)
    params = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    params["corpus"]["source"] = "manifest"
    params["corpus"]["manifest_path"] = "manifest_55701.jsonl"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    n_shards = params["corpus"]["n_shards"]
    rows = [
        {
            "id": f"track_{i:07d}",
            "url": f"https://example.invalid/{i}.mp3",
            "licence": "CC-BY-4.0",
            "source": "manifest",
            "tags": {},
            "shard": shard_of(f"track_{i:07d}", n_shards),
        }
        for i in range(n_tracks)
    ]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    (root / "manifest_55701.jsonl").write_text(text)
    (root / "data/manifest").mkdir(parents=True)
    (root / "data/manifest/manifest.jsonl").write_text(text)


def dry_run(root: Path) -> tuple[float, dict[str, int], str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--dry-run", "--cores", "16", "--quiet", "rules"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"snakemake dry-run failed:\n{proc.stdout}\n{proc.stderr}")
    counts: dict[str, int] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
        elif match:
            counts["total"] = int(match.group(2))
    return elapsed, counts, proc.stdout + proc.stderr


def noop_timings(project: Path, repeats: int) -> dict[str, object]:
    """Median wall time of a no-op `snakemake --dry-run` and `dvc status` in a finished project."""
    bin_dir = Path(sys.executable).parent
    commands = {
        "snakemake_dry_run": [str(bin_dir / "snakemake"), "--dry-run", "--cores", "2"],
        "dvc_status": [str(bin_dir / "dvc"), "status"],
    }
    out: dict[str, object] = {"project": str(project)}
    for name, cmd in commands.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
        text = proc.stdout + proc.stderr
        up_to_date = "Nothing to be done" in text or "up to date" in text
        out[name] = {"seconds_median": statistics.median(times), "seconds": times, "had_nothing_to_do": up_to_date}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=55701)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "results/bench/dag.json"))
    parser.add_argument(
        "--finished", default=str(REPO), help="a finished project (after `make demo`) to time no-ops in"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ssmttm-dag-") as scratch:
        root = Path(scratch)
        make_scratch_workflow(root, args.tracks)
        times, counts = [], {}
        for _ in range(args.repeats):
            elapsed, counts, _ = dry_run(root)
            times.append(elapsed)
    result = {
        "tracks": args.tracks,
        "profile": "paper",
        "dry_run_seconds_median": statistics.median(times),
        "dry_run_seconds": times,
        "jobs": counts,
        "goal_seconds": 30.0,
        "meets_goal": statistics.median(times) < 30.0,
    }
    finished = Path(args.finished)
    if (finished / "dvc.lock").is_file() and (finished / "data/tokenize/_manifest.json").is_file():
        result["finished_project_noop"] = noop_timings(finished, args.repeats)
    else:
        result["finished_project_noop"] = f"not measured: {finished} has no finished run (run `make demo` first)"
    write_json(args.out, result)
    print(f"{'rule':<22}{'jobs':>8}")
    for rule, count in sorted(counts.items()):
        print(f"{rule:<22}{count:>8}")
    print(
        f"dry-run DAG for {args.tracks} tracks: median {result['dry_run_seconds_median']:.2f} s over "
        f"{args.repeats} runs (goal < 30 s) -> {args.out}"
    )
    noop = result["finished_project_noop"]
    if isinstance(noop, dict):
        for name in ("snakemake_dry_run", "dvc_status"):
            entry = noop[name]
            done = entry["had_nothing_to_do"]
            print(f"no-op {name} on {noop['project']}: {entry['seconds_median']:.2f} s (nothing to do: {done})")
    else:
        print(noop)


if __name__ == "__main__":
    main()
