#!/usr/bin/env bash
# Benchmark of the adaptive rate toward DTS against the local control plane and an in-process DTS
# simulator with a server-side limit: N requests created at once, --dts-qps QPS against a server
# allowing SERVER_RATE/s, with --dts-adaptive-rate=true and =false. Reports numbers; asserts
# nothing (see the module doc of examples/bench_adaptive.rs for how each figure is defined).
#
#   hack/bench-adaptive.sh [N=1000] [SERVER_RATE=10] [QPS=50]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --release --locked -p dts-operator >&2
cargo build --release --locked --example bench_adaptive >&2
eval "$(hack/cluster.sh up | tail -n 1)"
export KUBECONFIG
"$target/release/examples/bench_adaptive" "$target/release/dts-operator" "${1:-1000}" "${2:-10}" "${3:-50}"
