#!/usr/bin/env bash
# Record the REAL upstream agents controller (proompteng/lab services/agents) on the
# end-to-end test bed, scenario by scenario, and write the fixtures
#   tests/fixtures/upstream/<scenario>.jsonl        (our exporter's `record` of the watch streams)
#   tests/fixtures/upstream/<scenario>.expect.json  (verdicts derived from what upstream did)
# Development tool only: CI never runs it and no upstream code enters this repository.
#
# Usage: LAB_DIR=/path/to/lab BUN=/path/to/bun tests/upstream/record.sh [SCENARIO...]
#        (no SCENARIO: every scenario in tests/upstream/scenarios/, in file-name order)
#
# Environment:
#   LAB_DIR    (required) a checkout of proompteng/lab at UPSTREAM_COMMIT with `bun install`
#              done and the workspace packages built (see tests/upstream/README.md)
#   BUN        the Bun binary (default: `bun` on PATH); must be >= 1.4.4
#   EXPORTER   the exporter binary (default: target/debug/agentrun-lifecycle-exporter,
#              built with `cargo build` when missing)
#   RAW_DIR    where raw captures go (default: ~/.cache/agentrun-lifecycle-exporter/upstream-raw)
#   OUT_DIR    fixtures directory (default: tests/fixtures/upstream)
#   STATE_DIR  test-bed state dir (default: a new temporary dir)
#
# Per scenario, RAW_DIR/<scenario>/ keeps: agentruns|jobs|pods.jsonl (kubectl get --watch
# --output-watch-events -o json, one event per line plus "observedAt"), controller.log (every
# controller process of the scenario, with start/stop markers), actions.log (what this
# harness did, with timestamps), recorder.log, kcm.log (the kube-controller-manager log
# lines of the scenario's namespace), objects-final.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../.." && pwd)"
UPSTREAM_COMMIT="6b69af37f6584d49c0e3267dd99678f3ba0925c5"

log() { printf '[record %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

RAW_DIR="${RAW_DIR:-${HOME}/.cache/agentrun-lifecycle-exporter/upstream-raw}"
OUT_DIR="${OUT_DIR:-${REPO}/tests/fixtures/upstream}"
mkdir -p "${RAW_DIR}" "${OUT_DIR}"
RAW_DIR="$(cd "${RAW_DIR}" && pwd)"
OUT_DIR="$(cd "${OUT_DIR}" && pwd)"

if (($# > 0)); then
  SCENARIOS=("$@")
else
  SCENARIOS=()
  for f in "${HERE}"/scenarios/*.sh; do
    b="$(basename "${f}" .sh)"
    SCENARIOS+=("${b#[0-9][0-9]-}")
  done
fi
scenario_file() { # NAME
  local f
  for f in "${HERE}"/scenarios/*.sh; do
    [[ "$(basename "${f}" .sh)" =~ ^([0-9][0-9]-)?"$1"$ ]] && {
      printf '%s\n' "${f}"
      return 0
    }
  done
  return 1
}
for s in "${SCENARIOS[@]}"; do
  scenario_file "${s}" >/dev/null || die "unknown scenario ${s}"
done

# VERDICTS_ONLY=1: re-derive the .expect.json files from the raw captures already in
# RAW_DIR (e.g. after editing a description), without running anything.
if [[ "${VERDICTS_ONLY:-0}" == 1 ]]; then
  for s in "${SCENARIOS[@]}"; do
    [[ -d "${RAW_DIR}/${s}" ]] || die "no raw capture for ${s} in ${RAW_DIR}"
    if [[ -f "${HERE}/descriptions/${s}.txt" ]]; then
      cp "${HERE}/descriptions/${s}.txt" "${RAW_DIR}/${s}/description.txt"
    fi
    python3 "${HERE}/verdicts.py" "${RAW_DIR}/${s}" >"${OUT_DIR}/${s}.expect.json"
    log "${s}: wrote ${OUT_DIR}/${s}.expect.json"
  done
  exit 0
fi

LAB_DIR="${LAB_DIR:?set LAB_DIR to a proompteng/lab checkout (see tests/upstream/README.md)}"
LAB_DIR="$(cd "${LAB_DIR}" && pwd)"
BUN="${BUN:-$(command -v bun || true)}"
[[ -x "${BUN}" ]] || die "no Bun binary (set BUN)"
BUN_VERSION="$("${BUN}" --version)"
AGENTS_DIR="${LAB_DIR}/services/agents"
[[ -f "${AGENTS_DIR}/src/server/agents-controller/index.ts" ]] || die "${AGENTS_DIR} is not services/agents"
[[ -d "${AGENTS_DIR}/node_modules" || -d "${LAB_DIR}/node_modules" ]] || die "run bun install in ${LAB_DIR} first"
if [[ -d "${LAB_DIR}/.git" ]]; then
  lab_head="$(git -C "${LAB_DIR}" rev-parse HEAD)"
  [[ "${lab_head}" == "${UPSTREAM_COMMIT}" ]] || log "WARNING: ${LAB_DIR} is at ${lab_head}, not ${UPSTREAM_COMMIT}"
fi
EXPORTER="${EXPORTER:-${REPO}/target/debug/agentrun-lifecycle-exporter}"
if [[ ! -x "${EXPORTER}" ]]; then
  log "building the exporter (cargo build)"
  (cd "${REPO}" && cargo build --quiet)
fi
"${EXPORTER}" record --help >/dev/null || die "${EXPORTER} has no record command"
for tool in jq python3 curl; do
  command -v "${tool}" >/dev/null || die "'${tool}' is required"
done

# --- test bed -----------------------------------------------------------------------
"${REPO}/tests/e2e/testbed/build.sh" >/dev/null
OWN_STATE=0
if [[ -z "${STATE_DIR:-}" ]]; then
  STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/upstream-record.XXXXXX")"
  OWN_STATE=1
fi
mkdir -p "${STATE_DIR}"

# Processes this script starts (besides the bed), stopped on exit.
BG_PIDS=()
stop_pid() { # PID [SIGNAL]
  local pid="$1" sig="${2:-TERM}" i
  kill -0 "${pid}" 2>/dev/null || return 0
  kill "-${sig}" "${pid}" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${pid}" 2>/dev/null; then
    kill -KILL "${pid}" 2>/dev/null || true
  fi
  wait "${pid}" 2>/dev/null || true
}
cleanup() {
  local rc=$? pid
  for pid in "${BG_PIDS[@]}"; do
    stop_pid "${pid}"
  done
  "${REPO}/tests/e2e/testbed/down.sh" "${STATE_DIR}" >/dev/null 2>&1 || true
  if ((OWN_STATE)) && ((rc == 0)); then
    rm -rf "${STATE_DIR}"
  else
    log "test-bed state (logs) left in ${STATE_DIR}"
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

log "starting the test bed in ${STATE_DIR}"
TESTBED_KWOK_STAGES="${HERE}/kwok-stages.yaml" "${REPO}/tests/e2e/testbed/up.sh" "${STATE_DIR}" >/dev/null
# shellcheck source=/dev/null
source "${STATE_DIR}/env"
export KUBECONFIG
KCM_LOG="${STATE_DIR}/logs/kube-controller-manager.log"

log "installing the agents CRDs (upstream chart, 7 CRDs)"
CRDS=(agents agentruns agentproviders implementationspecs implementationsources memories versioncontrolproviders)
for c in "${CRDS[@]}"; do
  "${KUBECTL}" apply --server-side -f "${LAB_DIR}/charts/agents/crds/agents.proompteng.ai_${c}.yaml" >/dev/null
done
for c in "${CRDS[@]}"; do
  "${KUBECTL}" wait --for condition=established --timeout=60s "crd/${c}.agents.proompteng.ai" >/dev/null
done
# The controller gives up on a 429 ("storage is (re)initializing") right after CRDs are
# created: wait until every kind lists.
for c in "${CRDS[@]}"; do
  for ((i = 0; i < 60; i++)); do
    "${KUBECTL}" get "${c}.agents.proompteng.ai" -A >/dev/null 2>&1 && break
    sleep 0.5
  done
done

# The standalone entry point, generated in the scratch checkout (not in this repository).
RUNNER="${AGENTS_DIR}/.upstream-record-controller.ts"
cat >"${RUNNER}" <<'EOF'
// Generated by agentrun-lifecycle-exporter tests/upstream/record.sh: the agents controller alone
// (no leader election, no HTTP server, no database).
import { startAgentsController } from './src/server/agents-controller/index.ts'

await startAgentsController()
EOF

ts() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# --- helpers for scenario scripts ---------------------------------------------------
# NS, RAW, SCENARIO are set per scenario. CONTROLLER_ENV (array of NAME=VALUE) adds to
# the controller's environment.
k() { "${KUBECTL}" -n "${NS}" "$@"; }

act() { # DESCRIPTION COMMAND... : run a harness action and log it with its time
  local what="$1"
  shift
  printf '%s %s\n' "$(ts)" "${what}" >>"${RAW}/actions.log"
  log "${SCENARIO}: ${what}"
  "$@"
}

note() { # TEXT : log a note into actions.log
  printf '%s note: %s\n' "$(ts)" "$*" >>"${RAW}/actions.log"
  log "${SCENARIO}: $*"
}

CONTROLLER_PID=""
start_controller() {
  local i
  [[ -z "${CONTROLLER_PID}" ]] || die "controller already running"
  printf '==== %s controller start\n' "$(ts)" >>"${RAW}/controller.log"
  local from
  from=$(wc -l <"${RAW}/controller.log")
  printf '%s controller start\n' "$(ts)" >>"${RAW}/actions.log"
  (
    cd "${AGENTS_DIR}"
    exec env \
      KUBECONFIG="${KUBECONFIG}" \
      NODE_ENV=production \
      AGENTS_CONTROLLER_NAMESPACES="${NS}" \
      AGENTS_AGENT_COMMS_SUBSCRIBER_DISABLED=true \
      AGENTS_AGENT_RUNNER_IMAGE=registry.invalid/agent-runner:recording \
      AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS=30 \
      AGENTS_CONTROLLER_RESYNC_INTERVAL_SECONDS=60 \
      "${CONTROLLER_ENV[@]}" \
      "${BUN}" run "${RUNNER}"
  ) >>"${RAW}/controller.log" 2>&1 &
  CONTROLLER_PID=$!
  BG_PIDS+=("${CONTROLLER_PID}")
  for ((i = 0; i < 600; i++)); do
    if tail -n "+${from}" "${RAW}/controller.log" | grep -q 'startup_complete'; then
      log "${SCENARIO}: controller started (pid ${CONTROLLER_PID})"
      return 0
    fi
    kill -0 "${CONTROLLER_PID}" 2>/dev/null || die "controller exited during start-up (see ${RAW}/controller.log)"
    sleep 0.1
  done
  die "controller not started after 60 s (see ${RAW}/controller.log)"
}

stop_controller() {
  [[ -n "${CONTROLLER_PID}" ]] || return 0
  printf '%s controller stop\n' "$(ts)" >>"${RAW}/actions.log"
  stop_pid "${CONTROLLER_PID}" TERM
  printf '==== %s controller stopped\n' "$(ts)" >>"${RAW}/controller.log"
  log "${SCENARIO}: controller stopped"
  CONTROLLER_PID=""
}

wait_for() { # DESCRIPTION TIMEOUT_SECONDS COMMAND... : poll COMMAND every 0.2 s
  local what="$1" timeout="$2" start
  shift 2
  start=$(date +%s)
  while ! "$@" >/dev/null 2>&1; do
    if (($(date +%s) - start >= timeout)); then
      note "TIMEOUT waiting for ${what}"
      die "${SCENARIO}: timed out after ${timeout}s waiting for ${what}"
    fi
    sleep 0.2
  done
  note "reached: ${what}"
}

run_json() { k get agentrun "$1" -o json 2>/dev/null; }
run_phase_is() { # RUN PHASE
  [[ "$(k get agentrun "$1" -o jsonpath='{.status.phase}' 2>/dev/null)" == "$2" ]]
}
run_gone() { ! k get agentrun "$1" >/dev/null 2>&1; }
job_exists() { k get job "$1" >/dev/null 2>&1; }
job_gone() { ! k get job "$1" >/dev/null 2>&1; }
job_finished() { # JOB : Complete or Failed condition True
  k get job "$1" -o json 2>/dev/null |
    jq -e '[.status.conditions[]? | select((.type == "Complete" or .type == "Failed") and .status == "True")] | length > 0'
}
job_running() { # JOB : a Pod of the Job is Running
  k get job "$1" -o json 2>/dev/null | jq -e '(.status.ready // 0) > 0 or (.status.active // 0) > 0' &&
    k get pods -l "batch.kubernetes.io/job-name=$1" -o json | jq -e '[.items[] | select(.status.phase == "Running")] | length > 0'
}
job_has_ttl() { # JOB
  k get job "$1" -o json 2>/dev/null | jq -e '.spec.ttlSecondsAfterFinished != null'
}
run_job_observed() { # RUN : job runtime runtimeRef.jobObservedAt set
  run_json "$1" | jq -e '.status.runtimeRef.jobObservedAt != null'
}
run_job_name() { run_json "$1" | jq -r '.status.runtimeRef.name // empty'; }
step_field() { # RUN STEP_INDEX(1-based) JQ_PATH
  run_json "$1" | jq -r --argjson i "$2" ".status.workflow.steps[\$i - 1]$3 // empty"
}
step_job_observed() { # RUN STEP_INDEX JOB : jobObservedAt set while jobRef names JOB
  run_json "$1" | jq -e --argjson i "$2" --arg j "$3" \
    '.status.workflow.steps[$i - 1] | .jobRef.name == $j and .jobObservedAt != null'
}
step_observed_attempt() { # RUN STEP_INDEX ATTEMPT : jobObservedAt set for that attempt
  run_json "$1" | jq -e --argjson i "$2" --argjson a "$3" \
    '.status.workflow.steps[$i - 1] | .attempt == $a and .jobRef.name != null and .jobObservedAt != null'
}
run_finished() { # RUN : a terminal phase
  [[ "$(k get agentrun "$1" -o jsonpath='{.status.phase}' 2>/dev/null)" =~ ^(Succeeded|Failed|Cancelled)$ ]]
}
step_phase_is() { # RUN STEP_INDEX PHASE
  [[ "$(step_field "$1" "$2" .phase)" == "$3" ]]
}
step_attempt_is() { # RUN STEP_INDEX ATTEMPT
  [[ "$(step_field "$1" "$2" .attempt)" == "$3" ]]
}
poke() { # RUN : an AgentRun event (annotation) to make the controller reconcile it
  act "poke ${1} (annotate e2e.agentrun.dev/poke)" k annotate agentrun "$1" --overwrite "e2e.agentrun.dev/poke=$(date +%s%N)" >/dev/null
}
apply_run() { # NAME : apply the manifest on stdin, logged as an action
  local f="${RAW}/manifests/$1.yaml"
  mkdir -p "${RAW}/manifests"
  cat >"${f}"
  act "create AgentRun $1" k apply -f "${f}" >/dev/null
}

# The upstream chart's smoke Agent, AgentProvider and ImplementationSpec (examples/*-smoke.yaml).
apply_smoke_resources() {
  local f
  for f in agentprovider-smoke implementationspec-smoke agent-smoke; do
    k apply -f "${LAB_DIR}/charts/agents/examples/${f}.yaml" >/dev/null
  done
}

WATCH_PIDS=()
start_watches() {
  local kind base
  for kind in agentruns.agents.proompteng.ai jobs.batch pods; do
    base="${kind%%.*}"
    mkfifo "${RAW}/.${base}.fifo"
    # One compact line per event plus the time this harness saw it.
    jq -c --unbuffered 'now as $n | . + {observedAt: (($n | floor | todate | sub("Z$"; "")) + "." + ((($n * 1000) | floor % 1000) | tostring | ("00" + .)[-3:]) + "Z")}' \
      <"${RAW}/.${base}.fifo" >"${RAW}/${base}.jsonl" &
    BG_PIDS+=($!)
    JQ_PIDS+=($!)
    "${KUBECTL}" -n "${NS}" get "${kind}" --watch --output-watch-events -o json \
      >"${RAW}/.${base}.fifo" 2>>"${RAW}/watch-errors.log" &
    BG_PIDS+=($!)
    WATCH_PIDS+=($!)
  done
}
JQ_PIDS=()
stop_watches() {
  local pid
  # Stop kubectl; jq then reads to the end of the fifo and exits.
  for pid in "${WATCH_PIDS[@]}"; do
    stop_pid "${pid}" TERM
  done
  for pid in "${JQ_PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    stop_pid "${pid}" TERM
  done
  WATCH_PIDS=()
  JQ_PIDS=()
  rm -f "${RAW}"/.*.fifo
}

RECORDER_PID=""
start_recorder() {
  RUST_LOG=info "${EXPORTER}" record --out "${RAW}/record.jsonl" --namespaces "${NS}" \
    >>"${RAW}/recorder.log" 2>&1 &
  RECORDER_PID=$!
  BG_PIDS+=("${RECORDER_PID}")
  for ((i = 0; i < 100; i++)); do
    grep -q 'recording watch events' "${RAW}/recorder.log" 2>/dev/null && break
    sleep 0.1
  done
}
stop_recorder() {
  [[ -n "${RECORDER_PID}" ]] || return 0
  stop_pid "${RECORDER_PID}" INT
  RECORDER_PID=""
}

# --- scenarios ----------------------------------------------------------------------
# The description of what upstream did is written by a person after looking at the raw
# capture (tests/upstream/descriptions/<scenario>.txt); the verdicts are derived from it.
write_verdicts() {
  if [[ -f "${HERE}/descriptions/${SCENARIO}.txt" ]]; then
    cp "${HERE}/descriptions/${SCENARIO}.txt" "${RAW}/description.txt"
  fi
  python3 "${HERE}/verdicts.py" "${RAW}" >"${OUT_DIR}/${SCENARIO}.expect.json"
}

run_scenario() { # NAME
  SCENARIO="$1"
  local file
  file="$(scenario_file "${SCENARIO}")"
  NS="rec-${SCENARIO}"
  NS="${NS:0:63}"
  RAW="${RAW_DIR}/${SCENARIO}"
  rm -rf "${RAW}"
  mkdir -p "${RAW}"
  CONTROLLER_ENV=()
  unset -f scenario_run
  # shellcheck source=/dev/null
  source "${file}"
  declare -F scenario_run >/dev/null || die "${file} defines no scenario_run"

  log "=== ${SCENARIO} (namespace ${NS})"
  local kcm_start
  kcm_start=$(($(wc -l <"${KCM_LOG}") + 1))
  "${KUBECTL}" create namespace "${NS}" >/dev/null
  for ((i = 0; i < 100; i++)); do
    "${KUBECTL}" -n "${NS}" get serviceaccount default >/dev/null 2>&1 && break
    sleep 0.1
  done
  apply_smoke_resources
  {
    printf 'scenario=%s\nnamespace=%s\nupstream_commit=%s\nbun=%s\nstarted=%s\n' \
      "${SCENARIO}" "${NS}" "${UPSTREAM_COMMIT}" "${BUN_VERSION}" "$(ts)"
    printf 'controller_env=%s\n' "${CONTROLLER_ENV[*]}"
  } >"${RAW}/meta.env"
  start_watches
  start_recorder
  sleep 1

  scenario_run

  sleep 3
  stop_controller
  sleep 2
  stop_recorder
  stop_watches
  {
    k get agentruns,jobs,pods -o json
  } >"${RAW}/objects-final.json" 2>/dev/null || true
  tail -n "+${kcm_start}" "${KCM_LOG}" | grep -F "${NS}" >"${RAW}/kcm.log" || true
  printf 'finished=%s\n' "$(ts)" >>"${RAW}/meta.env"

  cp "${RAW}/record.jsonl" "${OUT_DIR}/${SCENARIO}.jsonl"
  write_verdicts
  log "=== ${SCENARIO}: wrote ${OUT_DIR}/${SCENARIO}.jsonl ($(wc -l <"${OUT_DIR}/${SCENARIO}.jsonl") events) and ${SCENARIO}.expect.json"
}

for s in "${SCENARIOS[@]}"; do
  run_scenario "${s}"
done
log "done: ${SCENARIOS[*]}"
