#!/usr/bin/env bash
# The project's one test command (README, .ci/run): format, lints, then every test — unit tests,
# and integration tests against a real local kube-apiserver + etcd (hack/cluster.sh) and the
# in-process DTS simulator, the alerting rules through promtool, network faults through toxiproxy.
# Extra arguments go to the test binaries (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mkdir -p .local

step() { printf '\n==> %s\n' "$*" >&2; }

# The control plane takes ~10 minutes to compile on a fresh machine: start it now, beside the
# Rust build (cluster.sh waits on the same lock instead of building twice).
cp_log=$root/.local/controlplane-build.log
hack/controlplane/build.sh >"$cp_log" 2>&1 &
cp_pid=$!
# promtool (the monitoring tests): a few minutes cold, likewise in the background.
prom_log=$root/.local/prometheus-tools-build.log
hack/tools/prometheus/build.sh >"$prom_log" 2>&1 &
prom_pid=$!
# toxiproxy (the fault tests' TCP proxy): under a minute cold, likewise in the background.
toxi_log=$root/.local/toxiproxy-build.log
hack/tools/toxiproxy/build.sh >"$toxi_log" 2>&1 &
toxi_pid=$!

started_cluster=0
cleanup() {
  kill "$cp_pid" "$prom_pid" "$toxi_pid" 2>/dev/null || true
  if [ "$started_cluster" = 1 ]; then
    step "stopping the local control plane"
    hack/cluster.sh down || true
  fi
}
trap cleanup EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (tests, binaries)"
cargo build --workspace --all-targets --locked

step "waiting for the control plane build (log: $cp_log)"
if ! wait "$cp_pid"; then
  tail -n 50 "$cp_log" >&2
  echo "hack/test.sh: building the control plane failed" >&2
  exit 1
fi

step "waiting for the promtool build (log: $prom_log)"
if ! wait "$prom_pid"; then
  tail -n 50 "$prom_log" >&2
  echo "hack/test.sh: building promtool failed" >&2
  exit 1
fi

step "waiting for the toxiproxy build (log: $toxi_log)"
if ! wait "$toxi_pid"; then
  tail -n 50 "$toxi_log" >&2
  echo "hack/test.sh: building toxiproxy failed" >&2
  exit 1
fi

# Brought up here unless it already runs (a developer's), and stopped on exit only if this
# script started it — also when tests fail.
if ! hack/cluster.sh status >/dev/null 2>&1; then
  step "starting the local control plane (hack/cluster.sh up)"
  started_cluster=1
fi
export_line=$(hack/cluster.sh up | tail -n 1)
eval "$export_line"
export KUBECONFIG
export PATH="$root/.local/bin:$PATH"

step "cargo test"
cargo test --workspace --locked -- "$@"
