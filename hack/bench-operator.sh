#!/usr/bin/env bash
# Benchmark of the controller against the local control plane and an in-process DTS simulator:
# idle RSS, RSS with many resources, status writes per request, create → Succeeded latency.
# Reports numbers; asserts nothing.
#
#   hack/bench-operator.sh [LATENCY_RESOURCES=100] [TOTAL_RESOURCES=1000] [DTS_QPS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --release --locked -p dts-operator >&2
cargo build --release --locked --example bench_operator >&2
eval "$(hack/cluster.sh up | tail -n 1)"
export KUBECONFIG
"$target/release/examples/bench_operator" "$target/release/dts-operator" "${1:-100}" "${2:-1000}" "${3:-5}"
