//! Starting an attempt: on an agent (handed over, nothing written until it answers or runs
//! long), or as a run pod (its module, its input ConfigMap, the namespace's egress policy,
//! room on a node, then the pod and the Scheduled status).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use wasmfn_agent_protocol::{RunAssignment, RunSettings};
use wasmfn_api::{labels, ArtifactStatus, WasmExecution, WasmFunction};

use super::{name_taken, wait_for_leftover, Run, RUN_POLL};
use crate::admission::{Admitted, QueueKey};
use crate::agent::dispatch::{FetchModule, Handoff};
use crate::agent::pool::AgentView;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::execution::decision::RUNNING_NOTE_AFTER;
use crate::execution::inputs::RunInputs;
use crate::execution::observe::{path_of, runtime_of};
use crate::execution::placement::Placement;
use crate::execution::reasons::{Failure, Pending};
use crate::execution::run_pod::{
    input_config_map, pod_name, run_pod, ModuleMount, PodSettings, RunContract, RunSpec,
};
use crate::execution::status::Assignment;
use crate::idempotent::{create_owned, Owned};
use crate::metrics::{AgentLabels, RuntimeLabels};
use crate::reconciler::owner_reference;
use crate::telemetry::object_spans::ExecutionTrace;
use crate::watched::listed;

/// Starts `attempt` where `placement` says; `candidates` are the nodes a run pod may be
/// admitted to.
pub async fn start(
    run: &Run<'_>,
    attempt: i32,
    placement: Placement,
    candidates: Vec<String>,
) -> Result<Action> {
    let (ctx, seen) = (run.ctx, run.seen);
    let (Some(function), Some(inputs)) = (&seen.function, seen.runnable_inputs()) else {
        return Err(Error::Invariant("Start without a Ready function".into()));
    };
    let execution = run.execution();
    let (trace, trace_problem) = ExecutionTrace::of(execution);
    let traceparent = ctx
        .tracer
        .keeps(&trace.trace_id, trace.caller_sampled)
        .then(|| trace.attempt_traceparent(&seen.uid, attempt).header());
    let contract = RunContract {
        entrypoint: function.spec.entrypoint.as_deref(),
        invoke_args: &execution.spec.invoke_args,
        args: &execution.spec.args,
        env: &inputs.env,
        timeout_ms: inputs.timeout_ms,
        memory_bytes: inputs.memory_bytes,
        max_output_bytes: inputs.max_output_bytes,
        traceparent: traceparent.as_deref(),
    };
    if let Placement::Agent { .. } = &placement {
        ctx.admission.leave(&queue_key(execution, &seen.uid));
        let start = AgentStart {
            attempt,
            function,
            inputs,
            settings: contract.settings(None),
            placement: &placement,
            trace_problem,
        };
        return start_on_agent(run, start).await;
    }
    let start = PodStart {
        attempt,
        function,
        inputs,
        placement: &placement,
        candidates: &candidates,
        contract,
        trace_problem,
    };
    start_pod(run, start).await
}

/// An attempt about to start as a run pod.
struct PodStart<'a> {
    attempt: i32,
    function: &'a WasmFunction,
    inputs: &'a RunInputs,
    placement: &'a Placement,
    candidates: &'a [String],
    contract: RunContract<'a>,
    trace_problem: Option<String>,
}

/// Creates the attempt's run pod once its module, input and a node's room are there.
async fn start_pod(run: &Run<'_>, start: PodStart<'_>) -> Result<Action> {
    let (ctx, seen) = (run.ctx, run.seen);
    let attempt = start.attempt;
    let module = match module_for(run, start.function, start.placement, attempt).await? {
        ControlFlow::Continue(module) => module,
        ControlFlow::Break(action) => return Ok(action),
    };
    let owner = owner_reference(run.execution(), true)?;
    let stdin_map = match input_map(run, start.inputs, &owner, attempt).await? {
        ControlFlow::Continue(map) => map,
        ControlFlow::Break(action) => return Ok(action),
    };
    ctx.ensure_network_policy(&seen.namespace, run.execution())
        .await?;
    let pod_name = pod_name(&seen.name, attempt);
    let held = format!("{}/{pod_name}", seen.namespace);
    let node = match admit(ctx, run.execution(), &seen.uid, &held, start.candidates).await? {
        Ok(node) => node,
        Err(message) => {
            return super::wait(run, Pending::Queued, message, "Admit").await;
        }
    };
    let settings = pod_settings(ctx);
    let pod = run_pod(&RunSpec {
        execution: &seen.name,
        uid: &seen.uid,
        owner: owner.clone(),
        attempt,
        placement: start.placement,
        node: node.as_deref(),
        module,
        contract: start.contract,
        stdin_config_map: stdin_map.as_deref(),
        settings: &settings,
    });
    let created = create_owned(&run.pods, &pod, &owner)
        .await
        .inspect_err(|_| ctx.admission.release(&held))?;
    if created != Owned::Ours {
        ctx.admission.release(&held);
    }
    match created {
        Owned::Leftover => wait_for_leftover(run, "Pod", &pod_name).await,
        Owned::Taken => name_taken(run, "Pod", &pod_name, attempt - 1).await,
        Owned::Ours => scheduled(run, attempt, &pod, start.placement, start.trace_problem).await,
    }
}

/// Notes the created pod in the status (phase Scheduled).
async fn scheduled(
    run: &Run<'_>,
    attempt: i32,
    pod: &Pod,
    placement: &Placement,
    trace_problem: Option<String>,
) -> Result<Action> {
    let assignment = Assignment {
        runtime: runtime_of(pod),
        path: path_of(pod),
        reason: placement_reason(placement),
        pod: pod.name_any(),
    };
    let note = format!(
        "attempt {attempt}: {} pod {} ({})",
        assignment.runtime, assignment.pod, assignment.reason
    );
    let status = run.update.clone().scheduled(attempt, &assignment);
    if run.write(&status).await? {
        let labels = RuntimeLabels {
            runtime: assignment.runtime.as_str(),
        };
        run.ctx
            .metrics
            .run_pods_created
            .get_or_create(&labels)
            .inc();
        run.event(EventType::Normal, "Placed", "Place", note).await;
        if let Some(problem) = trace_problem {
            let note = format!("{problem}; the execution's spans start a trace of their own");
            run.event(EventType::Warning, "InvalidTraceparent", "Trace", note)
                .await;
        }
    }
    Ok(Action::requeue(RUN_POLL))
}

/// The attempt's module as the pod mounts it. A transient failure to get it is tried again
/// with backoff, visible as `ArtifactUnavailable` while it lasts and bounded; a lasting one
/// fails the execution.
async fn module_for(
    run: &Run<'_>,
    function: &WasmFunction,
    placement: &Placement,
    attempt: i32,
) -> Result<ControlFlow<Action, ModuleMount>> {
    let ctx = run.ctx;
    let artifact_key = format!("artifact/{}", run.seen.uid);
    if let Some(left) = ctx.backoff_left(&artifact_key) {
        return Ok(ControlFlow::Break(Action::requeue(left)));
    }
    let ModuleProblem(message, transient) =
        match module_mount(ctx, &run.seen.namespace, function, placement).await {
            Ok(module) => {
                ctx.succeeded(&artifact_key);
                return Ok(ControlFlow::Continue(module));
            }
            Err(problem) => problem,
        };
    let tries = match transient {
        true => ctx.failed_again(&artifact_key),
        false => ARTIFACT_TRIES,
    };
    if tries < ARTIFACT_TRIES {
        let delay = crate::context::backoff_delay(tries);
        let note = format!(
            "{message}; trying again in {}s ({tries} of {ARTIFACT_TRIES} tries)",
            delay.as_secs()
        );
        run.pend(Pending::ArtifactUnavailable, note, "Run").await?;
        return Ok(ControlFlow::Break(Action::requeue(delay)));
    }
    ctx.succeeded(&artifact_key);
    run.fail_with(Failure::ArtifactUnavailable, message, attempt - 1)
        .await?;
    Ok(ControlFlow::Break(Action::requeue(Duration::from_secs(1))))
}

/// The ConfigMap holding the attempt's stdin, when it has one, created for the execution.
async fn input_map(
    run: &Run<'_>,
    inputs: &RunInputs,
    owner: &OwnerReference,
    attempt: i32,
) -> Result<ControlFlow<Action, Option<String>>> {
    let Some(stdin) = &inputs.stdin else {
        return Ok(ControlFlow::Continue(None));
    };
    let maps = Api::<ConfigMap>::namespaced(run.ctx.client.clone(), &run.seen.namespace);
    let map = input_config_map(&run.seen.name, owner.clone(), stdin);
    let name = map.name_any();
    Ok(match create_owned(&maps, &map, owner).await? {
        Owned::Ours => ControlFlow::Continue(Some(name)),
        Owned::Leftover => ControlFlow::Break(wait_for_leftover(run, "ConfigMap", &name).await?),
        Owned::Taken => ControlFlow::Break(name_taken(run, "ConfigMap", &name, attempt - 1).await?),
    })
}

/// An attempt about to start on an agent.
struct AgentStart<'a> {
    attempt: i32,
    function: &'a WasmFunction,
    inputs: &'a RunInputs,
    settings: RunSettings,
    placement: &'a Placement,
    trace_problem: Option<String>,
}

/// Hands the attempt to the agent. Nothing is written yet: the answer usually comes first and
/// is recorded in one write; a longer run is noted Running after [`RUNNING_NOTE_AFTER`]. Should
/// this replica stop before either write, the next leader starts the attempt again.
async fn start_on_agent(run: &Run<'_>, start: AgentStart<'_>) -> Result<Action> {
    let (ctx, seen) = (run.ctx, run.seen);
    let Placement::Agent {
        agent,
        node,
        address,
        reason,
    } = start.placement
    else {
        return Err(Error::Invariant("start_on_agent without an agent".into()));
    };
    let Some(agents) = &ctx.agents else {
        return Err(Error::Invariant("an agent placement without agents".into()));
    };
    let artifact = match stored_artifact(start.function) {
        Ok(artifact) => artifact.clone(),
        Err(ModuleProblem(message, _)) => {
            run.fail_with(Failure::ArtifactUnavailable, message, start.attempt - 1)
                .await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    };
    let namespace = seen.namespace.clone();
    let started = Time(seen.now);
    if let Some(problem) = start.trace_problem {
        let note = format!("{problem}; the execution's spans start a trace of their own");
        run.event(EventType::Warning, "InvalidTraceparent", "Trace", note)
            .await;
    }
    let assignment = RunAssignment {
        namespace: namespace.clone(),
        execution: seen.name.clone(),
        uid: seen.uid.clone(),
        attempt: start.attempt,
        module_digest: artifact.digest.clone(),
        script_media_type: script_media_type(&artifact),
        settings: start.settings,
        stdin_base64: start
            .inputs
            .stdin
            .as_ref()
            .map(|text| base64::engine::general_purpose::STANDARD.encode(text)),
    };
    let stores = ctx.stores.clone();
    let fetch: FetchModule = Box::new(move || {
        Box::pin(async move {
            stores
                .module_bytes(&namespace, &artifact)
                .await
                .map_err(|e| e.to_string())
        })
    });
    let handoff = Handoff {
        object: ObjectRef::from_obj(run.execution()),
        agent: AgentView {
            pod: agent.clone(),
            node: node.clone(),
            address: address.clone(),
            ready: true,
        },
        assignment,
        started,
        reason: reason.clone(),
    };
    agents.dispatcher.dispatch(handoff, fetch);
    let labels = AgentLabels {
        agent: agent.to_owned(),
    };
    ctx.metrics
        .agent_runs_dispatched
        .get_or_create(&labels)
        .inc();
    Ok(Action::requeue(RUNNING_NOTE_AFTER))
}

/// Admission of the run pod `namespace/pod` to one of `candidates`: `Ok(Some(node))` to pin it
/// there, `Ok(None)` without a cap (the scheduler chooses), `Err(why)` while it is queued.
async fn admit(
    ctx: &Context,
    execution: &WasmExecution,
    uid: &str,
    pod: &str,
    candidates: &[String],
) -> Result<std::result::Result<Option<String>, String>> {
    if ctx.admission.cap() == 0 {
        return Ok(Ok(None));
    }
    let watched = match listed(&ctx.watched.pods) {
        Some(pods) => pods,
        None => {
            let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
            Api::<Pod>::all(ctx.client.clone())
                .list(&ListParams::default().labels(&managed))
                .await?
                .items
                .into_iter()
                .map(Arc::new)
                .collect()
        }
    };
    let decided = ctx.admission.admit(
        queue_key(execution, uid),
        ObjectRef::from_obj(execution),
        pod,
        candidates,
        &watched,
    );
    ctx.metrics
        .executions_queued
        .set(i64::try_from(ctx.admission.queued()).unwrap_or(i64::MAX));
    Ok(match decided {
        Admitted::Node(node) => Ok(Some(node)),
        Admitted::Queued { message } => Err(message),
    })
}

/// An execution's place in the admission queue: its creation, then its uid.
fn queue_key(execution: &WasmExecution, uid: &str) -> QueueKey {
    let created = execution
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    (created, uid.to_owned())
}

/// Why a run cannot get its module, and whether trying again later may help.
struct ModuleProblem(String, bool);

/// How often a transient failure to get an attempt's module (the registry or the API server
/// not answering while the OCI module is copied) is tried before the execution fails: with the
/// usual backoff, 2 s doubling, about a minute in all.
const ARTIFACT_TRIES: u32 = 6;

/// How the pod gets the function's module.
async fn module_mount(
    ctx: &Context,
    namespace: &str,
    function: &WasmFunction,
    placement: &Placement,
) -> Result<ModuleMount, ModuleProblem> {
    let status = function.status.as_ref();
    let artifact = stored_artifact(function)?;
    let script = script_media_type(artifact).is_some();
    let mount = |maps| {
        if script {
            ModuleMount::Script(maps)
        } else {
            ModuleMount::ConfigMaps(maps)
        }
    };
    match (artifact.store.as_str(), placement) {
        // A script's image is no root filesystem: its Wasm pod mounts a ConfigMap copy and
        // names the wasm-pod image, which ships the interpreters.
        ("oci", Placement::Wasm { .. }) if !script => {
            Ok(ModuleMount::Image(artifact.location.clone()))
        }
        ("oci", _) => {
            let key = status.and_then(|s| s.cache_key.clone()).unwrap_or_default();
            let copy = ctx
                .stores
                .config_map_copy(namespace, &key, &artifact.digest, &artifact.media_type)
                .await
                .map_err(|e| {
                    ModuleProblem(
                        format!("copying the artifact into ConfigMaps: {e}"),
                        e.is_transient(),
                    )
                })?;
            Ok(mount(copy.config_maps))
        }
        _ if artifact.config_maps.is_empty() => Err(ModuleProblem(
            "the function's artifact lists no ConfigMaps".into(),
            false,
        )),
        _ => Ok(mount(artifact.config_maps.clone())),
    }
}

/// The function's stored artifact: a WebAssembly module, or a Python or JavaScript script that
/// every runner runs under the interpreter it ships.
fn stored_artifact(function: &WasmFunction) -> Result<&ArtifactStatus, ModuleProblem> {
    let status = function.status.as_ref();
    let Some(artifact) = status.and_then(|s| s.artifact.as_ref()) else {
        return Err(ModuleProblem(
            "the function is Ready but has no artifact".into(),
            false,
        ));
    };
    if artifact.media_type != wasmfn_artifact::WASM_MEDIA_TYPE
        && script_media_type(artifact).is_none()
    {
        return Err(ModuleProblem(
            format!(
                "the function's artifact has media type {:?}, which no runner executes",
                artifact.media_type
            ),
            false,
        ));
    }
    Ok(artifact)
}

/// The artifact's media type when it is a script.
fn script_media_type(artifact: &ArtifactStatus) -> Option<String> {
    wasmfn_artifact::is_script_media_type(&artifact.media_type).then(|| artifact.media_type.clone())
}

fn pod_settings(ctx: &Context) -> PodSettings {
    PodSettings {
        runner_image: ctx.config.runner_image.clone(),
        wasm_pod_image: ctx.config.wasm_pod_image.clone(),
        memory_overhead_bytes: ctx.config.run_memory_overhead,
        // A far backstop: the start deadline governs the time before the container starts, the
        // runner the guest's timeout.
        deadline_grace_seconds: ctx
            .config
            .run_deadline_grace_seconds
            .saturating_add(ctx.config.start_deadline_seconds),
        cpu_limit: (!ctx.config.run_cpu_limit.is_empty())
            .then(|| Quantity(ctx.config.run_cpu_limit.clone())),
        image_pull_secrets: ctx.config.image_pull_secrets.clone(),
    }
}

fn placement_reason(placement: &Placement) -> String {
    match placement {
        Placement::Wasm { reason, .. }
        | Placement::Agent { reason, .. }
        | Placement::Container { reason }
        | Placement::Wait { reason } => reason.clone(),
    }
}
