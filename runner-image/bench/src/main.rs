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
//!
//! `make bench-scripts`: `wasmfn-bench scripts [--runs N]` instead times a Python and a
//! JavaScript hello script under the AOT-compiled interpreters (CPython-WASI, QuickJS), end to
//! end through the execution core (request -> result: read and verify the interpreter module,
//! map its AOT form, instantiate, run), in-process and in a forked child per run, next to the
//! host's `python3 -c 'print(1)'` and `node -e 'console.log(1)'` in the same run; goals: p50
//! <= 50 ms (Python), <= 10 ms (JavaScript).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use wasmfn_execution::interpreter::{self, ScriptLanguage};
use wasmfn_execution::{
    aot, artifact::ModuleBytes, execute, execute_prepared, prepare, DiscardSink, Entry, Execution,
    Isolation, ModuleSource, Reason, RunRequest,
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

fn time_runs(runs: usize, run: impl FnMut() -> Result<()>) -> Result<Stats> {
    time_runs_after(runs.min(20) / 4, runs, run)
}

fn time_runs_after(
    warm_up: usize,
    runs: usize,
    mut run: impl FnMut() -> Result<()>,
) -> Result<Stats> {
    for _ in 0..warm_up {
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
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("scripts") {
        args.next();
        return scripts(args);
    }
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

/// A host interpreter process printing `1`, the native reference for one language.
struct Native {
    label: String,
    short: String,
    program: PathBuf,
    args: [&'static str; 2],
}

/// One interpreted language in `wasmfn-bench scripts`.
struct ScriptCase {
    language: ScriptLanguage,
    name: &'static str,
    file: &'static str,
    source: &'static str,
    expected: &'static [u8],
    goal: Duration,
    natives: Vec<Native>,
    /// An interpreter flag whose effect on startup is worth a diagnostic line (Python's `-S`).
    diagnostic_flag: Option<(&'static str, &'static str)>,
}

/// What `wasmfn-bench scripts` measured for one language.
struct ScriptFigures {
    in_process: Stats,
    forked: Stats,
    loaded: Stats,
    natives: Vec<Stats>,
}

/// Fails unless the run completed with exit code 0, on the AOT form, printing `expected`.
fn check_script(execution: &Execution, expected: &[u8]) -> Result<()> {
    let document = &execution.document;
    if document.reason != Reason::Completed
        || document.exit_code != Some(0)
        || !document.runtime.aot
        || execution.stdout.head != expected
    {
        bail!(
            "unexpected result (wanted reason Completed, exit code 0, AOT, stdout {:?}): {}\nstdout: {:?}\nstderr: {}",
            String::from_utf8_lossy(expected),
            document.to_json(),
            String::from_utf8_lossy(&execution.stdout.head),
            String::from_utf8_lossy(&execution.stderr.head)
        );
    }
    Ok(())
}

/// Runs `program args` and fails unless it exits 0 printing `1\n`.
fn native_print_one(program: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{} {args:?}", program.display()))?;
    if !output.status.success() || output.stdout != b"1\n" {
        bail!(
            "{} {args:?}: {} stdout {:?} stderr {:?}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The host's Pythons: the real executable behind `python3` on PATH (which may be a wrapper
/// script such as pyenv's shim, tens of milliseconds per start that are not Python's), and the
/// system's `/usr/bin/python3` when that is a different installation.
fn host_pythons() -> Result<Vec<Native>> {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("python3 (the host's Python) is not on PATH")?;
    let path = String::from_utf8(output.stdout)?.trim().to_owned();
    if !output.status.success() || path.is_empty() {
        bail!("python3 -c 'import sys; print(sys.executable)' failed");
    }
    let on_path = PathBuf::from(path);
    let mut pythons = vec![Native {
        label: format!(
            "host `python3 -c 'print(1)'`, PATH's: {}",
            on_path.display()
        ),
        short: "python3 on PATH".to_owned(),
        program: on_path.clone(),
        args: ["-c", "print(1)"],
    }];
    let system = PathBuf::from("/usr/bin/python3");
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if system.is_file() && !same(&system, &on_path) {
        pythons.push(Native {
            label: "host `/usr/bin/python3 -c 'print(1)'`".to_owned(),
            short: "/usr/bin/python3".to_owned(),
            program: system,
            args: ["-c", "print(1)"],
        });
    }
    Ok(pythons)
}

/// The phase durations the result documents of a series of runs report.
#[derive(Default)]
struct Phases {
    load: Vec<f64>,
    instantiate: Vec<f64>,
    run: Vec<f64>,
    total: Vec<f64>,
}

impl Phases {
    fn record(&mut self, execution: &Execution) {
        let timings = execution.document.timings;
        self.load.push(timings.load_ms);
        self.instantiate.push(timings.instantiate_ms);
        self.run.push(timings.run_ms);
        self.total.push(timings.total_ms);
    }

    /// The medians (the few warm-up runs included).
    fn print(&self) {
        let median = |values: &[f64]| {
            let mut values = values.to_vec();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
        };
        println!(
            "    phases p50 (result document): load {:.3} ms, instantiate {:.3} ms, run {:.3} ms, total {:.3} ms",
            median(&self.load),
            median(&self.instantiate),
            median(&self.run),
            median(&self.total)
        );
    }
}

fn scripts(mut args: impl Iterator<Item = String>) -> Result<()> {
    let mut runs = 20usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            other => bail!("unknown argument {other} (usage: wasmfn-bench scripts [--runs N])"),
        }
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    const WARM_UP: usize = 2;
    let interpreters = interpreter::interpreters_dir();
    // JavaScript first: a fork costs more the more memory the parent has mapped, and the
    // in-process CPython runs leave this process ~90 MB larger (a fresh `wasmfn exec` is not).
    let cases = [
        ScriptCase {
            language: ScriptLanguage::JavaScript,
            name: "JavaScript",
            file: "hello.js",
            source: "console.log(\"hello from javascript\");\n",
            expected: b"hello from javascript\n",
            goal: Duration::from_millis(10),
            natives: vec![Native {
                label: "host `node -e 'console.log(1)'`".to_owned(),
                short: "node".to_owned(),
                program: PathBuf::from("node"),
                args: ["-e", "console.log(1)"],
            }],
            diagnostic_flag: None,
        },
        ScriptCase {
            language: ScriptLanguage::Python,
            name: "Python",
            file: "hello.py",
            source: "print(\"hello from python\")\n",
            expected: b"hello from python\n",
            goal: Duration::from_millis(50),
            natives: host_pythons()?,
            diagnostic_flag: Some(("-S", "no `site` import")),
        },
    ];
    let dir = std::env::temp_dir().join(format!("wasmfn-bench-scripts-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "WasmEdge {}, {} cores, interpreters in {}, {runs} runs per case after {WARM_UP} warm-up runs",
        wasmfn_execution::runtime::runtime_version(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        interpreters.display()
    );
    println!();

    let mut figures = Vec::new();
    for case in &cases {
        // Each script in a directory of its own: the guest sees the script's directory.
        let script_dir = dir.join(case.name.to_lowercase());
        std::fs::create_dir_all(&script_dir)?;
        let script = script_dir.join(case.file);
        std::fs::write(&script, case.source)?;
        let request = interpreter::script_request(
            RunRequest::command(ModuleSource::Bytes(Vec::new())),
            case.language,
            &interpreters,
            &script,
        );
        let (ModuleSource::Path(module), Some(aot_path)) = (&request.module, &request.aot) else {
            bail!(
                "{}: no AOT form of the interpreter in {} (run `wasmfn aot` on it, as `make bench-scripts` does)",
                case.name,
                interpreters.display()
            );
        };
        println!(
            "{}: {} ({:.1} MB), AOT form {} ({:.1} MB)",
            case.name,
            module.display(),
            std::fs::metadata(module)?.len() as f64 / (1024.0 * 1024.0),
            aot_path.display(),
            std::fs::metadata(aot_path)?.len() as f64 / (1024.0 * 1024.0)
        );

        // End to end: request -> result (read and verify the interpreter module, map its AOT
        // form, instantiate, run the interpreter on the script), in-process and in a forked
        // child per run (what `wasmfn exec` and pods use).
        let end_to_end = |isolation: Isolation, label: &str| -> Result<Stats> {
            let mut phases = Phases::default();
            let stats = time_runs_after(WARM_UP, runs, || {
                let execution = execute(&request, isolation, &mut DiscardSink);
                check_script(&execution, case.expected)?;
                phases.record(&execution);
                Ok(())
            })?;
            report(
                &format!("{} hello, AOT, {label}, end to end", case.name),
                runs,
                &stats,
            );
            phases.print();
            Ok(stats)
        };
        let in_process = end_to_end(Isolation::InProcess, "in-process")?;
        let forked = end_to_end(Isolation::Fork, "forked child")?;

        // Where the load phase goes: reading, hashing and scanning the module before its AOT
        // form is mapped (the rest of `load`).
        let verify = time_runs_after(WARM_UP, runs, || {
            let bytes = ModuleBytes::read(module)?;
            wasmfn_artifact::check_no_native_code(bytes.bytes())?;
            std::hint::black_box(bytes.sha256());
            Ok(())
        })?;
        report(
            "  of which: read + sha256 + native-code scan of the module",
            runs,
            &verify,
        );

        // Interpreter module loaded once: what is left is instantiation and the interpreter.
        let prepared = prepare(&request).map_err(|r| anyhow::anyhow!("{}", r.message))?;
        let loaded_once = |request: &RunRequest, isolation: Isolation, label: &str| {
            let stats = time_runs_after(WARM_UP, runs, || {
                check_script(
                    &execute_prepared(
                        &prepared,
                        request,
                        isolation,
                        &mut DiscardSink,
                        Instant::now(),
                    ),
                    case.expected,
                )
            })?;
            report(
                &format!("{} hello, AOT loaded once, {label}", case.name),
                runs,
                &stats,
            );
            Ok::<_, anyhow::Error>(stats)
        };
        let loaded = loaded_once(&request, Isolation::InProcess, "in-process")?;
        // What the agent does: the zygote loaded the interpreter; each run is a forked child.
        loaded_once(&request, Isolation::Fork, "forked child (the agent's path)")?;
        if let Some((flag, what)) = case.diagnostic_flag {
            let mut flagged = request.clone();
            flagged.args.insert(0, flag.to_owned());
            loaded_once(
                &flagged,
                Isolation::InProcess,
                &format!("in-process, {flag} ({what})"),
            )?;
        }
        drop(prepared);

        let mut natives = Vec::new();
        for native in &case.natives {
            let stats = time_runs_after(WARM_UP, runs, || {
                native_print_one(&native.program, &native.args)
            })?;
            report(&native.label, runs, &stats);
            natives.push(stats);
        }
        println!();
        figures.push(ScriptFigures {
            in_process,
            forked,
            loaded,
            natives,
        });
    }

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for (case, figures) in cases.iter().zip(&figures) {
        let verdict = |stats: &Stats| {
            if stats.median <= case.goal {
                "met"
            } else {
                "MISSED"
            }
        };
        println!(
            "{} hello p50, in-process AOT: {:.1} ms (goal <= {} ms: {}); forked child: {:.1} ms ({})",
            case.name,
            ms(figures.in_process.median),
            case.goal.as_millis(),
            verdict(&figures.in_process),
            ms(figures.forked.median),
            verdict(&figures.forked)
        );
        for (native, stats) in case.natives.iter().zip(&figures.natives) {
            println!(
                "  / {} ({:.1} ms p50): in-process {:.2}x p50, {:.2}x p99; forked {:.2}x p50, {:.2}x p99; loaded once {:.2}x p50",
                native.short,
                ms(stats.median),
                ratio(figures.in_process.median, stats.median),
                ratio(figures.in_process.p99, stats.p99),
                ratio(figures.forked.median, stats.median),
                ratio(figures.forked.p99, stats.p99),
                ratio(figures.loaded.median, stats.median)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
