#!/usr/bin/env bash
# Builds the local control plane's and node's programs from the pinned Go modules beside
# this script, once per machine, and links them into <repo>/.local/bin:
#
#   kube-apiserver, kubectl  k8s.io/kubernetes v1.36.3        (./kubernetes)
#   kubelet, kube-controller-manager, kube-scheduler
#                            k8s.io/kubernetes v1.36.3        (./kubernetes; the node)
#   etcd                     go.etcd.io/etcd/server/v3 v3.6.8 (./kubernetes: the
#                            version k8s.io/kubernetes v1.36.3 itself pins)
#   helm                     helm.sh/helm/v3 v3.22.0          (./helm)
#   crane                    go-containerregistry v0.22.1     (./crane; packs the images)
#   pause                    k8s.io/kubernetes v1.36.3 build/pause/linux/pause.c, from
#                            the module cache, `gcc -static` (the node's sandbox image)
#
# The binaries are cached outside the repository, keyed by a hash of the go.mod /
# go.sum files, the build recipe below and the Go version:
#   ${DTS_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/controlplane}/<hash>/bin
# A second run only re-links (well under a second). Progress goes to stderr; the
# last stdout line is the bin directory in the cache.
#
# Needs Go (1.26), the Go module proxy and gcc with a static libc (Debian: gcc, libc6-dev).
# Cold build: see NOTES.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

log() { printf 'controlplane/build: %s\n' "$*" >&2; }

# shellcheck source=../lib/go-tools.sh
source "$root/hack/lib/go-tools.sh"
go_tools_env

# Changing anything here changes the binaries: bump RECIPE so caches are rebuilt.
RECIPE=2
KUBE_VERSION=v1.36.3
KUBE_BUILD_DATE=2026-07-22T18:07:38Z # the tag's time, as the module proxy reports it
HELM_VERSION=v3.22.0
HELM_K8S_MAJOR=1  # helm's Makefile derives these from its client-go (v0.37.0)
HELM_K8S_MINOR=37
CRANE_VERSION=v0.22.1

kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION"
  kube_ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=36"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$KUBE_BUILD_DATE"
done
crane_ldflags="-s -w -X github.com/google/go-containerregistry/cmd/crane/cmd.Version=$CRANE_VERSION"
helm_ldflags="-s -w"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
done

go_version=$(go env GOVERSION)
hash=$(
  {
    printf 'recipe=%s go=%s goos=%s goarch=%s\n' "$RECIPE" "$go_version" "$(go env GOOS)" "$(go env GOARCH)"
    printf 'kube_ldflags=%s\nhelm_ldflags=%s\ncrane_ldflags=%s\n' "$kube_ldflags" "$helm_ldflags" "$crane_ldflags"
    printf 'gcc=%s\n' "$(gcc -dumpfullversion 2>/dev/null || echo none)"
    for f in kubernetes/go.mod kubernetes/go.sum helm/go.mod helm/go.sum crane/go.mod crane/go.sum; do
      printf '== %s\n' "$f"
      cat "$here/$f"
    done
  } | inputs_hash
)
cache_root=${DTS_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator/controlplane}
programs=(kube-apiserver kubectl etcd helm kubelet kube-controller-manager kube-scheduler crane pause)
cache_entry "$cache_root" "$hash"

command -v gcc >/dev/null 2>&1 || { log "error: 'gcc' not found (apt-get install gcc libc6-dev): it builds the node's pause program"; exit 1; }
log "building kube-apiserver, kubectl, kubelet, kube-controller-manager, kube-scheduler, etcd ($KUBE_VERSION), helm ($HELM_VERSION) and crane ($CRANE_VERSION) into $bin"
log "this takes a while on a cold machine (see hack/controlplane/NOTES.md); later runs reuse it"
start_build

# Module downloads first, so a proxy problem shows up as such (and quickly).
(cd "$here/kubernetes" && go mod download) >&2
(cd "$here/helm" && go mod download) >&2
(cd "$here/crane" && go mod download) >&2
log "modules downloaded after $(( $(date +%s) - start ))s"

# One go build for the programs of the kubernetes module, so shared packages are
# compiled once and the linker runs overlap the compiles. The helm and crane modules
# have their own dependency graphs (helm: k8s.io v0.37); they build alongside.
(
  cd "$here/kubernetes"
  go build -trimpath -ldflags "$kube_ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    go.etcd.io/etcd/server/v3
) >&2 &
kube_pid=$!
(
  cd "$here/helm"
  go build -trimpath -ldflags "$helm_ldflags" -o "$tmp/" helm.sh/helm/v3/cmd/helm
) >&2 &
helm_pid=$!
(
  cd "$here/crane"
  go build -trimpath -ldflags "$crane_ldflags" -o "$tmp/" github.com/google/go-containerregistry/cmd/crane
) >&2 &
crane_pid=$!
# The pause program every Pod sandbox runs, from the same module (as upstream builds it:
# static, no libc at run time), so the node needs no image from a registry.
pause_dir=$(cd "$here/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause
pause_tag=$(sed -n 's/^TAG ?= *//p' "$pause_dir/Makefile" | head -n 1)
gcc -Os -Wall -Werror -static "-DVERSION=v$pause_tag-$KUBE_VERSION" -o "$tmp/pause" "$pause_dir/linux/pause.c" >&2
strip "$tmp/pause"
rc=0
wait "$kube_pid" || rc=$?
wait "$helm_pid" || rc=$?
wait "$crane_pid" || rc=$?
if [ "$rc" != 0 ]; then
  log "error: go build failed (exit $rc)"
  exit "$rc"
fi
# go build names the etcd main package after its path element before /v3.
mv "$tmp/server" "$tmp/etcd"

publish
