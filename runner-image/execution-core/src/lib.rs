//! wasmfn's execution core: runs one WebAssembly function under WasmEdge with limits and
//! reports the result in one document.
//!
//! Front ends (`wasmfn exec`, the containerd shim, later the warm agent) build a
//! [`RunRequest`], call [`execute`] (or [`prepare`] once and [`execute_prepared`] per run), and
//! publish [`Execution::document`] — the [`ResultDocument`] — however their environment wants.
//!
//! Modules, one concern each: [`request`] (inputs and limits), [`artifact`] (module bytes and
//! digest), [`aot`] (ahead-of-time forms bound to their module), [`engine`] (the WasmEdge
//! embedding), [`isolation`] (fork-per-run or in-process, stdio capture, hard timeouts),
//! [`capture`] (bounded stream capture), [`arguments`] (typed reactor arguments),
//! [`interpreter`] (Python/JavaScript scripts run by interpreter modules), [`result`] (the
//! result document), and for the warm agent [`sandbox`] (confining a run child) and
//! [`module_cache`] (verified, AOT-compiled modules on disk by digest).

pub mod aot;
pub mod arguments;
pub mod artifact;
pub mod capture;
mod diagnostics;
pub mod engine;
pub mod interpreter;
pub mod isolation;
pub mod module_cache;
pub mod request;
/// The result document (its own crate, so that readers such as the operator need no WasmEdge).
pub use wasmfn_result as result;
pub mod runtime;
pub mod sandbox;

use std::path::Path;

pub use capture::{DiscardSink, ForwardSink, OutputSink, Stream};
pub use engine::{prepare, PreparedModule};
pub use isolation::{execute, execute_prepared, Execution, Isolation};
pub use request::{Entry, Limits, ModuleSource, Preopen, RunRequest, StdinSource};
pub use result::{Reason, ResultDocument};

/// Errors of the core's own operations (reading artifacts, compiling AOT forms). Problems with
/// a run never surface as errors: they end up in the result document with a reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The module is unusable.
    #[error("{0}")]
    InvalidModule(String),
    /// A packed artifact (ConfigMap store) could not be read or failed verification.
    #[error("{path}: {source}")]
    Artifact {
        /// The artifact's directory or manifest.
        path: String,
        /// What is wrong with it (which part, expected vs actual digest …).
        #[source]
        source: wasmfn_artifact::Error,
    },
    /// WasmEdge refused an operation.
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
