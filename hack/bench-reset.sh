#!/usr/bin/env bash
# Benchmark: the cold-process cost of one ResetDtsJob call — `dts-operator reset` against the
# official Alibaba Cloud Python SDK (alibabacloud-dts20200101) making the same call against the
# same local simulator. Runs both side by side, alternating, and prints medians and ratios.
#
#   hack/bench-reset.sh [ROUNDS]      (default 15 rounds)
#
# Measures user+sys CPU time, wall time and max RSS with /usr/bin/time -v. Installs the SDK in a
# throw-away virtualenv under ${XDG_CACHE_HOME:-~/.cache}/dts-operator/bench-venv. Nothing here
# is a test: it reports numbers, it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rounds=${1:-15}
port=${BENCH_PORT:-18480}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dts-operator
venv=$cache/bench-venv
target=${CARGO_TARGET_DIR:-$root/target}

log() { printf '==> %s\n' "$*" >&2; }

[ -x /usr/bin/time ] || { log "installing GNU time"; apt-get update -qq && apt-get install -y -qq time; }

log "building release binaries"
cargo build --release --locked -p dts-operator -p dts-simulator >&2

if [ ! -x "$venv/bin/python" ]; then
  log "creating a virtualenv with the official SDK (alibabacloud-dts20200101)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check alibabacloud-dts20200101 >&2
fi
"$venv/bin/pip" show alibabacloud-dts20200101 2>/dev/null | grep -E '^(Name|Version)' >&2 || true

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

measure() { # name, command...
  local name=$1; shift
  /usr/bin/time -v -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; return 1; }
  awk -v n="$name" -F': ' '
    /User time/ {u=$2} /System time/ {s=$2} /Maximum resident/ {r=$2}
    /Elapsed \(wall clock\)/ { split($2, a, ":"); w = (length(a)==3) ? a[1]*3600+a[2]*60+a[3] : a[1]*60+a[2] }
    END { printf "%s %.4f %.4f %d\n", n, u+s, w, r }' "$work/t" >>"$work/samples"
}

log "warming up"
measure warm "$target/release/dts-operator" reset --job-id benchjob --endpoint "http://127.0.0.1:$port"
measure warm "$venv/bin/python" "$work/sdk_reset.py"
: >"$work/samples"

log "$rounds rounds, alternating"
for i in $(seq 1 "$rounds"); do
  measure rust "$target/release/dts-operator" reset --job-id benchjob --endpoint "http://127.0.0.1:$port"
  measure python "$venv/bin/python" "$work/sdk_reset.py"
done

python3 - "$work/samples" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def col(name, i): return [float(r[i]) for r in rows if r[0] == name]
med = {n: (statistics.median(col(n, 1)), statistics.median(col(n, 2)), statistics.median(col(n, 3))) for n in ("rust", "python")}
print(f"{'':22}{'CPU (user+sys)':>16}{'wall':>10}{'max RSS':>12}")
for n, label in (("rust", "dts-operator reset"), ("python", "Python SDK")):
    c, w, r = med[n]
    print(f"{label:22}{c*1000:13.1f} ms{w*1000:7.0f} ms{r/1024:9.1f} MiB")
(rc, rw, rr), (pc, pw, pr) = med["rust"], med["python"]
print(f"{'ratio (SDK / ours)':22}{pc/max(rc,1e-4):14.1f}x{pw/max(rw,1e-4):9.1f}x{pr/rr:11.1f}x")
print(f"medians of {len(col('rust',1))} alternating rounds; targets: CPU >= 20x, RSS >= 8x")
PY
