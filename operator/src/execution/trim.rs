//! What the operator's watch caches keep of an object: what reconciles decide on, not the
//! payloads.
//!
//! One tenant's large objects (256 KiB of stdin on each of thousands of executions, 64 KiB of
//! output in each status, 1 MiB sources) would otherwise all sit in memory at once and could push
//! the operator past its memory limit, for every tenant. The cached copy drops payloads above
//! [`KEEP_BYTES`] and the managed fields (never read), and says so in an annotation; a reconcile
//! that meets a trimmed execution reads it whole from the API server (only executions with a
//! large payload pay that GET), so nothing is ever decided or written from a trimmed copy.

use kube::api::ObjectMeta;
use wasmfn_api::{WasmExecution, WasmFunction};

/// The annotation a trimmed cached copy carries (never written to the API server).
pub const TRIMMED: &str = "wasmfn.dev/cache-trimmed";

/// Payloads up to this size stay in the cache.
pub const KEEP_BYTES: usize = 4096;

fn mark(metadata: &mut ObjectMeta) {
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(TRIMMED.to_owned(), "true".to_owned());
}

fn big_text(text: &Option<String>) -> bool {
    text.as_ref().is_some_and(|t| t.len() > KEEP_BYTES)
}

fn big_json(value: &Option<serde_json::Value>) -> bool {
    value
        .as_ref()
        .is_some_and(|v| serde_json::to_vec(v).map_or(true, |b| b.len() > KEEP_BYTES))
}

/// Trims a cached execution: large stdin or input, large stdout, stderr or result.
pub fn execution(execution: &mut WasmExecution) {
    execution.metadata.managed_fields = None;
    let mut trimmed = false;
    if big_text(&execution.spec.stdin) {
        execution.spec.stdin = None;
        trimmed = true;
    }
    if big_json(&execution.spec.input) {
        execution.spec.input = None;
        trimmed = true;
    }
    if let Some(status) = execution.status.as_mut() {
        for stream in [&mut status.stdout, &mut status.stderr] {
            if big_text(stream) {
                *stream = None;
                trimmed = true;
            }
        }
        if big_json(&status.result) {
            status.result = None;
            trimmed = true;
        }
    }
    if trimmed {
        mark(&mut execution.metadata);
    }
}

/// Trims a cached function for the execution controller, which needs its status and run
/// defaults, never its source.
pub fn function(function: &mut WasmFunction) {
    function.metadata.managed_fields = None;
    let source = &mut function.spec.source;
    if big_text(&source.code) || big_text(&source.base64) {
        source.code = None;
        source.base64 = None;
        mark(&mut function.metadata);
    }
}

/// Whether `execution` is a trimmed cached copy (read it whole before deciding on it).
pub fn is_trimmed(execution: &WasmExecution) -> bool {
    execution
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(TRIMMED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use serde_json::json;
    use wasmfn_api::{FunctionReference, WasmExecutionSpec, WasmExecutionStatus};

    fn with(stdin: Option<String>, stdout: Option<String>) -> WasmExecution {
        let mut e = WasmExecution::new(
            "e",
            WasmExecutionSpec {
                function_ref: FunctionReference { name: "f".into() },
                stdin,
                ..serde_json::from_value(json!({"functionRef": {"name": "f"}})).expect("spec")
            },
        );
        e.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        e.status = Some(WasmExecutionStatus {
            stdout,
            result: Some(json!({"ok": true})),
            ..Default::default()
        });
        e
    }

    #[test]
    fn small_payloads_stay_and_the_copy_is_not_marked() {
        let mut e = with(Some("x".repeat(KEEP_BYTES)), Some("out".into()));
        execution(&mut e);
        assert_eq!(e.spec.stdin.as_deref().map(str::len), Some(KEEP_BYTES));
        let status = e.status.as_ref().expect("status");
        assert_eq!(status.stdout.as_deref(), Some("out"));
        assert_eq!(status.result, Some(json!({"ok": true})));
        assert!(!is_trimmed(&e));
        assert_eq!(
            e.metadata.managed_fields, None,
            "never read, always dropped"
        );
    }

    #[test]
    fn large_stdin_output_or_result_are_dropped_and_the_copy_says_so() {
        let mut e = with(Some("x".repeat(KEEP_BYTES + 1)), None);
        execution(&mut e);
        assert_eq!(e.spec.stdin, None);
        assert!(is_trimmed(&e));

        let mut e = with(None, Some("y".repeat(64 << 10)));
        execution(&mut e);
        assert_eq!(e.status.as_ref().and_then(|s| s.stdout.clone()), None);
        assert!(is_trimmed(&e));

        let mut e = with(None, None);
        e.spec.input = Some(json!({"blob": "z".repeat(KEEP_BYTES)}));
        e.status.as_mut().expect("status").result = Some(json!(["w".repeat(KEEP_BYTES)]));
        execution(&mut e);
        assert_eq!(e.spec.input, None);
        assert_eq!(e.status.as_ref().and_then(|s| s.result.clone()), None);
        assert!(is_trimmed(&e));
    }

    #[test]
    fn a_large_source_leaves_the_execution_controllers_copy_of_a_function() {
        let mut f: WasmFunction = serde_json::from_value(json!({
            "apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
            "metadata": {"name": "f"},
            "spec": {"language": "rust", "source": {"code": "a".repeat(1 << 20)}}
        }))
        .expect("function");
        function(&mut f);
        assert_eq!(f.spec.source.code, None);
        assert!(f
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a[TRIMMED] == "true"));
        let mut small: WasmFunction = serde_json::from_value(json!({
            "apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
            "metadata": {"name": "f"},
            "spec": {"language": "rust", "source": {"code": "fn main() {}"}}
        }))
        .expect("function");
        function(&mut small);
        assert_eq!(small.spec.source.code.as_deref(), Some("fn main() {}"));
        assert_eq!(small.metadata.annotations, None);
    }
}
