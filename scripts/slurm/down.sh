#!/usr/bin/env bash
# Stop the one-node Slurm that scripts/slurm/up.sh started: exactly the daemons it recorded in
# /run/ssmttm-slurm/started, newest first (slurmd, slurmctld, slurmdbd, mariadbd, munged). Root only. Jobs still
# running are cancelled first so that no job's process outlives the cluster. Idempotent: nothing recorded, nothing
# done. Configuration, accounting database and logs stay (a later up.sh reuses them).
set -euo pipefail

STATE_DIR=/run/ssmttm-slurm
WAIT_S="${SSMTTM_SLURM_WAIT_S:-60}"

die() { echo "slurm down: $*" >&2; exit 1; }
say() { echo "slurm down: $*"; }

[[ "$(id -u)" == 0 ]] || die "run as root"
if [[ ! -s "$STATE_DIR/started" ]]; then
    say "nothing to stop (up.sh started no daemon in this boot)"
    exit 0
fi

if command -v squeue >/dev/null && scontrol ping >/dev/null 2>&1; then
    jobs="$(squeue -h -o %i 2>/dev/null || true)"
    if [[ -n "$jobs" ]]; then
        say "cancelling jobs $(echo $jobs)"
        scancel $jobs || true
    fi
fi

stop() {  # name pidfile
    local name="$1" pidfile="$2"
    [[ -s "$pidfile" ]] || { say "$name: no pid file $pidfile (already stopped)"; return 0; }
    local pid
    pid="$(cat "$pidfile")"
    kill -0 "$pid" 2>/dev/null || { say "$name already stopped"; rm -f "$pidfile"; return 0; }
    say "stopping $name (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + WAIT_S))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "$name did not stop within ${WAIT_S}s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
    done
    rm -f "$pidfile"
}

tac "$STATE_DIR/started" | while read -r name pidfile; do stop "$name" "$pidfile"; done
rm -f "$STATE_DIR/started"
say "down"
