//! `wasmfn compile`: the compile Job's entry point, a thin front end over `wasmfn_compile`.
//!
//! Success: the artifact directory holds `module.wasm` (or the checked script), the AOT form
//! when asked, `manifest.json` and `diagnostics.txt` (warnings); stdout gets the manifest as one
//! JSON line (and, with `--log-artifact`, the artifact itself in base64 for a reader of the
//! container log); the termination message gets the manifest. Exit 0.
//!
//! Failure: stderr gets the diagnostics (`file:line:col: severity: message` lines), the
//! termination message a `CompileFailure` document with a fixed `reason` and `userError`
//! telling the user's mistakes (exit 1; 124 for the time limit) from the builder's own
//! failures (exit 125).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use clap::Args;
use serde::Serialize;
use wasmfn_compile::{
    BuildOptions, Cache, CacheConfig, CompileLimits, CompileRequest, Compiler, Error, Language,
    ModuleKind, SourceInput,
};

use crate::exit;
use crate::options::{optimization_level, parse_duration, parse_size, LanguageArg, OptLevel};
use crate::output::{write_document, Fallback, TERMINATION_LOG};
use crate::progress::{self, Progress};
/// Kubernetes keeps at most this much of a termination message.
const TERMINATION_MESSAGE_BYTES: usize = 4096;

#[derive(Debug, Args)]
pub(crate) struct CompileArgs {
    /// The source's language.
    #[arg(long, short = 'l', value_enum, ignore_case = true)]
    language: LanguageArg,
    /// Source file or directory (a directory with Cargo.toml is a Cargo project).
    #[arg(conflicts_with = "code")]
    source: Option<PathBuf>,
    /// Inline source text instead of a path.
    #[arg(long)]
    code: Option<String>,
    /// File name for --code (default: main.<ext> for the language).
    #[arg(long, requires = "code")]
    file_name: Option<String>,
    /// Artifact directory to write.
    #[arg(long, short = 'o', default_value = "artifact")]
    out: PathBuf,
    /// Optimisation (also 0, 2, s, z).
    #[arg(long, value_enum, default_value_t = OptLevel::Speed)]
    opt_level: OptLevel,
    /// Also produce the WasmEdge AOT form (module.wasm.aot.so) for this machine.
    #[arg(long)]
    aot: bool,
    /// Build a library (reactor) module exporting functions instead of a WASI command
    /// (AssemblyScript).
    #[arg(long)]
    library: bool,
    /// Let toolchains reach the network (Cargo/Go dependencies). Off by default.
    #[arg(long)]
    allow_network: bool,
    /// Wall-clock limit for the compile (e.g. 300s); the toolchain's process group is killed.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Memory limit per toolchain process (e.g. 4Gi).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Largest source accepted (default 1Mi).
    #[arg(long, value_parser = parse_size)]
    max_source: Option<u64>,
    /// Largest artifact accepted (default 64Mi).
    #[arg(long, value_parser = parse_size)]
    max_module: Option<u64>,
    /// Do not use the cache (same as WASM_CACHE_ENABLED=false).
    #[arg(long)]
    no_cache: bool,
    /// Cache directory (default WASM_CACHE_DIR, else ~/.cache/wasmfn/compile).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Where to write the manifest or failure document ("-" for none). The default is written
    /// only when it exists (inside a pod); nothing is ever created in /dev.
    #[arg(long, default_value = TERMINATION_LOG)]
    termination_log: String,
    /// Print the artifact to stdout in base64 between marker lines, for readers of the log.
    #[arg(long)]
    log_artifact: bool,
}

/// The termination message of a failed compile.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CompileFailure {
    api_version: &'static str,
    kind: &'static str,
    /// Fixed, low-cardinality reason (`CompileError`, `TimedOut`, `SourceTooLarge`, …).
    reason: &'static str,
    /// True when the function's source is at fault; false for the builder's own failures.
    user_error: bool,
    /// The error, first line.
    message: String,
    /// `file:line:col: severity: message` lines.
    diagnostics: Vec<String>,
}

/// `wasmfn compile`: returns the exit code.
pub(crate) fn compile(args: CompileArgs) -> Result<i32> {
    let language: Language = args.language.0;
    let source = match (&args.source, &args.code) {
        (_, Some(code)) => SourceInput::Inline {
            file_name: args
                .file_name
                .clone()
                .unwrap_or_else(|| language.default_file_name().to_owned()),
            content: code.clone().into_bytes(),
        },
        (Some(path), None) if path.is_dir() => SourceInput::Directory(path.clone()),
        (Some(path), None) => SourceInput::File(path.clone()),
        (None, None) => bail!("give a source file or directory, or --code"),
    };
    let optimization = optimization_level(args.opt_level.optimization());
    let defaults = CompileLimits::default();
    let limits = CompileLimits {
        wall_time: args.timeout.unwrap_or(defaults.wall_time),
        memory_bytes: args.memory.unwrap_or(defaults.memory_bytes),
        source_bytes: args.max_source.unwrap_or(defaults.source_bytes),
        module_bytes: args.max_module.unwrap_or(defaults.module_bytes),
        ..defaults
    };
    let request = CompileRequest {
        language,
        source,
        options: BuildOptions {
            optimization,
            aot: args.aot,
            allow_network: args.allow_network,
            module_kind: if args.library {
                ModuleKind::Library
            } else {
                ModuleKind::Command
            },
        },
        limits,
        output_dir: args.out.clone(),
    };
    let mut compiler = Compiler::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.no_cache || args.cache_dir.is_some() {
        let mut config: CacheConfig = compiler.cache.config().clone();
        config.enabled &= !args.no_cache;
        if let Some(dir) = &args.cache_dir {
            config.dir = dir.clone();
        }
        compiler.cache = Cache::new(config);
    }

    let progress = Progress::for_stderr();
    if progress.enabled() {
        let file = match &request.source {
            SourceInput::Inline { file_name, .. } => file_name.clone(),
            SourceInput::File(path) | SourceInput::Directory(path) => path.display().to_string(),
        };
        progress.phase(&progress::compile_phase(
            wasmfn_compile::language::artifact_kind(language)
                == wasmfn_compile::ArtifactKind::Script,
            &file,
            &[],
        ));
    }
    let started = std::time::Instant::now();
    match compiler.compile_reporting(&request, &|step| progress.step(step)) {
        Ok(outcome) => {
            progress.phase(&progress::compiled_phase(
                outcome.manifest.cache == wasmfn_compile::CacheOutcome::Hit,
                started.elapsed().as_secs_f64(),
                outcome.manifest.artifact.size,
            ));
            if !outcome.warnings.is_empty() {
                eprint!("{}", outcome.warnings.render());
            }
            let json = outcome.manifest.to_json();
            println!("{json}");
            if args.log_artifact {
                let bytes = std::fs::read(&outcome.artifact)
                    .with_context(|| format!("reading {}", outcome.artifact.display()))?;
                print_artifact(
                    &outcome.manifest.artifact.file,
                    &outcome.manifest.artifact.digest,
                    &bytes,
                );
            }
            write_termination_log(
                &args.termination_log,
                &termination_manifest(&json, &outcome),
            )?;
            Ok(0)
        }
        Err(error) => {
            let failure = failure_document(&error);
            eprintln!("wasmfn compile: {error}");
            write_termination_log(&args.termination_log, &bounded_failure_json(failure))?;
            Ok(exit_code(&error))
        }
    }
}

/// The exit code of a failed compile (`wasmfn compile` and `wasmfn run` alike).
pub(crate) fn exit_code(error: &Error) -> i32 {
    match error {
        Error::TimedOut { .. } => exit::TIMED_OUT,
        error if error.is_user_error() => exit::FAILED,
        _ => exit::INTERNAL,
    }
}

fn failure_document(error: &Error) -> CompileFailure {
    let message = error.to_string();
    CompileFailure {
        api_version: wasmfn_compile::manifest::API_VERSION,
        kind: "CompileFailure",
        reason: error.reason(),
        user_error: error.is_user_error(),
        message: match error.diagnostics().and_then(|d| d.first_error()) {
            Some(first) => format!("compile failed: {}", first.render()),
            None => message.lines().next().unwrap_or_default().to_owned(),
        },
        diagnostics: error
            .diagnostics()
            .map(|d| d.render().lines().map(str::to_owned).collect())
            .unwrap_or_default(),
    }
}

/// The failure as JSON within the termination-message bound: diagnostics are dropped from the
/// end until it fits.
fn bounded_failure_json(mut failure: CompileFailure) -> String {
    loop {
        let json = serde_json::to_string(&failure).unwrap_or_default();
        if json.len() <= TERMINATION_MESSAGE_BYTES || failure.diagnostics.is_empty() {
            return json;
        }
        failure.diagnostics.pop();
    }
}

/// The manifest, or (for an unusually long toolchain list) its essentials, within the bound.
fn termination_manifest(json: &str, outcome: &wasmfn_compile::CompileOutcome) -> String {
    if json.len() <= TERMINATION_MESSAGE_BYTES {
        return json.to_owned();
    }
    serde_json::json!({
        "apiVersion": outcome.manifest.api_version,
        "kind": outcome.manifest.kind,
        "language": outcome.manifest.language,
        "artifact": outcome.manifest.artifact,
        "cacheKey": outcome.manifest.cache_key,
        "cache": outcome.manifest.cache,
    })
    .to_string()
}

/// `-----BEGIN WASMFN ARTIFACT module.wasm sha256:… gzip-----`, the gzipped bytes in base64 in
/// 76-column lines, end line. The digest is the uncompressed module's. Compressed, because the
/// kubelet rotates a container log past `containerLogMaxSize` (10 MiB by default) and the API
/// then serves only the newest file: a 5.7 MiB Go module was 11.7 MiB of log in base64 and lost
/// its manifest line to a rotation; gzipped (1.5 MB) it is about 3 MiB of log.
fn print_artifact(name: &str, digest: &str, bytes: &[u8]) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(wasmfn_artifact::gzip(bytes));
    println!("-----BEGIN WASMFN ARTIFACT {name} {digest} gzip-----");
    for chunk in encoded.as_bytes().chunks(76) {
        println!("{}", String::from_utf8_lossy(chunk));
    }
    println!("-----END WASMFN ARTIFACT-----");
}

/// Writes the document; outside Kubernetes the missing termination log is left alone.
fn write_termination_log(target: &str, document: &str) -> Result<()> {
    if target == "-" {
        return Ok(());
    }
    write_document(target, document, Fallback::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_documents_fit_the_termination_message() {
        let mut output = String::new();
        for line in 1..=200 {
            output.push_str(&format!("main.c:{line}:1: error: {}\n", "x".repeat(300)));
        }
        let error = Error::CompileFailed {
            diagnostics: wasmfn_compile::Diagnostics::parse(&output, "/w"),
        };
        let json = bounded_failure_json(failure_document(&error));
        assert!(json.len() <= TERMINATION_MESSAGE_BYTES, "{}", json.len());
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["reason"], "CompileError");
        assert_eq!(value["userError"], true);
        assert!(value["diagnostics"][0]
            .as_str()
            .expect("first diagnostic")
            .starts_with("main.c:1:1: error: "));
    }

    #[test]
    fn internal_failures_are_marked() {
        let error = Error::Internal("disk full".into());
        let value: serde_json::Value =
            serde_json::from_str(&bounded_failure_json(failure_document(&error))).expect("json");
        assert_eq!(value["userError"], false);
        assert_eq!(value["reason"], "InternalError");
        assert_eq!(value["message"], "internal error: disk full");
    }
}
