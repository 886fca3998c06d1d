#!/usr/bin/env bash
# Makes the Debian trixie base image the Dockerfiles start FROM (there is no registry to pull one
# from): a debootstrap minbase rootfs committed with buildah as docker.io/library/debian:trixie-slim.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
harness_tag=setup
cache=$1
image=docker.io/library/debian:trixie-slim

step "base image $image"
if buildah images -q "$image" >/dev/null 2>&1 && [ -n "$(buildah images -q "$image" 2>/dev/null)" ]; then
  skip "$image is in buildah's storage"
  exit 0
fi
mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
t=$(date +%s)
root=$cache/trixie-rootfs
rm -rf "$root"
debootstrap --variant=minbase trixie "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
  || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
# Slim it the way the official slim images are: no apt lists, no docs beyond copyright.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/*/changelog* \
       "$root"/usr/share/man/* "$root"/usr/share/info/*
tar -C "$root" -cf "$cache/trixie-rootfs.tar" .
rm -rf "$root"
ctr=$(buildah from scratch)
buildah add "$ctr" "$cache/trixie-rootfs.tar" / >/dev/null
buildah config --cmd '["bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
buildah commit -q "$ctr" "$image" >/dev/null
buildah rm "$ctr" >/dev/null
rm -f "$cache/trixie-rootfs.tar"
elapsed "$t" built
