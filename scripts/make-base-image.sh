#!/usr/bin/env bash
# Build a small Debian bookworm image with python3 without any image registry:
# debootstrap (minbase) from the host's own Debian mirror, then `podman import`.
#
#   scripts/make-base-image.sh [IMAGE]      (default localhost/fleet-python:bookworm)
#
# Needs root, debootstrap and podman. The mirror is read from the host's apt sources
# (deb822 /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list); set MIRROR to
# override it. The image is rebuilt only when it does not exist yet (FORCE=1 rebuilds).
set -euo pipefail

IMAGE=${1:-localhost/fleet-python:bookworm}
SUITE=${SUITE:-bookworm}
PACKAGES=${PACKAGES:-python3,python3-venv}

if [ "${FORCE:-0}" != 1 ] && podman image exists "$IMAGE"; then
    echo "base image $IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi

if [ -z "${MIRROR:-}" ]; then
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        MIRROR=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "${MIRROR:-}" ] && [ -r /etc/apt/sources.list ]; then
        MIRROR=$(awk '/^deb / && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
fi
if [ -z "${MIRROR:-}" ]; then
    echo "no Debian mirror found in the apt sources; set MIRROR" >&2
    exit 1
fi

ROOTFS=$(mktemp -d /var/tmp/fleet-base-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

echo "debootstrap $SUITE (minbase + $PACKAGES) from the host's mirror"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -20 "$ROOTFS.log" >&2
    rm -f "$ROOTFS.log"
    exit 1
}
rm -f "$ROOTFS.log"

# Keep it small: no package caches, lists, docs, man pages or translations.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
    "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old
find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
find "$ROOTFS"/usr/lib/python3* -name '__pycache__' -type d -prune -exec rm -rf {} +
tar --numeric-owner -C "$ROOTFS" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/usr/bin/python3"]' \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE" \
    - "$IMAGE" >/dev/null
echo "built $IMAGE"
