#!/usr/bin/env bash
# Usage: deploy/image/test.sh [ARCHIVE]
#
# Checks the image archive that deploy/image/build.sh writes (with no ARCHIVE: builds it first, at build.sh's
# default path target/image/agentrun-lifecycle-exporter-<appVersion>.oci.tar, then builds it a second time and
# checks that the two archives are identical):
#   - the OCI layout: every blob's digest, the layers' diff_ids, the manifest.json for `docker load`;
#   - size: at most 30 MiB of compressed layers (printed, with the uncompressed size);
#   - the reference is the chart's default image (<exporter.image.repository>:<appVersion>, rendered by Helm when
#     $HELM or helm is there);
#   - config: numeric non-root user 65532:65532, entrypoint the binary, command `watch`, the OCI labels (source,
#     version = appVersion, licenses = MIT);
#   - root file system (unpacked with umoci): no shell (no /bin/sh, no sh/bash/dash/busybox anywhere), no setuid
#     file, passwd/group entries of 65532, the CA bundle parses;
#   - the binary runs from the unpacked root file system, chrooted, as 65532, with an empty environment: `--version`
#     and a `replay` of a recording of the real controller, whose output equals the host binary's;
#   - the Containerfile declares the same user, entrypoint, command, labels and version and uses rootfs.sh.
# Needs root (or unprivileged user namespaces) for umoci unpack and chroot; umoci, jq, openssl.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
export LC_ALL=C

failed=0
passed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
ko() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else ko "$what"; fi
}

name=agentrun-lifecycle-exporter
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' deploy/chart/Chart.yaml)
repository=$(awk '/^exporter:/{e=1} e&&/^  image:/{i=1} e&&i&&/^    repository:/{print $2; exit}' deploy/chart/values.yaml)
home_url=$(sed -n 's/^home: *//p' deploy/chart/Chart.yaml)
ref=$repository:$app_version

tmp=$(mktemp -d)
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

# --- the archive --------------------------------------------------------------------------------------------------
if (($#)); then
  archive=$(realpath "$1")
else
  started=$SECONDS
  archive=$(deploy/image/build.sh | tail -n1) || { echo "FAIL build.sh"; exit 1; }
  echo "built $archive in $((SECONDS - started)) s"
  # Second build from the same binary and sources: byte for byte the same archive.
  target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
  second=$(AGENTRUN_EXPORTER_BINARY=$target_dir/release/$name deploy/image/build.sh "$tmp/second.oci.tar" 2>/dev/null |
    tail -n1)
  if cmp -s "$archive" "$second"; then
    ok "reproducible: a second build gives the same archive ($(sha256sum <"$archive" | cut -c1-16)...)"
  else
    ko "reproducible: a second build gives a different archive"
  fi
fi
if ! command -v umoci >/dev/null || ! command -v jq >/dev/null; then
  echo "FAIL needs umoci and jq (build.sh installs them)"
  exit 1
fi

layout=$tmp/layout
mkdir -p "$layout"
tar -C "$layout" -xf "$archive" || { echo "FAIL $archive is not a tar"; exit 1; }
blob() { echo "$layout/blobs/sha256/${1#sha256:}"; }

check "OCI layout (oci-layout 1.0.0, one manifest in index.json)" \
  test "$(jq -r .imageLayoutVersion "$layout/oci-layout")" = 1.0.0 -a "$(jq '.manifests | length' "$layout/index.json")" = 1
bad=0
for f in "$layout"/blobs/sha256/*; do
  [[ $(sha256sum <"$f" | cut -d' ' -f1) == "$(basename "$f")" ]] || { echo "     $f: digest differs"; bad=1; }
done
check "every blob matches its digest" test $bad = 0

manifest_digest=$(jq -r '.manifests[0].digest' "$layout/index.json")
manifest=$(blob "$manifest_digest")
config=$(blob "$(jq -r .config.digest "$manifest")")
check "tag (org.opencontainers.image.ref.name) is the chart's appVersion $app_version" \
  test "$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$layout/index.json")" = "$app_version"
check "reference (io.containerd.image.name, manifest.json RepoTags) is $ref" test \
  "$(jq -r '.manifests[0].annotations["io.containerd.image.name"]' "$layout/index.json") $(jq -r '.[0].RepoTags[0]' "$layout/manifest.json")" \
  = "$ref $ref"
check "manifest.json names the config and layers of the OCI manifest" test \
  "$(jq -c '[.[0].Config] + .[0].Layers | map(ltrimstr("blobs/sha256/"))' "$layout/manifest.json")" = \
  "$(jq -c '[.config.digest] + [.layers[].digest] | map(ltrimstr("sha256:"))' "$manifest")"

helm=${HELM:-$(command -v helm || true)}
if [[ -n $helm && -x $helm ]]; then
  rendered=$("$helm" template t deploy/chart --set standalone.enabled=true 2>&1 | sed -n 's/^ *image: *"\(.*\)"$/\1/p')
  check "the chart's default image (helm template) is the image's reference: $rendered" test "$rendered" = "$ref"
else
  echo "skip the chart render (no helm; \$HELM): compared with values.yaml and Chart.yaml only"
fi

# --- size ---------------------------------------------------------------------------------------------------------
compressed=$(jq '[.layers[].size] | add' "$manifest")
uncompressed=0
bad=0
i=0
for digest in $(jq -r '.layers[].digest' "$manifest"); do
  f=$(blob "$digest")
  size=$(gzip -dc <"$f" | wc -c)
  uncompressed=$((uncompressed + size))
  diff_id=sha256:$(gzip -dc <"$f" | sha256sum | cut -d' ' -f1)
  [[ $diff_id == "$(jq -r ".rootfs.diff_ids[$i]" "$config")" ]] || bad=1
  i=$((i + 1))
done
check "the config's diff_ids are the uncompressed layers' digests" test $bad = 0
mib() { awk -v b="$1" 'BEGIN{printf "%.2f MiB", b/1048576}'; }
echo "     size: $(jq '.layers | length' "$manifest") layers, $compressed bytes compressed ($(mib "$compressed")), $uncompressed bytes uncompressed ($(mib "$uncompressed"))"
check "at most 30 MiB of compressed layers ($(mib "$compressed"))" test "$compressed" -le $((30 * 1024 * 1024))

# --- config -------------------------------------------------------------------------------------------------------
cfg() { jq -c "$1" "$config"; }
check "user is numeric and non-root: $(cfg .config.User)" test "$(cfg .config.User)" = '"65532:65532"'
check "entrypoint is the binary, command watch" \
  test "$(cfg '[.config.Entrypoint, .config.Cmd]')" = "[[\"/usr/local/bin/$name\"],[\"watch\"]]"
check "os/architecture linux/amd64" test "$(cfg '[.os, .architecture]')" = '["linux","amd64"]'
label() { jq -r --arg k "org.opencontainers.image.$1" '.config.Labels[$k] // ""' "$config"; }
check "label org.opencontainers.image.source = $(label source)" test "$(label source)" = "$home_url"
check "label org.opencontainers.image.version = $(label version) (appVersion)" test "$(label version)" = "$app_version"
check "label org.opencontainers.image.licenses = $(label licenses)" test "$(label licenses)" = MIT
check "labels revision and created are set" test -n "$(label revision)" -a -n "$(label created)"

# --- root file system ---------------------------------------------------------------------------------------------
unpack_opts=()
[[ $(id -u) == 0 ]] || unpack_opts=(--rootless)
if ! umoci unpack "${unpack_opts[@]}" --image "$layout:$app_version" "$tmp/bundle" >"$tmp/unpack.log" 2>&1; then
  cat "$tmp/unpack.log"
  ko "umoci unpack"
  echo "image: $passed passed, $failed failed"
  exit 1
fi
rootfs=$tmp/bundle/rootfs
check "no /bin/sh" test ! -e "$rootfs/bin/sh" -a ! -L "$rootfs/bin/sh"
shells=$(find "$rootfs" ! -type d \( -name sh -o -name bash -o -name dash -o -name ash -o -name zsh -o -name busybox \
  -o -name apt -o -name dpkg \) -printf '/%P\n')
check "no shell, busybox or package manager anywhere${shells:+: $shells}" test -z "$shells"
executables=$(find "$rootfs" -type f -perm /111 -printf '/%P\n' | grep -v '\.so' | sort | tr '\n' ' ')
check "the only executable is the exporter (shared objects aside): $executables" \
  test "$executables" = "/usr/local/bin/$name "
suid=$(find "$rootfs" -perm /6000 -printf '/%P\n')
check "no setuid or setgid file${suid:+: $suid}" test -z "$suid"
check "passwd and group have nonroot 65532" grep -q '^nonroot:x:65532:65532:' "$rootfs/etc/passwd"
check "group has nonroot 65532" grep -q '^nonroot:x:65532:$' "$rootfs/etc/group"
if [[ $(id -u) == 0 ]]; then
  check "/home/nonroot belongs to 65532" test "$(stat -c %u:%g "$rootfs/home/nonroot")" = 65532:65532
fi
certs=$(openssl crl2pkcs7 -nocrl -certfile "$rootfs/etc/ssl/certs/ca-certificates.crt" 2>/dev/null |
  openssl pkcs7 -print_certs -noout 2>/dev/null | grep -c '^subject=')
check "CA bundle /etc/ssl/certs/ca-certificates.crt parses ($certs certificates)" test "${certs:-0}" -gt 100

# --- the binary runs in it ----------------------------------------------------------------------------------------
chroot_bin=$(command -v chroot)
in_image() { # runs a command chrooted in the image's root file system, as 65532, with an empty environment
  if [[ $(id -u) == 0 ]]; then
    env -i "$chroot_bin" --userspec=65532:65532 "$rootfs" "$@"
  else
    env -i "$(command -v unshare)" --map-root-user "$chroot_bin" "$rootfs" "$@"
  fi
}
version=$(in_image "/usr/local/bin/$name" --version 2>&1)
check "the binary runs from the image: $version" test "$version" = "$name $app_version"
cp tests/fixtures/upstream/job-success.jsonl "$tmp/bundle/rootfs/tmp/" 2>/dev/null
chmod 0644 "$rootfs/tmp/job-success.jsonl"
in_image "/usr/local/bin/$name" replay --format json /tmp/job-success.jsonl >"$tmp/replay-image.json" 2>"$tmp/replay.err"
host_bin=$rootfs/usr/local/bin/$name
env -i "$host_bin" replay --format json tests/fixtures/upstream/job-success.jsonl >"$tmp/replay-host.json" 2>/dev/null
if [[ -s $tmp/replay-image.json ]] && cmp -s "$tmp/replay-image.json" "$tmp/replay-host.json"; then
  ok "replay of a real controller recording in the image: the host's output ($(wc -c <"$tmp/replay-image.json") bytes)"
else
  ko "replay in the image"
  head -c 2000 "$tmp/replay.err"
fi

# --- the Containerfile agrees -------------------------------------------------------------------------------------
cf=Containerfile
check "Containerfile: USER 65532:65532" grep -qx 'USER 65532:65532' $cf
check "Containerfile: entrypoint and command" grep -qxF "ENTRYPOINT [\"/usr/local/bin/$name\"]" $cf
check "Containerfile: CMD [\"watch\"]" grep -qxF 'CMD ["watch"]' $cf
check "Containerfile: VERSION defaults to appVersion $app_version" grep -qx "ARG VERSION=$app_version" $cf
check "Containerfile: the runtime stage is FROM scratch, filled by rootfs.sh" \
  bash -c "grep -qx 'FROM scratch' $cf && grep -q 'deploy/image/rootfs.sh' $cf"
for key in source version licenses; do
  check "Containerfile: label org.opencontainers.image.$key" grep -q "org.opencontainers.image.$key=" $cf
done
check "Containerfile: label source is the chart's home" grep -qF "org.opencontainers.image.source=\"$home_url\"" $cf

echo "image: $passed passed, $failed failed"
((failed == 0))
