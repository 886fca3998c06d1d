//! `containerd-shim-wasmfn-v1`: containerd maps runtime type `io.containerd.wasmfn.v1` to this
//! binary (RuntimeClass handler `wasmedge` on WasmEdge nodes). Container lifecycle, OCI Wasm
//! layers and the container sandbox come from `containerd-shim-wasm`; running the module is
//! wasmfn's execution core, exactly as `wasmfn exec` runs it in the fallback container pod.

mod container_request;
mod sandbox;

use containerd_shim_wasm::shim::{Cli, Shim, Version};

struct WasmfnShim;

impl Shim for WasmfnShim {
    type Sandbox = sandbox::WasmfnSandbox;

    fn name() -> &'static str {
        "wasmfn"
    }

    fn version() -> Version {
        Version {
            version: env!("CARGO_PKG_VERSION"),
            revision: "wasmfn",
        }
    }
}

fn main() {
    WasmfnShim::run(None);
}
