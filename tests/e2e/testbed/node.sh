#!/usr/bin/env bash
# The test bed's real node (opt-in): a kubelet and kube-proxy (built by
# build.sh --node) with containerd + runc and CNI bridge networking, next to
# kwok's fake node, so Pods that tolerate its taint really run.
#
# Usage: tests/e2e/testbed/node.sh up STATE_DIR     (after up.sh STATE_DIR)
#        tests/e2e/testbed/node.sh down STATE_DIR   (before down.sh; down.sh calls it too)
#
# Needs root. Everything lives under STATE_DIR/node (containerd root/state/
# socket, kubelet root dir, pod logs, CNI config and IP allocations, logs) except
# what the kernel and the tools keep in fixed places, all removed again by
# `down`: the bridge, the iptables chains of kube-proxy and the kubelet, the
# QoS cgroups (/kubepods in each cgroup v1 hierarchy), the kubelet's
# /var/log/containers links, libcni's cache (/var/lib/cni), the shims' sockets
# (/run/containerd/s) and the kernel settings the kubelet and kube-proxy
# change (restored to the values found by `up`).
#
# Only one real node per machine (fixed bridge name and pod subnet).
#
# Environment:
#   TESTBED_START_TIMEOUT   seconds to wait for each component (default 120)
#   TESTBED_STOP_TIMEOUT    seconds before SIGKILL on down (default 15)
#   TESTBED_NODE_SUBNET     pod subnet, a /24 (default 10.245.0.0/24; its .1 is the node's address)
#   CONTAINERD, RUNC        binaries (default: containerd and runc on PATH, Debian's packages)
#   CNI_BIN_DIR             CNI plugins (default /usr/lib/cni, Debian's containernetworking-plugins)
#
# `up` appends the node's variables to STATE_DIR/env (see the README) and adds
# a Prometheus scrape job (file discovery) for pods of the node; `down` takes
# both out.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $# -eq 2 && ("$1" == up || "$1" == down) ]] || testbed_die "usage: $0 up|down STATE_DIR"
ACTION="$1"
[[ -d "$2" ]] || testbed_die "no such state dir: $2"
STATE_DIR="$(cd "$2" && pwd)"
NODE_DIR="${STATE_DIR}/node"
LOGS="${NODE_DIR}/logs"
PIDS="${NODE_DIR}/pids"
TIMEOUT="${TESTBED_START_TIMEOUT:-120}"

NODE_NAME="testbed-real-node"
NODE_LABEL="agentrun.test/real-node"
BRIDGE="agentrun-br0"
CNI_NETWORK="agentrun-testbed"
SUBNET="${TESTBED_NODE_SUBNET:-10.245.0.0/24}"
SUBNET_PREFIX="${SUBNET%.*}"
NODE_IP="${SUBNET_PREFIX}.1"
CONTAINERD="${CONTAINERD:-$(command -v containerd || true)}"
RUNC="${RUNC:-$(command -v runc || true)}"
CNI_BIN_DIR="${CNI_BIN_DIR:-/usr/lib/cni}"
CTRD_DIR="${NODE_DIR}/containerd"
CTRD_SOCK="${CTRD_DIR}/containerd.sock"
# Kernel settings the kubelet (its kernel tunables) and kube-proxy may change.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet)
ENV_BEGIN="# --- real node (node.sh) ---"
ENV_END="# --- end of real node ---"

[[ "$(id -u)" == 0 ]] || testbed_die "node.sh needs root (containerd, kubelet, bridge, iptables)"

ctr_() {
  ctr --address "${CTRD_SOCK}" --namespace k8s.io "$@"
}

start() { testbed_start "$@"; }
alive() { testbed_alive "$@"; }
wait_ready() { testbed_wait_ready "$@"; }

port_of() { # URL -> its port
  local p="${1##*:}"
  printf '%s\n' "${p%%/*}"
}

# Pids of containerd shims serving our containerd (they leave its session).
our_shims() {
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"${p}/cmdline" | grep -qF -- "-address ${CTRD_SOCK} "; then
      printf '%s\n' "${p#/proc/}"
    fi
  done
}

# Mount points at or below DIR, deepest first.
mounts_under() { # DIR
  awk -v d="$1" '{gsub(/\\040/, " ", $5); if ($5 == d || index($5, d "/") == 1) print $5}' /proc/self/mountinfo |
    sort -r
}

# --- down ----------------------------------------------------------------------
node_down() {
  local kubectl="" ns pid f chain table rule
  if [[ ! -d "${NODE_DIR}" ]]; then
    testbed_log "no real node in ${STATE_DIR}"
    return 0
  fi
  # 1. Pods: deleted through the API while the kubelet runs, so it stops them
  #    the normal way (CNI DEL, sandbox and netns removed, volumes unmounted).
  if [[ -f "${STATE_DIR}/env" && -f "${STATE_DIR}/kubeconfig" ]]; then
    kubectl="$(testbed_bin kubectl 2>/dev/null || true)"
  fi
  if [[ -n "${kubectl}" ]] && alive kubelet 2>/dev/null &&
    "${kubectl}" --kubeconfig="${STATE_DIR}/kubeconfig" get node "${NODE_NAME}" >/dev/null 2>&1; then
    testbed_log "deleting the pods on ${NODE_NAME}"
    "${kubectl}" --kubeconfig="${STATE_DIR}/kubeconfig" delete pods -A \
      --field-selector "spec.nodeName=${NODE_NAME}" --grace-period=5 --wait=true --timeout=60s \
      >"${LOGS}/down-delete-pods.log" 2>&1 || testbed_log "some pods were not deleted in time (see ${LOGS}/down-delete-pods.log)"
  fi
  if [[ -n "${kubectl}" ]]; then
    "${kubectl}" --kubeconfig="${STATE_DIR}/kubeconfig" delete node "${NODE_NAME}" --ignore-not-found --wait=false \
      >/dev/null 2>&1 || true
    "${kubectl}" --kubeconfig="${STATE_DIR}/kubeconfig" -n default delete endpointslice kubernetes-testbed-real-node \
      --ignore-not-found >/dev/null 2>&1 || true
  fi
  # 2. kubelet, kube-proxy, the forwarders (containerd stays up for step 3).
  if [[ -s "${PIDS}" ]]; then
    grep -v '^containerd ' "${PIDS}" >"${NODE_DIR}/pids.stop" || true
    if [[ -s "${NODE_DIR}/pids.stop" ]]; then
      mkdir -p "${NODE_DIR}/stop1"
      mv "${NODE_DIR}/pids.stop" "${NODE_DIR}/stop1/pids"
      "${TESTBED_DIR}/down.sh" "${NODE_DIR}/stop1"
    fi
  fi
  # 3. Whatever containers are left (the kubelet did not get to them): kill and
  #    delete their tasks through containerd, then stop containerd and its shims.
  if [[ -S "${CTRD_SOCK}" ]] && ctr_ version >/dev/null 2>&1; then
    local tasks
    mapfile -t tasks < <(ctr_ tasks list -q 2>/dev/null || true)
    for f in "${tasks[@]}"; do
      [[ -n "${f}" ]] || continue
      ctr_ tasks kill -a -s SIGKILL "${f}" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for f in "${tasks[@]}"; do
      [[ -n "${f}" ]] || continue
      ctr_ tasks delete -f "${f}" >/dev/null 2>&1 || true
    done
  fi
  if [[ -s "${PIDS}" ]] && grep -q '^containerd ' "${PIDS}"; then
    mkdir -p "${NODE_DIR}/stop2"
    grep '^containerd ' "${PIDS}" >"${NODE_DIR}/stop2/pids"
    "${TESTBED_DIR}/down.sh" "${NODE_DIR}/stop2"
  fi
  mapfile -t shims < <(our_shims)
  if ((${#shims[@]})); then
    testbed_log "stopping containerd shims: ${shims[*]}"
    for pid in "${shims[@]}"; do
      # The shim's children (containers) first.
      pkill -KILL -P "${pid}" 2>/dev/null || true
      kill -KILL "${pid}" 2>/dev/null || true
    done
    sleep 0.5
  fi
  [[ -s "${PIDS}" ]] && mv "${PIDS}" "${PIDS}.stopped"
  # 4. iptables: kube-proxy's own clean-up, then the chains the kubelet made
  #    (KUBE-*) and any CNI-* chain that was not there before `up`.
  local kube_proxy
  kube_proxy="$(testbed_bin kube-proxy 2>/dev/null || true)"
  if [[ -n "${kube_proxy}" ]]; then
    "${kube_proxy}" --cleanup >"${LOGS}/kube-proxy-cleanup.log" 2>&1 || true
  fi
  for tool in iptables ip6tables; do
    command -v "${tool}" >/dev/null 2>&1 || continue
    for table in filter nat mangle; do
      mapfile -t chains < <("${tool}" -t "${table}" -S 2>/dev/null | awk '$1 == "-N" {print $2}' |
        grep -E '^(KUBE-|CNI-)' || true)
      for chain in "${chains[@]}"; do
        if grep -qx -- "${tool} ${table} ${chain}" "${NODE_DIR}/chains.before" 2>/dev/null; then
          continue
        fi
        # Rules of other chains that jump to it, then the chain itself.
        while read -r rule; do
          [[ -n "${rule}" ]] || continue
          # xargs keeps the quoted comments of the rule as one argument each.
          xargs "${tool}" -t "${table}" <<<"${rule/#-A /-D }" 2>/dev/null || true
        done < <("${tool}" -t "${table}" -S 2>/dev/null | grep -E -- "-j ${chain}( |$)" || true)
        "${tool}" -t "${table}" -F "${chain}" 2>/dev/null || true
        "${tool}" -t "${table}" -X "${chain}" 2>/dev/null || true
      done
    done
  done
  # 5. Network namespaces made for our pods (named in the CNI results we kept).
  if [[ -f "${NODE_DIR}/netns.before" ]]; then
    while read -r ns; do
      [[ -n "${ns}" ]] || continue
      grep -qx -- "${ns}" "${NODE_DIR}/netns.before" && continue
      testbed_log "removing network namespace ${ns}"
      ip netns delete "${ns}" 2>/dev/null || { umount -l "/run/netns/${ns}" 2>/dev/null && rm -f "/run/netns/${ns}"; } || true
    done < <(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true)
  fi
  # 6. Mounts under the node dir (rootfs overlays, volumes, sandbox shm), the bridge.
  while read -r f; do
    [[ -n "${f}" ]] || continue
    umount "${f}" 2>/dev/null || umount -l "${f}" 2>/dev/null || true
  done < <(mounts_under "${NODE_DIR}")
  if ip link show "${BRIDGE}" >/dev/null 2>&1; then
    ip link delete "${BRIDGE}" || true
  fi
  # 7. The kubelet's cgroups (QoS tree under /kubepods), deepest first.
  for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "${f}" ]] || continue
    find "${f}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # 8. Links the kubelet made in /var/log/containers (to our pod logs, or any
  #    that was not there before `up`), and libcni's cache dir if we made it.
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "${NODE_DIR}/*" -delete 2>/dev/null || true
    while read -r f; do
      [[ -n "${f}" ]] || continue
      grep -qxF -- "${f}" "${NODE_DIR}/varlog.before" 2>/dev/null || rm -f "/var/log/containers/${f}"
    done < <(find /var/log/containers -maxdepth 1 -type l -printf '%f\n')
    if [[ -f "${NODE_DIR}/varlog.made" ]]; then
      rmdir /var/log/containers 2>/dev/null || true
    fi
  fi
  if [[ -f "${NODE_DIR}/cni-cache.made" ]]; then
    rm -rf /var/lib/cni
  fi
  # containerd 1.6's shims keep their sockets in /run/containerd/s (removed as they exit).
  if [[ -f "${NODE_DIR}/run-containerd.made" ]]; then
    rmdir /run/containerd/s /run/containerd 2>/dev/null || true
  fi
  # 9. Kernel settings back to what `up` found.
  if [[ -f "${NODE_DIR}/sysctl.before" ]]; then
    while read -r key value; do
      [[ -n "${key}" ]] || continue
      [[ "$(sysctl -n "${key}" 2>/dev/null)" == "${value}" ]] || sysctl -q -w "${key}=${value}" >/dev/null || true
    done <"${NODE_DIR}/sysctl.before"
    mv "${NODE_DIR}/sysctl.before" "${NODE_DIR}/sysctl.restored"
  fi
  # 10. The env block and the Prometheus job.
  if [[ -f "${STATE_DIR}/env" ]] && grep -qxF "${ENV_BEGIN}" "${STATE_DIR}/env"; then
    sed -i "/^${ENV_BEGIN}\$/,/^${ENV_END}\$/d" "${STATE_DIR}/env"
  fi
  if [[ -f "${NODE_DIR}/prometheus.yml.orig" ]]; then
    cp "${NODE_DIR}/prometheus.yml.orig" "${STATE_DIR}/prometheus/prometheus.yml"
    rm -f "${NODE_DIR}/prometheus.yml.orig"
    if [[ -n "${PROMETHEUS_URL:-}" ]]; then
      curl -fsS -X POST "${PROMETHEUS_URL}/-/reload" >/dev/null 2>&1 || true
    fi
  fi
  # Check: nothing of ours is left.
  local left=()
  mapfile -t shims < <(our_shims)
  ((${#shims[@]} == 0)) || left+=("shims ${shims[*]}")
  [[ -z "$(mounts_under "${NODE_DIR}")" ]] || left+=("mounts under ${NODE_DIR}")
  ! ip link show "${BRIDGE}" >/dev/null 2>&1 || left+=("bridge ${BRIDGE}")
  ((${#left[@]} == 0)) || testbed_die "real node: still there after down: ${left[*]}"
  testbed_log "real node ${NODE_NAME} stopped"
}

if [[ "${ACTION}" == down ]]; then
  if [[ -f "${STATE_DIR}/env" ]]; then
    # shellcheck disable=SC1091
    source "${STATE_DIR}/env"
  fi
  node_down
  exit 0
fi

# --- up ------------------------------------------------------------------------
[[ -f "${STATE_DIR}/env" ]] || testbed_die "${STATE_DIR}/env not found; run up.sh ${STATE_DIR} first"
# shellcheck disable=SC1091
source "${STATE_DIR}/env"
if [[ -s "${PIDS}" ]]; then
  while read -r _name pid; do
    kill -0 "${pid}" 2>/dev/null && testbed_die "the real node of ${STATE_DIR} is already running (pid ${pid})"
  done <"${PIDS}"
fi
! ip link show "${BRIDGE}" >/dev/null 2>&1 ||
  testbed_die "bridge ${BRIDGE} exists: another real node runs on this machine (node.sh down its STATE_DIR)"
[[ "${SUBNET}" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.0/24$ ]] || testbed_die "TESTBED_NODE_SUBNET must be an IPv4 /24: ${SUBNET}"

for tool in ctr ip iptables ip6tables socat openssl curl sysctl; do
  command -v "${tool}" >/dev/null 2>&1 || testbed_die "'${tool}' is required (deps.sh installs it)"
done
[[ -x "${CONTAINERD}" ]] || testbed_die "containerd not found (apt-get install containerd)"
[[ -x "${RUNC}" ]] || testbed_die "runc not found (apt-get install runc)"
for plugin in bridge host-local loopback portmap; do
  [[ -x "${CNI_BIN_DIR}/${plugin}" ]] || testbed_die "CNI plugin ${CNI_BIN_DIR}/${plugin} missing (apt-get install containernetworking-plugins)"
done
KUBELET="$(testbed_bin kubelet)" || testbed_die "no kubelet: run build.sh --node"
KUBE_PROXY="$(testbed_bin kube-proxy)" || testbed_die "no kube-proxy: run build.sh --node"
PAUSE_ARCHIVE="$(testbed_component_dir pause "${PAUSE_VERSION}")/image/pause.oci.tar"
[[ -f "${PAUSE_ARCHIVE}" ]] || testbed_die "no pause image archive: run build.sh --node"
K=("${KUBECTL}" --kubeconfig="${STATE_DIR}/kubeconfig")

[[ -z "$(mounts_under "${NODE_DIR}")" ]] || testbed_die "mounts left under ${NODE_DIR}: run node.sh down ${STATE_DIR} first"

START_TS=$(date +%s)
rm -rf "${NODE_DIR}"
mkdir -p "${LOGS}" "${NODE_DIR}/pki" "${CTRD_DIR}" "${NODE_DIR}/cni/net.d" "${NODE_DIR}/cni/ipam" \
  "${NODE_DIR}/kubelet" "${NODE_DIR}/pod-logs"
: >"${PIDS}"

UP_OK=0
on_exit() {
  local rc=$?
  if [[ "${UP_OK}" != 1 ]]; then
    testbed_log "node.sh up failed (exit ${rc}); logs are in ${LOGS}; stopping what was started"
    testbed_show_logs "${LOGS}"
    "${BASH_SOURCE[0]}" down "${STATE_DIR}" || true
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# What is there before us, so that `down` removes only what we added.
for key in "${SYSCTLS[@]}"; do
  printf '%s %s\n' "${key}" "$(sysctl -n "${key}")"
done >"${NODE_DIR}/sysctl.before"
for tool in iptables ip6tables; do
  for table in filter nat mangle; do
    "${tool}" -t "${table}" -S 2>/dev/null | awk -v t="${tool} ${table}" '$1 == "-N" {print t, $2}'
  done
done >"${NODE_DIR}/chains.before"
ip netns list 2>/dev/null | awk '{print $1}' >"${NODE_DIR}/netns.before"
if [[ -d /var/log/containers ]]; then
  find /var/log/containers -maxdepth 1 -type l -printf '%f\n' >"${NODE_DIR}/varlog.before"
else
  : >"${NODE_DIR}/varlog.made"
fi
# libcni (inside containerd) caches results in /var/lib/cni (not configurable in containerd 1.6).
[[ -e /var/lib/cni ]] || : >"${NODE_DIR}/cni-cache.made"
[[ -e /run/containerd ]] || : >"${NODE_DIR}/run-containerd.made"

APISERVER_PORT="$(port_of "${TESTBED_APISERVER_URL}")"
OTLP_GRPC_PORT="$(port_of "${JAEGER_OTLP_GRPC_ENDPOINT}")"
OTLP_HTTP_PORT="$(port_of "${JAEGER_OTLP_HTTP_ENDPOINT}")"
KUBELET_PORT="$(testbed_free_port)"
KUBELET_HEALTHZ_PORT="$(testbed_free_port)"
PROXY_HEALTHZ_PORT="$(testbed_free_port)"
PROXY_METRICS_PORT="$(testbed_free_port)"

# --- the bridge: the node's address, reachable from the pods -------------------
# CNI's bridge plugin takes the existing bridge (and its gateway address).
ip link add "${BRIDGE}" type bridge
ip addr add "${NODE_IP}/24" dev "${BRIDGE}"
ip link set "${BRIDGE}" up
testbed_log "bridge ${BRIDGE} ${NODE_IP}/24"

# --- certificates (signed by the bed's CA) --------------------------------------
PKI="${NODE_DIR}/pki"
sign() { testbed_sign "${PKI}" "${TESTBED_CA_FILE}" "${TESTBED_STATE_DIR}/pki/ca.key" "$@"; }
(
  umask 077
  CLIENT_EXT='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
  sign kubelet-client "/O=system:nodes/CN=system:node:${NODE_NAME}" "${CLIENT_EXT}"
  sign kube-proxy "/CN=system:kube-proxy" "${CLIENT_EXT}"
  sign kubelet-serving "/CN=${NODE_NAME}" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:${NODE_IP},DNS:${NODE_NAME}"
)
write_kubeconfig() { # FILE USER CERT
  testbed_kubeconfig "$1" "${TESTBED_APISERVER_URL}" "${TESTBED_CA_FILE}" "$2" "${PKI}/$3.crt" "${PKI}/$3.key"
}
write_kubeconfig "${NODE_DIR}/kubelet.kubeconfig" "system:node:${NODE_NAME}" kubelet-client
write_kubeconfig "${NODE_DIR}/kube-proxy.kubeconfig" system:kube-proxy kube-proxy

# --- containerd (its own root, state and sockets; cgroupfs) ----------------------
cat >"${CTRD_DIR}/config.toml" <<EOF
version = 2
root = "${CTRD_DIR}/root"
state = "${CTRD_DIR}/state"
# Plugins that would use fixed paths or are not needed here.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "${CTRD_SOCK}"
[ttrpc]
  address = "${CTRD_SOCK}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # The pods' network namespaces under the state dir, not /run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  # Lowering an oom_score_adj needs CAP_SYS_RESOURCE, which root lacks in some
  # containers and VMs (runc then fails with "can't get final child's PID from
  # pipe"): keep every container's score at or above containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "${RUNC}"
        Root = "${CTRD_DIR}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIR}"
    conf_dir = "${NODE_DIR}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF
start containerd "${CONTAINERD}" --config "${CTRD_DIR}/config.toml" --log-level info
wait_ready containerd "containerd" ctr_ version
ctr_ images import --no-unpack=false "${PAUSE_ARCHIVE}" >"${LOGS}/import-pause.log" 2>&1 ||
  testbed_die "importing the pause image failed: $(cat "${LOGS}/import-pause.log")"
testbed_log "pause image ${PAUSE_IMAGE} imported"

# --- CNI: bridge + host-local + loopback + portmap ---------------------------------
cat >"${NODE_DIR}/cni/net.d/10-${CNI_NETWORK}.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "${CNI_NETWORK}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${NODE_DIR}/cni/ipam",
        "ranges": [[{"subnet": "${SUBNET}", "rangeStart": "${SUBNET_PREFIX}.10", "gateway": "${NODE_IP}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# --- forwarders: the bed's loopback-only API server and Jaeger, on the node address -
# The API server is reached by pods through the "kubernetes" Service (ClusterIP,
# kube-proxy) whose endpoint is this forwarder; TLS passes through unchanged.
for fwd in "apiserver ${APISERVER_PORT}" "otlp-grpc ${OTLP_GRPC_PORT}" "otlp-http ${OTLP_HTTP_PORT}"; do
  read -r name port <<<"${fwd}"
  start "forward-${name}" socat "TCP-LISTEN:${port},bind=${NODE_IP},reuseaddr,fork" "TCP:127.0.0.1:${port}"
done
wait_ready forward-apiserver "API server at ${NODE_IP}:${APISERVER_PORT}" \
  curl -fsS --cacert "${TESTBED_CA_FILE}" --cert "${TESTBED_ADMIN_CERT_FILE}" --key "${TESTBED_ADMIN_KEY_FILE}" \
  --resolve "kubernetes:${APISERVER_PORT}:${NODE_IP}" "https://kubernetes:${APISERVER_PORT}/readyz"
# The bed runs no endpoint reconciler: publish the API server's endpoint for
# the "kubernetes" Service ourselves.
"${K[@]}" apply -f - >"${LOGS}/endpointslice.log" 2>&1 <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-testbed-real-node
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: node.sh.agentrun-testbed
addressType: IPv4
endpoints:
- addresses: ["${NODE_IP}"]
  conditions: {ready: true}
ports:
- name: https
  port: ${APISERVER_PORT}
  protocol: TCP
EOF

# --- kubelet -------------------------------------------------------------------------
cat >"${NODE_DIR}/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The machine mounts cgroup v1 (deprecated by the kubelet, still supported).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: /
containerRuntimeEndpoint: unix://${CTRD_SOCK}
address: ${NODE_IP}
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
tlsCertFile: ${PKI}/kubelet-serving.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${TESTBED_CA_FILE}}
authorization:
  mode: Webhook
registerNode: true
registerWithTaints:
- key: ${NODE_LABEL}
  value: "true"
  effect: NoSchedule
podLogsDir: ${NODE_DIR}/pod-logs
volumePluginDir: ${NODE_DIR}/kubelet/volume-plugins
failSwapOn: false
# Like restrict_oom_score_adj above: leave the kubelet's own score alone.
oomScoreAdj: 0
# Nothing can be pulled: never collect images; disk-pressure eviction only near a full disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
serializeImagePulls: false
shutdownGracePeriod: 0s
rotateCertificates: false
serverTLSBootstrap: false
resolvConf: /etc/resolv.conf
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 0s
EOF
start kubelet "${KUBELET}" \
  --config="${NODE_DIR}/kubelet-config.yaml" \
  --kubeconfig="${NODE_DIR}/kubelet.kubeconfig" \
  --root-dir="${NODE_DIR}/kubelet" \
  --cert-dir="${PKI}" \
  --hostname-override="${NODE_NAME}" \
  --node-ip="${NODE_IP}" \
  --node-labels="${NODE_LABEL}=true" \
  --v=2
wait_ready kubelet "kubelet" curl -fsS "http://127.0.0.1:${KUBELET_HEALTHZ_PORT}/healthz"

# --- kube-proxy (iptables) -------------------------------------------------------------
cat >"${NODE_DIR}/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${NODE_DIR}/kube-proxy.kubeconfig
hostnameOverride: ${NODE_NAME}
mode: iptables
clusterCIDR: ${SUBNET}
bindAddress: ${NODE_IP}
healthzBindAddress: 127.0.0.1:${PROXY_HEALTHZ_PORT}
metricsBindAddress: 127.0.0.1:${PROXY_METRICS_PORT}
nodePortAddresses: ["${NODE_IP}/32"]
iptables:
  # Would set net.ipv4.conf.all.route_localnet=1 machine-wide.
  localhostNodePorts: false
  masqueradeAll: false
  syncPeriod: 30s
  minSyncPeriod: 0s
# Leave the machine's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
oomScoreAdj: 0
EOF
start kube-proxy "${KUBE_PROXY}" --config="${NODE_DIR}/kube-proxy-config.yaml" --v=2
wait_ready kube-proxy "kube-proxy" curl -fsS "http://127.0.0.1:${PROXY_HEALTHZ_PORT}/healthz"

node_ready() {
  [[ "$("${K[@]}" get node "${NODE_NAME}" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == "True" ]]
}
wait_ready kubelet "real node ${NODE_NAME} Ready" node_ready
service_rules() {
  iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q "default/kubernetes:https"
}
wait_ready kube-proxy "kube-proxy rules for the kubernetes Service" service_rules

# --- Prometheus: scrape pods of the node at their pod IPs ----------------------------
PROM_YML="${STATE_DIR}/prometheus/prometheus.yml"
mkdir -p "${NODE_DIR}/prometheus-targets"
if [[ -f "${PROM_YML}" ]]; then
  cp "${PROM_YML}" "${NODE_DIR}/prometheus.yml.orig"
  cat >>"${PROM_YML}" <<EOF
  # Added by node.sh: pods of the real node, scraped at their pod IP. The
  # distribution's Prometheus has no Kubernetes discovery: a test writes
  # [{"targets": ["POD_IP:PORT"], "labels": {...}}] to a *.json file in
  # ${NODE_DIR}/prometheus-targets/ (REAL_NODE_PROMETHEUS_TARGETS_DIR).
  - job_name: real-node-pods
    scrape_interval: 1s
    file_sd_configs:
      - files: ['${NODE_DIR}/prometheus-targets/*.json']
        refresh_interval: 2s
EOF
  "${PROMTOOL}" check config "${PROM_YML}" >"${LOGS}/promtool-check.log" 2>&1 ||
    testbed_die "promtool check config failed: $(cat "${LOGS}/promtool-check.log")"
  curl -fsS -X POST "${PROMETHEUS_URL}/-/reload" >/dev/null || testbed_die "Prometheus did not reload its config"
fi

# --- env ---------------------------------------------------------------------------
cat >>"${STATE_DIR}/env" <<EOF
${ENV_BEGIN}
export REAL_NODE_NAME='${NODE_NAME}'
export REAL_NODE_IP='${NODE_IP}'
export REAL_NODE_TAINT='${NODE_LABEL}=true:NoSchedule'
export REAL_NODE_LABEL='${NODE_LABEL}=true'
export REAL_NODE_POD_SUBNET='${SUBNET}'
export REAL_NODE_KUBELET_URL='https://${NODE_IP}:${KUBELET_PORT}'
export REAL_NODE_CONTAINERD_ADDRESS='${CTRD_SOCK}'
export REAL_NODE_DIR='${NODE_DIR}'
export REAL_NODE_PROMETHEUS_TARGETS_DIR='${NODE_DIR}/prometheus-targets'
export JAEGER_OTLP_GRPC_FOR_PODS='http://${NODE_IP}:${OTLP_GRPC_PORT}'
export JAEGER_OTLP_HTTP_FOR_PODS='http://${NODE_IP}:${OTLP_HTTP_PORT}'
${ENV_END}
EOF

UP_OK=1
testbed_log "real node ${NODE_NAME} up in $(($(date +%s) - START_TS))s; images: ctr --address ${CTRD_SOCK} -n k8s.io images import ARCHIVE"
