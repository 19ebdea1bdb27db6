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

# write_archive LAYOUT REF OUT: names the image REF for containerd and Docker (`ctr images import`, `docker load`)
# beside its OCI tag, adds a Docker-style manifest.json so that older `docker load` takes the archive too, and
# writes LAYOUT as a reproducible tar to OUT. Sets manifest_digest and manifest (the manifest blob's path).
write_archive() {
  local layout=$1 ref=$2 out=$3
  jq -c --arg ref "$ref" '.manifests[0].annotations["io.containerd.image.name"] = $ref' "$layout/index.json" \
    >"$layout/index.json.new"
  mv "$layout/index.json.new" "$layout/index.json"
  manifest_digest=$(jq -r '.manifests[0].digest' "$layout/index.json")
  manifest=$layout/blobs/sha256/${manifest_digest#sha256:}
  jq -c --arg ref "$ref" '[{Config: ("blobs/sha256/" + (.config.digest | ltrimstr("sha256:"))), RepoTags: [$ref],
    Layers: [.layers[].digest | "blobs/sha256/" + ltrimstr("sha256:")]}]' "$manifest" >"$layout/manifest.json"
  find "$layout" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  find "$layout" -type d -exec chmod 0755 {} +
  find "$layout" -type f -exec chmod 0644 {} +
  local tmp_out=$out.tmp.$$ entries
  mapfile -t entries < <(cd "$layout" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
  tar -C "$layout" --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$SOURCE_DATE_EPOCH" --sort=name --owner=0 --group=0 --numeric-owner -cf "$tmp_out" "${entries[@]}"
  mv "$tmp_out" "$out"
}
