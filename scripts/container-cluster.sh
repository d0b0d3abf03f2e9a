#!/usr/bin/env bash
# A replichat cluster in podman containers, laid out like the Kubernetes StatefulSet: three replicas from
# the image with the DNS names chat-N.chat-peers.default.svc.cluster.local on one podman network, an etcd
# as the configuration store, and a CLI container from the same image (like the chart's chat-cli pod).
# test/container.test.ts drives it; by hand:
#
#   scripts/container-cluster.sh up            # base image, image, certificates, network, containers
#   scripts/container-cluster.sh cli status    # replichat status, run in the CLI container
#   scripts/container-cluster.sh cli chat      # interactive chat (needs a terminal)
#   scripts/container-cluster.sh logs 1        # replica 1's log
#   scripts/container-cluster.sh start 1       # starts a stopped replica 1 again
#   scripts/container-cluster.sh down          # removes the containers, network and state directory
#
# Environment: CLUSTER_PREFIX (default replichat-dev) names the containers (PREFIX-chat-N, PREFIX-etcd,
# PREFIX-cli) and the network (PREFIX-net), so that clusters never collide; STATE_DIR (default
# /var/tmp/PREFIX) holds certificates and data directories; IMAGE (default localhost/replichat:dev) is
# built from the work tree at `up` (podman reuses unchanged layers); REPLICAS (default 3).
# podman runs with runc (crun fails on some cgroup layouts). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${CLUSTER_PREFIX:-replichat-dev}
state=${STATE_DIR:-/var/tmp/$prefix}
image=${IMAGE:-localhost/replichat:dev}
replicas=${REPLICAS:-3}
base_image=${REPLICHAT_BASE_IMAGE:-localhost/replichat-base:bookworm-node20}
build_base_image=${REPLICHAT_BUILD_BASE_IMAGE:-localhost/replichat-build-base:bookworm-node20}
network=$prefix-net
domain=chat-peers.default.svc.cluster.local
label=replichat.container-cluster=$prefix
# The image's user (Dockerfile): files the containers read or write belong to it.
image_user=10001:10001
podman_=(podman --runtime runc)

peer_template="chat-{ordinal}.$domain:50052"
client_addresses() {
  local list="" ordinal
  for ((ordinal = 0; ordinal < replicas; ordinal++)); do list+="${list:+,}chat-$ordinal.$domain:50051"; done
  printf '%s' "$list"
}

build_image() {
  bash scripts/build-base-image.sh
  local secret=()
  # Behind a TLS-inspecting proxy npm needs the system's CA bundle, which then includes the proxy's CA;
  # it is a build secret, so it never enters a layer of the image.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then secret=(--secret id=npm-ca,src=/etc/ssl/certs/ca-certificates.crt); fi
  "${podman_[@]}" build --jobs 2 --layers "${secret[@]}" \
    --build-arg BASE_IMAGE="$base_image" --build-arg BUILD_BASE_IMAGE="$build_base_image" -t "$image" .
}

make_certificates() {
  local names=() ordinal
  for ((ordinal = 0; ordinal < replicas; ordinal++)); do names+=("chat-$ordinal.$domain"); done
  rm -rf "$state/certs" && mkdir -p "$state/certs"
  REPLICAS=$replicas PEER_DOMAIN=$domain bash scripts/make-dev-certs.sh "$state/certs" "${names[@]}" >/dev/null
  # What each container mounts: a replica its client certificate and its own peer certificate only (as a
  # pod gets its own secret), the CLI only the client CA.
  for ((ordinal = 0; ordinal < replicas; ordinal++)); do
    local dir=$state/tls/replica-$ordinal
    mkdir -p "$dir"
    cp "$state/certs/server.pem" "$dir/server.pem" && cp "$state/certs/server-key.pem" "$dir/server-key.pem"
    cp "$state/certs/peer-ca.pem" "$dir/peer-ca.pem"
    cp "$state/certs/peer-$ordinal.pem" "$dir/peer.pem" && cp "$state/certs/peer-$ordinal-key.pem" "$dir/peer-key.pem"
  done
  mkdir -p "$state/tls/cli" && cp "$state/certs/ca.pem" "$state/tls/cli/ca.pem"
  chown -R "$image_user" "$state/tls"
}

start_replica() { # ordinal
  local ordinal=$1
  mkdir -p "$state/data-$ordinal" && chown "$image_user" "$state/data-$ordinal"
  # As in the chart: a read-only root file system, no capabilities, the data directory a volume.
  "${podman_[@]}" run -d --name "$prefix-chat-$ordinal" --label "$label" --hostname "chat-$ordinal" \
    --network "$network" --network-alias "chat-$ordinal.$domain" --network-alias "chat-$ordinal.chat-peers" \
    --read-only --cap-drop ALL --security-opt no-new-privileges --stop-timeout 30 \
    -v "$state/data-$ordinal:/var/lib/replichat" -v "$state/tls/replica-$ordinal:/etc/replichat/tls:ro" \
    "$image" server \
    --peer-template "$peer_template" --replicas "$replicas" \
    --tls-cert /etc/replichat/tls/server.pem --tls-key /etc/replichat/tls/server-key.pem \
    --peer-ca /etc/replichat/tls/peer-ca.pem --peer-cert /etc/replichat/tls/peer.pem --peer-key /etc/replichat/tls/peer-key.pem \
    --configuration-store etcd --etcd-endpoints http://etcd:2379 >/dev/null
}

# The CLI container finds the replicas by their names through its hosts file, which this rewrites with their
# current addresses; the replicas find each other through aardvark-dns. Right after a container was killed,
# lookups through aardvark-dns 1.4.0 sometimes went unanswered for 15-40 s (NOTEBOOK.md §15), and a CLI
# started then, with no address yet, could not reach even the live replicas. (A pod uses the cluster's DNS,
# which was not tested here.) The file is podman's own for the container, bind-mounted into it, so it is
# rewritten in place.
refresh_cli_hosts() {
  local hosts_file ordinal address kept
  hosts_file=$("${podman_[@]}" inspect --format '{{.HostsPath}}' "$prefix-cli")
  kept=$(grep -v ' # replichat-replica$' "$hosts_file" || true)
  {
    printf '%s\n' "$kept"
    for ((ordinal = 0; ordinal < replicas; ordinal++)); do
      address=$("${podman_[@]}" inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$prefix-chat-$ordinal")
      if [ -n "$address" ]; then
        printf '%s chat-%s.%s chat-%s.chat-peers # replichat-replica\n' "$address" "$ordinal" "$domain" "$ordinal"
      fi
    done
  } >"$hosts_file.new"
  cat "$hosts_file.new" >"$hosts_file"
  rm -f "$hosts_file.new"
}

# Starts a stopped replica again (as the kubelet restarts a pod's container) and tells the CLI its address.
start_again() { # ordinal
  "${podman_[@]}" start "$prefix-chat-${1:?usage: container-cluster.sh start ORDINAL}" >/dev/null
  refresh_cli_hosts
}

up() {
  build_image
  down_containers
  mkdir -p "$state"
  make_certificates
  "${podman_[@]}" network create --label "$label" "$network" >/dev/null
  # etcd from Debian's etcd-server, the host's binary in a container of the base image (it needs only libc).
  "${podman_[@]}" run -d --name "$prefix-etcd" --label "$label" --hostname etcd --network "$network" --network-alias etcd \
    --read-only -v /usr/bin/etcd:/usr/local/bin/etcd:ro "$base_image" \
    etcd --name etcd --data-dir /tmp/etcd --listen-client-urls http://0.0.0.0:2379 \
    --advertise-client-urls http://etcd:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster etcd=http://127.0.0.1:2380 >/dev/null
  local ordinal
  for ((ordinal = 0; ordinal < replicas; ordinal++)); do start_replica "$ordinal"; done
  # The CLI container idles; commands run in it with `podman exec`, as `kubectl exec chat-cli -- replichat`.
  "${podman_[@]}" run -d --name "$prefix-cli" --label "$label" --hostname chat-cli --network "$network" \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    -e REPLICHAT_SERVERS="$(client_addresses)" -e REPLICHAT_CA_CERT=/etc/replichat/ca/ca.pem \
    -e REPLICHAT_SESSION_FILE=/tmp/session.json \
    -v "$state/tls/cli:/etc/replichat/ca:ro" \
    --entrypoint '["/usr/bin/tini", "--", "sleep", "infinity"]' "$image" >/dev/null
  refresh_cli_hosts
  # `status` exits 0 once a leader answers with every member in sync (3 degraded, 4 no leader).
  local deadline=$((SECONDS + 120))
  until podman exec "$prefix-cli" replichat status >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      podman exec "$prefix-cli" replichat status >&2 || true
      echo "up: the cluster is not healthy after 120 s" >&2
      exit 1
    fi
    sleep 1
  done
  echo "up: replicas $prefix-chat-0..$((replicas - 1)), $prefix-etcd, $prefix-cli on network $network (state in $state)"
}

down_containers() {
  local ids
  ids=$(podman ps -aq --filter "label=$label")
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086 # one id per word
    podman rm -f -t 0 $ids >/dev/null
  fi
  if podman network exists "$network"; then podman network rm -f "$network" >/dev/null; fi
}

command=${1:-}
shift || true
case $command in
  up) up ;;
  image) build_image ;;
  down) down_containers && rm -rf "$state" ;;
  cli)
    terminal=()
    if [ -t 0 ] && [ -t 1 ]; then terminal=(-t); fi
    exec podman exec -i "${terminal[@]}" "$prefix-cli" replichat "$@"
    ;;
  logs) exec podman logs "$prefix-chat-${1:?usage: container-cluster.sh logs ORDINAL}" ;;
  start) start_again "$@" ;;
  *)
    echo "usage: container-cluster.sh up | image | cli ARGS... | logs ORDINAL | start ORDINAL | down" >&2
    exit 2
    ;;
esac
