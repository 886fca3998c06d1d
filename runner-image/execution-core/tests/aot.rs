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

/// The shim's precompiled layers: a bundle of the module, its library and their metadata,
/// loaded from memory.
fn fib_bundle() -> aot::AotBundle {
    let module = guest("wat/fib");
    let bytes = wasmfn_execution::artifact::ModuleBytes::read(&module).unwrap();
    aot::AotBundle::from_files(&bytes, &aot_of(&module)).unwrap()
}

fn bundle_request(bundle: &aot::AotBundle) -> (std::fs::File, wasmfn_execution::RunRequest) {
    let (file, path) = bundle.library_file().unwrap();
    let mut request = fib_request(Some(path));
    request.module = wasmfn_execution::ModuleSource::Bytes(bundle.module.clone());
    request.aot_metadata = Some(bundle.metadata.clone());
    (file, request)
}

#[test]
fn a_bundle_survives_encoding_and_runs_native_code_from_memory() {
    let bundle = fib_bundle();
    let encoded = bundle.encode();
    assert!(aot::AotBundle::is_bundle(&encoded));
    assert!(!aot::AotBundle::is_bundle(&bundle.module));
    let decoded = aot::AotBundle::decode(&encoded).unwrap();
    assert_eq!(decoded, bundle);
    let (_file, request) = bundle_request(&decoded);
    let execution = exec(&request);
    assert_eq!(execution.document.reason, Reason::Completed);
    assert!(
        execution.document.runtime.aot,
        "{:?}",
        execution.document.runtime
    );
    let source = execution.document.runtime.aot_source.clone().unwrap();
    assert!(
        source.starts_with("precompiled layer (compiled by wasmfn from sha256:"),
        "{source}"
    );
}

#[test]
fn a_bundled_library_is_refused_for_any_other_module() {
    let mut bundle = fib_bundle();
    bundle.module = std::fs::read(guest("wat/add")).unwrap();
    let (_file, mut request) = bundle_request(&bundle);
    request.entry = Entry::Invoke {
        export: "add".into(),
        args: vec![json!(2), json!(3)],
    };
    let execution = exec(&request);
    assert_eq!(execution.document.reason, Reason::Completed);
    assert!(!execution.document.runtime.aot);
    let why = execution.document.runtime.aot_rejected.clone().unwrap();
    assert!(why.contains("compiled from"), "{why}");
}

#[test]
fn a_damaged_bundle_is_refused_with_what_is_wrong() {
    let encoded = fib_bundle().encode();
    for (damaged, expected) in [
        (encoded[1..].to_vec(), "wrong magic"),
        (
            encoded[..encoded.len() - 1].to_vec(),
            "library runs past its end",
        ),
        ([&encoded[..], b"x"].concat(), "1 bytes after its library"),
        (encoded[..25].to_vec(), "ends before the metadata's length"),
    ] {
        let error = aot::AotBundle::decode(&damaged).unwrap_err();
        assert!(error.contains(expected), "{expected}: {error}");
    }
}
