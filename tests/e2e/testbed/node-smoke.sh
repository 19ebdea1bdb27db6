#!/usr/bin/env bash
# Prove the real node (node.sh) runs the exporter's own image as a real Pod:
#   1. the image archive of deploy/image/build.sh is imported into the node's
#      containerd (no registry; imagePullPolicy: Never);
#   2. in a namespace enforcing the "restricted" Pod Security Standard, with a
#      ServiceAccount that may only get/list/watch AgentRuns, Jobs and Pods
#      there, a Pod on the real node (it tolerates the node's taint) runs
#      `agentrun-lifecycle-exporter watch` with in-cluster configuration (the
#      "kubernetes" Service through kube-proxy) and a readiness probe on
#      /readyz, which answers only after the first list of all three watches:
#      it becomes Ready (time from creation printed);
#   3. its /metrics answers from the host at the pod IP, and the bed's
#      Prometheus scrapes it there (job real-node-pods);
#   4. a second Pod of the same image (`demo`) sends its spans over OTLP/gRPC to
#      the bed's Jaeger at JAEGER_OTLP_GRPC_FOR_PODS; they are read back;
#   5. the container's memory from the kubelet's /stats/summary and from its
#      cgroup is printed; `kubectl logs` works and `kubectl exec` finds no shell
#      (nothing here needs one).
#
# Usage: tests/e2e/testbed/node-smoke.sh STATE_DIR
# Environment:
#   NODE_SMOKE_IMAGE   an image archive to use instead of running deploy/image/build.sh
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $# -eq 1 ]] || testbed_die "usage: $0 STATE_DIR"
[[ -f "$1/env" ]] || testbed_die "$1/env not found; run up.sh $1 first"
# shellcheck disable=SC1091
source "$1/env"
[[ -n "${REAL_NODE_NAME:-}" ]] || testbed_die "no real node in $1 (node.sh up $1, or up.sh with TESTBED_REAL_NODE=1)"
command -v jq >/dev/null 2>&1 || testbed_die "jq is required"
ROOT="$(cd "${TESTBED_DIR}/../../.." && pwd)"

NS="node-smoke-$(date +%s)-${RANDOM}"
K=("${KUBECTL}")
CURL_ADMIN=(curl -fsS --cacert "${TESTBED_CA_FILE}" --cert "${TESTBED_ADMIN_CERT_FILE}" --key "${TESTBED_ADMIN_KEY_FILE}")
TARGETS="${REAL_NODE_PROMETHEUS_TARGETS_DIR}/${NS}.json"
CHECKS=0

cleanup() {
  rm -f "${TARGETS}"
  # Waits, so that the kubelet has stopped the pods before a node.sh down.
  "${K[@]}" delete namespace "${NS}" --wait=true --timeout=60s >/dev/null 2>&1 || true
}
trap cleanup EXIT

pass() {
  CHECKS=$((CHECKS + 1))
  testbed_log "ok: $*"
}

fail() {
  testbed_log "FAILED: $*"
  "${K[@]}" -n "${NS}" get pods -o wide >&2 2>/dev/null || true
  "${K[@]}" -n "${NS}" get events --sort-by=.lastTimestamp >&2 2>/dev/null | tail -n 20 >&2 || true
  exit 1
}

now() { date +%s.%N; }
elapsed() { # FROM [TO]
  awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN {printf "%.2f", b - a}'
}

# --- 1: the image ------------------------------------------------------------------
if [[ -n "${NODE_SMOKE_IMAGE:-}" ]]; then
  ARCHIVE="$(realpath "${NODE_SMOKE_IMAGE}")"
else
  testbed_log "building the exporter image (deploy/image/build.sh)"
  ARCHIVE="$("${ROOT}/deploy/image/build.sh" | tail -n1)"
fi
[[ -f "${ARCHIVE}" ]] || fail "no image archive at ${ARCHIVE}"
IMAGE="$(tar -xOf "${ARCHIVE}" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"] // empty')"
[[ -n "${IMAGE}" ]] || fail "${ARCHIVE} names no image (io.containerd.image.name)"
t0=$(now)
ctr --address "${REAL_NODE_CONTAINERD_ADDRESS}" --namespace k8s.io images import "${ARCHIVE}" >/dev/null ||
  fail "ctr images import ${ARCHIVE}"
pass "image ${IMAGE} imported into the node's containerd in $(elapsed "${t0}") s"

# --- 2: restricted namespace, RBAC, the watch pod -------------------------------------
if ! "${K[@]}" get crd agentruns.agents.proompteng.ai >/dev/null 2>&1; then
  "${K[@]}" apply -f "${ROOT}/tests/e2e/agentrun-crd.yaml" >/dev/null
fi
"${K[@]}" wait --for condition=established --timeout=60s crd/agentruns.agents.proompteng.ai >/dev/null

SECURITY='securityContext:
      runAsNonRoot: true
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}'
PLACEMENT="nodeSelector: {${REAL_NODE_LABEL%%=*}: \"true\"}
  tolerations:
  - {key: ${REAL_NODE_TAINT%%=*}, operator: Equal, value: \"true\", effect: NoSchedule}"

"${K[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: ${NS}
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: exporter, namespace: ${NS}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: exporter, namespace: ${NS}}
rules:
- {apiGroups: [agents.proompteng.ai], resources: [agentruns], verbs: [get, list, watch]}
- {apiGroups: [batch], resources: [jobs], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: exporter, namespace: ${NS}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: exporter}
subjects:
- {kind: ServiceAccount, name: exporter, namespace: ${NS}}
EOF
# The restricted standard is enforced: a pod without the security context is refused.
if out="$("${K[@]}" -n "${NS}" run not-restricted --image="${IMAGE}" --image-pull-policy=Never \
  --overrides="{\"spec\": {\"nodeName\": \"${REAL_NODE_NAME}\"}}" 2>&1)"; then
  fail "a pod without the restricted security context was admitted"
fi
grep -q 'violates PodSecurity "restricted' <<<"${out}" || fail "a pod was refused, but not by Pod Security: ${out}"
pass "namespace ${NS} enforces the restricted Pod Security Standard"

t_create=$(now)
"${K[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: exporter
  namespace: ${NS}
spec:
  serviceAccountName: exporter
  ${PLACEMENT}
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: exporter
    image: ${IMAGE}
    imagePullPolicy: Never
    args: [watch]
    env:
    - {name: AGENTRUN_EXPORTER_NAMESPACES, value: ${NS}}
    - {name: AGENTRUN_EXPORTER_METRICS_ADDR, value: "0.0.0.0:9464"}
    - {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: "${JAEGER_OTLP_GRPC_FOR_PODS}"}
    - {name: OTEL_EXPORTER_OTLP_PROTOCOL, value: grpc}
    - {name: OTEL_METRICS_EXPORTER, value: none}
    ports:
    - {name: metrics, containerPort: 9464}
    readinessProbe:
      httpGet: {path: /readyz, port: metrics}
      periodSeconds: 1
      failureThreshold: 3
    ${SECURITY}
EOF
"${K[@]}" -n "${NS}" wait --for=condition=Ready pod/exporter --timeout=120s >/dev/null ||
  fail "the exporter pod did not become Ready"
t_ready=$(now)
POD_JSON="$("${K[@]}" -n "${NS}" get pod exporter -o json)"
POD_IP="$(jq -r .status.podIP <<<"${POD_JSON}")"
[[ "$(jq -r .spec.nodeName <<<"${POD_JSON}")" == "${REAL_NODE_NAME}" ]] || fail "the pod is not on ${REAL_NODE_NAME}"
api_times="$(jq -r '[.metadata.creationTimestamp,
  (.status.conditions[] | select(.type == "PodScheduled") | .lastTransitionTime),
  (.status.containerStatuses[0].state.running.startedAt),
  (.status.conditions[] | select(.type == "Ready") | .lastTransitionTime)] | join(" ")' <<<"${POD_JSON}")"
pass "exporter pod Ready on ${REAL_NODE_NAME} at ${POD_IP}: $(elapsed "${t_create}" "${t_ready}") s from creation (API times created/scheduled/started/ready: ${api_times})"
"${K[@]}" -n "${NS}" logs exporter >"${REAL_NODE_DIR}/logs/${NS}-exporter.log" 2>&1 || fail "kubectl logs"
grep -q . "${REAL_NODE_DIR}/logs/${NS}-exporter.log" || fail "the exporter logged nothing"
pass "kubectl logs: $(wc -l <"${REAL_NODE_DIR}/logs/${NS}-exporter.log") lines (the watches list through the in-cluster API)"

# --- 3: /metrics from the host at the pod IP; Prometheus scrapes it ----------------------
body="$(curl -fsS --max-time 5 "http://${POD_IP}:9464/metrics")" || fail "GET http://${POD_IP}:9464/metrics from the host"
grep -q '^agentrun_exporter_' <<<"${body}" || fail "/metrics has no agentrun_exporter_ series"
[[ "$(curl -fsS --max-time 5 "http://${POD_IP}:9464/readyz")" == ready ]] || fail "/readyz from the host"
pass "GET http://${POD_IP}:9464/metrics from the host: $(grep -c '^agentrun_' <<<"${body}") agentrun_ samples"

printf '[{"targets": ["%s:9464"], "labels": {"namespace": "%s", "pod": "exporter"}}]\n' "${POD_IP}" "${NS}" >"${TARGETS}.tmp"
mv "${TARGETS}.tmp" "${TARGETS}"
query="up{job=\"real-node-pods\",namespace=\"${NS}\"}"
up=""
for _ in $(seq 1 60); do
  up="$(curl -fsS --get --data-urlencode "query=${query}" "${PROMETHEUS_URL}/api/v1/query" |
    jq -r '.data.result[0].value[1] // empty')" || true
  [[ "${up}" == 1 ]] && break
  sleep 0.5
done
[[ "${up}" == 1 ]] || fail "Prometheus: ${query} is '${up}', not 1"
pass "Prometheus scrapes ${POD_IP}:9464 (${query} = 1)"

# --- 4: OTLP from a pod to the bed's Jaeger ----------------------------------------------
SERVICE="node-smoke-${RANDOM}"
"${K[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: demo
  namespace: ${NS}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  ${PLACEMENT}
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: demo
    image: ${IMAGE}
    imagePullPolicy: Never
    args: [demo, --runs, "2", --speed, "500", --metrics-addr, "127.0.0.1:9464"]
    env:
    - {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: "${JAEGER_OTLP_GRPC_FOR_PODS}"}
    - {name: OTEL_EXPORTER_OTLP_PROTOCOL, value: grpc}
    - {name: OTEL_METRICS_EXPORTER, value: none}
    - {name: OTEL_SERVICE_NAME, value: ${SERVICE}}
    ${SECURITY}
EOF
traces=0
for _ in $(seq 1 120); do
  traces="$(curl -fsS "${JAEGER_QUERY_URL}/api/traces?service=${SERVICE}&limit=20" | jq '.data | length')" || traces=0
  ((traces > 0)) && break
  sleep 0.5
done
((traces > 0)) || fail "Jaeger has no trace of service ${SERVICE} (sent from a pod to ${JAEGER_OTLP_GRPC_FOR_PODS})"
pass "a pod's spans reach Jaeger through ${JAEGER_OTLP_GRPC_FOR_PODS}: ${traces} trace(s) of service ${SERVICE}"

# --- 5: memory; no shell ------------------------------------------------------------------
sleep 2
summary="$("${CURL_ADMIN[@]}" "${REAL_NODE_KUBELET_URL}/stats/summary")" || fail "GET ${REAL_NODE_KUBELET_URL}/stats/summary"
ws="$(jq --arg ns "${NS}" '.pods[] | select(.podRef.namespace == $ns and .podRef.name == "exporter")
  | .containers[] | select(.name == "exporter") | .memory.workingSetBytes // empty' <<<"${summary}")"
[[ -n "${ws}" ]] || fail "no memory figure for the exporter container in /stats/summary"
uid="$(jq -r .metadata.uid <<<"${POD_JSON}")"
cid="$(jq -r '.status.containerStatuses[0].containerID | sub("^containerd://"; "")' <<<"${POD_JSON}")"
cgroup="$(find /sys/fs/cgroup/memory/kubepods -maxdepth 3 -type d -name "${cid}" 2>/dev/null | head -n1)"
cg_note="cgroup not found"
if [[ -n "${cgroup}" && "${cgroup}" == *"pod${uid}"* ]]; then
  cg_rss="$(awk '$1 == "total_rss" {print $2}' "${cgroup}/memory.stat")"
  cg_usage="$(cat "${cgroup}/memory.usage_in_bytes")"
  cg_note="cgroup ${cgroup#/sys/fs/cgroup/memory}: usage $((cg_usage / 1024)) KiB, rss $((cg_rss / 1024)) KiB"
fi
pass "exporter container memory: kubelet /stats/summary workingSetBytes $((ws / 1024)) KiB; ${cg_note}"
if out="$("${K[@]}" -n "${NS}" exec exporter -- /bin/sh -c true 2>&1)"; then
  fail "the image has a shell"
fi
grep -qiE 'no such file|not found' <<<"${out}" || fail "kubectl exec failed otherwise than for a missing shell: ${out}"
pass "kubectl exec reaches the container and finds no /bin/sh (the test needs none)"

testbed_log "node smoke test passed (${CHECKS} checks)"
