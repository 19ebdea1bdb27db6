# Shared by deploy/image/build.sh and tests/e2e/standin-image.sh (source it; needs SOURCE_DATE_EPOCH).
# shellcheck shell=bash

# layer_tar DIR TARBALL: a layer tar of DIR: sorted, every time SOURCE_DATE_EPOCH, owned by root, except
# /home/nonroot (65532), whatever the owner of the files here.
layer_tar() {
  local dir=$1 tarball=$2
  local tar_opts=(--format=posix "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"
    --mtime="@$SOURCE_DATE_EPOCH" --sort=name --numeric-owner)
  mapfile -t top < <(cd "$dir" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
  tar -C "$dir" "${tar_opts[@]}" --owner=0 --group=0 --exclude=./home/nonroot --exclude=home/nonroot \
    -cf "$tarball" "${top[@]}"
  if [[ -d $dir/home/nonroot ]]; then
    mapfile -t home < <(cd "$dir" && find home/nonroot | sort)
    tar -C "$dir" "${tar_opts[@]}" --owner=65532 --group=65532 --no-recursion -rf "$tarball" "${home[@]}"
  fi
}
