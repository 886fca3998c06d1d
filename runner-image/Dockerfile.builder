# The builder image for compile Jobs: `wasmfn compile` and every toolchain it drives.
#   wasmfn compile --language rust /src -o /out        (source from a ConfigMap volume)
# writes module.wasm + manifest.json to /out, the manifest to stdout and /dev/termination-log.
#
# Toolchains come from Debian trixie (rustc + the wasm32-wasip1 std, clang-19/lld-19 with
# wasi-libc and libc++, Go 1.24, wabt, node) and npm (AssemblyScript + its WASI shim, staged from
# `make setup`'s install because the image build cannot reach the npm registry over TLS); the
# Python and JavaScript interpreter modules check scripts. The wasmfn binary is built on the host
# (see runner-image/Dockerfile for why), staged by `make runner-image-context` /
# `make builder-image-context`.
#
# Build context: the repository root.

FROM docker.io/library/debian:trixie-slim AS toolchains
# Docs, locales and Rust's standard library for the wasm targets the pipeline never builds
# (wasm32-unknown-unknown, wasm32-wasip2: ~210 MB) are dropped in the same layer.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      rustc cargo libstd-rust-dev-wasm32 \
      clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc libc++-19-dev-wasm32 libc++abi-19-dev-wasm32 \
      golang-1.24-go wabt nodejs libwasmedge0 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc /usr/share/man /usr/share/locale \
 && rm -rf /usr/lib/rustlib/wasm32-unknown-unknown /usr/lib/rustlib/wasm32-wasip2
COPY target/runner-image/wasmfn /usr/local/bin/wasmfn
COPY target/runner-image/interpreters/ /usr/lib/wasmfn/interpreters/
COPY target/builder-image/assemblyscript/ /usr/lib/wasmfn/assemblyscript/

# Go's standard library compiled for wasip1, copied into an empty Go build cache before a
# compile Job's first Go build (saves ~10 s of every cold Go compile). Built by wasmfn itself,
# with exactly the flags it uses.
FROM toolchains AS go-seed
RUN printf 'package main\n\nimport (\n\t"fmt"\n\t"io"\n\t"os"\n)\n\nfunc main() {\n\tfmt.Println("seed")\n\tio.Copy(os.Stdout, os.Stdin)\n}\n' > /tmp/seed.go \
 && WASMFN_GO_CACHE=/usr/lib/wasmfn/go-build-seed WASM_CACHE_ENABLED=false \
    wasmfn compile --language go /tmp/seed.go --out /tmp/seed-out --termination-log - >/dev/null \
 && rm -rf /tmp/seed.go /tmp/seed-out

FROM toolchains
COPY --from=go-seed /usr/lib/wasmfn/go-build-seed/ /usr/lib/wasmfn/go-build-seed/
ENV WASMFN_INTERPRETERS=/usr/lib/wasmfn/interpreters \
    WASMFN_ASSEMBLYSCRIPT=/usr/lib/wasmfn/assemblyscript \
    WASMFN_GO_CACHE_SEED=/usr/lib/wasmfn/go-build-seed \
    WASM_CACHE_DIR=/tmp/wasmfn-cache \
    HOME=/tmp
# Numeric non-root user (runAsNonRoot can verify a number). Compile Jobs mount an emptyDir at
# /tmp (work directories, the compile cache) and run with a read-only root filesystem.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/wasmfn"]
CMD ["compile", "--help"]
