//! The AOT form is used only when it belongs to the module and the runtime, and when it is
//! used, native code really runs.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::json;
use support::*;
use wasmfn_execution::{aot, Entry, Reason};

fn fib_request(aot: Option<std::path::PathBuf>) -> wasmfn_execution::RunRequest {
    let mut request = request(&guest("wat/fib"));
    request.aot = aot;
    request.entry = Entry::Invoke {
        export: "fib".into(),
        args: vec![json!(30)],
    };
    request
}

#[test]
fn aot_runs_native_code_much_faster() {
    let module = guest("wat/fib");
    let interpreted = exec(&fib_request(None));
    let compiled = exec(&fib_request(Some(aot_of(&module))));
    for execution in [&interpreted, &compiled] {
        assert_eq!(execution.document.reason, Reason::Completed);
        assert_eq!(
            execution.document.returns,
            vec![wasmfn_execution::result::ReturnValue::Integer(832040)]
        );
    }
    assert!(!interpreted.document.runtime.aot);
    assert!(
        compiled.document.runtime.aot,
        "{:?}",
        compiled.document.runtime
    );
    let ratio = interpreted.document.timings.run_ms / compiled.document.timings.run_ms;
    assert!(
        ratio > 10.0,
        "AOT only {ratio:.1}x faster: {:?} vs {:?}",
        interpreted.document.timings,
        compiled.document.timings
    );
}

#[test]
fn an_aot_form_of_another_module_is_ignored() {
    let fib = guest("wat/fib");
    let other = guest("wat/add");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.aot.so");
    aot::compile(
        &wasmfn_execution::artifact::ModuleBytes::read(&other).unwrap(),
        &wrong,
    )
    .unwrap();
    let execution = exec(&fib_request(Some(wrong)));
    assert_eq!(execution.document.reason, Reason::Completed);
    assert!(!execution.document.runtime.aot);
    let why = execution.document.runtime.aot_rejected.clone().unwrap();
    assert!(why.contains("compiled from"), "{why}");
    let _ = fib;
}

#[test]
fn an_aot_form_from_another_runtime_version_is_ignored() {
    let module = guest("wat/fib");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fib.aot.so");
    aot::compile(
        &wasmfn_execution::artifact::ModuleBytes::read(&module).unwrap(),
        &path,
    )
    .unwrap();
    let meta_path = aot::metadata_path(&path);
    let mut metadata: aot::AotMetadata =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    metadata.wasmedge_version = "0.0.1".into();
    std::fs::write(&meta_path, serde_json::to_vec(&metadata).unwrap()).unwrap();
    let execution = exec(&fib_request(Some(path)));
    assert_eq!(execution.document.reason, Reason::Completed);
    assert!(!execution.document.runtime.aot);
    assert!(execution
        .document
        .runtime
        .aot_rejected
        .unwrap()
        .contains("0.0.1"));
}
