#!/usr/bin/env bash
# make images: builds every Dockerfile in the repository with buildah (on the local Debian trixie
# base image from `make setup`) and pushes the results into the local registry storage
# ($WASMFN_CACHE/registry) that every local cluster's registry serves as `wasmfn.local/<name>:dev`.
# WASMFN_IMAGE_TAG=x tags them `:x` instead, so a second checkout can build without replacing the
# `:dev` images another one's tests use.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
harness_tag=images
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${WASMFN_CACHE:-$HOME/.cache/wasmfn}
tag=${WASMFN_IMAGE_TAG:-dev}
cd "$repo"

# dockerfile | image name | build context
IMAGES=(
  "tests/images/probe/Dockerfile|probe|tests/images/probe"
  "runner-image/Dockerfile|runner|."
  "runner-image/Dockerfile.builder|builder|."
  "runner-image/wasm-pod/Dockerfile|wasm-pod|."
  "runner-image/node-installer/Dockerfile|node-installer|."
  "operator/Dockerfile|operator|."
)

listed=" "
for entry in "${IMAGES[@]}"; do listed+="${entry%%|*} "; done
unlisted=$(git ls-files --cached --others --exclude-standard -- '*Dockerfile*' | while read -r f; do
  [[ "$listed" == *" $f "* ]] || echo "$f"; done)
if [ -n "$unlisted" ]; then
  echo "Dockerfiles not listed in tests/harness/images.sh: $unlisted" >&2; exit 1
fi
if [ -z "$(buildah images -q docker.io/library/debian:trixie-slim 2>/dev/null)" ]; then
  echo "the base image docker.io/library/debian:trixie-slim is missing: run make setup" >&2; exit 1
fi

built=()
for entry in "${IMAGES[@]}"; do
  IFS='|' read -r dockerfile name context <<<"$entry"
  [ -f "$dockerfile" ] || continue
  t=$(date +%s)
  note "wasmfn.local/$name:$tag from $dockerfile"
  buildah bud -q --pull=never --layers --network host -f "$dockerfile" -t "wasmfn.local/$name:$tag" "$context" >/dev/null
  elapsed "$t" built
  built+=("$name")
done
# Every build leaves behind the image its tag named before, and the layers only that image used:
# a few GiB per build of the builder image, which filled CI's disk within a few runs. Dropping the
# untagged images keeps the layer cache of the current ones (a rebuild stays incremental).
t=$(date +%s)
buildah rmi --prune >/dev/null 2>&1 || true
note "pruned superseded images in $(since "$t")s"

# Push through a registry of our own on a free loopback port, over the shared storage.
mkdir -p "$cache/registry"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
config=$(mktemp)
log=$(mktemp)
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$cache/registry" "$port" > "$config"
docker-registry serve "$config" >"$log" 2>&1 &
registry_pid=$!
trap 'kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; rm -f "$config" "$log"' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done
for name in "${built[@]}"; do
  t=$(date +%s)
  buildah push -q --tls-verify=false "wasmfn.local/$name:$tag" "docker://127.0.0.1:$port/$name:$tag"
  note "pushed wasmfn.local/$name:$tag in $(since "$t")s"
done
# The registry keeps every blob ever pushed; with the registry stopped, delete the manifests no tag
# names any more and the blobs only they used (every push of a changed image would add ~1 GiB).
kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true
t=$(date +%s)
docker-registry garbage-collect --delete-untagged "$config" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
note "registry garbage-collected in $(since "$t")s ($(du -sh "$cache/registry" | cut -f1) left)"
