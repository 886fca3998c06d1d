//! A module's own native code never runs: the `wasmedge` custom section ("universal" Wasm) is
//! refused before loading, and user bytes are loaded with WasmEdge's interpreter forced.
//!
//! The forged module is built here the way an attacker would: `wasmedge compile` module A to
//! WasmEdge's universal format, take its `wasmedge` section and append it to module B. Plain WasmEdge then
//! runs A's machine code over B's memory (the first test shows that, so the others cannot pass
//! against a forgery that does nothing).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::HashMap;
use std::sync::OnceLock;

use support::*;
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{Module, Store, Vm};
use wasmfn_artifact::{check_no_native_code, NativeCodeError};
use wasmfn_execution::runtime::{config_for, NativeCode};
use wasmfn_execution::{Entry, Limits, ModuleSource, Reason, RunRequest};

const A_LINE: &str = "code of module A...\n";
const B_LINE: &str = "code of module B.....\n";

/// Module B with module A's `wasmedge` section appended; built once per test process.
fn forged() -> Vec<u8> {
    static FORGED: OnceLock<Vec<u8>> = OnceLock::new();
    FORGED.get_or_init(forge).clone()
}

fn forge() -> Vec<u8> {
    let b = std::fs::read(guest("wat/native-b")).unwrap();
    // The packaged CLI, as the attacker would use it. (Not the SDK's compiler in this process:
    // WasmEdge's in-process linker must not run twice at once, and other tests compile AOT
    // forms concurrently.)
    let dir = tempfile::tempdir().unwrap();
    let universal = dir.path().join("a-universal.wasm");
    let output = std::process::Command::new("wasmedge")
        .arg("compile")
        .arg(guest("wat/native-a"))
        .arg(&universal)
        .output()
        .expect("the wasmedge CLI (make setup installs it)");
    assert!(output.status.success(), "{output:?}");
    let universal = std::fs::read(universal).unwrap();
    // WasmEdge appends its section last, so it runs from where the scan finds it to the end.
    let Err(NativeCodeError::Found { offset, .. }) = check_no_native_code(&universal) else {
        panic!("the universal form of A has no wasmedge section");
    };
    let mut forged = b.clone();
    forged.extend_from_slice(&universal[offset..]);
    assert_eq!(
        check_no_native_code(&forged),
        Err(NativeCodeError::Found {
            offset: b.len(),
            size: universal.len() - offset - section_header_len(&universal[offset..]),
        })
    );
    forged
}

/// Bytes before a section's contents: the id byte and the LEB128 size.
fn section_header_len(section: &[u8]) -> usize {
    1 + section[1..]
        .iter()
        .position(|byte| byte & 0x80 == 0)
        .unwrap()
        + 1
}

/// Calls B's (or A's) `which` export on `bytes` loaded with `config`, bypassing the scan.
fn which_code_runs(bytes: &[u8], native_code: NativeCode) -> i32 {
    let config = config_for(&Limits::default(), native_code).unwrap();
    let module = Module::from_bytes(Some(&config), bytes).unwrap();
    let mut wasi = WasiModule::create(None, None, None).unwrap();
    let mut instances = HashMap::new();
    instances.insert("wasi_snapshot_preview1".to_owned(), wasi.as_mut());
    let mut vm = Vm::new(Store::new(Some(&config), instances).unwrap());
    vm.register_module(None, module).unwrap();
    vm.run_func(None, "which", vec![]).unwrap()[0].to_i32()
}

fn run_bytes(bytes: Vec<u8>) -> wasmfn_execution::Execution {
    exec(&RunRequest::command(ModuleSource::Bytes(bytes)))
}

#[test]
fn the_forgery_runs_the_grafted_native_code_when_nothing_stops_it() {
    let forged = forged();
    assert_eq!(which_code_runs(&forged, NativeCode::FromVerifiedAot), 1);
    // The packaged CLI, default settings: A's 20-byte line printed from B's memory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forged.wasm");
    std::fs::write(&path, &forged).unwrap();
    let output = std::process::Command::new("wasmedge")
        .arg(&path)
        .output()
        .expect("the wasmedge CLI (make setup installs it)");
    assert_eq!(output.stdout.len(), A_LINE.len(), "{output:?}");
}

#[test]
fn a_module_carrying_native_code_is_refused_before_it_loads() {
    let execution = run_bytes(forged());
    let document = &execution.document;
    assert_eq!(document.reason, Reason::NativeCodeSection, "{document:?}");
    assert!(document.message.contains("\"wasmedge\""), "{document:?}");
    assert_eq!(execution.stdout.head, b"", "nothing ran");
    assert!(!document.runtime.aot);
    assert_eq!(document.process_exit_code(), 126);
    // The refusal names the module, so a person can find which artifact it was.
    assert!(document.module.is_some());

    // The same for a reactor call.
    let mut request = RunRequest::command(ModuleSource::Bytes(forged()));
    request.entry = Entry::Invoke {
        export: "which".into(),
        args: Vec::new(),
    };
    let execution = exec(&request);
    assert_eq!(execution.document.reason, Reason::NativeCodeSection);
    assert!(execution.document.returns.is_empty());
}

#[test]
fn user_bytes_load_with_the_interpreter_forced_so_a_hidden_section_would_be_ignored() {
    // The second wall: even past the scan, the configuration for user bytes runs B's own code.
    assert_eq!(which_code_runs(&forged(), NativeCode::Forbidden), 2);
}

#[test]
fn other_custom_sections_keep_working() {
    let mut bytes = std::fs::read(guest("wat/native-b")).unwrap();
    for (name, payload) in [
        ("name", &b"\x00\x02\x01b"[..]),
        ("producers", b"\x00"),
        (".debug_info", b"\x01\x02\x03"),
        ("wasmedge.note", b"not native code"),
    ] {
        let mut contents = vec![name.len() as u8];
        contents.extend_from_slice(name.as_bytes());
        contents.extend_from_slice(payload);
        bytes.extend_from_slice(&[0, contents.len() as u8]);
        bytes.extend(contents);
    }
    let execution = run_bytes(bytes);
    assert_eq!(
        execution.document.reason,
        Reason::Completed,
        "{:?}",
        execution.document
    );
    assert_eq!(stdout_text(&execution), B_LINE);
}

#[test]
fn a_runner_made_aot_form_still_runs_and_says_where_it_came_from() {
    let module = guest("wat/native-b");
    let aot = aot_of(&module);
    let mut request = request(&module);
    request.aot = Some(aot.clone());
    let execution = exec(&request);
    let runtime = &execution.document.runtime;
    assert_eq!(execution.document.reason, Reason::Completed);
    assert_eq!(stdout_text(&execution), B_LINE);
    assert!(runtime.aot, "{runtime:?}");
    let source = runtime.aot_source.as_deref().unwrap();
    let digest = &execution.document.module.as_ref().unwrap().sha256;
    assert!(
        source.contains(&aot.display().to_string()) && source.contains(digest.as_str()),
        "{source}"
    );
    let interpreted = exec(&support::request(&module));
    assert!(!interpreted.document.runtime.aot);
    assert_eq!(interpreted.document.runtime.aot_source, None);
}
