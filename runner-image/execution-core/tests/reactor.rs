//! Library (reactor) modules: a named export called with typed arguments given as JSON.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::json;
use support::*;
use wasmfn_execution::result::ReturnValue;
use wasmfn_execution::{Entry, Reason};

fn invoke(
    module: &std::path::Path,
    export: &str,
    args: Vec<serde_json::Value>,
) -> wasmfn_execution::Execution {
    let mut request = request(module);
    request.entry = Entry::Invoke {
        export: export.into(),
        args,
    };
    exec(&request)
}

#[test]
fn assemblyscript_add() {
    let module = guest("assemblyscript/add");
    let execution = invoke(&module, "add", vec![json!(40), json!(2)]);
    assert_eq!(
        execution.document.reason,
        Reason::Completed,
        "{}",
        execution.document.message
    );
    assert_eq!(execution.document.returns, vec![ReturnValue::Integer(42)]);
    assert_eq!(execution.document.exit_code, None);
    assert_eq!(execution.document.process_exit_code(), 0);
}

#[test]
fn every_numeric_type() {
    let module = guest("wat/add");
    let execution = invoke(&module, "scale", vec![json!(3), json!(0.5)]);
    assert_eq!(execution.document.returns, vec![ReturnValue::Float(1.5)]);
}

#[test]
fn wrong_argument_count_is_bad_arguments() {
    let execution = invoke(&guest("wat/add"), "add", vec![json!(1)]);
    assert_eq!(execution.document.reason, Reason::BadArguments);
    assert!(
        execution.document.message.contains("takes 2"),
        "{}",
        execution.document.message
    );
}

#[test]
fn wrong_argument_types_are_bad_arguments() {
    for args in [
        vec![json!(1), json!("2")],
        vec![json!(1), json!(2.5)],
        vec![json!(1), json!(null)],
    ] {
        let execution = invoke(&guest("assemblyscript/add"), "add", args);
        assert_eq!(execution.document.reason, Reason::BadArguments);
    }
}

#[test]
fn missing_export() {
    let execution = invoke(&guest("wat/add"), "subtract", vec![]);
    assert_eq!(execution.document.reason, Reason::MissingExport);
    assert!(
        execution.document.message.contains("add"),
        "lists what exists"
    );
    // a library module run as a command has no _start
    let execution = exec(&request(&guest("assemblyscript/add")));
    assert_eq!(execution.document.reason, Reason::MissingExport);
}
