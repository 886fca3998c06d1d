//! `wasmfn exec`, `wasmfn aot` and `wasmfn run` as processes: the result document lands where
//! asked, the guest's streams go to ours, and the exit code mirrors the guest.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

#[path = "../../execution-core/tests/support/mod.rs"]
mod support;

fn interpreters() -> PathBuf {
    std::env::var_os("WASMFN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/wasmfn"))
        .join("interpreters")
}

/// The command with the interpreters `make setup` installed and a compile cache of the tests'
/// own (under the target directory, not the user's).
fn wasmfn() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmfn"));
    command.env("WASMFN_INTERPRETERS", interpreters());
    command.env(
        "WASM_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-compile-cache"),
    );
    command
}

fn guest_wat(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../guests/wat/{name}.wat"));
    std::fs::read_to_string(path).unwrap()
}

/// Compiles a WAT guest into `dir`.
fn module(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wat::parse_str(guest_wat(name)).unwrap()).unwrap();
    path
}

fn document(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.len() <= 4096);
    serde_json::from_str(&text).unwrap()
}

fn exec(dir: &Path, args: &[&str]) -> (Output, Value) {
    let result = dir.join("result.json");
    let output = wasmfn()
        .arg("exec")
        .arg("--result")
        .arg(&result)
        .args(args)
        .output()
        .unwrap();
    (output, document(&result))
}

#[test]
fn exec_writes_the_document_and_forwards_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let hello = module(dir.path(), "hello");
    let (output, doc) = exec(dir.path(), &["--no-aot", hello.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout, b"hello\n");
    assert_eq!(doc["apiVersion"], "wasmfn.dev/v1alpha1");
    assert_eq!(doc["reason"], "Completed");
    assert_eq!(doc["stdout"]["head"], "hello\n");
    assert_eq!(doc["runtime"]["aot"], false);
}

#[test]
fn exec_records_its_spans_under_the_given_traceparent() {
    let dir = tempfile::tempdir().unwrap();
    let hello = module(dir.path(), "hello");
    let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, doc) = exec(
        dir.path(),
        &["--traceparent", header, hello.to_str().unwrap()],
    );
    assert_eq!(doc["trace"]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(doc["trace"]["service"], "wasmfn-runner");
    let spans = doc["trace"]["spans"].as_array().unwrap();
    let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["run", "load", "instantiate", "invoke"]);
    assert_eq!(spans[0]["parentSpanId"], "00f067aa0ba902b7");
    assert!(spans[0]["endUnixNano"].as_u64() > spans[0]["startUnixNano"].as_u64());
    // without one (or with a broken one) the run is the same and carries no spans
    let (output, doc) = exec(
        dir.path(),
        &["--traceparent", "nonsense", hello.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(doc["reason"], "Completed");
    assert!(doc.get("trace").is_none());
}

#[test]
fn exit_code_mirrors_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let exit3 = module(dir.path(), "exit3");
    let (output, doc) = exec(dir.path(), &[exit3.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(doc["reason"], "NonZeroExit");
    assert_eq!(doc["exitCode"], 3);
    let trap = module(dir.path(), "trap");
    let (output, doc) = exec(dir.path(), &[trap.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(134));
    assert_eq!(doc["reason"], "Trap");
}

#[test]
fn aot_form_is_used_when_present_and_matching() {
    let dir = tempfile::tempdir().unwrap();
    let fib = module(dir.path(), "fib");
    let status = wasmfn().arg("aot").arg(&fib).status().unwrap();
    assert!(status.success());
    assert!(dir.path().join("fib.wasm.aot.so.json").is_file());
    let (_, doc) = exec(
        dir.path(),
        &["--invoke", "fib", "--args", "[25]", fib.to_str().unwrap()],
    );
    assert_eq!(doc["runtime"]["aot"], true);
    assert_eq!(doc["returns"][0], 75025);
    let (_, doc) = exec(
        dir.path(),
        &[
            "--no-aot",
            "--invoke",
            "fib",
            "--args",
            "[25]",
            fib.to_str().unwrap(),
        ],
    );
    assert_eq!(doc["runtime"]["aot"], false);
    // the module changes, the old AOT form no longer matches and is not used
    std::fs::write(
        &fib,
        wat::parse_str(guest_wat("fib").replace("27", "26")).unwrap(),
    )
    .unwrap();
    let (output, doc) = exec(
        dir.path(),
        &["--invoke", "fib", "--args", "[25]", fib.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(doc["runtime"]["aot"], false);
    assert!(doc["runtime"]["aotRejected"]
        .as_str()
        .unwrap()
        .contains("compiled from"));
}

#[test]
fn bad_inputs_exit_with_distinct_codes() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let (output, doc) = exec(dir.path(), &[not_wasm.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(126));
    assert_eq!(doc["reason"], "InvalidModule");
    let hello = module(dir.path(), "hello");
    let (output, doc) = exec(
        dir.path(),
        &["--stdin-file", "/nonexistent", hello.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(125));
    assert_eq!(doc["reason"], "InputUnreadable");
    let looping = module(dir.path(), "loop");
    let (output, doc) = exec(
        dir.path(),
        &["--timeout", "200ms", looping.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(124));
    assert_eq!(doc["reason"], "TimedOut");
    let add = module(dir.path(), "add");
    let (output, doc) = exec(
        dir.path(),
        &["--invoke", "add", "--args", "[1]", add.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(126));
    assert_eq!(doc["reason"], "BadArguments");
}

fn run_manifest(dir: &Path, manifest: &str, extra: &[&str]) -> (Output, Value) {
    let path = dir.join("function.yaml");
    std::fs::write(&path, manifest).unwrap();
    let result = dir.join("run-result.json");
    let output = wasmfn()
        .arg("run")
        .arg(&path)
        .arg("--result")
        .arg(&result)
        .args(extra)
        .output()
        .unwrap();
    (output, document(&result))
}

#[test]
fn run_builds_and_runs_a_wat_function() {
    let dir = tempfile::tempdir().unwrap();
    let indented: String = guest_wat("hello")
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    let manifest = format!(
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nmetadata:\n  name: hello\nspec:\n  language: wat\n  source:\n    code: |\n{indented}"
    );
    let (output, doc) = run_manifest(dir.path(), &manifest, &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"hello\n");
    assert_eq!(doc["reason"], "Completed");
}

#[test]
fn run_builds_a_prebuilt_wasm_reactor_and_mirrors_exit_codes() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let add =
        base64::engine::general_purpose::STANDARD.encode(wat::parse_str(guest_wat("add")).unwrap());
    let manifest = format!(
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nmetadata:\n  name: add\nspec:\n  language: wasm\n  entrypoint: add\n  source:\n    base64: {add}\n"
    );
    let (output, doc) = run_manifest(dir.path(), &manifest, &["--arg", "20", "--arg", "22"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(doc["returns"][0], 42);

    let exit3 = base64::engine::general_purpose::STANDARD
        .encode(wat::parse_str(guest_wat("exit3")).unwrap());
    let manifest = format!(
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nmetadata:\n  name: exit3\nspec:\n  language: wasm\n  source:\n    base64: {exit3}\n"
    );
    let (output, doc) = run_manifest(dir.path(), &manifest, &[]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(doc["reason"], "NonZeroExit");
}

#[test]
fn run_a_python_function_with_an_execution() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nmetadata:\n  name: greet\nspec:\n  language: python\n  source:\n    code: |\n      import sys, json\n      data = json.load(sys.stdin)\n      print('hello', data['name'], sys.argv[1:])\n";
    let execution = dir.path().join("execution.yaml");
    std::fs::write(
        &execution,
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmExecution\nspec:\n  functionRef: {name: greet}\n  args: [x, y]\n  input: {name: ada}\n  timeoutMillis: 60000\n",
    )
    .unwrap();
    let (output, doc) = run_manifest(
        dir.path(),
        manifest,
        &["--execution", execution.to_str().unwrap()],
    );
    assert_eq!(doc["reason"], "Completed", "{doc}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello ada ['x', 'y']\n"
    );
}

#[test]
fn run_reports_compile_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nspec:\n  language: wat\n  source:\n    code: '(module (func (i32.const)))'\n",
    )
    .unwrap();
    let output = wasmfn().arg("run").arg(&path).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "a compile failure is the source's"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("wasmfn run: compile failed:\nmain.wat:1:25: error: "),
        "{stderr}"
    );
}

/// A WAT function manifest with `spec` lines appended (indented by two spaces).
fn wat_function(guest: &str, spec_extra: &str) -> String {
    let indented: String = guest_wat(guest)
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nmetadata:\n  name: {guest}\nspec:\n  language: wat\n{spec_extra}  source:\n    code: |\n{indented}"
    )
}

#[test]
fn run_honours_the_timeout_of_the_function_defaults_and_of_the_execution_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (output, doc) = run_manifest(
        dir.path(),
        &wat_function("loop", "  defaults:\n    timeoutMillis: 300\n"),
        &[],
    );
    assert_eq!(output.status.code(), Some(124));
    assert_eq!(doc["reason"], "TimedOut");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let execution = dir.path().join("execution.yaml");
    std::fs::write(
        &execution,
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmExecution\nmetadata: {name: short}\nspec:\n  functionRef: {name: loop}\n  timeoutMillis: 200\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (output, doc) = run_manifest(
        dir.path(),
        &wat_function("loop", "  defaults:\n    timeoutMillis: 60000\n"),
        &["--execution", execution.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(124), "{doc}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the execution's 200 ms, not the function's minute"
    );
}

#[test]
fn run_honours_the_memory_limit_and_env_of_the_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let (output, doc) = run_manifest(
        dir.path(),
        &wat_function("big-memory", "  defaults:\n    memoryLimit: 16Mi\n"),
        &[],
    );
    assert_eq!(output.status.code(), Some(137), "{doc}");
    assert_eq!(doc["reason"], "MemoryLimitExceeded");
    let (output, doc) = run_manifest(
        dir.path(),
        &wat_function("big-memory", "  defaults:\n    memoryLimit: 512Mi\n"),
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{doc}");

    // env: the function's defaults, an execution entry replacing one by name, --env last.
    let manifest = "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nmetadata: {name: env}\nspec:\n  language: python\n  defaults:\n    env: [{name: A, value: function}, {name: B, value: function}, {name: C, value: function}]\n  source:\n    code: |\n      import os\n      print(os.environ['A'], os.environ['B'], os.environ['C'])\n";
    let execution = dir.path().join("execution.yaml");
    std::fs::write(
        &execution,
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmExecution\nmetadata: {name: e}\nspec:\n  functionRef: {name: env}\n  env: [{name: B, value: execution}, {name: C, value: execution}]\n",
    )
    .unwrap();
    let (output, doc) = run_manifest(
        dir.path(),
        manifest,
        &[
            "--execution",
            execution.to_str().unwrap(),
            "--env",
            "C=flag",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{doc}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "function execution flag\n"
    );
}

/// Runs `wasmfn ARGS…` and returns (exit code, stdout, stderr).
fn wasmfn_with(args: &[&str]) -> (Option<i32>, String, String) {
    let output = wasmfn().args(args).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_wrong_value_of_a_closed_set_is_a_usage_error_and_help_lists_the_values() {
    for args in [
        &["compile", "--language", "cobol", "x.cob"][..],
        &["compile", "--language", "go", "--opt-level", "fast", "x.go"],
        &["exec", "--language", "ruby", "x.rb"],
        &["completions", "tcsh"],
        &["run", "--no-such-flag", "f.yaml"],
    ] {
        let (code, _, stderr) = wasmfn_with(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error: "), "{args:?}: {stderr}");
    }
    // Values wasmfn parses itself are usage errors too.
    for (args, message) in [
        (
            &["exec", "--invoke", "add", "--args", "[1,", "x.wasm"][..],
            "--args \"[1,\" is not JSON",
        ),
        (
            &["exec", "--output-limit", "12X", "x.wasm"],
            "--output-limit: invalid size unit",
        ),
    ] {
        let (code, _, stderr) = wasmfn_with(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let (_, compile_help, _) = wasmfn_with(&["compile", "--help"]);
    assert!(
        compile_help.contains(
            "[possible values: rust, c, cpp, go, assemblyscript, typescript, wat, wasm, python, javascript]"
        ),
        "{compile_help}"
    );
    assert!(compile_help.contains("speed") && compile_help.contains("size"));
    let (_, help, _) = wasmfn_with(&["exec", "--help"]);
    assert!(
        help.contains("python") && help.contains("javascript"),
        "{help}"
    );
    // A short form still works, hidden from the list.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("m.wat");
    std::fs::write(&source, "(module)").unwrap();
    let out = dir.path().join("out");
    let (code, _, stderr) = wasmfn_with(&[
        "compile",
        "-l",
        "WAT",
        "--opt-level",
        "0",
        "--termination-log",
        "-",
        "-o",
        out.to_str().unwrap(),
        source.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn an_invalid_manifest_is_a_usage_error_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pod.yaml");
    std::fs::write(&path, "apiVersion: v1\nkind: Pod\nspec: {}\n").unwrap();
    let (code, _, stderr) = wasmfn_with(&["run", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: document 1: apiVersion is \"v1\"; expected wasmfn.dev/v1alpha1",
            path.display()
        )),
        "{stderr}"
    );
    std::fs::write(
        &path,
        "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nspec:\n  language: wat\n  source: {code: '(module)'}\n  defaults: {timeoutMillis: 5s}\n",
    )
    .unwrap();
    let (code, _, stderr) = wasmfn_with(&["run", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("spec.defaults.timeoutMillis: invalid type: string \"5s\", expected i64"),
        "{stderr}"
    );
    let (code, _, stderr) = wasmfn_with(&["run", "/nonexistent/f.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/f.yaml"),
        "{stderr}"
    );
}

#[test]
fn every_help_shows_the_exit_code_table() {
    for command in ["", "exec", "run", "compile", "aot", "completions"] {
        let args: Vec<&str> = command.split_whitespace().chain(["--help"]).collect();
        let (code, help, _) = wasmfn_with(&args);
        assert_eq!(code, Some(0));
        assert!(
            help.contains("Exit codes (the same for every command):"),
            "{command}: {help}"
        );
        for line in [
            "  2    usage",
            "  124  a time limit passed",
            "  126  exec, run: the module cannot run",
        ] {
            assert!(help.contains(line), "{command}: {line}");
        }
    }
}

#[test]
fn completions_cover_the_subcommands() {
    let (code, bash, _) = wasmfn_with(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    assert!(
        bash.contains("complete -F _wasmfn"),
        "a bash completion function"
    );
    for sub in [
        "exec",
        "run",
        "compile",
        "aot",
        "artifact",
        "agent-status",
        "completions",
    ] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(
        bash.contains("assemblyscript"),
        "values of --language are completed"
    );
    let (code, zsh, _) = wasmfn_with(&["completions", "zsh"]);
    assert_eq!(code, Some(0));
    assert!(zsh.starts_with("#compdef wasmfn"), "{zsh}");
    let (code, fish, _) = wasmfn_with(&["completions", "fish"]);
    assert_eq!(code, Some(0));
    assert!(fish.contains("complete -c wasmfn"), "{fish}");
}

#[test]
fn outside_a_pod_the_result_goes_to_stderr_and_nothing_is_created_in_dev() {
    let termination_log = Path::new("/dev/termination-log");
    assert!(
        !termination_log.exists(),
        "this test runs outside a pod, where /dev/termination-log does not exist"
    );
    let dir = tempfile::tempdir().unwrap();
    let hello = module(dir.path(), "hello");
    let output = wasmfn().arg("exec").arg(&hello).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout, b"hello\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let doc: Value = serde_json::from_str(stderr.trim_end()).unwrap();
    assert_eq!(doc["reason"], "Completed");
    assert!(
        !termination_log.exists(),
        "exec created /dev/termination-log"
    );
    // A compile does not create it either.
    let source = dir.path().join("m.wat");
    std::fs::write(&source, "(module)").unwrap();
    let output = wasmfn()
        .args(["compile", "-l", "wat", "--no-cache", "-o"])
        .arg(dir.path().join("out"))
        .arg(&source)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        !termination_log.exists(),
        "compile created /dev/termination-log"
    );
    // Another path in /dev is refused, not created.
    let missing = format!("/dev/wasmfn-result-{}", std::process::id());
    let output = wasmfn()
        .args(["exec", "--result", &missing])
        .arg(&hello)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&output.stderr).contains("creates no files in /dev"));
    assert!(!Path::new(&missing).exists());
}

#[test]
fn an_existing_termination_log_path_is_written_as_in_a_pod() {
    // Inside a pod the kubelet provides the file; any existing file in /dev is written the
    // same way (truncated, not created): /dev/null stands in for it here.
    let dir = tempfile::tempdir().unwrap();
    let hello = module(dir.path(), "hello");
    let output = wasmfn()
        .args(["exec", "--result", "/dev/null"])
        .arg(&hello)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        output.stderr.is_empty(),
        "the document went to the file, not stderr"
    );
}

/// Runs `command` under `script`, so its stderr is a terminal; returns what it printed.
fn on_a_terminal(command: &str, no_color: bool) -> String {
    let mut script = Command::new("script");
    script.args(["-qec", command, "/dev/null"]);
    script.env_remove("NO_COLOR");
    if no_color {
        script.env("NO_COLOR", "1");
    }
    script.env("WASMFN_INTERPRETERS", interpreters());
    script.env(
        "WASM_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-compile-cache"),
    );
    let output = script
        .output()
        .unwrap_or_else(|e| panic!("script (util-linux) runs commands on a terminal: {e}"));
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn on_a_terminal_run_shows_a_line_per_phase_and_honours_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.yaml");
    std::fs::write(&path, wat_function("hello", "")).unwrap();
    let command = format!(
        "{} run {} --no-cache --result /dev/null",
        env!("CARGO_BIN_EXE_wasmfn"),
        path.display()
    );
    let plain = on_a_terminal(&command, true);
    let lines: Vec<&str> = plain.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines[0].starts_with("wasmfn: compiling main.wat with wat2wasm"),
        "{plain}"
    );
    assert_eq!(
        lines[1], "wasmfn:   running wat2wasm…",
        "a step of the compile"
    );
    assert!(lines[2].starts_with("wasmfn: compiled in "), "{plain}");
    assert_eq!(
        lines[3],
        "wasmfn: running hello (timeout 30s, memory 128Mi)…"
    );
    assert_eq!(lines[4], "hello");
    assert!(!plain.contains('\x1b'), "NO_COLOR: no escapes\n{plain}");
    let coloured = on_a_terminal(&command, false);
    assert!(
        coloured.contains("\x1b[2mwasmfn: compiling main.wat"),
        "{coloured}"
    );

    // Without a terminal, the same run prints only the guest's output.
    let output = wasmfn()
        .args(["run", "--no-cache", "--result", "/dev/null"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.stdout, b"hello\n");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn exec_forwards_a_100_mb_flood_completely_and_the_document_still_fits() {
    let dir = tempfile::tempdir().unwrap();
    let misbehave = support::guest("rust/misbehave");
    let result = dir.path().join("result.json");
    let output = wasmfn()
        .args(["exec", "--output-limit", "none", "--result"])
        .arg(&result)
        .arg(&misbehave)
        .args(["flood", "100"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout.len(), 100 << 20);
    let doc = document(&result);
    assert_eq!(doc["stdout"]["size"], 100 << 20);
    assert_eq!(doc["stdout"]["truncated"], true);
    assert_eq!(
        doc["stdout"]["sha256"],
        format!("sha256:{}", hex::encode(Sha256::digest(&output.stdout)))
    );
}

#[test]
fn exec_runs_a_javascript_script() {
    let dir = tempfile::tempdir().unwrap();
    // Compile the interpreter's AOT form now if no test did yet (it is cached next to it).
    support::aot_of(&support::interpreters_dir().join("javascript/quickjs.wasm"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/javascript/probe.js");
    let (output, doc) = exec(
        dir.path(),
        &[
            "--language",
            "javascript",
            "--stdin",
            "abc",
            "-e",
            "GREETING=hej",
            script.to_str().unwrap(),
            "x",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{doc}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from javascript\nargs: x\nenv: hej\nstdin: abc"
    );
    assert_eq!(
        doc["runtime"]["aot"], true,
        "the interpreter's AOT form from make setup/tests"
    );
}

#[test]
fn artifact_pack_then_exec_runs_the_packed_form_and_refuses_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let hello = module(dir.path(), "hello");
    let packed = dir.path().join("packed");
    let status = wasmfn()
        .args(["artifact", "pack", "--part-bytes", "32", "-o"])
        .arg(&packed)
        .arg(&hello)
        .status()
        .unwrap();
    assert!(status.success());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(packed.join("artifact.json")).unwrap()).unwrap();
    let digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(&hello).unwrap()))
    );
    assert_eq!(manifest["digest"], digest.as_str());
    assert!(manifest["parts"].as_array().unwrap().len() >= 2);

    // An AOT form next to the plain module is not taken for the packed one.
    assert!(wasmfn().arg("aot").arg(&hello).status().unwrap().success());
    let aot_beside_dir = dir.path().join("packed.aot.so");
    std::fs::copy(dir.path().join("hello.wasm.aot.so"), &aot_beside_dir).unwrap();
    std::fs::copy(
        dir.path().join("hello.wasm.aot.so.json"),
        dir.path().join("packed.aot.so.json"),
    )
    .unwrap();
    for path in [packed.clone(), packed.join("artifact.json")] {
        let (output, doc) = exec(dir.path(), &[path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(0), "{doc}");
        assert_eq!(output.stdout, b"hello\n");
        assert_eq!(doc["module"]["sha256"], digest.as_str());
        assert_eq!(
            doc["runtime"]["aot"], false,
            "no implicit AOT for a packed artifact"
        );
        assert!(doc["runtime"]["aotRejected"].is_null(), "{doc}");
    }
    // ... but a named one is, since it is bound to the unpacked module's digest.
    let (_, doc) = exec(
        dir.path(),
        &[
            "--aot",
            aot_beside_dir.to_str().unwrap(),
            packed.to_str().unwrap(),
        ],
    );
    assert_eq!(doc["runtime"]["aot"], true, "{doc}");

    let unpacked = dir.path().join("unpacked.wasm");
    let status = wasmfn()
        .args(["artifact", "unpack", "-o"])
        .arg(&unpacked)
        .arg(&packed)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(&unpacked).unwrap(),
        std::fs::read(&hello).unwrap()
    );

    let part = packed.join("module.gz.001");
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&part, bytes).unwrap();
    let (output, doc) = exec(dir.path(), &[packed.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(126));
    assert_eq!(doc["reason"], "InvalidModule");
    let message = doc["message"].as_str().unwrap();
    assert!(
        message.contains("module.gz.001") && message.contains("digest mismatch"),
        "{message}"
    );
    let output = wasmfn()
        .args(["artifact", "unpack", "-o"])
        .arg(&unpacked)
        .arg(&packed)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&output.stderr).contains("module.gz.001"));
}
