//! The WasmExecution controller end to end: the real operator (one replica for this suite)
//! against the local cluster's two real nodes — node A with the WasmEdge shim, label and
//! RuntimeClass, node B plain. Functions are prebuilt WAT modules (`language: wasm`, Ready
//! without a compile Job) except the C probe, which goes through the builder.
//!
//! Tests that change node A (cordon, label) or kill the operator hold [`DISRUPTION`] for
//! writing; tests whose assertions depend on node A being usable (placement, timings) hold it
//! for reading; the rest work whatever the placement. Independent executions inside a test run
//! in parallel. `make test` runs the suite with `--test-threads=8`.

mod common;

use std::sync::{Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::api_objects::{
    execution_condition, execution_phase, execution_status, function_status, get_execution,
    has_finished, wait_for_execution, wait_for_function,
};
use common::executions::{
    events_for, execution, list, prebuilt_function, Watch, BIG_OUTPUT, BIG_OUTPUT_BYTES, EXIT3,
    HELLO, JSON_DOCUMENT, JSON_OUT, LOOP, MEMORY_BOMB, SLEEPER,
};
use serde_json::{json, Value};
use wasmfn_api::{ExecutionPhase, FunctionPhase, Runtime, WasmExecution};
use wasmfn_e2e::cluster::layout::{WASMEDGE_NODE_LABEL, WASM_RUNTIME_CLASS};
use wasmfn_e2e::observability::{scrape, span, OtlpReceiver};
use wasmfn_e2e::operator::{crds_dir, OperatorProcess};
use wasmfn_e2e::Kubectl;

/// Prints its greeting, then its stdin.
const ECHO: &str = include_str!("../../runner-image/compile/tests/sources/wat/echo.wat");
/// First runs pull the wasm-pod and runner images onto the nodes.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// The C probe goes through a compile Job on the builder image.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(420);
const EXECUTION_LABEL: &str = "wasmfn.dev/execution";
const ATTEMPT_LABEL: &str = "wasmfn.dev/attempt";

static OPERATOR: OnceLock<Mutex<OperatorProcess>> = OnceLock::new();
/// The collector the suite's operator exports its spans to (every replica it starts).
static COLLECTOR: OnceLock<OtlpReceiver> = OnceLock::new();
/// Held for writing while node A is cordoned or unlabelled or the operator is down.
static DISRUPTION: RwLock<()> = RwLock::new(());

fn collector() -> &'static OtlpReceiver {
    COLLECTOR.get_or_init(|| OtlpReceiver::start().expect("start the OTLP receiver"))
}

fn start_operator(identity: &str) -> OperatorProcess {
    start_operator_with(identity, &[])
}

/// The suite's operator with `extra` settings in its environment.
fn start_operator_with(identity: &str, extra: &[(&str, &str)]) -> OperatorProcess {
    let endpoint = collector().endpoint.clone();
    let cluster = common::cluster();
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    env.extend_from_slice(extra);
    let mut operator = OperatorProcess::start_with_env(cluster.info(), identity, &[], &env)
        .expect("start the operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("the operator leads");
    operator
}

/// Pulls the runner image (about 500 MB) onto both nodes before any execution runs: a run pod's
/// deadline (timeout plus grace) counts from the pod's start, pull included, so a first
/// short-timeout run on a node still pulling would end TimedOut without having run.
fn pull_runner_image_on_both_nodes() {
    let cluster = common::cluster();
    let kubectl = cluster.kubectl().in_namespace("default");
    let nodes: Vec<String> = cluster
        .info()
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    drop(cluster);
    for (index, node) in nodes.iter().enumerate() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pull-runner-{index}")},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                     "nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": "pull", "image": common::image("runner"), "args": ["--version"]}]}});
        kubectl.create(&pod.to_string()).expect("create a pull pod");
    }
    for index in 0..nodes.len() {
        kubectl
            .wait_for(
                &["pod", &format!("pull-runner-{index}")],
                Duration::from_secs(600),
                |p| {
                    matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                        .then_some(())
                },
            )
            .expect("the runner image is pulled");
    }
}

/// The suite's operator (started once, after the CRDs are applied).
fn operator() -> MutexGuard<'static, OperatorProcess> {
    OPERATOR
        .get_or_init(|| {
            let crds = crds_dir();
            common::cluster()
                .kubectl()
                .run(&["apply", "-f", crds.to_str().expect("utf-8 path")])
                .expect("apply the CRDs");
            pull_runner_image_on_both_nodes();
            Mutex::new(start_operator("executions-suite"))
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shared() -> RwLockReadGuard<'static, ()> {
    DISRUPTION
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    DISRUPTION
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh namespace (after the operator is up): its kubectl and its name.
fn namespace(prefix: &str) -> (Kubectl, String) {
    drop(operator());
    let name = format!(
        "{prefix}-{}",
        wasmfn_e2e::cluster::pki::random_hex(3).expect("random")
    );
    let ns = common::cluster()
        .namespace(&name)
        .expect("create namespace");
    (ns, name)
}

fn node_a() -> String {
    common::cluster().info().wasmedge_node().name.clone()
}

fn node_b() -> String {
    common::cluster().info().plain_node().name.clone()
}

fn create(ns: &Kubectl, manifest: &str) {
    ns.create(manifest)
        .unwrap_or_else(|e| panic!("create failed: {e}\n{manifest:.400}"));
}

/// Creates `name` as a prebuilt function from `wat` and waits until it is Ready; returns its
/// artifact digest.
fn ready_function(ns: &Kubectl, name: &str, wat: &str, extra_spec: Value) -> String {
    create(ns, &prebuilt_function(name, wat, extra_spec));
    function_digest(ns, name, Duration::from_secs(60))
}

fn function_digest(ns: &Kubectl, name: &str, timeout: Duration) -> String {
    wait_for_function(ns, name, timeout, |f| {
        let status = f.status.as_ref()?;
        (status.phase == Some(FunctionPhase::Ready)).then(|| {
            status
                .artifact
                .as_ref()
                .map(|a| a.digest.clone())
                .unwrap_or_default()
        })
    })
    .unwrap_or_else(|e| panic!("function {name} never became Ready: {e}"))
}

/// Waits until the execution reaches a final phase; returns it.
fn wait_final(ns: &Kubectl, name: &str, timeout: Duration) -> WasmExecution {
    wait_for_execution(ns, name, timeout, |e| has_finished(e).then(|| e.clone()))
        .unwrap_or_else(|e| panic!("execution {name} never finished: {e}"))
}

/// Waits until `done` holds for the execution; returns it.
fn wait_until(
    ns: &Kubectl,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&WasmExecution) -> bool,
) -> WasmExecution {
    wait_for_execution(ns, name, timeout, |e| done(e).then(|| e.clone()))
        .unwrap_or_else(|e| panic!("execution {name}: {what}: {e}"))
}

/// Whether the execution is Pending with its `Succeeded` condition `Unknown` for `reason`.
fn pending_for(execution: &WasmExecution, reason: &str) -> bool {
    execution_phase(execution) == Some(ExecutionPhase::Pending)
        && execution_condition(execution, "Succeeded")
            .is_some_and(|c| c.status == "Unknown" && c.reason == reason)
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn name_of(execution: &WasmExecution) -> &str {
    execution.metadata.name.as_deref().unwrap_or_default()
}

/// Asserts the finished execution's phase, reason and `Succeeded` condition agree.
fn assert_outcome(execution: &WasmExecution, phase: ExecutionPhase, reasons: &[&str]) {
    let status = execution_status(execution);
    let name = name_of(execution);
    assert_eq!(status.phase, Some(phase), "{name}: {status:#?}");
    let reason = status.reason.as_deref().unwrap_or_default();
    assert!(
        reasons.contains(&reason),
        "{name}: reason {reason:?}, wanted one of {reasons:?}: {status:#?}"
    );
    let succeeded = execution_condition(execution, "Succeeded").expect("a Succeeded condition");
    let wanted = if phase == ExecutionPhase::Succeeded {
        "True"
    } else {
        "False"
    };
    assert_eq!(succeeded.status, wanted, "{name}: {succeeded:?}");
    assert_eq!(
        succeeded.reason, reason,
        "{name}: the condition's reason is the status reason: {succeeded:?}"
    );
}

/// Asserts a successful run's bookkeeping: exit code, times, attempts, pod, digest.
fn assert_bookkeeping(execution: &WasmExecution, digest: &str, attempts: i32) {
    let status = execution_status(execution);
    let name = name_of(execution);
    assert_eq!(status.attempts, attempts, "{name}: {status:#?}");
    assert_eq!(
        status.artifact_digest.as_deref(),
        Some(digest),
        "{name}: {status:#?}"
    );
    for (field, value) in [
        ("podName", status.pod_name.as_deref()),
        ("node", status.node.as_deref()),
        ("placementReason", status.placement_reason.as_deref()),
    ] {
        assert!(
            value.is_some_and(|v| !v.is_empty()),
            "{name}: status.{field} is missing: {status:#?}"
        );
    }
    assert!(
        status.runtime.is_some(),
        "{name}: status.runtime is missing: {status:#?}"
    );
    assert!(
        status.start_time.is_some() && status.completion_time.is_some(),
        "{name}: status.startTime and status.completionTime are set: {status:#?}"
    );
    assert!(
        status.duration_ms.is_some_and(|d| d >= 0.0),
        "{name}: {status:#?}"
    );
}

/// The pods of one execution, in the order they appeared (from the namespace's pod watch).
fn pods_of(pods: &Watch, execution: &str) -> Vec<Value> {
    pods.labelled(EXECUTION_LABEL, execution)
}

/// Waits until the execution's pod of attempt `attempt` has a running container (pod watch).
fn wait_pod_running(pods: &Watch, execution: &str, attempt: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let running = pods_of(pods, execution).into_iter().find(|p| {
            p["metadata"]["labels"][ATTEMPT_LABEL] == attempt
                && !p["status"]["containerStatuses"][0]["state"]["running"].is_null()
        });
        if let Some(pod) = running {
            return text(&pod, "/metadata/name").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no running pod for {execution} attempt {attempt}: {:#?}",
            pods_of(pods, execution)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `kubectl get pod NAME` says NotFound.
fn wait_pod_gone(ns: &Kubectl, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match ns.run(&["get", "pod", name, "-o", "name"]) {
            Err(e) if e.to_string().contains("NotFound") => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "run pod {name} still exists {timeout:?} after the result was recorded"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn container(pod: &Value) -> &Value {
    &pod["spec"]["containers"][0]
}

fn assert_wasm_pod(pod: &Value, node: &str) {
    assert_eq!(
        pod["spec"]["runtimeClassName"], WASM_RUNTIME_CLASS,
        "{pod:#}"
    );
    assert_eq!(
        container(pod)["image"],
        common::image("wasm-pod"),
        "{pod:#}"
    );
    assert_eq!(pod["spec"]["nodeName"], node, "{pod:#}");
}

fn assert_container_pod(pod: &Value) {
    assert!(pod["spec"]["runtimeClassName"].is_null(), "{pod:#}");
    assert_eq!(container(pod)["image"], common::image("runner"), "{pod:#}");
    let command_line: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|k| container(pod)[*k].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        command_line.contains(&"exec"),
        "the container pod runs `wasmfn exec`: {command_line:?}"
    );
}

/// A change to a node for the guard's lifetime: `kubectl <apply>` now, `kubectl <undo>` on drop
/// (also when the test panics).
struct NodeChange {
    kubectl: Kubectl,
    undo: Vec<String>,
}

impl NodeChange {
    fn make(apply: &[&str], undo: &[&str]) -> NodeChange {
        let kubectl = common::cluster().kubectl();
        kubectl
            .run(apply)
            .unwrap_or_else(|e| panic!("kubectl {apply:?}: {e}"));
        // The operator learns about nodes through its watch; give it a moment.
        std::thread::sleep(Duration::from_secs(1));
        NodeChange {
            kubectl,
            undo: undo.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Node A cordoned: no new pod goes there.
    fn cordon_a() -> NodeChange {
        let a = node_a();
        NodeChange::make(&["cordon", &a], &["uncordon", &a])
    }

    /// Node A without the WasmEdge label.
    fn unlabel_a() -> NodeChange {
        let a = node_a();
        let remove = format!("{WASMEDGE_NODE_LABEL}-");
        let add = format!("{WASMEDGE_NODE_LABEL}=true");
        NodeChange::make(
            &["label", "node", &a, &remove],
            &["label", "node", &a, &add, "--overwrite"],
        )
    }

    /// Node B labelled a WasmEdge node, although its containerd has no such handler.
    fn label_b() -> NodeChange {
        let b = node_b();
        let remove = format!("{WASMEDGE_NODE_LABEL}-");
        let add = format!("{WASMEDGE_NODE_LABEL}=true");
        NodeChange::make(
            &["label", "node", &b, &add, "--overwrite"],
            &["label", "node", &b, &remove],
        )
    }
}

impl Drop for NodeChange {
    fn drop(&mut self) {
        let undo: Vec<&str> = self.undo.iter().map(String::as_str).collect();
        if let Err(e) = self.kubectl.run(&undo) {
            eprintln!("could not undo a node change ({undo:?}): {e}");
        }
    }
}

#[test]
fn auto_runs_as_a_wasm_pod_on_the_wasmedge_node_and_records_the_result() {
    let (ns, name) = namespace("wex-auto");
    let digest = ready_function(&ns, "hello", HELLO, json!({}));
    let _node_a_usable = shared();
    let pods = Watch::start(&ns, &name, "pods");
    create(
        &ns,
        &execution("hello-auto", "hello", json!({})).to_string(),
    );
    let done = wait_final(&ns, "hello-auto", RUN_TIMEOUT);
    assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
    assert_bookkeeping(&done, &digest, 1);
    let status = execution_status(&done);
    assert_eq!(status.stdout.as_deref(), Some("hello\n"), "{status:#?}");
    assert_eq!(status.exit_code, Some(0), "{status:#?}");
    assert_eq!(status.runtime, Some(Runtime::WasmEdge), "{status:#?}");
    assert_eq!(status.node, Some(node_a()), "{status:#?}");
    assert!(!status.stdout_truncated, "{status:#?}");
    assert!(status.result.is_none(), "`hello` is not JSON: {status:#?}");
    let pod_name = status.pod_name.as_deref().unwrap_or_default();

    let runs = pods_of(&pods, "hello-auto");
    assert_eq!(runs.len(), 1, "one pod for one attempt: {runs:#?}");
    let pod = &runs[0];
    assert_eq!(text(pod, "/metadata/name"), pod_name);
    assert_eq!(pod["metadata"]["labels"][ATTEMPT_LABEL], "1");
    assert_wasm_pod(pod, &node_a());
    // The pod goes once its result is recorded (the suite's operator runs without
    // --keep-run-pods).
    wait_pod_gone(&ns, pod_name, Duration::from_secs(30));

    let events = events_for(&ns, "hello-auto");
    assert!(
        events
            .iter()
            .any(|(_, reason, note, _)| note.contains("WasmEdge") || reason.contains("WasmEdge")),
        "an event tells where it ran and why: {events:#?}"
    );
    let table = ns
        .run(&["get", "wex", "hello-auto"])
        .expect("kubectl get wex");
    assert!(
        table.contains("Succeeded") && table.contains("WasmEdge"),
        "{table}"
    );
    eprintln!("{table}");
}

#[test]
fn node_a_cordoned_or_unlabelled_auto_falls_back_to_a_container_and_wasmedge_waits() {
    let (ns, name) = namespace("wex-fallback");
    let digest = ready_function(&ns, "hello", HELLO, json!({}));
    let _disruption = exclusive();
    let pods = Watch::start(&ns, &name, "pods");

    let cordoned = NodeChange::cordon_a();
    create(
        &ns,
        &list(vec![
            execution("auto-cordoned", "hello", json!({})),
            execution("wasmedge-only", "hello", json!({"runtime": "WasmEdge"})),
        ]),
    );
    let fallback = wait_final(&ns, "auto-cordoned", RUN_TIMEOUT);
    assert_outcome(&fallback, ExecutionPhase::Succeeded, &["Succeeded"]);
    assert_bookkeeping(&fallback, &digest, 1);
    let status = execution_status(&fallback);
    assert_eq!(
        status.stdout.as_deref(),
        Some("hello\n"),
        "the same result: {status:#?}"
    );
    assert_eq!(status.runtime, Some(Runtime::Container), "{status:#?}");
    assert_eq!(status.node, Some(node_b()), "{status:#?}");
    let runs = pods_of(&pods, "auto-cordoned");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_container_pod(&runs[0]);
    let events = events_for(&ns, "auto-cordoned");
    assert!(
        events
            .iter()
            .any(|(_, reason, note, _)| note.contains("Container") || reason.contains("Container")),
        "an event tells why it fell back: {events:#?}"
    );

    // runtime: WasmEdge never falls back: it waits, saying why, without a pod.
    let waiting = wait_until(
        &ns,
        "wasmedge-only",
        Duration::from_secs(30),
        "Pending with Unschedulable",
        |e| pending_for(e, "Unschedulable"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let still = get_execution(&ns, "wasmedge-only");
    assert_eq!(
        execution_phase(&still),
        Some(ExecutionPhase::Pending),
        "{:#?}",
        still.status
    );
    assert!(pods_of(&pods, "wasmedge-only").is_empty());
    eprintln!(
        "wasmedge-only while node A is cordoned: {:?}",
        waiting.status
    );

    drop(cordoned);
    let resumed = wait_final(&ns, "wasmedge-only", Duration::from_secs(90));
    assert_outcome(&resumed, ExecutionPhase::Succeeded, &["Succeeded"]);
    let status = execution_status(&resumed);
    assert_eq!(status.runtime, Some(Runtime::WasmEdge));
    assert_eq!(status.node, Some(node_a()));
    assert_eq!(status.stdout.as_deref(), Some("hello\n"));
    assert_wasm_pod(&pods_of(&pods, "wasmedge-only")[0], &node_a());

    // The same fallback when node A loses its WasmEdge label.
    let unlabelled = NodeChange::unlabel_a();
    create(
        &ns,
        &execution("auto-unlabelled", "hello", json!({})).to_string(),
    );
    let fallback = wait_final(&ns, "auto-unlabelled", RUN_TIMEOUT);
    drop(unlabelled);
    assert_outcome(&fallback, ExecutionPhase::Succeeded, &["Succeeded"]);
    let status = execution_status(&fallback);
    assert_eq!(status.runtime, Some(Runtime::Container));
    assert_eq!(status.stdout.as_deref(), Some("hello\n"));
    assert_container_pod(&pods_of(&pods, "auto-unlabelled")[0]);
}

#[test]
fn stdin_args_and_env_reach_the_guest_identically_on_both_paths() {
    let (ns, name) = namespace("wex-probe");
    let probe = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runner-image/guests/c/probe.c"),
    )
    .expect("probe.c");
    let function = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
        "metadata": {"name": "probe"},
        "spec": {"language": "C", "source": {"code": probe},
                 "defaults": {"env": [{"name": "GREETING", "value": "from-function"}]}}});
    create(&ns, &function.to_string());
    let digest = function_digest(&ns, "probe", COMPILE_TIMEOUT);
    let _node_a_usable = shared();
    let pods = Watch::start(&ns, &name, "pods");

    // No empty-string argument: this cluster's apiserver (1.20) turns "" inside a custom
    // resource's string list into null and then rejects the object.
    let args = json!(["one", "two words", "--flag=3"]);
    let stdin = "line one\nline two\n\u{e9}t\u{e9}\n";
    let input = json!({"k": "v", "n": [1, 2.5, -3], "s": "a \"quoted\" text"});
    let mut runs = Vec::new();
    for runtime in ["Auto", "Container"] {
        let suffix = runtime.to_lowercase();
        runs.push(execution(
            &format!("stdin-{suffix}"),
            "probe",
            json!({"runtime": runtime, "args": args, "stdin": stdin,
                   "env": [{"name": "GREETING", "value": "from-execution"}]}),
        ));
        runs.push(execution(
            &format!("input-{suffix}"),
            "probe",
            json!({"runtime": runtime, "input": input}),
        ));
        runs.push(execution(
            &format!("exit-{suffix}"),
            "probe",
            json!({"runtime": runtime, "env": [{"name": "EXIT_CODE", "value": "7"}]}),
        ));
    }
    create(&ns, &list(runs));

    let mut outputs = Vec::new();
    for kind in ["stdin", "input", "exit"] {
        let wasm = wait_final(&ns, &format!("{kind}-auto"), RUN_TIMEOUT);
        let container = wait_final(&ns, &format!("{kind}-container"), RUN_TIMEOUT);
        let (on_wasm, on_container) = (execution_status(&wasm), execution_status(&container));
        assert_eq!(on_wasm.runtime, Some(Runtime::WasmEdge), "{on_wasm:#?}");
        assert_eq!(
            on_container.runtime,
            Some(Runtime::Container),
            "{on_container:#?}"
        );
        assert_eq!(
            on_wasm.phase, on_container.phase,
            "{kind}: status.phase differs"
        );
        for (field, a, b) in [
            ("reason", &on_wasm.reason, &on_container.reason),
            ("stdout", &on_wasm.stdout, &on_container.stdout),
            ("stderr", &on_wasm.stderr, &on_container.stderr),
        ] {
            assert_eq!(
                a, b,
                "{kind}: status.{field} differs between the Wasm pod and the container pod"
            );
        }
        assert_eq!(
            on_wasm.exit_code, on_container.exit_code,
            "{kind}: status.exitCode differs between the Wasm pod and the container pod"
        );
        assert_eq!(
            on_wasm.result, on_container.result,
            "{kind}: status.result differs between the Wasm pod and the container pod"
        );
        assert_eq!(on_wasm.artifact_digest.as_deref(), Some(digest.as_str()));
        outputs.push((kind, wasm));
    }
    let stdout = |kind: &str| {
        let run = &outputs.iter().find(|(k, _)| *k == kind).expect("run").1;
        execution_status(run).stdout.clone().unwrap_or_default()
    };
    assert_eq!(
        stdout("stdin"),
        format!("hello from c\nargs: one two words --flag=3\nenv: from-execution\nstdin: {stdin}")
    );
    let input_run = stdout("input");
    let (head, echoed) = input_run
        .split_once("stdin: ")
        .expect("the probe echoes stdin");
    assert_eq!(
        head, "hello from c\nargs:\nenv: from-function\n",
        "defaults.env applies when the execution sets none"
    );
    assert_eq!(
        serde_json::from_str::<Value>(echoed).expect("stdin is the input as JSON"),
        input
    );
    let exit = &outputs.iter().find(|(k, _)| *k == "exit").expect("exit").1;
    assert_outcome(exit, ExecutionPhase::Failed, &["NonZeroExit"]);
    assert_eq!(execution_status(exit).exit_code, Some(7));
    assert_eq!(
        execution_status(exit).stderr.as_deref(),
        Some("probe done\n")
    );
    for (_, run) in &outputs[..2] {
        assert_outcome(run, ExecutionPhase::Succeeded, &["Succeeded"]);
    }
    for run in ["stdin-auto", "input-auto", "exit-auto"] {
        assert_wasm_pod(&pods_of(&pods, run)[0], &node_a());
    }
    for run in ["stdin-container", "input-container", "exit-container"] {
        assert_container_pod(&pods_of(&pods, run)[0]);
    }
}

#[test]
fn run_pods_are_non_root_read_only_without_capabilities_token_or_network_identity() {
    let (ns, name) = namespace("wex-security");
    ready_function(&ns, "hello", HELLO, json!({}));
    let pods = Watch::start(&ns, &name, "pods");
    create(
        &ns,
        &list(vec![
            execution("locked-auto", "hello", json!({})),
            execution("locked-container", "hello", json!({"runtime": "Container"})),
        ]),
    );
    for run in ["locked-auto", "locked-container"] {
        assert_outcome(
            &wait_final(&ns, run, RUN_TIMEOUT),
            ExecutionPhase::Succeeded,
            &["Succeeded"],
        );
        let pod = pods_of(&pods, run).remove(0);
        let spec = &pod["spec"];
        assert_eq!(
            spec["automountServiceAccountToken"], false,
            "{run}: {spec:#}"
        );
        assert_eq!(spec["restartPolicy"], "Never", "{run}: {spec:#}");
        let security = &container(&pod)["securityContext"];
        assert_eq!(
            security["readOnlyRootFilesystem"], true,
            "{run}: {security:#}"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"], false,
            "{run}: {security:#}"
        );
        let dropped = security["capabilities"]["drop"].to_string();
        assert!(dropped.contains("ALL"), "{run}: {security:#}");
        let non_root = security["runAsNonRoot"] == true
            || spec["securityContext"]["runAsNonRoot"] == true
            || security["runAsUser"].as_i64().is_some_and(|u| u > 0)
            || spec["securityContext"]["runAsUser"]
                .as_i64()
                .is_some_and(|u| u > 0);
        assert!(non_root, "{run}: runs as non-root: {spec:#}");
        assert!(
            container(&pod)["resources"]["limits"]["memory"].is_string(),
            "{run}: a memory limit: {:#}",
            container(&pod)["resources"]
        );
    }
}

/// A guest's own failure is never retried: the execution made one attempt, or more only
/// because the runtime could not create an earlier attempt's container (no guest ran; a
/// `PodStartFailed` event says so — seen as a rare libcontainer race under load).
fn assert_guest_ran_once(ns: &Kubectl, execution: &WasmExecution) {
    let status = execution_status(execution);
    let attempts = u64::try_from(status.attempts).unwrap_or(0);
    let name = name_of(execution);
    let lost_before_the_guest: u64 = events_for(ns, name)
        .iter()
        .filter(|(_, reason, _, _)| reason == "PodStartFailed")
        .map(|(_, _, _, count)| count)
        .sum();
    assert!(
        attempts >= 1 && attempts - 1 == lost_before_the_guest,
        "a guest's own failure is not retried ({lost_before_the_guest} attempts lost before a guest ran): {status:#?}"
    );
}

#[test]
fn guest_failures_are_reported_with_their_reason_on_both_paths_and_never_retried() {
    // "Never retried" needs every attempt to reach a guest: no node change meanwhile.
    let _node_a_usable = shared();
    let (ns, _) = namespace("wex-failures");
    for (function, wat) in [("exit3", EXIT3), ("loop", LOOP), ("bomb", MEMORY_BOMB)] {
        create(&ns, &prebuilt_function(function, wat, json!({})));
    }
    for function in ["exit3", "loop", "bomb"] {
        function_digest(&ns, function, Duration::from_secs(60));
    }
    let mut runs = Vec::new();
    for runtime in ["Auto", "Container"] {
        let suffix = runtime.to_lowercase();
        runs.push(execution(
            &format!("exit3-{suffix}"),
            "exit3",
            json!({"runtime": runtime, "retries": 2}),
        ));
        runs.push(execution(
            &format!("timeout-{suffix}"),
            "loop",
            json!({"runtime": runtime, "retries": 2, "timeoutMillis": 1500}),
        ));
        runs.push(execution(
            &format!("bomb-{suffix}"),
            "bomb",
            json!({"runtime": runtime, "retries": 2, "memoryLimit": "16Mi"}),
        ));
    }
    create(&ns, &list(runs));
    for suffix in ["auto", "container"] {
        let exit3 = wait_final(&ns, &format!("exit3-{suffix}"), RUN_TIMEOUT);
        assert_outcome(&exit3, ExecutionPhase::Failed, &["NonZeroExit"]);
        assert_eq!(
            execution_status(&exit3).exit_code,
            Some(3),
            "{:#?}",
            exit3.status
        );
        assert_guest_ran_once(&ns, &exit3);

        let started = Instant::now();
        let timeout = wait_final(&ns, &format!("timeout-{suffix}"), RUN_TIMEOUT);
        assert_outcome(&timeout, ExecutionPhase::TimedOut, &["TimedOut"]);
        assert_guest_ran_once(&ns, &timeout);
        let ran = execution_status(&timeout).duration_ms.unwrap_or_default();
        assert!(
            (1400.0..4000.0).contains(&ran),
            "stopped near its 1.5 s timeout, ran {ran} ms (waited {:?}): {:#?}",
            started.elapsed(),
            timeout.status
        );

        let bomb = wait_final(&ns, &format!("bomb-{suffix}"), RUN_TIMEOUT);
        // The guest-level reason: the page cap refused the growth (an OOM kill of the pod would
        // mean the cap did not hold).
        assert_outcome(&bomb, ExecutionPhase::Failed, &["MemoryLimitExceeded"]);
        assert_guest_ran_once(&ns, &bomb);
    }
}

/// Sums its JSON input's numbers and answers with JSON, with its arguments and `GREETING`.
const PYTHON_SUM: &str = r#"import json, os, sys
data = json.load(sys.stdin)
print(json.dumps({"sum": sum(data["n"]), "args": sys.argv[1:], "greeting": os.environ.get("GREETING")}))
"#;
/// The same in JavaScript (QuickJS).
const JAVASCRIPT_SUM: &str = r#"import * as std from 'std';
const data = JSON.parse(std.in.readAsString());
const sum = data.n.reduce((a, b) => a + b, 0);
console.log(JSON.stringify({sum, args: args.slice(1), greeting: std.getenv('GREETING')}));
"#;

fn script_function(name: &str, language: &str, code: &str) -> String {
    json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
        "metadata": {"name": name},
        "spec": {"language": common::api_objects::language(language), "source": {"code": code}}})
    .to_string()
}

#[test]
fn python_and_javascript_functions_run_on_a_wasm_pod_and_a_container_pod_with_json_in_and_out() {
    let (ns, _) = namespace("wex-scripts");
    for (name, language, code) in [
        ("py-sum", "python", PYTHON_SUM),
        ("js-sum", "javascript", JAVASCRIPT_SUM),
    ] {
        create(&ns, &script_function(name, language, code));
    }
    let digests: Vec<String> = ["py-sum", "js-sum"]
        .iter()
        .map(|f| function_digest(&ns, f, COMPILE_TIMEOUT))
        .collect();
    let _node_a_usable = shared();
    let mut runs = Vec::new();
    for function in ["py-sum", "js-sum"] {
        for runtime in ["WasmEdge", "Container"] {
            runs.push(execution(
                &format!("{function}-{}", runtime.to_lowercase()),
                function,
                json!({"runtime": runtime, "input": {"n": [1, 2, 3.5]}, "args": ["one", "two"],
                       "env": [{"name": "GREETING", "value": "hi"}]}),
            ));
        }
    }
    create(&ns, &list(runs));
    let expected = json!({"sum": 6.5, "args": ["one", "two"], "greeting": "hi"});
    for (function, digest) in ["py-sum", "js-sum"].iter().zip(&digests) {
        for runtime in ["WasmEdge", "Container"] {
            let name = format!("{function}-{}", runtime.to_lowercase());
            let done = wait_final(&ns, &name, RUN_TIMEOUT);
            assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
            assert_bookkeeping(&done, digest, 1);
            let status = execution_status(&done);
            assert_eq!(
                status.runtime.map(Runtime::as_str),
                Some(runtime),
                "{name}: {status:#?}"
            );
            assert_eq!(
                status.result.as_ref(),
                Some(&expected),
                "{name}: {status:#?}"
            );
            assert_eq!(
                status.aot,
                Some(true),
                "{name}: the interpreter runs its AOT form: {status:#?}"
            );
        }
    }
}

#[test]
fn script_failures_end_with_their_reason_exception_timeout_memory_and_a_syntax_error_at_compile() {
    // "Never retried" needs every attempt to reach a guest: no node change meanwhile.
    let _node_a_usable = shared();
    let (ns, _) = namespace("wex-script-failures");
    let functions = [
        (
            "py-raise",
            "python",
            "import sys\n\ndef f():\n    raise ValueError('no such order')\n\nf()\n",
        ),
        (
            "js-throw",
            "javascript",
            "const x = 1;\nthrow new RangeError('out of range: ' + x);\n",
        ),
        ("py-spin", "python", "while True:\n    pass\n"),
        ("js-spin", "javascript", "for (;;) {}\n"),
        (
            "py-bomb",
            "python",
            "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n",
        ),
        (
            "js-bomb",
            "javascript",
            "const a = [];\nfor (;;) { a.push(new Array(1 << 16).fill(1.5)); }\n",
        ),
        (
            "py-syntax",
            "python",
            "def ok():\n    return 1\n\ndef broken(:\n    pass\n",
        ),
        (
            "js-syntax",
            "javascript",
            "const ok = 1;\nconst broken = ;\n",
        ),
    ];
    for (name, language, code) in functions {
        create(&ns, &script_function(name, language, code));
    }
    // A syntax error fails the function at compile time, with the file and line.
    for (name, file) in [("py-syntax", "main.py:4"), ("js-syntax", "main.js:2")] {
        let failed = wait_for_function(&ns, name, COMPILE_TIMEOUT, |f| {
            let failed = f.status.as_ref()?.phase == Some(FunctionPhase::Failed);
            failed.then(|| f.clone())
        })
        .unwrap_or_else(|e| panic!("{name} never failed: {e}"));
        let status = function_status(&failed);
        let compile = status.compile.as_ref().expect("status.compile");
        assert_eq!(
            compile.reason.as_deref(),
            Some("CompileError"),
            "{status:#?}"
        );
        let diagnostics = compile.diagnostics.join("\n");
        assert!(diagnostics.contains(file), "{name}: {diagnostics}");
        assert!(
            events_for(&ns, name)
                .iter()
                .any(|(kind, reason, _, _)| kind == "Warning" && reason == "CompileError"),
            "{name}: a Warning event"
        );
    }
    for name in [
        "py-raise", "js-throw", "py-spin", "js-spin", "py-bomb", "js-bomb",
    ] {
        function_digest(&ns, name, COMPILE_TIMEOUT);
    }
    let mut runs = Vec::new();
    for runtime in ["WasmEdge", "Container"] {
        let suffix = runtime.to_lowercase();
        for language in ["py", "js"] {
            let raise = if language == "py" {
                "py-raise"
            } else {
                "js-throw"
            };
            runs.push(execution(
                &format!("{language}-raise-{suffix}"),
                raise,
                json!({"runtime": runtime, "retries": 2}),
            ));
            runs.push(execution(
                &format!("{language}-spin-{suffix}"),
                &format!("{language}-spin"),
                json!({"runtime": runtime, "retries": 2, "timeoutMillis": 2000}),
            ));
            runs.push(execution(
                &format!("{language}-bomb-{suffix}"),
                &format!("{language}-bomb"),
                json!({"runtime": runtime, "retries": 2, "memoryLimit": "64Mi"}),
            ));
        }
    }
    create(&ns, &list(runs));
    for suffix in ["wasmedge", "container"] {
        for (language, exception) in [
            ("py", "ValueError: no such order"),
            ("js", "RangeError: out of range: 1"),
        ] {
            let raised = wait_final(&ns, &format!("{language}-raise-{suffix}"), RUN_TIMEOUT);
            assert_outcome(&raised, ExecutionPhase::Failed, &["NonZeroExit"]);
            let status = execution_status(&raised);
            assert_eq!(status.exit_code, Some(1), "{status:#?}");
            assert_guest_ran_once(&ns, &raised);
            let stderr = status.stderr.as_deref().unwrap_or_default();
            assert!(stderr.contains(exception), "{language}/{suffix}: {stderr}");
            let location = if language == "py" {
                "main.py\", line 4"
            } else {
                "main.js:2"
            };
            assert!(stderr.contains(location), "{language}/{suffix}: {stderr}");

            let spun = wait_final(&ns, &format!("{language}-spin-{suffix}"), RUN_TIMEOUT);
            assert_outcome(&spun, ExecutionPhase::TimedOut, &["TimedOut"]);
            let ran = execution_status(&spun).duration_ms.unwrap_or_default();
            assert!(
                (1900.0..5000.0).contains(&ran),
                "{language}/{suffix}: stopped near its 2 s timeout, ran {ran} ms"
            );

            let bomb = wait_final(&ns, &format!("{language}-bomb-{suffix}"), RUN_TIMEOUT);
            assert_outcome(&bomb, ExecutionPhase::Failed, &["MemoryLimitExceeded"]);
            assert_guest_ran_once(&ns, &bomb);
        }
    }
}

#[test]
fn json_stdout_becomes_the_result_and_a_mebibyte_of_stdout_is_capped_with_its_size() {
    let (ns, _) = namespace("wex-output");
    create(&ns, &prebuilt_function("json", JSON_OUT, json!({})));
    create(&ns, &prebuilt_function("big", BIG_OUTPUT, json!({})));
    function_digest(&ns, "json", Duration::from_secs(60));
    function_digest(&ns, "big", Duration::from_secs(60));
    create(
        &ns,
        &list(vec![
            execution("json-auto", "json", json!({})),
            execution("json-container", "json", json!({"runtime": "Container"})),
            execution("big-auto", "big", json!({})),
            execution("big-container", "big", json!({"runtime": "Container"})),
            execution("big-64k", "big", json!({"maxOutputBytes": 65536})),
        ]),
    );
    let document: Value = serde_json::from_str(JSON_DOCUMENT).expect("json");
    for run in ["json-auto", "json-container"] {
        let done = wait_final(&ns, run, RUN_TIMEOUT);
        assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
        let status = execution_status(&done);
        assert_eq!(status.result.as_ref(), Some(&document), "{status:#?}");
        assert_eq!(
            status.stdout.as_deref(),
            Some(format!("{JSON_DOCUMENT}\n").as_str())
        );
    }
    for (run, cap) in [
        ("big-auto", 4096),
        ("big-container", 4096),
        ("big-64k", 65536),
    ] {
        let done = wait_final(&ns, run, RUN_TIMEOUT);
        assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
        let status = execution_status(&done);
        let stdout = status.stdout.as_deref().unwrap_or_default();
        let summary = json!({"stdoutLength": stdout.len(), "stdoutTruncated": status.stdout_truncated,
                             "stdoutBytes": status.stdout_bytes, "reason": status.reason});
        assert!(stdout.len() <= cap, "{run}: over the cap {cap}: {summary}");
        assert!(
            stdout.bytes().all(|b| b == b'x'),
            "{run}: the start of the output"
        );
        assert!(status.stdout_truncated, "{run}: {summary}");
        assert_eq!(
            status.stdout_bytes,
            Some(BIG_OUTPUT_BYTES as i64),
            "{run}: {summary}"
        );
        assert!(status.result.is_none(), "{run}: {summary}");
        if cap > 4096 {
            assert!(
                stdout.len() > 4096,
                "{run}: beyond the inline cap, stdout is read from the pod log up to maxOutputBytes: {summary}"
            );
        }
    }
}

#[test]
fn input_over_256_kib_is_refused_with_input_too_large_and_no_pod() {
    let (ns, name) = namespace("wex-input");
    ready_function(&ns, "hello", HELLO, json!({}));
    let pods = Watch::start(&ns, &name, "pods");
    let blob = "a".repeat(300 << 10);
    // spec.stdin is capped by the CRD schema: the apiserver refuses it outright.
    let refused =
        ns.create(&execution("stdin-too-large", "hello", json!({"stdin": blob})).to_string());
    assert!(
        refused.is_err(),
        "the schema caps spec.stdin at 256 KiB: {refused:?}"
    );
    // spec.input has no schema cap: the operator refuses it.
    create(
        &ns,
        &execution("input-too-large", "hello", json!({"input": {"blob": blob}})).to_string(),
    );
    let done = wait_final(&ns, "input-too-large", Duration::from_secs(60));
    assert_outcome(&done, ExecutionPhase::Failed, &["InputTooLarge"]);
    let message = execution_status(&done).message.clone().unwrap_or_default()
        + execution_condition(&done, "Succeeded").map_or("", |c| c.message.as_str());
    assert!(
        message.contains("256") || message.contains("262144"),
        "the message names the limit: {message}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(pods_of(&pods, "input-too-large").is_empty());
}

/// A ConfigMap named `name` in `ns`, controlled by a WasmExecution `owner` of uid `uid`, held
/// by a finalizer so that it outlives any delete until the test lets it go.
fn held_config_map(ns: &Kubectl, name: &str, owner: &str, uid: &str) {
    create(
        ns,
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "finalizers": ["wasmfn.dev/test-hold"],
                "ownerReferences": [{
                    "apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmExecution",
                    "name": owner, "uid": uid, "controller": true
                }]
            },
            "data": {"stdin": "an earlier run's input\n"}
        })
        .to_string(),
    );
}

fn release(ns: &Kubectl, config_map: &str) {
    ns.run(&[
        "patch",
        "configmap",
        config_map,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .expect("remove the finalizer");
}

#[test]
fn an_execution_created_again_under_its_name_waits_for_its_predecessors_leftovers_and_runs() {
    let (ns, _) = namespace("wex-again");
    let _node_a_usable = shared();
    ready_function(&ns, "echo", ECHO, json!({}));
    // What an execution deleted a moment ago leaves while the garbage collector catches up:
    // its input ConfigMap, controlled by the old uid (held here, so that it stays).
    held_config_map(
        &ns,
        "again-input",
        "again",
        "00000000-0000-0000-0000-00000000dead",
    );
    create(
        &ns,
        &execution("again", "echo", json!({"stdin": "the new input\n"})).to_string(),
    );
    let waiting = wait_until(
        &ns,
        "again",
        Duration::from_secs(60),
        "waits for the leftover",
        |e| {
            execution_phase(e) == Some(ExecutionPhase::Pending)
                && execution_condition(e, "Succeeded")
                    .is_some_and(|c| c.reason == "WaitingForCleanup")
        },
    );
    assert!(
        execution_condition(&waiting, "Succeeded").is_some_and(|c| c
            .message
            .contains("ConfigMap again-input of an earlier execution of this name")),
        "{:#?}",
        waiting.status
    );
    // The leftover is being deleted (by the operator, or by the garbage collector, whichever
    // comes first: its owner is gone); the hold is all that keeps it.
    let leftover = ns.json(&["get", "configmap", "again-input"]).expect("held");
    assert!(
        leftover["metadata"]["deletionTimestamp"].is_string(),
        "{leftover:#}"
    );
    release(&ns, "again-input");
    let done = wait_final(&ns, "again", RUN_TIMEOUT);
    assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
    assert_eq!(
        execution_status(&done).stdout.as_deref(),
        Some("hello from wat\nthe new input\n"),
        "its own input, not the predecessor's: {:#?}",
        done.status
    );

    // A ConfigMap of that name that is not a predecessor's (here: nobody's; the garbage
    // collector leaves it alone too) is never touched: the execution fails with NameConflict
    // and says which object is in the way.
    create(
        &ns,
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "taken-input"},
            "data": {"mine": "yes"}
        })
        .to_string(),
    );
    create(
        &ns,
        &execution("taken", "echo", json!({"stdin": "x\n"})).to_string(),
    );
    let refused = wait_final(&ns, "taken", Duration::from_secs(60));
    assert_outcome(&refused, ExecutionPhase::Failed, &["NameConflict"]);
    assert!(
        execution_status(&refused)
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("ConfigMap named taken-input"),
        "{:#?}",
        refused.status
    );
    let intact = ns
        .json(&["get", "configmap", "taken-input"])
        .expect("untouched");
    assert!(
        intact["metadata"]["deletionTimestamp"].is_null() && intact["data"]["mine"] == "yes",
        "{intact:#}"
    );
}

#[test]
fn an_execution_waits_for_its_function_and_fails_with_a_failed_function() {
    let (ns, _) = namespace("wex-function");
    // The function's module comes from a ConfigMap that does not exist yet: not Ready.
    create(
        &ns,
        &json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
                 "metadata": {"name": "from-map"},
                 "spec": {"language": "Wasm", "source": {"configMapRef": {"name": "module"}}}})
        .to_string(),
    );
    create(
        &ns,
        &json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
                 "metadata": {"name": "broken"},
                 // A prebuilt module under a compiled language: the schema takes it, the
                 // operator refuses it (InvalidSpec).
                 "spec": {"language": "C", "source": {"base64": "AGFzbQEAAAA="}}})
        .to_string(),
    );
    create(
        &ns,
        &list(vec![
            execution("not-ready", "from-map", json!({})),
            execution("not-found", "later", json!({})),
            execution("of-broken", "broken", json!({})),
        ]),
    );
    for (run, reason) in [
        ("not-ready", "FunctionNotReady"),
        ("not-found", "FunctionNotFound"),
    ] {
        wait_until(
            &ns,
            run,
            Duration::from_secs(60),
            &format!("Pending with {reason}"),
            |e| pending_for(e, reason),
        );
    }
    let failed = wait_final(&ns, "of-broken", Duration::from_secs(60));
    assert_outcome(&failed, ExecutionPhase::Failed, &["FunctionFailed"]);

    let module = wat::parse_str(HELLO).expect("hello");
    let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "module"},
                     "binaryData": {"module.wasm": base64_encode(&module)}});
    create(&ns, &map.to_string());
    create(&ns, &prebuilt_function("later", HELLO, json!({})));
    for run in ["not-ready", "not-found"] {
        // The function polls its source ConfigMap every 10 s.
        let done = wait_final(&ns, run, Duration::from_secs(120));
        assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
        assert_eq!(execution_status(&done).stdout.as_deref(), Some("hello\n"));
    }
}

#[test]
fn a_run_pod_deleted_mid_run_is_retried_when_retries_allow_and_fails_otherwise() {
    let (ns, name) = namespace("wex-retry");
    ready_function(&ns, "sleeper", SLEEPER, json!({}));
    let _node_a_usable = shared();
    let pods = Watch::start(&ns, &name, "pods");
    let runs = [
        ("retried-container", "Container", 1),
        ("not-retried-container", "Container", 0),
        ("retried-wasm", "Auto", 1),
    ];
    create(
        &ns,
        &list(
            runs.iter()
                .map(|(run, runtime, retries)| {
                    execution(
                        run,
                        "sleeper",
                        json!({"runtime": runtime, "retries": retries, "args": ["20000"], "timeoutMillis": 60000}),
                    )
                })
                .collect(),
        ),
    );
    // The guest sleeps 20 s: a deletion must stop it well before it would finish, even with a
    // kubelet slow to act under load (an 8 s sleep sometimes completed despite the deletion).
    for (run, _, _) in runs {
        let pod = wait_pod_running(&pods, run, "1", RUN_TIMEOUT);
        wait_until(&ns, run, Duration::from_secs(30), "Running", |e| {
            execution_phase(e) == Some(ExecutionPhase::Running)
        });
        ns.run(&["delete", "pod", &pod, "--wait=false"])
            .expect("delete the run pod");
    }
    let attempts_of = |run: &str| -> Vec<String> {
        pods_of(&pods, run)
            .iter()
            .map(|p| {
                p["metadata"]["labels"][ATTEMPT_LABEL]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    for run in ["retried-container", "retried-wasm"] {
        let retried = wait_final(&ns, run, RUN_TIMEOUT);
        let status = execution_status(&retried);
        assert_eq!(
            (status.phase, status.attempts),
            (Some(ExecutionPhase::Succeeded), 2),
            "{run}: a lost attempt is retried: {status:#?}"
        );
        assert_outcome(&retried, ExecutionPhase::Succeeded, &["Succeeded"]);
        assert_eq!(status.stdout.as_deref(), Some("slept\n"));
        assert_eq!(attempts_of(run), ["1", "2"], "{run}: one pod per attempt");
    }
    let lost = wait_final(&ns, "not-retried-container", RUN_TIMEOUT);
    assert_outcome(&lost, ExecutionPhase::Failed, &["PodDeleted"]);
    assert_eq!(execution_status(&lost).attempts, 1, "{:#?}", lost.status);
    assert_eq!(attempts_of("not-retried-container"), ["1"]);
}

#[test]
fn an_operator_killed_mid_run_records_the_result_exactly_once_after_restart() {
    let (ns, name) = namespace("wex-restart");
    ready_function(&ns, "sleeper", SLEEPER, json!({}));
    let _disruption = exclusive();
    let pods = Watch::start(&ns, &name, "pods");
    create(
        &ns,
        &execution("survivor", "sleeper", json!({"args": ["4000"]})).to_string(),
    );
    wait_pod_running(&pods, "survivor", "1", RUN_TIMEOUT);
    let mut operator = operator();
    operator.kill();
    eprintln!("operator killed; its log: {}", operator.log.display());
    // The run finishes while no operator is up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods_of(&pods, "survivor")
        .iter()
        .any(|p| p["status"]["phase"] == "Succeeded")
    {
        assert!(
            Instant::now() < deadline,
            "the pod never finished: {:#?}",
            pods_of(&pods, "survivor")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = get_execution(&ns, "survivor");
    assert!(
        !has_finished(&before),
        "nothing recorded while the operator is down"
    );
    *operator = start_operator("executions-suite-restarted");
    drop(operator);

    let done = wait_final(&ns, "survivor", Duration::from_secs(90));
    assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
    let status = execution_status(&done);
    assert_eq!(status.attempts, 1, "{status:#?}");
    assert_eq!(status.stdout.as_deref(), Some("slept\n"));
    // Let a duplicate, if any, arrive.
    std::thread::sleep(Duration::from_secs(4));
    let runs = pods_of(&pods, "survivor");
    assert_eq!(
        runs.len(),
        1,
        "the restarted operator adopted the pod: {runs:#?}"
    );
    let again = get_execution(&ns, "survivor");
    assert_eq!(
        execution_status(&again).completion_time,
        status.completion_time,
        "the result is not rewritten"
    );
    let events = events_for(&ns, "survivor");
    let finishing: u64 = events
        .iter()
        .filter(|(_, reason, _, _)| reason == "Succeeded")
        .map(|(_, _, _, count)| count)
        .sum();
    assert_eq!(finishing, 1, "exactly one finishing event: {events:#?}");
}

#[test]
fn a_wasm_pod_that_cannot_start_is_lost_at_the_start_deadline_with_its_event_and_retried() {
    let (ns, _) = namespace("wex-nostart");
    ready_function(&ns, "hello", HELLO, json!({}));
    let _disruption = exclusive();
    let mut operator = operator();
    operator.kill();
    *operator = start_operator_with(
        "executions-suite-start-deadline",
        &[("WASMFN_START_DEADLINE", "6")],
    );
    let node = node_b();
    let result = std::panic::catch_unwind(|| {
        let _a = NodeChange::cordon_a();
        let _b = NodeChange::label_b();
        create(
            &ns,
            &execution(
                "stranded",
                "hello",
                json!({"runtime": "WasmEdge", "retries": 0}),
            )
            .to_string(),
        );
        wait_final(&ns, "stranded", Duration::from_secs(180))
    });
    // The suite's own operator again, whatever happened.
    operator.kill();
    *operator = start_operator("executions-suite");
    drop(operator);
    let done = result.unwrap_or_else(|panic| std::panic::resume_unwind(panic));

    assert_outcome(&done, ExecutionPhase::Failed, &["PodStartFailed"]);
    let status = execution_status(&done);
    // No guest ran: retried 3 times past `retries: 0`.
    assert_eq!(status.attempts, 4, "{status:#?}");
    let message = status.message.as_deref().unwrap_or_default();
    for part in [
        "attempt 4 was lost".to_owned(),
        format!("did not start within 6s on node {node}"),
        "the pod's last warning: FailedCreatePodSandBox".to_owned(),
        format!("no runtime for \"{WASM_RUNTIME_CLASS}\" is configured"),
    ] {
        assert!(message.contains(&part), "{part:?} in {message}");
    }
    // Each loss said so as it happened, with the cause, although the pods are gone.
    let losses: Vec<String> = events_for(&ns, "stranded")
        .into_iter()
        .filter(|(_, reason, _, _)| reason == "PodStartFailed")
        .map(|(_, _, note, _)| note)
        .collect();
    assert!(
        losses
            .iter()
            .any(|note| note.starts_with("attempt 1 was lost") && note.contains("no runtime for")),
        "{losses:#?}"
    );
    let pods = ns.json(&["get", "pods"]).expect("pods");
    assert_eq!(pods["items"], json!([]), "every lost pod was deleted");
}

#[test]
fn ttl_seconds_after_finished_deletes_the_execution() {
    // Long enough that the final status is seen before the deletion even when the operator
    // records the result seconds after the run ended (a busy machine): the TTL counts from the
    // run's end, not from the recording, and 5 s once expired within 20 ms of the record.
    const TTL_SECONDS: u64 = 20;
    let (ns, _) = namespace("wex-ttl");
    ready_function(&ns, "hello", HELLO, json!({}));
    let _operator_up = shared();
    create(
        &ns,
        &list(vec![
            execution(
                "short-lived",
                "hello",
                json!({"ttlSecondsAfterFinished": TTL_SECONDS}),
            ),
            execution("kept", "hello", json!({})),
        ]),
    );
    let done = wait_final(&ns, "short-lived", RUN_TIMEOUT);
    assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
    // Timed from the status's completionTime (the apiserver shares this machine's clock), not
    // from when this test saw the final phase, which lags by seconds on a busy machine.
    let completed = epoch_seconds(
        &execution_status(&done)
            .completion_time
            .as_ref()
            .expect("completionTime")
            .0
            .to_string(),
    );
    // completionTime is cut to whole seconds, so the run ended within a second after it; five
    // seconds later the TTL has certainly not passed.
    let early = std::time::UNIX_EPOCH + Duration::from_secs(completed + 5);
    if let Ok(wait) = early.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(wait);
    }
    let checked_at = std::time::SystemTime::now();
    let present = ns
        .run(&["get", "wasmexecution", "short-lived", "-o", "name"])
        .is_ok();
    let checked_late =
        checked_at > std::time::UNIX_EPOCH + Duration::from_secs(completed + TTL_SECONDS - 1);
    assert!(
        present || checked_late,
        "deleted less than 5 s after its completionTime, before its TTL of {TTL_SECONDS} s"
    );
    let finished = Instant::now();
    let deadline = finished + Duration::from_secs(60);
    loop {
        match ns.run(&["get", "wasmexecution", "short-lived", "-o", "name"]) {
            Err(e) if e.to_string().contains("NotFound") => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "never deleted");
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = finished.elapsed();
    eprintln!("deleted {after:?} after the early check (TTL {TTL_SECONDS} s)");
    let kept = wait_final(&ns, "kept", RUN_TIMEOUT);
    assert_outcome(&kept, ExecutionPhase::Succeeded, &["Succeeded"]);
    std::thread::sleep(Duration::from_secs(6));
    ns.json(&["get", "wasmexecution", "kept"])
        .expect("an execution without a TTL stays");
}

#[test]
fn kubectl_wait_for_the_succeeded_condition_and_for_the_phase() {
    let (ns, name) = namespace("wex-wait");
    ready_function(&ns, "hello", HELLO, json!({}));
    ready_function(&ns, "exit3", EXIT3, json!({}));
    create(
        &ns,
        &list(vec![
            execution("waited", "hello", json!({})),
            execution("waited-phase", "hello", json!({})),
            execution("waited-failing", "exit3", json!({})),
        ]),
    );
    let timeout = format!("--timeout={}s", RUN_TIMEOUT.as_secs());
    let out = ns
        .run(&[
            "wait",
            "--for=condition=Succeeded",
            "wasmexecution/waited",
            &timeout,
        ])
        .expect("kubectl wait --for=condition=Succeeded");
    assert!(out.contains("condition met"), "{out}");
    let out = ns
        .run(&[
            "wait",
            "--for=condition=Succeeded=false",
            "wasmexecution/waited-failing",
            &timeout,
        ])
        .expect("kubectl wait --for=condition=Succeeded=false");
    assert!(out.contains("condition met"), "{out}");

    // `--for=jsonpath` came with kubectl 1.23; the cluster's kubectl is 1.20. `make setup` puts
    // kubectl 1.33 next to helm; WASMFN_KUBECTL_JSONPATH may name another.
    let jsonpath = "--for=jsonpath={.status.phase}=Succeeded";
    let newer = std::env::var_os("WASMFN_KUBECTL_JSONPATH")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let bundled = wasmfn_e2e::cluster::cache_dir().join("helm/bin/kubectl");
            bundled.is_file().then_some(bundled)
        })
        .map(|binary| Kubectl::new(binary, ns.kubeconfig().clone()).in_namespace(&name));
    let waiter = newer.unwrap_or_else(|| ns.clone());
    let help = waiter.run(&["wait", "--help"]).unwrap_or_default();
    if help.contains("--for=jsonpath") {
        let out = waiter
            .run(&["wait", jsonpath, "wasmexecution/waited-phase", &timeout])
            .expect("kubectl wait --for=jsonpath");
        assert!(out.contains("condition met"), "{out}");
    } else {
        let refused = waiter.run(&["wait", jsonpath, "wasmexecution/waited-phase", &timeout]);
        assert!(refused.is_err(), "{refused:?}");
        eprintln!(
            "note: {} has no `wait --for=jsonpath` (kubectl >= 1.23 has; set \
             WASMFN_KUBECTL_JSONPATH to one): checking .status.phase with get -o jsonpath",
            waiter.binary().display()
        );
        wait_final(&ns, "waited-phase", RUN_TIMEOUT);
        let phase = ns
            .run(&[
                "get",
                "wasmexecution",
                "waited-phase",
                "-o",
                "jsonpath={.status.phase}",
            ])
            .expect("get -o jsonpath");
        assert_eq!(phase, "Succeeded");
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The span named `name` (and of `service`) among `spans`.
#[test]
fn a_callers_traceparent_parents_the_operators_and_runners_spans_on_both_paths_and_metrics_move() {
    let (ns, name) = namespace("wex-observe");
    // Node A usable for the WasmEdge path, and no operator restart (which resets the counters)
    // between the two scrapes.
    let _node_a_usable = shared();
    let operator_port = operator().health_port;
    let before = scrape(operator_port).expect("scrape before");
    ready_function(&ns, "hello", HELLO, json!({}));
    let random = |bytes| wasmfn_e2e::cluster::pki::random_hex(bytes).expect("random");
    let cases = [
        ("traced-wasm", "WasmEdge", "wasmfn-shim"),
        ("traced-container", "Container", "wasmfn-runner"),
    ];
    let mut callers = Vec::new();
    for (execution_name, runtime, _) in cases {
        let (trace_id, caller_span) = (random(16), random(8));
        let mut object = execution(execution_name, "hello", json!({"runtime": runtime}));
        object["metadata"]["annotations"] =
            json!({"wasmfn.dev/traceparent": format!("00-{trace_id}-{caller_span}-01")});
        create(&ns, &object.to_string());
        callers.push((trace_id, caller_span));
    }
    // An unusable annotation costs nothing but the link, and says so.
    let mut broken = execution("badly-traced", "hello", json!({}));
    broken["metadata"]["annotations"] = json!({"wasmfn.dev/traceparent": "00-nonsense"});
    create(&ns, &broken.to_string());

    for ((execution_name, runtime, runner), (trace_id, caller_span)) in cases.iter().zip(&callers) {
        let done = wait_final(&ns, execution_name, RUN_TIMEOUT);
        assert_outcome(&done, ExecutionPhase::Succeeded, &["Succeeded"]);
        let status = execution_status(&done);
        assert_eq!(
            status.runtime.map(Runtime::as_str),
            Some(*runtime),
            "{status:#?}"
        );
        let pod = status.pod_name.clone().unwrap_or_default();
        let spans = collector()
            .wait_for_trace(trace_id, Duration::from_secs(30), |spans| {
                ["execution", "attempt 1", "run", "invoke"]
                    .iter()
                    .all(|prefix| spans.iter().any(|s| s.name.starts_with(prefix)))
            })
            .expect("the execution's spans reach the collector under the caller's trace");
        let execution_span = span(
            &spans,
            "wasmfn-operator",
            &format!("execution {name}/{execution_name}"),
        );
        assert_eq!(
            execution_span.parent_span_id.as_deref(),
            Some(caller_span.as_str()),
            "a child of the caller's span"
        );
        assert_eq!(execution_span.attributes["wasmfn.runtime"], *runtime);
        assert_eq!(execution_span.attributes["wasmfn.phase"], "Succeeded");
        assert_eq!(execution_span.status_code, 1);
        // creation and completion times have whole seconds
        assert!(execution_span.end_unix_nano >= execution_span.start_unix_nano);
        let attempt = span(&spans, "wasmfn-operator", "attempt 1");
        assert_eq!(
            attempt.parent_span_id.as_ref(),
            Some(&execution_span.span_id)
        );
        assert_eq!(attempt.attributes["k8s.pod.name"], pod);
        // The runner (shim on a WasmEdge node, `wasmfn exec` in a container pod) ran under the
        // attempt, and its phases under its run.
        let run = span(&spans, runner, "run");
        assert_eq!(
            run.parent_span_id.as_ref(),
            Some(&attempt.span_id),
            "{spans:#?}"
        );
        assert_eq!(run.attributes["k8s.pod.name"], pod);
        for phase in ["load", "instantiate", "invoke"] {
            let phase_span = span(&spans, runner, phase);
            assert_eq!(phase_span.parent_span_id.as_ref(), Some(&run.span_id));
            assert!(
                phase_span.start_unix_nano >= run.start_unix_nano
                    && phase_span.end_unix_nano <= run.end_unix_nano,
                "{phase_span:?} within {run:?}"
            );
        }
        let reconciles: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "reconcile WasmExecution")
            .collect();
        assert!(!reconciles.is_empty(), "{spans:#?}");
        assert!(reconciles
            .iter()
            .all(|r| r.parent_span_id.as_ref() == Some(&execution_span.span_id)));
    }
    let broken = wait_final(&ns, "badly-traced", RUN_TIMEOUT);
    assert_outcome(&broken, ExecutionPhase::Succeeded, &["Succeeded"]);
    let events = events_for(&ns, "badly-traced");
    assert!(
        events
            .iter()
            .any(|(_, reason, note, _)| reason == "InvalidTraceparent"
                && note.contains("wasmfn.dev/traceparent")),
        "{events:#?}"
    );
    // The function's generation has its own trace: how its module was stored.
    assert!(
        collector()
            .spans()
            .iter()
            .any(|s| s.name == format!("compile {name}/hello")
                && s.attributes.get("wasmfn.module.source").map(String::as_str)
                    == Some("prebuilt")
                || s.name == format!("compile {name}/hello")
                    && s.attributes.get("wasmfn.cache.hit").map(String::as_str) == Some("true")),
        "a compile span for the function"
    );

    // The scrape moved with what the test did (other tests run beside it, so at least).
    let after = scrape(operator_port).expect("scrape after");
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        after.sum(metric, labels) - before.sum(metric, labels)
    };
    for runtime in ["WasmEdge", "Container"] {
        let labels = [("runtime", runtime), ("outcome", "Succeeded")];
        assert!(
            moved("wasmfn_executions_total", &labels) >= 1.0,
            "{runtime}: {after:#?}"
        );
        assert!(
            moved("wasmfn_execution_duration_seconds_count", &labels) >= 1.0,
            "{runtime}"
        );
        assert!(
            moved("wasmfn_execution_duration_seconds_sum", &labels) > 0.0,
            "{runtime}"
        );
        assert!(
            moved("wasmfn_execution_latency_seconds_count", &labels) >= 1.0,
            "{runtime}"
        );
        assert!(
            moved("wasmfn_run_pods_created_total", &[("runtime", runtime)]) >= 1.0,
            "{runtime}"
        );
    }
    assert!(moved("wasmfn_reconciles_total", &[("controller", "execution")]) >= 3.0);
    assert!(moved("wasmfn_reconciles_total", &[("controller", "function")]) >= 1.0);
    assert!(moved("wasmfn_trace_spans_total", &[("result", "exported")]) >= 10.0);
    assert_eq!(
        after.sum("wasmfn_trace_spans_total", &[("result", "failed")]),
        0.0,
        "the collector took every batch"
    );
    assert_eq!(after.sum("wasmfn_leader", &[]), 1.0);
}

/// Seconds since the epoch of an RFC 3339 time as the apiserver writes it, read by `date`.
fn epoch_seconds(time: &str) -> u64 {
    let output = std::process::Command::new("date")
        .args(["-u", "-d", time, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("date could not read {time:?}: {e}"))
}
