#!/usr/bin/env bash
# Run every benchmark in quick mode; each prints a table and writes JSON under results/bench/.
# Full runs: call a benchmark without --quick (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1
for bench in bench/bench_*.py; do
  echo "== $bench"
  case "$bench" in
    bench/bench_dag.py) python "$bench" ;;
    bench/bench_scaling.py) echo "skipped: the whole paper test profile at 1x/4x/16x (an hour); run it by hand" ;;
    *) python "$bench" --quick ;;
  esac
done
