//! The shim's engine adapter: `containerd-shim-wasm` calls [`WasmfnSandbox::run_wasi`] inside the
//! container's init process (its filesystem, namespaces and cgroup), with the container's stdio.

use crate::container_request::{container_run, BadSetting, ModuleOrigin};
use anyhow::{bail, Result};
use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source, WasmLayer};
use containerd_shim_wasm::sandbox::Sandbox;
use std::path::Path;
use wasmfn_execution::aot::AotBundle;
use wasmfn_execution::{
    artifact, engine, execute, interpreter, ForwardSink, Isolation, Reason, ResultDocument,
};

#[derive(Default)]
pub(crate) struct WasmfnSandbox;

/// Where a script is staged inside the container (the operator mounts an emptyDir there).
const SCRATCH_DIR: &str = "/tmp";

fn write_result(path: &Path, document: &ResultDocument) {
    if let Err(e) = std::fs::write(path, document.to_json()) {
        eprintln!(
            "wasmfn shim: cannot write the result document to {}: {e}",
            path.display()
        );
    }
}

/// Ends the run before it starts: a result document with `reason` and `message` where the
/// pod's status shows it; returns the container's exit code.
fn refuse(reason: Reason, message: String) -> i32 {
    let mut document = ResultDocument::new(reason, engine::runtime_info());
    document.set_message(message);
    write_result(
        Path::new(crate::container_request::DEFAULT_RESULT_PATH),
        &document,
    );
    document.process_exit_code()
}

/// The bundle the precompile hook stored for `layer`, when its module is exactly the layer the
/// image names.
fn unbundle(layer: &WasmLayer) -> Result<AotBundle, String> {
    let bundle = AotBundle::decode(&layer.layer)
        .map_err(|e| format!("the precompiled layer is unreadable: {e}"))?;
    let digest = layer.config.digest().to_string();
    artifact::ModuleBytes::new(bundle.module.clone())
        .verify(&digest)
        .map_err(|e| format!("the precompiled layer does not hold the image's module: {e}"))?;
    Ok(bundle)
}

impl Sandbox for WasmfnSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> Result<i32> {
        wasmfn_execution::runtime::silence_runtime_log();
        let mut precompiled = None;
        let origin = match ctx.entrypoint().source {
            // A packed artifact of the ConfigMap store is a directory (or its manifest); the
            // execution core unpacks and verifies it when it reads the module.
            Source::File(path) if artifact::is_packed(&path) => ModuleOrigin::Packed(path),
            Source::File(path) => ModuleOrigin::File(path),
            Source::Oci([layer]) if layer.precompiled => match unbundle(layer) {
                Ok(bundle) => {
                    let library = bundle.library_file();
                    precompiled = Some((bundle.metadata, library));
                    ModuleOrigin::Layer(bundle.module)
                }
                Err(message) => return Ok(refuse(Reason::InternalError, message)),
            },
            Source::Oci([layer]) => ModuleOrigin::Layer(layer.layer.clone()),
            Source::Oci(layers) => {
                bail!(
                    "the image has {} Wasm layers; wasmfn runs exactly one module",
                    layers.len()
                )
            }
        };
        let mut run = match container_run(ctx.args(), ctx.envs(), origin) {
            Ok(run) => run,
            // The container's settings are unusable: say so where the pod's status shows it.
            Err(BadSetting(message)) => return Ok(refuse(Reason::BadArguments, message)),
        };
        // A stored script runs under the interpreter the image ships (the wasm-pod image has
        // them with their AOT forms); it is staged in the pod's /tmp (an emptyDir) for the run.
        let resolved = match interpreter::resolve_stored_script(
            run.request,
            Path::new(interpreter::DEFAULT_INTERPRETERS_DIR),
            Path::new(SCRATCH_DIR),
        ) {
            Ok(resolved) => resolved,
            Err(e) => {
                return Ok(refuse(
                    Reason::InternalError,
                    format!("cannot stage the script in {SCRATCH_DIR}: {e}"),
                ))
            }
        };
        run.request = resolved.request;
        let _staged = resolved.staged;
        // Held open until the run ends: the loader opens the library by its /proc path.
        let mut _library = None;
        if let Some((metadata, library)) = precompiled {
            match library {
                Ok((file, path)) => {
                    run.request.aot = Some(path);
                    run.request.aot_metadata = Some(metadata);
                    _library = Some(file);
                }
                Err(why) => eprintln!("wasmfn shim: running interpreted: {why}"),
            }
        }
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
