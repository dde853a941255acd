#!/usr/bin/env bash
# A processing cluster on this machine (127.0.0.1), to run the wavegen pipeline on.
#
#   scripts/cluster.sh dask start    # scheduler + workers; LAST line = the Beam flags
#   scripts/cluster.sh dask status   # exit 0 only while it is up; prints its dashboard URL
#   scripts/cluster.sh dask stop     # kills every process start started (idempotent)
#
#   python -m beam_pipelines.preprocess --input=SONGS --output_dir=OUT \
#       $(scripts/cluster.sh dask start | tail -1)
#
# dask: a dask.distributed scheduler and WAVEGEN_DASK_WORKERS worker processes (1 thread
# each) started from the project's .venv, run through beam_pipelines.dask_runner.
# spark, flink: refused. Beam's Spark and Flink job servers (the Java side of those
# runners) are not served by the Maven Central this project can reach for the pinned
# apache-beam (scripts/probe-job-servers.sh asks); docs/cluster.md has the details and
# recipes for real clusters.
#
# Logs and pid files: $WAVEGEN_CLUSTER_DIR/<name>/ (default .cluster/<name>/).
# Ports (override if taken): WAVEGEN_DASK_PORT (18786), WAVEGEN_DASK_DASHBOARD_PORT (18787).
# Missing Python packages (dask, distributed) are installed on first use by
# `make cluster-deps`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WAVEGEN_VENV:-$ROOT/.venv}"
CLUSTER_DIR="${WAVEGEN_CLUSTER_DIR:-$ROOT/.cluster}"
DASK_PORT="${WAVEGEN_DASK_PORT:-18786}"
DASK_DASHBOARD_PORT="${WAVEGEN_DASK_DASHBOARD_PORT:-18787}"
DASK_WORKERS="${WAVEGEN_DASK_WORKERS:-2}"
START_TIMEOUT_S="${WAVEGEN_CLUSTER_START_TIMEOUT:-90}"

die() { echo "cluster.sh: $*" >&2; exit 2; }

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

refused() {  # spark | flink
    local beam
    beam="$(sed -n 's/^apache-beam==//p' "$ROOT/requirements.lock")"
    die "$1 is not available here: Maven Central serves no Beam $1 job server for" \
        "apache-beam $beam (scripts/probe-job-servers.sh; see docs/cluster.md); use 'dask'"
}

# --- process bookkeeping -------------------------------------------------------------

pid_alive() {  # pidfile -> 0 if the process it names runs and is one of ours
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$2"
}

launch() {  # name logfile command... : starts a detached process, records its pid
    local name="$1" logfile="$2"
    shift 2
    # setsid + redirections: the process outlives this script and holds no pipe of
    # the caller's (so `$(cluster.sh dask start | tail -1)` returns).
    setsid "$@" > "$logfile" 2>&1 < /dev/null &
    echo $! > "$DIR/$name.pid"
}

stop_all() {  # kills each process named by a pid file in $DIR, TERM then KILL
    local f pid i
    shopt -s nullglob
    for f in "$DIR"/*.pid; do
        pid="$(cat "$f")"
        if pid_alive "$f" "$MATCH"; then
            kill -TERM "$pid" 2>/dev/null || true
            for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
        rm -f "$f"
    done
}

# --- dask -------------------------------------------------------------------------------

dask_identity() {  # prints "n_workers" from the scheduler's JSON, or fails
    "$VENV/bin/python" - "$DASK_DASHBOARD_PORT" <<'EOF'
import json, sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/json/identity.json"
with urllib.request.urlopen(url, timeout=3) as r:
    print(json.load(r)["n_workers"])
EOF
}

dask_up() {  # 0 when every process runs and all workers joined the scheduler
    local i n
    pid_alive "$DIR/scheduler.pid" "$MATCH" || return 1
    for i in $(seq "$DASK_WORKERS"); do pid_alive "$DIR/worker$i.pid" "$MATCH" || return 1; done
    n="$(dask_identity 2>/dev/null)" || return 1
    [[ "$n" == "$DASK_WORKERS" ]]
}

dask_flags() {
    echo "--runner=beam_pipelines.dask_runner.DaskRunner" \
         "--dask_client_address=tcp://127.0.0.1:$DASK_PORT"
}

dask_start() {
    if dask_up; then
        echo "dask cluster already up: scheduler tcp://127.0.0.1:$DASK_PORT"
        echo "http://127.0.0.1:$DASK_DASHBOARD_PORT"
        dask_flags
        return
    fi
    stop_all  # leftovers of a half-started cluster
    "$VENV/bin/python" -c 'import distributed' 2>/dev/null || make -C "$ROOT" cluster-deps >&2
    export PATH="$VENV/bin:$PATH"
    launch scheduler "$DIR/scheduler.log" "$VENV/bin/dask" scheduler --host 127.0.0.1 \
        --port "$DASK_PORT" --dashboard-address "127.0.0.1:$DASK_DASHBOARD_PORT"
    local i
    for i in $(seq "$DASK_WORKERS"); do
        launch "worker$i" "$DIR/worker$i.log" "$VENV/bin/dask" worker \
            "tcp://127.0.0.1:$DASK_PORT" --name "worker$i" --host 127.0.0.1 \
            --nthreads 1 --nworkers 1 --no-nanny --dashboard-address 127.0.0.1:0 \
            --local-directory "$DIR/worker$i"
    done
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until dask_up; do
        if (( SECONDS > deadline )); then
            local logs
            logs="$(tail -n 3 "$DIR"/*.log 2>/dev/null | tr '\n' ' ' | cut -c1-400)"
            stop_all
            die "dask cluster not up after ${START_TIMEOUT_S}s (ports $DASK_PORT," \
                "$DASK_DASHBOARD_PORT taken?): $logs"
        fi
        sleep 0.5
    done
    echo "dask cluster up: scheduler tcp://127.0.0.1:$DASK_PORT, $DASK_WORKERS workers," \
         "logs in $DIR"
    echo "http://127.0.0.1:$DASK_DASHBOARD_PORT"
    dask_flags
}

dask_status() {
    if dask_up; then
        echo "dask cluster up: scheduler tcp://127.0.0.1:$DASK_PORT, $DASK_WORKERS workers"
        echo "http://127.0.0.1:$DASK_DASHBOARD_PORT"
    else
        echo "dask cluster down (or not all $DASK_WORKERS workers joined); logs in $DIR" >&2
        return 1
    fi
}

# --- main -------------------------------------------------------------------------------

[[ $# -eq 2 ]] || usage
name="$1" action="$2"
case "$name" in
    dask) MATCH="dask" ;;
    spark|flink) refused "$name" ;;
    *) usage ;;
esac
DIR="$CLUSTER_DIR/$name"
mkdir -p "$DIR"
case "$action" in
    start) dask_start ;;
    status) dask_status ;;
    stop) stop_all; echo "$name cluster stopped" ;;
    *) usage ;;
esac
