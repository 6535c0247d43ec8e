#!/usr/bin/env bash
# Background Prefect services for the demo: a local server (SQLite under $PREFECT_HOME) and a process
# worker on the llava-reward-local pool.  Usage: scripts/services.sh start|stop|status
# Expects the environment the Makefile exports (PREFECT_HOME, PREFECT_API_URL, PREFECT_PORT, ...).
set -euo pipefail

POOL="${LLAVA_REWARD_POOL:-llava-reward-local}"
STATE="${PREFECT_HOME:?PREFECT_HOME must be set (run through make)}"
mkdir -p "$STATE"
SERVER_PID="$STATE/server.pid"
WORKER_PID="$STATE/worker.pid"
WORKER_SETTINGS="$STATE/worker.settings"  # the settings the running worker passes to its flow runs

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
healthy() { curl --silent --fail --max-time 2 "$PREFECT_API_URL/health" >/dev/null 2>&1; }

start_server() {
  if healthy; then echo "prefect server: already running at ${PREFECT_API_URL%/api}"; return; fi
  echo "prefect server: starting on 127.0.0.1:$PREFECT_PORT (log: $STATE/server.log)"
  nohup prefect server start --host 127.0.0.1 --port "$PREFECT_PORT" >"$STATE/server.log" 2>&1 &
  echo $! >"$SERVER_PID"
  for _ in $(seq 1 120); do
    if healthy; then echo "prefect server: healthy"; return; fi
    if ! alive "$SERVER_PID"; then echo "prefect server failed to start:"; tail -20 "$STATE/server.log"; exit 1; fi
    sleep 1
  done
  echo "prefect server: not healthy after 120 s"; tail -20 "$STATE/server.log"; exit 1
}

# What a flow run gets from the worker's environment: a running worker started with other values is
# restarted, else a changed LLAVA_REWARD_ARTIFACTS would silently keep writing to the old place.
worker_settings() { printf 'LLAVA_REWARD_ARTIFACTS=%s\n' "${LLAVA_REWARD_ARTIFACTS:-}"; }

start_worker() {
  if ! prefect work-pool inspect "$POOL" >/dev/null 2>&1; then
    prefect work-pool create "$POOL" --type process >/dev/null
    echo "work pool $POOL: created (process)"
  fi
  if alive "$WORKER_PID"; then
    if [[ "$(cat "$WORKER_SETTINGS" 2>/dev/null)" == "$(worker_settings)" ]]; then
      echo "prefect worker: already running (pid $(cat "$WORKER_PID"))"; return
    fi
    echo "prefect worker: restarting, its settings changed to $(worker_settings)"
    stop_one "prefect worker" "$WORKER_PID"
  fi
  echo "prefect worker: starting on pool $POOL (log: $STATE/worker.log)"
  nohup prefect worker start --pool "$POOL" >"$STATE/worker.log" 2>&1 &
  echo $! >"$WORKER_PID"
  worker_settings >"$WORKER_SETTINGS"
}

# SIGTERM and wait for the process to exit. A Prefect worker turns the first signal into a graceful
# shutdown that can hang; a second signal ends it. SIGKILL if it still runs after STOP_TIMEOUT seconds.
STOP_TIMEOUT="${STOP_TIMEOUT:-20}"
exited_within() {  # exited_within PID SECONDS
  for _ in $(seq 1 "$(($2 * 4))"); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.25
  done
  return 1
}
stop_one() {
  local name=$1 pidfile=$2 pid
  if ! alive "$pidfile"; then
    echo "$name: not running"; rm -f "$pidfile"; return
  fi
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  if ! exited_within "$pid" 3; then
    kill "$pid" 2>/dev/null || true
    if ! exited_within "$pid" "$STOP_TIMEOUT"; then
      kill -9 "$pid" 2>/dev/null || true
      echo "$name: killed (still running ${STOP_TIMEOUT} s after a second SIGTERM)"
      rm -f "$pidfile"; return
    fi
  fi
  echo "$name: stopped"
  rm -f "$pidfile"
}

case "${1:-status}" in
  start) start_server; start_worker ;;
  stop) stop_one "prefect worker" "$WORKER_PID"; stop_one "prefect server" "$SERVER_PID" ;;
  status)
    if healthy; then echo "prefect server: running at ${PREFECT_API_URL%/api}"; else echo "prefect server: not running"; fi
    if alive "$WORKER_PID"; then echo "prefect worker: running (pid $(cat "$WORKER_PID"))"; else echo "prefect worker: not running"; fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
