//! Shared by the compile suites: a compiler over the real toolchains (installed by `make
//! setup`; a missing one fails the test, never skips it), a private cache per test, and running
//! what was compiled through the execution core.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use wasmfn_compile::{
    BuildOptions, Cache, CacheConfig, CompileLimits, CompileOutcome, CompileRequest, Compiler,
    IdentityMemo, Language, Result, SourceInput, Toolchains,
};
use wasmfn_execution::interpreter::{script_request, ScriptLanguage};
use wasmfn_execution::{
    execute, DiscardSink, Execution, Isolation, ModuleSource, RunRequest, StdinSource,
};

/// `runner-image/compile/tests/sources`.
pub fn sources_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sources")
}

/// A test source file.
pub fn source(relative: &str) -> SourceInput {
    SourceInput::File(sources_dir().join(relative))
}

/// A scratch directory under the target directory (kept small; removed with the handle).
pub fn scratch() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root).unwrap();
    tempfile::tempdir_in(root).unwrap()
}

/// A compiler with the real toolchains, a private cache in `cache_dir` and Go's build cache
/// shared between tests (so only the first Go compile builds the standard library).
pub fn compiler(cache_dir: &Path) -> Compiler {
    compiler_with(cache_dir, Toolchains::from_env())
}

/// Like [`compiler`] with the given toolchains.
pub fn compiler_with(cache_dir: &Path, mut toolchains: Toolchains) -> Compiler {
    if toolchains.go_cache.is_none() {
        toolchains.go_cache = Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache"));
    }
    let cache = Cache::new(CacheConfig {
        enabled: true,
        dir: cache_dir.to_path_buf(),
        ttl: std::time::Duration::from_secs(3600),
        max_bytes: 1 << 30,
    });
    Compiler {
        toolchains,
        identities: IdentityMemo::persistent(cache.identity_dir()),
        cache,
        work_root: std::env::temp_dir(),
    }
}

/// A request with default options and limits, writing to `output_dir`.
pub fn request(language: Language, source: SourceInput, output_dir: &Path) -> CompileRequest {
    CompileRequest {
        language,
        source,
        options: BuildOptions::default(),
        limits: CompileLimits::default(),
        output_dir: output_dir.to_path_buf(),
    }
}

/// Compiles `source` as `language` with a fresh cache; returns the outcome (and keeps the
/// directories alive).
pub fn compile_fresh(
    language: Language,
    source: SourceInput,
    options: BuildOptions,
) -> (Result<CompileOutcome>, tempfile::TempDir) {
    let dir = scratch();
    let compiler = compiler(&dir.path().join("cache"));
    let mut request = request(language, source, &dir.path().join("out"));
    request.options = options;
    (compiler.compile(&request), dir)
}

/// Runs a compiled artifact as a command with `stdin`, the way `wasmfn exec` does.
pub fn run(language: Language, outcome: &CompileOutcome, stdin: &[u8]) -> Execution {
    let mut request = RunRequest::command(ModuleSource::Path(outcome.artifact.clone()));
    if let Some(script_language) = ScriptLanguage::parse(language.as_str()) {
        let interpreters = Toolchains::from_env().interpreters;
        request = script_request(request, script_language, &interpreters, &outcome.artifact);
    }
    request.stdin = StdinSource::Bytes(stdin.to_vec());
    execute(&request, Isolation::Fork, &mut DiscardSink)
}

/// Stdout of a run, asserting it succeeded.
pub fn stdout_of(execution: &Execution) -> String {
    assert!(
        execution.document.reason.succeeded(),
        "run failed: {} {}\nstderr: {}",
        execution.document.reason.as_str(),
        execution.document.message,
        String::from_utf8_lossy(&execution.stderr.head)
    );
    String::from_utf8_lossy(&execution.stdout.head).into_owned()
}
