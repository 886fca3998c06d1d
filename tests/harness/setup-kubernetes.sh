#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl v1.20.2 from Debian's
# kubernetes source package, plus the static `pause` binary and its image archive, into the cache.
# Kubernetes 1.20 vendors reflect2 v1.0.1, which crashes under Go >= 1.18 on the first custom
# resource write; the vendored copy is replaced with Debian's v1.0.2 before building.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
harness_tag=setup
cache=$1
out=$cache/kubernetes-1.20.2
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

step "Kubernetes v1.20.2 binaries"
have=1; for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || have=0; done
if [ $have = 1 ]; then
  skip "$out/bin already holds ${bins[*]}"
else
  t=$(date +%s)
  work=$cache/kubernetes-src
  rm -rf "$work"; mkdir -p "$work"
  ( cd "$work" && apt-get source -q --download-only kubernetes >/dev/null )
  tarball=$(ls "$work"/kubernetes_*.orig.tar.gz | head -n1)
  mkdir -p "$work/tree"
  tar -xzf "$tarball" -C "$work/tree" --strip-components=1
  tree=$work/tree
  # reflect2 fix
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  mkdir -p "$tree/vendor/github.com/modern-go/reflect2"
  src=/usr/share/gocode/src/github.com/modern-go/reflect2
  find "$src" -maxdepth 1 -type f ! -name go.mod ! -name go.sum -exec cp {} "$tree/vendor/github.com/modern-go/reflect2/" \;
  sed -i 's#github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#g' \
    "$tree/go.mod" "$tree/vendor/modules.txt" "$tree"/staging/src/k8s.io/*/go.mod
  mkdir -p "$work/gopath/src/k8s.io"
  ln -sfn "$tree" "$work/gopath/src/k8s.io/kubernetes"
  (
    cd "$work/gopath/src/k8s.io/kubernetes"
    export GOPATH=$work/gopath PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 GOFLAGS=-mod=vendor
    export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kubectl" >"$work/build.log" 2>&1 \
      || { tail -n 40 "$work/build.log" >&2; exit 1; }
  )
  mkdir -p "$out/bin"
  for b in "${bins[@]}"; do install -m 0755 "$tree/_output/bin/$b" "$out/bin/$b"; done
  # the pause source is all we keep from the tree
  cp "$tree/build/pause/linux/pause.c" "$out/pause.c"
  rm -rf "$work"
  elapsed "$t" built
fi

step "pause image"
if [ -f "$out/pause.tar" ]; then
  skip "$out/pause.tar exists"
else
  [ -f "$out/pause.c" ] || { echo "pause.c missing from $out; delete $out to rebuild" >&2; exit 1; }
  gcc -Os -static -o "$out/pause" "$out/pause.c"
  strip "$out/pause"
  ctr=$(buildah from scratch)
  buildah copy "$ctr" "$out/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  buildah commit -q "$ctr" wasmfn.local/pause:3.8 >/dev/null
  buildah rm "$ctr" >/dev/null
  buildah push -q wasmfn.local/pause:3.8 "docker-archive:$out/pause.tar:wasmfn.local/pause:3.8"
  echo "   wrote $out/pause.tar"
fi
