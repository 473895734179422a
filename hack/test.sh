#!/usr/bin/env bash
# The project's one test command (README, .ci/run): format, lints, then every test — unit tests,
# and integration tests against a real local kube-apiserver + etcd (hack/cluster.sh) and the
# in-process DTS simulator, the alerting rules through promtool, network faults through toxiproxy;
# then the node tests (tests/it/node.rs: the operator as a Pod) on a fresh control plane with a
# real node (hack/cluster.sh up --with-node, root) and the image of hack/image.sh. Extra arguments
# go to the test binaries: filters (a filter starting with `node` selects node tests, any other
# the rest) and libtest flags (`--nocapture`, `--test-threads=N`).
#
# DTS_TEST_NODE=1 requires the node tests, =0 skips them (saying so); default: run them when root.
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

# Filters and flags for the two phases.
flags=() filters=() node_filters=()
while [ $# -gt 0 ]; do
  case $1 in
  --test-threads | --skip | --format | --color | --logfile | -Z) flags+=("$1" "${2:-}"); shift 2 || shift ;;
  -*) flags+=("$1"); shift ;;
  node*) node_filters+=("$1"); shift ;;
  *) filters+=("$1"); shift ;;
  esac
done
run_plain=1 run_node=1
if [ $((${#filters[@]} + ${#node_filters[@]})) -gt 0 ]; then
  [ ${#filters[@]} -gt 0 ] || run_plain=0
  [ ${#node_filters[@]} -gt 0 ] || run_node=0
fi
case ${DTS_TEST_NODE:-} in
0) run_node=0; echo "hack/test.sh: DTS_TEST_NODE=0: the node tests are SKIPPED" >&2 ;;
1) [ "$(id -u)" = 0 ] || { echo "hack/test.sh: DTS_TEST_NODE=1 but the node needs root" >&2; exit 1; } ;;
*)
  if [ "$run_node" = 1 ] && [ "$(id -u)" != 0 ]; then
    run_node=0
    echo "hack/test.sh: not root: the node tests are SKIPPED (they need a real node; DTS_TEST_NODE=1 requires them)" >&2
  fi
  ;;
esac

image_pid=""
started_cluster=0
cleanup() {
  local rc=$?
  kill "$cp_pid" "$prom_pid" "$toxi_pid" 2>/dev/null || true
  # The image build runs in its own process group (cargo under it): stop all of it.
  [ -n "$image_pid" ] && kill -- "-$image_pid" 2>/dev/null
  if [ "$started_cluster" = 1 ]; then
    step "stopping the local control plane (and node, with its host self-check)"
    # A host left dirty by the node fails the run.
    hack/cluster.sh down || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (tests, binaries)"
cargo build --workspace --all-targets --locked

# The operator's image for the node tests (a static release build: minutes the first time, then
# cached outside the repository), beside the first test phase.
image_log=$root/.local/image-build.log
if [ "$run_node" = 1 ]; then
  setsid hack/image.sh build >"$image_log" 2>&1 &
  image_pid=$!
fi

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

if [ "$run_plain" = 1 ]; then
  step "cargo test (control plane, no node)"
  cargo test --workspace --locked -- --skip node:: "${flags[@]}" "${filters[@]}"
fi

if [ "$run_node" = 1 ]; then
  step "waiting for the image build (log: $image_log)"
  if ! wait "$image_pid"; then
    image_pid=""
    tail -n 50 "$image_log" >&2
    echo "hack/test.sh: building the image failed" >&2
    exit 1
  fi
  image_pid=""
  # A fresh control plane for the node: nothing the first phase left (Deployments without a
  # controller-manager) starts Pods on it.
  if [ "$started_cluster" = 1 ]; then
    step "restarting the control plane with a node (hack/cluster.sh up --with-node)"
    hack/cluster.sh down
    hack/cluster.sh up --with-node >/dev/null
  elif [ ! -f .local/node/node.env ]; then
    echo "hack/test.sh: a control plane without a node is running (not started here): stop it (hack/cluster.sh down) or add the node (hack/cluster.sh up --with-node)" >&2
    exit 1
  fi
  hack/image.sh import >/dev/null
  step "cargo test node:: (the operator as a Pod)"
  # Node tests mostly wait (for Pods, leases, a token rotation): run them side by side. Their
  # `figure:` lines (install to Ready, takeover, hand-over, rotation) are shown at the end.
  threads=(--test-threads=8 --show-output)
  case " ${flags[*]} " in *" --test-threads"*) threads=() ;; esac
  cargo test --test it --locked -- "${threads[@]}" "${flags[@]}" "${node_filters[@]:-node::}"
fi
