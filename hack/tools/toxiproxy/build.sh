#!/usr/bin/env bash
# Builds toxiproxy, the TCP fault proxy the fault tests put between the operator and
# kube-apiserver, from the pinned Go module beside this script, once per machine, and links it
# into <repo>/.local/bin:
#
#   toxiproxy-server  github.com/Shopify/toxiproxy/v2/cmd/server v2.12.0: a proxy per upstream,
#                     toxics (latency, timeout/black hole, reset_peer, bandwidth) and
#                     enable/disable through its HTTP API (tests/it/support/faults.rs drives it)
#
# Like hack/tools/prometheus/build.sh: the binary is cached outside the repository, keyed by a
# hash of go.mod, go.sum, the build recipe below and the Go version:
#   ${DTS_TOXIPROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/toxiproxy}/<hash>/bin
# A second run only re-links. Progress goes to stderr; the last stdout line is the bin
# directory in the cache. Needs only Go (1.26) and the Go module proxy. Figures: NOTES.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)

log() { printf 'toxiproxy/build: %s\n' "$*" >&2; }

# shellcheck source=../lib/go-tools.sh
source "$root/hack/lib/go-tools.sh"
go_tools_env

# Changing anything here changes the binary: bump RECIPE so caches are rebuilt.
RECIPE=1
TOXIPROXY_VERSION=2.12.0

# Upstream's release build sets the version the same way (`toxiproxy-server -version`).
ldflags="-s -w -X github.com/Shopify/toxiproxy/v2.Version=$TOXIPROXY_VERSION"

hash=$(
  {
    printf 'recipe=%s go=%s goos=%s goarch=%s\n' "$RECIPE" "$(go env GOVERSION)" \
      "$(go env GOOS)" "$(go env GOARCH)"
    printf 'ldflags=%s\n' "$ldflags"
    for f in go.mod go.sum; do
      printf '== %s\n' "$f"
      cat "$here/$f"
    done
  } | inputs_hash
)
cache_root=${DTS_TOXIPROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/toxiproxy}
programs=(toxiproxy-server)
cache_entry "$cache_root" "$hash"

log "building toxiproxy-server ($TOXIPROXY_VERSION) into $bin"
start_build

# The package is named after its directory (`server`); upstream ships it as toxiproxy-server.
# Only the modules the build needs (go build fetches them); with -mod=readonly a module
# missing from go.sum is an error rather than a silent change.
(
  cd "$here"
  go build -trimpath -ldflags "$ldflags" -o "$tmp/toxiproxy-server" \
    github.com/Shopify/toxiproxy/v2/cmd/server
) >&2 || { log "error: go build failed"; exit 1; }

publish
