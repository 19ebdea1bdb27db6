# shellcheck shell=bash
# Shared helpers for the end-to-end test bed. Source it; do not execute it.
#
#   source tests/e2e/testbed/lib.sh
#   testbed_bin_dir          # directory holding every pinned binary (after build.sh)
#   testbed_bin kube-apiserver
#   testbed_start / testbed_alive / testbed_wait_ready   processes of up.sh and node.sh
#   testbed_sign / testbed_kubeconfig                    certificates and kubeconfigs
#
# Environment:
#   AGENTRUN_TESTBED_CACHE   cache root (default: $HOME/.cache/agentrun-lifecycle-exporter/testbed)
#   TESTBED_GO               go binary to use (default: `go` on PATH, else /usr/local/go/bin/go)
#   TESTBED_GOMODCACHE       module cache used by build.sh (default: $CACHE/go/mod)
#   TESTBED_GOCACHE          build cache used by build.sh  (default: $CACHE/go/build)

TESTBED_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export TESTBED_DIR

# shellcheck source-path=SCRIPTDIR source=versions.env
source "${TESTBED_DIR}/versions.env"

TESTBED_CACHE="${AGENTRUN_TESTBED_CACHE:-${HOME}/.cache/agentrun-lifecycle-exporter/testbed}"
export TESTBED_CACHE

testbed_log() {
  printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

testbed_die() {
  testbed_log "ERROR: $*"
  exit 1
}

# The go toolchain used for building.
testbed_go() {
  if [[ -n "${TESTBED_GO:-}" ]]; then
    printf '%s\n' "${TESTBED_GO}"
  elif command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    printf '%s\n' /usr/local/go/bin/go
  else
    return 1
  fi
}

# Per component+version install directory and stamp.
testbed_component_dir() { # NAME VERSION
  printf '%s/dist/%s-%s\n' "${TESTBED_CACHE}" "$1" "$2"
}

# A key for the full set of pinned versions: the combined bin dir of one
# versions.env lives under it, so checkouts pinning different versions can
# share one cache.
testbed_set_key() {
  printf '%s\n' "etcd=${ETCD_VERSION} kube=${KUBERNETES_VERSION} staging=${KUBERNETES_STAGING_VERSION} kwok=${KWOK_VERSION} jaeger=${JAEGER_MODULE_VERSION} helm=${HELM_VERSION}" |
    sha256sum | cut -c1-12
}

testbed_bin_dir() {
  printf '%s/bin/%s\n' "${TESTBED_CACHE}" "$(testbed_set_key)"
}

# Path of one binary. Built ones come from the bin dir; prometheus/promtool
# from PATH (distribution package) unless PROMETHEUS_BIN/PROMTOOL_BIN are set.
testbed_bin() { # NAME
  local name="$1" p
  case "${name}" in
    prometheus)
      p="${PROMETHEUS_BIN:-$(command -v prometheus || true)}"
      ;;
    promtool)
      p="${PROMTOOL_BIN:-$(command -v promtool || true)}"
      ;;
    *)
      p="$(testbed_bin_dir)/${name}"
      ;;
  esac
  if [[ -z "${p}" || ! -x "${p}" ]]; then
    testbed_log "missing binary '${name}' (run tests/e2e/testbed/build.sh; prometheus/promtool come from the 'prometheus' distribution package)"
    return 1
  fi
  printf '%s\n' "${p}"
}

# --- ports -------------------------------------------------------------------

# Ports already handed out by this shell (so two calls never return the same).
TESTBED_PICKED_PORTS=" "

# Echo a free TCP port on 127.0.0.1. Chosen below the kernel's ephemeral range,
# so outgoing connections of the test bed cannot take it before we bind it.
testbed_free_port() {
  local lo=20000 hi=32000 eph_lo _eph_hi port i
  if read -r eph_lo _eph_hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; then
    if ((eph_lo > 12000 && eph_lo <= 32768)); then
      hi=$((eph_lo - 1))
      lo=$((hi - 10000))
    fi
  fi
  for ((i = 0; i < 200; i++)); do
    port=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
    [[ "${TESTBED_PICKED_PORTS}" == *" ${port} "* ]] && continue
    if [[ -n "$(ss -Htan "( sport = :${port} )" 2>/dev/null)" ]]; then
      continue
    fi
    # Nothing answers there either.
    if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      continue
    fi
    TESTBED_PICKED_PORTS+="${port} "
    printf '%s\n' "${port}"
    return 0
  done
  testbed_die "could not find a free port"
}


# --- processes (up.sh, node.sh) ---------------------------------------------------
# The caller sets LOGS (log dir), PIDS (the "NAME PID" file down.sh reads) and
# TIMEOUT (seconds for testbed_wait_ready).

# testbed_start NAME COMMAND... : run in its own session, log to LOGS/NAME.log, record pid.
testbed_start() {
  local name="$1"
  shift
  setsid "$@" >"${LOGS}/${name}.log" 2>&1 </dev/null &
  local pid=$! i
  printf '%s %s\n' "${name}" "${pid}" >>"${PIDS}"
  # down.sh relies on the pid leading its own session.
  for ((i = 0; i < 20; i++)); do
    [[ "$(ps -o sid= -p "${pid}" 2>/dev/null | tr -d ' ')" == "${pid}" ]] && break
    sleep 0.05
  done
  testbed_log "started ${name} (pid ${pid})"
}

# True while the recorded process NAME runs (a zombie that nobody reaped yet
# counts as dead).
testbed_alive() { # NAME
  local pid state
  pid="$(awk -v n="$1" '$1 == n {print $2}' "${PIDS}" 2>/dev/null)"
  [[ -n "${pid}" ]] || return 1
  state="$(ps -o stat= -p "${pid}" 2>/dev/null | tr -d ' ')"
  [[ -n "${state}" && "${state}" != Z* ]]
}

# testbed_wait_ready NAME DESCRIPTION COMMAND... : runs COMMAND until it
# succeeds; fails at once when the process died, or after TIMEOUT seconds.
testbed_wait_ready() {
  local name="$1" what="$2" start now
  shift 2
  start=$(date +%s)
  while true; do
    if "$@" >/dev/null 2>&1; then
      now=$(date +%s)
      testbed_log "${what}: ready after $((now - start))s"
      return 0
    fi
    if ! testbed_alive "${name}"; then
      testbed_die "${name} exited during start-up (see ${LOGS}/${name}.log)"
    fi
    now=$(date +%s)
    if ((now - start >= TIMEOUT)); then
      testbed_die "${what}: not ready after ${TIMEOUT}s (see ${LOGS}/${name}.log)"
    fi
    sleep 0.3
  done
}

# The last lines of every non-empty DIR/*.log, on stderr (after a failed start-up).
testbed_show_logs() { # DIR
  local f
  for f in "$1"/*.log; do
    [[ -s "${f}" ]] || continue
    printf '==== last lines of %s ====\n' "${f}" >&2
    tail -n 15 "${f}" >&2 || true
  done
}

# --- certificates --------------------------------------------------------------

testbed_gen_key() { # FILE
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
}

# testbed_sign DIR CA_CERT CA_KEY NAME SUBJECT EXTENSIONS : DIR/NAME.key and
# DIR/NAME.crt, signed by the CA, valid for 30 days.
testbed_sign() {
  local dir="$1" ca_crt="$2" ca_key="$3" name="$4" subj="$5" ext="$6"
  testbed_gen_key "${dir}/${name}.key"
  openssl req -new -key "${dir}/${name}.key" -subj "${subj}" -out "${dir}/${name}.csr" 2>/dev/null
  printf '%b\n' "${ext}" >"${dir}/${name}.ext"
  openssl x509 -req -in "${dir}/${name}.csr" -CA "${ca_crt}" -CAkey "${ca_key}" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 \
    -extfile "${dir}/${name}.ext" -out "${dir}/${name}.crt" 2>/dev/null
  rm -f "${dir}/${name}.csr" "${dir}/${name}.ext"
}

# testbed_kubeconfig FILE SERVER CA_CERT USER CERT KEY : self-contained
# kubeconfig (embedded data), mode 0600.
testbed_kubeconfig() {
  local file="$1" server="$2" ca="$3" user="$4" cert="$5" key="$6"
  (
    umask 077
    cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: ${server}
    certificate-authority-data: $(base64 -w0 <"${ca}")
users:
- name: ${user}
  user:
    client-certificate-data: $(base64 -w0 <"${cert}")
    client-key-data: $(base64 -w0 <"${key}")
contexts:
- name: testbed
  context:
    cluster: testbed
    user: ${user}
    namespace: default
current-context: testbed
EOF
  )
}
