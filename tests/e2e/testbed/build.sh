#!/usr/bin/env bash
# Build every test-bed binary that is missing for the versions pinned in
# versions.env, from the Go module proxy, into the cache directory
# (${AGENTRUN_TESTBED_CACHE:-$HOME/.cache/agentrun-lifecycle-exporter/testbed}).
#
# Usage: tests/e2e/testbed/build.sh [--node] [--force COMPONENT]...
#   COMPONENT: etcd kubernetes kwok jaeger helm kubernetes-node pause
#   --node: also build the real node's kubelet and kube-proxy (component
#   kubernetes-node) and its pause image (component pause; needs gcc, umoci):
#   see node.sh. So does TESTBED_REAL_NODE=1.
#
# Environment: AGENTRUN_TESTBED_CACHE, TESTBED_GO, TESTBED_GOMODCACHE,
# TESTBED_GOCACHE (see lib.sh), TESTBED_BUILD_JOBS (go build -p, default 2),
# TESTBED_NICE (default 10), TESTBED_TRIM_GOCACHE=1 (drop the Go build cache
# after building). Go output of each build goes to $CACHE/logs/.
#
# Only one build.sh runs at a time per cache (a second one waits on the lock and
# then finds everything built). Prints the bin dir on stdout at the end; all
# progress goes to stderr.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

FORCE=" "
WITH_NODE="${TESTBED_REAL_NODE:-0}"
while (($#)); do
  case "$1" in
    --node)
      WITH_NODE=1
      shift
      ;;
    --force)
      [[ $# -ge 2 ]] || testbed_die "--force needs a component name"
      FORCE+="$2 "
      shift 2
      ;;
    -h | --help)
      sed -n '2,20p' "$0"
      exit 0
      ;;
    *) testbed_die "unknown argument: $1" ;;
  esac
done

GO="$(testbed_go)" || testbed_die "no go toolchain found (set TESTBED_GO or put go on PATH)"

mkdir -p "${TESTBED_CACHE}"
exec 9>"${TESTBED_CACHE}/build.lock"
if ! flock -n 9; then
  testbed_log "another build.sh is running on ${TESTBED_CACHE}; waiting for it"
  flock 9
fi

export GOMODCACHE="${TESTBED_GOMODCACHE:-${TESTBED_CACHE}/go/mod}"
export GOCACHE="${TESTBED_GOCACHE:-${TESTBED_CACHE}/go/build}"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false"
export GOWORK=off
unset GOBIN GOOS GOARCH
# Two jobs by default: CI machines are small. Everything runs under nice so an
# interactive shell stays usable during a cold build.
BUILD_JOBS="${TESTBED_BUILD_JOBS:-2}"
NICE=(nice -n "${TESTBED_NICE:-10}")

GO_VERSION="$("${GO}" env GOVERSION)"
testbed_log "cache: ${TESTBED_CACHE} (go ${GO_VERSION}, -p ${BUILD_JOBS})"

SUMMARY=()
TOTAL_START=$(date +%s)

gorun() {
  "${NICE[@]}" "${GO}" "$@"
}

# Path of a dependency's go.mod inside the module cache (downloads it).
mod_gomod() { # MODULE@VERSION
  gorun mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# build_component NAME VERSION FUNCTION
# Runs FUNCTION OUT_BIN_DIR SRC_DIR unless the stamp for NAME+VERSION exists.
build_component() {
  local name="$1" version="$2" fn="$3" dir tmp src start end log rc
  dir="$(testbed_component_dir "${name}" "${version}")"
  if [[ -f "${dir}/.stamp" && "${FORCE}" != *" ${name} "* ]]; then
    testbed_log "${name} ${version}: up to date"
    SUMMARY+=("$(printf '%-12s %-10s %s' "${name}" "${version}" "cached")")
    return 0
  fi
  testbed_log "${name} ${version}: building"
  start=$(date +%s)
  tmp="${dir}.partial"
  src="${TESTBED_CACHE}/src/${name}-${version}"
  log="${TESTBED_CACHE}/logs/${name}-${version}.log"
  rm -rf "${tmp}" "${src}"
  mkdir -p "${tmp}/bin" "${src}" "${TESTBED_CACHE}/logs"
  # The go tool's output goes to the log; shown only when the build fails.
  set +e
  (
    set -e
    "${fn}" "${tmp}/bin" "${src}"
  ) >"${log}" 2>&1
  rc=$?
  set -e
  if ((rc != 0)); then
    testbed_log "${name} ${version}: FAILED (exit ${rc}); last lines of ${log}:"
    tail -n 60 "${log}" >&2
    exit "${rc}"
  fi
  end=$(date +%s)
  printf 'component=%s\nversion=%s\ngo=%s\nbuilt=%s\nseconds=%s\n' \
    "${name}" "${version}" "${GO_VERSION}" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$((end - start))" >"${tmp}/.stamp"
  rm -rf "${dir}"
  mv "${tmp}" "${dir}"
  testbed_log "${name} ${version}: built in $((end - start))s"
  SUMMARY+=("$(printf '%-12s %-10s built in %ss' "${name}" "${version}" "$((end - start))")")
}

write_gomod() { # SRC MODULE_NAME
  printf 'module %s\n\ngo 1.26.0\n' "$2" >"$1/go.mod"
}

# --- etcd --------------------------------------------------------------------
build_etcd() {
  local out="$1" src="$2" m
  write_gomod "${src}" testbed.invalid/etcd
  cat >"${src}/main.go" <<'EOF'
// Command etcd is the etcd server, built from the go.etcd.io/etcd/server/v3 module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  # The server module's go.mod points its sibling modules at ../ directories;
  # pin the published siblings of the same release instead.
  (
    cd "${src}"
    gorun get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      gorun get "go.etcd.io/etcd/${m}@${ETCD_VERSION}"
    done
    gorun mod tidy
    gorun build -p "${BUILD_JOBS}" -ldflags '-s -w' -o "${out}/etcd" .
  )
}

# --- kubernetes --------------------------------------------------------------
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
# The real node's binaries (node.sh): a component of their own, so a cache
# built without them stays valid; built only with --node or TESTBED_REAL_NODE=1.
KUBE_NODE_CMDS=(kubelet kube-proxy)

build_kubernetes() {
  build_kube_cmds "$1" "$2" "${KUBE_CMDS[@]}"
}

build_kubernetes_node() {
  build_kube_cmds "$1" "$2" "${KUBE_NODE_CMDS[@]}"
}

# build_kube_cmds OUT SRC COMMAND... : the k8s.io/kubernetes/cmd/COMMANDs.
build_kube_cmds() {
  local out="$1" src="$2" kmod staging m minor major ldflags pkgs=() c vpkg
  shift 2
  kmod="$(mod_gomod "k8s.io/kubernetes@${KUBERNETES_VERSION}")"
  [[ -f "${kmod}" ]] || testbed_die "could not download k8s.io/kubernetes@${KUBERNETES_VERSION}"
  # Staging modules: replaced by ./staging/src/... in k8s.io/kubernetes and
  # required by it. Pin each to the matching published v0.x release.
  staging="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "${kmod}" | sort -u)"
  [[ -n "${staging}" ]] || testbed_die "no staging replace lines found in ${kmod}"
  {
    printf 'module testbed.invalid/kubernetes\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "${KUBERNETES_VERSION}"
    for m in ${staging}; do
      if grep -Eq "^[[:space:]]*${m//./\\.} v" "${kmod}"; then
        printf '\t%s => %s %s\n' "${m}" "${m}" "${KUBERNETES_STAGING_VERSION}"
      fi
    done
    printf ')\n'
  } >"${src}/go.mod"
  for c in "$@"; do
    pkgs+=("k8s.io/kubernetes/cmd/${c}")
  done
  major="${KUBERNETES_VERSION#v}"
  minor="${major#*.}"
  minor="${minor%%.*}"
  major="${major%%.*}"
  ldflags="-s -w"
  for vpkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${vpkg}.gitVersion=${KUBERNETES_VERSION}"
    ldflags+=" -X ${vpkg}.gitMajor=${major} -X ${vpkg}.gitMinor=${minor}"
    ldflags+=" -X ${vpkg}.gitTreeState=clean"
    ldflags+=" -X ${vpkg}.buildDate=1970-01-01T00:00:00Z"
  done
  (
    cd "${src}"
    gorun get -tool "${pkgs[@]/%/@${KUBERNETES_VERSION}}"
    gorun build -p "${BUILD_JOBS}" -ldflags "${ldflags}" -o "${out}/" "${pkgs[@]}"
  )
}

# --- pause image (real node) ---------------------------------------------------
# The sandbox ("pause") image of the real node's containerd, made here with no
# registry: Kubernetes' own build/pause/linux/pause.c from the pinned
# k8s.io/kubernetes module, compiled with gcc -static, packed by umoci into an
# OCI image archive (image/pause.oci.tar, named ${PAUSE_IMAGE}) for
# `ctr images import`.
build_pause() {
  local out="$1" src="$2" kdir created
  for tool in gcc umoci jq tar; do
    command -v "${tool}" >/dev/null 2>&1 || testbed_die "'${tool}' is required for the pause image (deps.sh)"
  done
  kdir="$(gorun mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "${kdir}/build/pause/linux/pause.c" ]] || testbed_die "no build/pause/linux/pause.c in k8s.io/kubernetes@${KUBERNETES_VERSION}"
  mkdir -p "${src}/rootfs" "${out}/../image"
  gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_VERSION}-${KUBERNETES_VERSION}" \
    -o "${src}/rootfs/pause" "${kdir}/build/pause/linux/pause.c"
  strip "${src}/rootfs/pause"
  chmod 0755 "${src}/rootfs" "${src}/rootfs/pause"
  created=1970-01-01T00:00:00Z
  tar -C "${src}/rootfs" --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime=@0 --sort=name --owner=0 --group=0 --numeric-owner -cf "${src}/layer.tar" pause
  umoci init --layout "${src}/layout"
  umoci new --image "${src}/layout:${PAUSE_VERSION}"
  umoci raw add-layer --image "${src}/layout:${PAUSE_VERSION}" --history.created "${created}" \
    --history.created_by "gcc -static build/pause/linux/pause.c" "${src}/layer.tar"
  umoci config --image "${src}/layout:${PAUSE_VERSION}" --no-history --created "${created}" \
    --os linux --architecture amd64 --config.user 65535:65535 --config.entrypoint /pause
  umoci gc --layout "${src}/layout"
  jq -c --arg ref "${PAUSE_IMAGE}" '.manifests[0].annotations["io.containerd.image.name"] = $ref' \
    "${src}/layout/index.json" >"${src}/index.json"
  mv "${src}/index.json" "${src}/layout/index.json"
  tar -C "${src}/layout" --format=posix --mtime=@0 --sort=name --owner=0 --group=0 --numeric-owner \
    -cf "${out}/../image/pause.oci.tar" oci-layout index.json blobs
}

# --- kwok --------------------------------------------------------------------
build_kwok() {
  local out="$1" src="$2"
  (
    cd "${src}"
    GOBIN="${out}" gorun install -p "${BUILD_JOBS}" -ldflags '-s -w' "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  )
}

# --- jaeger ------------------------------------------------------------------
build_jaeger() {
  local out="$1" src="$2" jmod
  jmod="$(mod_gomod "github.com/jaegertracing/jaeger@${JAEGER_MODULE_VERSION}")"
  [[ -f "${jmod}" ]] || testbed_die "could not download github.com/jaegertracing/jaeger@${JAEGER_MODULE_VERSION}"
  write_gomod "${src}" testbed.invalid/jaeger
  # go install ignores the module's own version-to-version replace lines;
  # carry them over (local-path replaces are skipped).
  {
    printf '\n'
    awk '
      /^replace \(/ { inblock = 1; next }
      inblock && /^\)/ { inblock = 0; next }
      inblock && $2 == "=>" && $3 !~ /^\./ { print "replace " $0; next }
      /^replace / && $3 == "=>" && $4 !~ /^\./ { print }
    ' "${jmod}"
  } >>"${src}/go.mod"
  (
    cd "${src}"
    gorun get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@${JAEGER_MODULE_VERSION}"
    gorun build -p "${BUILD_JOBS}" \
      -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=${JAEGER_V2_VERSION}" \
      -o "${out}/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
  )
}

# --- helm --------------------------------------------------------------------
build_helm() {
  local out="$1" src="$2" hmod kver major minor ldflags
  hmod="$(mod_gomod "helm.sh/helm/v3@${HELM_VERSION}")"
  [[ -f "${hmod}" ]] || testbed_die "could not download helm.sh/helm/v3@${HELM_VERSION}"
  # Same version stamping as helm's Makefile (Capabilities.KubeVersion default).
  kver="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "${hmod}")"
  kver="${kver#v}"
  major=$((${kver%%.*} + 1))
  minor="${kver#*.}"
  minor="${minor%%.*}"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${major}"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor}"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${major}"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}"
  (
    cd "${src}"
    GOBIN="${out}" gorun install -p "${BUILD_JOBS}" -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  )
}

build_component etcd "${ETCD_VERSION}" build_etcd
build_component kwok "${KWOK_VERSION}" build_kwok
build_component helm "${HELM_VERSION}" build_helm
build_component jaeger "${JAEGER_MODULE_VERSION}" build_jaeger
build_component kubernetes "${KUBERNETES_VERSION}" build_kubernetes
if [[ "${WITH_NODE}" == 1 ]]; then
  build_component kubernetes-node "${KUBERNETES_VERSION}" build_kubernetes_node
  build_component pause "${PAUSE_VERSION}" build_pause
fi

# Combined bin dir for this set of versions (symlinks into dist/).
BIN_DIR="$(testbed_bin_dir)"
mkdir -p "${BIN_DIR}"
link_bins() { # NAME VERSION
  local d f
  d="$(testbed_component_dir "$1" "$2")/bin"
  for f in "${d}"/*; do
    ln -sfn "${f}" "${BIN_DIR}/$(basename "${f}")"
  done
}
link_bins etcd "${ETCD_VERSION}"
link_bins kwok "${KWOK_VERSION}"
link_bins helm "${HELM_VERSION}"
link_bins jaeger "${JAEGER_MODULE_VERSION}"
link_bins kubernetes "${KUBERNETES_VERSION}"
if [[ -f "$(testbed_component_dir kubernetes-node "${KUBERNETES_VERSION}")/.stamp" ]]; then
  link_bins kubernetes-node "${KUBERNETES_VERSION}"
fi

for tool in prometheus promtool; do
  if ! command -v "${tool}" >/dev/null 2>&1 && [[ -z "${PROMETHEUS_BIN:-}" ]]; then
    testbed_log "WARNING: '${tool}' not on PATH; install the distribution package: apt-get install -y --no-install-recommends prometheus"
  fi
done

# Optionally drop the Go build cache (several GiB) once everything is built;
# the module cache is kept. The next version bump then recompiles from source.
if [[ "${TESTBED_TRIM_GOCACHE:-0}" == 1 ]]; then
  testbed_log "TESTBED_TRIM_GOCACHE=1: removing the Go build cache ${GOCACHE}"
  gorun clean -cache
fi

TOTAL_END=$(date +%s)
testbed_log "summary:"
for line in "${SUMMARY[@]}"; do
  testbed_log "  ${line}"
done
testbed_log "  total: $((TOTAL_END - TOTAL_START))s"
testbed_log "bin dir: ${BIN_DIR}"
printf '%s\n' "${BIN_DIR}"
