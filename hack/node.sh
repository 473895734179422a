#!/usr/bin/env bash
# One real Kubernetes node beside the local control plane, so the operator runs as a Pod:
# kubelet, kube-controller-manager and kube-scheduler (v1.36.3, hack/controlplane/build.sh),
# containerd + runc + the CNI plugins (Debian packages, installed by .ci/run), on a network
# that stays on this machine. Normally used through hack/cluster.sh:
#
#   hack/cluster.sh up --with-node   control plane, then this node (root only)
#   hack/cluster.sh down             node first (with its host self-check), then the rest
#
#   hack/node.sh up       the control plane must be up; starts the node, waits until it is
#                         Ready and `default` ServiceAccounts exist; the LAST stdout line is
#                         the path of the node's facts (KEY=VALUE lines, see `env`)
#   hack/node.sh down     stops everything the node started and restores the host: processes,
#                         mounts, cgroups, iptables chains, routes, bridge, sysctls, paths; then
#                         the self-check below (exit 1 if anything is left). Safe to repeat,
#                         also after a failed or killed run.
#   hack/node.sh check    the host self-check alone: nothing of a node is left, and the host
#                         matches the snapshot taken before the last `up`
#   hack/node.sh status   exit 0 when the node is up and Ready
#   hack/node.sh env      print the node's facts (NODE_NAME, NODE_IP, CONTAINERD_ADDRESS, ...)
#
# The network: a bridge (dts-br0, 10.88.0.1/24) with no route out: Pods get a route to the
# Service range only, IP forwarding stays off and a FORWARD rule drops anything leaving the
# bridge. The `kubernetes` Service (10.0.0.1:443) is DNATed to the API server on 127.0.0.1;
# Pods resolve no names (an empty resolv.conf). Test servers for Pods listen on the bridge IP.
# No image is ever pulled: containerd's registries all point at 127.0.0.1:1, the pause image is
# built from the Kubernetes module, the operator's by hack/image.sh (imported with
# `hack/image.sh import`).
#
# State: /run/dts-operator-node (DTS_NODE_STATE_DIR; short, because of unix socket path
# limits), removed by `down`; logs and the host snapshot: <repo>/.local/node/ (kept).
# Ports, overridable: kubelet DTS_NODE_KUBELET_PORT (20250, on the bridge IP), its healthz
# DTS_NODE_KUBELET_HEALTHZ_PORT (20248), DTS_NODE_CONTROLLER_MANAGER_PORT (20257) and
# DTS_NODE_SCHEDULER_PORT (20259), all on 127.0.0.1. DTS_NODE_READY_TIMEOUT (s, default 120).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster=$root/.local/cluster
pki=$cluster/pki
admin_kubeconfig=$cluster/kubeconfig
local_dir=$root/.local/node
snapshot=$local_dir/host-before
state=${DTS_NODE_STATE_DIR:-/run/dts-operator-node}
kubelet_port=${DTS_NODE_KUBELET_PORT:-20250}
kubelet_healthz_port=${DTS_NODE_KUBELET_HEALTHZ_PORT:-20248}
kcm_port=${DTS_NODE_CONTROLLER_MANAGER_PORT:-20257}
scheduler_port=${DTS_NODE_SCHEDULER_PORT:-20259}
ready_timeout=${DTS_NODE_READY_TIMEOUT:-120}

node_name=dts-local-node
bridge=dts-br0
# The bridge's own MAC, fixed (locally administered). A bridge whose address was never set takes
# the lowest MAC among its ports and changes it when that port goes — a Pod deleted — so every
# other Pod's ARP entry for the node IP goes stale and Pod <-> host traffic stops for a while.
bridge_mac=02:64:74:73:00:01
node_ip=10.88.0.1
pod_cidr=10.88.0.0/24
service_cidr=10.0.0.0/24
service_ip=10.0.0.1
pause_image=localhost/dts-operator-node/pause:3.10.2
chain=DTS-NODE
# Sysctls the kubelet rewrites on start (it wants them for its own reasons), plus the ones a
# node could plausibly touch; saved before `up`, restored by `down`.
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv6.conf.all.forwarding net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
# Host paths containerd, the kubelet or the CNI plugins create whatever their configuration says.
created_paths=(/run/containerd /var/lib/cni /var/log/containers /var/log/pods /var/lib/kubelet
  /etc/cni /opt/cni /var/run/netns /run/netns)

containerd_sock=$state/containerd/containerd.sock

log() { printf 'node: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

kubectl() { "$root/.local/bin/kubectl" --kubeconfig "$admin_kubeconfig" --request-timeout=10s "$@"; }
ctr_() { ctr --address "$containerd_sock" --namespace k8s.io "$@"; }

# --- processes -------------------------------------------------------------------------------

# pid_of NAME: the PID saved for NAME if that process still runs the command we started
# (checked against the marker saved with it), else nothing.
pid_of() {
  local name=$1 pid marker
  [ -f "$state/$name.pid" ] || return 0
  pid=$(cat "$state/$name.pid" 2>/dev/null || true)
  marker=$(cat "$state/$name.marker" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [ -r "/proc/$pid/cmdline" ] || return 0
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -xF -- "$marker" >/dev/null || return 0
  case $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) in Z | X | "") return 0 ;; esac
  echo "$pid"
}

alive() { [ -n "$(pid_of "$1")" ]; }

# start NAME MARKER CMD...: CMD in its own session, detached (it survives the caller), output
# to .local/node/NAME.log. The PID file is written by the process itself before it execs CMD,
# so it is CMD's PID whatever setsid does.
start() {
  local name=$1 marker=$2
  shift 2
  printf '%s\n' "$marker" >"$state/$name.marker"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$state/$name.pid" "$@" \
    </dev/null >"$local_dir/$name.log" 2>&1 7>&- 8>&- 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    [ -s "$state/$name.pid" ] && return 0
    sleep 0.05
  done
  die "$name did not start"
}

# stop_pid PID NAME: TERM, up to 20 s, then KILL; waits until it is gone (and reaped).
stop_pid() {
  local pid=$1 name=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    case $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) in Z | X) break ;; esac
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
    log "$name (pid $pid) did not exit after TERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  for ((i = 0; i < 100; i++)); do
    [ -e "/proc/$pid" ] || break
    case $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) in Z | X) sleep 0.1 ;; "") break ;; *) sleep 0.1 ;; esac
  done
}

stop() {
  local name=$1 pid
  pid=$(pid_of "$name")
  if [ -n "$pid" ]; then
    log "stopping $name (pid $pid)"
    stop_pid "$pid" "$name"
  fi
  rm -f "$state/$name.pid" "$state/$name.marker"
}

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Processes that belong to a node: containerd shims of our socket, and anything in a kubepods
# cgroup (containers whose shim is gone).
node_pids() {
  local p cmd
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
    if [[ $cmd == *"$containerd_sock"* ]] || grep -q kubepods "/proc/$p/cgroup" 2>/dev/null; then
      echo "$p"
    fi
  done
}

# --- host snapshot and self-check --------------------------------------------------------------

# (Pipelines here end in `grep ... >/dev/null`, never `grep -q`: with pipefail, a grep that stops
# reading early fails the pipeline through the writer's SIGPIPE.)
# What `down` must give back. Volatile fields (rule counters, address lifetimes) are dropped.
snap_ruleset() { nft list ruleset 2>/dev/null | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'; }
snap_tables() { nft list tables 2>/dev/null | sort; }
snap_routes() { { ip -4 route show table all; ip -6 route show table all; } 2>/dev/null | sed -E 's/ expires [0-9]+sec//; s/ +$//' | sort; }
snap_links() { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | sort; }
snap_mounts() { awk '{print $5}' /proc/self/mountinfo | sort; }
# Top-level groups only: below them the machine itself creates and removes groups all the time
# (kubepods anywhere is checked on its own).
snap_cgroups() { find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d 2>/dev/null | sort; }
snap_sysctls() {
  local k
  for k in "${sysctls[@]}"; do
    [ -e "/proc/sys/${k//.//}" ] && printf '%s=%s\n' "$k" "$(cat "/proc/sys/${k//.//}")"
  done
  return 0
}
snap_paths() {
  local p
  for p in "${created_paths[@]}"; do [ -e "$p" ] && echo "$p"; done
  return 0
}
snap_kinds=(ruleset tables routes links mounts cgroups sysctls paths)

take_snapshot() {
  rm -rf "$snapshot.tmp"
  mkdir -p "$snapshot.tmp"
  local k
  for k in "${snap_kinds[@]}"; do "snap_$k" >"$snapshot.tmp/$k"; done
  rm -rf "$snapshot"
  mv "$snapshot.tmp" "$snapshot"
}

# The self-check: nothing of a node left (absolute), and the host as in the snapshot (if any).
# Prints one line per problem; exit status 1 if there is any.
host_check() {
  local problems=0 p k what
  problem() { log "host check: $*"; problems=$((problems + 1)); }
  for p in $(node_pids); do problem "process left: $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; done
  for what in kubelet kube-controller-manager kube-scheduler containerd; do
    alive "$what" && problem "$what still running (pid $(pid_of "$what"))"
  done
  if grep -qF " $state" /proc/self/mountinfo; then problem "mounts left under $state: $(awk -v s="$state" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | head -n 5 | tr '\n' ' ')"; fi
  [ -e "$state" ] && problem "state directory left: $state"
  if [ -n "$(find /sys/fs/cgroup -name 'kubepods*' -type d 2>/dev/null | head -n 1)" ]; then
    problem "kubepods cgroups left: $(find /sys/fs/cgroup -name 'kubepods*' -type d 2>/dev/null | head -n 3 | tr '\n' ' ')"
  fi
  if ip link show "$bridge" >/dev/null 2>&1; then problem "bridge $bridge left"; fi
  if ip -4 route show table local | grep "^local $service_cidr" >/dev/null; then problem "local route $service_cidr left"; fi
  if nft list ruleset 2>/dev/null | grep -E "chain (KUBE-|$chain)" >/dev/null; then
    problem "iptables chains left: $(nft list ruleset 2>/dev/null | grep -oE "chain (KUBE-|$chain)[A-Z0-9-]*" | sort -u | tr '\n' ' ')"
  fi
  if [ -d "$snapshot" ]; then
    for k in "${snap_kinds[@]}"; do
      if ! diff -q "$snapshot/$k" <("snap_$k") >/dev/null 2>&1; then
        problem "$k differ from before 'up':"
        diff "$snapshot/$k" <("snap_$k") | grep '^[<>]' | head -n 10 | sed 's/^/    /' >&2 || true
      fi
    done
  else
    log "host check: no snapshot from before an 'up' (never up here): absolute checks only"
  fi
  if [ "$problems" = 0 ]; then
    log "host check: clean (no node processes, mounts, cgroups, iptables chains, routes, bridge; sysctls and paths as before)"
    return 0
  fi
  return 1
}

# --- teardown --------------------------------------------------------------------------------

# Everything `up` may have left, in the order that frees each thing before what holds it.
teardown() {
  local pid i
  set +e
  if [ -d "$state" ] || [ -d "$snapshot" ]; then log "tearing down the node"; fi
  # Nothing may recreate Pods while they go.
  stop kube-controller-manager
  stop kube-scheduler
  # Delete every Pod while the kubelet runs, so it stops the sandboxes and the CNI plugin
  # releases veths, addresses and network namespaces.
  if alive kubelet && alive containerd && [ -f "$admin_kubeconfig" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl delete pods --all --all-namespaces --grace-period=1 --wait=false >/dev/null 2>&1
    for ((i = 0; i < 300; i++)); do
      if [ -z "$(kubectl get pods -A -o name 2>/dev/null)" ] &&
        [ -z "$(ip -o link show master "$bridge" 2>/dev/null)" ] &&
        [ -z "$(ctr_ tasks ls -q 2>/dev/null)" ]; then
        break
      fi
      # After a while, no more grace: the kubelet still tears down force-deleted Pods.
      [ "$i" = 100 ] && kubectl delete pods --all --all-namespaces --grace-period=0 --force >/dev/null 2>&1
      sleep 0.1
    done
    [ -n "$(ip -o link show master "$bridge" 2>/dev/null)" ] && log "Pods' network interfaces still there after 30 s; removing by hand"
  fi
  stop kubelet
  # Containers the kubelet did not stop: kill their tasks through containerd.
  if alive containerd; then
    for i in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$i" >/dev/null 2>&1; done
    sleep 0.2
    for i in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$i" >/dev/null 2>&1; done
    for i in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$i" >/dev/null 2>&1; done
  fi
  stop containerd
  # Shims of our containerd and container processes whose shim is gone.
  for pid in $(node_pids); do stop_pid "$pid" "node process"; done
  # Pod interfaces left (only when Pods were not deleted through the kubelet).
  for i in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//'); do
    ip link delete "$i" 2>/dev/null
  done
  # Mounts under the state dir, deepest first: the kubelet's rshared root, Pod volumes,
  # network namespaces, overlay snapshots.
  if [ -n "$state" ] && [ "$state" != / ]; then
    for i in $(awk -v s="$state" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-); do
      umount -l "$i" 2>/dev/null || umount -f "$i" 2>/dev/null
    done
  fi
  # cgroups of Pods and containers, deepest first, in every hierarchy.
  find /sys/fs/cgroup -depth -type d -path '*kubepods*' -exec rmdir {} \; 2>/dev/null
  iptables_cleanup
  # Our network.
  ip -4 route del local "$service_cidr" dev lo table local 2>/dev/null
  ip link delete "$bridge" 2>/dev/null
  # iptables-nft tables that exist only because of the node (empty now).
  if [ -f "$snapshot/tables" ]; then
    while read -r _ family table; do
      [ -n "$table" ] || continue
      if ! grep -qxF "table $family $table" "$snapshot/tables" &&
        ! nft list table "$family" "$table" 2>/dev/null | grep -E '^\s+(ip|ip6|meta|tcp|udp|counter|jump|goto|oifname|iifname|ct|mark|drop|accept|return|dnat|snat|masquerade)' >/dev/null; then
        nft delete table "$family" "$table" 2>/dev/null
      fi
    done < <(snap_tables)
  fi
  if [ -f "$snapshot/sysctls" ]; then
    while IFS='=' read -r k v; do
      [ -n "$k" ] && [ "$(cat "/proc/sys/${k//.//}" 2>/dev/null)" != "$v" ] && printf '%s' "$v" >"/proc/sys/${k//.//}" 2>/dev/null
    done <"$snapshot/sysctls"
  fi
  if [ -f "$snapshot/paths" ]; then
    for i in "${created_paths[@]}"; do
      if [ -e "$i" ] && ! grep -qxF "$i" "$snapshot/paths"; then
        # Only what a node puts there: the kubelet's log links, CNI results, shim sockets.
        if ! grep -qF " $i" /proc/self/mountinfo; then rm -rf --one-file-system "$i"; fi
      fi
    done
  fi
  if [ -n "$state" ] && [ "$state" != / ] && [ -d "$state" ]; then
    if grep -qF " $state" /proc/self/mountinfo; then
      log "mounts remain under $state; not removing it"
    else
      rm -rf --one-file-system "$state"
    fi
  fi
  set -e
}

# Deletes the kubelet's chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, ...) and
# ours, and every rule that jumps to them, in v4 and v6.
iptables_cleanup() {
  local ipt table rule c
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null 2>&1 || continue
    for table in filter nat mangle raw; do
      "$ipt" -t "$table" -S >/dev/null 2>&1 || continue
      while read -r rule; do
        [ -n "$rule" ] || continue
        eval "\"$ipt\" -t $table ${rule/-A /-D }" 2>/dev/null
      done < <("$ipt" -t "$table" -S 2>/dev/null | grep -E "^-A .* -j (KUBE-|$chain)" | grep -vE '^-A (KUBE-|'"$chain"')')
      for c in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "^(KUBE-|$chain)"); do
        "$ipt" -t "$table" -F "$c" 2>/dev/null
      done
      for c in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "^(KUBE-|$chain)"); do
        "$ipt" -t "$table" -X "$c" 2>/dev/null
      done
    done
  done
}

# --- up ----------------------------------------------------------------------------------------

node_ready() {
  [ "$(kubectl get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

is_up() { alive containerd && alive kubelet && alive kube-controller-manager && alive kube-scheduler && node_ready; }

env_file=$state/node.env

write_env() {
  cat >"$env_file.tmp" <<EOF
NODE_NAME=$node_name
NODE_IP=$node_ip
POD_CIDR=$pod_cidr
SERVICE_IP=$service_ip
BRIDGE=$bridge
CONTAINERD_ADDRESS=$containerd_sock
CONTAINERD_NAMESPACE=k8s.io
KUBELET_ROOT=$state/kubelet
STATE_DIR=$state
KUBECONFIG=$admin_kubeconfig
EOF
  mv -f "$env_file.tmp" "$env_file"
  cp -f "$env_file" "$local_dir/node.env"
}

preflight() {
  [ "$(id -u)" = 0 ] || die "a node needs root (network, mounts, cgroups)"
  local p missing=""
  for p in containerd runc ctr iptables ip6tables nft ip conntrack; do
    command -v "$p" >/dev/null 2>&1 || missing+=" $p"
  done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] || missing+=" containernetworking-plugins"
  [ -z "$missing" ] || die "missing:$missing (Debian: apt-get install containerd runc containernetworking-plugins iptables conntrack; .ci/run does it)"
  [ -f "$cluster/apiserver.port" ] && [ -f "$admin_kubeconfig" ] || die "the control plane is not up (hack/cluster.sh up)"
  kubectl get --raw /readyz >/dev/null 2>&1 || die "the control plane does not answer (hack/cluster.sh status)"
  for p in "$kubelet_healthz_port" "$kcm_port" "$scheduler_port"; do
    port_busy 127.0.0.1 "$p" && die "port 127.0.0.1:$p is in use (DTS_NODE_*_PORT)"
  done
  if ip link show "$bridge" >/dev/null 2>&1; then die "a bridge $bridge exists: another node is up on this machine"; fi
  if ip -4 -o addr show | grep -E ' inet 10\.(88|0)\.0\.' >/dev/null || ip -4 route show table all | grep -E '^(local |broadcast )?10\.(88|0)\.0\.' >/dev/null; then
    die "10.88.0.0/24 or 10.0.0.0/24 is already used on this machine; the node needs both"
  fi
  openssl x509 -in "$pki/apiserver.crt" -noout -ext subjectAltName 2>/dev/null | grep "IP Address:$service_ip\(,\|$\)" >/dev/null ||
    die "the API server's certificate lacks IP:10.0.0.1: restart the control plane (hack/cluster.sh down; hack/cluster.sh up --with-node)"
}

gen_node_pki() {
  (
    cd "$state/pki"
    umask 077
    openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout kubelet-client.key -out kubelet-client.csr \
      -subj "/O=system:nodes/CN=system:node:$node_name" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -sha256 -days 30 -in kubelet-client.csr -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
      -CAcreateserial -CAserial "$state/pki/ca.srl" -extfile client.ext -out kubelet-client.crt 2>/dev/null
    rm -f kubelet-client.csr client.ext
  )
  local server
  server="https://127.0.0.1:$(cat "$cluster/apiserver.port")"
  cat >"$state/kubelet/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dts-local
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: kubelet
  user:
    client-certificate: $state/pki/kubelet-client.crt
    client-key: $state/pki/kubelet-client.key
contexts:
- name: kubelet
  context: {cluster: dts-local, user: kubelet}
current-context: kubelet
EOF
}

network_up() {
  log "network: bridge $bridge $node_ip/24, Service $service_ip:443 -> 127.0.0.1:$(cat "$cluster/apiserver.port"), no route out"
  local ap
  ap=$(cat "$cluster/apiserver.port")
  ip link add "$bridge" type bridge
  ip link set "$bridge" address "$bridge_mac"
  # 3 = NET_ADDR_SET: the kernel no longer derives the address from the ports.
  [ "$(cat "/sys/class/net/$bridge/addr_assign_type")" = 3 ] || die "the bridge's MAC is not pinned"
  ip addr add "$node_ip/24" dev "$bridge"
  ip link set "$bridge" up
  # DNAT to 127.0.0.1 for packets that arrive on the bridge (this interface only).
  printf 1 >"/proc/sys/net/ipv4/conf/$bridge/route_localnet"
  # The Service range is local: a Service IP never leaves through the default route.
  ip -4 route add local "$service_cidr" dev lo table local
  iptables -t nat -N "$chain"
  iptables -t nat -A "$chain" -d "$service_ip/32" -p tcp --dport 443 -j DNAT --to-destination "127.0.0.1:$ap"
  iptables -t nat -A PREROUTING -i "$bridge" -j "$chain"
  iptables -t nat -A OUTPUT -d "$service_ip/32" -j "$chain"
  iptables -t filter -N "$chain"
  iptables -t filter -A "$chain" -i "$bridge" ! -o "$bridge" -j DROP
  iptables -t filter -I FORWARD 1 -j "$chain"
}

write_containerd_config() {
  local c=$state/containerd r
  mkdir -p "$c" "$state/certs.d" "$state/cni/net.d" "$state/cni/ipam"
  # The pull guard: every registry containerd could be asked for answers from 127.0.0.1:1.
  for r in docker.io registry-1.docker.io registry.k8s.io k8s.gcr.io gcr.io quay.io ghcr.io localhost public.ecr.aws mcr.microsoft.com; do
    mkdir -p "$state/certs.d/$r"
    cat >"$state/certs.d/$r/hosts.toml" <<EOF
server = "http://127.0.0.1:1"
[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
  done
  cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  disable_apparmor = true
  # No CAP_SYS_RESOURCE on these machines: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$state/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$state/certs.d"
EOF
  # isGateway false and ipMasq false: the plugin then never turns on IP forwarding or adds NAT.
  cat >"$state/cni/net.d/10-dts-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "dts-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$state/cni/ipam",
        "ranges": [[{"subnet": "$pod_cidr", "rangeStart": "10.88.0.10", "gateway": "$node_ip"}]],
        "routes": [{"dst": "$service_cidr", "gw": "$node_ip"}]
      }
    }
  ]
}
EOF
}

write_kubelet_config() {
  : >"$state/resolv.conf"
  cat >"$state/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
# cgroup v1 here; 1.36 refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$containerd_sock
imageServiceEndpoint: unix://$containerd_sock
# No Pod resolves names (and so sends no DNS query anywhere).
resolvConf: $state/resolv.conf
clusterDomain: cluster.local
rotateCertificates: false
serverTLSBootstrap: false
# Never delete the imported images (nothing could pull them again).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
maxPods: 24
podLogsDir: $state/pod-logs
# Projected volumes (tokens, ConfigMaps) are refreshed this often: a rotated token shows up
# in seconds rather than a minute.
syncFrequency: 10s
EOF
}

wait_for() { # DESCRIPTION TIMEOUT COMMAND...
  local what=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    local n
    for n in containerd kubelet kube-controller-manager kube-scheduler; do
      if [ -f "$state/$n.marker" ] && ! alive "$n"; then
        log "$n exited while waiting for $what; last lines of $local_dir/$n.log:"
        tail -n 30 "$local_dir/$n.log" >&2 || true
        return 1
      fi
    done
    if ((SECONDS >= deadline)); then
      log "no $what after ${timeout}s"
      return 1
    fi
    sleep 0.2
  done
}

cmd_up() {
  if [ -f "$state/node.env" ] && is_up; then
    log "already up"
    echo "$local_dir/node.env"
    return 0
  fi
  preflight
  mkdir -p "$local_dir"
  # Leftovers of a crashed run: clean them against the snapshot taken before it.
  if [ -d "$state" ] || { [ -d "$snapshot" ] && ! host_check >/dev/null 2>&1; }; then
    log "leftovers of an earlier node: cleaning up first"
    teardown
    host_check || die "the host is not clean after removing the earlier node (see above)"
  fi
  local t0=$SECONDS bin
  bin=$("$root/hack/controlplane/build.sh" | tail -n 1)
  for p in kubelet kube-controller-manager kube-scheduler crane pause; do
    [ -x "$bin/$p" ] || die "build did not produce $p (in '$bin')"
  done
  take_snapshot
  trap 'rc=$?; if [ "$rc" != 0 ]; then log "up failed; removing what was started (logs stay in $local_dir)"; teardown; host_check || true; fi' EXIT
  mkdir -p "$state/pki" "$state/kubelet" "$state/pod-logs"
  chmod 700 "$state/pki"

  network_up
  gen_node_pki

  log "starting kube-controller-manager (127.0.0.1:$kcm_port) and kube-scheduler (127.0.0.1:$scheduler_port)"
  start kube-controller-manager "--secure-port=$kcm_port" "$bin/kube-controller-manager" \
    "--kubeconfig=$admin_kubeconfig" \
    "--authentication-kubeconfig=$admin_kubeconfig" \
    "--authorization-kubeconfig=$admin_kubeconfig" \
    --bind-address=127.0.0.1 "--secure-port=$kcm_port" \
    --leader-elect=false \
    "--root-ca-file=$pki/ca.crt" \
    "--service-account-private-key-file=$pki/sa.key" \
    "--cluster-signing-cert-file=$pki/ca.crt" \
    "--cluster-signing-key-file=$pki/ca.key" \
    '--controllers=*,-nodeipam' \
    "--cert-dir=$state/kcm-certs" \
    --profiling=false
  start kube-scheduler "--secure-port=$scheduler_port" "$bin/kube-scheduler" \
    "--kubeconfig=$admin_kubeconfig" \
    "--authentication-kubeconfig=$admin_kubeconfig" \
    "--authorization-kubeconfig=$admin_kubeconfig" \
    --bind-address=127.0.0.1 "--secure-port=$scheduler_port" \
    --leader-elect=false \
    "--cert-dir=$state/scheduler-certs" \
    --profiling=false

  write_containerd_config
  log "starting containerd ($containerd_sock)"
  start containerd "$state/containerd/config.toml" containerd --config "$state/containerd/config.toml"
  wait_for "containerd" 30 ctr --address "$containerd_sock" version
  log "importing the pause image ($pause_image)"
  local archive
  archive=$("$root/hack/image.sh" pause | tail -n 1)
  ctr_ images import --index-name "$pause_image" "$archive" >/dev/null
  ctr_ images ls -q | grep -xF "$pause_image" >/dev/null || die "the pause image was not imported as $pause_image"
  # The operator's image, if hack/image.sh built one for these sources already.
  if archive=$("$root/hack/image.sh" archive-if-built 2>/dev/null | tail -n 1) && [ -n "$archive" ]; then
    log "importing the operator's image ($archive)"
    DTS_NODE_CONTAINERD_ADDRESS=$containerd_sock "$root/hack/image.sh" import >/dev/null
  fi

  write_kubelet_config
  log "starting kubelet ($node_name, $node_ip:$kubelet_port)"
  start kubelet "--hostname-override=$node_name" "$bin/kubelet" \
    "--config=$state/kubelet/config.yaml" \
    "--kubeconfig=$state/kubelet/kubeconfig" \
    "--root-dir=$state/kubelet/root" \
    "--cert-dir=$state/kubelet/pki" \
    "--hostname-override=$node_name" \
    "--node-ip=$node_ip" \
    --v=1

  wait_for "Ready node" "$ready_timeout" node_ready
  wait_for "default ServiceAccount" 60 kubectl -n default get serviceaccount default
  wait_for "kube-root-ca.crt ConfigMap" 60 kubectl -n default get configmap kube-root-ca.crt
  write_env
  trap - EXIT
  log "node $node_name Ready after $((SECONDS - t0))s (logs: $local_dir/)"
  echo "$local_dir/node.env"
}

cmd_down() {
  teardown
  host_check
}

cmd_status() {
  if is_up; then
    log "node $node_name Ready ($node_ip); containerd $containerd_sock"
    return 0
  fi
  local n
  for n in containerd kubelet kube-controller-manager kube-scheduler; do
    if alive "$n"; then log "$n: running (pid $(pid_of "$n"))"; else log "$n: not running"; fi
  done
  log "node not up"
  return 1
}

cmd_env() {
  [ -f "$env_file" ] || die "the node is not up"
  cat "$env_file"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&"${1:-2}"
}

cmd=${1:-}
case $cmd in
up | down | status | check | env) ;;
-h | --help | help) usage 1; exit 0 ;;
*) usage; exit 2 ;;
esac
mkdir -p "$local_dir"
if [ "$cmd" = up ] || [ "$cmd" = down ]; then
  # One up/down at a time (fd 7; the node's processes are started with it closed).
  exec 7>"$local_dir/lock"
  flock 7
fi
case $cmd in
check) host_check ;;
*) "cmd_$cmd" ;;
esac
