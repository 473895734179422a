#!/usr/bin/env bash
# The project's one test command (README, .ci/run): format, lints, then every test —
# unit tests, and integration tests against a real local kube-apiserver + etcd
# (hack/cluster.sh) and the in-process DTS simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (tests, binaries)"
cargo build --workspace --all-targets --locked

# The control plane: brought up here unless it already runs (a developer's), and
# always stopped on exit if this script started it — also when tests fail.
started_cluster=0
if ! hack/cluster.sh status >/dev/null 2>&1; then
  step "starting the local control plane (hack/cluster.sh up)"
  started_cluster=1
fi
cleanup() {
  if [ "$started_cluster" = 1 ]; then
    step "stopping the local control plane"
    hack/cluster.sh down || true
  fi
}
trap cleanup EXIT
export_line=$(hack/cluster.sh up | tail -n 1)
eval "$export_line"
export KUBECONFIG
export PATH="$root/.local/bin:$PATH"

step "cargo test"
cargo test --workspace --locked -- "$@"
