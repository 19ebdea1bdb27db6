#!/usr/bin/env bash
# Faults for the end-to-end scenarios, on a running test bed.
#
# Usage: tests/e2e/testbed/fault.sh STATE_DIR restart-apiserver
#          stop kube-apiserver and start it again with the same command line; returns once it is ready
#        tests/e2e/testbed/fault.sh STATE_DIR compact-etcd
#          compact etcd's history up to its current revision (physical), so a watch resumed from an
#          older resourceVersion gets 410 Gone; prints the revision
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $# -eq 2 ]] || testbed_die "usage: $0 STATE_DIR restart-apiserver|compact-etcd"
STATE_DIR="$(cd "$1" && pwd)"
# shellcheck disable=SC1091
source "${STATE_DIR}/env"
PIDS="${STATE_DIR}/pids"

pid_of() { # NAME
  awk -v n="$1" '$1 == n {p = $2} END {print p}' "${PIDS}"
}

restart_apiserver() {
  local pid args=() i
  pid="$(pid_of kube-apiserver)"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || testbed_die "kube-apiserver is not running"
  # The same command line, from the running process.
  mapfile -d '' -t args <"/proc/${pid}/cmdline"
  kill -TERM "${pid}"
  for ((i = 0; i < 300; i++)); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "${pid}" 2>/dev/null && kill -KILL "${pid}"
  setsid "${args[@]}" >>"${STATE_DIR}/logs/kube-apiserver.log" 2>&1 </dev/null &
  pid=$!
  printf '%s %s\n' kube-apiserver "${pid}" >>"${PIDS}"
  for ((i = 0; i < 600; i++)); do
    if curl -fsS --cacert "${TESTBED_CA_FILE}" --cert "${TESTBED_ADMIN_CERT_FILE}" \
      --key "${TESTBED_ADMIN_KEY_FILE}" "${TESTBED_APISERVER_URL}/readyz" >/dev/null 2>&1; then
      testbed_log "kube-apiserver restarted (pid ${pid})"
      return 0
    fi
    kill -0 "${pid}" 2>/dev/null || testbed_die "kube-apiserver exited; see ${STATE_DIR}/logs/kube-apiserver.log"
    sleep 0.1
  done
  testbed_die "kube-apiserver not ready 60 s after the restart"
}

compact_etcd() {
  local rev
  # etcd's JSON gateway: the header of any range answer carries the current revision.
  rev="$(curl -fsS -X POST -d '{"key":"AA=="}' "${TESTBED_ETCD_URL}/v3/kv/range" | jq -r '.header.revision')"
  curl -fsS -X POST -d "{\"revision\":\"${rev}\",\"physical\":true}" "${TESTBED_ETCD_URL}/v3/kv/compaction" >/dev/null
  testbed_log "etcd compacted at revision ${rev}"
  echo "${rev}"
}

case "$2" in
  restart-apiserver) restart_apiserver ;;
  compact-etcd) compact_etcd ;;
  *) testbed_die "unknown fault: $2" ;;
esac
