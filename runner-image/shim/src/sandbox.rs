//! The shim's engine adapter: `containerd-shim-wasm` calls [`WasmfnSandbox::run_wasi`] inside the
//! container's init process (its filesystem, namespaces and cgroup), with the container's stdio.

use crate::container_request::{container_run, BadSetting, ModuleOrigin};
use anyhow::{bail, Result};
use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source};
use containerd_shim_wasm::sandbox::Sandbox;
use std::path::Path;
use wasmfn_execution::{artifact, engine, execute, ForwardSink, Isolation, Reason, ResultDocument};

#[derive(Default)]
pub(crate) struct WasmfnSandbox;

fn write_result(path: &Path, document: &ResultDocument) {
    if let Err(e) = std::fs::write(path, document.to_json()) {
        eprintln!(
            "wasmfn shim: cannot write the result document to {}: {e}",
            path.display()
        );
    }
}

impl Sandbox for WasmfnSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> Result<i32> {
        wasmfn_execution::runtime::silence_runtime_log();
        let origin = match ctx.entrypoint().source {
            // A packed artifact of the ConfigMap store is a directory (or its manifest); the
            // execution core unpacks and verifies it when it reads the module.
            Source::File(path) if artifact::is_packed(&path) => ModuleOrigin::Packed(path),
            Source::File(path) => ModuleOrigin::File(path),
            Source::Oci([layer]) => ModuleOrigin::Layer(layer.layer.clone()),
            Source::Oci(layers) => {
                bail!(
                    "the image has {} Wasm layers; wasmfn runs exactly one module",
                    layers.len()
                )
            }
        };
        let run = match container_run(ctx.args(), ctx.envs(), origin) {
            Ok(run) => run,
            Err(BadSetting(message)) => {
                // The container's settings are unusable: say so where the pod's status shows it.
                let mut document =
                    ResultDocument::new(Reason::BadArguments, engine::runtime_info());
                document.set_message(message);
                write_result(
                    Path::new(crate::container_request::DEFAULT_RESULT_PATH),
                    &document,
                );
                return Ok(document.process_exit_code());
            }
        };
        // The guest's output is forwarded to the container's stdout/stderr (so `kubectl logs`
        // shows it) while the core hashes and caps it for the result document.
        let started = std::time::SystemTime::now();
        let mut execution = execute(&run.request, Isolation::Fork, &mut ForwardSink);
        if let Some(parent) = &run.traceparent {
            execution
                .document
                .attach_trace(parent, "wasmfn-shim", started);
        }
        write_result(&run.result_path, &execution.document);
        Ok(execution.document.process_exit_code())
    }

    /// Everything that is not a Linux executable is ours: a module that cannot run ends with a
    /// result document saying why (InvalidModule, MissingExport …), never with a container that
    /// fails to start.
    async fn can_handle(&self, _ctx: &impl RuntimeContext) -> Result<()> {
        Ok(())
    }
}
