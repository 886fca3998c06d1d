//! Builds the test guests in `runner-image/guests/` with the real toolchains, once per test
//! process, into a cache under the target directory. A missing toolchain fails the test with
//! the command that failed (never a skip): `make setup` installs all of them.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use wasmfn_execution::artifact::ModuleBytes;
use wasmfn_execution::{aot, execute, DiscardSink, Execution, Isolation, ModuleSource, RunRequest};

pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("runner-image/guests").is_dir())
        .expect("repository root")
        .to_path_buf()
}

pub fn guests_dir() -> PathBuf {
    repo_dir().join("runner-image/guests")
}

/// `$WASMFN_CACHE` (default ~/.cache/wasmfn), where `make setup` puts toolchains and interpreters.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WASMFN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/wasmfn"))
}

pub fn interpreters_dir() -> PathBuf {
    let dir = cache_dir().join("interpreters");
    for module in ["python/python3.11.wasm", "javascript/quickjs.wasm"] {
        assert!(
            dir.join(module).is_file(),
            "{} is missing: run `make setup` (tests/harness/setup-toolchains.sh)",
            dir.join(module).display()
        );
    }
    dir
}

fn build_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasmfn-guests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e} — run `make setup`"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();

/// The module for a guest, e.g. `rust/probe`, `c/probe`, `go/probe`, `assemblyscript/add`,
/// `wat/loop`; built on first use.
pub fn guest(name: &str) -> PathBuf {
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let (language, stem) = name.split_once('/').unwrap();
    let out = build_dir().join(format!("{language}-{stem}.wasm"));
    // Build under a temporary name and rename: test binaries run in parallel processes.
    let tmp = build_dir().join(format!("{language}-{stem}.{}.tmp.wasm", std::process::id()));
    let src = guests_dir().join(language);
    match language {
        "rust" => run(Command::new("/usr/bin/rustc")
            .args([
                "--target",
                "wasm32-wasip1",
                "-O",
                "-C",
                "strip=symbols",
                // Debian ships the wasm linker as wasm-ld-19 (package lld-19), not rust-lld.
                "-C",
                "linker=wasm-ld-19",
                "--edition",
                "2021",
            ])
            .arg(src.join(format!("{stem}.rs")))
            .arg("-o")
            .arg(&tmp)),
        "c" => run(Command::new("clang-19")
            .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2"])
            .arg(src.join(format!("{stem}.c")))
            .arg("-o")
            .arg(&tmp)),
        "go" => run(Command::new("/usr/lib/go-1.24/bin/go")
            .current_dir(&src)
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("GOCACHE", build_dir().join("go-cache"))
            .env("GOPATH", build_dir().join("go-path"))
            .env("GOFLAGS", "-buildvcs=false")
            .env("GOTOOLCHAIN", "local")
            .args(["build", "-o"])
            .arg(&tmp)
            .arg(".")),
        "assemblyscript" => {
            let asc_dir = cache_dir().join("assemblyscript");
            let mut command = Command::new(asc_dir.join("node_modules/.bin/asc"));
            // The shim's asconfig.json names its library relative to the npm project.
            command.current_dir(&asc_dir);
            command
                .arg(src.join(format!("{stem}.ts")))
                .arg("-o")
                .arg(&tmp)
                .arg("-O");
            if stem == "add" {
                // A library module: no WASI, and no `env.abort` import either.
                command.args(["--use", "abort=", "--runtime", "stub"]);
            } else {
                command.args([
                    "--config",
                    "node_modules/@assemblyscript/wasi-shim/asconfig.json",
                ]);
            }
            run(&mut command)
        }
        "wat" => run(Command::new("wat2wasm")
            .arg(src.join(format!("{stem}.wat")))
            .arg("-o")
            .arg(&tmp)),
        other => panic!("unknown guest language {other}"),
    }
    std::fs::rename(&tmp, &out).unwrap();
    built.insert(name.to_owned(), out.clone());
    out
}

/// The AOT form of a module, compiled (and cached next to it) on first use. Test binaries run
/// as parallel processes and compiling CPython takes minutes, so the check-and-compile holds an
/// exclusive lock file next to the module.
pub fn aot_of(module: &Path) -> PathBuf {
    use std::os::fd::AsRawFd as _;
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lock_path = module.with_extension("wasm.aot.lock");
    let lock_file = std::fs::File::create(&lock_path).unwrap();
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    assert_eq!(
        unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX) },
        0
    );
    let bytes = ModuleBytes::read(module).unwrap();
    let path = aot::default_path_for(module);
    if aot::check(&path, &bytes).is_err() {
        aot::compile(&bytes, &path).unwrap();
    }
    path
}

/// A command request for a module file.
pub fn request(module: &Path) -> RunRequest {
    RunRequest::command(ModuleSource::Path(module.to_path_buf()))
}

/// Runs in a forked child, output discarded (heads are kept in the execution).
pub fn exec(request: &RunRequest) -> Execution {
    execute(request, Isolation::Fork, &mut DiscardSink)
}

pub fn stdout_text(execution: &Execution) -> String {
    String::from_utf8_lossy(&execution.stdout.head).into_owned()
}
