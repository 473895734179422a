#!/usr/bin/env bash
# The operator's container image, built without a container engine, for the local node
# (hack/node.sh). deploy/Dockerfile stays the way users build it; this image has the same
# runtime layout as its final stage (a test compares them): the binary at /dts-operator as the
# entrypoint with `run` as the command, user 65532:65532 (distroless's `nonroot`, with its
# /etc/passwd entry and home), CA roots at /etc/ssl/certs/ca-certificates.crt, port 8080.
#
#   hack/image.sh [build]   the static release binary and the OCI image archive; the LAST stdout
#                           line is the archive (an OCI image layout, tarred)
#   hack/image.sh import    build, then import it into the running node's containerd as
#                           docker.io/library/dts-operator:<version> (what the chart's and
#                           kustomize's `dts-operator:<version>` resolve to); the LAST stdout
#                           line is that name
#   hack/image.sh pause     the node's pause image archive (from hack/controlplane/build.sh's
#                           pause program)
#   hack/image.sh archive-if-built   the archive's path if built for these sources, else exit 1
#
# The binary differs from the Dockerfile's in one way: it links glibc statically
# (`-C target-feature=+crt-static`, a `--target` build so proc-macros stay dynamic), because the
# image has no libc — there is no base image to take one from. Name lookups (NSS) do not work
# in a static glibc binary: this image talks to IP addresses only, as on the local node.
#
# The packer is crane (go-containerregistry, pinned in hack/controlplane/crane): it appends the
# layer to an empty OCI image, sets the config, and writes the layout, through a registry of its
# own that lives on 127.0.0.1 for the few seconds of the build.
#
# Cache (outside the repository, kept across clones): ${DTS_IMAGE_CACHE:-~/.cache/dts-operator/image}
# — target/ (cargo's, so dependencies compile once per machine) and <hash>/ per input hash
# (Cargo.toml, Cargo.lock, src/, the workspace manifests, rustc, this recipe).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${DTS_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/image}
target=x86_64-unknown-linux-gnu
rustflags='-C target-feature=+crt-static'
RECIPE=1

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
[ -n "$version" ] || die "no version in Cargo.toml"
image_name=docker.io/library/dts-operator:$version
pause_name=localhost/dts-operator-node/pause:3.10.2

bin_dir() { "$root/hack/controlplane/build.sh" | tail -n 1; }

input_hash() {
  {
    printf 'recipe=%s target=%s rustflags=%s\n' "$RECIPE" "$target" "$rustflags"
    rustc -vV
    cd "$root"
    find Cargo.toml Cargo.lock src crates/*/Cargo.toml hack/image.sh -type f 2>/dev/null | LC_ALL=C sort |
      while read -r f; do printf '%s ' "$f"; sha256sum <"$f"; done
  } | sha256sum | cut -c1-16
}

# pack NAME:TAG ROOTFS_TAR OUT -- CRANE_MUTATE_FLAGS...: an OCI image from one layer.
pack() {
  local ref=$1 layer=$2 out=$3 crane
  shift 4
  crane=$(bin_dir)/crane
  [ -x "$crane" ] || die "no crane in $(bin_dir)"
  local work
  work=$(mktemp -d "${out}.work.XXXXXX")
  # A registry on loopback for crane to push to and pull from; stopped by PID below.
  # The log exists before the first poll reads it (the background job opens it when it runs).
  : >"$work/registry.log"
  "$crane" registry serve --address 127.0.0.1:0 2>"$work/registry.log" &
  local registry_pid=$! port="" i
  for ((i = 0; i < 100; i++)); do
    port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log" | head -n 1)
    [ -n "$port" ] && break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    kill "$registry_pid" 2>/dev/null || true
    die "crane's registry did not start: $(cat "$work/registry.log")"
  fi
  local tmp_ref=localhost:$port/${ref##*/}
  local rc=0
  {
    "$crane" append --insecure --oci-empty-base -f "$layer" -t "$tmp_ref" >/dev/null &&
      "$crane" mutate --insecure "$tmp_ref" -t "$tmp_ref" --set-platform linux/amd64 "$@" >/dev/null &&
      "$crane" pull --insecure --format oci "$tmp_ref" "$work/layout" &&
      tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/layout" -cf "$out.tmp" .
  } >&2 || rc=$?
  kill "$registry_pid" 2>/dev/null || true
  wait "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
  [ "$rc" = 0 ] || die "packing $ref failed"
  mv -f "$out.tmp" "$out"
}

# The release binary, statically linked, cached by input hash.
build_binary() { # DIR
  local dir=$1
  [ -x "$dir/dts-operator" ] && return 0
  command -v cargo >/dev/null 2>&1 || die "cargo not found"
  log "building the static release binary (fat LTO: minutes; cached in $cache)"
  local t0=$SECONDS
  (
    cd "$root"
    CARGO_TARGET_DIR=$cache/target RUSTFLAGS=$rustflags \
      cargo build --release --locked --target "$target" -p dts-operator --bin dts-operator
  ) >&2
  local built=$cache/target/$target/release/dts-operator
  if ldd "$built" >/dev/null 2>&1 && ! ldd "$built" 2>&1 | grep 'statically linked' >/dev/null; then
    die "$built is not statically linked"
  fi
  cp -f "$built" "$dir/dts-operator.tmp"
  mv -f "$dir/dts-operator.tmp" "$dir/dts-operator"
  log "binary built in $((SECONDS - t0))s"
}

cmd_build() {
  local hash dir
  hash=$(input_hash)
  dir=$cache/$hash
  if [ -f "$dir/complete" ] && [ -f "$dir/image.oci.tar" ]; then
    echo "$dir/image.oci.tar"
    return 0
  fi
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  if [ -f "$dir/complete" ] && [ -f "$dir/image.oci.tar" ]; then
    echo "$dir/image.oci.tar"
    return 0
  fi
  build_binary "$dir"
  local ca=/etc/ssl/certs/ca-certificates.crt
  [ -s "$ca" ] || die "$ca missing (Debian: apt-get install ca-certificates)"
  local rootfs
  rootfs=$(mktemp -d "$dir/rootfs.XXXXXX")
  # mktemp makes it 0700: the image's / must be searchable by its non-root user.
  chmod 0755 "$rootfs"
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/home/nonroot" "$rootfs/tmp"
  chmod 0755 "$rootfs/etc" "$rootfs/etc/ssl" "$rootfs/etc/ssl/certs" "$rootfs/home"
  install -m 0755 "$dir/dts-operator" "$rootfs/dts-operator"
  install -m 0644 "$ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # As in distroless: root, nobody and nonroot (65532), none with a login shell.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\ntty:x:5:\nstaff:x:50:\n' >"$rootfs/etc/group"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  chmod 0700 "$rootfs/home/nonroot"
  local tarflags=(--sort=name --mtime=@0 --numeric-owner --format=posix
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -C "$rootfs")
  tar "${tarflags[@]}" --owner=0 --group=0 --no-recursion -cf "$dir/layer.tar" \
    . ./dts-operator ./etc ./etc/ssl ./etc/ssl/certs ./etc/ssl/certs/ca-certificates.crt \
    ./etc/passwd ./etc/group ./home ./tmp
  tar "${tarflags[@]}" --owner=65532 --group=65532 --no-recursion -rf "$dir/layer.tar" ./home/nonroot
  rm -rf "$rootfs"
  log "packing $image_name"
  pack "$image_name" "$dir/layer.tar" "$dir/image.oci.tar" -- \
    --entrypoint=/dts-operator --cmd=run --user=65532:65532 --workdir=/ \
    --exposed-ports=8080/tcp \
    -e PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    -e SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    -l org.opencontainers.image.title=dts-operator \
    -l "org.opencontainers.image.version=$version"
  rm -f "$dir/layer.tar"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/complete"
  echo "$dir/image.oci.tar"
}

cmd_archive_if_built() {
  local dir
  dir=$cache/$(input_hash)
  [ -f "$dir/complete" ] && [ -f "$dir/image.oci.tar" ] || exit 1
  echo "$dir/image.oci.tar"
}

cmd_pause() {
  local bin dir
  bin=$(bin_dir)
  [ -x "$bin/pause" ] || die "no pause program in $bin"
  dir=$(dirname "$bin")/images
  if [ -f "$dir/pause.oci.tar" ]; then
    echo "$dir/pause.oci.tar"
    return 0
  fi
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  if [ ! -f "$dir/pause.oci.tar" ]; then
    local rootfs
    rootfs=$(mktemp -d "$dir/rootfs.XXXXXX")
    chmod 0755 "$rootfs"
    install -m 0755 "$bin/pause" "$rootfs/pause"
    tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$dir/pause-layer.tar" .
    rm -rf "$rootfs"
    pack "$pause_name" "$dir/pause-layer.tar" "$dir/pause.oci.tar" -- \
      --entrypoint=/pause --user=65535:65535
    rm -f "$dir/pause-layer.tar"
  fi
  echo "$dir/pause.oci.tar"
}

cmd_import() {
  local archive env address
  archive=$(cmd_build | tail -n 1)
  env=$root/.local/node/node.env
  # hack/node.sh names its containerd itself while the node is starting.
  address=${DTS_NODE_CONTAINERD_ADDRESS:-}
  if [ -z "$address" ]; then
    [ -f "$env" ] || die "no node is up (hack/cluster.sh up --with-node)"
    address=$(sed -n 's/^CONTAINERD_ADDRESS=//p' "$env")
  fi
  [ -S "$address" ] || die "the node's containerd is not running ($address)"
  ctr --address "$address" --namespace k8s.io images import --index-name "$image_name" "$archive" >/dev/null
  # Not `grep -q`: under pipefail its early exit would fail the pipeline (SIGPIPE to ctr).
  ctr --address "$address" --namespace k8s.io images ls -q | grep -xF "$image_name" >/dev/null ||
    die "$image_name is not in the node's containerd after the import"
  log "imported $image_name"
  echo "$image_name"
}

case ${1:-build} in
build) cmd_build ;;
import) cmd_import ;;
pause) cmd_pause ;;
archive-if-built) cmd_archive_if_built ;;
-h | --help | help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
*) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
