#!/usr/bin/env bash
# Sets up everything the build and the tests need on a fresh Debian machine with Node.js 20:
# the Debian packages the tests use (openssl makes throwaway certificates, iproute2 makes network
# namespaces for the multi-machine tests), then the npm packages exactly as package-lock.json pins them.
set -euo pipefail
cd "$(dirname "$0")/.."

needed=()
command -v openssl >/dev/null 2>&1 || needed+=(openssl)
command -v ip >/dev/null 2>&1 || needed+=(iproute2)
if [ ${#needed[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: please install these Debian packages first: ${needed[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}"
fi

# better-sqlite3 compiles from source here (about a minute).
npm ci --no-audit --no-fund
