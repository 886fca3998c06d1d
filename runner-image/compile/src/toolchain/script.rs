//! Python and JavaScript: the artifact is the script itself, after a syntax check by the same
//! interpreter module that will run it (CPython-WASI, QuickJS-WASI), run through the execution
//! core with its limits. Nothing of the user's code executes during the check:
//!
//! - Python: a checker script calls `compile()` on the source and prints
//!   `file:line:col: error: SyntaxError: …`.
//! - JavaScript: QuickJS parses and links a module completely before evaluating any of it, so
//!   the source is checked with a `throw` of a marker value prepended on its first line (line
//!   numbers stay the same): a clean source stops at the marker, a bad one reports
//!   `SyntaxError: … at file:line`.

use std::path::Path;
use std::time::Instant;

use wasmfn_execution::interpreter::{self, ScriptLanguage};
use wasmfn_execution::{
    execute, DiscardSink, Isolation, Limits, ModuleSource, Preopen, RunRequest,
};

use super::{Build, Built, IdentityMemo, ToolchainIdentity, Toolchains};
use crate::diagnostics::{Diagnostic, Diagnostics, Severity};
use crate::language::Language;
use crate::{Error, Result};

const PYTHON_CHECKER: &str = r#"import sys
failed = False
for shown in sys.argv[1:]:
    with open("/wasmfn/source/" + shown, "rb") as source:
        text = source.read()
    try:
        compile(text, shown, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        line = getattr(error, "lineno", None) or 0
        column = getattr(error, "offset", None) or 0
        message = getattr(error, "msg", None) or str(error)
        print(f"{shown}:{line}:{column}: error: {type(error).__name__}: {message}")
        failed = True
sys.exit(1 if failed else 0)
"#;

const JAVASCRIPT_MARKER: &str = "__wasmfn_syntax_ok__";

fn script_language(language: Language) -> ScriptLanguage {
    if language == Language::Python {
        ScriptLanguage::Python
    } else {
        ScriptLanguage::JavaScript
    }
}

pub(super) fn identity(
    toolchains: &Toolchains,
    language: Language,
    memo: &IdentityMemo,
) -> Result<Vec<ToolchainIdentity>> {
    let module =
        interpreter::interpreter_module(&toolchains.interpreters, script_language(language));
    let name = module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(vec![
        ToolchainIdentity {
            name,
            version: memo.file_digest(&module)?,
        },
        ToolchainIdentity {
            name: "wasmedge".into(),
            version: wasmfn_execution::engine::runtime_info().version,
        },
    ])
}

pub(super) fn build(build: &Build<'_>, language: Language) -> Result<Built> {
    let (extensions, preferred): (&[&str], &[&str]) = match language {
        Language::Python => (&["py"], &["main.py"]),
        _ => (&["js", "mjs"], &["main.js", "index.js"]),
    };
    let entry = build.entry_file(extensions, preferred)?;
    if build.source.len() > 1 {
        return Err(Error::InvalidSource(format!(
            "a {language} function is one script; the source holds {} files",
            build.source.len()
        )));
    }
    let checker_dir = build.scratch_dir.join("checker");
    std::fs::create_dir_all(&checker_dir).map_err(|e| Error::io(&checker_dir, e))?;
    let remaining = build.deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(Error::TimedOut {
            limit: build.limits.wall_time,
        });
    }
    let limits = Limits {
        timeout: remaining,
        memory_bytes: build.limits.memory_bytes.min(1 << 30),
        capture_bytes: 64 << 10,
        output_limit_bytes: Some(1 << 20),
    };
    let text = build.source.get(&entry).unwrap_or_default();
    let request = match language {
        Language::Python => {
            let checker = checker_dir.join("wasmfn_check.py");
            std::fs::write(&checker, PYTHON_CHECKER).map_err(|e| Error::io(&checker, e))?;
            let mut request = command_request(limits, vec![entry.clone()]);
            request = interpreter::script_request(
                request,
                ScriptLanguage::Python,
                &build.toolchains.interpreters,
                &checker,
            );
            request
                .preopens
                .push(Preopen::read_only("/wasmfn/source", &build.source_dir));
            request
        }
        _ => {
            let probe = checker_dir.join(&entry);
            let mut marked = format!("throw \"{JAVASCRIPT_MARKER}\";").into_bytes();
            marked.extend_from_slice(text);
            std::fs::write(&probe, marked).map_err(|e| Error::io(&probe, e))?;
            interpreter::script_request(
                command_request(limits, Vec::new()),
                ScriptLanguage::JavaScript,
                &build.toolchains.interpreters,
                &probe,
            )
        }
    };
    let module =
        interpreter::interpreter_module(&build.toolchains.interpreters, script_language(language));
    if !module.is_file() {
        return Err(Error::ToolchainMissing {
            program: module.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    build.invocations.set(build.invocations.get() + 1);
    let execution = execute(&request, Isolation::Fork, &mut DiscardSink);
    let mut output = String::from_utf8_lossy(&execution.stdout.head).into_owned();
    output.push_str(&String::from_utf8_lossy(&execution.stderr.head));
    let document = &execution.document;
    if document.reason == wasmfn_execution::Reason::TimedOut {
        return Err(Error::TimedOut {
            limit: build.limits.wall_time,
        });
    }
    let clean = match language {
        Language::Python => document.exit_code == Some(0),
        _ => output.trim() == JAVASCRIPT_MARKER,
    };
    if !clean {
        let diagnostics = match language {
            Language::Python => build.diagnostics(&output),
            _ => javascript_diagnostics(&output, &entry),
        };
        if diagnostics.is_empty() {
            return Err(Error::Internal(format!(
                "the {language} checker failed without output: {} {}",
                document.reason.as_str(),
                document.message
            )));
        }
        return Err(Error::CompileFailed { diagnostics });
    }
    let artifact = build.output_dir.join(&entry);
    std::fs::write(&artifact, text).map_err(|e| Error::io(&artifact, e))?;
    Ok(Built {
        artifact,
        warnings: Diagnostics::default(),
    })
}

fn command_request(limits: Limits, args: Vec<String>) -> RunRequest {
    let mut request = RunRequest::command(ModuleSource::Bytes(Vec::new()));
    request.limits = limits;
    request.args = args;
    request
}

/// QuickJS prints `SyntaxError: message` then `    at /wasmfn/script/main.js:3`; other
/// failures (a module that cannot be linked) have no location.
fn javascript_diagnostics(output: &str, entry: &str) -> Diagnostics {
    let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(message) = lines.next() else {
        return Diagnostics::default();
    };
    let line = lines
        .find_map(|l| l.strip_prefix("at "))
        .and_then(|location| location.rsplit_once(':'))
        .and_then(|(path, line)| {
            Path::new(path)
                .file_name()
                .is_some_and(|name| name == entry)
                .then(|| line.trim().parse::<u32>().ok())
                .flatten()
        })
        .unwrap_or(0);
    Diagnostics {
        items: vec![Diagnostic {
            file: entry.to_owned(),
            line,
            column: 0,
            severity: Severity::Error,
            message: message.to_owned(),
        }],
        ..Diagnostics::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quickjs_syntax_errors_carry_the_line() {
        let diagnostics = javascript_diagnostics(
            "SyntaxError: unexpected token in expression: ';'\n    at /wasmfn/script/main.js:2\n\n",
            "main.js",
        );
        assert_eq!(
            diagnostics.render(),
            "main.js:2:0: error: SyntaxError: unexpected token in expression: ';'\n"
        );
    }

    #[test]
    fn quickjs_link_errors_have_no_line() {
        let diagnostics = javascript_diagnostics(
            "ReferenceError: could not load module filename 'nope'\n",
            "main.js",
        );
        assert_eq!(diagnostics.items[0].line, 0);
        assert!(javascript_diagnostics("", "main.js").is_empty());
    }
}
