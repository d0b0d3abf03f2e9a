#!/usr/bin/env bash
# Assembles, without any image registry, the two local base images the Dockerfile can be built from
# (`--build-arg BASE_IMAGE=... --build-arg BUILD_BASE_IMAGE=...`), stand-ins for the official
# node:20-bookworm-slim and node:20-bookworm:
#
#   localhost/replichat-base:bookworm-node20        Debian bookworm (debootstrap minbase) + tini + this
#                                                   machine's own Node 20 binary and the npm it ships
#   localhost/replichat-build-base:bookworm-node20  the same + python3, make, g++ and the Node headers,
#                                                   which better-sqlite3 needs to compile
#
# Debian comes from the mirror in this machine's apt sources (the one registry reachable here). Node is
# copied, not downloaded, so the image runs exactly the Node the tests run on the host.
# An image whose tag exists is kept (the cache between test runs); `--force` rebuilds both.
# Needs root, debootstrap and podman (scripts/install.sh installs them).
#
#   scripts/build-base-image.sh [--force]
#   REPLICHAT_BASE_IMAGE / REPLICHAT_BUILD_BASE_IMAGE override the tags.
set -euo pipefail

runtime_tag=${REPLICHAT_BASE_IMAGE:-localhost/replichat-base:bookworm-node20}
build_tag=${REPLICHAT_BUILD_BASE_IMAGE:-localhost/replichat-build-base:bookworm-node20}
force=false
if [ "${1:-}" = "--force" ]; then force=true; fi

have_image() { podman image exists "$1"; }
if ! $force && have_image "$runtime_tag" && have_image "$build_tag"; then
  echo "base images exist: $runtime_tag $build_tag (--force rebuilds them)"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "build-base-image.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap podman node; do
  command -v "$tool" >/dev/null || { echo "build-base-image.sh: $tool is missing (run scripts/install.sh)" >&2; exit 1; }
done

node_binary=$(readlink -f "$(command -v node)")
node_prefix=$(dirname "$(dirname "$node_binary")")
node_major=$("$node_binary" -p 'process.versions.node.split(".")[0]')
[ "$node_major" = 20 ] || { echo "build-base-image.sh: this machine runs Node $node_major, the tags say node20" >&2; exit 1; }
[ -d "$node_prefix/lib/node_modules/npm" ] || { echo "build-base-image.sh: no npm under $node_prefix/lib/node_modules" >&2; exit 1; }
[ -f "$node_prefix/include/node/node.h" ] || { echo "build-base-image.sh: no Node headers under $node_prefix/include/node" >&2; exit 1; }

# The Debian mirror apt already uses (deb822 "URIs:" or one-line "deb URI suite"), skipping the
# security archive, which has no full suite.
mirror=$(
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' |
    grep -E '/debian/?$' | grep -v security | head -n 1 || true
)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/replichat-base.XXXXXX)
rootfs=$work/rootfs
mounted=()
cleanup() {
  for (( index=${#mounted[@]}-1; index>=0; index-- )); do umount -l "${mounted[$index]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "debootstrap bookworm (minbase + tini) from $mirror"
debootstrap --variant=minbase --include=tini bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Node as the official image lays it out: /usr/local/bin/node, npm under /usr/local/lib/node_modules.
install -m 0755 "$node_binary" "$rootfs/usr/local/bin/node"
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$node_prefix/lib/node_modules/npm" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
chroot "$rootfs" /usr/local/bin/node --version >/dev/null

slim() {
  rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/* \
    "$1"/usr/share/info/* "$1"/var/log/*.log "$1"/var/cache/debconf/*-old
}
import_rootfs() {
  # $1 rootfs, $2 tag. The CMD and ENV are what the official Node images set.
  tar --numeric-owner --xattrs -C "$1" -c . |
    podman import --quiet --change 'CMD ["node"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --message "replichat base: Debian bookworm minbase, Node $("$node_binary" --version) from $node_prefix" - "$2" >/dev/null
  echo "imported $2"
}

slim "$rootfs"
import_rootfs "$rootfs" "$runtime_tag"

# The build image: the same system plus a compiler, installed by apt inside the tree (with the host's
# network and name resolution), plus the headers node-gyp compiles against (no download from nodejs.org).
echo "adding python3, make and g++ for the build image"
mount -t proc proc "$rootfs/proc" && mounted+=("$rootfs/proc")
mount --bind /dev "$rootfs/dev" && mounted+=("$rootfs/dev")
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$work/apt.log" 2>&1 &&
  chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3 make g++ >>"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; exit 1; }
umount -l "$rootfs/dev" && umount -l "$rootfs/proc" && mounted=()
: >"$rootfs/etc/resolv.conf"
mkdir -p "$rootfs/usr/local/include"
cp -a "$node_prefix/include/node" "$rootfs/usr/local/include/node"
slim "$rootfs"
import_rootfs "$rootfs" "$build_tag"
