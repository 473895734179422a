#!/usr/bin/env bash
# A real local Kubernetes control plane for the integration tests: etcd and
# kube-apiserver (v1.36.3, built from pinned Go modules by hack/controlplane/build.sh),
# on 127.0.0.1 only, with Node and RBAC authorization. By default no controller-manager,
# scheduler or kubelet: no garbage collection, namespaces stay Terminating, no default
# ServiceAccounts, no Pods run. With --with-node, also one real node (hack/node.sh: kubelet,
# containerd, kube-controller-manager, kube-scheduler; root only), so Pods run.
#
#   hack/cluster.sh up [--with-node]
#                           build if needed, start (or reuse) the control plane, wait
#                           until /readyz is ok (and, with --with-node, until the node is
#                           Ready); the LAST stdout line is `export KUBECONFIG=<absolute
#                           path>` (progress goes to stderr)
#   hack/cluster.sh down    stop what `up` started (by saved PIDs), remove its data; a node
#                           goes first, and its host self-check must pass (exit 1 otherwise)
#   hack/cluster.sh status  exit 0 when up and ready (and the node, if one was started)
#   hack/cluster.sh check   the host self-check of hack/node.sh: nothing of a node is left
#
# State, PKI, logs and PID files: <repo>/.local/cluster/. etcd's data lives on
# /dev/shm when that is writable. Ports (all on 127.0.0.1), overridable:
#   DTS_CLUSTER_ETCD_PORT (23790), DTS_CLUSTER_ETCD_PEER_PORT (23800),
#   DTS_CLUSTER_APISERVER_PORT (26443)
# DTS_CLUSTER_READY_TIMEOUT (seconds, default 180) bounds the wait for /readyz.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=$root/.local/cluster
pki=$state/pki
kubeconfig=$state/kubeconfig
etcd_port=${DTS_CLUSTER_ETCD_PORT:-23790}
etcd_peer_port=${DTS_CLUSTER_ETCD_PEER_PORT:-23800}
apiserver_port=${DTS_CLUSTER_APISERVER_PORT:-26443}
ready_timeout=${DTS_CLUSTER_READY_TIMEOUT:-180}

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

export_line() { printf 'export KUBECONFIG=%s\n' "$kubeconfig"; }

# --- processes -------------------------------------------------------------

# pid_of NAME: the saved PID of NAME if that process is still the one we started
# (its command line carries the marker saved next to the PID), else nothing.
pid_of() {
  local name=$1 pid marker
  [ -f "$state/$name.pid" ] || return 0
  pid=$(cat "$state/$name.pid" 2>/dev/null || true)
  marker=$(cat "$state/$name.marker" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [ -r "/proc/$pid/cmdline" ] || return 0
  if [ -n "$marker" ] && ! tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$marker"; then
    return 0 # the PID was reused by an unrelated process
  fi
  # A zombie (exited, not yet reaped) counts as gone.
  case $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) in Z | X | "") return 0 ;; esac
  echo "$pid"
}

alive() { [ -n "$(pid_of "$1")" ]; }

# start NAME MARKER CMD...: runs CMD in its own session, detached from this shell
# (it survives the caller's exit), output to NAME.log, PID to NAME.pid.
start() {
  local name=$1 marker=$2
  shift 2
  printf '%s\n' "$marker" >"$state/$name.marker"
  # setsid: a new session, so no terminal hang-up or process-group signal of the
  # caller reaches it; fds 8 (our lock) and 9 closed so it does not hold them.
  setsid nohup "$@" </dev/null >"$state/$name.log" 2>&1 8>&- 9>&- &
  echo $! >"$state/$name.pid"
}

# stop NAME: TERM, wait up to 20 s, then KILL; only the process we started.
stop() {
  local name=$1 pid i
  pid=$(pid_of "$name")
  if [ -n "$pid" ]; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
      [ -n "$(pid_of "$name")" ] || break
      sleep 0.1
    done
    if [ -n "$(pid_of "$name")" ]; then
      log "$name did not exit after TERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        [ -n "$(pid_of "$name")" ] || break
        sleep 0.1
      done
      [ -z "$(pid_of "$name")" ] || die "$name (pid $pid) is still running"
    fi
    # Gone, but maybe not reaped yet by init: give it a moment so no <defunct> entry is left.
    for ((i = 0; i < 50; i++)); do
      case $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) in Z | X) sleep 0.1 ;; *) break ;; esac
    done
  fi
  rm -f "$state/$name.pid" "$state/$name.marker"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- readiness ---------------------------------------------------------------

readyz() {
  [ -f "$pki/admin.crt" ] || return 1
  local out
  out=$(curl -fsS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$(cat "$state/apiserver.port" 2>/dev/null || echo "$apiserver_port")/readyz" 2>/dev/null) || return 1
  [ "$out" = ok ]
}

is_up() { alive etcd && alive kube-apiserver && readyz && [ -f "$kubeconfig" ]; }

wait_ready() {
  local deadline=$((SECONDS + ready_timeout)) name
  log "waiting for /readyz (up to ${ready_timeout}s)"
  until readyz; do
    for name in etcd kube-apiserver; do
      if ! alive "$name"; then
        log "$name exited; last lines of $state/$name.log:"
        tail -n 30 "$state/$name.log" >&2 || true
        return 1
      fi
    done
    if ((SECONDS >= deadline)); then
      log "not ready after ${ready_timeout}s; last lines of $state/kube-apiserver.log:"
      tail -n 30 "$state/kube-apiserver.log" >&2 || true
      return 1
    fi
    sleep 1
  done
}

# --- PKI and kubeconfig --------------------------------------------------------

gen_pki() {
  command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install openssl)"
  rm -rf "$pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  (
    cd "$pki"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=dts-operator-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    sign() { # sign NAME SUBJECT EXTENSIONS
      openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%b' "$3" >"$1.ext"
      openssl x509 -req -sha256 -days 3650 -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" \
      'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n'
    sign admin "/O=system:masters/CN=dts-operator-admin" \
      'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n'
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() {
  local tmp=$kubeconfig.tmp
  (
    umask 077
    cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dts-local
  cluster:
    server: https://127.0.0.1:$(cat "$state/apiserver.port")
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: dts-local-admin
  user:
    client-certificate-data: $(base64 -w0 <"$pki/admin.crt")
    client-key-data: $(base64 -w0 <"$pki/admin.key")
contexts:
- name: dts-local
  context:
    cluster: dts-local
    user: dts-local-admin
    namespace: default
current-context: dts-local
preferences: {}
EOF
  )
  mv -f "$tmp" "$kubeconfig"
}

# --- commands --------------------------------------------------------------------

teardown() {
  stop kube-apiserver
  stop etcd
  local data
  data=$(cat "$state/etcd.datadir" 2>/dev/null || true)
  if [ -n "$data" ]; then
    rm -rf "$data"
  fi
  rm -f "$state/etcd.datadir" "$state/apiserver.port" "$kubeconfig"
}

cmd_up() {
  if is_up; then
    export_line
    return 0
  fi
  # Running but not (yet) ready, or the kubeconfig went missing: wait, re-write it.
  if alive etcd && alive kube-apiserver && [ -f "$state/apiserver.port" ] && wait_ready; then
    write_kubeconfig
    export_line
    return 0
  fi
  # Anything left from an earlier run (one process died, a reboot): start afresh.
  teardown

  local bin t0=$SECONDS
  bin=$("$root/hack/controlplane/build.sh" | tail -n 1)
  [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ] || die "build did not produce the binaries (in '$bin')"

  local port
  for port in "$etcd_port" "$etcd_peer_port" "$apiserver_port"; do
    if port_busy "$port"; then
      die "port 127.0.0.1:$port is already in use; set DTS_CLUSTER_ETCD_PORT / DTS_CLUSTER_ETCD_PEER_PORT / DTS_CLUSTER_APISERVER_PORT"
    fi
  done

  gen_pki

  local data
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    data=$(mktemp -d /dev/shm/dts-operator-etcd.XXXXXX)
  else
    mkdir -p "$state"
    data=$(mktemp -d "$state/etcd-data.XXXXXX")
  fi
  echo "$data" >"$state/etcd.datadir"
  echo "$apiserver_port" >"$state/apiserver.port"

  log "starting etcd on 127.0.0.1:$etcd_port (data in $data)"
  start etcd "--data-dir=$data" "$bin/etcd" \
    --name=dts-operator \
    "--data-dir=$data" \
    "--listen-client-urls=http://127.0.0.1:$etcd_port" \
    "--advertise-client-urls=http://127.0.0.1:$etcd_port" \
    "--listen-peer-urls=http://127.0.0.1:$etcd_peer_port" \
    "--initial-advertise-peer-urls=http://127.0.0.1:$etcd_peer_port" \
    "--initial-cluster=dts-operator=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync \
    --log-level=warn

  # kube-apiserver retries etcd on its own, but starting it after etcd answers keeps
  # its log free of connection errors.
  local i
  for ((i = 0; i < 300; i++)); do
    curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
    alive etcd || break
    sleep 0.1
  done
  if ! alive etcd; then
    log "etcd exited; last lines of $state/etcd.log:"
    tail -n 30 "$state/etcd.log" >&2 || true
    teardown
    exit 1
  fi

  log "starting kube-apiserver on https://127.0.0.1:$apiserver_port"
  start kube-apiserver "--tls-cert-file=$pki/apiserver.crt" "$bin/kube-apiserver" \
    "--etcd-servers=http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    "--secure-port=$apiserver_port" \
    "--tls-cert-file=$pki/apiserver.crt" \
    "--tls-private-key-file=$pki/apiserver.key" \
    "--client-ca-file=$pki/ca.crt" \
    "--service-account-issuer=https://127.0.0.1:$apiserver_port" \
    "--service-account-key-file=$pki/sa.pub" \
    "--service-account-signing-key-file=$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=Node,RBAC \
    "--kubelet-client-certificate=$pki/admin.crt" \
    "--kubelet-client-key=$pki/admin.key" \
    --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --profiling=false

  if ! wait_ready; then
    log "giving up; stopping what was started (logs stay in $state)"
    teardown
    exit 1
  fi
  write_kubeconfig
  log "ready after $((SECONDS - t0))s (logs: $state/{etcd,kube-apiserver}.log)"
  export_line
}

# A node was started from this checkout and may still hold host state.
node_started() { [ -f "$root/.local/node/node.env" ] || [ -d "${DTS_NODE_STATE_DIR:-/run/dts-operator-node}" ]; }

cmd_down() {
  local rc=0
  if node_started; then
    # The node needs the API server to delete its Pods cleanly: it goes first.
    "$root/hack/node.sh" down || rc=$?
    rm -f "$root/.local/node/node.env"
  fi
  teardown
  log "down"
  return "$rc"
}

cmd_status() {
  if is_up; then
    log "up and ready: https://127.0.0.1:$(cat "$state/apiserver.port"), kubeconfig $kubeconfig"
    if [ -f "$root/.local/node/node.env" ]; then
      "$root/hack/node.sh" status
    fi
    return 0
  fi
  local name
  for name in etcd kube-apiserver; do
    if alive "$name"; then log "$name: running (pid $(pid_of "$name"))"; else log "$name: not running"; fi
  done
  log "not ready"
  return 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&"${1:-2}"
}

cmd=${1:-}
with_node=0
case $cmd in
up)
  case ${2:-} in
  "") ;;
  --with-node) with_node=1 ;;
  *) usage; exit 2 ;;
  esac
  ;;
down | status | check) [ $# -le 1 ] || { usage; exit 2; } ;;
-h | --help | help) usage 1; exit 0 ;;
*) usage; exit 2 ;;
esac
if [ "$cmd" = check ]; then
  exec "$root/hack/node.sh" check
fi

mkdir -p "$state"
if [ "$cmd" != status ]; then
  # One up/down at a time (fd 8; the servers are started with it closed).
  exec 8>"$state/lock"
  flock 8
fi
if [ "$cmd" = up ] && [ "$with_node" = 1 ]; then
  line=$(cmd_up | tail -n 1)
  "$root/hack/node.sh" up >/dev/null
  printf '%s\n' "$line"
else
  "cmd_$cmd"
fi
