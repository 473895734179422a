#!/usr/bin/env bash
# Builds go-openapi-peer — one ResetDtsJob call through Alibaba Cloud's official Go OpenAPI
# stack (github.com/alibabacloud-go/darabonba-openapi/v2 v2.1.13, Client.CallApi, RPC style: what
# the generated Go SDKs call) — the compiled peer hack/bench-reset.sh measures `dts-operator
# reset` against.
#
# Like hack/tools/toxiproxy/build.sh: the binary is cached outside the repository, keyed by a
# hash of go.mod, go.sum, main.go, the build recipe below and the Go version:
#   ${DTS_GO_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/go-openapi-peer}/<hash>/bin
# A second run does nothing. Progress goes to stderr; the last stdout line is the path of the
# binary. Needs only Go (1.26) and the Go module proxy.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'go-openapi-peer/build: %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "error: 'go' not found in PATH (Go 1.26 is needed)"; exit 1; }

# Never fetch another toolchain; modules come through the proxy, checked against go.sum.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

# Changing anything here changes the binary: bump RECIPE so caches are rebuilt.
RECIPE=1
# A release build as Go programs ship: no symbol table, no DWARF.
ldflags="-s -w"

hash=$(
  {
    printf 'recipe=%s go=%s goos=%s goarch=%s\n' "$RECIPE" "$(go env GOVERSION)" \
      "$(go env GOOS)" "$(go env GOARCH)"
    printf 'ldflags=%s\n' "$ldflags"
    for f in go.mod go.sum main.go; do
      printf '== %s\n' "$f"
      cat "$here/$f"
    done
  } | sha256sum | cut -c1-16
)
cache_root=${DTS_GO_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/go-openapi-peer}
dir=$cache_root/$hash
bin=$dir/bin/go-openapi-peer

if [ -f "$dir/complete" ] && [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$dir"
# One build at a time per cache entry.
exec 9>"$dir/lock"
if ! flock -n 9; then
  log "another build of $hash is running; waiting for it"
  flock 9
fi
if [ -f "$dir/complete" ] && [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

log "building go-openapi-peer into $dir/bin"
tmp=$(mktemp -d "$dir/bin.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(
  cd "$here"
  go build -trimpath -ldflags "$ldflags" -o "$tmp/go-openapi-peer" .
) >&2 || { log "error: go build failed"; exit 1; }

rm -rf "$dir/bin"
mv "$tmp" "$dir/bin"
trap - EXIT
date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/complete"
echo "$bin"
