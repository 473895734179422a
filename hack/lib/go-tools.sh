# shellcheck shell=bash
# Sourced by the scripts that build pinned Go programs once per machine
# (hack/controlplane/build.sh, hack/tools/*/build.sh). Owns what they share: a Go environment
# that never fetches another toolchain, the cache entry keyed by a hash of the build's inputs,
# one build at a time per entry, the atomic publish, and the links in <repo>/.local/bin.
#
# The sourcing script defines `log` and sets `root` (the repository) and `programs` (the file
# names under bin/), then:
#   go_tools_env                      the environment for go build
#   hash=$(... | inputs_hash)         16 hex digits of everything that changes the binaries
#   cache_entry CACHE_ROOT "$hash"    sets dir and bin; when the entry is complete (or becomes
#                                     complete while waiting for another build of it): links,
#                                     prints bin and exits 0; otherwise returns holding the lock
#   start_build                       sets tmp (where to build) and start
#   publish                           tmp becomes bin, marked complete, linked, bin printed

go_tools_env() {
  command -v go >/dev/null 2>&1 || { log "error: 'go' not found in PATH (Go 1.26 is needed)"; exit 1; }
  # Never fetch another toolchain; modules come through the proxy, checked against go.sum.
  export GOTOOLCHAIN=local
  export CGO_ENABLED=0
  export GOFLAGS="-mod=readonly -buildvcs=false"
}

inputs_hash() { sha256sum | cut -c1-16; }

entry_complete() {
  [ -f "$dir/complete" ] || return 1
  local p
  for p in "${programs[@]}"; do [ -x "$bin/$p" ] || return 1; done
}

link_programs() {
  mkdir -p "$root/.local/bin"
  local p
  for p in "${programs[@]}"; do ln -sfn "$bin/$p" "$root/.local/bin/$p"; done
}

cache_entry() {
  dir=$1/$2
  bin=$dir/bin
  if entry_complete; then
    link_programs
    echo "$bin"
    exit 0
  fi
  mkdir -p "$dir"
  # One build at a time per cache entry (hack/test.sh beside a developer's run, two checkouts).
  exec 9>"$dir/lock"
  if ! flock -n 9; then
    log "another build of $2 is running; waiting for it"
    flock 9
  fi
  if entry_complete; then
    link_programs
    echo "$bin"
    exit 0
  fi
}

start_build() {
  tmp=$(mktemp -d "$dir/bin.tmp.XXXXXX")
  # shellcheck disable=SC2064 # the directory is known now
  trap "rm -rf '$tmp'" EXIT
  start=$(date +%s)
}

publish() {
  rm -rf "$bin"
  mv "$tmp" "$bin"
  trap - EXIT
  date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/complete"
  log "built in $(($(date +%s) - start))s"
  link_programs
  echo "$bin"
}
