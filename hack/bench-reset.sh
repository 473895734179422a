#!/usr/bin/env bash
# Benchmark: the cold-process cost of one ResetDtsJob call — `dts-operator reset` against two
# official Alibaba Cloud stacks making the same call against the same local simulator: the Python
# SDK (alibabacloud-dts20200101) and the compiled Go OpenAPI stack
# (github.com/alibabacloud-go/darabonba-openapi/v2 v2.1.13, `Client.CallApi`, RPC style — what the
# generated Go SDKs call; hack/tools/go-openapi-peer). Runs all three side by side, alternating,
# and prints medians and ratios.
#
#   hack/bench-reset.sh [ROUNDS]      (default 15 rounds)
#   BENCH_OPERATOR=/path/to/dts-operator hack/bench-reset.sh   (measure that binary, e.g. an older
#                                                               build, instead of building one)
#
# Measures user+sys CPU time, wall time and peak RSS of each child (os.wait4 rusage). Installs the
# Python SDK in a throw-away virtualenv under ${XDG_CACHE_HOME:-~/.cache}/dts-operator/bench-venv;
# builds the Go peer from its pinned module (hack/tools/go-openapi-peer/build.sh, cached by input
# hash). Nothing here is a test: it reports numbers, it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[ -x /usr/bin/time ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time; }
rounds=${1:-15}
port=${BENCH_PORT:-18480}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator
venv=$cache/bench-venv
target=${CARGO_TARGET_DIR:-$root/target}

log() { printf '==> %s\n' "$*" >&2; }


if [ -n "${BENCH_OPERATOR:-}" ]; then
  log "building the simulator; measuring $BENCH_OPERATOR"
  cargo build --release --locked -p dts-simulator >&2
  ours=$BENCH_OPERATOR
else
  log "building release binaries"
  cargo build --release --locked -p dts-operator -p dts-simulator >&2
  ours=$target/release/dts-operator
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating a virtualenv with the official SDK (alibabacloud-dts20200101)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check alibabacloud-dts20200101 >&2
fi
"$venv/bin/pip" show alibabacloud-dts20200101 2>/dev/null | grep -E '^(Name|Version)' >&2 || true

log "building the Go peer (darabonba-openapi v2.1.13)"
go_peer=$(hack/tools/go-openapi-peer/build.sh | tail -n 1)/go-openapi-peer

work=$(mktemp -d)
sim_pid=""
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

log "starting the DTS simulator on 127.0.0.1:$port"
"$target/release/dts-simulator" --listen "127.0.0.1:$port" \
  --access-key-id benchid --access-key-secret benchsecret >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
for _ in $(seq 1 100); do
  grep -q listening "$work/sim.out" 2>/dev/null && break
  sleep 0.1
done

cat >"$work/sdk_reset.py" <<PY
from alibabacloud_dts20200101.client import Client
from alibabacloud_dts20200101 import models
from alibabacloud_tea_openapi import models as open_api_models
config = open_api_models.Config(access_key_id="benchid", access_key_secret="benchsecret",
                                endpoint="127.0.0.1:$port", protocol="http", region_id="cn-hangzhou")
resp = Client(config).reset_dts_job(models.ResetDtsJobRequest(dts_job_id="benchjob", region_id="cn-hangzhou"))
assert resp.body.success, resp.body
PY

export ALIBABA_CLOUD_ACCESS_KEY_ID=benchid ALIBABA_CLOUD_ACCESS_KEY_SECRET=benchsecret

log "$rounds rounds, alternating (after one warm-up run of each)"
# Each command runs under GNU time, which reports the peak RSS (%M): a process's peak RSS includes
# the memory of whoever forked it (Linux keeps the pre-exec high-water mark), so it must be
# forked from a small process, not from Python. CPU comes from os.wait4 on GNU time with
# microsecond resolution (it includes GNU time's own few hundred microseconds: conservative).
python3 - "$rounds" "$ours" "$port" "$venv/bin/python" "$work/sdk_reset.py" "$go_peer" <<'PY'
import os, statistics, subprocess, sys, time
rounds, ours, port, py, script, go_peer = int(sys.argv[1]), *sys.argv[2:]
cmds = {
    "rust": [ours, "reset", "--job-id", "benchjob", "--endpoint", f"http://127.0.0.1:{port}"],
    "python": [py, script],
    "go": [go_peer, f"127.0.0.1:{port}", "benchjob"],
}
def run(cmd):
    rss_file = os.path.join(os.path.dirname(script), "rss")
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-o", rss_file, "-f", "%M"] + cmd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed: {err}")
    rss_kib = int(open(rss_file).read().split()[-1])
    return ru.ru_utime + ru.ru_stime, wall, rss_kib / 1024.0
for c in cmds.values():
    run(c)
samples = {n: [] for n in cmds}
for _ in range(rounds):
    for n, c in cmds.items():
        samples[n].append(run(c))
med = {n: tuple(statistics.median(x[i] for x in v) for i in range(3)) for n, v in samples.items()}
print(f"{'':24}{'CPU (user+sys)':>16}{'wall':>10}{'max RSS':>12}")
for n, label in (("rust", "dts-operator reset"), ("go", "Go OpenAPI (CallApi)"), ("python", "Python SDK")):
    c, w, r = med[n]
    print(f"{label:24}{c*1000:13.2f} ms{w*1000:7.1f} ms{r:9.1f} MiB")
rc, rw, rr = med["rust"]
for n, label in (("go", "ratio (Go / ours)"), ("python", "ratio (Python / ours)")):
    c, w, r = med[n]
    print(f"{label:24}{c/rc:14.1f}x{w/rw:9.1f}x{r/rr:11.1f}x")
print(f"medians of {rounds} alternating rounds; targets: against Go CPU >= 3x less and peak memory"
      " >= 2x less; against Python CPU >= 20x less, peak memory >= 8x less")
PY
