#!/usr/bin/env bash
# Usage: deploy/image/build.sh [OUT]
#
# Builds the exporter's container image on this machine, with no container registry and no container engine: the
# release binary (cargo build --release --locked), the runtime files from Debian packages (deploy/image/rootfs.sh:
# glibc and the other libraries the binary needs, CA certificates, passwd/group with nonroot 65532; no shell) and
# umoci (Debian) to assemble them into an OCI image, written as an OCI image archive (a tar of an OCI image layout,
# with a Docker-style manifest.json beside index.json) to OUT, by default
# target/image/agentrun-lifecycle-exporter-<appVersion>.oci.tar. The last line printed is OUT's absolute path.
#
# The image is the one the Containerfile builds: reference <exporter.image.repository>:<appVersion> from the chart
# (deploy/chart/values.yaml, deploy/chart/Chart.yaml), the chart's default image; user 65532:65532; entrypoint the
# binary, command `watch`; OCI labels source, version, licenses, revision, created.
#
# Reproducible for a given commit and set of Debian packages: every timestamp is SOURCE_DATE_EPOCH (default: the
# commit time of HEAD), files are sorted, owners numeric, and the umoci version is pinned.
#
# Environment:
#   AGENTRUN_EXPORTER_BINARY  use this binary instead of building it
#   SOURCE_DATE_EPOCH         timestamp of the image, its files and the archive
#   UMOCI_VERSION             Debian version of umoci to install when umoci is missing (default below)
#
# Tools it installs with apt-get when they are missing (as root): umoci, jq.
set -euo pipefail

UMOCI_VERSION=${UMOCI_VERSION:-0.4.7+ds-3+b7}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export LC_ALL=C TZ=UTC

log() { echo "build.sh: $*" >&2; }

# --- tools --------------------------------------------------------------------------------------------------------
need_apt=()
command -v umoci >/dev/null || need_apt+=("umoci=$UMOCI_VERSION")
command -v jq >/dev/null || need_apt+=(jq)
if ((${#need_apt[@]})); then
  if [[ $(id -u) != 0 ]]; then
    log "missing ${need_apt[*]}: install them (apt-get install ${need_apt[*]}) or run as root"
    exit 1
  fi
  log "installing ${need_apt[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# rootfs.sh reads apt's package lists; a fresh machine has none.
if ! apt-cache policy libc6 | grep -q 'Candidate: [0-9]'; then
  apt-get update -q >/dev/null
fi
umoci_version=$(umoci --version | awk '{print $3}')
[[ $umoci_version == "$UMOCI_VERSION" ]] || log "note: umoci $umoci_version, not the pinned $UMOCI_VERSION"

# --- what to build ------------------------------------------------------------------------------------------------
name=agentrun-lifecycle-exporter
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' deploy/chart/Chart.yaml)
repository=$(awk '/^exporter:/{e=1} e&&/^  image:/{i=1} e&&i&&/^    repository:/{print $2; exit}' deploy/chart/values.yaml)
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
if [[ -z $app_version || -z $repository ]]; then
  log "cannot read appVersion from deploy/chart/Chart.yaml or exporter.image.repository from values.yaml"
  exit 1
fi
if [[ $app_version != "$crate_version" ]]; then
  log "the chart's appVersion ($app_version) is not the crate's version ($crate_version): the image would be"
  log "tagged with one and report the other; make them equal"
  exit 1
fi
ref=$repository:$app_version
out=${1:-target/image/$name-$app_version.oci.tar}
mkdir -p "$(dirname "$out")"
out=$(realpath "$out")
revision=$(git rev-parse HEAD 2>/dev/null || true)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
source_url=$(sed -n 's/^home: *//p' deploy/chart/Chart.yaml)
description=$(sed -n 's/^description = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
license=$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml | head -n1)

# --- the binary ---------------------------------------------------------------------------------------------------
if [[ -n ${AGENTRUN_EXPORTER_BINARY:-} ]]; then
  binary=$(realpath "$AGENTRUN_EXPORTER_BINARY")
else
  log "cargo build --release --locked"
  # Without SOURCE_DATE_EPOCH: build scripts (ring's) track it, and the binary would be rebuilt whenever it changes.
  env -u SOURCE_DATE_EPOCH cargo build --release --locked --quiet
  target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
  binary=$target_dir/release/$name
fi
[[ -x $binary ]] || { log "no binary at $binary"; exit 1; }

# --- root file systems of the two layers: runtime files, then the binary --------------------------------------------
work=$root/target/image/work
rm -rf "$work"
mkdir -p "$work"
deploy/image/rootfs.sh "$binary" "$work/base" "$root/target/image/debs"
mkdir -p "$work/app/usr/local/bin"
install -m 0755 "$binary" "$work/app/usr/local/bin/$name"
chmod 0755 "$work/app" "$work/app/usr" "$work/app/usr/local" "$work/app/usr/local/bin"

# shellcheck source=deploy/image/lib.sh
source "$root/deploy/image/lib.sh"
layer_tar "$work/base" "$work/base.tar"
layer_tar "$work/app" "$work/app.tar"

# --- the OCI image ------------------------------------------------------------------------------------------------
layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:$app_version"
umoci raw add-layer --image "$layout:$app_version" --history.created "$created" \
  --history.created_by "deploy/image/rootfs.sh: runtime files from Debian packages" "$work/base.tar"
umoci raw add-layer --image "$layout:$app_version" --history.created "$created" \
  --history.created_by "the exporter binary (cargo build --release --locked)" "$work/app.tar"
labels=(
  "org.opencontainers.image.title=$name"
  "org.opencontainers.image.description=$description"
  "org.opencontainers.image.source=$source_url"
  "org.opencontainers.image.url=$source_url"
  "org.opencontainers.image.version=$app_version"
  "org.opencontainers.image.licenses=$license"
  "org.opencontainers.image.created=$created"
)
[[ -n $revision ]] && labels+=("org.opencontainers.image.revision=$revision")
config_args=(--no-history --created "$created" --os linux --architecture amd64 --author "proompteng"
  --config.user 65532:65532
  --config.entrypoint "/usr/local/bin/$name" --config.cmd watch
  --config.env "PATH=/usr/local/bin:/usr/bin:/bin"
  --config.env "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
  --config.exposedports 9464/tcp)
for l in "${labels[@]}"; do
  config_args+=(--config.label "$l" --manifest.annotation "$l")
done
umoci config --image "$layout:$app_version" "${config_args[@]}"
umoci gc --layout "$layout"

write_archive "$layout" "$ref" "$out"

compressed=$(jq '[.layers[].size] | add' "$manifest")
uncompressed=$(($(stat -c %s "$work/base.tar") + $(stat -c %s "$work/app.tar")))
log "image   $ref"
log "digest  $manifest_digest (manifest)"
log "layers  $compressed bytes compressed ($(awk -v b="$compressed" 'BEGIN{printf "%.1f", b/1048576}') MiB)," \
  "$uncompressed bytes as tar ($(awk -v b="$uncompressed" 'BEGIN{printf "%.1f", b/1048576}') MiB)"
log "tools   umoci $umoci_version, $(tar --version | head -n1), $(cargo --version 2>/dev/null || echo cargo: not used)"
log "load it: ctr -n k8s.io images import $out | docker load -i $out | skopeo copy oci-archive:$out:$app_version ..."
echo "$out"
