//! WasmFunctions and WasmExecutions read as the `wasmfn_api` types, so a suite asserts on the
//! fields the API defines: a renamed or retyped status field breaks the suite's build, or fails
//! the read with the object shown, instead of reading as a silent `null`.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::de::DeserializeOwned;
use wasmfn_api::{
    ExecutionPhase, WasmExecution, WasmExecutionStatus, WasmFunction, WasmFunctionStatus,
};
use wasmfn_e2e::Kubectl;

/// `object` (as `kubectl get -o json` prints it) as a `T`; one that does not parse fails the
/// test, showing the object.
pub fn parse<T: DeserializeOwned>(object: &serde_json::Value) -> T {
    serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("not a {}: {e}: {object:#}", std::any::type_name::<T>()))
}

/// WasmExecution `name`, now.
pub fn get_execution(ns: &Kubectl, name: &str) -> WasmExecution {
    get(ns, "wasmexecution", name)
}

/// WasmFunction `name`, now.
pub fn get_function(ns: &Kubectl, name: &str) -> WasmFunction {
    get(ns, "wasmfunction", name)
}

fn get<T: DeserializeOwned>(ns: &Kubectl, kind: &str, name: &str) -> T {
    let object = ns
        .json(&["get", kind, name])
        .unwrap_or_else(|e| panic!("get {kind} {name}: {e}"));
    parse(&object)
}

/// Polls WasmExecution `name` until `done` returns `Some`; fails after `timeout` with the
/// execution's last status in the error.
pub fn wait_for_execution<T>(
    ns: &Kubectl,
    name: &str,
    timeout: Duration,
    mut done: impl FnMut(&WasmExecution) -> Option<T>,
) -> wasmfn_e2e::Result<T> {
    ns.wait_for(&["wasmexecution", name], timeout, |object| {
        done(&parse(object))
    })
}

/// Polls WasmFunction `name` until `done` returns `Some`; fails after `timeout` with the
/// function's last status in the error.
pub fn wait_for_function<T>(
    ns: &Kubectl,
    name: &str,
    timeout: Duration,
    mut done: impl FnMut(&WasmFunction) -> Option<T>,
) -> wasmfn_e2e::Result<T> {
    ns.wait_for(&["wasmfunction", name], timeout, |object| {
        done(&parse(object))
    })
}

/// The execution's status; an execution without one fails the test.
pub fn execution_status(execution: &WasmExecution) -> &WasmExecutionStatus {
    execution.status.as_ref().unwrap_or_else(|| {
        panic!(
            "execution {:?} has no status",
            execution.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// The function's status; a function without one fails the test.
pub fn function_status(function: &WasmFunction) -> &WasmFunctionStatus {
    function.status.as_ref().unwrap_or_else(|| {
        panic!(
            "function {:?} has no status",
            function.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// The execution's phase, if it has a status with one.
pub fn execution_phase(execution: &WasmExecution) -> Option<ExecutionPhase> {
    execution.status.as_ref()?.phase
}

/// Whether the execution reached a phase that never changes.
pub fn has_finished(execution: &WasmExecution) -> bool {
    matches!(
        execution_phase(execution),
        Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed | ExecutionPhase::TimedOut)
    )
}

/// The execution's condition of type `kind`, when present.
pub fn execution_condition<'a>(execution: &'a WasmExecution, kind: &str) -> Option<&'a Condition> {
    execution
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
}

/// A language as the API spells it (`Rust`, `AssemblyScript`, …) from any name the API reads,
/// including the lower-case names the source trees and the builder use (`rust`,
/// `assemblyscript`).
pub fn language(name: &str) -> serde_json::Value {
    let language: wasmfn_api::Language = parse(&serde_json::Value::from(name));
    serde_json::to_value(language).expect("a language serialises")
}
