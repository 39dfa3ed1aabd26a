#!/usr/bin/env bash
# A Ray cluster on this machine: one head and N worker nodes, all on 127.0.0.1.
#
#   cluster/local.sh up [N]        head + N workers (default 2), 1 CPU each (LAKEFLOW_NODE_CPUS)
#   cluster/local.sh status        the nodes and their resources
#   cluster/local.sh add           one more worker node (LAKEFLOW_NODE_RESOURCES='{"io": 1}' adds
#                                  custom resources to it)
#   cluster/local.sh remove I      kill worker node I (1..N) as a crash would: fault drills
#   cluster/local.sh down          stop this cluster's processes (not other Ray instances)
#
# The head runs no tasks (0 CPUs) and carries the `controller` resource, so lakeflow's
# controller lives there; the dashboard and Ray Jobs listen on 127.0.0.1:8265, Ray clients on
# 127.0.0.1:10001. Authentication is set explicitly (Ray 2.60 turns token auth on by default):
# RAY_AUTH_MODE=disabled here, on loopback only; export RAY_AUTH_MODE=token on shared machines.
# Every lakeflow command that talks to the cluster needs the same RAY_AUTH_MODE.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PORT="${LAKEFLOW_RAY_PORT:-6390}"
DASHBOARD_PORT="${LAKEFLOW_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${LAKEFLOW_CLIENT_PORT:-10001}"  # outside the worker ports, 10002-19999
NODE_CPUS="${LAKEFLOW_NODE_CPUS:-1}"
OBJECT_STORE="${LAKEFLOW_OBJECT_STORE_BYTES:-268435456}"  # per node; Ray would take 30% of RAM each
# Each node's dashboard agent (Ray Jobs runs through the head's) needs its own HTTP port: the
# default, 52365, is taken by whichever Ray on this machine started first.
AGENT_BASE=$((25000 + (PORT % 1000) * 20))
STATE="${LAKEFLOW_CLUSTER_DIR:-${TMPDIR:-/tmp}/lakeflow-cluster-$PORT}"

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export RAY_USAGE_STATS_ENABLED=0
export RAY_task_events_max_num_task_in_gcs="${RAY_task_events_max_num_task_in_gcs:-5000}"
# Job entrypoints run with the head's PATH: put this project's interpreter first.
if [[ -x "$ROOT/.venv/bin/ray" ]]; then export PATH="$ROOT/.venv/bin:$PATH"; fi
RAY="$(command -v ray)" || { echo "local.sh: no ray on PATH (pip install -e . first)" >&2; exit 2; }

TEMP="$STATE/ray"  # every process of this cluster names it: how `down` finds them, and only them
raylets() { pgrep -f -- "raylet.*$TEMP" || true; }

start_worker() {
    local before after index=1 started
    while [[ -e "$STATE/worker-$index.pid" ]]; do index=$((index + 1)); done
    started=$(( $(cat "$STATE/started" 2>/dev/null || echo 0) + 1 ))  # never reuse an agent port
    echo "$started" >"$STATE/started"
    before="$(raylets)"
    "$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --temp-dir="$TEMP" \
        --num-cpus="$NODE_CPUS" --object-store-memory="$OBJECT_STORE" \
        --dashboard-agent-listen-port=$((AGENT_BASE + started)) \
        --resources="${LAKEFLOW_NODE_RESOURCES:-{\}}" --disable-usage-stats >/dev/null
    after="$(raylets)"
    comm -13 <(echo "$before" | sort) <(echo "$after" | sort) | head -1 >"$STATE/worker-$index.pid"
    echo "worker node $index: raylet pid $(cat "$STATE/worker-$index.pid")"
}

case "${1:-}" in
up)
    workers="${2:-2}"
    if [[ -n "$(raylets)" ]]; then echo "local.sh: a cluster already runs on port $PORT" >&2; exit 1; fi
    rm -rf "$STATE" && mkdir -p "$STATE"
    "$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" --temp-dir="$TEMP" \
        --num-cpus=0 --resources='{"controller": 1}' --object-store-memory="$OBJECT_STORE" \
        --dashboard-agent-listen-port="$AGENT_BASE" \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
        --ray-client-server-port="$CLIENT_PORT" --disable-usage-stats >/dev/null
    echo "head: 127.0.0.1:$PORT, dashboard and jobs http://127.0.0.1:$DASHBOARD_PORT, clients ray://127.0.0.1:$CLIENT_PORT"
    for _ in $(seq 1 "$workers"); do start_worker; done
    # Ray Jobs answer once the head's agent is up: wait for it, so `lakeflow submit` can follow
    for _ in $(seq 1 100); do
        if "$RAY" job list --address="http://127.0.0.1:$DASHBOARD_PORT" >/dev/null 2>&1; then break; fi
        sleep 0.3
    done
    echo "RAY_AUTH_MODE=$RAY_AUTH_MODE; connect with --address 127.0.0.1:$PORT or ray://127.0.0.1:$CLIENT_PORT"
    ;;
add)
    start_worker
    ;;
remove)
    pidfile="$STATE/worker-${2:?which worker node (1..N)}.pid"
    [[ -s "$pidfile" ]] || { echo "local.sh: no worker node ${2}" >&2; exit 1; }
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    echo "worker node ${2} killed"
    ;;
status)
    "$RAY" status --address="127.0.0.1:$PORT"
    ;;
down)
    # Only this cluster's processes: every one of them names its temp dir...
    # The Ray client proxy names only the GCS address.
    mine="$TEMP|ray.util.client.server --address=[0-9.]+:$PORT "
    pkill -TERM -f -- "$mine" || true
    for _ in $(seq 1 50); do
        if ! pgrep -f -- "$mine" >/dev/null; then break; fi
        sleep 0.2
    done
    pkill -KILL -f -- "$mine" || true
    rm -rf "$STATE"
    echo "cluster on port $PORT stopped"
    ;;
*)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
