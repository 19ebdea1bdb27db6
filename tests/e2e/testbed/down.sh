#!/usr/bin/env bash
# Stop every process that up.sh started for STATE_DIR: SIGTERM (newest first),
# then SIGKILL after TESTBED_STOP_TIMEOUT seconds (default 15). Leaves STATE_DIR
# (logs, data) in place. Safe to run twice. A real node (node.sh) is taken
# down first.
#
# Usage: tests/e2e/testbed/down.sh STATE_DIR
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $# -eq 1 ]] || testbed_die "usage: $0 STATE_DIR"
[[ -d "$1" ]] || {
  testbed_log "no such state dir: $1 (nothing to stop)"
  exit 0
}
STATE_DIR="$(cd "$1" && pwd)"
PIDS="${STATE_DIR}/pids"
TIMEOUT="${TESTBED_STOP_TIMEOUT:-15}"

# The real node first (node.sh), while the API server still runs.
if [[ -f "${STATE_DIR}/node/pids" ]]; then
  "${TESTBED_DIR}/node.sh" down "${STATE_DIR}" || testbed_log "node.sh down failed; stopping the rest anyway"
fi

if [[ ! -s "${PIDS}" ]]; then
  testbed_log "nothing recorded in ${PIDS}"
  exit 0
fi

# A pid is ours if the process (or its session) still runs our command: every
# component was started by up.sh with its own session (setsid), so the session
# id equals the recorded pid. This guards against pid reuse.
ours() { # PID
  [[ "$(ps -o sid= -p "$1" 2>/dev/null | tr -d ' ')" == "$1" ]]
}

# Every live process of the session led by PID (the leader and its children).
session_pids() { # PID
  ps -o pid= -s "$1" 2>/dev/null | tr -d ' ' || true
}

# stop_phase all-but-etcd|etcd: TERM the recorded sessions of that phase,
# newest first, wait for them with one shared deadline, then KILL.
ALL_TARGETS=()
stop_phase() {
  local phase="$1" name pid deadline targets=() members entries
  mapfile -t entries < <(tac "${PIDS}" | awk -v p="${phase}" '(p == "etcd") == ($1 == "etcd")')
  for entry in "${entries[@]}"; do
    read -r name pid <<<"${entry}"
    if ours "${pid}"; then
      testbed_log "stopping ${name} (pid ${pid})"
      # Signal the whole session so child processes go too.
      mapfile -t members < <(session_pids "${pid}")
      kill -TERM "${members[@]}" 2>/dev/null || true
      targets+=("${pid}")
      ALL_TARGETS+=("${pid}")
    fi
  done
  deadline=$(($(date +%s) + TIMEOUT))
  for pid in "${targets[@]}"; do
    while [[ -n "$(session_pids "${pid}")" ]]; do
      if (($(date +%s) >= deadline)); then
        mapfile -t members < <(session_pids "${pid}")
        if ((${#members[@]})); then
          testbed_log "pid ${pid} did not stop after ${TIMEOUT}s; sending SIGKILL"
          kill -KILL "${members[@]}" 2>/dev/null || true
        fi
        sleep 0.2
        break
      fi
      sleep 0.2
    done
  done
}

# etcd last, so the API server can shut down cleanly while its storage is up.
stop_phase all-but-etcd
stop_phase etcd
left=()
for pid in "${ALL_TARGETS[@]}"; do
  mapfile -t members < <(session_pids "${pid}")
  left+=("${members[@]}")
done
if ((${#left[@]})); then
  testbed_die "processes still running: ${left[*]}"
fi
mv "${PIDS}" "${PIDS}.stopped"
testbed_log "test bed in ${STATE_DIR} stopped"
