# shellcheck shell=bash
# Shared helpers for the end-to-end test bed. Source it; do not execute it.
#
#   source tests/e2e/testbed/lib.sh
#   testbed_bin_dir          # directory holding every pinned binary (after build.sh)
#   testbed_bin kube-apiserver
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

