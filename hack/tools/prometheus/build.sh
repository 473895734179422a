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

# shellcheck source=../lib/go-tools.sh
source "$root/hack/lib/go-tools.sh"
go_tools_env

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
  } | inputs_hash
)
cache_root=${DTS_PROMETHEUS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/prometheus-tools}
programs=(promtool promql-inspect)
cache_entry "$cache_root" "$hash"

log "building promtool ($PROMETHEUS_VERSION) and promql-inspect into $bin"
start_build

# Only the modules the build needs (go build fetches them); with -mod=readonly a module
# missing from go.sum is an error rather than a silent change.
(
  cd "$here"
  go build -trimpath -tags "$TAGS" -ldflags "$ldflags" -o "$tmp/" \
    github.com/prometheus/prometheus/cmd/promtool \
    ./promql-inspect
) >&2 || { log "error: go build failed"; exit 1; }

publish
