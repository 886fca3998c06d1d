//! The probe guest (hello, args, env, stdin echo, exit code) in every supported language, each
//! compiled at test time by its real toolchain, under the interpreter and under AOT.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::PathBuf;

use support::*;
use wasmfn_execution::interpreter::{script_request, ScriptLanguage};
use wasmfn_execution::{Reason, RunRequest, StdinSource};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Interpreter,
    Aot,
}

fn probe_request(language: &str, mode: Mode, exit_code: Option<i32>) -> RunRequest {
    let mut request = match language {
        "python" | "javascript" => {
            let script_language = ScriptLanguage::parse(language).unwrap();
            let extension = if language == "python" { "py" } else { "js" };
            let interpreters = interpreters_dir();
            let script: PathBuf = guests_dir()
                .join(language)
                .join(format!("probe.{extension}"));
            let mut request = script_request(
                request(&PathBuf::from("unused")),
                script_language,
                &interpreters,
                &script,
            );
            request.aot = match (mode, &request.module) {
                (Mode::Aot, wasmfn_execution::ModuleSource::Path(module)) => Some(aot_of(module)),
                _ => None,
            };
            request
        }
        _ => {
            let module = guest(&format!("{language}/probe"));
            let mut request = request(&module);
            if mode == Mode::Aot {
                request.aot = Some(aot_of(&module));
            }
            request
        }
    };
    request
        .args
        .extend(["one".to_owned(), "two words".to_owned()]);
    request.env.push(("GREETING".into(), "grüezi".into()));
    if let Some(code) = exit_code {
        request.env.push(("EXIT_CODE".into(), code.to_string()));
    }
    request.stdin = StdinSource::Bytes(b"line 1\nline 2 \xc3\xa9\n".to_vec());
    request
}

fn check_probe(language: &str, mode: Mode) {
    let execution = exec(&probe_request(language, mode, None));
    let document = &execution.document;
    assert_eq!(
        document.reason,
        Reason::Completed,
        "{language}: {} / stderr {}",
        document.message,
        String::from_utf8_lossy(&execution.stderr.head)
    );
    assert_eq!(document.exit_code, Some(0));
    assert_eq!(
        document.runtime.aot,
        mode == Mode::Aot,
        "{:?}",
        document.runtime
    );
    assert_eq!(
        stdout_text(&execution),
        format!(
            "hello from {language}\nargs: one two words\nenv: grüezi\nstdin: line 1\nline 2 é\n"
        )
    );
    assert_eq!(execution.stderr.head, b"probe done\n");
    assert!(!document.stdout.truncated);

    let execution = exec(&probe_request(language, mode, Some(3)));
    assert_eq!(execution.document.reason, Reason::NonZeroExit, "{language}");
    assert_eq!(execution.document.exit_code, Some(3));
    assert_eq!(execution.document.process_exit_code(), 3);
}

macro_rules! probe_tests {
    ($($name:ident: $language:literal,)*) => {
        mod interpreter {
            use super::*;
            $(#[test] fn $name() { check_probe($language, Mode::Interpreter) })*
        }
        mod aot {
            use super::*;
            $(#[test] fn $name() { check_probe($language, Mode::Aot) })*
        }
    };
}

probe_tests! {
    rust: "rust",
    c: "c",
    go: "go",
    assemblyscript: "assemblyscript",
    python: "python",
    javascript: "javascript",
}

#[test]
fn wat_hello() {
    let module = guest("wat/hello");
    let execution = exec(&request(&module));
    assert_eq!(execution.document.reason, Reason::Completed);
    assert_eq!(stdout_text(&execution), "hello\n");
    let mut aot_request = request(&module);
    aot_request.aot = Some(aot_of(&module));
    let execution = exec(&aot_request);
    assert!(execution.document.runtime.aot);
    assert_eq!(stdout_text(&execution), "hello\n");
}

#[test]
fn guests_see_only_the_directories_they_are_given() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), "from the host").unwrap();
    let script = dir.path().join("read.py");
    std::fs::write(
        &script,
        "import sys\ntry:\n    print(open(sys.argv[1]).read())\nexcept OSError as e:\n    print('denied', type(e).__name__)\n    sys.exit(7)\n",
    )
    .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("data.txt"),
        data_dir.path().join("data.txt"),
    )
    .unwrap();
    let interpreters = interpreters_dir();
    let base = |args: Vec<String>| {
        let mut request = request(&PathBuf::from("unused"));
        request.args = args;
        let mut request = script_request(request, ScriptLanguage::Python, &interpreters, &script);
        if let wasmfn_execution::ModuleSource::Path(module) = &request.module {
            request.aot = Some(aot_of(module));
        }
        request
    };
    // No --dir: the host file system is invisible.
    let host_path = data_dir.path().join("data.txt").display().to_string();
    let execution = exec(&base(vec![host_path]));
    assert_eq!(
        execution.document.exit_code,
        Some(7),
        "{}",
        stdout_text(&execution)
    );
    assert!(stdout_text(&execution).starts_with("denied"));
    // With --dir /data:<host dir> the file is readable at /data.
    let mut request = base(vec!["/data/data.txt".into()]);
    request.preopens.push(wasmfn_execution::Preopen::read_write(
        "/data",
        data_dir.path(),
    ));
    let execution = exec(&request);
    assert_eq!(
        execution.document.reason,
        Reason::Completed,
        "{}",
        stdout_text(&execution)
    );
    assert_eq!(stdout_text(&execution), "from the host\n");
}
