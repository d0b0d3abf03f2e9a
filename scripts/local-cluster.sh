#!/usr/bin/env bash
# A local cluster on loopback, with TLS from a throwaway CA (scripts/make-dev-certs.sh).
#   npm run cluster:local                     # start every replica; Ctrl-C stops them all
#   bash scripts/local-cluster.sh restart 1   # from another terminal: stop replica 1 and start it again
#   bash scripts/local-cluster.sh stop 1      # stop one replica (SIGTERM); `stop` alone stops them all (and etcd)
#   bash scripts/local-cluster.sh start 1     # start one stopped replica, in the background
#   REPLICAS=5 npm run cluster:local          # another size
#   REPLICHAT_ADMIN_TOKEN=... npm run cluster:local   # enables `replichat member remove` and `backup`
# Client ports 50051, 50061, 50071 …; peer ports 50052, 50062 …; metrics 9101, 9102 … (BASE_PORT and
# METRICS_BASE_PORT move them). Data, logs (appended, never truncated) and pid files in .local-cluster/
# (CLUSTER_DIR). A replica whose data directory is in use by a running process is never started twice:
# each replica holds a lock (flock on replica-N.lock) for as long as it runs, even if this script dies.
# The configuration store is a local etcd (Debian's etcd-server) on 127.0.0.1:BASE_PORT-2, started with the
# cluster and kept in $root/etcd, unless REPLICHAT_ETCD_ENDPOINTS names another one. Every REPLICHAT_*
# variable of the environment reaches the servers (each server flag has such a twin).
set -euo pipefail
cd "$(dirname "$0")/.."
replicas=${REPLICAS:-3}
root=${CLUSTER_DIR:-.local-cluster}
base_port=${BASE_PORT:-50051}
metrics_base_port=${METRICS_BASE_PORT:-9101}
mkdir -p "$root"
# Certificates for the client port and, per replica, for the peer port. Made once: a new client CA would
# lock out every client that has the old one. A peer certificate that is missing (REPLICAS grew) is issued
# from the cluster CA that is already there.
if [ ! -f "$root/certs/ca.pem" ]; then
  REPLICAS=$replicas bash scripts/make-dev-certs.sh "$root/certs" >/dev/null
elif [ -f "$root/certs/peer-ca.pem" ]; then
  for ((i = 0; i < replicas; i++)); do
    [ -f "$root/certs/peer-$i.pem" ] || bash scripts/make-dev-certs.sh peer "$root/certs" "$i" >/dev/null
  done
fi

peers=""
servers=""
for ((i = 0; i < replicas; i++)); do
  peers+="${peers:+,}$i=127.0.0.1:$((base_port + 1 + 10 * i))"
  servers+="${servers:+,}127.0.0.1:$((base_port + 10 * i))"
done

etcd_port=$((base_port - 2))
if [ -z "${REPLICHAT_ETCD_ENDPOINTS:-}" ]; then
  own_etcd=1
  export REPLICHAT_ETCD_ENDPOINTS=http://127.0.0.1:$etcd_port
else
  own_etcd=0
fi

# The local etcd, started once in the background; later starts find it running.
start_etcd() {
  [ "$own_etcd" = 1 ] || return 0
  local pid_file="$root/etcd.pid"
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then return 0; fi
  (
    exec 9>"$root/etcd.lock"
    flock -n 9 || { echo "etcd: $root/etcd is in use" >&2; exit 75; }
    exec etcd --name local-cluster --data-dir "$root/etcd" \
      --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
      --initial-cluster "local-cluster=http://127.0.0.1:$((etcd_port + 1))"
  ) >>"$root/etcd.log" 2>&1 </dev/null &
  echo $! >"$pid_file"
  for _ in $(seq 100); do
    etcdctl --endpoints "$REPLICHAT_ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && { echo "etcd started (log $root/etcd.log)"; return 0; }
    sleep 0.1
  done
  echo "local-cluster.sh: etcd did not start; see $root/etcd.log" >&2
  return 1
}

stop_etcd() {
  [ "$own_etcd" = 1 ] && [ -f "$root/etcd.pid" ] || return 0
  local pid
  pid=$(cat "$root/etcd.pid")
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$root/etcd.pid"
  echo "etcd stopped"
}

usage() {
  echo "usage: local-cluster.sh [start [ORDINAL] | stop [ORDINAL] | restart ORDINAL]" >&2
  exit 2
}

check_ordinal() {
  [[ $1 =~ ^[0-9]+$ ]] && (($1 < replicas)) || { echo "local-cluster.sh: no replica $1 (REPLICAS=$replicas)" >&2; exit 2; }
}

# The pid of replica $1 if it runs, else nothing.
running_pid() {
  local pid_file="$root/replica-$1.pid" pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--data-dir $root/replica-$1 "; then
    echo "$pid"
  fi
}

# Starts replica $1 in the background, refusing if its data directory is in use.
start_replica() {
  local i=$1 lock="$root/replica-$1.lock" pid
  pid=$(running_pid "$i")
  if [ -n "$pid" ] || ! flock -n "$lock" true; then
    echo "local-cluster.sh: replica $i is already running${pid:+ (pid $pid)} on $root/replica-$i;" \
      "\`bash scripts/local-cluster.sh restart $i\` restarts it" >&2
    return 1
  fi
  local peer_tls=()
  if [ -f "$root/certs/peer-ca.pem" ]; then
    peer_tls=(--peer-ca "$root/certs/peer-ca.pem" --peer-cert "$root/certs/peer-$i.pem" --peer-key "$root/certs/peer-$i-key.pem")
  fi
  # The subshell takes the lock on descriptor 9 and then becomes the server, which inherits the
  # descriptor: the lock lives exactly as long as the server process, however it ends.
  (
    exec 9>"$lock"
    flock -n 9 || { echo "replica $i: the data directory is in use" >&2; exit 75; }
    exec node dist/cli/main.js server \
      --ordinal "$i" --peers "$peers" \
      --data-dir "$root/replica-$i" \
      --listen "127.0.0.1:$((base_port + 10 * i))" \
      --peer-listen "127.0.0.1:$((base_port + 1 + 10 * i))" \
      --metrics-listen "127.0.0.1:$((metrics_base_port + i))" \
      --tls-cert "$root/certs/server.pem" --tls-key "$root/certs/server-key.pem" \
      "${peer_tls[@]}"
  ) >>"$root/replica-$i.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$root/replica-$i.pid"
  # Serving means its ports are open (its /healthz answers), not that it knows a leader: `status` says that.
  local healthz="http://127.0.0.1:$((metrics_base_port + i))/healthz"
  for _ in $(seq 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "local-cluster.sh: replica $i exited at start; the end of $root/replica-$i.log:" >&2
      tail -5 "$root/replica-$i.log" >&2
      return 1
    fi
    if node -e "fetch('$healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))" 2>/dev/null; then
      echo "replica $i started (pid $pid, log $root/replica-$i.log)"
      return 0
    fi
    sleep 0.2
  done
  echo "local-cluster.sh: replica $i does not answer on $healthz after 30 s; see $root/replica-$i.log" >&2
  return 1
}

# Stops replica $1 with SIGTERM and waits until it has exited.
stop_replica() {
  local pid
  pid=$(running_pid "$1")
  if [ -z "$pid" ]; then
    echo "replica $1 is not running"
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$root/replica-$1.pid"
  echo "replica $1 stopped"
}

command=${1:-start}
case $command in
  start)
    start_etcd
    if [ $# -ge 2 ]; then
      check_ordinal "$2"
      start_replica "$2"
      exit
    fi
    started=()
    for ((i = 0; i < replicas; i++)); do
      if ! start_replica "$i"; then
        for j in "${started[@]}"; do stop_replica "$j"; done
        exit 1
      fi
      started+=("$i")
    done
    trap 'trap - INT TERM; echo; for ((i = 0; i < replicas; i++)); do stop_replica "$i"; done; stop_etcd; exit 0' INT TERM
    cat <<TEXT
replichat: $replicas replicas running (logs in $root/replica-N.log). In another terminal:
  export REPLICHAT_SERVERS=$servers REPLICHAT_CA_CERT=$(realpath "$root/certs/ca.pem")
  node dist/cli/main.js status
  node dist/cli/main.js chat
  bash scripts/local-cluster.sh restart 1     # restart one replica
Press Ctrl-C to stop the cluster.
TEXT
    # Replicas restarted from another terminal are not children of this shell, so wait by polling, until
    # every replica is gone (stopped from another terminal, or crashed).
    while true; do
      sleep 1
      alive=0
      for ((i = 0; i < replicas; i++)); do [ -n "$(running_pid "$i")" ] && alive=1; done
      if [ "$alive" = 0 ]; then
        echo "every replica has stopped"
        stop_etcd
        exit 0
      fi
    done
    ;;
  stop)
    if [ $# -ge 2 ]; then
      check_ordinal "$2"
      stop_replica "$2"
    else
      for ((i = 0; i < replicas; i++)); do stop_replica "$i"; done
      stop_etcd
    fi
    ;;
  restart)
    [ $# -ge 2 ] || usage
    check_ordinal "$2"
    start_etcd
    stop_replica "$2"
    start_replica "$2"
    ;;
  *) usage ;;
esac
