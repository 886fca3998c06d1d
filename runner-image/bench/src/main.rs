//! `make bench-runner`: what a run costs.
//!
//! 1. Per-run overhead of a hello module with the module already loaded (AOT), in one process:
//!    in-process mode and fork-per-run mode, against spawning the `wasmedge` CLI per run.
//! 2. AOT against the interpreter on a CPU-bound module (recursive fib).
//! 3. `wasmfn exec` as a whole process (cold start + AOT load + run) against the `wasmedge` CLI
//!    process on the same module.
//!
//! Usage: `wasmfn-bench [--wasmfn PATH] [--runs N]`. Prints median and p99 per case and the
//! ratios the issue sets goals for (p50 <= 0.5 ms, >= 20x the CLI; AOT >= 50x the interpreter).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use wasmfn_execution::{
    aot, artifact::ModuleBytes, execute_prepared, prepare, DiscardSink, Entry, Isolation,
    ModuleSource, Reason, RunRequest,
};

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, runs: usize, stats: &Stats) {
    println!(
        "{name:<58} runs {runs:>5}  p50 {:>9.3} ms  p99 {:>9.3} ms",
        ms(stats.median),
        ms(stats.p99)
    );
}

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("repository root")
        .to_path_buf()
}

/// Compiles a guest from runner-image/guests/wat and its AOT form into `dir`.
fn build_wat(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let source = repo_dir().join(format!("runner-image/guests/wat/{name}.wat"));
    let bytes = wat::parse_file(&source).with_context(|| source.display().to_string())?;
    let module = dir.join(format!("{name}.wasm"));
    std::fs::write(&module, &bytes)?;
    let aot_path = aot::default_path_for(&module);
    aot::compile(&ModuleBytes::new(bytes), &aot_path)?;
    Ok((module, aot_path))
}

fn time_runs(runs: usize, mut run: impl FnMut() -> Result<()>) -> Result<Stats> {
    // warm-up
    for _ in 0..runs.min(20) / 4 {
        run()?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        run()?;
        samples.push(started.elapsed());
    }
    Ok(stats(samples))
}

fn spawn_quiet(command: &mut Command) -> Result<()> {
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("{command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Times the `wasmedge`-section scan on the hello module and on the largest real module at
/// hand, CPython-WASI from `make setup`'s cache (20 MB).
fn native_code_scan(hello: &Path) -> Result<Vec<(String, f64, Stats)>> {
    let cache = std::env::var_os("WASMFN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasmfn")))
        .context("neither WASMFN_CACHE nor HOME is set")?;
    let python = cache.join("interpreters/python/python3.11.wasm");
    let mut scanned = Vec::new();
    for (name, path) in [("hello", hello), ("CPython-WASI", python.as_path())] {
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let stats = time_runs(2000, || {
            wasmfn_artifact::check_no_native_code(std::hint::black_box(&bytes))
                .map_err(anyhow::Error::from)
        })?;
        let megabytes = bytes.len() as f64 / (1024.0 * 1024.0);
        println!(
            "{:<58} runs {:>5}  p50 {:>9.0} ns  p99 {:>9.0} ns",
            format!("native-code scan, {name} ({megabytes:.2} MB)"),
            2000,
            stats.median.as_secs_f64() * 1e9,
            stats.p99.as_secs_f64() * 1e9
        );
        scanned.push((name.to_owned(), megabytes, stats));
    }
    Ok(scanned)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut wasmfn = None;
    let mut runs = 2000usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--wasmfn" => wasmfn = args.next().map(PathBuf::from),
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let process_runs = (runs / 20).max(20);
    let dir = std::env::temp_dir().join(format!("wasmfn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (hello, hello_aot) = build_wat(&dir, "hello")?;
    let (fib, fib_aot) = build_wat(&dir, "fib")?;
    println!(
        "WasmEdge {}, {} cores",
        wasmfn_execution::runtime::runtime_version(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();

    // 1. per-run overhead, module loaded once
    let mut request = RunRequest::command(ModuleSource::Path(hello.clone()));
    request.aot = Some(hello_aot.clone());
    let prepared = prepare(&request).map_err(|r| anyhow::anyhow!("{}", r.message))?;
    assert!(prepared.runtime.aot, "the AOT form must be used");
    let check = |isolation| -> Result<()> {
        let execution = execute_prepared(
            &prepared,
            &request,
            isolation,
            &mut DiscardSink,
            Instant::now(),
        );
        if execution.document.reason != Reason::Completed || execution.stdout.head != b"hello\n" {
            bail!("unexpected result: {}", execution.document.to_json());
        }
        Ok(())
    };
    let in_process = time_runs(runs, || check(Isolation::InProcess))?;
    report("hello, loaded AOT, in-process", runs, &in_process);
    let forked = time_runs(runs / 4, || check(Isolation::Fork))?;
    report("hello, loaded AOT, forked child per run", runs / 4, &forked);
    let cli_aot = time_runs(process_runs, || {
        spawn_quiet(Command::new("wasmedge").arg(&hello_aot))
    })?;
    report(
        "hello, `wasmedge <aot>` process per run",
        process_runs,
        &cli_aot,
    );
    let cli_wasm = time_runs(process_runs, || {
        spawn_quiet(Command::new("wasmedge").arg(&hello))
    })?;
    report(
        "hello, `wasmedge <wasm>` process per run",
        process_runs,
        &cli_wasm,
    );

    // 2. AOT vs interpreter on fib(30)
    let fib_request = |aot: Option<PathBuf>| {
        let mut request = RunRequest::command(ModuleSource::Path(fib.clone()));
        request.aot = aot;
        request.entry = Entry::Invoke {
            export: "fib".into(),
            args: vec![serde_json::json!(30)],
        };
        request
    };
    let mut fib_times = Vec::new();
    for aot in [Some(fib_aot.clone()), None] {
        let request = fib_request(aot);
        let prepared = prepare(&request).map_err(|r| anyhow::anyhow!("{}", r.message))?;
        let label = if prepared.runtime.aot {
            "AOT"
        } else {
            "interpreter"
        };
        let fib_runs = if prepared.runtime.aot { 50 } else { 7 };
        let stats = time_runs(fib_runs, || {
            let execution = execute_prepared(
                &prepared,
                &request,
                Isolation::InProcess,
                &mut DiscardSink,
                Instant::now(),
            );
            if execution.document.reason != Reason::Completed {
                bail!("{}", execution.document.to_json());
            }
            Ok(())
        })?;
        report(&format!("fib(30), {label}, in-process"), fib_runs, &stats);
        fib_times.push(stats.median);
    }

    // 3. the native-code scan every run does before loading (section headers only)
    let scanned = native_code_scan(&hello)?;

    // 4. whole processes
    let mut exec_stats = None;
    if let Some(wasmfn) = &wasmfn {
        let stats = time_runs(process_runs, || {
            spawn_quiet(
                Command::new(wasmfn)
                    .args(["exec", "--result", "/dev/null", "--quiet"])
                    .arg(&hello),
            )
        })?;
        report(
            "hello, `wasmfn exec` process (cold start + AOT load + run)",
            process_runs,
            &stats,
        );
        exec_stats = Some(stats);
    }

    println!();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "per-run p50, in-process loaded AOT: {:.3} ms (goal <= 0.5 ms)",
        ms(in_process.median)
    );
    println!(
        "`wasmedge` CLI per run / in-process:  {:.1}x p50, {:.1}x p99 (goal >= 20x)",
        ratio(cli_aot.median, in_process.median),
        ratio(cli_aot.p99, in_process.p99)
    );
    println!(
        "`wasmedge` CLI per run / forked child: {:.1}x p50, {:.1}x p99",
        ratio(cli_aot.median, forked.median),
        ratio(cli_aot.p99, forked.p99)
    );
    println!(
        "fib(30) interpreter / AOT:            {:.1}x (goal >= 50x)",
        ratio(fib_times[1], fib_times[0])
    );
    // The scan reads section headers only, so its cost follows the section count; per MB it is
    // meaningful for the large module only.
    for (name, megabytes, stats) in scanned.iter().filter(|(_, mb, _)| *mb >= 1.0) {
        println!(
            "native-code scan, {name}: {:.3} us p50 per run, {:.4} us per MB of module",
            stats.median.as_secs_f64() * 1e6,
            stats.median.as_secs_f64() * 1e6 / megabytes
        );
    }
    if let Some(stats) = exec_stats {
        println!(
            "`wasmedge <aot>` process / `wasmfn exec` process: {:.2}x p50",
            ratio(cli_aot.median, stats.median)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
