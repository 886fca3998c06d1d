//! Scenarios of the function reconciler against a mocked API server. Each one says what the
//! cluster holds, then plays the API server: the requests the reconcile must make, in order,
//! each checked by method and path and answered with a canned object; finally what the status
//! written says. A request the script does not expect fails the scenario, and so does one it
//! expects that never comes (the scenario is bounded by a timeout).

use std::future::Future;

use base64::Engine;
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use serde_json::json;
use wasmfn_api::{FunctionPhase, WasmFunction, WasmFunctionStatus};
use wasmfn_artifact::sha256_digest;

use super::compile_job::job_name;
use super::observe::{files_and_module, function_key};
use super::reconcile::reconcile;
use super::source::validate;
use super::status::StatusUpdate;
use super::steps::{BUILDER_UNRESOLVED, COMPILE_POLL, SOURCE_POLL};
use crate::reconciler::owner_reference;
use crate::scenario::{default_config, json_of, play, play_with, Answer, ApiServer};
use crate::store::record::record_name;

const FUNCTIONS: &str = "/apis/wasmfn.dev/v1alpha1/namespaces/default/wasmfunctions";
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

#[tokio::test]
async fn a_running_job_left_by_an_earlier_replica_is_adopted_not_created_again() {
    // An earlier replica created the compile Job and stopped before writing any status.
    let function = new_function();
    let job = compile_job_of(
        &function,
        JobStatus {
            start_time: Some(at(1_000)),
            active: Some(1),
            ..Default::default()
        },
    );
    let job_path = format!("{JOBS}/{}", job_name_of(&function));
    let script = |mut api: ApiServer| async move {
        let lookup = api
            .answer(&format!("GET {CONFIG_MAPS}"), Answer::List(vec![]))
            .await;
        assert!(lookup.query.contains("labelSelector"), "{}", lookup.query);
        api.answer(&format!("GET {job_path}"), Answer::Object(json_of(&job)))
            .await;
        let written = api
            .answer(&format!("PUT {FUNCTIONS}/hello/status"), Answer::Echo)
            .await;
        let event = api.answer(&format!("POST {EVENTS}"), Answer::Echo).await;
        api.nothing_more().await;
        (written.body, event.body)
    };

    let (action, (written, event)) = reconcile_against(function, script).await;

    assert_eq!(action, Action::requeue(COMPILE_POLL));
    assert_eq!(
        event["reason"], "CompileStarted",
        "the adopted compile is the first its events hear of: {event}"
    );
    assert_eq!(
        written["metadata"]["resourceVersion"], "41",
        "the write is fenced on the version decided on"
    );
    let status: WasmFunctionStatus =
        serde_json::from_value(written["status"].clone()).expect("a status");
    let compile = status.compile.expect("the compile is recorded");
    assert_eq!(status.phase, Some(FunctionPhase::Compiling));
    assert_eq!(
        (compile.job_name, compile.start_time, compile.attempts),
        (Some(job_name_of(&new_function())), Some(at(1_000)), 1),
        "the adopted Job is the first try"
    );
}

#[tokio::test]
async fn a_finished_job_gets_its_module_stored_and_the_function_ready_once() {
    // The function was compiling; its Job has since succeeded and logged the module.
    let module = b"\0asm\x01\0\0\0".to_vec();
    let digest = sha256_digest(&module);
    let function = compiling_function(None);
    let job = compile_job_of(
        &function,
        JobStatus {
            start_time: Some(at(1_000)),
            completion_time: Some(at(1_030)),
            succeeded: Some(1),
            ..Default::default()
        },
    );
    let job_path = format!("{JOBS}/{}", job_name_of(&function));
    let pod = pod_of(&job, "compile-pod");
    let record = record_name(wasmfn_api::ArtifactStore::ConfigMap, &digest);
    let log = compile_log(&module);
    let record_path = format!("{CONFIG_MAPS}/{record}");
    let script = |mut api: ApiServer| async move {
        api.answer(&format!("GET {CONFIG_MAPS}"), Answer::List(vec![]))
            .await;
        api.answer(&format!("GET {job_path}"), Answer::Object(json_of(&job)))
            .await;
        let pods = api
            .answer(&format!("GET {PODS}"), Answer::List(vec![json_of(&pod)]))
            .await;
        assert!(pods.query.contains("job-name"), "{}", pods.query);
        api.answer(&format!("GET {PODS}/compile-pod/log"), Answer::Text(log))
            .await;
        api.answer(&format!("GET {record_path}"), Answer::NotFound)
            .await;
        let stored = api
            .answer(&format!("POST {CONFIG_MAPS}"), Answer::Echo)
            .await;
        let written = api
            .answer(&format!("PUT {FUNCTIONS}/hello/status"), Answer::Echo)
            .await;
        let event = api.answer(&format!("POST {EVENTS}"), Answer::Echo).await;
        api.answer(&format!("DELETE {job_path}"), Answer::Object(json_of(&job)))
            .await;
        api.nothing_more().await;
        (stored.body, written.body, event.body)
    };

    let (action, (stored, written, event)) = reconcile_against(function, script).await;

    assert_eq!(action, Action::await_change());
    assert_eq!(stored["metadata"]["name"], record.as_str());
    let status: WasmFunctionStatus =
        serde_json::from_value(written["status"].clone()).expect("a status");
    assert_eq!(status.phase, Some(FunctionPhase::Ready));
    assert_eq!(status.artifact.map(|a| a.digest), Some(digest));
    assert_eq!(event["reason"], "Compiled");
}

#[tokio::test]
async fn a_status_decided_on_a_stale_copy_is_refused_and_decided_again_on_a_fresh_read() {
    // The watch cache still shows the function without a status, but this replica's last pass
    // already wrote that its compile is running.
    let cached = new_function();
    let mut fresh = compiling_function(Some(at(1_600)));
    fresh.metadata.resource_version = Some("42".into());
    let job = compile_job_of(
        &cached,
        JobStatus {
            start_time: Some(at(1_000)),
            active: Some(1),
            ..Default::default()
        },
    );
    fresh.status = fresh.status.map(|mut status| {
        status
            .compile
            .iter_mut()
            .for_each(|c| c.start_time = Some(at(1_000)));
        status
    });
    let job_path = format!("{JOBS}/{}", job_name_of(&cached));
    let fresh_json = json_of(&fresh);
    let script = |mut api: ApiServer| async move {
        api.answer(&format!("GET {CONFIG_MAPS}"), Answer::List(vec![]))
            .await;
        api.answer(&format!("GET {job_path}"), Answer::Object(json_of(&job)))
            .await;
        api.answer(&format!("PUT {FUNCTIONS}/hello/status"), Answer::Conflict)
            .await;
        // Read again, and observed again; the status already says it all: no second write.
        api.answer(
            &format!("GET {FUNCTIONS}/hello"),
            Answer::Object(fresh_json),
        )
        .await;
        api.answer(&format!("GET {CONFIG_MAPS}"), Answer::List(vec![]))
            .await;
        api.answer(&format!("GET {job_path}"), Answer::Object(json_of(&job)))
            .await;
        api.nothing_more().await;
    };

    let (action, ()) = reconcile_against(cached, script).await;

    assert_eq!(action, Action::requeue(COMPILE_POLL));
}

#[tokio::test]
async fn a_function_deleted_after_its_stale_read_needs_nothing_more() {
    let cached = new_function();
    let job = compile_job_of(
        &cached,
        JobStatus {
            active: Some(1),
            ..Default::default()
        },
    );
    let job_path = format!("{JOBS}/{}", job_name_of(&cached));
    let script = |mut api: ApiServer| async move {
        api.answer(&format!("GET {CONFIG_MAPS}"), Answer::List(vec![]))
            .await;
        api.answer(&format!("GET {job_path}"), Answer::Object(json_of(&job)))
            .await;
        api.answer(&format!("PUT {FUNCTIONS}/hello/status"), Answer::Conflict)
            .await;
        api.answer(&format!("GET {FUNCTIONS}/hello"), Answer::NotFound)
            .await;
        api.nothing_more().await;
    };

    let (action, ()) = reconcile_against(cached, script).await;

    assert_eq!(action, Action::await_change());
}

/// Runs one reconcile of `function` while `script` plays the API server; returns the
/// reconcile's action and what the script returned.
async fn reconcile_against<S, F, T>(function: WasmFunction, script: S) -> (Action, T)
where
    S: FnOnce(ApiServer) -> F,
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    play(reconcile, function, script).await
}

#[tokio::test]
async fn a_builder_that_cannot_be_pinned_leaves_a_new_function_pending_with_the_reason() {
    let (action, (written, event)) = play_with(
        unpinnable_builder,
        reconcile,
        new_function(),
        |mut api: ApiServer| async move {
            let written = api
                .answer(&format!("PUT {FUNCTIONS}/hello/status"), Answer::Echo)
                .await;
            let event = api.answer(&format!("POST {EVENTS}"), Answer::Echo).await;
            api.nothing_more().await;
            (written.body, event.body)
        },
    )
    .await;

    assert_eq!(action, Action::requeue(SOURCE_POLL));
    let status: WasmFunctionStatus =
        serde_json::from_value(written["status"].clone()).expect("a status");
    assert_eq!(status.phase, Some(FunctionPhase::Pending));
    let ready = &status.conditions[0];
    assert_eq!(ready.reason, BUILDER_UNRESOLVED);
    assert!(
        ready.message.contains("127.0.0.1:9") && ready.message.contains("builder:dev"),
        "{}",
        ready.message
    );
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some(BUILDER_UNRESOLVED))
    );
}

#[tokio::test]
async fn a_ready_function_keeps_its_status_while_the_builder_cannot_be_pinned() {
    let mut function = new_function();
    function.status = Some(WasmFunctionStatus {
        phase: Some(FunctionPhase::Ready),
        observed_generation: Some(1),
        ..Default::default()
    });
    let (action, ()) = play_with(
        unpinnable_builder,
        reconcile,
        function,
        |api: ApiServer| async move { api.nothing_more().await },
    )
    .await;
    assert_eq!(action, Action::requeue(SOURCE_POLL));
}

/// A builder named by tag whose registry refuses connections (loopback port 9).
fn unpinnable_builder(config: &mut crate::config::Config) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    config.builder_image = "wasmfn.local/builder:dev".into();
    config.builder_registry = Some("127.0.0.1:9".into());
    config.builder_registry_insecure = true;
}

/// A function just created: generation 1, no status yet.
fn new_function() -> WasmFunction {
    let spec = serde_json::from_value(
        json!({"language": "rust", "source": {"code": "fn main() { println!(\"hi\"); }"}}),
    )
    .expect("a valid spec");
    let mut function = WasmFunction::new("hello", spec);
    function.metadata.namespace = Some("default".into());
    function.metadata.uid = Some("function-uid".into());
    function.metadata.generation = Some(1);
    function.metadata.resource_version = Some("41".into());
    function
}

/// The function with its first compile try running since second 1000, in a Job that the
/// cluster stops at `deadline`.
fn compiling_function(deadline: Option<Time>) -> WasmFunction {
    let mut function = new_function();
    let key = key_of(&function);
    let status = StatusUpdate::new(None, Some(1), at(1_000)).compiling(
        &key,
        &job_name(&key),
        Some(at(1_000)),
        1,
        deadline,
    );
    function.status = Some(status);
    function
}

/// The function's cache key under the default settings.
fn key_of(function: &WasmFunction) -> String {
    let config = default_config();
    let request = validate(&function.spec, false).expect("a buildable spec");
    let (files, _) = files_and_module(request).expect("inline files");
    function_key(
        function,
        Some(crate::scenario::BUILDER),
        config.cache_enabled,
        &files,
    )
}

fn job_name_of(function: &WasmFunction) -> String {
    job_name(&key_of(function))
}

/// The function's compile Job, owned by it, in `status`.
fn compile_job_of(function: &WasmFunction, status: JobStatus) -> Job {
    let mut job = Job {
        spec: Some(JobSpec {
            active_deadline_seconds: Some(600),
            ..Default::default()
        }),
        status: Some(status),
        ..Default::default()
    };
    job.metadata.name = Some(job_name_of(function));
    job.metadata.namespace = Some("default".into());
    job.metadata.uid = Some("job-uid".into());
    job.metadata.owner_references = Some(vec![owner_reference(function, true).expect("a uid")]);
    job
}

/// The pod `job` ran its compile in.
fn pod_of(job: &Job, name: &str) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.into());
    pod.metadata.namespace = Some("default".into());
    pod.metadata.creation_timestamp = job.status.as_ref().and_then(|s| s.start_time.clone());
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: "job-uid".into(),
        ..Default::default()
    }]);
    pod
}

/// The log of a builder that compiled `module`: its manifest line, then the module in an
/// artifact block.
fn compile_log(module: &[u8]) -> String {
    let digest = sha256_digest(module);
    let manifest = json!({
        "apiVersion": "wasmfn.dev/v1alpha1",
        "kind": "CompileManifest",
        "artifact": {"file": "module.wasm", "digest": digest, "size": module.len(),
            "mediaType": "application/wasm"},
        "toolchain": [{"name": "rustc", "version": "1.85"}],
        "timings": {"compileMs": 1200.0, "totalMs": 1500.0},
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(module);
    format!(
        "Compiling hello\n{manifest}\n-----BEGIN WASMFN ARTIFACT module.wasm {digest}-----\n\
         {encoded}\n-----END WASMFN ARTIFACT-----\n"
    )
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).expect("in range"))
}
