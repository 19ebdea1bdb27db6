#!/usr/bin/env bash
# Prove a running test bed works end to end:
#   1. a Job (backoffLimit 0, ttlSecondsAfterFinished 5, pods run 3 s, exit 0)
#      reaches Complete=True, is then deleted by the TTL-after-finished
#      controller (deletionTimestamp + foregroundDeletion finalizer), and goes;
#   2. a Job whose pod exits 1 reaches Failed=True, reason BackoffLimitExceeded;
#   3. an OTLP/HTTP span sent to Jaeger is read back through its query API;
#   4. Prometheus answers `up` for its own scrape and lists the exporter job.
#
# Usage: tests/e2e/testbed/smoke.sh STATE_DIR
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $# -eq 1 ]] || testbed_die "usage: $0 STATE_DIR"
[[ -f "$1/env" ]] || testbed_die "$1/env not found; run up.sh $1 first"
# shellcheck disable=SC1091
source "$1/env"
command -v jq >/dev/null 2>&1 || testbed_die "jq is required"

NS="smoke-$(date +%s)-${RANDOM}"
WORK="$(mktemp -d)"
K=("${KUBECTL}")
CHECKS=0
WATCH_PID=""

cleanup() {
  if [[ -n "${WATCH_PID}" ]]; then
    kill "${WATCH_PID}" 2>/dev/null || true
    wait "${WATCH_PID}" 2>/dev/null || true
  fi
  "${K[@]}" delete namespace "${NS}" --wait=false >/dev/null 2>&1 || true
  rm -rf "${WORK}"
}
trap cleanup EXIT

pass() {
  CHECKS=$((CHECKS + 1))
  testbed_log "ok: $*"
}

fail() {
  testbed_log "FAILED: $*"
  "${K[@]}" -n "${NS}" get jobs,pods -o wide >&2 2>/dev/null || true
  exit 1
}

job_manifest() { # NAME EXIT_CODE
  cat <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $1
  namespace: ${NS}
spec:
  backoffLimit: 0
  ttlSecondsAfterFinished: 5
  template:
    metadata:
      annotations:
        e2e.agentrun.dev/run-seconds: "3"
        e2e.agentrun.dev/exit-code: "$2"
    spec:
      restartPolicy: Never
      containers:
      - name: agent
        image: registry.invalid/agentrun/agent:smoke
        command: ["/bin/agent"]
EOF
}

"${K[@]}" create namespace "${NS}" >/dev/null
testbed_log "namespace ${NS}"

# --- 1: Complete, then TTL deletion ---------------------------------------------
job_manifest smoke-ok 0 | "${K[@]}" apply -f - >/dev/null
# Record every change of the Job, to see the TTL controller's foreground delete.
"${K[@]}" -n "${NS}" get job smoke-ok --watch --output-watch-events -o json >"${WORK}/watch.json" 2>"${WORK}/watch.err" &
WATCH_PID=$!

"${K[@]}" -n "${NS}" wait --for=condition=Complete job/smoke-ok --timeout=90s >/dev/null ||
  fail "smoke-ok did not complete"
ltt="$("${K[@]}" -n "${NS}" get job smoke-ok -o jsonpath='{.status.conditions[?(@.type=="Complete")].lastTransitionTime}')"
[[ "${ltt}" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T ]] || fail "Complete condition has no lastTransitionTime (${ltt})"
succeeded="$("${K[@]}" -n "${NS}" get job smoke-ok -o jsonpath='{.status.succeeded}')"
[[ "${succeeded}" == "1" ]] || fail "smoke-ok status.succeeded=${succeeded}"
pass "Job smoke-ok Complete=True at ${ltt}, succeeded=1"

"${K[@]}" -n "${NS}" wait --for=delete job/smoke-ok --timeout=90s >/dev/null ||
  fail "smoke-ok was not deleted by the TTL-after-finished controller"
sleep 1
kill "${WATCH_PID}" 2>/dev/null || true
wait "${WATCH_PID}" 2>/dev/null || true
WATCH_PID=""
# A MODIFIED event with deletionTimestamp and the foregroundDeletion finalizer,
# then DELETED.
fg="$(jq -s '[.[] | select(.type == "MODIFIED" and .object.metadata.deletionTimestamp != null
  and ((.object.metadata.finalizers // []) | index("foregroundDeletion")))] | length' "${WORK}/watch.json")"
deleted="$(jq -s '[.[] | select(.type == "DELETED")] | length' "${WORK}/watch.json")"
[[ "${fg}" -ge 1 ]] || fail "no foreground deletion seen for smoke-ok (events: $(jq -c -s 'map(.type)' "${WORK}/watch.json"))"
[[ "${deleted}" -ge 1 ]] || fail "no DELETED event for smoke-ok"
pass "Job smoke-ok deleted by TTL controller (foregroundDeletion), then gone"

# --- 2: Failed ---------------------------------------------------------------------
job_manifest smoke-fail 1 | "${K[@]}" apply -f - >/dev/null
"${K[@]}" -n "${NS}" wait --for=condition=Failed job/smoke-fail --timeout=90s >/dev/null ||
  fail "smoke-fail did not fail"
reason="$("${K[@]}" -n "${NS}" get job smoke-fail -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}')"
[[ "${reason}" == "BackoffLimitExceeded" ]] || fail "smoke-fail Failed reason is '${reason}'"
pass "Job smoke-fail Failed=True, reason BackoffLimitExceeded"

# --- 3: Jaeger -----------------------------------------------------------------------
service="testbed-smoke-${RANDOM}${RANDOM}"
trace_id="$(openssl rand -hex 16)"
span_id="$(openssl rand -hex 8)"
now_ns="$(date +%s%N)"
cat >"${WORK}/span.json" <<EOF
{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"${service}"}}]},
 "scopeSpans":[{"scope":{"name":"testbed-smoke"},"spans":[{"traceId":"${trace_id}","spanId":"${span_id}",
 "name":"smoke-span","kind":1,"startTimeUnixNano":"$((now_ns - 1000000))","endTimeUnixNano":"${now_ns}",
 "attributes":[{"key":"smoke","value":{"boolValue":true}}]}]}]}]}
EOF
curl -fsS -X POST -H 'Content-Type: application/json' --data-binary "@${WORK}/span.json" \
  "${JAEGER_OTLP_HTTP_ENDPOINT}/v1/traces" >/dev/null || fail "OTLP/HTTP export to Jaeger failed"
found=""
for _ in $(seq 1 40); do
  if curl -fsS "${JAEGER_QUERY_URL}/api/traces?service=${service}&limit=5" >"${WORK}/traces.json" 2>/dev/null &&
    [[ "$(jq -r --arg t "${trace_id}" '[.data[]? | select(.traceID == $t)] | length' "${WORK}/traces.json")" -ge 1 ]]; then
    found=1
    break
  fi
  sleep 0.5
done
[[ -n "${found}" ]] || fail "span ${trace_id} not found via ${JAEGER_QUERY_URL}/api/traces?service=${service}"
pass "Jaeger: OTLP/HTTP span read back (service ${service}, trace ${trace_id})"

# --- 4: Prometheus -------------------------------------------------------------------
ok=""
for _ in $(seq 1 30); do
  if curl -fsS "${PROMETHEUS_URL}/api/v1/query" --data-urlencode 'query=up' >"${WORK}/up.json" 2>/dev/null &&
    [[ "$(jq -r '.status' "${WORK}/up.json")" == "success" ]] &&
    [[ "$(jq -r '[.data.result[] | select(.metric.job == "prometheus" and .value[1] == "1")] | length' "${WORK}/up.json")" -ge 1 ]] &&
    [[ "$(jq -r '[.data.result[] | select(.metric.job == "agentrun-lifecycle-exporter")] | length' "${WORK}/up.json")" -ge 1 ]]; then
    ok=1
    break
  fi
  sleep 0.5
done
[[ -n "${ok}" ]] || fail "Prometheus 'up' query did not return the prometheus and agentrun-lifecycle-exporter jobs"
pass "Prometheus: up{job=\"prometheus\"}=1, exporter target configured ($(jq -c '[.data.result[] | {job: .metric.job, up: .value[1]}]' "${WORK}/up.json"))"

testbed_log "smoke: all ${CHECKS} checks passed"
