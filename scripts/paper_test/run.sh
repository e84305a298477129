#!/usr/bin/env bash
# `make paper-test`: the paper profile in miniature, end to end, through Snakemake and through `dvc repro`.
#
#   bash scripts/paper_test/run.sh            (CORES=2 by default; KEEP=1 keeps build/paper-test/ from the last run)
#
# build/paper-test/ (ignored by git) holds:
#   standins/   tiny random stand-ins of every pretrained model (scripts/standins/make_all.py), with env.sh
#   served/     the tiny MTG-Jamendo and MusicCaps audio served on 127.0.0.1 (scripts/paper_test/serve.py)
#   snakemake/  workspace 1: the repository's files (tracked and not ignored), params.yaml = configs/paper-test.yaml;
#               `snakemake --cores $CORES` runs the whole DAG there
#   dvc/        workspace 2: the same files in a fresh git + DVC repository; `dvc repro` runs the DAG there
#   *.log, timings.json   stamped logs of both runs, seconds per rule / stage
# Then the versioned outputs (data/, results/) of the two workspaces are compared byte by byte.
# The server is stopped on exit, whatever happens. Nothing computed here is a result: the weights are random.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
CORES="${CORES:-2}"
SCRATCH="$ROOT/build/paper-test"
SUMMARY=("$PY" "$ROOT/scripts/paper_test/summary.py")
START=$(date +%s)

# CPU seconds (user + system) of this script's finished children so far: the work done, whatever the machine's load.
# Sets CPU_NOW. `times` must run in this shell: a pipeline or $(...) starts a subshell with its own, empty, counters.
cpu_now() {
    times > "$SCRATCH/.times"
    CPU_NOW=$(tail -n 1 "$SCRATCH/.times" |
        awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] } printf "%.0f", t }')
}

say() { printf '[paper-test %4ds] %s\n' "$(($(date +%s) - START))" "$*"; }

"$PY" "$ROOT/scripts/paper_test/make_profile.py" --check
PORT="$("$PY" "$ROOT/scripts/paper_test/make_profile.py" --port)"

mkdir -p "$SCRATCH"
if [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$SCRATCH/snakemake" "$SCRATCH/dvc"
fi

say "stand-ins -> $SCRATCH/standins"
"$PY" "$ROOT/scripts/standins/make_all.py" --out "$SCRATCH/standins" 2>&1 | grep -v "Writing model shards" || true
test -f "$SCRATCH/standins/env.sh"

say "local server on 127.0.0.1:$PORT (files -> $SCRATCH/served)"
"$PY" "$ROOT/scripts/paper_test/serve.py" --port "$PORT" --root "$SCRATCH/served" > "$SCRATCH/serve.log" 2>&1 &
SERVER=$!
stop_server() { kill "$SERVER" 2> /dev/null && wait "$SERVER" 2> /dev/null || true; }
trap stop_server EXIT
for _ in $(seq 1 600); do
    if ! kill -0 "$SERVER" 2> /dev/null; then
        cat "$SCRATCH/serve.log" >&2
        exit 1
    fi
    grep -q "^serving" "$SCRATCH/serve.log" && break
    sleep 0.5
done
grep -q "^serving" "$SCRATCH/serve.log" || { echo "the server did not start: $SCRATCH/serve.log" >&2; exit 1; }

# A workspace: the repository's files (tracked, and new ones not ignored: what the next commit holds), the test
# profile as params.yaml, the local input files params name, and models/eval -> the evaluation stand-ins.
WORKSPACE=("$PY" "$ROOT/scripts/paper_test/workspace.py" make --served "$SCRATCH/served" --standins "$SCRATCH/standins")

# shellcheck source=/dev/null
source "$SCRATCH/standins/env.sh"  # HF_HUB_CACHE, TORCH_HOME, HOME, offline flags
export PATH="$VENV/bin:$PATH" DVC_NO_ANALYTICS=1 PYTHONHASHSEED=0

status=0
say "workspace 1: snakemake --cores $CORES"
"${WORKSPACE[@]}" "$SCRATCH/snakemake"
cpu_now
t0=$(date +%s) c0=$CPU_NOW
(cd "$SCRATCH/snakemake" && ssmttm validate params.yaml && snakemake --cores "$CORES" 2>&1) |
    "${SUMMARY[@]}" stamp > "$SCRATCH/snakemake.log" || status=$?
cpu_now
SNAKEMAKE_S=$(($(date +%s) - t0)) SNAKEMAKE_CPU=$((CPU_NOW - c0))
say "snakemake: exit ${status}, ${SNAKEMAKE_S} s wall, ${SNAKEMAKE_CPU} s CPU (log: $SCRATCH/snakemake.log)"
if [ "$status" != 0 ]; then
    tail -n 30 "$SCRATCH/snakemake.log" | cut -d' ' -f2- >&2
fi

dvc_status=0
say "workspace 2: git + DVC, dvc repro"
"${WORKSPACE[@]}" --dvc "$SCRATCH/dvc"  # and a fresh git repository of it, committed
cpu_now
t0=$(date +%s) c0=$CPU_NOW
(cd "$SCRATCH/dvc" && dvc repro 2>&1) | "${SUMMARY[@]}" stamp > "$SCRATCH/dvc.log" || dvc_status=$?
cpu_now
DVC_S=$(($(date +%s) - t0)) DVC_CPU=$((CPU_NOW - c0))
say "dvc repro: exit ${dvc_status}, ${DVC_S} s wall, ${DVC_CPU} s CPU (log: $SCRATCH/dvc.log)"
if [ "$dvc_status" != 0 ]; then
    tail -n 30 "$SCRATCH/dvc.log" | cut -d' ' -f2- >&2
fi

"$PY" - "$ROOT" "$SCRATCH" "$SNAKEMAKE_S" "$DVC_S" "$status" "$dvc_status" "$SNAKEMAKE_CPU" "$DVC_CPU" << 'EOF'
import json, subprocess, sys
root, scratch, snakemake_s, dvc_s, rc_s, rc_d, cpu_s, cpu_d = *sys.argv[1:3], *map(int, sys.argv[3:])
summary = [sys.executable, f"{root}/scripts/paper_test/summary.py"]
def timings(kind, log):
    out = subprocess.run([*summary, kind, f"{scratch}/{log}"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)
result = {
    "snakemake": {"exit": rc_s, "seconds": snakemake_s, "cpu_seconds": cpu_s, "per_rule_s": timings("snakemake-timings", "snakemake.log")},
    "dvc_repro": {"exit": rc_d, "seconds": dvc_s, "cpu_seconds": cpu_d, "per_stage_s": timings("dvc-timings", "dvc.log")},
}
with open(f"{scratch}/timings.json", "w") as handle:
    json.dump(result, handle, indent=1)
for engine, info in result.items():
    per = info.get("per_rule_s") or info.get("per_stage_s")
    print(f"{engine}: exit {info['exit']}, {info['seconds']} s wall, {info['cpu_seconds']} s CPU; " + ", ".join(f"{k} {v}" for k, v in per.items()))
EOF

# Compared even when an engine stopped: what both built must agree (a stage only one of them reached shows as
# "only in"), and the exit status still fails the run.
compare_status=0
say "versioned outputs of the two engines"
"${SUMMARY[@]}" compare "$SCRATCH/snakemake" "$SCRATCH/dvc" || compare_status=$?
# What the paper's matrix must have produced (every run, the single-stage clips, the baseline, the references, the
# report's comparisons), not only that every job exited 0.
check_status=0
"$PY" "$ROOT/scripts/paper_test/check.py" "$SCRATCH/snakemake" || check_status=$?
say "done: snakemake exit $status, dvc repro exit $dvc_status, comparison exit $compare_status, check exit $check_status"
[ "$status" = 0 ] && [ "$dvc_status" = 0 ] && [ "$compare_status" = 0 ] && [ "$check_status" = 0 ]
