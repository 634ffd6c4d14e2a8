#!/usr/bin/env bash
# Build the local stand-in for `debian:bookworm-slim` when no image registry is reachable (CI, air-gapped
# hosts): a minimal Debian bookworm made with debootstrap from Debian's package mirror, `docker import`ed
# as $1 (default aecodec-base:bookworm). The root filesystem is kept as a tarball in $AEC_CACHE_DIR, so a
# machine whose Docker data was wiped re-imports it in seconds instead of bootstrapping again.
#
#   deploy/docker/base-image.sh [TAG]      # then: docker build --build-arg BASE_IMAGE=TAG ...
set -euo pipefail
TAG=${1:-aecodec-base:bookworm}
CACHE=${AEC_CACHE_DIR:-/var/cache/aecodec}
MIRROR=${AEC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL="$CACHE/bookworm-minbase.tar"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG: present"
  exit 0
fi
mkdir -p "$CACHE"
if [[ ! -s "$TARBALL" ]]; then
  command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install debootstrap" >&2; exit 1; }
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  echo "base image $TAG: debootstrap bookworm (minbase) from $MIRROR"
  nice -n 10 debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # What debian:bookworm-slim has: the release, its updates and security suites; no package cache.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
  tar -C "$rootfs" --numeric-owner -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
fi
echo "base image $TAG: docker import $TARBALL"
docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$TARBALL" "$TAG" >/dev/null
