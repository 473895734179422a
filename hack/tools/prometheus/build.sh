#!/usr/bin/env bash
# Builds the Prometheus tools the monitoring tests use, from the pinned Go module beside this
# script, once per machine, and links them into <repo>/.local/bin:
#
#   promtool        github.com/prometheus/prometheus/cmd/promtool v0.316.0 (Prometheus 3.16.0):
#                   `check rules`, `test rules` and `check metrics` for deploy/monitoring/
#   promql-inspect  ./promql-inspect: Prometheus's own PromQL and exposition parsers (the same
#                   module version), used to compare what the rules and the dashboard query
#                   with what the operator exposes
#
# Like hack/controlplane/build.sh: the binaries are cached outside the repository, keyed by a
# hash of go.mod, go.sum, the helper's source, the build recipe below and the Go version:
#   ${DTS_PROMETHEUS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/prometheus-tools}/<hash>/bin
# A second run only re-links. Progress goes to stderr; the last stdout line is the bin
# directory in the cache. Needs only Go (1.26) and the Go module proxy. Figures: NOTES.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)

log() { printf 'prometheus-tools/build: %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "error: 'go' not found in PATH (Go 1.26 is needed)"; exit 1; }

# Never fetch another toolchain; modules come through the proxy, checked against go.sum.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

# Changing anything here changes the binaries: bump RECIPE so caches are rebuilt.
RECIPE=1
PROMETHEUS_VERSION=3.16.0          # module v0.316.0 (3.x releases are published as v0.3xx.y)
PROMETHEUS_BUILD_DATE=20261105-15:06:51 # the tag's time, as the module proxy reports it
# Only the file and http service discoveries: `check rules` / `test rules` use none, and the
# cloud SDKs (AWS, Azure, GCE, ...) are most of promtool's compile time. This is upstream's own
# build tag (plugins/plugin_*.go); the rule engine, PromQL and the parsers are unchanged.
TAGS=remove_all_sd

ldflags="-s -w"
ldflags+=" -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
ldflags+=" -X github.com/prometheus/common/version.Revision=v0.316.0"
ldflags+=" -X github.com/prometheus/common/version.Branch="
ldflags+=" -X github.com/prometheus/common/version.BuildUser=dts-operator"
ldflags+=" -X github.com/prometheus/common/version.BuildDate=$PROMETHEUS_BUILD_DATE"

hash=$(
  {
    printf 'recipe=%s go=%s goos=%s goarch=%s tags=%s\n' "$RECIPE" "$(go env GOVERSION)" \
      "$(go env GOOS)" "$(go env GOARCH)" "$TAGS"
    printf 'ldflags=%s\n' "$ldflags"
    for f in go.mod go.sum promql-inspect/main.go; do
      printf '== %s\n' "$f"
      cat "$here/$f"
    done
  } | sha256sum | cut -c1-16
)
cache_root=${DTS_PROMETHEUS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/prometheus-tools}
dir=$cache_root/$hash
bin=$dir/bin
programs=(promtool promql-inspect)

complete() {
  [ -f "$dir/complete" ] || return 1
  local p
  for p in "${programs[@]}"; do [ -x "$bin/$p" ] || return 1; done
}

link() {
  mkdir -p "$root/.local/bin"
  local p
  for p in "${programs[@]}"; do ln -sfn "$bin/$p" "$root/.local/bin/$p"; done
}

if complete; then
  link
  echo "$bin"
  exit 0
fi

mkdir -p "$dir"
# One build at a time per cache entry (hack/test.sh and a developer's run, two checkouts).
exec 9>"$dir/lock"
if ! flock -n 9; then
  log "another build of $hash is running; waiting for it"
  flock 9
fi
if complete; then
  link
  echo "$bin"
  exit 0
fi

log "building promtool ($PROMETHEUS_VERSION) and promql-inspect into $bin"
tmp=$(mktemp -d "$dir/bin.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

# Only the modules the build needs (go build fetches them); with -mod=readonly a module
# missing from go.sum is an error rather than a silent change.
(
  cd "$here"
  go build -trimpath -tags "$TAGS" -ldflags "$ldflags" -o "$tmp/" \
    github.com/prometheus/prometheus/cmd/promtool \
    ./promql-inspect
) >&2 || { log "error: go build failed"; exit 1; }

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/complete"
log "built in $(( $(date +%s) - start ))s"
link
echo "$bin"
