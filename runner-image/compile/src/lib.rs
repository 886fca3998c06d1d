//! wasmfn's compile pipeline: a function's source and language in, a checked WebAssembly
//! artifact out — `module.wasm` (or the checked script for Python/JavaScript), optionally its
//! WasmEdge AOT form, a [`manifest::Manifest`] and the diagnostics — with a content-addressed
//! cache and limits. `wasmfn compile` is a thin front end over [`compile`].
//!
//! Modules, one concern each: [`language`], [`source`] (reading and normalising the tree),
//! [`options`] (build options), [`cache_key`], [`cache`] (local cache with TTL and size bound),
//! [`toolchain`] (identities and one driver per language), [`limits`] (time, memory, sizes,
//! process-group kill), [`diagnostics`] (compiler output to `file:line:col: message`) and
//! [`manifest`].

pub mod cache;
pub mod cache_key;
pub mod diagnostics;
pub mod language;
pub mod limits;
pub mod manifest;
pub mod options;
pub mod source;
pub mod toolchain;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use cache::{Cache, CacheConfig};
pub use cache_key::CacheKey;
pub use diagnostics::{Diagnostic, Diagnostics, Severity};
pub use language::{ArtifactKind, Language};
pub use limits::CompileLimits;
pub use manifest::{CacheOutcome, Manifest};
pub use options::{BuildOptions, ModuleKind, OptimizationLevel};
pub use source::{SourceInput, SourceTree};
pub use toolchain::{IdentityMemo, ToolchainIdentity, Toolchains};

/// File name of the compiled module in an artifact directory.
pub const MODULE_FILE: &str = "module.wasm";
/// File name of the AOT form.
pub const AOT_FILE: &str = "module.wasm.aot.so";
/// File name of the manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the rendered diagnostics (warnings of a successful compile).
pub const DIAGNOSTICS_FILE: &str = "diagnostics.txt";

/// Everything that can go wrong. [`Error::is_user_error`] separates problems with the user's
/// function (fix the source) from problems of the builder itself (fix the platform).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The language is not one we compile.
    #[error("unsupported language {0:?} (supported: rust, c, cpp, go, assemblyscript, wat, wasm, python, javascript)")]
    UnsupportedLanguage(String),
    /// The source cannot be used (missing, empty, no entry file, unsafe paths …).
    #[error("invalid source: {0}")]
    InvalidSource(String),
    /// The source exceeds the size limit.
    #[error("source is {size} bytes, more than the limit of {limit} bytes")]
    SourceTooLarge {
        /// Bytes seen (at least).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The compiler rejected the source.
    #[error("compile failed:\n{}", diagnostics.render().trim_end())]
    CompileFailed {
        /// What the compiler said.
        diagnostics: Diagnostics,
    },
    /// The toolchain died from a signal (typically the memory limit).
    #[error("{program} was killed by signal {signal} (memory limit?)\n{}", diagnostics.render().trim_end())]
    ToolchainCrashed {
        /// The program.
        program: String,
        /// The signal.
        signal: i32,
        /// What it printed before.
        diagnostics: Diagnostics,
    },
    /// The compile took longer than its wall-time limit; the toolchain's process group was
    /// killed.
    #[error("compile exceeded its time limit of {}s and was stopped", limit.as_secs_f64())]
    TimedOut {
        /// The limit.
        limit: Duration,
    },
    /// The artifact is larger than allowed.
    #[error("the artifact is {size} bytes, more than the limit of {limit} bytes")]
    ArtifactTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A toolchain binary or file is missing: the builder is incomplete.
    #[error("toolchain {program} is unavailable: {source} (run `make setup`, or check the builder image)")]
    ToolchainMissing {
        /// What was looked for.
        program: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A setting (environment knob, option) is invalid.
    #[error("configuration: {0}")]
    Configuration(String),
    /// A file operation of the pipeline failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Anything else that is the builder's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// True when the user's function is at fault (bad source, compile error, limits).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::UnsupportedLanguage(_)
                | Error::InvalidSource(_)
                | Error::SourceTooLarge { .. }
                | Error::CompileFailed { .. }
                | Error::ToolchainCrashed { .. }
                | Error::TimedOut { .. }
                | Error::ArtifactTooLarge { .. }
        )
    }

    /// A fixed, low-cardinality name (metrics labels, the error document's `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::UnsupportedLanguage(_) => "UnsupportedLanguage",
            Error::InvalidSource(_) => "InvalidSource",
            Error::SourceTooLarge { .. } => "SourceTooLarge",
            Error::CompileFailed { .. } => "CompileError",
            Error::ToolchainCrashed { .. } => "ToolchainCrashed",
            Error::TimedOut { .. } => "TimedOut",
            Error::ArtifactTooLarge { .. } => "ArtifactTooLarge",
            Error::ToolchainMissing { .. } => "ToolchainMissing",
            Error::Configuration(_) => "Configuration",
            Error::Io { .. } => "InternalError",
            Error::Internal(_) => "InternalError",
        }
    }

    /// The diagnostics that come with the error, if any.
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            Error::CompileFailed { diagnostics } | Error::ToolchainCrashed { diagnostics, .. } => {
                Some(diagnostics)
            }
            _ => None,
        }
    }
}

/// One compile.
#[derive(Debug, Clone)]
pub struct CompileRequest {
    /// The language.
    pub language: Language,
    /// The source.
    pub source: SourceInput,
    /// Build options.
    pub options: BuildOptions,
    /// Limits.
    pub limits: CompileLimits,
    /// The artifact directory to fill (created when missing).
    pub output_dir: PathBuf,
}

/// A successful compile.
#[derive(Debug, Clone)]
pub struct CompileOutcome {
    /// The manifest (also written to `output_dir/manifest.json`).
    pub manifest: Manifest,
    /// Warnings (also written to `output_dir/diagnostics.txt` when there are any).
    pub warnings: Diagnostics,
    /// The artifact file.
    pub artifact: PathBuf,
}

/// A step of a compile, reported as it starts (`wasmfn`'s progress lines on a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase<'a> {
    /// A toolchain program starts (`rustc`, `cargo`, `wasm-opt`, `go`, `clang`, `asc`, …); its
    /// file name.
    Tool(&'a str),
    /// WasmEdge's AOT compiler starts on the built module of this many bytes.
    Aot(u64),
}

/// The pipeline's collaborators: where the toolchains are, the cache, and the version memo.
#[derive(Debug)]
pub struct Compiler {
    /// Toolchain locations.
    pub toolchains: Toolchains,
    /// The cache.
    pub cache: Cache,
    /// Remembered toolchain versions.
    pub identities: IdentityMemo,
    /// Where build directories are created (default: the system temporary directory).
    pub work_root: PathBuf,
}

impl Compiler {
    /// Toolchains and cache from the environment; versions remembered inside the cache
    /// directory.
    pub fn from_env() -> Result<Compiler> {
        let cache = Cache::new(CacheConfig::from_env()?);
        let mut toolchains = Toolchains::from_env();
        if toolchains.go_cache.is_none() {
            toolchains.go_cache = Some(cache.config().dir.join("go-build"));
        }
        Ok(Compiler {
            identities: IdentityMemo::persistent(cache.identity_dir()),
            toolchains,
            cache,
            work_root: std::env::var_os("WASMFN_BUILD_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        })
    }

    /// Compiles (or serves from the cache) one request.
    pub fn compile(&self, request: &CompileRequest) -> Result<CompileOutcome> {
        self.compile_reporting(request, &|_| {})
    }

    /// [`Compiler::compile`], telling `report` each [`Phase`] as it starts. A cache hit has none.
    pub fn compile_reporting(
        &self,
        request: &CompileRequest,
        report: &dyn Fn(Phase<'_>),
    ) -> Result<CompileOutcome> {
        let started = Instant::now();
        let language = request.language;
        let source = SourceTree::read(&request.source, language, request.limits.source_bytes)?;
        let toolchain = self
            .toolchains
            .identity(language, &source, &self.identities)?;
        let key = CacheKey::compute(language, &toolchain, &request.options, &source);
        std::fs::create_dir_all(&request.output_dir)
            .map_err(|e| Error::io(&request.output_dir, e))?;

        if let Some(entry) = self.cache.lookup(&key) {
            if let Ok(outcome) = serve_from_cache(&entry.dir, &request.output_dir, started) {
                return Ok(outcome);
            }
            // A damaged entry is simply rebuilt (and overwritten below).
        }

        let work = tempfile::Builder::new()
            .prefix("wasmfn-build-")
            .tempdir_in(&self.work_root)
            .map_err(|e| Error::io(&self.work_root, e))?;
        let source_dir = work.path().join("src");
        let output_dir = work.path().join("out");
        let scratch_dir = work.path().join("scratch");
        for dir in [&source_dir, &output_dir, &scratch_dir] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        source.write_to(&source_dir)?;
        let build = toolchain::Build {
            toolchains: &self.toolchains,
            source: &source,
            source_dir,
            output_dir,
            scratch_dir,
            options: request.options,
            limits: request.limits,
            deadline: started + request.limits.wall_time,
            invocations: Cell::new(0),
            report,
        };
        let compile_started = Instant::now();
        let built = toolchain::build(language, &build)?;
        let artifact_bytes =
            std::fs::read(&built.artifact).map_err(|e| Error::io(&built.artifact, e))?;
        if artifact_bytes.len() as u64 > request.limits.module_bytes {
            return Err(Error::ArtifactTooLarge {
                size: artifact_bytes.len() as u64,
                limit: request.limits.module_bytes,
            });
        }
        let artifact_name = file_name(&built.artifact);
        let mut files: Vec<(String, PathBuf)> =
            vec![(artifact_name.clone(), built.artifact.clone())];
        let mut aot = None;
        if request.options.aot && language::artifact_kind(language) != ArtifactKind::Script {
            let aot_path = build.output_dir.join(AOT_FILE);
            build.invocations.set(build.invocations.get() + 1);
            report(Phase::Aot(artifact_bytes.len() as u64));
            let module = wasmfn_execution::artifact::ModuleBytes::new(artifact_bytes.clone());
            wasmfn_execution::aot::compile(&module, &aot_path)
                .map_err(|e| Error::Internal(format!("AOT compile: {e}")))?;
            let aot_bytes = std::fs::read(&aot_path).map_err(|e| Error::io(&aot_path, e))?;
            aot = Some(artifact_file(
                AOT_FILE,
                &aot_bytes,
                "application/vnd.wasmedge.aot",
            ));
            files.push((AOT_FILE.to_owned(), aot_path.clone()));
            let metadata = wasmfn_execution::aot::metadata_path(&aot_path);
            files.push((file_name(&metadata), metadata));
        }
        let compile_ms = compile_started.elapsed().as_secs_f64() * 1000.0;

        let media_type = match language {
            Language::Python => wasmfn_execution::interpreter::PYTHON_MEDIA_TYPE,
            Language::JavaScript => wasmfn_execution::interpreter::JAVASCRIPT_MEDIA_TYPE,
            _ => "application/wasm",
        };
        let mut manifest = Manifest {
            api_version: manifest::API_VERSION.to_owned(),
            kind: manifest::KIND.to_owned(),
            language: language.as_str().to_owned(),
            artifact: artifact_file(&artifact_name, &artifact_bytes, media_type),
            aot,
            cache_key: key.as_str().to_owned(),
            cache: if self.cache.config().enabled {
                CacheOutcome::Miss
            } else {
                CacheOutcome::Disabled
            },
            toolchain,
            options: request.options,
            source_files: source.len(),
            source_bytes: source.total_bytes(),
            toolchain_invocations: build.invocations.get(),
            warnings: built.warnings.items.len(),
            timings: manifest::CompileTimings {
                compile_ms,
                total_ms: 0.0,
            },
        };
        let manifest_path = build.output_dir.join(MANIFEST_FILE);
        write_file(&manifest_path, manifest.to_json_pretty().as_bytes())?;
        files.push((MANIFEST_FILE.to_owned(), manifest_path.clone()));
        if !built.warnings.is_empty() {
            let path = build.output_dir.join(DIAGNOSTICS_FILE);
            write_file(&path, built.warnings.render().as_bytes())?;
            files.push((DIAGNOSTICS_FILE.to_owned(), path));
        }
        let borrowed: Vec<(&str, &Path)> = files
            .iter()
            .map(|(name, path)| (name.as_str(), path.as_path()))
            .collect();
        // A cache that cannot be written (full disk, read-only) costs the next compile, not
        // this one.
        let _ = self.cache.store(&key, &borrowed);

        for (name, path) in &files {
            let target = request.output_dir.join(name);
            std::fs::copy(path, &target).map_err(|e| Error::io(&target, e))?;
        }
        manifest.timings.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        let final_manifest = request.output_dir.join(MANIFEST_FILE);
        write_file(&final_manifest, manifest.to_json_pretty().as_bytes())?;
        Ok(CompileOutcome {
            artifact: request.output_dir.join(&artifact_name),
            manifest,
            warnings: built.warnings,
        })
    }
}

/// Copies a cache entry into the output directory with a manifest that says "hit".
fn serve_from_cache(entry: &Path, output_dir: &Path, started: Instant) -> Result<CompileOutcome> {
    let manifest_text =
        std::fs::read_to_string(entry.join(MANIFEST_FILE)).map_err(|e| Error::io(entry, e))?;
    let mut manifest: Manifest = serde_json::from_str(&manifest_text)
        .map_err(|e| Error::Internal(format!("cache entry manifest: {e}")))?;
    let artifact_source = entry.join(&manifest.artifact.file);
    let bytes = std::fs::read(&artifact_source).map_err(|e| Error::io(&artifact_source, e))?;
    if digest(&bytes) != manifest.artifact.digest {
        return Err(Error::Internal(
            "cache entry does not match its digest".into(),
        ));
    }
    let read = std::fs::read_dir(entry).map_err(|e| Error::io(entry, e))?;
    for file in read.flatten() {
        let name = file.file_name();
        if name == MANIFEST_FILE {
            continue;
        }
        let target = output_dir.join(&name);
        std::fs::copy(file.path(), &target).map_err(|e| Error::io(&target, e))?;
    }
    let warnings = std::fs::read_to_string(entry.join(DIAGNOSTICS_FILE))
        .map(|text| Diagnostics::parse(&text, ""))
        .unwrap_or_default();
    manifest.cache = CacheOutcome::Hit;
    manifest.toolchain_invocations = 0;
    manifest.timings.total_ms = started.elapsed().as_secs_f64() * 1000.0;
    write_file(
        &output_dir.join(MANIFEST_FILE),
        manifest.to_json_pretty().as_bytes(),
    )?;
    Ok(CompileOutcome {
        artifact: output_dir.join(&manifest.artifact.file),
        manifest,
        warnings,
    })
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn artifact_file(name: &str, bytes: &[u8], media_type: &str) -> manifest::ArtifactFile {
    manifest::ArtifactFile {
        file: name.to_owned(),
        digest: digest(bytes),
        size: bytes.len() as u64,
        media_type: media_type.to_owned(),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_errors_and_internal_failures_are_told_apart() {
        let user = [
            Error::UnsupportedLanguage("cobol".into()),
            Error::InvalidSource("x".into()),
            Error::SourceTooLarge { size: 2, limit: 1 },
            Error::CompileFailed {
                diagnostics: Diagnostics::default(),
            },
            Error::TimedOut {
                limit: Duration::from_secs(1),
            },
            Error::ArtifactTooLarge { size: 2, limit: 1 },
        ];
        for error in &user {
            assert!(error.is_user_error(), "{error:?}");
        }
        let internal = [
            Error::Internal("x".into()),
            Error::Configuration("x".into()),
            Error::ToolchainMissing {
                program: "rustc".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
            Error::io(
                Path::new("/x"),
                std::io::Error::from(std::io::ErrorKind::Other),
            ),
        ];
        for error in &internal {
            assert!(!error.is_user_error(), "{error:?}");
            assert!(
                ["InternalError", "ToolchainMissing", "Configuration"].contains(&error.reason()),
                "{error:?}"
            );
        }
    }

    #[test]
    fn compile_errors_render_their_diagnostics() {
        let error = Error::CompileFailed {
            diagnostics: Diagnostics::parse("main.c:3:1: error: boom\n", "/w"),
        };
        assert_eq!(
            error.to_string(),
            "compile failed:\nmain.c:3:1: error: boom"
        );
        assert_eq!(error.reason(), "CompileError");
        assert_eq!(error.diagnostics().map(|d| d.items.len()), Some(1));
    }
}
