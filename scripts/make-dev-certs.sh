#!/usr/bin/env bash
# Certificates for replichat's two ports.
#
#   scripts/make-dev-certs.sh DIR [names...]
#       A throwaway set for local clusters and tests. The client port: DIR/ca.pem, DIR/ca-key.pem and
#       DIR/server.pem, DIR/server-key.pem (names: localhost, 127.0.0.1, ::1 and the names given). The peer
#       port: a cluster CA DIR/peer-ca.pem, DIR/peer-ca-key.pem, and for each replica N from 0 to
#       REPLICAS-1 a peer certificate DIR/peer-N.pem, DIR/peer-N-key.pem.
#
#   scripts/make-dev-certs.sh peer DIR ORDINAL [names...]
#       One more peer certificate, for replica ORDINAL, from the cluster CA in DIR (made first if DIR has
#       none). This is the command for real machines: keep DIR (it holds the CA key) on the operator's
#       machine and copy only peer-ca.pem, peer-ORDINAL.pem and peer-ORDINAL-key.pem to the replica; give
#       as names the host names and addresses its peers dial.
#
# A peer certificate names its replica twice: the URI spiffe://replichat/<CLUSTER_NAME>/replica/<N>, which
# the peer port checks against every sender a message claims, and the DNS name chat-N.<PEER_DOMAIN> (plus
# chat-N, localhost, 127.0.0.1 and ::1), which the dialing side checks as the TLS host name. Peer
# certificates are for both ends of a connection (serverAuth and clientAuth).
#
# Environment: REPLICAS (default 3), CLUSTER_NAME (default replichat, as --cluster-name), PEER_DOMAIN
# (default chat-peers; for Kubernetes chat-peers.<namespace>.svc.cluster.local), DAYS (default 30).
# The client-port CA and the cluster CA are different keys: a client-port certificate is never a peer.
set -euo pipefail
replicas=${REPLICAS:-3}
cluster=${CLUSTER_NAME:-replichat}
domain=${PEER_DOMAIN:-chat-peers}
days=${DAYS:-30}

if [[ ! $cluster =~ ^[A-Za-z0-9_.-]{1,64}$ ]]; then
  echo "CLUSTER_NAME must be 1 to 64 letters, digits, _, . or -" >&2
  exit 2
fi

san_for() { # names... -> a subjectAltName list of DNS and IP entries
  local san="" name
  for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name =~ : ]]; then san+="${san:+,}IP:$name"; else san+="${san:+,}DNS:$name"; fi
  done
  printf '%s' "$san"
}

make_ca() { # dir file-prefix common-name
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
    -subj "/CN=$3" -keyout "$1/$2-key.pem" -out "$1/$2.pem" 2>/dev/null
  chmod 600 "$1/$2-key.pem"
}

issue() { # dir ca-prefix out-prefix common-name extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$4" -keyout "$1/$3-key.pem" -out "$1/$3.csr" 2>/dev/null
  openssl x509 -req -in "$1/$3.csr" -CA "$1/$2.pem" -CAkey "$1/$2-key.pem" -CAcreateserial -days "$days" \
    -extfile <(printf '%s\n' "$5") -out "$1/$3.pem" 2>/dev/null
  rm -f "$1/$3.csr" "$1/$2.srl"
  chmod 600 "$1/$3-key.pem"
}

issue_peer() { # dir ordinal names...
  local dir=$1 ordinal=$2
  shift 2
  if [[ ! $ordinal =~ ^[0-9]{1,4}$ ]]; then
    echo "ORDINAL must be a whole number, not $ordinal" >&2
    exit 2
  fi
  [ -f "$dir/peer-ca.pem" ] || make_ca "$dir" peer-ca "replichat cluster CA ($cluster)"
  local san
  san="URI:spiffe://replichat/$cluster/replica/$ordinal,$(san_for "chat-$ordinal.$domain" "chat-$ordinal" localhost 127.0.0.1 ::1 "$@")"
  issue "$dir" peer-ca "peer-$ordinal" "replica-$ordinal" \
    "$(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature' "$san")"
}

if [[ ${1:-} == peer ]]; then
  out=${2:?usage: make-dev-certs.sh peer DIR ORDINAL [names...]}
  ordinal=${3:?usage: make-dev-certs.sh peer DIR ORDINAL [names...]}
  shift 3
  mkdir -p "$out"
  issue_peer "$out" "$ordinal" "$@"
  echo "wrote $out/peer-$ordinal.pem for spiffe://replichat/$cluster/replica/$ordinal (copy it, its key and $out/peer-ca.pem to the replica)"
  exit 0
fi

out=${1:?usage: make-dev-certs.sh DIR [names...]  |  make-dev-certs.sh peer DIR ORDINAL [names...]}
shift
mkdir -p "$out"
names=(localhost "$@")
make_ca "$out" ca "replichat throwaway CA"
issue "$out" ca server replichat \
  "$(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth' "$(san_for "${names[@]}" 127.0.0.1 ::1)")"
rm -f "$out/peer-ca.pem" "$out/peer-ca-key.pem"
for ((ordinal = 0; ordinal < replicas; ordinal++)); do issue_peer "$out" "$ordinal" "$@"; done
echo "wrote $out/ca.pem and $out/server.pem (names: ${names[*]}, 127.0.0.1, ::1)," \
  "and peer certificates $out/peer-0.pem .. peer-$((replicas - 1)).pem for cluster $cluster"
