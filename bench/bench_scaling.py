"""The paper test profile at 1x, 4x and 16x its corpus: wall time, CPU time and peak memory per stage, and whether
each grows linearly with the corpus.

    python bench/bench_scaling.py [--scales 1 4 16] [--cores 2] [--out bench/results/scaling.json]

Each scale is a fresh workspace (scripts/paper_test/workspace.py) whose local server synthesises the MTG-Jamendo
corpus `scale` times (scripts/paper_test/corpus.py `scaled_tracks`: the 6 tracks copied with their own audio, in
the same two archives); then `snakemake --cores N` runs the whole DAG. Only the corpus scales: the MusicCaps
evaluation captions, the training steps (train_lm.max_steps, train_refiner.steps) and the generated clips are the
profile's, so train_lm, train_refiner, generate and evaluate are expected to stay flat, and the data stages (fetch,
select, segment, caption, codec, tokenize, text_cache) to grow.

Per stage (an `ssmttm` verb: every job of the DAG is one), measured inside each job's process by a
sitecustomize hook on PYTHONPATH: wall and CPU seconds summed over the stage's jobs, and the peak resident memory of
any of its jobs (getrusage ru_maxrss of the `ssmttm` process, or of its largest child). Growth: the exponent b of
value ~ scale^b, a least-squares fit over the scales in log-log space, and the ratio to the 1x value; "linear" for
0.8 <= b <= 1.2, "flat" below 0.3, "sublinear" and "superlinear" otherwise. The JSON (and the printed table) say
the machine's load average when each scale ran: on a shared machine the wall times are not clean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.paper_test import workspace  # noqa: E402

LOG_ENV = "SSMTTM_BENCH_JOBS_LOG"
# Snakemake puts its own interpreter's folder first on the jobs' PATH, so a wrapper `ssmttm` earlier on PATH is never
# called; a sitecustomize on PYTHONPATH runs inside every `ssmttm` process instead and, at exit, appends one JSON line:
# the verb, wall seconds since the interpreter started, CPU seconds and peak RSS of the process (and its children).
SITECUSTOMIZE = """import atexit, json, os, resource, sys, time
_started = time.monotonic()


def _record():
    if not os.path.basename(sys.argv[0] or "").startswith("ssmttm") or len(sys.argv) < 2:
        return
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {"verb": sys.argv[1], "args": sys.argv[2:], "wall_s": time.monotonic() - _started,
              "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
              "max_rss_mb": max(own.ru_maxrss, children.ru_maxrss) / 1024}
    with open(os.environ["SSMTTM_BENCH_JOBS_LOG"], "a") as log:
        log.write(json.dumps(record) + "\\n")


atexit.register(_record)
"""


def growth(scales: list[int], values: list[float]) -> dict[str, object]:
    """Exponent b of value ~ scale^b (least squares in log-log), ratios to the first scale, and a verdict."""
    pairs = [(math.log(s), math.log(v)) for s, v in zip(scales, values, strict=True) if v > 0]
    ratios = {f"{s}x": round(v / values[0], 3) if values[0] else None for s, v in zip(scales, values, strict=True)}
    if len(pairs) < 2:
        return {"exponent": None, "ratio_to_1x": ratios, "verdict": "not computed: fewer than two scales"}
    mean_x = sum(x for x, _ in pairs) / len(pairs)
    mean_y = sum(y for _, y in pairs) / len(pairs)
    b = sum((x - mean_x) * (y - mean_y) for x, y in pairs) / sum((x - mean_x) ** 2 for x, _ in pairs)
    verdict = "flat" if b < 0.3 else "sublinear" if b < 0.8 else "linear" if b <= 1.2 else "superlinear"
    return {"exponent": round(b, 3), "ratio_to_1x": ratios, "verdict": verdict}


def per_stage(records: list[dict]) -> dict[str, dict[str, float]]:
    stages: dict[str, dict[str, float]] = defaultdict(
        lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0}
    )
    for record in records:
        stage = stages[record["verb"]]
        stage["jobs"] += 1
        stage["wall_s"] = round(stage["wall_s"] + record["wall_s"], 2)
        stage["cpu_s"] = round(stage["cpu_s"] + record["cpu_s"], 2)
        stage["max_rss_mb"] = round(max(stage["max_rss_mb"], record["max_rss_mb"]), 1)
    return dict(sorted(stages.items()))


def run_scale(scale: int, root: Path, standins: Path, cores: int, port: int) -> dict:
    scratch = root / f"x{scale}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    hook_dir = scratch / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    jobs_log = scratch / "jobs.jsonl"
    load_before = os.getloadavg()
    with workspace.served(scratch, scale=scale, port=port) as served_root:
        folder = workspace.make_workspace(scratch / "workspace", served_root, standins, port=port)
        env = workspace.standin_env(standins)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH")]))
        env[LOG_ENV] = str(jobs_log)
        started = time.monotonic()
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
    (scratch / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"x{scale}: snakemake failed ({proc.returncode}); see {scratch / 'snakemake.log'}")
    records = [json.loads(line) for line in jobs_log.read_text().splitlines() if line.strip()]
    manifest = json.loads((folder / "data/tokenize/_manifest.json").read_text())
    return {
        "scale": scale,
        "tracks_served": 6 * scale,
        "clips_tokenized": manifest["rows"],
        "snakemake_wall_s": round(wall, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "stages": per_stage(records),
    }


def write_result(runs: list[dict], cores: int, out: Path) -> dict[str, dict]:
    """Growth per stage over the scales run so far; the JSON to `out`. Returns the growth fits."""
    stages = sorted({name for run in runs for name in run["stages"]})
    fits = {}
    for name in stages:
        present = [run for run in runs if name in run["stages"]]
        fits[name] = {
            measure: growth([run["scale"] for run in present], [run["stages"][name][measure] for run in present])
            for measure in ("wall_s", "cpu_s", "max_rss_mb")
        }
    result = {
        "what": "paper test profile (configs/paper-test.yaml) at N x its MTG-Jamendo corpus, snakemake --cores "
        f"{cores}, stand-in weights; per stage: jobs, summed wall and CPU seconds, peak RSS of one job",
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "scales": [run["scale"] for run in runs],
        "runs": runs,
        "growth": fits,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return fits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=REPO / "build/bench-scaling")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/scaling.json")
    parser.add_argument("--port", type=int, default=18432, help="the local server's (not make paper-test's 18431)")
    args = parser.parse_args(argv)
    scales = sorted(set(args.scales))
    args.scratch.mkdir(parents=True, exist_ok=True)
    built = args.scratch / "standins"
    standins = built if (built / "standins.json").is_file() else workspace.build_standins(args.scratch)
    runs: list[dict] = []
    for scale in scales:
        print(f"scale {scale}x: running the paper test profile ...", flush=True)
        runs.append(run_scale(scale, args.scratch, standins, args.cores, args.port))
        print(f"scale {scale}x: {runs[-1]['snakemake_wall_s']} s wall", flush=True)
        fits = write_result(runs, args.cores, args.out)  # after every scale: a later one may not finish
    stages = sorted(fits)
    header = f"{'stage':<18}" + "".join(f"{f'{s}x wall/cpu s, MB':>26}" for s in scales) + "  wall growth (b)"
    print(header)
    for name in stages:
        cells = ""
        for run in runs:
            st = run["stages"].get(name)
            cells += f"{st['wall_s']:>9.1f}/{st['cpu_s']:>7.1f} {st['max_rss_mb']:>7.0f}" if st else f"{'-':>26}"
        fit = fits[name]["wall_s"]
        cells += f"  {fit['verdict']} ({fit['exponent']})"
        print(f"{name:<18}{cells}")
    loads = ", ".join(f"{run['scale']}x: {run['load_average_before'][0]}" for run in runs)
    print(f"load average (1 min) at the start of each scale: {loads} on {os.cpu_count()} CPUs; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
