#!/usr/bin/env bash
# Build the images `make compose-test` needs from Debian packages, for machines that cannot pull
# from a registry: a Debian bookworm root file system (debootstrap) with Python 3.11 in a venv on
# PATH (OUTBOX_BASE_IMAGE for compose/Dockerfile) and PostgreSQL 15 (for compose/postgres-local).
#
#   compose/base-image.sh [IMAGE]      # default: outbox-streams-base:bookworm
#
# Needs root, debootstrap and a running Docker engine; the Debian mirror is DEBIAN_MIRROR.
set -euo pipefail

image="${1:-outbox-streams-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base-image: $image exists"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates,postgresql-15,procps \
    bookworm "$root" "$mirror"
# Trust what this machine trusts (pip behind a TLS-inspecting proxy needs its CA in the image).
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" python3 -m venv /opt/venv
chroot "$root" /opt/venv/bin/pip install --quiet --upgrade pip
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    - "$image"
echo "base-image: built $image"
