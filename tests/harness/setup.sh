#!/usr/bin/env bash
# make setup: prepares a Debian 12 host (as root) for building, testing and demoing wasmfn.
# Idempotent: every step checks whether its result is already present and says when it skips.
# Everything large lands in $WASMFN_CACHE (default ~/.cache/wasmfn), outside the repository.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
harness_tag=setup

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${WASMFN_CACHE:-$HOME/.cache/wasmfn}
mkdir -p "$cache"
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -q)

if [ "$(id -u)" != 0 ]; then echo "make setup must run as root (it installs packages and configures the host)" >&2; exit 1; fi
# One setup at a time per cache: a second `make setup` (another shell, another checkout) waits
# here, then finds everything done and skips it, instead of rebuilding the same directories.
# The lock is held by flock(1) itself (-o: not inherited by this script's children, so a daemon
# a package's postinst starts cannot keep it).
if [ -z "${WASMFN_SETUP_LOCKED:-}" ]; then
  if ! flock -n "$cache/setup.lock" true; then
    note "another make setup is running on $cache; waiting for it" >&2
  fi
  WASMFN_SETUP_LOCKED=1 exec flock -o -w 7200 "$cache/setup.lock" "$0" "$@"
fi
. /etc/os-release
# The trixie packages upgrade base-files (os-release then says 13) and libc6, so a second run sees 13.
if [ "${ID:-}" != debian ] || { [ "${VERSION_ID:-}" != 12 ] && [ "${VERSION_ID:-}" != 13 ]; }; then
  echo "make setup supports Debian 12 (bookworm); this is ${PRETTY_NAME:-unknown}" >&2; exit 1
fi

# The mirror is read from the host's own apt configuration, never written into the repository.
mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "cannot find the Debian mirror in /etc/apt" >&2; exit 1; }
  echo "$uri"
}
MIRROR=$(mirror)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# ---------------------------------------------------------------- apt sources
step "apt sources (bookworm deb-src, bookworm-backports, trixie pinned at 100)"
sources=$(cat <<SRC
# Written by wasmfn's make setup. trixie is pinned low in /etc/apt/preferences.d/wasmfn-trixie.
Types: deb-src
URIs: $MIRROR
Suites: bookworm
Components: main
Signed-By: $KEYRING

Types: deb
URIs: $MIRROR
Suites: bookworm-backports trixie
Components: main
Signed-By: $KEYRING
SRC
)
pin=$'Package: *\nPin: release n=trixie\nPin-Priority: 100\n'
changed=0
if [ "$(cat /etc/apt/sources.list.d/wasmfn.sources 2>/dev/null)" != "$sources" ]; then
  printf '%s\n' "$sources" > /etc/apt/sources.list.d/wasmfn.sources; changed=1
fi
if [ "$(cat /etc/apt/preferences.d/wasmfn-trixie 2>/dev/null)" != "${pin%$'\n'}" ]; then
  printf '%s' "$pin" > /etc/apt/preferences.d/wasmfn-trixie; changed=1
fi
stamp=$cache/apt-updated
if [ $changed = 1 ] || [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +720)" ]; then
  t=$(date +%s); "${APT[@]}" update >/dev/null; touch "$stamp"; elapsed "$t"
else
  skip "sources unchanged and package lists fresh"
fi

# ---------------------------------------------------------------- packages
# Installed from trixie (bookworm's are too old or missing).
TRIXIE_PKGS=(
  libwasmedge-dev wasmedge libwasmedge0     # WasmEdge 0.14.1 with LLVM (AOT)
  containerd                                # 1.7: pulls OCI Wasm artifacts
  rustc cargo libstd-rust-dev-wasm32 rust-llvm  # Rust -> wasm32-wasip1 (rust-llvm: rust-lld)
  clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc libc++-19-dev-wasm32
  golang-1.24-go                            # Go's wasip1 port
)
BOOKWORM_PKGS=(
  build-essential pkg-config libclang-dev protobuf-compiler libdbus-1-dev libseccomp-dev libssl-dev
  etcd-server runc containernetworking-plugins buildah debootstrap docker-registry
  golang-1.19-go golang-github-modern-go-reflect2-dev rsync jq dpkg-dev
  openssl iproute2 iptables util-linux curl ca-certificates
  wabt binaryen python3
)
missing() { for p in "$@"; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done; }
step "system packages"
m_trixie=$(missing "${TRIXIE_PKGS[@]}"); m_bookworm=$(missing "${BOOKWORM_PKGS[@]}")
if [ -z "$m_trixie$m_bookworm" ]; then
  skip "all $(( ${#TRIXIE_PKGS[@]} + ${#BOOKWORM_PKGS[@]} )) packages installed"
else
  t=$(date +%s)
  # shellcheck disable=SC2086
  [ -z "$m_bookworm" ] || "${APT[@]}" install --no-install-recommends $m_bookworm
  # shellcheck disable=SC2086
  [ -z "$m_trixie" ] || "${APT[@]}" install --no-install-recommends -t trixie $m_trixie
  elapsed "$t"
fi
# containerd's package starts a host-wide daemon; our nodes run their own, so the stock one stays off.
if command -v systemctl >/dev/null && systemctl is-active -q containerd 2>/dev/null; then
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi

# Node.js: any node >= 18 with npm will do (the host may already have one); else Debian's.
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  step "Node.js"; "${APT[@]}" install --no-install-recommends nodejs npm
fi

"$here/setup-kubernetes.sh" "$cache"
"$here/setup-base-image.sh" "$cache"
"$here/setup-toolchains.sh" "$cache" "$repo"
"$here/setup-helm.sh" "$cache"

step "finished. Cache: $cache"
