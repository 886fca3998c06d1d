# wasmfn — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export WASMFN_CACHE ?= $(HOME)/.cache/wasmfn
export WASMFN_CLUSTER_DIR ?= /tmp/wasmfn-cluster
CARGO ?= cargo
CLUSTER := target/debug/wasmfn-cluster
# Which build of the binaries the images carry: `release` for `make images` and the demo; `make
# test` builds them from the dev binaries its suites already run directly (the shim on node A,
# the operator, `wasmfn`), which skips a second, optimised build of every dependency (about 12 of
# CI's minutes). `make test IMAGE_PROFILE=release` tests the release images instead.
IMAGE_PROFILE ?= release
IMAGE_BIN = target/$(if $(filter dev,$(IMAGE_PROFILE)),debug,$(IMAGE_PROFILE))
# The dev build names the same packages as `make test`'s own build, so the two share every
# compiled dependency (a different package set would resolve other features and rebuild).
IMAGE_PACKAGES = $(if $(filter dev,$(IMAGE_PROFILE)),--workspace --bins,-p wasmfn-cli -p containerd-shim-wasmfn -p wasmfn-node-installer -p wasmfn-operator)

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## Install packages and toolchains, build Kubernetes and the base image (root, Debian 12; idempotent)
	tests/harness/setup.sh

.PHONY: build
build: ## Build every crate (debug)
	$(CARGO) build --workspace --all-targets

$(CLUSTER): $(shell find tests/src runner-image/shim/src runner-image/execution-core/src runner-image/artifact/src runner-image/node-installer/src -name "*.rs") tests/Cargo.toml
	@# Name both binaries: `--bin` applies to every `-p`, so `--bin wasmfn-cluster` alone skipped the shim.
	$(CARGO) build -p wasmfn-e2e -p containerd-shim-wasmfn --bin wasmfn-cluster --bin containerd-shim-wasmfn-v1

.PHONY: cluster-up
cluster-up: $(CLUSTER) ## Start the local two-node cluster and wait until both nodes are Ready
	@$(CLUSTER) up --state-dir $(WASMFN_CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: $(CLUSTER) ## Stop the local cluster and everything it started
	@$(CLUSTER) down --state-dir $(WASMFN_CLUSTER_DIR)

.PHONY: images
images: runner-image-context builder-image-context node-installer-image-context operator-image-context ## Build every Dockerfile in the repository with buildah and push to the local registry storage
	tests/harness/images.sh

.PHONY: demo
demo: ## Cluster up, images, helm install, every example function and its executions on both paths; prints the results
	@# The script runs `make cluster-up` and `make images` itself, with progress lines and time limits.
	@tests/harness/demo.sh

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# The kube-free model the compiler and the CLI build (features unify in the workspace run).
	$(CARGO) clippy -p wasmfn-api --no-default-features --all-targets -- -D warnings

.PHONY: crds
crds: ## Regenerate crds/*.yaml (and the chart's copy) from the API types (tests fail when they drift)
	$(CARGO) run -q -p wasmfn-operator -- crdgen --out crds
	rm -f charts/wasmfn/crds/*.yaml && cp crds/*.yaml charts/wasmfn/crds/

.PHONY: test
test: IMAGE_PROFILE = dev
test: images ## Run every test: unit, runner and end-to-end on real clusters (needs `make setup`)
	@# The cluster suites run the shim and `wasmfn` binaries; `cargo test` alone builds only test harnesses of them.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=8

.PHONY: bench-cluster
bench-cluster: ## Job create->Complete latency on a fresh local cluster (p50/p99 over 20 Jobs)
	$(CARGO) build -p containerd-shim-wasmfn
	WASMFN_SHIM_BINARY=$(CURDIR)/target/debug/containerd-shim-wasmfn-v1 $(CARGO) bench -p wasmfn-e2e --bench job_latency

.PHONY: image-binaries
image-binaries: ## Build every image's binaries (IMAGE_PROFILE) in one cargo run
	@# One run resolves the dependencies' features once for all the packages, so each dependency
	@# is compiled once; separate runs per image rebuilt about 380 of them.
	$(CARGO) build --profile $(IMAGE_PROFILE) $(IMAGE_PACKAGES)

.PHONY: runner-image-context
runner-image-context: image-binaries ## Stage `wasmfn` and the interpreters (from make setup) for runner-image/Dockerfile
	@# AOT forms land next to the interpreters in the cache (skipped when up to date), where the
	@# image build and the runner tests both reuse them instead of compiling CPython twice more.
	$(IMAGE_BIN)/wasmfn aot $(WASMFN_CACHE)/interpreters/python/python3.11.wasm
	$(IMAGE_BIN)/wasmfn aot $(WASMFN_CACHE)/interpreters/javascript/quickjs.wasm
	rm -rf target/runner-image && mkdir -p target/runner-image
	cp $(IMAGE_BIN)/wasmfn target/runner-image/wasmfn
	@# -p: the stdlib's .py files must keep the mtimes their .pyc files record.
	cp -rp $(WASMFN_CACHE)/interpreters target/runner-image/interpreters

.PHONY: bench-runner
bench-runner: ## Per-run overhead of the execution core vs the wasmedge CLI, AOT vs interpreter (median, p99, ratios)
	$(CARGO) build --release -p wasmfn-cli -p wasmfn-bench
	target/release/wasmfn-bench --wasmfn target/release/wasmfn

.PHONY: bench-scripts
bench-scripts: ## Python/JavaScript hello under the AOT interpreters (in-process, forked) vs host python3/node (median, p99, goals)
	$(CARGO) build --release -p wasmfn-cli -p wasmfn-bench
	@# The AOT forms next to the interpreters in the cache, as runner-image-context makes them (skipped when up to date).
	target/release/wasmfn aot $(WASMFN_CACHE)/interpreters/python/python3.11.wasm
	target/release/wasmfn aot $(WASMFN_CACHE)/interpreters/javascript/quickjs.wasm
	WASMFN_INTERPRETERS=$(WASMFN_CACHE)/interpreters target/release/wasmfn-bench scripts

.PHONY: builder-image-context
builder-image-context: runner-image-context ## Stage AssemblyScript (from make setup) for runner-image/Dockerfile.builder
	rm -rf target/builder-image && mkdir -p target/builder-image
	cp -r $(WASMFN_CACHE)/assemblyscript target/builder-image/assemblyscript

.PHONY: node-installer-image-context
node-installer-image-context: image-binaries ## Stage the shim and node installer for runner-image/node-installer/Dockerfile
	rm -rf target/node-installer-image && mkdir -p target/node-installer-image
	cp $(IMAGE_BIN)/containerd-shim-wasmfn-v1 $(IMAGE_BIN)/wasmfn-node-installer target/node-installer-image/

.PHONY: operator-image-context
operator-image-context: image-binaries ## Stage the operator for operator/Dockerfile
	rm -rf target/operator-image && mkdir -p target/operator-image
	@# Debug info is 80% of the release binary; symbols stay for readable panics.
	strip --strip-debug -o target/operator-image/wasmfn-operator $(IMAGE_BIN)/wasmfn-operator

.PHONY: bench-compile
bench-compile: ## Cold compile per language, cache-hit time vs a Rust miss, builder image size (median, p99, ratios)
	$(CARGO) build --release -p wasmfn-cli
	$(CARGO) bench -p wasmfn-compile --bench compile -- --wasmfn $(CURDIR)/target/release/wasmfn

.PHONY: bench-operator
bench-operator: ## WasmFunction create->Ready: cache miss per language, cache hit p50/p99 over 20 (real operator, fresh cluster)
	$(CARGO) build --workspace --bins
	WASMFN_OPERATOR_BINARY=$(CURDIR)/target/debug/wasmfn-operator $(CARGO) bench -p wasmfn-e2e --bench function_latency

.PHONY: bench-executions
bench-executions: ## WasmExecution create->Succeeded: WasmEdge node vs container (p50/p99 over 50 each), operator overhead, 200 at once (real operator, fresh cluster)
	$(CARGO) build --workspace --bins
	WASMFN_OPERATOR_BINARY=$(CURDIR)/target/debug/wasmfn-operator $(CARGO) bench -p wasmfn-e2e --bench execution_latency

.PHONY: bench-agent
bench-agent: images ## Agent vs Wasm pod vs container pod create->final (p50/p99, hello and fib), a 1,000 burst on the agent, agent and operator RSS (release operator, fresh cluster)
	$(CARGO) build --release -p wasmfn-operator
	$(CARGO) build --workspace --bins
	WASMFN_OPERATOR_BINARY=$(CURDIR)/target/release/wasmfn-operator $(CARGO) bench -p wasmfn-e2e --bench agent_latency

.PHONY: bench-burst
bench-burst: images ## 1,000 hello executions at once on a fresh cluster (half Auto, half Container, retries 0, no pre-pull): executions/s, reasons, run pods in flight per node, per-stage latencies
	$(CARGO) build --release -p wasmfn-operator
	$(CARGO) build --workspace --bins
	WASMFN_OPERATOR_BINARY=$(CURDIR)/target/release/wasmfn-operator $(CARGO) bench -p wasmfn-e2e --bench burst

.PHONY: bench-operator-memory
bench-operator-memory: ## The release operator's RSS idle and with 1,000 finished executions (fresh cluster)
	$(CARGO) build --release -p wasmfn-operator
	$(CARGO) build -p containerd-shim-wasmfn
	WASMFN_SHIM_BINARY=$(CURDIR)/target/debug/containerd-shim-wasmfn-v1 WASMFN_OPERATOR_BINARY=$(CURDIR)/target/release/wasmfn-operator $(CARGO) bench -p wasmfn-e2e --bench operator_memory

.PHONY: bench-wasm-pods
bench-wasm-pods: ## Wasm pod (shim, node A) vs runner-image pod (node B): create->Succeeded p50/p99 over 20 each
	$(CARGO) build -p containerd-shim-wasmfn
	WASMFN_SHIM_BINARY=$(CURDIR)/target/debug/containerd-shim-wasmfn-v1 $(CARGO) bench -p wasmfn-e2e --bench pod_latency
