#!/usr/bin/env bash
# Builds go-openapi-peer — one ResetDtsJob call through Alibaba Cloud's official Go OpenAPI
# stack (github.com/alibabacloud-go/darabonba-openapi/v2 v2.1.13, Client.CallApi, RPC style: what
# the generated Go SDKs call) — the compiled peer hack/bench-reset.sh measures `dts-operator
# reset` against.
#
# Like hack/tools/toxiproxy/build.sh: the binary is cached outside the repository, keyed by a
# hash of go.mod, go.sum, main.go, the build recipe below and the Go version:
#   ${DTS_GO_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/go-openapi-peer}/<hash>/bin
# A second run only re-links it into <repo>/.local/bin. Progress goes to stderr; the last stdout
# line is the bin directory in the cache. Needs only Go (1.26) and the Go module proxy.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)

log() { printf 'go-openapi-peer/build: %s\n' "$*" >&2; }

# shellcheck source=../lib/go-tools.sh
source "$root/hack/lib/go-tools.sh"
go_tools_env

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
  } | inputs_hash
)
cache_root=${DTS_GO_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/go-openapi-peer}
programs=(go-openapi-peer)
cache_entry "$cache_root" "$hash"

log "building go-openapi-peer into $bin"
start_build
(
  cd "$here"
  go build -trimpath -ldflags "$ldflags" -o "$tmp/go-openapi-peer" .
) >&2 || { log "error: go build failed"; exit 1; }

publish
