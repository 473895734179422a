#!/usr/bin/env bash
# Benchmark of the controller against the local control plane and an in-process DTS simulator
# (zero latency, the operator's DTS rate limit off): N resources created at once → time until all
# are Succeeded; DTS calls and kube-apiserver requests (its own apiserver_request_total, scraped
# from /metrics with the admin kubeconfig) per request; RSS idle, held, right after the initial
# list of a restart, steady, and peak (VmHWM); create → Succeeded latency of one request on an
# idle operator (p50/p99 over LATENCY_N sequential requests); then the adaptive limiter against a
# server-side limit, on and off (hack/bench-adaptive.sh's run: ADAPTIVE_N requests at --dts-qps 50
# against a server allowing 10/s; ADAPTIVE_N=0 skips it). Reports numbers; asserts nothing.
#
#   hack/bench-operator.sh [N=10000] [LATENCY_N=200] [ADAPTIVE_N=1000]
#
# Uses the control-plane ports of hack/cluster.sh (DTS_CLUSTER_* variables). A 10,000-resource
# run takes minutes; each run leaves its bench-* namespace behind (`hack/cluster.sh down` clears
# everything).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --release --locked -p dts-operator --example bench_operator --example bench_adaptive >&2
eval "$(hack/cluster.sh up | tail -n 1)"
export KUBECONFIG
"$target/release/examples/bench_operator" "$target/release/dts-operator" "${1:-10000}" "${2:-200}"
adaptive_n=${3:-1000}
if [ "$adaptive_n" != 0 ]; then
  echo
  "$target/release/examples/bench_adaptive" "$target/release/dts-operator" "$adaptive_n" 10 50
fi
