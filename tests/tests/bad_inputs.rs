//! The bad-input corpus end to end: each mistake a person can make in a WasmFunction or a
//! WasmExecution, and what that person reads back — the API server's refusal at `kubectl
//! apply` (the CRD schemas: one source kind, not both stdin and input, PascalCase enum values,
//! size limits), or the object's phase, condition reason and message and an event with the
//! same reason. `kubectl explain` shows every optional field's type, and every manifest in
//! `examples/` passes the schemas. Nothing may be lost, hang or crash the operator: the suite ends by checking that
//! the operator is still running and that a good execution created last still succeeds.

mod common;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::executions::{
    condition, events_for, execution, is_final, prebuilt_function, HELLO, SLEEPER,
};
use serde_json::{json, Value};
use wasmfn_e2e::operator::OperatorProcess;
use wasmfn_e2e::Kubectl;

const WAIT: Duration = Duration::from_secs(240);

/// A WebAssembly command whose `_start` is fine but which imports `env.nope`, a host function no
/// runtime provides.
const UNKNOWN_IMPORT: &str = r#"(module (import "env" "nope" (func)) (func (export "_start")))"#;

static OPERATOR: OnceLock<Mutex<OperatorProcess>> = OnceLock::new();

fn operator() -> MutexGuard<'static, OperatorProcess> {
    OPERATOR
        .get_or_init(|| Mutex::new(common::leading_operator("bad-inputs", &[])))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn namespace(prefix: &str) -> Kubectl {
    drop(operator());
    common::namespace(prefix)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn function(name: &str, language: &str, source: Value) -> String {
    json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
           "metadata": {"name": name}, "spec": {"language": language, "source": source}})
    .to_string()
}

/// The API server refuses `manifest` at `kubectl apply`; its message.
fn refused(ns: &Kubectl, manifest: &str) -> String {
    match ns.apply(manifest) {
        Ok(out) => panic!("the API server accepted it: {out}\n{manifest:.300}"),
        Err(error) => error.to_string(),
    }
}

/// Waits until `kind/name` is in one of `phases`; the object.
fn wait_phase(ns: &Kubectl, kind: &str, name: &str, phases: &[&str]) -> Value {
    ns.wait_for(&[kind, name], WAIT, |o| {
        phases
            .contains(&o["status"]["phase"].as_str().unwrap_or_default())
            .then(|| o.clone())
    })
    .unwrap_or_else(|e| panic!("{kind}/{name} in {phases:?}: {e}"))
}

/// Asserts `object`'s condition `kind` has `reason` and a message containing `says`, and that
/// an event with that reason was published about it.
fn assert_reported(ns: &Kubectl, object: &Value, kind: &str, reason: &str, says: &str) {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let condition = condition(object, kind).unwrap_or_else(|| panic!("{name}: no {kind}"));
    assert_eq!(condition["reason"], reason, "{name}: {condition}");
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{name}: {message:?} says {says:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = events_for(ns, name);
        if events.iter().any(|(_, r, _, _)| r == reason) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: an event with reason {reason}: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_api_server_refuses_unknown_languages_oversized_sources_and_out_of_range_fields() {
    let ns = namespace("refused");
    let unknown = refused(&ns, &function("cobol", "cobol", json!({"code": "x"})));
    assert!(unknown.contains("spec.language"), "{unknown}");
    let oversized = refused(
        &ns,
        &function("huge", "Rust", json!({"code": "a".repeat((1 << 20) + 1)})),
    );
    assert!(oversized.contains("spec.source.code"), "{oversized}");
    for (field, value) in [("timeoutMillis", 0), ("timeoutMillis", 86_400_001)] {
        let manifest = execution("bad-timeout", "f", json!({ field: value })).to_string();
        let message = refused(&ns, &manifest);
        assert!(message.contains("spec.timeoutMillis"), "{message}");
    }
    let many: Vec<String> = (0..257).map(|i| i.to_string()).collect();
    let message = refused(
        &ns,
        &execution("many-args", "f", json!({ "args": many })).to_string(),
    );
    assert!(message.contains("spec.args"), "{message}");
}

#[test]
fn the_api_server_refuses_two_sources_no_source_stdin_with_input_oversized_values_and_wrong_case() {
    let ns = namespace("schema");
    let module = base64(b"\0asm\x01\0\0\0");
    for (name, source) in [
        (
            "code-and-base64",
            json!({"code": "(module)", "base64": module}),
        ),
        (
            "code-and-map",
            json!({"code": "(module)", "configMapRef": {"name": "src"}}),
        ),
        (
            "all-three",
            json!({"code": "(module)", "configMapRef": {"name": "src"}, "base64": module}),
        ),
        ("none", json!({})),
        ("file-name-only", json!({"fileName": "main.wat"})),
    ] {
        let message = refused(&ns, &function(name, "Wat", source));
        assert!(
            message.contains("\"spec.source\" must validate one and only one schema (oneOf)"),
            "{name}: {message}"
        );
    }
    let both = refused(
        &ns,
        &execution("both", "f", json!({"stdin": "x", "input": {"a": 1}})).to_string(),
    );
    // Kubernetes 1.20 names the object the rule sits on: the spec (the field docs say why).
    assert!(
        both.contains("\"spec\" must not validate the schema (not)"),
        "{both}"
    );
    let long_arg = refused(
        &ns,
        &execution("long-arg", "f", json!({"args": ["ok", "a".repeat(4097)]})).to_string(),
    );
    assert!(
        long_arg.contains("spec.args in body should be at most 4096 chars long"),
        "{}",
        &long_arg[long_arg.len().saturating_sub(300)..]
    );
    let env = json!({"env": [{"name": "BIG", "value": "v".repeat(2049)}]});
    for (name, manifest) in [
        (
            "long-env",
            execution("long-env", "f", env.clone()).to_string(),
        ),
        (
            "long-default-env",
            json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
                   "metadata": {"name": "long-default-env"},
                   "spec": {"language": "Wat", "source": {"code": "(module)"}, "defaults": env}})
            .to_string(),
        ),
    ] {
        let message = refused(&ns, &manifest);
        assert!(
            message.contains(".env.value in body should be at most 2048 chars long"),
            "{name}: {}",
            &message[message.len().saturating_sub(300)..]
        );
    }
    // Enum values in another casing than the schema's PascalCase.
    for (field, manifest) in [
        (
            "spec.language",
            function("lower-language", "rust", json!({"code": "fn main() {}"})),
        ),
        (
            "spec.build.optimization",
            json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
                   "metadata": {"name": "lower-optimization"},
                   "spec": {"language": "Wat", "source": {"code": "(module)"},
                            "build": {"optimization": "size"}}})
            .to_string(),
        ),
        (
            "spec.artifactStore",
            json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
                   "metadata": {"name": "lower-store"},
                   "spec": {"language": "Wat", "source": {"code": "(module)"},
                            "artifactStore": "oci"}})
            .to_string(),
        ),
        (
            "spec.runtime",
            execution("lower-runtime", "f", json!({"runtime": "wasmedge"})).to_string(),
        ),
    ] {
        let message = refused(&ns, &manifest);
        assert!(
            message.contains(&format!("{field}: Unsupported value")),
            "{field}: {message}"
        );
    }
    // What the schema takes: one source, stdin alone, args and env values at their limits.
    ns.apply(&function("one-source", "Wat", json!({"code": "(module)"})))
        .expect("one source is accepted");
    let at_limits = json!({"stdin": "x", "args": ["a".repeat(4096)],
                           "env": [{"name": "BIG", "value": "v".repeat(2048)},
                                   {"name": "EMPTY", "value": ""}]});
    ns.apply(&execution("at-limits", "missing", at_limits).to_string())
        .expect("values at the limits are accepted");
}

#[test]
fn kubectl_explain_shows_the_type_of_every_formerly_nullable_field() {
    let ns = namespace("explain");
    for (field, kind) in [
        ("wasmexecution.spec.stdin", "string"),
        ("wasmexecution.spec.timeoutMillis", "integer"),
        ("wasmexecution.spec.memoryLimit", "string"),
        ("wasmexecution.spec.maxOutputBytes", "integer"),
        ("wasmexecution.spec.ttlSecondsAfterFinished", "integer"),
        ("wasmfunction.spec.source.code", "string"),
        ("wasmfunction.spec.defaults.timeoutMillis", "integer"),
    ] {
        let name = field.rsplit('.').next().unwrap_or_default();
        let expected = format!("FIELD:    {name} <{kind}>");
        // The API server publishes a new CRD's OpenAPI a moment after the CRD is applied.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let explained = ns
                .run(&["explain", field])
                .unwrap_or_else(|e| e.to_string());
            if explained.contains(&expected) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kubectl explain {field} shows no {expected:?}:\n{explained}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn every_manifest_in_examples_passes_the_schemas_on_a_server_side_dry_run() {
    let ns = namespace("examples");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut objects = 0;
    let mut args = vec!["apply".to_owned(), "--dry-run=server".to_owned()];
    for dir in ["functions", "executions"] {
        let dir = examples.join(dir);
        for entry in std::fs::read_dir(&dir).expect("examples/ is there") {
            let path = entry.expect("an entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("read an example");
                objects += text.lines().filter(|l| l.starts_with("kind: ")).count();
                args.extend(["-f".to_owned(), path.display().to_string()]);
            }
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns
        .run(&args)
        .unwrap_or_else(|e| panic!("an example is refused: {e}"));
    let accepted = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert!(objects >= 30, "10 functions and 20 executions: {objects}");
    assert_eq!(accepted, objects, "{out}");
}

#[test]
fn functions_that_cannot_be_built_fail_with_their_reason_and_an_event() {
    let ns = namespace("bad-functions");
    let cases = [
        (
            "empty",
            function("empty", "Rust", json!({"code": " \n"})),
            "InvalidSpec",
            "source",
        ),
        (
            "prebuilt-c",
            function(
                "prebuilt-c",
                "C",
                json!({"base64": base64(b"\0asm\x01\0\0\0")}),
            ),
            "InvalidSpec",
            "needs language wasm",
        ),
        (
            "garbage",
            function(
                "garbage",
                "Wasm",
                json!({"base64": base64(b"not a module at all")}),
            ),
            "InvalidModule",
            "",
        ),
        (
            "bad-base64",
            function(
                "bad-base64",
                "Wasm",
                json!({"base64": "@@@ not base64 @@@"}),
            ),
            "InvalidSpec",
            "base64",
        ),
    ];
    for (_, manifest, _, _) in &cases {
        ns.create(manifest).expect("create a function");
    }
    for (name, _, reason, says) in cases {
        let failed = wait_phase(&ns, "wasmfunction", name, &["Failed", "Ready"]);
        println!("{name}: {}", failed["status"]);
        assert_eq!(failed["status"]["phase"], "Failed", "{name}");
        assert_reported(&ns, &failed, "Ready", reason, says);
    }
}

#[test]
fn executions_with_bad_inputs_fail_or_wait_with_their_reason_and_an_event() {
    let ns = namespace("bad-executions");
    ns.create(&prebuilt_function("hello", HELLO, json!({})))
        .expect("create hello");
    ns.create(&function(
        "imports",
        "Wasm",
        json!({"base64": base64(&wat::parse_str(UNKNOWN_IMPORT).expect("valid text"))}),
    ))
    .expect("create the importing function");
    for name in ["hello", "imports"] {
        wait_phase(&ns, "wasmfunction", name, &["Ready"]);
    }
    // Each argument and value is within the schema's limits; together they are not within
    // what a runner's command line carries (args 1 MiB, the environment 128 KiB).
    let full_args: Vec<String> = (0..256).map(|_| "a".repeat(4096)).collect();
    let cases = [
        ("no-function", "missing", json!({})),
        ("huge-args", "hello", json!({"args": full_args})),
        (
            "huge-env",
            "hello",
            json!({"env": (0..64)
                .map(|i| json!({"name": format!("ENVVAR{i:02}"), "value": "v".repeat(2048)}))
                .collect::<Vec<_>>()}),
        ),
        ("unknown-import", "imports", json!({})),
    ];
    for (name, function, spec) in &cases {
        ns.create(&execution(name, function, spec.clone()).to_string())
            .expect("create an execution");
    }
    let missing = ns
        .wait_for(&["wasmexecution", "no-function"], WAIT, |e| {
            condition(e, "Succeeded")
                .filter(|c| c["reason"] == "FunctionNotFound")
                .map(|_| e.clone())
        })
        .expect("the execution waits for its function");
    assert_eq!(missing["status"]["phase"], "Pending");
    assert_reported(
        &ns,
        &missing,
        "Succeeded",
        "FunctionNotFound",
        "does not exist",
    );
    for (name, reason, says) in [
        ("huge-args", "InputTooLarge", "args total 1048832 bytes"),
        ("huge-env", "InputTooLarge", "the guest environment is"),
    ] {
        let failed = wait_phase(
            &ns,
            "wasmexecution",
            name,
            &["Failed", "Succeeded", "TimedOut"],
        );
        assert_eq!(
            failed["status"]["phase"], "Failed",
            "{name}: {}",
            failed["status"]
        );
        assert!(
            failed["status"]["podName"].is_null(),
            "{name}: no pod was made"
        );
        assert_reported(&ns, &failed, "Succeeded", reason, says);
    }
    let unknown = wait_phase(
        &ns,
        "wasmexecution",
        "unknown-import",
        &["Failed", "Succeeded", "TimedOut"],
    );
    println!("unknown-import: {}", unknown["status"]);
    assert_eq!(
        unknown["status"]["phase"], "Failed",
        "{}",
        unknown["status"]
    );
    assert_eq!(
        unknown["status"]["attempts"], 1,
        "a guest's own failure is never retried"
    );
    let reason = unknown["status"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(reason, "InvalidModule");
    assert_reported(
        &ns,
        &unknown,
        "Succeeded",
        &reason,
        "the module imports env.nope",
    );
    // The missing function arrives: the waiting execution runs.
    ns.create(&prebuilt_function("missing", HELLO, json!({})))
        .expect("create the missing function");
    let ran = wait_phase(
        &ns,
        "wasmexecution",
        "no-function",
        &["Succeeded", "Failed"],
    );
    assert_eq!(ran["status"]["phase"], "Succeeded", "{}", ran["status"]);
}

#[test]
fn a_function_deleted_while_its_execution_runs_leaves_the_run_to_finish_and_be_recorded() {
    let ns = namespace("deleted-function");
    ns.create(&prebuilt_function("sleeper", SLEEPER, json!({})))
        .expect("create the sleeper");
    wait_phase(&ns, "wasmfunction", "sleeper", &["Ready"]);
    ns.create(&execution("nap", "sleeper", json!({"args": ["8000"]})).to_string())
        .expect("create the execution");
    wait_phase(&ns, "wasmexecution", "nap", &["Running"]);
    ns.run(&["delete", "wasmfunction", "sleeper", "--wait=false"])
        .expect("delete the function");
    let done = ns
        .wait_for(&["wasmexecution", "nap"], WAIT, |e| {
            is_final(e).then(|| e.clone())
        })
        .expect("the execution ends");
    println!("nap: {}", done["status"]);
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    assert_eq!(done["status"]["stdout"], "slept\n");
}

#[test]
fn after_the_corpus_the_operator_still_runs_and_a_good_execution_succeeds() {
    let ns = namespace("after");
    // Let the other tests' inputs reach the operator first (they run alongside).
    std::thread::sleep(Duration::from_secs(30));
    ns.create(&prebuilt_function("hello", HELLO, json!({})))
        .expect("create hello");
    ns.create(&execution("good", "hello", json!({})).to_string())
        .expect("create the execution");
    let done = wait_phase(
        &ns,
        "wasmexecution",
        "good",
        &["Succeeded", "Failed", "TimedOut"],
    );
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    assert!(
        operator().exit_status().is_none(),
        "the operator is still running"
    );
}
