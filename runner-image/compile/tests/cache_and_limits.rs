//! The cache (a hit starts no toolchain process, entries expire after the TTL) and the limits
//! (wall time kills the whole toolchain process tree, oversized sources are refused, missing
//! toolchains are the builder's fault, toolchains get no network).

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use support::*;
use wasmfn_compile::{
    CacheOutcome, CompileLimits, Error, Language, Phase, SourceInput, Toolchains, MANIFEST_FILE,
};

/// Writes an executable shell script.
fn script(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_path_buf()
}

/// A `wat2wasm` that logs each invocation (one line) to `log`, then runs the real one.
fn counting_wat2wasm(dir: &Path, log: &Path) -> Toolchains {
    let real = Toolchains::from_env().wat2wasm;
    let wrapper = script(
        &dir.join("wat2wasm"),
        &format!(
            "echo \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    );
    Toolchains {
        wat2wasm: wrapper,
        ..Toolchains::from_env()
    }
}

fn invocations(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_cache_hit_serves_the_artifact_without_running_any_toolchain() {
    let dir = scratch();
    let log = dir.path().join("invocations.log");
    let compiler = compiler_with(
        &dir.path().join("cache"),
        counting_wat2wasm(dir.path(), &log),
    );
    let first = compiler
        .compile(&request(
            Language::Wat,
            source("wat/echo.wat"),
            &dir.path().join("one"),
        ))
        .expect("first compile");
    assert_eq!(first.manifest.cache, CacheOutcome::Miss);
    let after_first = invocations(&log);
    assert_eq!(after_first, 2, "a version query and one compile");

    let started = Instant::now();
    let second = compiler
        .compile(&request(
            Language::Wat,
            source("wat/echo.wat"),
            &dir.path().join("two"),
        ))
        .expect("second compile");
    let hit_time = started.elapsed();
    assert_eq!(second.manifest.cache, CacheOutcome::Hit);
    assert_eq!(second.manifest.toolchain_invocations, 0);
    assert_eq!(
        invocations(&log),
        after_first,
        "no toolchain process on a hit"
    );
    assert_eq!(second.manifest.artifact, first.manifest.artifact);
    assert_eq!(second.manifest.cache_key, first.manifest.cache_key);
    assert_eq!(
        std::fs::read(&second.artifact).expect("served artifact"),
        std::fs::read(&first.artifact).expect("built artifact")
    );
    assert!(hit_time < Duration::from_secs(1), "hit took {hit_time:?}");

    // A new compiler (a new process) over the same cache remembers the version on disk.
    let fresh = compiler_with(&dir.path().join("cache"), compiler.toolchains.clone());
    let third = fresh
        .compile(&request(
            Language::Wat,
            source("wat/echo.wat"),
            &dir.path().join("three"),
        ))
        .expect("third compile");
    assert_eq!(third.manifest.cache, CacheOutcome::Hit);
    assert_eq!(invocations(&log), after_first, "not even a version query");
}

#[test]
fn entries_older_than_the_ttl_are_evicted_and_rebuilt() {
    let dir = scratch();
    let log = dir.path().join("invocations.log");
    let compiler = compiler_with(
        &dir.path().join("cache"),
        counting_wat2wasm(dir.path(), &log),
    );
    let first = compiler
        .compile(&request(
            Language::Wat,
            source("wat/echo.wat"),
            &dir.path().join("one"),
        ))
        .expect("compile");
    let key_hex = first
        .manifest
        .cache_key
        .trim_start_matches("sha256:")
        .to_owned();
    let entry = dir.path().join("cache/entries").join(&key_hex);
    assert!(entry.join(MANIFEST_FILE).is_file(), "stored under its key");

    // Age the entry past the TTL (3600 s in these tests).
    let manifest = std::fs::File::options()
        .write(true)
        .open(entry.join(MANIFEST_FILE))
        .expect("open");
    manifest
        .set_modified(SystemTime::now() - Duration::from_secs(3601))
        .expect("age the entry");
    let compiles_before = invocations(&log);
    let second = compiler
        .compile(&request(
            Language::Wat,
            source("wat/echo.wat"),
            &dir.path().join("two"),
        ))
        .expect("recompile");
    assert_eq!(
        second.manifest.cache,
        CacheOutcome::Miss,
        "expired entry not served"
    );
    assert_eq!(
        invocations(&log),
        compiles_before + 1,
        "the toolchain ran again"
    );
    assert_eq!(
        second.manifest.artifact.digest,
        first.manifest.artifact.digest
    );
    let stored = std::fs::metadata(entry.join(MANIFEST_FILE))
        .and_then(|m| m.modified())
        .expect("re-stored");
    assert!(SystemTime::now().duration_since(stored).expect("age") < Duration::from_secs(60));
}

/// Whether a process is gone (or only a zombie waiting for a reaper that is not us).
fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_compile_over_its_time_limit_is_killed_with_its_whole_process_tree() {
    let dir = scratch();
    let pids = dir.path().join("pids");
    // A "rustc" that answers the version query, then starts a child, a grandchild (in a
    // subshell) and waits forever — like a build script stuck in a loop.
    let fake_rustc = script(
        &dir.path().join("rustc"),
        &format!(
            "if [ \"$1\" = --version ]; then echo 'rustc 0.0.0-stuck'; exit 0; fi\n\
             echo $$ >> '{pids}'\n\
             sleep 600 &\n\
             echo $! >> '{pids}'\n\
             ( sleep 600 & echo $! >> '{pids}'; wait ) &\n\
             echo $! >> '{pids}'\n\
             wait\n",
            pids = pids.display()
        ),
    );
    let compiler = compiler_with(
        &dir.path().join("cache"),
        Toolchains {
            rustc: fake_rustc,
            ..Toolchains::from_env()
        },
    );
    let mut compile = request(
        Language::Rust,
        source("rust/echo.rs"),
        &dir.path().join("out"),
    );
    compile.limits = CompileLimits {
        wall_time: Duration::from_secs(2),
        ..CompileLimits::default()
    };
    let started = Instant::now();
    let error = compiler.compile(&compile).expect_err("times out");
    let took = started.elapsed();
    assert!(matches!(error, Error::TimedOut { .. }), "{error:?}");
    assert!(error.is_user_error());
    assert_eq!(error.reason(), "TimedOut");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");

    let recorded: Vec<i32> = std::fs::read_to_string(&pids)
        .expect("the fake toolchain ran")
        .lines()
        .map(|l| l.trim().parse().expect("pid"))
        .collect();
    assert_eq!(
        recorded.len(),
        4,
        "toolchain, child, subshell, grandchild: {recorded:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !recorded.iter().all(|pid| is_gone(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<i32> = recorded.iter().copied().filter(|p| !is_gone(*p)).collect();
    assert!(survivors.is_empty(), "descendants survived: {survivors:?}");
}

#[test]
fn an_oversized_source_is_refused_with_a_clear_message() {
    let dir = scratch();
    let compiler = compiler(&dir.path().join("cache"));
    let mut huge = b"fn main() {}\n".to_vec();
    huge.resize(1024 * 1024 + 1, b' ');
    let error = compiler
        .compile(&request(
            Language::Rust,
            SourceInput::Inline {
                file_name: "main.rs".into(),
                content: huge,
            },
            &dir.path().join("out"),
        ))
        .expect_err("too large");
    assert!(error.is_user_error());
    assert_eq!(error.reason(), "SourceTooLarge");
    assert_eq!(
        error.to_string(),
        "source is 1048577 bytes, more than the limit of 1048576 bytes"
    );
    assert!(!dir.path().join("out/module.wasm").exists());
}

#[test]
fn an_artifact_over_the_module_limit_is_refused() {
    let dir = scratch();
    let compiler = compiler(&dir.path().join("cache"));
    let mut compile = request(
        Language::Wat,
        source("wat/echo.wat"),
        &dir.path().join("out"),
    );
    compile.limits = CompileLimits {
        module_bytes: 16,
        ..CompileLimits::default()
    };
    let error = compiler.compile(&compile).expect_err("too large");
    assert!(
        matches!(error, Error::ArtifactTooLarge { limit: 16, .. }),
        "{error:?}"
    );
}

#[test]
fn a_missing_toolchain_is_an_internal_failure_not_a_compile_error() {
    let dir = scratch();
    let compiler = compiler_with(
        &dir.path().join("cache"),
        Toolchains {
            clang: PathBuf::from("/nonexistent/clang-19"),
            ..Toolchains::from_env()
        },
    );
    let error = compiler
        .compile(&request(
            Language::C,
            source("c/echo.c"),
            &dir.path().join("out"),
        ))
        .expect_err("no compiler");
    assert!(!error.is_user_error(), "{error:?}");
    assert_eq!(error.reason(), "ToolchainMissing");
}

#[test]
fn cargo_dependencies_need_the_network_option() {
    let project = scratch();
    std::fs::create_dir_all(project.path().join("src")).expect("mkdir");
    std::fs::write(
        project.path().join("Cargo.toml"),
        "[package]\nname = \"needs-net\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nwasmfn-test-crate-that-is-not-cached = \"1\"\n",
    )
    .expect("write");
    std::fs::write(project.path().join("src/main.rs"), "fn main() {}\n").expect("write");
    let (outcome, _dir) = compile_fresh(
        Language::Rust,
        SourceInput::Directory(project.path().to_path_buf()),
        wasmfn_compile::BuildOptions::default(),
    );
    let error = outcome.expect_err("offline");
    assert!(error.is_user_error(), "{error:?}");
    // cargo ran with --offline: the registry was never asked.
    let text = error.to_string();
    assert!(
        text.contains("error: no matching package named `wasmfn-test-crate-that-is-not-cached`"),
        "{text}"
    );
}

#[test]
fn a_toolchain_over_its_memory_limit_fails_the_compile() {
    let dir = scratch();
    // A "rustc" that tries to hold 1 GiB, like a compiler bomb.
    let hungry_rustc = script(
        &dir.path().join("rustc"),
        "if [ \"$1\" = --version ]; then echo 'rustc 0.0.0-hungry'; exit 0; fi\n\
         exec python3 -c 'block = bytearray(1 << 30); print(len(block))'\n",
    );
    let compiler = compiler_with(
        &dir.path().join("cache"),
        Toolchains {
            rustc: hungry_rustc,
            ..Toolchains::from_env()
        },
    );
    let mut compile = request(
        Language::Rust,
        source("rust/echo.rs"),
        &dir.path().join("out"),
    );
    compile.limits = CompileLimits {
        memory_bytes: 256 << 20,
        ..CompileLimits::default()
    };
    let error = compiler.compile(&compile).expect_err("out of memory");
    assert!(error.is_user_error(), "{error:?}");
    assert!(
        matches!(
            error,
            Error::CompileFailed { .. } | Error::ToolchainCrashed { .. }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("MemoryError"), "{error}");
}

#[test]
fn the_aot_option_adds_a_wasmedge_native_form_that_the_runner_uses() {
    let dir = scratch();
    let compiler = compiler(&dir.path().join("cache"));
    let mut compile = request(
        Language::Wat,
        source("wat/echo.wat"),
        &dir.path().join("out"),
    );
    compile.options.aot = true;
    let steps = std::cell::RefCell::new(Vec::new());
    let record = |step: Phase<'_>| steps.borrow_mut().push(format!("{step:?}"));
    let outcome = compiler
        .compile_reporting(&compile, &record)
        .expect("compile with AOT");
    // Each step is reported as it starts: the toolchain program (its version query is not a
    // build step and comes from the memo), then LLVM on the built module.
    assert_eq!(
        *steps.borrow(),
        [
            "Tool(\"wat2wasm\")".to_owned(),
            format!("Aot({})", outcome.manifest.artifact.size)
        ]
    );
    let aot = outcome
        .manifest
        .aot
        .clone()
        .expect("AOT form in the manifest");
    assert_eq!(aot.file, wasmfn_compile::AOT_FILE);
    let aot_path = dir.path().join("out").join(&aot.file);
    assert_eq!(
        std::fs::metadata(&aot_path).expect("AOT file").len(),
        aot.size
    );
    let mut run = wasmfn_execution::RunRequest::command(wasmfn_execution::ModuleSource::Path(
        outcome.artifact.clone(),
    ));
    run.aot = Some(aot_path);
    run.stdin = wasmfn_execution::StdinSource::Bytes(b"native\n".to_vec());
    let execution = wasmfn_execution::execute(
        &run,
        wasmfn_execution::Isolation::Fork,
        &mut wasmfn_execution::DiscardSink,
    );
    assert!(
        execution.document.runtime.aot,
        "{:?}",
        execution.document.runtime
    );
    assert_eq!(stdout_of(&execution), "hello from wat\nnative\n");

    // The hit serves the AOT form too.
    steps.borrow_mut().clear();
    let again = compiler
        .compile_reporting(
            &wasmfn_compile::CompileRequest {
                output_dir: dir.path().join("again"),
                ..compile.clone()
            },
            &record,
        )
        .expect("hit");
    assert_eq!(again.manifest.cache, CacheOutcome::Hit);
    assert!(steps.borrow().is_empty(), "a hit has no steps: {steps:?}");
    assert!(dir
        .path()
        .join("again")
        .join(wasmfn_compile::AOT_FILE)
        .is_file());
}
