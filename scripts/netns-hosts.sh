#!/usr/bin/env bash
# Simulates a few machines on one private network, for integration tests and for humans: each "host" is a
# network namespace PREFIX-I with its own address and its own loopback, all joined by one Linux bridge in
# the root namespace, and each gets /etc/netns/PREFIX-I/hosts so that the stable names of a Kubernetes
# StatefulSet (chat-0.chat-peers, chat-0, ...) resolve. `ip netns exec` bind-mounts that file over
# /etc/hosts for the command it runs, which is how the names reach the replicas.
#
# Usage (as root):
#   netns-hosts.sh up PREFIX COUNT [SUBNET]   create hosts PREFIX-0 .. PREFIX-(COUNT-1); prints one line per
#                                             host: "NAMESPACE ADDRESS DNS-NAME"
#   netns-hosts.sh down PREFIX                remove everything of PREFIX (never fails if already gone)
#   netns-hosts.sh exec PREFIX I [--] CMD...  run CMD inside host I (the same pid: ip execs CMD)
#   netns-hosts.sh address PREFIX I           print host I's IPv4 address
#   netns-hosts.sh partition PREFIX I         cut host I off the bridge
#   netns-hosts.sh heal PREFIX I              reconnect host I, returning once it forwards again
#
# PREFIX is 1-10 characters of [a-z0-9] starting with a letter, so that every interface name fits the
# kernel's 15 characters and PREFIX-0 never matches another prefix's names. SUBNET is A.B.C.0/24; without
# it the script picks 10.213.X.0/24 with X from a hash of PREFIX, skipping subnets already routed here.
# The bridge gets .254 so that the root namespace (the test process) can reach every host; host I gets
# .(I+1). Traffic never leaves: the hosts have no default route and nothing is NATed, so the only
# addresses they can reach are each other and the bridge.
#
# The names default to chat-I.chat-peers; NETNS_HOSTS_NAME and NETNS_HOSTS_DOMAIN change "chat" and
# "chat-peers".
set -euo pipefail

readonly ETC_NETNS=/etc/netns
readonly LOCK_FILE=/run/netns-hosts.lock
readonly WAIT_ATTEMPTS=100 # times 0.05 s: how long `up` and `heal` wait for links to forward
readonly HOST_NAME=${NETNS_HOSTS_NAME:-chat}
readonly HOST_DOMAIN=${NETNS_HOSTS_DOMAIN:-chat-peers}

usage() {
  sed -n '/^# Usage/,/^#   netns-hosts.sh heal/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

fail() {
  echo "netns-hosts: $*" >&2
  exit 1
}

check_prefix() {
  [[ ${1-} =~ ^[a-z][a-z0-9]{0,9}$ ]] || fail "PREFIX must be 1-10 characters of [a-z0-9] starting with a letter, got '${1-}'"
}

check_index() {
  [[ ${1-} =~ ^[0-9]+$ ]] || fail "host index must be a number, got '${1-}'"
  [[ -e /run/netns/$2-$1 ]] || fail "no host $2-$1 (run: $0 up $2 COUNT)"
}

bridge_name() { echo "$1-br"; }
veth_name() { echo "$1-v$2"; }

# Serializes `up` and `down` across processes, so that two parallel runs never pick the same free subnet.
take_lock() {
  exec 9>"$LOCK_FILE"
  flock 9
}

# True when the root namespace already routes anything inside or around SUBNET (other than the default
# route); reusing such a subnet would shadow or be shadowed by that route.
subnet_in_use() {
  local subnet=$1 routes
  routes=$(ip -4 route show root "$subnet"; ip -4 route show match "$subnet" | grep -v '^default' || true)
  [[ -n $routes ]]
}

# The hash-derived subnet of PREFIX, or the next free one after it.
pick_subnet() {
  local prefix=$1 hash third attempt
  hash=$(printf '%s' "$prefix" | cksum | cut -d' ' -f1)
  for ((attempt = 0; attempt < 250; attempt += 1)); do
    third=$(((hash + attempt) % 250 + 1))
    if ! subnet_in_use "10.213.$third.0/24"; then
      echo "10.213.$third"
      return
    fi
  done
  fail "no free subnet in 10.213.1-250.0/24"
}

# When br_netfilter is active, bridged IPv4 frames traverse iptables' FORWARD chain, and a DROP policy
# there (Docker sets one) would silently cut the hosts off each other. We accept our own bridge's traffic
# instead of turning the sysctl off, because the sysctl is global to the root namespace and other bridges
# (Docker's) rely on it. Without an iptables binary no legacy rule set can exist, so there is nothing to do.
allow_bridge_forwarding() {
  local bridge=$1
  [[ $(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0) == 1 ]] || return 0
  command -v iptables >/dev/null || return 0
  # A failure here is only a warning: without a usable iptables there is usually no rule set to get past.
  iptables -w -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT ||
    echo "netns-hosts: warning: could not add an iptables ACCEPT rule for $bridge; bridged traffic may be dropped" >&2
}

forget_bridge_forwarding() {
  local bridge=$1 attempt
  command -v iptables >/dev/null || return 0
  # Bounded: one rule per `up`, and `up` always runs `down` first, so there is at most one; the bound only
  # guards against rules someone else added by hand.
  for ((attempt = 0; attempt < 10; attempt += 1)); do
    iptables -w -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null || break
  done
}

# Waits until a bridge port forwards and the namespace side sees carrier; a freshly raised veth takes a
# moment (link watch, bridge port state), and callers want a network that works when we return.
wait_forwarding() {
  local prefix=$1 index=$2 veth attempt state carrier
  veth=$(veth_name "$prefix" "$index")
  for ((attempt = 0; attempt < WAIT_ATTEMPTS; attempt += 1)); do
    state=$(cat "/sys/class/net/$veth/brport/state" 2>/dev/null || echo none)
    carrier=$(ip netns exec "$prefix-$index" cat /sys/class/net/eth0/carrier 2>/dev/null || echo 0)
    # Bridge port state 3 is BR_STATE_FORWARDING.
    if [[ $state == 3 && $carrier == 1 ]]; then return 0; fi
    sleep 0.05
  done
  fail "$veth did not start forwarding (port state $state, carrier $carrier)"
}

namespaces_of() {
  ip netns list | awk '{print $1}' | grep -E "^$1-[0-9]+\$" || true
}

cmd_down() {
  local prefix=$1 namespace link pids directory
  for namespace in $(namespaces_of "$prefix"); do
    # A replica left running would keep the namespace (and its veth) alive after `ip netns del`, and it can
    # no longer reach anyone anyway.
    pids=$(ip netns pids "$namespace" 2>/dev/null || true)
    if [[ -n $pids ]]; then kill -KILL $pids 2>/dev/null || true; fi
    ip netns del "$namespace" 2>/dev/null || true
  done
  # Deleting the root-side end deletes the pair, even while the namespace side is still held by a process.
  for link in /sys/class/net/"$prefix"-v*; do
    link=${link##*/}
    if [[ $link =~ ^$prefix-v[0-9]+$ ]]; then ip link del "$link" 2>/dev/null || true; fi
  done
  forget_bridge_forwarding "$(bridge_name "$prefix")"
  ip link del "$(bridge_name "$prefix")" 2>/dev/null || true
  for directory in "$ETC_NETNS"/"$prefix"-*; do
    if [[ ${directory##*/} =~ ^$prefix-[0-9]+$ ]]; then rm -rf -- "$directory"; fi
  done
}

write_hosts_file() {
  local file=$1 network=$2 count=$3 index
  {
    echo "# Written by netns-hosts.sh; ip netns exec mounts it over /etc/hosts."
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    for ((index = 0; index < count; index += 1)); do
      echo "$network.$((index + 1)) $HOST_NAME-$index.$HOST_DOMAIN $HOST_NAME-$index"
    done
  } >"$file"
}

cmd_up() {
  local prefix=$1 count=$2 subnet=${3-} network bridge index namespace veth
  [[ $count =~ ^[0-9]+$ ]] && ((count >= 1 && count <= 253)) || fail "COUNT must be 1-253, got '$count'"
  cmd_down "$prefix"
  if [[ -n $subnet ]]; then
    [[ $subnet =~ ^([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})\.0/24$ ]] || fail "SUBNET must look like 10.213.7.0/24, got '$subnet'"
    network=${BASH_REMATCH[1]}
    ! subnet_in_use "$subnet" || fail "$subnet is already routed on this machine"
  else
    network=$(pick_subnet "$prefix")
  fi
  bridge=$(bridge_name "$prefix")
  # On failure part-way, leave nothing half-built behind. (PREFIX was checked to be [a-z0-9], so quoting it
  # into the trap is safe.)
  trap "cmd_down '$prefix'" EXIT
  # Spanning tree is off, so that a port forwards as soon as its link is up.
  ip link add "$bridge" type bridge stp_state 0
  ip addr add "$network.254/24" dev "$bridge"
  ip link set "$bridge" up
  allow_bridge_forwarding "$bridge"
  for ((index = 0; index < count; index += 1)); do
    namespace=$prefix-$index
    veth=$(veth_name "$prefix" "$index")
    ip netns add "$namespace"
    # The namespace end is created directly inside the namespace as eth0, so no temporary name can clash.
    ip link add "$veth" type veth peer name eth0 netns "$namespace"
    ip link set "$veth" master "$bridge"
    ip link set "$veth" up
    ip -n "$namespace" link set lo up
    ip -n "$namespace" addr add "$network.$((index + 1))/24" dev eth0
    ip -n "$namespace" link set eth0 up
    mkdir -p "$ETC_NETNS/$namespace"
    write_hosts_file "$ETC_NETNS/$namespace/hosts" "$network" "$count"
    # No nameserver: names resolve from the hosts file only, and a lookup of anything else fails at once
    # instead of waiting for a DNS server the namespace cannot reach.
    echo "options timeout:1 attempts:1" >"$ETC_NETNS/$namespace/resolv.conf"
  done
  for ((index = 0; index < count; index += 1)); do
    wait_forwarding "$prefix" "$index"
  done
  trap - EXIT
  for ((index = 0; index < count; index += 1)); do
    echo "$prefix-$index $network.$((index + 1)) $HOST_NAME-$index.$HOST_DOMAIN"
  done
}

cmd_address() {
  local prefix=$1 index=$2 address
  address=$(ip -n "$prefix-$index" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
  [[ -n $address ]] || fail "$prefix-$index has no IPv4 address"
  echo "$address"
}

main() {
  local command=${1-}
  [[ -n $command ]] || usage
  shift
  case $command in
    up)
      [[ $# -ge 2 && $# -le 3 ]] || usage
      check_prefix "$1"
      take_lock
      cmd_up "$@"
      ;;
    down)
      [[ $# -eq 1 ]] || usage
      check_prefix "$1"
      take_lock
      cmd_down "$1"
      ;;
    exec)
      [[ $# -ge 3 ]] || usage
      check_prefix "$1"
      check_index "$2" "$1"
      local namespace=$1-$2
      shift 2
      if [[ ${1-} == -- ]]; then shift; fi
      [[ $# -ge 1 ]] || usage
      exec ip netns exec "$namespace" "$@"
      ;;
    address)
      [[ $# -eq 2 ]] || usage
      check_prefix "$1"
      check_index "$2" "$1"
      cmd_address "$1" "$2"
      ;;
    partition)
      [[ $# -eq 2 ]] || usage
      check_prefix "$1"
      check_index "$2" "$1"
      ip link set "$(veth_name "$1" "$2")" down
      ;;
    heal)
      [[ $# -eq 2 ]] || usage
      check_prefix "$1"
      check_index "$2" "$1"
      ip link set "$(veth_name "$1" "$2")" up
      wait_forwarding "$1" "$2"
      ;;
    *) usage ;;
  esac
}

main "$@"
