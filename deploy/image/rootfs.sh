#!/usr/bin/env bash
# Usage: deploy/image/rootfs.sh BINARY OUT_DIR [DEB_CACHE]
#
# Lays out the runtime root file system of the image (everything but the exporter binary) in OUT_DIR, from Debian
# packages: the shared libraries BINARY needs (its `ldd` closure, each taken from the Debian package that owns it,
# the loader included), the CA certificates bundle, /etc/services and /etc/protocols, /etc/os-release, a
# /etc/passwd and /etc/group with root and nonroot (65532), /etc/nsswitch.conf, /tmp, /home/nonroot, each package's
# copyright file and a dpkg status file per package (/var/lib/dpkg/status.d/, as distroless images have them, so
# that image scanners see the glibc version). No shell, no package manager, no other binary.
#
# Used by deploy/image/build.sh on this machine and by the Containerfile's build stage, so both images have the same
# files. Needs a Debian system with apt lists (apt-get update): apt-get, dpkg-deb, dpkg-query, ldd. The packages are
# the newest that apt offers (`apt-cache policy`: the candidate), downloaded with `apt-get download` into DEB_CACHE
# (default: a temporary directory) and unpacked with `dpkg-deb -x`; nothing is installed.
set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 BINARY OUT_DIR [DEB_CACHE]" >&2
  exit 2
fi
binary=$(realpath "$1")
out=$2
cache=${3:-}
if [[ -z $cache ]]; then
  cache=$(mktemp -d)
  trap 'rm -rf "$cache"' EXIT
fi
mkdir -p "$cache"
cache=$(realpath "$cache")
export LC_ALL=C

# Packages whose files the image always has, beside those that own the binary's libraries.
base_packages=(libc6 ca-certificates netbase base-files)

# --- the binary's libraries, from `ldd`, mapped to their Debian packages -----------------------------------------
# Lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)".
ldd_out=$(ldd "$binary")
if grep -q "not found" <<<"$ldd_out"; then
  echo "rootfs.sh: $binary needs a library this system lacks:" >&2
  echo "$ldd_out" >&2
  exit 1
fi
lib_paths=()
while read -r line; do
  path=
  if [[ $line == *" => /"* ]]; then
    path=${line#* => }
    path=${path%% (*}
  elif [[ $line == /* ]]; then
    path=${line%% (*}
  fi
  [[ -n $path ]] && lib_paths+=("$path")
done <<<"$ldd_out"

declare -A owner=()     # path inside the package (as dpkg knows it) -> package
packages=("${base_packages[@]}")
for path in "${lib_paths[@]}"; do
  # With merged /usr, ldd may name /usr/lib/... where the package has /lib/... (or the other way round).
  candidates=("$path")
  case $path in
    /usr/*) candidates+=("${path#/usr}") ;;
    *) candidates+=("/usr$path") ;;
  esac
  found=
  for c in "${candidates[@]}"; do
    if pkg=$(dpkg-query -S "$c" 2>/dev/null | grep -v '^diversion' | head -n1 | cut -d: -f1) && [[ -n $pkg ]]; then
      owner[$c]=$pkg
      packages+=("$pkg")
      found=1
      break
    fi
  done
  if [[ -z $found ]]; then
    echo "rootfs.sh: $path (needed by $binary) belongs to no Debian package; the image takes its libraries only" >&2
    echo "from Debian packages" >&2
    exit 1
  fi
done
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)

# --- download and unpack ------------------------------------------------------------------------------------------
pkgroot=$cache/root
rm -rf "$pkgroot"
mkdir -p "$pkgroot"
declare -A debfile=()
# fetch PKG: downloads the candidate version of PKG (once) and unpacks it in $pkgroot/PKG.
fetch() {
  local pkg=$1 version arch file
  [[ -n ${debfile[$pkg]:-} ]] && return 0
  version=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
  if [[ -z $version || $version == "(none)" ]]; then
    echo "rootfs.sh: apt offers no $pkg (run apt-get update first)" >&2
    exit 1
  fi
  arch=$(apt-cache show "$pkg=$version" | sed -n 's/^Architecture: //p' | head -n1)
  file=${pkg}_${version//:/%3a}_${arch}.deb
  if [[ ! -s $cache/$file ]]; then
    (cd "$cache" && apt-get download -q "$pkg=$version" >/dev/null 2>"$cache/apt.err") || {
      cat "$cache/apt.err" >&2
      exit 1
    }
  fi
  debfile[$pkg]=$cache/$file
  mkdir -p "$pkgroot/$pkg"
  dpkg-deb -x "$cache/$file" "$pkgroot/$pkg"
  echo "rootfs.sh: $pkg $version" >&2
}
for pkg in "${packages[@]}"; do
  fetch "$pkg"
done

# --- lay out the root file system ---------------------------------------------------------------------------------
rm -rf "$out"
mkdir -p "$out"
out=$(realpath "$out")

# Copies /PATH (a file or a symbolic link, following the link's chain) from package PKG's tree.
copy_from() {
  local pkg=$1 path=$2 src target
  src=$pkgroot/$pkg$path
  if [[ ! -e $src && ! -L $src ]]; then
    echo "rootfs.sh: $path is not in package $pkg" >&2
    exit 1
  fi
  (cd "$pkgroot/$pkg" && cp -P --preserve=mode --parents ".$path" "$out/")
  if [[ -L $src ]]; then
    target=$(readlink "$src")
    [[ $target == /* ]] || target=$(dirname "$path")/$target
    copy_from "$pkg" "$(realpath -sm "$target")"
  fi
}

for path in "${!owner[@]}"; do
  copy_from "${owner[$path]}" "$path"
done

# CA certificates: the bundle update-ca-certificates would write (every certificate of the package, in name order).
mkdir -p "$out/etc/ssl/certs"
: >"$out/etc/ssl/certs/ca-certificates.crt"
while IFS= read -r crt; do
  cat "$crt" >>"$out/etc/ssl/certs/ca-certificates.crt"
  [[ -z $(tail -c1 "$crt") ]] || echo >>"$out/etc/ssl/certs/ca-certificates.crt"
done < <(find "$pkgroot/ca-certificates/usr/share/ca-certificates" -name '*.crt' | sort)
if ! grep -q "BEGIN CERTIFICATE" "$out/etc/ssl/certs/ca-certificates.crt"; then
  echo "rootfs.sh: no certificate in the ca-certificates package" >&2
  exit 1
fi

copy_from netbase /etc/services
copy_from netbase /etc/protocols
copy_from base-files /usr/lib/os-release
ln -s ../usr/lib/os-release "$out/etc/os-release"

cat >"$out/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$out/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
cat >"$out/etc/nsswitch.conf" <<'EOF'
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
EOF

# Copyright files and dpkg status entries of every package the image takes files from.
mkdir -p "$out/var/lib/dpkg/status.d"
for pkg in "${packages[@]}"; do
  doc=$pkgroot/$pkg/usr/share/doc/$pkg
  if [[ -L $doc ]]; then
    # A doc directory that links to another package's (libgcc-s1 -> gcc-12-base): that package's copyright.
    other=$(basename "$(readlink "$doc")")
    fetch "$other"
    install -D -m 0644 "$pkgroot/$other/usr/share/doc/$other/copyright" "$out/usr/share/doc/$pkg/copyright"
  else
    copy_from "$pkg" "/usr/share/doc/$pkg/copyright"
  fi
  dpkg-deb -f "${debfile[$pkg]}" >"$out/var/lib/dpkg/status.d/$pkg"
done

mkdir -p "$out/tmp" "$out/home/nonroot" "$out/root"
# Normalised modes (the umask and the packages' modes of directories do not matter), then the exceptions.
find "$out" -type d -exec chmod 0755 {} +
find "$out" -type f -perm /111 -exec chmod 0755 {} +
find "$out" -type f ! -perm /111 -exec chmod 0644 {} +
chmod 1777 "$out/tmp"
chmod 0700 "$out/root" "$out/home/nonroot"
if [[ $(id -u) == 0 ]]; then
  chown -R 0:0 "$out"
  chown 65532:65532 "$out/home/nonroot"
fi
echo "rootfs.sh: $out ($(du -sk "$out" | cut -f1) KiB)" >&2
