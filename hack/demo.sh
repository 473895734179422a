#!/usr/bin/env bash
# The dts-operator demo: everything on this machine, nothing reaches Alibaba Cloud.
#
# It builds the operator and the DTS *simulator*, starts a local Kubernetes control plane
# (hack/cluster.sh), runs the simulator and the operator, applies the four examples in
# deploy/examples/ (a reset that succeeds, one that DTS throttles before it succeeds, one DTS
# refuses, one whose answer is lost and which the operator proves from the job's state), shows `kubectl get` / `kubectl describe` as they progress, checks the outcome, and
# stops everything it started.
#
#   hack/demo.sh               pauses between steps (press Enter)
#   hack/demo.sh --ci          no pauses (also DEMO_NONINTERACTIVE=1, or when stdin is not a terminal)
#   hack/demo.sh --in-cluster  the same story with the operator as a Pod: a local node
#                              (hack/cluster.sh up --with-node; root), the image from
#                              hack/image.sh, `helm install` of deploy/helm/dts-operator, and the
#                              simulator serving https on the node's bridge as a private gateway,
#                              trusted through the chart's caBundle. Combines with --ci.
#
# Either way it exits non-zero when the four resources do not end as described (Succeeded after
# one call; Succeeded after more than one; Failed after one call; Succeeded by ResetVerified
# after one call) — in-cluster also when the Pod
# does not run as uid 65532 without capabilities, or its log says "forbidden".
#
# Environment (all optional):
#   DEMO_NAMESPACE      namespace of the demo resources (default dts-demo)
#   DEMO_TIMEOUT        seconds to wait for the four outcomes (default 120)
#   DEMO_KEEP_CLUSTER=1 never stop the control plane, even if this script started it
#   DEMO_SKIP_BUILD=1   use prebuilt binaries: DEMO_OPERATOR_BIN and DEMO_SIMULATOR_BIN (default:
#                       the cargo target directory's debug/ binaries); in-cluster, the image is
#                       still hack/image.sh's (cached: built once per source change)
#   DTS_CLUSTER_ETCD_PORT, DTS_CLUSTER_ETCD_PEER_PORT, DTS_CLUSTER_APISERVER_PORT: the control
#                       plane's ports if it has to be started (see hack/cluster.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

interactive=1
in_cluster=0
for arg in "$@"; do
  case $arg in
  --ci) interactive=0 ;;
  --in-cluster) in_cluster=1 ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
  esac
done
[ "${DEMO_NONINTERACTIVE:-}" = 1 ] && interactive=0
[ -t 0 ] || interactive=0

ns=${DEMO_NAMESPACE:-dts-demo}
timeout=${DEMO_TIMEOUT:-120}
work=$root/.local/demo
kubectl=$root/.local/bin/kubectl
examples=(
  deploy/examples/01-reset-succeeds.yaml
  deploy/examples/02-reset-throttled-then-succeeds.yaml
  deploy/examples/03-reset-fails.yaml
  deploy/examples/04-answer-lost-reset-verified.yaml
)
names=(reset-orders-sync reset-billing-sync reset-legacy-sync reset-archive-sync)
jobs=(demo-orders-sync demo-billing-sync demo-legacy-sync demo-archive-sync)

# --- presentation ------------------------------------------------------------------

if [ -t 1 ]; then bold=$'\e[1m' dim=$'\e[2m' red=$'\e[31m' green=$'\e[32m' off=$'\e[0m'; else bold='' dim='' red='' green='' off=''; fi
step_no=0
step() { step_no=$((step_no + 1)); printf '\n%s== %d. %s%s\n' "$bold" "$step_no" "$*" "$off"; }
say() { printf '%s\n' "$*"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }
pause() {
  [ "$interactive" = 1 ] || return 0
  printf '\n%s[press Enter to continue, Ctrl-C to stop]%s ' "$dim" "$off"
  read -r _ || true
}
fail() { printf '%sdemo: %s%s\n' "$red" "$*" "$off" >&2; exit 1; }
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }
# kubectl, shown as typed: the built .local/bin/kubectl (v1.36) with the local kubeconfig.
kshow() { printf '%s$ kubectl %s%s\n' "$dim" "$*" "$off"; k "$@"; }
# A child of ours still running (not exited and not a zombie).
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# --- teardown: only what this script started ----------------------------------------

sim_pid="" op_pid="" kubeconfig="" apiserver_pid_before="" cluster_touched=0
node_was_up=0 release_installed=0 release=dts-demo
pidfile=$root/.local/cluster/kube-apiserver.pid
node_env=$root/.local/node/node.env

stop_pid() { # NAME PID: TERM, wait up to 20 s, then KILL
  local name=$1 pid=$2 i
  if ! alive "$pid"; then
    wait "$pid" 2>/dev/null || true
    return 0
  fi
  say "stopping the $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "the $name did not stop after TERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  printf '\n%s== cleaning up%s\n' "$bold" "$off"
  [ -n "$op_pid" ] && stop_pid operator "$op_pid"
  if [ "$release_installed" = 1 ]; then
    say "uninstalling the Helm release $release (namespace $ns)"
    "$root/.local/bin/helm" --kubeconfig "$kubeconfig" uninstall "$release" -n "$ns" --wait --timeout 60s 2>&1 | sed 's/^/  /'
  fi
  [ -n "$sim_pid" ] && stop_pid "DTS simulator" "$sim_pid"
  local after=""
  after=$(cat "$pidfile" 2>/dev/null)
  if [ "$cluster_touched" = 1 ] && [ -n "$after" ] && [ "$after" != "$apiserver_pid_before" ] &&
    [ "${DEMO_KEEP_CLUSTER:-}" != 1 ]; then
    say "stopping the local control plane this demo started"
    hack/cluster.sh down 2>&1 | sed 's/^/  /'
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  elif [ "$in_cluster" = 1 ] && [ "$node_was_up" = 0 ] && [ -f "$node_env" ] && [ "${DEMO_KEEP_CLUSTER:-}" != 1 ]; then
    say "stopping the node this demo started (the control plane was already running)"
    hack/node.sh down 2>&1 | sed 's/^/  /'
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    rm -f "$node_env"
    for f in "${examples[@]}"; do k delete -n "$ns" -f "$f" --ignore-not-found --wait=false >/dev/null 2>&1; done
  elif [ -n "$kubeconfig" ] && [ -f "$kubeconfig" ]; then
    # The control plane was already running (e.g. hack/test.sh's): leave it, remove our objects.
    say "leaving the control plane running (it was not started by this demo); removing the demo's objects from namespace $ns"
    for f in "${examples[@]}"; do k delete -n "$ns" -f "$f" --ignore-not-found --wait=false >/dev/null 2>&1; done
    k delete secret -n "$ns" dts-credentials --ignore-not-found >/dev/null 2>&1
    if [ "$in_cluster" = 1 ]; then
      # With a node, namespaces really go (the controller-manager finishes them).
      k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1
    fi
  fi
  say "logs of this run: $work/"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 0. what this is -----------------------------------------------------------------

printf '%sdts-operator demo%s\n' "$bold" "$off"
say "dts-operator watches DtsJobReset resources and calls Alibaba Cloud DTS ResetDtsJob for each,"
say "at most once per request, writing the answer back into the resource's status."
say ""
say "Here everything runs on this machine: a local Kubernetes control plane (kube-apiserver +"
say "etcd), and a DTS SIMULATOR in place of Alibaba Cloud. The simulator checks request"
say "signatures like the real gateway and answers from a script; no real DTS task is touched."
if [ "$in_cluster" = 1 ]; then
  say ""
  say "In-cluster: a real node runs the operator as a Pod, installed with Helm from"
  say "deploy/helm/dts-operator; the simulator plays a private DTS gateway over https."
  [ "$(id -u)" = 0 ] || fail "--in-cluster needs root: the node sets up a bridge, mounts and cgroups"
fi
[ "$interactive" = 1 ] || say "(non-interactive: no pauses)"
pause

# --- 1. build --------------------------------------------------------------------------

step "Building the operator and the DTS simulator"
if [ "${DEMO_SKIP_BUILD:-}" = 1 ]; then
  say "DEMO_SKIP_BUILD=1: using prebuilt binaries"
else
  say "(the first build on a machine takes a few minutes)"
  run cargo build --locked -p dts-operator -p dts-simulator
fi
if [ -z "${DEMO_OPERATOR_BIN:-}" ] || [ -z "${DEMO_SIMULATOR_BIN:-}" ]; then
  # Where cargo put them (CARGO_TARGET_DIR, a .cargo/config.toml, or ./target).
  target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  [ -n "$target_dir" ] || target_dir=${CARGO_TARGET_DIR:-$root/target}
fi
operator_bin=${DEMO_OPERATOR_BIN:-$target_dir/debug/dts-operator}
simulator_bin=${DEMO_SIMULATOR_BIN:-$target_dir/debug/dts-simulator}
[ "$in_cluster" = 1 ] || [ -x "$operator_bin" ] || fail "no operator binary at $operator_bin"
[ -x "$simulator_bin" ] || fail "no simulator binary at $simulator_bin"
if [ "$in_cluster" = 1 ]; then
  say "The operator's image: hack/image.sh builds a static release binary and packs it with crane"
  say "(no container engine), with deploy/Dockerfile's runtime layout. The first build takes minutes."
  printf '%s$ hack/image.sh build%s\n' "$dim" "$off"
  hack/image.sh build >/dev/null
fi

rm -rf "$work"
mkdir -p "$work"

# --- 2. control plane ----------------------------------------------------------------------

if [ "$in_cluster" = 1 ]; then
  step "Starting a local Kubernetes control plane and node (hack/cluster.sh up --with-node)"
  say "kube-apiserver and etcd on 127.0.0.1, plus one node: kubelet, containerd, controller-manager,"
  say "scheduler, on a bridge (10.88.0.1/24) from which nothing leaves this machine. What was"
  say "already running is reused and left running."
  say "(the first run on a machine builds the programs: about 10-15 minutes)"
  [ -f "$node_env" ] && node_was_up=1
else
  step "Starting a local Kubernetes control plane (hack/cluster.sh up)"
  say "kube-apiserver and etcd on 127.0.0.1, nothing else: no nodes, no pods. That is all an"
  say "operator needs. If one is already running (hack/test.sh's), it is reused and left running."
  say "(the first run on a machine builds kube-apiserver, etcd, kubectl and helm: about 10 minutes)"
fi
apiserver_pid_before=$(cat "$pidfile" 2>/dev/null || true)
cluster_touched=1
if [ "$in_cluster" = 1 ]; then
  export_line=$(hack/cluster.sh up --with-node | tail -n 1)
  printf '%s$ hack/image.sh import%s\n' "$dim" "$off"
  hack/image.sh import >/dev/null
else
  export_line=$(hack/cluster.sh up | tail -n 1)
fi
kubeconfig=${export_line#export KUBECONFIG=}
[ -f "$kubeconfig" ] || fail "hack/cluster.sh up printed no kubeconfig ($export_line)"
if [ "$(cat "$pidfile" 2>/dev/null)" = "$apiserver_pid_before" ]; then
  say "reusing the control plane that was already running"
fi
say "To look around yourself while the demo runs:"
say "  export KUBECONFIG=$kubeconfig PATH=$root/.local/bin:\$PATH"

step "Installing the DtsJobReset CustomResourceDefinition"
say "The CRD is generated from the operator's Rust types (dts-operator crd); crds/ holds a copy."
kshow apply --server-side --force-conflicts --field-manager=dts-operator-demo \
  -f crds/dtsops.io_dtsjobresets.yaml
k wait --for=condition=Established --timeout=60s crd/dtsjobresets.dtsops.io >/dev/null

if ! k get namespace "$ns" >/dev/null 2>&1; then
  kshow create namespace "$ns"
fi
[ "$(k get namespace "$ns" -o jsonpath='{.status.phase}')" = Active ] ||
  fail "namespace $ns is not Active (this control plane never finishes deleting namespaces: set DEMO_NAMESPACE to another name)"
# Leftovers of an interrupted run in a reused control plane.
for f in "${examples[@]}"; do k delete -n "$ns" -f "$f" --ignore-not-found >/dev/null; done
k delete secret -n "$ns" dts-credentials --ignore-not-found >/dev/null
pause

# --- 3. the simulator ----------------------------------------------------------------------

step "Starting the DTS SIMULATOR (not Alibaba Cloud)"
sim_args=(--listen 127.0.0.1:0)
curl_tls=()
if [ "$in_cluster" = 1 ]; then
  node_ip=$(sed -n 's/^NODE_IP=//p' "$node_env")
  say "It plays a private DTS gateway: https on the node's bridge address $node_ip, with a"
  say "certificate from a CA made here (openssl), as a company's own gateway would have."
  (
    cd "$work"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 1 -keyout ca.key -out ca.crt \
      -subj "/CN=dts-demo gateway CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout gateway.key -out gateway.csr \
      -subj "/CN=dts-gateway.demo" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s\n' "$node_ip" >gateway.ext
    openssl x509 -req -sha256 -days 1 -in gateway.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -extfile gateway.ext -out gateway.crt 2>/dev/null
  ) || fail "could not make the gateway's certificate"
  sim_args=(--listen "$node_ip:0" --allow-non-loopback --tls-cert "$work/gateway.crt" --tls-key "$work/gateway.key")
  curl_tls=(--cacert "$work/ca.crt")
  say "It accepts one made-up access key, and answers from hack/demo-simulator-script.json:"
else
  say "It plays the DTS gateway on a free loopback port, accepts one made-up access key, and answers"
  say "from hack/demo-simulator-script.json:"
fi
say "  demo-orders-sync   success at once"
say "  demo-billing-sync  Throttling.User twice (retry after 1 s), then success"
say "  demo-legacy-sync   InvalidParameter: a terminal error"
access_key_id=demo-access-key-id
access_key_secret=demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The file exists before the poll below reads it: the background job opens it only once it runs,
# and on a loaded machine that can be after the first poll (sed would exit 2 under set -e).
: >"$work/simulator.out"
"$simulator_bin" "${sim_args[@]}" \
  --access-key-id "$access_key_id" --access-key-secret "$access_key_secret" \
  --script hack/demo-simulator-script.json >"$work/simulator.out" 2>"$work/simulator.log" </dev/null &
sim_pid=$!
sim_url=""
# Bounded generously: on a loaded 2-core CI machine a debug build can take seconds to start.
for ((i = 0; i < 300; i++)); do
  sim_url=$(sed -n 's/^listening on \(https\{0,1\}:[^ ]*\)$/\1/p' "$work/simulator.out" 2>/dev/null | head -n 1 || true)
  [ -n "$sim_url" ] && break
  alive "$sim_pid" || break
  sleep 0.1
done
[ -n "$sim_url" ] || { cat "$work/simulator.log" >&2; fail "the simulator did not start"; }
say "simulator listening on $sim_url (log: $work/simulator.log)"

step "Storing the credentials in a Secret"
say "Each DtsJobReset names a Secret in its own namespace with accessKeyId / accessKeySecret."
say "Here it holds the simulator's made-up key; the operator reads it at each attempt."
k create secret generic dts-credentials -n "$ns" \
  --from-literal=accessKeyId="$access_key_id" --from-literal=accessKeySecret="$access_key_secret" >/dev/null
printf '%s$ kubectl create secret generic dts-credentials -n %s --from-literal=accessKeyId=%s --from-literal=accessKeySecret=****%s\n' \
  "$dim" "$ns" "$access_key_id" "$off"

# --- 4. the operator --------------------------------------------------------------------------

if [ "$in_cluster" = 1 ]; then
  step "Installing the operator with Helm (deploy/helm/dts-operator)"
  say "The chart as a user installs it, plus what this machine needs: the imported image (never"
  say "pulled), the gateway's address, its CA in a ConfigMap (the chart's caBundle, i.e."
  say "--ca-bundle), this namespace only, and short retry delays so the demo is quick."
  k create configmap dts-gateway-ca -n "$ns" --from-file=ca.crt="$work/ca.crt" \
    --dry-run=client -o yaml | k apply -f - >/dev/null
  "$root/.local/bin/helm" --kubeconfig "$kubeconfig" uninstall "$release" -n "$ns" --wait >/dev/null 2>&1 || true
  helm_args=(install "$release" deploy/helm/dts-operator --namespace "$ns"
    --set image.pullPolicy=Never --set "watchNamespace=$ns" --set "dtsEndpoint=$sim_url"
    --set caBundle.configMapName=dts-gateway-ca --set backoffInitial=500ms --set backoffMax=5s
    --set verifyInterval=1s --set logFormat=text --wait --timeout 180s)
  printf '%s$ helm %s%s\n' "$dim" "${helm_args[*]}" "$off"
  release_installed=1
  helm_start=$SECONDS
  "$root/.local/bin/helm" --kubeconfig "$kubeconfig" "${helm_args[@]}" 2>&1 | sed 's/^/  /'
  [ "${PIPESTATUS[0]}" = 0 ] || fail "helm install failed"
  say "installed and Ready after $((SECONDS - helm_start))s"
  kshow get pods -n "$ns" -o wide
  pod=$(k get pods -n "$ns" -l "app.kubernetes.io/instance=$release" -o jsonpath='{.items[0].metadata.name}')
  say "The Pod runs as user 65532 with a read-only root filesystem, no capabilities and the"
  say "RuntimeDefault seccomp profile (the chart's securityContext); checked at the end."
  pause
else
  step "Starting the operator (dts-operator run)"
  say "Watching namespace $ns only, sending every DTS call to the simulator (--dts-endpoint),"
  say "with short retry delays so the demo is quick. In a cluster it runs as a Deployment"
  say "(deploy/helm, deploy/kustomize)."
  # A clean environment: no ALIBABA_CLOUD_* credentials or KUBECONFIG of the caller leak in.
  op_cmd=("$operator_bin" run --kubeconfig "$kubeconfig" --namespace "$ns"
    --dts-endpoint "$sim_url" --metrics-addr 127.0.0.1:0
    --backoff-initial 500ms --backoff-max 5s --verify-interval 1s --shutdown-timeout 5s
    --log-format text)
  printf '%s$ %s%s\n' "$dim" "${op_cmd[*]//$root\//}" "$off"
  : >"$work/operator.log" # exists before the first poll (see the simulator's)
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" RUST_LOG=info POD_NAMESPACE="$ns" \
    "${op_cmd[@]}" >"$work/operator.log" 2>&1 </dev/null &
  op_pid=$!
  metrics=""
  for ((i = 0; i < 300; i++)); do
    if [ -z "$metrics" ]; then
      metrics=$(sed -n 's/.*admin server listening.*addr=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/operator.log" | head -n 1)
    fi
    if [ -n "$metrics" ] && curl -fsS --max-time 2 "http://$metrics/readyz" >/dev/null 2>&1; then break; fi
    alive "$op_pid" || { cat "$work/operator.log" >&2; fail "the operator exited"; }
    sleep 0.1
  done
  curl -fsS --max-time 2 "http://$metrics/readyz" >/dev/null 2>&1 || {
    cat "$work/operator.log" >&2
    fail "the operator did not become ready"
  }
  say "operator ready: metrics on http://$metrics/metrics (log: $work/operator.log)"
  pause
fi

# --- 5. the examples -------------------------------------------------------------------------

step "Applying the four examples from deploy/examples/"
for f in "${examples[@]}"; do
  kshow apply -n "$ns" -f "$f"
done

step "Watching them (kubectl get dtsreset), up to ${timeout}s"
say "Phases: Pending -> Running -> (Retrying) -> Succeeded or Failed. Attempts counts the calls."
say "reset-archive-sync's answer is lost: Unknown while the operator reads the job, then Succeeded."
last="" deadline=$((SECONDS + timeout))
while :; do
  state=$(k get dtsreset -n "$ns" -o jsonpath='{range .items[*]}{.metadata.name}={.status.phase}/{.status.attempts};{end}' 2>/dev/null || true)
  if [ "$state" != "$last" ]; then
    printf '%s(+%ss)%s\n' "$dim" "$((SECONDS - deadline + timeout))" "$off"
    k get dtsreset -n "$ns" | sed 's/^/  /'
    last=$state
  fi
  done_count=0
  for n in "${names[@]}"; do
    # Unknown is not an end here: the lost answer is verified into Succeeded.
    case $state in *"$n=Succeeded/"* | *"$n=Failed/"*) done_count=$((done_count + 1)) ;; esac
  done
  [ "$done_count" = "${#names[@]}" ] && break
  if ((SECONDS >= deadline)); then
    say "${red}not finished after ${timeout}s${off}"
    break
  fi
  sleep 0.5
done
pause

step "The story of each resource (kubectl describe)"
say "Status holds DTS's answer (RequestId, Success, ErrCode, ...); the conditions follow kstatus"
say "(Ready / Reconciling / Stalled), which kubectl wait, Flux and Argo CD understand; events"
say "record each attempt."
for n in "${names[@]}"; do
  printf '\n'
  kshow describe dtsreset -n "$ns" "$n" | sed 's/^/  /'
done
pause

step "What the simulator received"
calls=$(curl -fsS --max-time 5 "${curl_tls[@]}" "$sim_url/_simulator/calls?action=ResetDtsJob" || true)
declare -A seen
for j in "${jobs[@]}"; do
  seen[$j]=$({ grep -o "\"dtsJobId\":\"$j\"" <<<"$calls" || true; } | wc -l | tr -d ' ')
  say "  $j: ${seen[$j]} ResetDtsJob call(s)"
done
say "One call per request, plus a retry only for throttling, which DTS refuses before executing."

# --- 6. check -------------------------------------------------------------------------------

step "Checking the outcome"
ok=1
check() { # NAME EXPECTED-PHASE ATTEMPTS-TEST DESCRIPTION
  local n=$1 want=$2 test=$3 what=$4 phase attempts
  phase=$(k get dtsreset -n "$ns" "$n" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  attempts=$(k get dtsreset -n "$ns" "$n" -o jsonpath='{.status.attempts}' 2>/dev/null || true)
  if [ "$phase" = "$want" ] && [ -n "$attempts" ] && (( attempts $test )); then
    printf '  %sok%s    %s: %s (phase %s, attempts %s)\n' "$green" "$off" "$n" "$what" "$phase" "$attempts"
  else
    printf '  %sFAIL%s  %s: expected %s, got phase %s, attempts %s\n' "$red" "$off" "$n" "$what" "${phase:-none}" "${attempts:-none}"
    ok=0
  fi
}
check reset-orders-sync Succeeded "== 1" "Succeeded after one call"
check reset-billing-sync Succeeded "> 1" "Succeeded after retries"
check reset-legacy-sync Failed "== 1" "Failed after one call, not retried"
check reset-archive-sync Succeeded "== 1" "the answer was lost, the operator proved the reset happened"
verified=$(k get dtsreset -n "$ns" reset-archive-sync -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}' 2>/dev/null || true)
if [ "$verified" = ResetVerified ]; then
  printf '  %sok%s    reset-archive-sync: Ready by %s, from the job'"'"'s state\n' "$green" "$off" "$verified"
else
  printf '  %sFAIL%s  reset-archive-sync: expected reason ResetVerified, got %s\n' "$red" "$off" "${verified:-none}"
  ok=0
fi
errcode=$(k get dtsreset -n "$ns" reset-legacy-sync -o jsonpath='{.status.errCode}' 2>/dev/null || true)
if [ "$errcode" = InvalidParameter ]; then
  printf '  %sok%s    reset-legacy-sync: errCode %s recorded\n' "$green" "$off" "$errcode"
else
  printf '  %sFAIL%s  reset-legacy-sync: expected errCode InvalidParameter, got %s\n' "$red" "$off" "${errcode:-none}"
  ok=0
fi
for j in demo-orders-sync demo-legacy-sync demo-archive-sync; do
  if [ "${seen[$j]:-0}" != 1 ]; then
    printf '  %sFAIL%s  the simulator saw %s calls for %s, expected exactly 1\n' "$red" "$off" "${seen[$j]:-0}" "$j"
    ok=0
  fi
done
if [ "$in_cluster" = 1 ]; then
  # The container as it runs: its PID 1, seen from the host through containerd.
  cid=$(k get pod -n "$ns" "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')
  cid=${cid#containerd://}
  address=$(sed -n 's/^CONTAINERD_ADDRESS=//p' "$node_env")
  cpid=$(ctr --address "$address" --namespace k8s.io tasks ls 2>/dev/null | awk -v id="$cid" '$1 == id {print $2}')
  uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$cpid/status" 2>/dev/null)
  capeff=$(awk '/^CapEff:/ {print $2}' "/proc/$cpid/status" 2>/dev/null)
  if [ "$uids" = "65532 65532 65532 65532" ] && [ "$capeff" = 0000000000000000 ]; then
    printf '  %sok%s    the operator Pod runs as uid 65532 with no capabilities (its /proc/1/status)\n' "$green" "$off"
  else
    printf '  %sFAIL%s  the operator Pod runs as uid "%s" with capabilities "%s"\n' "$red" "$off" "${uids:-?}" "${capeff:-?}"
    ok=0
  fi
  k logs -n "$ns" "$pod" >"$work/operator.log" 2>&1 || true
fi
if grep -qi forbidden "$work/operator.log"; then
  printf '  %sFAIL%s  the operator log mentions "forbidden"\n' "$red" "$off"
  ok=0
elif [ "$in_cluster" = 1 ]; then
  printf '  %sok%s    kubectl logs: nothing "forbidden"\n' "$green" "$off"
fi
if [ "$ok" != 1 ]; then
  say ""
  say "operator log (last 40 lines; in-cluster: kubectl logs):"
  tail -n 40 "$work/operator.log" | sed 's/^/  /'
  fail "the demo did not end as expected"
fi
say ""
say "${green}The demo ended as expected.${off} Next: deploy/README.md (install with Helm or kustomize),"
say "hack/test.sh (the full test suite)."
pause
