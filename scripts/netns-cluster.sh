#!/usr/bin/env bash
# Starts a 3-replica cluster on three network namespaces ("three machines", each with its own address and
# the DNS names chat-N.chat-peers), as root, and tears everything down on Ctrl-C:
#   sudo bash scripts/netns-cluster.sh            # after npm run build
#   REPLICAS=5 sudo bash scripts/netns-cluster.sh
# Replicas find each other by name (chat-N.chat-peers:50052), exactly as StatefulSet pods do; clients in
# the root namespace reach them at the printed addresses (port 50051, TLS from a throwaway CA).
# The configuration store is one etcd (Debian's etcd-server) in the root namespace, listening only on the
# bridge's address of these hosts (the subnet's .254), which every namespace reaches; its data is in
# $CLUSTER_DIR/etcd and stays across runs, like the replicas' data.
set -euo pipefail
cd "$(dirname "$0")/.."
replicas=${REPLICAS:-3}
prefix=${NETNS_PREFIX:-rcdemo}
root=${CLUSTER_DIR:-.netns-cluster}
mkdir -p "$root"

bash scripts/netns-hosts.sh up "$prefix" "$replicas" >/dev/null
addresses=()
names=()
for ((i = 0; i < replicas; i++)); do
  addresses+=("$(bash scripts/netns-hosts.sh address "$prefix" "$i")")
  names+=("chat-$i.chat-peers")
done
# netns-hosts.sh gives the bridge .254 of the hosts' /24.
bridge=${addresses[0]%.*}.254
etcd_endpoint=http://$bridge:2379
# The client port's certificate, and the cluster CA with a peer certificate per replica naming
# chat-N.chat-peers (the peer port is always mutual TLS).
[ -f "$root/certs/peer-$((replicas - 1)).pem" ] ||
  REPLICAS=$replicas bash scripts/make-dev-certs.sh "$root/certs" "${names[@]}" "${addresses[@]}" >/dev/null

peers=""
servers=""
for ((i = 0; i < replicas; i++)); do
  peers+="${peers:+,}$i=chat-$i.chat-peers:50052"
  servers+="${servers:+,}${addresses[$i]}:50051"
done

pids=()
etcd \
  --name "$prefix" --data-dir "$root/etcd" \
  --listen-client-urls "$etcd_endpoint" --advertise-client-urls "$etcd_endpoint" \
  --listen-peer-urls "http://$bridge:2380" --initial-advertise-peer-urls "http://$bridge:2380" \
  --initial-cluster "$prefix=http://$bridge:2380" --initial-cluster-state new \
  --logger zap --log-level warn >"$root/etcd.log" 2>&1 &
pids+=($!)
stop() {
  trap - EXIT
  echo "stopping the cluster and removing the namespaces"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  bash scripts/netns-hosts.sh down "$prefix"
}
trap stop EXIT
for ((attempt = 0; attempt < 200; attempt++)); do
  ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoint" --command-timeout 1s endpoint health >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "etcd did not start; see $root/etcd.log" >&2; exit 1; }
  sleep 0.1
done

for ((i = 0; i < replicas; i++)); do
  bash scripts/netns-hosts.sh exec "$prefix" "$i" -- node dist/cli/main.js server \
    --ordinal "$i" --peers "$peers" --data-dir "$root/replica-$i" \
    --listen 0.0.0.0:50051 --peer-listen 0.0.0.0:50052 --metrics-listen 0.0.0.0:9100 \
    --advertise-address "${addresses[$i]}:50051" \
    --configuration-store etcd --etcd-endpoints "$etcd_endpoint" \
    --tls-cert "$root/certs/server.pem" --tls-key "$root/certs/server-key.pem" \
    --peer-ca "$root/certs/peer-ca.pem" --peer-cert "$root/certs/peer-$i.pem" --peer-key "$root/certs/peer-$i-key.pem" \
    >"$root/replica-$i.log" 2>&1 &
  pids+=($!)
done

cat <<TEXT
replichat: $replicas replicas on network namespaces $prefix-0 .. $prefix-$((replicas - 1)) (logs in $root/).
  export REPLICHAT_SERVERS=$servers REPLICHAT_CA_CERT=$(realpath "$root/certs/ca.pem")
  node dist/cli/main.js status
Metrics: http://${addresses[0]}:9100/metrics (and the other addresses). Configuration store: etcd at
$etcd_endpoint (ETCDCTL_API=3 etcdctl --endpoints $etcd_endpoint get --prefix /replichat/). Ctrl-C stops everything.
TEXT
wait
