#!/usr/bin/env bash
# Starts a local 3-replica cluster on loopback, with TLS from a throwaway CA, and stops it on Ctrl-C.
#   npm run cluster:local            # data and logs in .local-cluster/
#   REPLICAS=5 npm run cluster:local # another size
#   REPLICHAT_ADMIN_TOKEN=... npm run cluster:local   # enables `replichat member remove`
# Client ports 50051, 50061, 50071 …; peer ports 50052, 50062 …; metrics 9101, 9102 ….
set -euo pipefail
cd "$(dirname "$0")/.."
replicas=${REPLICAS:-3}
root=${CLUSTER_DIR:-.local-cluster}
mkdir -p "$root"
[ -f "$root/certs/ca.pem" ] || bash scripts/make-dev-certs.sh "$root/certs" >/dev/null

peers=""
servers=""
for ((i = 0; i < replicas; i++)); do
  peers+="${peers:+,}$i=127.0.0.1:$((50052 + 10 * i))"
  servers+="${servers:+,}127.0.0.1:$((50051 + 10 * i))"
done

pids=()
stop() {
  trap - EXIT
  echo "stopping the cluster"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT

for ((i = 0; i < replicas; i++)); do
  node dist/cli/main.js server \
    --ordinal "$i" --peers "$peers" \
    --data-dir "$root/replica-$i" \
    --listen "127.0.0.1:$((50051 + 10 * i))" \
    --peer-listen "127.0.0.1:$((50052 + 10 * i))" \
    --metrics-listen "127.0.0.1:$((9101 + i))" \
    --tls-cert "$root/certs/server.pem" --tls-key "$root/certs/server-key.pem" \
    ${REPLICHAT_ADMIN_TOKEN:+--admin-token "$REPLICHAT_ADMIN_TOKEN"} \
    >"$root/replica-$i.log" 2>&1 &
  pids+=($!)
done

cat <<TEXT
replichat: $replicas replicas running (logs in $root/replica-N.log). In another terminal:
  export REPLICHAT_SERVERS=$servers REPLICHAT_CA_CERT=$(realpath "$root/certs/ca.pem")
  node dist/cli/main.js status
  node dist/cli/main.js chat
Press Ctrl-C to stop the cluster.
TEXT
wait
