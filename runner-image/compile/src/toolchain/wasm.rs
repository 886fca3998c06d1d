//! Prebuilt modules: validated in-process by WasmEdge (the runtime that will run them), never
//! rewritten. A module without `_start` is fine: it is a library (reactor) module.

use wasmfn_execution::{ModuleSource, Reason, RunRequest};

use super::{Build, Built, ToolchainIdentity};
use crate::diagnostics::{Diagnostic, Diagnostics, Severity};
use crate::{Error, Result};

pub(super) fn identity() -> ToolchainIdentity {
    ToolchainIdentity {
        name: "wasmedge-validator".into(),
        version: wasmfn_execution::engine::runtime_info().version,
    }
}

pub(super) fn build(build: &Build<'_>) -> Result<Built> {
    let entry = build.entry_file(&["wasm"], &["module.wasm", "main.wasm"])?;
    let bytes = build.source.get(&entry).unwrap_or_default().to_vec();
    build.invocations.set(build.invocations.get() + 1);
    let invalid = |message: String| Error::CompileFailed {
        diagnostics: Diagnostics {
            items: vec![Diagnostic {
                file: entry.clone(),
                line: 0,
                column: 0,
                severity: Severity::Error,
                message,
            }],
            ..Diagnostics::default()
        },
    };
    match wasmfn_execution::prepare(&RunRequest::command(ModuleSource::Bytes(bytes.clone()))) {
        Ok(_) => {}
        Err(rejection) if rejection.reason == Reason::MissingExport => {}
        // A module carrying native code (a `wasmedge` section) is the author's to fix too.
        Err(rejection)
            if matches!(
                rejection.reason,
                Reason::InvalidModule | Reason::NativeCodeSection
            ) =>
        {
            return Err(invalid(rejection.message))
        }
        Err(rejection) => {
            return Err(Error::Internal(format!(
                "validating the module: {}",
                rejection.message
            )))
        }
    }
    let output = build.module_path();
    std::fs::write(&output, &bytes).map_err(|e| Error::io(&output, e))?;
    Ok(Built {
        artifact: output,
        warnings: Diagnostics::default(),
    })
}
