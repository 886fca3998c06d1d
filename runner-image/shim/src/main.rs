//! `containerd-shim-wasmfn-v1`: containerd maps runtime type `io.containerd.wasmfn.v1` to this
//! binary (RuntimeClass handler `wasmfn` on WasmEdge nodes). Container lifecycle, OCI Wasm
//! layers and the container sandbox come from `containerd-shim-wasm`; running the module is
//! wasmfn's execution core, exactly as `wasmfn exec` runs it in the fallback container pod.

mod container_request;
mod precompile;
mod sandbox;

use containerd_shim_wasm::shim::{Cli, Compiler, Shim, Version};

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

    /// OCI Wasm layers get their AOT form through containerd's content store (see
    /// [`precompile`]).
    async fn compiler() -> Option<impl Compiler> {
        precompile::Precompiler::for_installation()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((precompile::PRECOMPILE_FLAG, rest)) = args
        .split_first()
        .map(|(first, rest)| (first.as_str(), rest))
    {
        std::process::exit(precompile::run_background_compile(rest));
    }
    WasmfnShim::run(None);
}
