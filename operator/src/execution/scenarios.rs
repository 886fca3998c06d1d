//! Scenarios of the execution reconciler against a mocked API server ([`crate::scenario`]):
//! what the cluster holds, the requests the reconcile must make in order (each answered with a
//! canned object), and what it wrote.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Node, NodeCondition, NodeStatus,
    Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use serde_json::{json, Value};
use std::time::Duration;
use wasmfn_api::{
    ArtifactStatus, ExecutionPath, ExecutionPhase, FunctionPhase, Runtime, WasmExecution,
    WasmExecutionStatus, WasmFunction, WasmFunctionStatus,
};
use wasmfn_result::Reason;

use super::outcome::tests::document;
use super::reconcile::reconcile;
use super::run_pod::{
    pod_name, ATTEMPT_LABEL, CONTAINER, EXECUTION_UID_LABEL, NODE_LABEL, RUNTIME_ANNOTATION,
};
use crate::reconciler::owner_reference;
use crate::scenario::{json_of, play, Answer, ApiServer};

const EXECUTIONS: &str = "/apis/wasmfn.dev/v1alpha1/namespaces/default/wasmexecutions";
const FUNCTIONS: &str = "/apis/wasmfn.dev/v1alpha1/namespaces/default/wasmfunctions";
const PODS: &str = "/api/v1/namespaces/default/pods";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const NETWORK_POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";

#[tokio::test]
async fn a_finished_run_is_recorded_in_one_write_and_then_its_pod_is_deleted() {
    // Attempt 1 runs in a container pod, which has since terminated with its result.
    let execution = running_execution();
    let pod = finished_pod(&execution, Reason::Completed, b"hi\n");
    let pod_path = format!("{PODS}/{}", pod_name("run", 1));
    let (execution_json, pod_json) = (json_of(&execution), json_of(&pod));
    let script = |mut api: ApiServer| async move {
        // The cached copy has a status this replica did not write: read again first.
        api.answer(
            &format!("GET {EXECUTIONS}/run"),
            Answer::Object(execution_json),
        )
        .await;
        let pods = api
            .answer(&format!("GET {PODS}"), Answer::List(vec![pod_json.clone()]))
            .await;
        let selector = pods.query.replace("%2F", "/").replace("%3D", "=");
        assert!(
            selector.contains(&format!("{EXECUTION_UID_LABEL}=execution-uid")),
            "{selector}"
        );
        api.answer(
            &format!("GET {FUNCTIONS}/hello"),
            Answer::Object(json_of(&ready_function())),
        )
        .await;
        let written = api
            .answer(&format!("PUT {EXECUTIONS}/run/status"), Answer::Echo)
            .await;
        let event = api.answer(&format!("POST {EVENTS}"), Answer::Echo).await;
        api.answer(&format!("DELETE {pod_path}"), Answer::Object(pod_json))
            .await;
        api.nothing_more().await;
        (written.body, event.body)
    };

    let (action, (written, event)) = play(reconcile, execution, script).await;

    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    let status = status_of(&written);
    assert_eq!(status.phase, Some(ExecutionPhase::Succeeded));
    assert_eq!(status.stdout.as_deref(), Some("hi\n"));
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(
        (status.runtime, status.path),
        (Some(Runtime::Container), Some(ExecutionPath::ContainerPod))
    );
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Normal"), Some("Succeeded"))
    );
}

#[tokio::test]
async fn a_run_pod_name_held_by_someone_else_fails_the_execution_with_name_conflict() {
    // A new execution; a pod with its first attempt's name exists and belongs to another owner.
    let execution = new_execution();
    let mut stranger = Pod::default();
    stranger.metadata.name = Some(pod_name("run", 1));
    stranger.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "someone".into(),
        uid: "someone-uid".into(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    let pod_path = format!("{PODS}/{}", pod_name("run", 1));
    let script = |mut api: ApiServer| async move {
        up_to_the_pod(&mut api).await;
        let created = api.answer(&format!("POST {PODS}"), Answer::Conflict).await;
        api.answer(
            &format!("GET {pod_path}"),
            Answer::Object(json_of(&stranger)),
        )
        .await;
        let written = api
            .answer(&format!("PUT {EXECUTIONS}/run/status"), Answer::Echo)
            .await;
        let event = api.answer(&format!("POST {EVENTS}"), Answer::Echo).await;
        api.nothing_more().await;
        (created.body, written.body, event.body)
    };

    let (action, (created, written, event)) = play(reconcile, execution, script).await;

    assert_eq!(action, Action::await_change());
    assert_eq!(created["metadata"]["name"], pod_name("run", 1).as_str());
    let status = status_of(&written);
    assert_eq!(status.phase, Some(ExecutionPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("NameConflict"));
    assert_eq!(status.attempts, 0, "no attempt ran");
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("NameConflict"))
    );
}

#[tokio::test]
async fn a_start_isolates_the_namespace_and_admits_the_pod_before_creating_it_then_notes_it() {
    let execution = new_execution();
    let script = |mut api: ApiServer| async move {
        up_to_the_pod(&mut api).await;
        let created = api.answer(&format!("POST {PODS}"), Answer::Echo).await;
        let written = api
            .answer(&format!("PUT {EXECUTIONS}/run/status"), Answer::Echo)
            .await;
        let event = api.answer(&format!("POST {EVENTS}"), Answer::Echo).await;
        api.nothing_more().await;
        (created.body, written.body, event.body)
    };

    let (action, (created, written, event)) = play(reconcile, execution, script).await;

    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    let pod: Pod = serde_json::from_value(created).expect("a pod");
    assert_eq!(
        pod.metadata.name.as_deref(),
        Some(pod_name("run", 1).as_str())
    );
    assert_eq!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get(NODE_LABEL)
            .map(String::as_str),
        Some("a"),
        "admitted to the only node"
    );
    let status = status_of(&written);
    assert_eq!(status.phase, Some(ExecutionPhase::Scheduled));
    assert_eq!(status.attempts, 1);
    assert_eq!(status.runtime, Some(Runtime::Container));
    assert_eq!(event["reason"], "Placed");
}

/// The requests of a first start up to creating the run pod: its pods (none), its function,
/// the nodes and RuntimeClasses for placement, the namespace's deny-egress policy (missing,
/// so applied), and the run pods in flight for admission.
async fn up_to_the_pod(api: &mut ApiServer) {
    api.answer(&format!("GET {PODS}"), Answer::List(vec![]))
        .await;
    api.answer(
        &format!("GET {FUNCTIONS}/hello"),
        Answer::Object(json_of(&ready_function())),
    )
    .await;
    api.answer(
        "GET /api/v1/nodes",
        Answer::List(vec![json_of(&ready_node("a"))]),
    )
    .await;
    api.answer(
        "GET /apis/node.k8s.io/v1/runtimeclasses",
        Answer::List(vec![]),
    )
    .await;
    api.answer(
        &format!("GET {NETWORK_POLICIES}/wasmfn-deny-egress"),
        Answer::NotFound,
    )
    .await;
    api.answer(
        &format!("PATCH {NETWORK_POLICIES}/wasmfn-deny-egress"),
        Answer::Echo,
    )
    .await;
    api.answer("GET /api/v1/pods", Answer::List(vec![])).await;
}

#[tokio::test]
async fn a_finished_execution_past_its_ttl_is_deleted_and_writes_nothing() {
    let mut execution = running_execution();
    execution.spec.ttl_seconds_after_finished = Some(60);
    let status = execution.status.get_or_insert_with(Default::default);
    status.phase = Some(ExecutionPhase::Succeeded);
    status.completion_time = Some(Time(at(1_000)));
    let execution_json = json_of(&execution);
    let script = |mut api: ApiServer| async move {
        api.answer(
            &format!("GET {EXECUTIONS}/run"),
            Answer::Object(execution_json.clone()),
        )
        .await;
        // Its pod was deleted when the result was recorded.
        api.answer(&format!("GET {PODS}"), Answer::List(vec![]))
            .await;
        let deleted = api
            .answer(
                &format!("DELETE {EXECUTIONS}/run"),
                Answer::Object(execution_json),
            )
            .await;
        api.nothing_more().await;
        deleted.body
    };

    let (action, deleted) = play(reconcile, execution, script).await;

    assert_eq!(action, Action::await_change());
    assert_eq!(deleted["propagationPolicy"], "Background");
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("valid")
}

fn status_of(written: &Value) -> WasmExecutionStatus {
    serde_json::from_value(written["status"].clone()).expect("a status")
}

/// A new execution of `hello`: no status yet.
fn new_execution() -> WasmExecution {
    let spec =
        serde_json::from_value(json!({"functionRef": {"name": "hello"}})).expect("a valid spec");
    let mut execution = WasmExecution::new("run", spec);
    execution.metadata.namespace = Some("default".into());
    execution.metadata.uid = Some("execution-uid".into());
    execution.metadata.generation = Some(1);
    execution.metadata.resource_version = Some("7".into());
    execution.metadata.creation_timestamp = Some(Time(at(900)));
    execution
}

/// The execution with attempt 1 running in a container pod.
fn running_execution() -> WasmExecution {
    let mut execution = new_execution();
    execution.status = Some(WasmExecutionStatus {
        phase: Some(ExecutionPhase::Running),
        attempts: 1,
        runtime: Some(Runtime::Container),
        path: Some(ExecutionPath::ContainerPod),
        pod_name: Some(pod_name("run", 1)),
        placement_reason: Some("no WasmEdge node".into()),
        ..Default::default()
    });
    execution
}

/// `hello`, Ready with its module in the ConfigMap store.
fn ready_function() -> WasmFunction {
    let spec = serde_json::from_value(json!({"language": "wat", "source": {"code": "(module)"}}))
        .expect("a valid spec");
    let mut function = WasmFunction::new("hello", spec);
    function.metadata.namespace = Some("default".into());
    function.metadata.generation = Some(1);
    function.status = Some(WasmFunctionStatus {
        phase: Some(FunctionPhase::Ready),
        observed_generation: Some(1),
        artifact: Some(ArtifactStatus {
            digest: "sha256:00".into(),
            short_digest: "00".into(),
            size: 8,
            media_type: wasmfn_artifact::WASM_MEDIA_TYPE.into(),
            store: "configmap".into(),
            location: "wasmfn-artifact-00".into(),
            config_maps: vec!["wasmfn-artifact-00".into()],
        }),
        ..Default::default()
    });
    function
}

/// Attempt 1's container pod of `execution`, terminated with a result document.
fn finished_pod(execution: &WasmExecution, reason: Reason, stdout: &[u8]) -> Pod {
    let result = serde_json::to_string(&document(reason, stdout, b"")).expect("a document");
    let mut pod = Pod {
        spec: Some(PodSpec {
            node_name: Some("a".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Succeeded".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: CONTAINER.into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 0,
                        message: Some(result),
                        started_at: Some(Time(at(1_000))),
                        finished_at: Some(Time(at(1_001))),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    pod.metadata.name = Some(pod_name("run", 1));
    pod.metadata.namespace = Some("default".into());
    pod.metadata.creation_timestamp = Some(Time(at(999)));
    pod.metadata.labels = Some(
        [
            (EXECUTION_UID_LABEL.to_owned(), "execution-uid".to_owned()),
            (ATTEMPT_LABEL.to_owned(), "1".to_owned()),
        ]
        .into(),
    );
    pod.metadata.annotations = Some(
        [(
            RUNTIME_ANNOTATION.to_owned(),
            Runtime::Container.as_str().to_owned(),
        )]
        .into(),
    );
    pod.metadata.owner_references = Some(vec![owner_reference(execution, true).expect("a uid")]);
    pod
}

/// A Ready node without WasmEdge.
pub(super) fn ready_node(name: &str) -> Node {
    let mut node = Node {
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    node.metadata.name = Some(name.into());
    node
}
