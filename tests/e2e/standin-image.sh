#!/usr/bin/env bash
# Usage: tests/e2e/standin-image.sh [OUT]
#
# Builds the image of the stand-in agents controller (tests/standin/controller.rs, the `standin-controller` example:
# a test tool, not the product) the way deploy/image/build.sh builds the exporter's: the release binary
# (cargo build --release --locked --example standin-controller), the runtime files from Debian packages
# (deploy/image/rootfs.sh: the binary's libraries, CA certificates, passwd/group with nonroot 65532; no shell),
# assembled by umoci into an OCI image archive (an OCI image layout in a tar, with a Docker-style manifest.json) at
# OUT, by default target/image/agentrun-standin-controller-<version>.oci.tar. The last line printed is OUT's
# absolute path.
#
# The image: user 65532:65532; entrypoint /usr/local/bin/standin-controller (no arguments); env PORT=8080 (the
# agents chart's `http` port, where /health and /ready answer); reference STANDIN_IMAGE_REF, default
# localhost/agentrun-standin-controller:<crate version>, in index.json (io.containerd.image.name) and manifest.json.
# Timestamps are SOURCE_DATE_EPOCH (default: the commit time of HEAD).
#
# Environment:
#   STANDIN_CONTROLLER_BINARY  use this binary instead of building it
#   STANDIN_IMAGE_REF          the image reference to record in the archive
#   SOURCE_DATE_EPOCH          timestamp of the image, its files and the archive
#
# Tools it installs with apt-get when they are missing (as root): umoci, jq.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export LC_ALL=C TZ=UTC
log() { echo "standin-image.sh: $*" >&2; }

need_apt=()
command -v umoci >/dev/null || need_apt+=(umoci)
command -v jq >/dev/null || need_apt+=(jq)
if ((${#need_apt[@]})); then
  if [[ $(id -u) != 0 ]]; then
    log "missing ${need_apt[*]}: install them (apt-get install ${need_apt[*]}) or run as root"
    exit 1
  fi
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# rootfs.sh reads apt's package lists; a fresh machine has none.
if ! apt-cache policy libc6 | grep -q 'Candidate: [0-9]'; then
  apt-get update -q >/dev/null
fi

name=agentrun-standin-controller
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
# Fully qualified: the kubelet looks a short name up as docker.io/library/<name>.
ref=${STANDIN_IMAGE_REF:-localhost/$name:$version}
out=${1:-target/image/$name-$version.oci.tar}
mkdir -p "$(dirname "$out")"
out=$(realpath "$out")
revision=$(git rev-parse HEAD 2>/dev/null || true)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

if [[ -n ${STANDIN_CONTROLLER_BINARY:-} ]]; then
  binary=$(realpath "$STANDIN_CONTROLLER_BINARY")
else
  log "cargo build --release --locked --example standin-controller"
  # Without SOURCE_DATE_EPOCH: build scripts track it, and the binary would be rebuilt whenever it changes.
  env -u SOURCE_DATE_EPOCH cargo build --release --locked --quiet --example standin-controller
  target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
  binary=$target_dir/release/examples/standin-controller
fi
[[ -x $binary ]] || { log "no binary at $binary"; exit 1; }

work=$root/target/image/standin-work
rm -rf "$work"
mkdir -p "$work"
deploy/image/rootfs.sh "$binary" "$work/base" "$root/target/image/debs"
mkdir -p "$work/app/usr/local/bin"
install -m 0755 "$binary" "$work/app/usr/local/bin/standin-controller"
chmod 0755 "$work/app" "$work/app/usr" "$work/app/usr/local" "$work/app/usr/local/bin"

# shellcheck source=deploy/image/lib.sh
source "$root/deploy/image/lib.sh"
layer_tar "$work/base" "$work/base.tar"
layer_tar "$work/app" "$work/app.tar"

layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci raw add-layer --image "$layout:$version" --history.created "$created" \
  --history.created_by "deploy/image/rootfs.sh: runtime files from Debian packages" "$work/base.tar"
umoci raw add-layer --image "$layout:$version" --history.created "$created" \
  --history.created_by "the stand-in controller (cargo build --release --example standin-controller)" "$work/app.tar"
labels=(
  "org.opencontainers.image.title=$name"
  "org.opencontainers.image.description=Stand-in for the agents controller, for end-to-end tests of the exporter"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.created=$created"
)
[[ -n $revision ]] && labels+=("org.opencontainers.image.revision=$revision")
config_args=(--no-history --created "$created" --os linux --architecture amd64
  --config.user 65532:65532
  --config.entrypoint /usr/local/bin/standin-controller
  --config.env "PATH=/usr/local/bin:/usr/bin:/bin"
  --config.env "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
  --config.env "PORT=8080"
  --config.exposedports 8080/tcp)
for l in "${labels[@]}"; do
  config_args+=(--config.label "$l" --manifest.annotation "$l")
done
umoci config --image "$layout:$version" "${config_args[@]}"
umoci gc --layout "$layout"

write_archive "$layout" "$ref" "$out"

log "image   $ref"
log "digest  $manifest_digest (manifest)"
log "layers  $(jq '[.layers[].size] | add' "$manifest") bytes compressed"
rm -rf "$work"
echo "$out"
