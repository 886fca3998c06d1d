//! The toolchains: where they live, who they are (the identity that goes into cache keys), and
//! one driver per language that turns a written source tree into an artifact.
//!
//! Every toolchain process runs through [`crate::limits::run_limited`] with a cleared
//! environment: `PATH=/usr/bin:/bin`, a private `HOME` and `TMPDIR`, and — unless the build
//! options allow the network — proxy variables pointing at a closed local port plus each
//! toolchain's own offline switch (`CARGO_NET_OFFLINE`, `GOPROXY=off`, `npm_config_offline`).
//! That stops the toolchains' own downloads; it is not a sandbox: a build script or macro can
//! still open sockets itself. Real isolation comes from where compiles run: the compile Job's
//! pod has no network route (and the chart's NetworkPolicy denies egress).

mod assemblyscript;
mod clang;
mod go;
mod identity;
mod rust;
mod script;
mod wasm;
mod wat;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use identity::IdentityMemo;

use crate::diagnostics::Diagnostics;
use crate::language::Language;
use crate::limits::{run_limited, CompileLimits, ProcessOutcome};
use crate::options::BuildOptions;
use crate::source::SourceTree;
use crate::{Error, Result};

/// One tool and its exact version (`rustc 1.85.1 (4eb161250 2025-03-15)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolchainIdentity {
    /// The tool.
    pub name: String,
    /// Its version as the tool reports it.
    pub version: String,
}

/// Where the toolchains are. Defaults follow Debian's packages and the builder image's layout;
/// each can be overridden with an environment variable (tests use that to wrap a tool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchains {
    /// `rustc` with the wasm32-wasip1 standard library (`WASMFN_RUSTC`, default Debian's).
    pub rustc: PathBuf,
    /// `cargo` (`WASMFN_CARGO`).
    pub cargo: PathBuf,
    /// The wasm linker rustc uses (`WASMFN_WASM_LD`, default `wasm-ld-19`).
    pub wasm_linker: PathBuf,
    /// `clang` for C (`WASMFN_CLANG`, default `clang-19`).
    pub clang: PathBuf,
    /// `clang++` for C++ (`WASMFN_CLANGXX`, default `clang++-19`).
    pub clangxx: PathBuf,
    /// The WASI sysroot (`WASMFN_WASI_SYSROOT`, default `/usr`, where Debian's wasi-libc is).
    pub wasi_sysroot: PathBuf,
    /// `go` 1.21+ (`WASMFN_GO`, default `/usr/lib/go-1.24/bin/go`).
    pub go: PathBuf,
    /// `node` (`WASMFN_NODE`).
    pub node: PathBuf,
    /// Directory holding `node_modules/assemblyscript` and `node_modules/@assemblyscript/wasi-shim`
    /// (`WASMFN_ASSEMBLYSCRIPT`; default the builder image's `/usr/lib/wasmfn/assemblyscript`,
    /// else `make setup`'s `$WASMFN_CACHE/assemblyscript`).
    pub assemblyscript: PathBuf,
    /// `wat2wasm` (`WASMFN_WAT2WASM`).
    pub wat2wasm: PathBuf,
    /// The interpreter modules for Python and JavaScript (`WASMFN_INTERPRETERS`, see
    /// `wasmfn_execution::interpreter`).
    pub interpreters: PathBuf,
    /// Go's build cache (`WASMFN_GO_CACHE`); keeps the standard library compiled between
    /// compiles. Default: `go-build` under the compile cache directory.
    pub go_cache: Option<PathBuf>,
    /// A prebuilt Go build cache copied into an empty [`Toolchains::go_cache`] before the first
    /// Go compile (`WASMFN_GO_CACHE_SEED`; the builder image ships one with the standard
    /// library compiled for wasip1, which saves ~10 s per cold compile Job).
    pub go_cache_seed: Option<PathBuf>,
}

/// Where the builder image installs AssemblyScript.
pub const IMAGE_ASSEMBLYSCRIPT_DIR: &str = "/usr/lib/wasmfn/assemblyscript";

impl Toolchains {
    /// The defaults, overridden by the environment.
    pub fn from_env() -> Toolchains {
        let var = |name: &str, default: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        let assemblyscript = std::env::var_os("WASMFN_ASSEMBLYSCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let image = PathBuf::from(IMAGE_ASSEMBLYSCRIPT_DIR);
                if image.is_dir() {
                    return image;
                }
                setup_cache_dir().join("assemblyscript")
            });
        let interpreters = std::env::var_os("WASMFN_INTERPRETERS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let image = PathBuf::from(wasmfn_execution::interpreter::DEFAULT_INTERPRETERS_DIR);
                if image.is_dir() {
                    return image;
                }
                setup_cache_dir().join("interpreters")
            });
        Toolchains {
            rustc: var("WASMFN_RUSTC", "/usr/bin/rustc"),
            cargo: var("WASMFN_CARGO", "/usr/bin/cargo"),
            wasm_linker: var("WASMFN_WASM_LD", "/usr/bin/wasm-ld-19"),
            clang: var("WASMFN_CLANG", "/usr/bin/clang-19"),
            clangxx: var("WASMFN_CLANGXX", "/usr/bin/clang++-19"),
            wasi_sysroot: var("WASMFN_WASI_SYSROOT", "/usr"),
            go: var("WASMFN_GO", "/usr/lib/go-1.24/bin/go"),
            node: var("WASMFN_NODE", "/usr/bin/node"),
            assemblyscript,
            wat2wasm: var("WASMFN_WAT2WASM", "/usr/bin/wat2wasm"),
            interpreters,
            go_cache: std::env::var_os("WASMFN_GO_CACHE").map(PathBuf::from),
            go_cache_seed: std::env::var_os("WASMFN_GO_CACHE_SEED").map(PathBuf::from),
        }
    }

    /// The identity of every tool that builds `language` (for cache keys and manifests).
    /// Versions are asked once per tool binary and remembered in `memo` (keyed by the binary's
    /// path, size, modification time and inode), so a cache hit starts no process.
    pub fn identity(
        &self,
        language: Language,
        source: &SourceTree,
        memo: &IdentityMemo,
    ) -> Result<Vec<ToolchainIdentity>> {
        match language {
            Language::Rust => rust::identity(self, source, memo),
            Language::C => Ok(vec![clang::identity(&self.clang, memo)?]),
            Language::Cpp => Ok(vec![clang::identity(&self.clangxx, memo)?]),
            Language::Go => Ok(vec![go::identity(self, memo)?]),
            Language::AssemblyScript | Language::TypeScript => assemblyscript::identity(self, memo),
            Language::Wat => Ok(vec![wat::identity(self, memo)?]),
            Language::Wasm => Ok(vec![wasm::identity()]),
            Language::Python | Language::JavaScript => script::identity(self, language, memo),
        }
    }
}

/// `$WASMFN_CACHE`, else `~/.cache/wasmfn`: where `make setup` installs the npm toolchain and
/// the interpreter modules on a development machine.
pub fn setup_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMFN_CACHE") {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/wasmfn"))
        .unwrap_or_else(|| PathBuf::from("/tmp/wasmfn-cache"))
}

/// What a driver produced.
#[derive(Debug)]
pub(crate) struct Built {
    /// The artifact file (inside the build's output directory).
    pub(crate) artifact: PathBuf,
    /// Warnings the toolchain printed.
    pub(crate) warnings: Diagnostics,
}

/// One compile in progress: the written tree, the output and scratch directories, the limits.
pub(crate) struct Build<'a> {
    pub(crate) toolchains: &'a Toolchains,
    pub(crate) source: &'a SourceTree,
    /// The tree, written out.
    pub(crate) source_dir: PathBuf,
    /// Where the artifact goes.
    pub(crate) output_dir: PathBuf,
    /// Private HOME, TMPDIR, tool caches and captured output.
    pub(crate) scratch_dir: PathBuf,
    pub(crate) options: BuildOptions,
    pub(crate) limits: CompileLimits,
    pub(crate) deadline: Instant,
    /// Toolchain processes (or in-process validations) started so far.
    pub(crate) invocations: Cell<u32>,
    /// Told each toolchain program as it starts.
    pub(crate) report: &'a dyn Fn(crate::Phase<'_>),
}

/// Proxy URL that reaches nothing (the discard port on loopback; connections are refused).
const UNREACHABLE_PROXY: &str = "http://127.0.0.1:9";
const PROXY_VARIABLES: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

impl Build<'_> {
    /// A command for `program` in the source directory with the controlled environment.
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        let home = self.scratch_dir.join("home");
        let tmp = self.scratch_dir.join("tmp");
        let _ = std::fs::create_dir_all(&home);
        let _ = std::fs::create_dir_all(&tmp);
        command
            .current_dir(&self.source_dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home)
            .env("TMPDIR", tmp)
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("NO_COLOR", "1");
        if self.options.allow_network {
            for name in PROXY_VARIABLES.iter().chain(&["no_proxy", "NO_PROXY"]) {
                if let Some(value) = std::env::var_os(name) {
                    command.env(name, value);
                }
            }
        } else {
            for name in PROXY_VARIABLES {
                command.env(name, UNREACHABLE_PROXY);
            }
            command.env("no_proxy", "").env("NO_PROXY", "");
        }
        command
    }

    /// Runs a toolchain command; a non-zero exit is the user's compile error (with the parsed
    /// diagnostics), a signal is a crash (often the memory limit).
    pub(crate) fn run(&self, command: &mut Command) -> Result<ProcessOutcome> {
        self.invocations.set(self.invocations.get() + 1);
        let program = Path::new(command.get_program());
        let name = program.file_name().unwrap_or(program.as_os_str());
        (self.report)(crate::Phase::Tool(&name.to_string_lossy()));
        let outcome = run_limited(command, &self.limits, self.deadline, &self.scratch_dir)?;
        if outcome.status.success() {
            return Ok(outcome);
        }
        let diagnostics = self.diagnostics(&outcome.output);
        match outcome.status.code() {
            Some(_) => Err(Error::CompileFailed { diagnostics }),
            None => Err(Error::ToolchainCrashed {
                program: command.get_program().to_string_lossy().into_owned(),
                signal: std::os::unix::process::ExitStatusExt::signal(&outcome.status)
                    .unwrap_or_default(),
                diagnostics,
            }),
        }
    }

    /// Parses toolchain output against this build's source directory.
    pub(crate) fn diagnostics(&self, output: &str) -> Diagnostics {
        Diagnostics::parse(output, &self.source_dir.to_string_lossy())
    }

    /// The warnings of a successful run.
    pub(crate) fn warnings(&self, outcome: &ProcessOutcome) -> Diagnostics {
        let mut diagnostics = self.diagnostics(&outcome.output);
        // A successful run's unparsed chatter ("Compiling …", "Finished …") is not worth keeping.
        diagnostics.unparsed.clear();
        diagnostics
    }

    /// The one top-level source file with one of `extensions`, preferring `preferred` names
    /// (e.g. `main.c`) when there are several.
    pub(crate) fn entry_file(&self, extensions: &[&str], preferred: &[&str]) -> Result<String> {
        let candidates = self.source.top_level_with_extension(extensions);
        if let Some(found) = preferred.iter().find(|p| candidates.contains(p)) {
            return Ok((*found).to_owned());
        }
        match candidates.as_slice() {
            [single] => Ok((*single).to_owned()),
            [] => Err(Error::InvalidSource(format!(
                "no top-level .{} file in the source",
                extensions.join(" / .")
            ))),
            several => Err(Error::InvalidSource(format!(
                "several candidate entry files ({}); name one of them {}",
                several.join(", "),
                preferred.join(" or ")
            ))),
        }
    }

    /// The module path in the output directory.
    pub(crate) fn module_path(&self) -> PathBuf {
        self.output_dir.join(crate::MODULE_FILE)
    }

    /// Fails with an internal error when a toolchain reported success but wrote nothing.
    pub(crate) fn expect_output(&self, path: &Path) -> Result<()> {
        if path.is_file() {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "the toolchain succeeded but wrote no {}",
                path.display()
            )))
        }
    }
}

/// Dispatches to the language's driver.
pub(crate) fn build(language: Language, build: &Build<'_>) -> Result<Built> {
    match language {
        Language::Rust => rust::build(build),
        Language::C => clang::build(build, false),
        Language::Cpp => clang::build(build, true),
        Language::Go => go::build(build),
        Language::AssemblyScript | Language::TypeScript => assemblyscript::build(build),
        Language::Wat => wat::build(build),
        Language::Wasm => wasm::build(build),
        Language::Python | Language::JavaScript => script::build(build, language),
    }
}
