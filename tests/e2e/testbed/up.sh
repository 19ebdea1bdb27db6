#!/usr/bin/env bash
# Start the end-to-end test bed on 127.0.0.1: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok (one fake node), Jaeger v2 and
# Prometheus, each on a free port, with state and logs under STATE_DIR.
#
# Usage: tests/e2e/testbed/up.sh STATE_DIR
#
# Needs the binaries from build.sh and prometheus/promtool on PATH.
# Environment:
#   PROMETHEUS_RULE_FILES    space-separated rule files to load (copied into STATE_DIR)
#   TESTBED_START_TIMEOUT    seconds to wait for each component (default 120)
#   TESTBED_KWOK_STAGES      kwok stage config (default: kwok-stages.yaml next to this script)
#   TESTBED_REAL_NODE=1      also start the real node (node.sh up; needs root and build.sh --node)
#
# On success writes STATE_DIR/env (source it) and STATE_DIR/pids; stop with
# down.sh STATE_DIR. On failure everything started so far is stopped again.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $# -eq 1 ]] || testbed_die "usage: $0 STATE_DIR"
mkdir -p "$1"
STATE_DIR="$(cd "$1" && pwd)"

# Free ports are picked before the processes bind them, so something else
# (e.g. a second test bed starting at the same moment) may take one in
# between. The start-up is then retried with new ports, up to 3 times.
if [[ -z "${TESTBED_UP_ATTEMPT:-}" ]]; then
  for attempt in 1 2 3; do
    TESTBED_UP_ATTEMPT="${attempt}" "${BASH_SOURCE[0]}" "${STATE_DIR}" &
    child=$!
    trap 'kill -TERM "${child}" 2>/dev/null || true' TERM INT HUP
    rc=0
    wait "${child}" || rc=$?
    # wait returns early when a trapped signal arrives; let the child finish.
    while kill -0 "${child}" 2>/dev/null; do
      wait "${child}" || rc=$?
    done
    trap - TERM INT HUP
    if ((rc == 0)); then
      exit 0
    fi
    if ((rc < 128)) && ((attempt < 3)) &&
      grep -qs 'address already in use' "${STATE_DIR}"/logs/*.log; then
      testbed_log "a port was taken during start-up; retrying with new ports"
      continue
    fi
    exit "${rc}"
  done
fi
TIMEOUT="${TESTBED_START_TIMEOUT:-120}"
KWOK_STAGES="${TESTBED_KWOK_STAGES:-${TESTBED_DIR}/kwok-stages.yaml}"
KWOK_NODE_NAME="testbed-kwok-node"
PKI="${STATE_DIR}/pki"
LOGS="${STATE_DIR}/logs"
PIDS="${STATE_DIR}/pids"

if [[ -s "${PIDS}" ]]; then
  while read -r _name pid; do
    if kill -0 "${pid}" 2>/dev/null; then
      testbed_die "${STATE_DIR} is already running (pid ${pid}); run down.sh first"
    fi
  done <"${PIDS}"
fi

START_TS=$(date +%s)

# --- binaries ----------------------------------------------------------------
for tool in openssl curl ss setsid; do
  command -v "${tool}" >/dev/null 2>&1 || testbed_die "'${tool}' is required"
done
ETCD="$(testbed_bin etcd)"
KUBE_APISERVER="$(testbed_bin kube-apiserver)"
KUBE_CONTROLLER_MANAGER="$(testbed_bin kube-controller-manager)"
KUBE_SCHEDULER="$(testbed_bin kube-scheduler)"
KUBECTL="$(testbed_bin kubectl)"
KWOK="$(testbed_bin kwok)"
JAEGER="$(testbed_bin jaeger)"
HELM="$(testbed_bin helm)"
PROMETHEUS="$(testbed_bin prometheus)"
PROMTOOL="$(testbed_bin promtool)"

# Fresh state (keeps nothing from an earlier run of the same STATE_DIR).
rm -rf "${PKI}" "${LOGS}" "${STATE_DIR}/etcd" "${STATE_DIR}/prometheus" \
  "${STATE_DIR}/jaeger" "${STATE_DIR}/kwok" "${STATE_DIR}/helm" \
  "${STATE_DIR}/env" "${PIDS}" "${STATE_DIR}"/*.kubeconfig "${STATE_DIR}/kubeconfig"
mkdir -p "${PKI}" "${LOGS}" "${STATE_DIR}/etcd" "${STATE_DIR}/prometheus/rules" \
  "${STATE_DIR}/prometheus/data" "${STATE_DIR}/jaeger" "${STATE_DIR}/kwok/workdir" \
  "${STATE_DIR}/helm"
: >"${PIDS}"

UP_OK=0
on_exit() {
  local rc=$?
  if [[ "${UP_OK}" != 1 ]]; then
    testbed_log "up.sh failed (exit ${rc}); logs are in ${LOGS}; stopping what was started"
    testbed_show_logs "${LOGS}"
    "${TESTBED_DIR}/down.sh" "${STATE_DIR}" || true
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

start() { testbed_start "$@"; }
alive() { testbed_alive "$@"; }
wait_ready() { testbed_wait_ready "$@"; }

# --- ports -------------------------------------------------------------------
ETCD_PORT="$(testbed_free_port)"
ETCD_PEER_PORT="$(testbed_free_port)"
APISERVER_PORT="$(testbed_free_port)"
KCM_PORT="$(testbed_free_port)"
SCHEDULER_PORT="$(testbed_free_port)"
KWOK_PORT="$(testbed_free_port)"
JAEGER_OTLP_GRPC_PORT="$(testbed_free_port)"
JAEGER_OTLP_HTTP_PORT="$(testbed_free_port)"
JAEGER_QUERY_HTTP_PORT="$(testbed_free_port)"
JAEGER_QUERY_GRPC_PORT="$(testbed_free_port)"
JAEGER_METRICS_PORT="$(testbed_free_port)"
PROMETHEUS_PORT="$(testbed_free_port)"
EXPORTER_METRICS_PORT="$(testbed_free_port)"
APISERVER_URL="https://127.0.0.1:${APISERVER_PORT}"

# --- certificates ------------------------------------------------------------
testbed_log "generating certificates in ${PKI}"
gen_key() { testbed_gen_key "$@"; }
# sign NAME SUBJECT EXTENSIONS : key + certificate signed by the test-bed CA.
sign() { testbed_sign "${PKI}" "${PKI}/ca.crt" "${PKI}/ca.key" "$@"; }
(
  umask 077
  gen_key "${PKI}/ca.key"
  openssl req -x509 -new -key "${PKI}/ca.key" -subj "/CN=agentrun-testbed-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "${PKI}/ca.crt" 2>/dev/null
  CLIENT_EXT='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
  sign apiserver "/CN=kube-apiserver" \
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local'
  sign admin "/O=system:masters/CN=testbed-admin" "${CLIENT_EXT}"
  sign kube-controller-manager "/CN=system:kube-controller-manager" "${CLIENT_EXT}"
  sign kube-scheduler "/CN=system:kube-scheduler" "${CLIENT_EXT}"
  sign front-proxy-client "/CN=front-proxy-client" "${CLIENT_EXT}"
  # The API server's client certificate towards kubelets (logs, exec, stats
  # proxy of the real node, node.sh).
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "${CLIENT_EXT}"
  # Service-account token signing key pair.
  gen_key "${PKI}/sa.key"
  openssl pkey -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
)

# kubeconfig FILE USER CERT_NAME : self-contained kubeconfig (embedded data).
write_kubeconfig() {
  testbed_kubeconfig "$1" "${APISERVER_URL}" "${PKI}/ca.crt" "$2" "${PKI}/$3.crt" "${PKI}/$3.key"
}
KUBECONFIG_FILE="${STATE_DIR}/kubeconfig"
write_kubeconfig "${KUBECONFIG_FILE}" testbed-admin admin
write_kubeconfig "${STATE_DIR}/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager
write_kubeconfig "${STATE_DIR}/kube-scheduler.kubeconfig" system:kube-scheduler kube-scheduler

# --- Jaeger (v2, in-memory) ----------------------------------------------------
cat >"${STATE_DIR}/jaeger/config.yaml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: ${JAEGER_METRICS_PORT}
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    # Jaeger would otherwise trace its own queries to the default OTLP
    # endpoint (localhost:4317), which is not ours.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:${JAEGER_QUERY_HTTP_PORT}
    grpc:
      endpoint: 127.0.0.1:${JAEGER_QUERY_GRPC_PORT}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${JAEGER_OTLP_GRPC_PORT}
      http:
        endpoint: 127.0.0.1:${JAEGER_OTLP_HTTP_PORT}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
start jaeger "${JAEGER}" --config "file:${STATE_DIR}/jaeger/config.yaml"

# --- Prometheus ----------------------------------------------------------------
i=0
for rule in ${PROMETHEUS_RULE_FILES:-}; do
  [[ -f "${rule}" ]] || testbed_die "PROMETHEUS_RULE_FILES: no such file: ${rule}"
  i=$((i + 1))
  cp "${rule}" "${STATE_DIR}/prometheus/rules/$(printf '%02d' "${i}")-$(basename "${rule}")"
done
cat >"${STATE_DIR}/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - ${STATE_DIR}/prometheus/rules/*
scrape_configs:
  - job_name: agentrun-lifecycle-exporter
    scrape_interval: 1s
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:${EXPORTER_METRICS_PORT}']
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:${PROMETHEUS_PORT}']
  - job_name: jaeger
    static_configs:
      - targets: ['127.0.0.1:${JAEGER_METRICS_PORT}']
EOF
"${PROMTOOL}" check config "${STATE_DIR}/prometheus/prometheus.yml" >"${LOGS}/promtool-check.log" 2>&1 ||
  testbed_die "promtool check config failed (rule files?): $(cat "${LOGS}/promtool-check.log")"
start prometheus "${PROMETHEUS}" \
  --config.file="${STATE_DIR}/prometheus/prometheus.yml" \
  --storage.tsdb.path="${STATE_DIR}/prometheus/data" \
  --storage.tsdb.retention.time=1d \
  --web.listen-address="127.0.0.1:${PROMETHEUS_PORT}" \
  --web.enable-lifecycle

# --- etcd ------------------------------------------------------------------------
start etcd "${ETCD}" \
  --name=testbed \
  --data-dir="${STATE_DIR}/etcd" \
  --listen-client-urls="http://127.0.0.1:${ETCD_PORT}" \
  --advertise-client-urls="http://127.0.0.1:${ETCD_PORT}" \
  --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster="testbed=http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster-state=new \
  --auto-compaction-retention=1 \
  --quota-backend-bytes=2147483648 \
  --unsafe-no-fsync=true \
  --log-level=warn
wait_ready etcd "etcd" curl -fsS "http://127.0.0.1:${ETCD_PORT}/health"

# --- kube-apiserver --------------------------------------------------------------
start kube-apiserver "${KUBE_APISERVER}" \
  --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="${APISERVER_PORT}" \
  --tls-cert-file="${PKI}/apiserver.crt" \
  --tls-private-key-file="${PKI}/apiserver.key" \
  --client-ca-file="${PKI}/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="${PKI}/sa.pub" \
  --service-account-signing-key-file="${PKI}/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --authorization-mode=Node,RBAC \
  --endpoint-reconciler-type=none \
  --disable-admission-plugins=TaintNodesByCondition \
  --requestheader-client-ca-file="${PKI}/ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="${PKI}/front-proxy-client.crt" \
  --proxy-client-key-file="${PKI}/front-proxy-client.key" \
  --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" \
  --kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --enable-priority-and-fairness=false \
  --allow-privileged=true \
  --profiling=false \
  --event-ttl=1h \
  --v=1
CURL_ADMIN=(curl -fsS --cacert "${PKI}/ca.crt" --cert "${PKI}/admin.crt" --key "${PKI}/admin.key")
wait_ready kube-apiserver "kube-apiserver" "${CURL_ADMIN[@]}" "${APISERVER_URL}/readyz"

# --- controllers, scheduler, kwok -----------------------------------------------
# Controllers: the Job lifecycle (job, cronjob, ttl-after-finished,
# garbagecollector), what a namespace and a Pod need in a real cluster
# (namespace; serviceaccount: the ServiceAccount admission plugin stays on, so
# Pods need the namespace's "default" ServiceAccount; root-ca-cert-publisher:
# the kube-root-ca.crt ConfigMap of every namespace, which a real kubelet needs
# for the service-account token volume; podgc), and deployment +
# replicaset so a chart's Deployment gets (forever Running) pods. Each
# controller uses its own service-account credentials, as in a kubeadm cluster.
start kube-controller-manager "${KUBE_CONTROLLER_MANAGER}" \
  --kubeconfig="${STATE_DIR}/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="${STATE_DIR}/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="${STATE_DIR}/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="${KCM_PORT}" \
  --controllers=job,cronjob,ttl-after-finished,garbagecollector,namespace,serviceaccount,root-ca-cert-publisher,podgc,deployment,replicaset \
  --use-service-account-credentials=true \
  --root-ca-file="${PKI}/ca.crt" \
  --leader-elect=false \
  --kube-api-qps=100 \
  --kube-api-burst=200 \
  --profiling=false \
  --v=2
start kube-scheduler "${KUBE_SCHEDULER}" \
  --kubeconfig="${STATE_DIR}/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="${STATE_DIR}/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="${STATE_DIR}/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="${SCHEDULER_PORT}" \
  --leader-elect=false \
  --profiling=false \
  --v=1
cp "${KWOK_STAGES}" "${STATE_DIR}/kwok/stages.yaml"
start kwok env KWOK_WORKDIR="${STATE_DIR}/kwok/workdir" "${KWOK}" \
  --kubeconfig="${KUBECONFIG_FILE}" \
  --config="${STATE_DIR}/kwok/stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --server-address="127.0.0.1:${KWOK_PORT}" \
  --cidr=10.244.0.0/16 \
  --node-lease-duration-seconds=40

KUBECTL_CMD=("${KUBECTL}" --kubeconfig="${KUBECONFIG_FILE}")
"${KUBECTL_CMD[@]}" apply -f - >"${LOGS}/node-create.log" 2>&1 <<EOF
apiVersion: v1
kind: Node
metadata:
  name: ${KWOK_NODE_NAME}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: ${KWOK_NODE_NAME}
    kubernetes.io/os: linux
    type: kwok
spec: {}
EOF

wait_ready kube-controller-manager "kube-controller-manager" curl -fsSk "https://127.0.0.1:${KCM_PORT}/healthz"
wait_ready kube-scheduler "kube-scheduler" curl -fsSk "https://127.0.0.1:${SCHEDULER_PORT}/healthz"
wait_ready kwok "kwok" curl -fsS "http://127.0.0.1:${KWOK_PORT}/healthz"
node_ready() {
  [[ "$("${KUBECTL_CMD[@]}" get node "${KWOK_NODE_NAME}" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == "True" ]]
}
wait_ready kwok "fake node ${KWOK_NODE_NAME} Ready" node_ready
wait_ready kube-controller-manager "default service account" \
  "${KUBECTL_CMD[@]}" -n default get serviceaccount default
wait_ready jaeger "jaeger query API" curl -fsS "http://127.0.0.1:${JAEGER_QUERY_HTTP_PORT}/api/services"
wait_ready jaeger "jaeger OTLP/HTTP receiver" \
  curl -sS -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' \
  "http://127.0.0.1:${JAEGER_OTLP_HTTP_PORT}/v1/traces"
wait_ready prometheus "prometheus" curl -fsS "http://127.0.0.1:${PROMETHEUS_PORT}/-/ready"

# --- env -------------------------------------------------------------------------
cat >"${STATE_DIR}/env" <<EOF
# Generated by tests/e2e/testbed/up.sh; source it.
export TESTBED_STATE_DIR='${STATE_DIR}'
export TESTBED_BIN_DIR='$(testbed_bin_dir)'
export KUBECONFIG='${KUBECONFIG_FILE}'
export TESTBED_APISERVER_URL='${APISERVER_URL}'
export TESTBED_CA_FILE='${PKI}/ca.crt'
export TESTBED_ADMIN_CERT_FILE='${PKI}/admin.crt'
export TESTBED_ADMIN_KEY_FILE='${PKI}/admin.key'
export TESTBED_ETCD_URL='http://127.0.0.1:${ETCD_PORT}'
export KWOK_NODE_NAME='${KWOK_NODE_NAME}'
export JAEGER_OTLP_GRPC_ENDPOINT='http://127.0.0.1:${JAEGER_OTLP_GRPC_PORT}'
export JAEGER_OTLP_HTTP_ENDPOINT='http://127.0.0.1:${JAEGER_OTLP_HTTP_PORT}'
export JAEGER_QUERY_URL='http://127.0.0.1:${JAEGER_QUERY_HTTP_PORT}'
export JAEGER_QUERY_GRPC_ENDPOINT='127.0.0.1:${JAEGER_QUERY_GRPC_PORT}'
export PROMETHEUS_URL='http://127.0.0.1:${PROMETHEUS_PORT}'
export PROMETHEUS_RULES_DIR='${STATE_DIR}/prometheus/rules'
export EXPORTER_METRICS_PORT='${EXPORTER_METRICS_PORT}'
export KUBECTL='${KUBECTL}'
export HELM='${HELM}'
export PROMTOOL='${PROMTOOL}'
export HELM_CACHE_HOME='${STATE_DIR}/helm/cache'
export HELM_CONFIG_HOME='${STATE_DIR}/helm/config'
export HELM_DATA_HOME='${STATE_DIR}/helm/data'
EOF

# --- the real node (opt-in) ---------------------------------------------------------
if [[ "${TESTBED_REAL_NODE:-0}" == 1 ]]; then
  "${TESTBED_DIR}/node.sh" up "${STATE_DIR}"
fi

UP_OK=1
testbed_log "test bed up in $(($(date +%s) - START_TS))s; source ${STATE_DIR}/env"
