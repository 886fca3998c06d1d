//! The wasmfn node installer: puts `containerd-shim-wasmfn-v1` on a Kubernetes node and registers
//! it with the node's containerd as runtime handler `wasmfn`. The pure parts — the containerd
//! config edit and the node label patches — are modules of their own, unit-tested without a
//! node; the local test cluster renders its WasmEdge node's containerd config with the same edit.

pub mod containerd_config;
pub mod cri;
pub mod host;
pub mod node_labels;
pub mod payload;
