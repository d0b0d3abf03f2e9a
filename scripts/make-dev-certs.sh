#!/usr/bin/env bash
# Makes a throwaway certificate authority and one server certificate signed by it, for local clusters and
# tests: `scripts/make-dev-certs.sh DIR [extra DNS names or IPs...]`. Writes DIR/ca.pem, DIR/ca-key.pem,
# DIR/server.pem and DIR/server-key.pem. Never use these in production: the CA key sits beside them.
set -euo pipefail
out=${1:?usage: make-dev-certs.sh DIR [names...]}
shift
mkdir -p "$out"
names=(localhost "$@")
san="IP:127.0.0.1,IP:::1"
for name in "${names[@]}"; do
  if [[ $name =~ ^[0-9.]+$ ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=replichat throwaway CA" -keyout "$out/ca-key.pem" -out "$out/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=replichat" -keyout "$out/server-key.pem" -out "$out/server.csr" 2>/dev/null
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -CAcreateserial -days 30 \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") -out "$out/server.pem" 2>/dev/null
rm -f "$out/server.csr" "$out/ca.srl"
chmod 600 "$out"/*-key.pem
echo "wrote $out/ca.pem and $out/server.pem (names: ${names[*]}, 127.0.0.1, ::1)"
