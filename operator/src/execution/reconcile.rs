//! The reconciler: fetch (the function, the run pods, the observed nodes) → [`decide`] → apply.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, LogParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};
use wasmfn_agent_protocol::{RunAssignment, RunSettings};
use wasmfn_api::{
    labels, ArtifactStatus, ExecutionPath, ExecutionPhase, FunctionPhase, WasmExecution,
    WasmExecutionStatus, WasmFunction,
};
use wasmfn_result::trace::RunTrace;

use super::admission::{Admitted, QueueKey, NODE_LABEL};
use super::decision::{
    decide, note_running_in, track_poll, FunctionState, Observation, Step, RUNNING_NOTE_AFTER,
};
use super::inputs::{resolve, Defaults, RunInputs};
use super::outcome::{
    agent_attempt_state, log_limit, pod_cause, result_fields, run_state, scheduled_at, wants_log,
    with_node_health, Loss, RunState,
};
use super::placement::{
    place, pod_nodes, prefer_agent, NodeView, Placement, Policy, RuntimeClassView, Taint,
    Toleration,
};
use super::run_pod::{
    input_config_map, pod_name, run_pod, ModuleMount, PodSettings, RunContract, RunSpec,
    ATTEMPT_LABEL, CONTAINER, EXECUTION_UID_LABEL, RUNTIME_ANNOTATION,
};
use super::status::{leaves_a_final_phase, Assignment, StatusUpdate};
use super::trim;
use super::watched::{listed, watched_pods};
use crate::agent::dispatch::{AgentAttempt, FetchModule, Handoff};
use crate::agent::pool::{choose, AgentView};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::idempotent::{create_owned, delete_if_present, Owned};
use crate::reconciler::{self, owner_reference, Read, Reconciled};
use crate::telemetry::object_spans::{
    nanos, AttemptEnd, ExecutionTrace, Reconcile as ReconcileSpan,
};
use crate::telemetry::span::Span;

/// How often an execution waiting for its function or a node looks again without an event.
const WAIT_POLL: Duration = Duration::from_secs(30);
/// How often a running attempt is looked at without a pod event.
const RUN_POLL: Duration = Duration::from_secs(60);
/// The condition reason of an execution waiting for room for its run pod.
pub const QUEUED: &str = "Queued";
/// How often a queued execution looks for room without being woken (a run pod finishing
/// wakes the head of the queue).
const QUEUED_POLL: Duration = Duration::from_secs(15);
/// How soon an attempt starts again after an earlier same-named execution's leftover object
/// held the name it needs (the leftover is being deleted).
const LEFTOVER_POLL: Duration = Duration::from_secs(1);

/// Reconciles one execution.
#[instrument(skip(execution, ctx), fields(namespace = execution.namespace(), name = execution.name_any()))]
pub async fn reconcile(execution: Arc<WasmExecution>, ctx: Arc<Context>) -> Result<Action> {
    reconciler::run(execution, ctx, |execution, ctx, read| async move {
        reconcile_inner(&execution, &ctx, read == Read::Again).await
    })
    .await
}

impl Reconciled for WasmExecution {
    type Status = WasmExecutionStatus;
    const CONTROLLER: &'static str = "execution";

    fn status(&self) -> Option<&WasmExecutionStatus> {
        self.status.as_ref()
    }

    fn set_status(&mut self, status: WasmExecutionStatus) {
        self.status = Some(status);
    }

    fn settled(&self) -> bool {
        is_finished(self.status.as_ref())
    }

    fn reconcile_span(&self, service: &str, reconcile: &ReconcileSpan<'_>) -> (Span, Option<bool>) {
        let (trace, _) = ExecutionTrace::of(self);
        (
            trace.reconcile_span(service, reconcile),
            trace.caller_sampled,
        )
    }
}

/// The spans of an attempt that ended: its own, and the runner's from its result document.
fn trace_attempt(
    ctx: &Context,
    execution: &WasmExecution,
    uid: &str,
    end: &AttemptEnd<'_>,
    run: Option<&RunTrace>,
) {
    let Some(service) = ctx.tracer.service() else {
        return;
    };
    let (trace, _) = ExecutionTrace::of(execution);
    let mut spans = vec![trace.attempt_span(service, uid, end)];
    if let Some(run) = run {
        spans.extend(trace.runner_spans(uid, end.attempt, run, end.pod));
    }
    ctx.tracer.record(trace.caller_sampled, spans);
}

/// When the operator created `pod`, for its attempt's span.
fn created_nanos(pod: &Pod, now: Timestamp) -> u64 {
    nanos(
        pod.metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, |t| t.0),
    )
}

fn is_finished(status: Option<&WasmExecutionStatus>) -> bool {
    matches!(
        status.and_then(|s| s.phase),
        Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed | ExecutionPhase::TimedOut)
    )
}

fn attempt_of(pod: &Pod) -> Option<i32> {
    pod.labels().get(ATTEMPT_LABEL)?.parse().ok()
}

/// The attempt's state from its pod, and from its node's health when the pod is being deleted.
fn pod_state(ctx: &Context, pod: &Pod) -> RunState {
    let state = run_state(pod);
    if !matches!(state, RunState::Lost { .. }) {
        return state;
    }
    let Some(name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return state;
    };
    // Only a store that has listed can say a node is gone.
    if listed(&ctx.watched.nodes).is_none() {
        return state;
    }
    let node = ctx.watched.nodes.get(&ObjectRef::new(name));
    with_node_health(state, node.as_deref())
}

/// A pod attempt that ends lost gets its pod's newest warning event in its message: the cause
/// a person needs (a handler the node's containerd lacks, an image that cannot be pulled) is
/// often only there, and the pod goes with the retry. Read once, as the attempt ends; an
/// unreadable event list leaves the message as it is.
async fn with_pod_cause(ctx: &Context, mut step: Step, owned: &[Pod]) -> Step {
    let (attempt, message) = match &mut step {
        Step::Retry {
            attempt,
            loss,
            message,
            ..
        } if Loss::POD_LOSSES.contains(loss) => (*attempt, message),
        Step::Fail {
            reason,
            message,
            attempts,
        } if Loss::POD_LOSSES.iter().any(|l| l.reason() == *reason) => (*attempts, message),
        _ => return step,
    };
    let Some(pod) = owned.iter().find(|p| attempt_of(p) == Some(attempt)) else {
        return step;
    };
    let (Some(namespace), Some(uid)) = (pod.namespace(), pod.uid()) else {
        return step;
    };
    let events = Api::<Event>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await;
    match events {
        Ok(events) => {
            if let Some(cause) = pod_cause(&events.items) {
                message.push_str(&format!("; the pod's last warning: {cause}"));
            }
        }
        Err(error) => warn!(%error, pod = %pod.name_any(), "cannot read the lost pod's events"),
    }
    step
}

/// Decides on the cached execution when [`LastWrites::trusts`] it (and `reread` is false), on
/// a fresh read otherwise.
///
/// [`LastWrites::trusts`]: super::watched::LastWrites::trusts
async fn reconcile_inner(cached: &WasmExecution, ctx: &Context, reread: bool) -> Result<Action> {
    let namespace = cached
        .namespace()
        .ok_or_else(|| Error::Invariant("a WasmExecution without a namespace".into()))?;
    let name = cached.name_any();
    let executions = Api::<WasmExecution>::namespaced(ctx.client.clone(), &namespace);
    // The watch cache may not have seen this operator's last status write yet; acting on it
    // could record a result twice or take a pod deleted after recording for a lost attempt.
    let fresh;
    // A trimmed cached copy lacks payloads: fine for cleaning up after a result (which
    // writes no status), read whole before anything else.
    let whole = !trim::is_trimmed(cached) || is_finished(cached.status.as_ref());
    let execution = if !reread && whole && ctx.last_writes.trusts(cached) {
        cached
    } else {
        let Some(read) = executions.get_opt(&name).await? else {
            return Ok(Action::await_change());
        };
        fresh = read;
        &fresh
    };
    let uid = execution
        .uid()
        .ok_or_else(|| Error::Invariant("a WasmExecution without a uid".into()))?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace);
    let current = execution.status.as_ref();
    let now = Timestamp::now();
    let update = StatusUpdate::new(current, execution.metadata.generation, Time(now));

    // The current attempt runs on an agent: no pod of this execution is alive (a lost pod
    // attempt's pods are deleted before the next attempt starts).
    let on_agent = on_agent(ctx, &uid, current);
    // Once an attempt has started, always a fresh list: a stale view could take a live
    // attempt for a lost one. Before that, the watched pods (only a pod an earlier leader
    // made without recording it can exist, and starting it again is idempotent).
    let started_any = current.is_some_and(|s| s.attempts > 0);
    let watched = (on_agent.is_none() && !started_any)
        .then(|| watched_pods(&ctx.watched.pods, EXECUTION_UID_LABEL, &uid))
        .flatten();
    let owned: Vec<Pod> = match (&on_agent, watched) {
        (Some(_), _) => Vec::new(),
        (None, Some(seen)) => seen,
        (None, None) => {
            pods.list(&ListParams::default().labels(&format!("{EXECUTION_UID_LABEL}={uid}")))
                .await?
                .items
        }
    };
    if is_finished(current) {
        return finish_up(ctx, execution, &executions, &pods, &owned, now).await;
    }

    let function = function_of(ctx, &namespace, &execution.spec.function_ref.name).await?;
    let config = &ctx.config;
    let defaults = Defaults {
        timeout_ms: config.wasmedge_timeout_ms,
        memory_bytes: config.wasmedge_memory_limit,
        max_output_bytes: config.max_output_bytes,
    };
    let inputs = function
        .as_ref()
        .map(|f| resolve(&execution.spec, &f.spec, defaults));
    let input_problem = match &inputs {
        Some(Err((reason, message))) => Some((*reason, message.clone())),
        _ => None,
    };
    let latest = owned
        .iter()
        .filter_map(|p| attempt_of(p).map(|a| (a, p)))
        .max_by_key(|(a, _)| *a);
    let age = |t: Time| Duration::try_from(now.duration_since(t.0)).ok();
    let pod_age = latest
        .and_then(|(_, p)| p.metadata.creation_timestamp.clone())
        .and_then(age);
    let on_node_for = latest
        .filter(|_| on_agent.is_none())
        .and_then(|(_, p)| scheduled_at(p))
        .and_then(age);
    let deadline = inputs
        .as_ref()
        .and_then(|i| i.as_ref().ok())
        .map(|i| i.timeout_ms.div_ceil(1000))
        .unwrap_or(config.wasmedge_timeout_ms.div_ceil(1000));
    let start_deadline = Duration::from_secs(config.start_deadline_seconds);
    let mut observation = Observation {
        status: current,
        function: function_state(function.as_ref()),
        input_problem,
        pod: match &on_agent {
            Some(run) => Some((
                run.attempt,
                agent_attempt_state(run.known.clone(), run.attempt, &run.assignment.pod),
            )),
            None => latest.map(|(a, p)| (a, pod_state(ctx, p))),
        },
        placement: None,
        pod_age,
        on_node_for,
        start_deadline,
        schedule_timeout: Duration::from_secs(deadline + config.run_deadline_grace_seconds),
        pod_is_wasm: on_agent.is_none() && latest.is_some_and(|(_, p)| runtime_of(p) == "WasmEdge"),
        pod_pinned: on_agent.is_none()
            && latest.is_some_and(|(_, p)| p.labels().contains_key(NODE_LABEL)),
        retries: execution.spec.retries,
        now,
    };
    let mut step = decide(&observation);
    let (placement, candidates) = if step == Step::Place {
        let (placement, candidates) = place_now(ctx, execution).await?;
        observation.placement = Some(&placement);
        step = decide(&observation);
        (Some(placement), candidates)
    } else {
        (None, Vec::new())
    };
    let step = with_pod_cause(ctx, step, &owned).await;
    info!(?step, "decided");

    match step {
        Step::Place => Err(Error::Invariant("placement asked for twice".into())),
        Step::Done => finish_up(ctx, execution, &executions, &pods, &owned, now).await,
        Step::Wait { reason, message } => {
            let status = update.pending(reason, &message);
            if write_status(ctx, &executions, execution, &status).await? {
                let warning = reason != "FunctionNotReady";
                ctx.event(execution, warning, reason, "Wait", message).await;
            }
            Ok(Action::requeue(if reason == "Unschedulable" {
                Duration::from_secs(10)
            } else {
                WAIT_POLL
            }))
        }
        Step::Fail {
            reason,
            message,
            attempts,
        } => {
            let status = update.failed(reason, &message, attempts);
            if write_status(ctx, &executions, execution, &status).await? {
                report_outcome(ctx, execution, &status, now);
                ctx.event(execution, true, reason, "Run", message).await;
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::Start { attempt } => {
            let (Some(function), Some(Ok(inputs))) = (function, inputs) else {
                return Err(Error::Invariant("Start without a Ready function".into()));
            };
            let placement =
                placement.ok_or_else(|| Error::Invariant("Start without a placement".into()))?;
            let (trace, trace_problem) = ExecutionTrace::of(execution);
            let traceparent = ctx
                .tracer
                .keeps(&trace.trace_id, trace.caller_sampled)
                .then(|| trace.attempt_traceparent(&uid, attempt).header());
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
                ctx.admission.leave(&queue_key(execution, &uid));
                let start = AgentStart {
                    execution,
                    uid: &uid,
                    attempt,
                    function: &function,
                    inputs: &inputs,
                    settings: contract.settings(None),
                    placement: &placement,
                    trace_problem,
                    now,
                };
                return start_on_agent(ctx, &executions, update, start).await;
            }
            let owner = owner_reference(execution, true)?;
            let artifact_key = format!("artifact/{uid}");
            if let Some(left) = ctx.backoff_left(&artifact_key) {
                return Ok(Action::requeue(left));
            }
            let module = match module_mount(ctx, &namespace, &function, &placement).await {
                Ok(module) => {
                    ctx.succeeded(&artifact_key);
                    module
                }
                Err(ModuleProblem(message, transient)) => {
                    let tries = match transient {
                        true => ctx.failed_again(&artifact_key),
                        false => ARTIFACT_TRIES,
                    };
                    if tries < ARTIFACT_TRIES {
                        // Visible while it lasts, and bounded.
                        let delay = crate::context::backoff_delay(tries);
                        let note = format!(
                            "{message}; trying again in {}s ({tries} of {ARTIFACT_TRIES} tries)",
                            delay.as_secs()
                        );
                        let status = update.pending("ArtifactUnavailable", &note);
                        if write_status(ctx, &executions, execution, &status).await? {
                            ctx.event(execution, true, "ArtifactUnavailable", "Run", note)
                                .await;
                        }
                        return Ok(Action::requeue(delay));
                    }
                    ctx.succeeded(&artifact_key);
                    let status = update.failed("ArtifactUnavailable", &message, attempt - 1);
                    if write_status(ctx, &executions, execution, &status).await? {
                        report_outcome(ctx, execution, &status, now);
                        ctx.event(execution, true, "ArtifactUnavailable", "Run", message)
                            .await;
                    }
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
            };
            let stdin_map = match &inputs.stdin {
                Some(stdin) => {
                    let maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
                    let map = input_config_map(&name, owner.clone(), stdin);
                    let created = create_owned(&maps, &map, &owner).await?;
                    if created == Owned::Leftover {
                        let map = map.name_any();
                        return wait_for_leftover(
                            ctx,
                            execution,
                            &executions,
                            update,
                            "ConfigMap",
                            &map,
                        )
                        .await;
                    }
                    if created == Owned::Taken {
                        return name_taken(
                            ctx,
                            execution,
                            &executions,
                            update,
                            "ConfigMap",
                            &map.name_any(),
                            attempt - 1,
                            now,
                        )
                        .await;
                    }
                    Some(map.name_any())
                }
                None => None,
            };
            crate::network_policy::ensure(ctx, &namespace, execution).await?;
            let pod_name = pod_name(&name, attempt);
            let held = format!("{namespace}/{pod_name}");
            let node = match admit(ctx, execution, &uid, &held, &candidates).await? {
                Ok(node) => node,
                Err(message) => {
                    let status = update.pending(QUEUED, &message);
                    if write_status(ctx, &executions, execution, &status).await? {
                        ctx.event(execution, false, QUEUED, "Admit", message).await;
                    }
                    return Ok(Action::requeue(QUEUED_POLL));
                }
            };
            let settings = pod_settings(ctx);
            let pod = run_pod(&RunSpec {
                execution: &name,
                uid: &uid,
                owner,
                attempt,
                placement: &placement,
                node: node.as_deref(),
                module,
                contract,
                stdin_config_map: stdin_map.as_deref(),
                settings: &settings,
            });
            let created = create_owned(&pods, &pod, &owner_reference(execution, true)?)
                .await
                .inspect_err(|_| ctx.admission.release(&held))?;
            if created != Owned::Ours {
                ctx.admission.release(&held);
            }
            if created == Owned::Leftover {
                return wait_for_leftover(ctx, execution, &executions, update, "Pod", &pod_name)
                    .await;
            }
            if created == Owned::Taken {
                return name_taken(
                    ctx,
                    execution,
                    &executions,
                    update,
                    "Pod",
                    &pod_name,
                    attempt - 1,
                    now,
                )
                .await;
            }
            let assignment = Assignment {
                runtime: runtime_of(&pod),
                path: path_of(&pod),
                reason: placement_reason(&placement),
                pod: pod_name.clone(),
            };
            let note = format!(
                "attempt {attempt}: {} pod {pod_name} ({})",
                assignment.runtime, assignment.reason
            );
            let status = update.scheduled(attempt, &assignment);
            if write_status(ctx, &executions, execution, &status).await? {
                ctx.metrics.inc(
                    "wasmfn_run_pods_created_total",
                    &[("runtime", &assignment.runtime)],
                );
                ctx.event(execution, false, "Placed", "Place", note).await;
                if let Some(problem) = trace_problem {
                    let note =
                        format!("{problem}; the execution's spans start a trace of their own");
                    ctx.event(execution, true, "InvalidTraceparent", "Trace", note)
                        .await;
                }
            }
            Ok(Action::requeue(RUN_POLL))
        }
        Step::Track { attempt, state } => {
            let (assignment, _) = attempt_runner(&owned, attempt, on_agent.as_ref(), current)?;
            let poll = track_poll(&state, on_node_for, start_deadline, RUN_POLL);
            let status = match state {
                // An agent run the status does not show yet is noted only once it has run
                // for a while (most answer first, and their result is the one write).
                RunState::Running { node, started }
                    if on_agent.as_ref().is_some_and(|r| !r.shown) =>
                {
                    let started = started.unwrap_or(Time(now));
                    let ago = Duration::try_from(now.duration_since(started.0)).unwrap_or_default();
                    if let Some(left) = note_running_in(ago) {
                        return Ok(Action::requeue(left));
                    }
                    update.handed_to_agent(attempt, &assignment, node.unwrap_or_default(), started)
                }
                RunState::Running { node, started } => {
                    update.running(attempt, &assignment, node, started)
                }
                RunState::Starting { node, detail } => {
                    update.starting(attempt, &assignment, node, detail.as_deref())
                }
                other => return Err(Error::Invariant(format!("Track with {other:?}"))),
            };
            write_status(ctx, &executions, execution, &status).await?;
            Ok(Action::requeue(poll))
        }
        Step::Record { attempt, state } => {
            let (assignment, pod) = attempt_runner(&owned, attempt, on_agent.as_ref(), current)?;
            let cap = inputs
                .and_then(|i| i.ok())
                .map(|i: RunInputs| i.max_output_bytes)
                .unwrap_or(ctx.config.max_output_bytes);
            let (status, reason, warning, message, node_name, run) = match state {
                RunState::Finished {
                    node,
                    started,
                    finished,
                    document,
                } => {
                    let node_name = node.clone();
                    // An agent's document holds each stream up to the cap; a pod's holds what
                    // fits its termination message, and its log has the rest.
                    let log = match pod {
                        Some(pod) if wants_log(&document, cap) => {
                            read_log(&pods, &pod.name_any(), log_limit(&document, cap)).await
                        }
                        _ => None,
                    };
                    let fields = result_fields(&document, log.as_deref(), cap);
                    let reason = fields.reason.clone();
                    let warning = !fields.succeeded;
                    let message = fields.message.clone();
                    let run = document.trace.clone();
                    let status =
                        update.finished(attempt, &assignment, node, started, finished, fields);
                    (status, reason, warning, message, node_name, run)
                }
                RunState::Failed {
                    node,
                    started,
                    finished,
                    failure,
                } => {
                    let node_name = node.clone();
                    let status = update.platform_failure(
                        attempt,
                        &assignment,
                        node,
                        started,
                        finished,
                        &failure,
                    );
                    let reason = failure.reason.to_owned();
                    (status, reason, true, failure.message, node_name, None)
                }
                other => return Err(Error::Invariant(format!("Record with {other:?}"))),
            };
            if write_status(ctx, &executions, execution, &status).await? {
                let end = AttemptEnd {
                    attempt,
                    pod: &assignment.pod,
                    node: node_name.as_deref(),
                    runtime: &assignment.runtime,
                    reason: &reason,
                    started: pod.map_or_else(
                        || attempt_started(on_agent.as_ref(), current, now),
                        |pod| created_nanos(pod, now),
                    ),
                    ended: nanos(now),
                    error: warning.then(|| message.clone()),
                };
                trace_attempt(ctx, execution, &uid, &end, run.as_ref());
                report_outcome(ctx, execution, &status, now);
                let note = match assignment.path {
                    ExecutionPath::Agent => {
                        format!("{message} (path Agent: {})", assignment.reason)
                    }
                    _ => format!("{message} ({} {})", assignment.runtime, assignment.runner()),
                };
                ctx.event(execution, warning, &reason, "Run", note).await;
            }
            if let Some(agents) = &ctx.agents {
                agents.dispatcher.forget(&uid, attempt);
            }
            if let Some(pod) = pod.filter(|_| !ctx.config.keep_run_pods) {
                delete_pods(&pods, std::slice::from_ref(pod)).await?;
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::Retry {
            attempt,
            loss,
            message,
            at,
        } => {
            let status = update.retrying(attempt, loss, &message, Time(at), execution.spec.retries);
            if write_status(ctx, &executions, execution, &status).await? {
                ctx.metrics.inc(
                    "wasmfn_run_attempts_lost_total",
                    &[("reason", loss.reason())],
                );
                if let Ok((assignment, pod)) =
                    attempt_runner(&owned, attempt, on_agent.as_ref(), current)
                {
                    let end = AttemptEnd {
                        attempt,
                        pod: &assignment.pod,
                        node: pod.map_or_else(
                            || current.and_then(|s| s.node.as_deref()),
                            |pod| pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                        ),
                        runtime: &assignment.runtime,
                        reason: loss.reason(),
                        started: pod.map_or_else(
                            || attempt_started(on_agent.as_ref(), current, now),
                            |pod| created_nanos(pod, now),
                        ),
                        ended: nanos(now),
                        error: Some(message.clone()),
                    };
                    trace_attempt(ctx, execution, &uid, &end, None);
                }
                let note = format!("attempt {attempt} was lost ({message}); retrying");
                ctx.event(execution, true, loss.reason(), "Run", note).await;
            }
            // A lost attempt's pod has nothing more to say: an evicted one stays as a Failed
            // object, an unscheduled one would wait for a node forever.
            let lost: Vec<Pod> = owned
                .iter()
                .filter(|p| attempt_of(p) == Some(attempt))
                .cloned()
                .collect();
            delete_pods(&pods, &lost).await?;
            if let Some(agents) = &ctx.agents {
                agents.dispatcher.forget(&uid, attempt);
            }
            let wait = at.duration_since(now);
            Ok(Action::requeue(
                Duration::try_from(wait).unwrap_or(Duration::ZERO) + Duration::from_millis(100),
            ))
        }
        Step::BackOff { remaining } => Ok(Action::requeue(remaining + Duration::from_millis(100))),
    }
}

/// Waits (phase Pending) while an object an earlier execution of the same name left behind is
/// deleted: its name is the one this attempt needs.
async fn wait_for_leftover(
    ctx: &Context,
    execution: &WasmExecution,
    executions: &Api<WasmExecution>,
    update: StatusUpdate,
    kind: &str,
    name: &str,
) -> Result<Action> {
    let message = format!(
        "the {kind} {name} of an earlier execution of this name is being deleted; the run starts once it is gone"
    );
    let status = update.pending("WaitingForCleanup", &message);
    if write_status(ctx, executions, execution, &status).await? {
        ctx.event(execution, false, "WaitingForCleanup", "Run", message)
            .await;
    }
    Ok(Action::requeue(LEFTOVER_POLL))
}

/// Fails the execution because an object it needs a name for belongs to someone else.
#[allow(clippy::too_many_arguments)]
async fn name_taken(
    ctx: &Context,
    execution: &WasmExecution,
    executions: &Api<WasmExecution>,
    update: StatusUpdate,
    kind: &str,
    name: &str,
    attempts: i32,
    now: Timestamp,
) -> Result<Action> {
    let message = format!(
        "a {kind} named {name} already exists and does not belong to this execution; rename the execution or remove that {kind}"
    );
    let status = update.failed("NameConflict", &message, attempts);
    if write_status(ctx, executions, execution, &status).await? {
        report_outcome(ctx, execution, &status, now);
        ctx.event(execution, true, "NameConflict", "Run", message)
            .await;
    }
    Ok(Action::await_change())
}

/// Counts a finished execution in the metrics and ends its span (once: only the write that
/// finished it calls this).
fn report_outcome(
    ctx: &Context,
    execution: &WasmExecution,
    status: &WasmExecutionStatus,
    now: Timestamp,
) {
    let runtime = status.runtime.as_deref().unwrap_or("None");
    let outcome = status.reason.as_deref().unwrap_or("Unknown");
    let labels = [("runtime", runtime), ("outcome", outcome)];
    ctx.metrics.inc("wasmfn_executions_total", &labels);
    if let Some(ms) = status.duration_ms {
        ctx.metrics
            .observe("wasmfn_execution_duration_seconds", &labels, ms / 1000.0);
    }
    if let Some(created) = &execution.metadata.creation_timestamp {
        let latency = now.duration_since(created.0).as_secs_f64().max(0.0);
        ctx.metrics
            .observe("wasmfn_execution_latency_seconds", &labels, latency);
    }
    if let Some(service) = ctx.tracer.service() {
        let (trace, _) = ExecutionTrace::of(execution);
        let span = trace.execution_span(service, execution, status, now);
        ctx.tracer.record(trace.caller_sampled, [span]);
    }
}

/// A finished execution: its pods go (unless kept), and it goes itself after its TTL.
async fn finish_up(
    ctx: &Context,
    execution: &WasmExecution,
    executions: &Api<WasmExecution>,
    pods: &Api<Pod>,
    owned: &[Pod],
    now: Timestamp,
) -> Result<Action> {
    if !ctx.config.keep_run_pods {
        delete_pods(pods, owned).await?;
    }
    if let (Some(agents), Some(uid)) = (&ctx.agents, execution.uid()) {
        agents.dispatcher.forget(&uid, i32::MAX);
    }
    let retention = i64::try_from(ctx.config.finished_ttl_seconds).unwrap_or(i64::MAX);
    let Some(ttl) = execution
        .spec
        .ttl_seconds_after_finished
        .or((retention > 0).then_some(retention))
    else {
        return Ok(Action::await_change());
    };
    let finished = execution
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let expires = finished
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(ttl.max(0)))
        .unwrap_or(finished);
    let left = expires.duration_since(now);
    if left.is_positive() {
        return Ok(Action::requeue(
            Duration::try_from(left).unwrap_or(Duration::from_secs(1)) + Duration::from_millis(100),
        ));
    }
    info!("deleting: ttlSecondsAfterFinished passed");
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    delete_if_present(executions, &execution.name_any(), &params).await?;
    Ok(Action::await_change())
}

async fn delete_pods(pods: &Api<Pod>, owned: &[Pod]) -> Result<()> {
    for pod in owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        delete_if_present(pods, &pod.name_any(), &DeleteParams::default()).await?;
    }
    Ok(())
}

fn pod_of(owned: &[Pod], attempt: i32) -> Result<&Pod> {
    owned
        .iter()
        .find(|p| attempt_of(p) == Some(attempt))
        .ok_or_else(|| Error::Invariant(format!("no pod for attempt {attempt}")))
}

fn runtime_of(pod: &Pod) -> String {
    pod.annotations()
        .get(RUNTIME_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| "Container".to_owned())
}

fn placement_reason(placement: &Placement) -> String {
    match placement {
        Placement::Wasm { reason, .. }
        | Placement::Agent { reason, .. }
        | Placement::Container { reason }
        | Placement::Wait { reason } => reason.clone(),
    }
}

/// The runtime a pod was made for and why (from the status; a pod adopted after a restart,
/// before its placement was recorded, says only what it is).
fn assignment_of(pod: &Pod, status: Option<&WasmExecutionStatus>) -> Assignment {
    let runtime = runtime_of(pod);
    let reason = status
        .and_then(|s| s.placement_reason.clone())
        .unwrap_or_else(|| format!("placed as a {runtime} pod"));
    Assignment {
        runtime,
        path: path_of(pod),
        reason,
        pod: pod.name_any(),
    }
}

fn path_of(pod: &Pod) -> ExecutionPath {
    if runtime_of(pod) == "WasmEdge" {
        ExecutionPath::WasmPod
    } else {
        ExecutionPath::ContainerPod
    }
}

/// The current attempt, when an agent runs it.
struct OnAgent {
    attempt: i32,
    assignment: Assignment,
    /// Whether the status shows the attempt (a short run is written only with its result).
    shown: bool,
    /// How it stands, when this replica handed it over.
    known: Option<AgentAttempt>,
}

/// The newest attempt this replica handed to an agent when the status does not show it yet,
/// else the agent attempt the status names.
fn on_agent(ctx: &Context, uid: &str, status: Option<&WasmExecutionStatus>) -> Option<OnAgent> {
    let dispatcher = &ctx.agents.as_ref()?.dispatcher;
    let recorded = status.map_or(0, |s| s.attempts);
    let assignment = |agent: String, reason: String| Assignment {
        runtime: "WasmEdge".into(),
        path: ExecutionPath::Agent,
        reason,
        pod: agent,
    };
    if let Some((attempt, known)) = dispatcher.latest(uid).filter(|(a, _)| *a > recorded) {
        return Some(OnAgent {
            attempt,
            assignment: assignment(known.agent.clone(), known.reason.clone()),
            shown: false,
            known: Some(known),
        });
    }
    let status = status?;
    if status.path != Some(ExecutionPath::Agent) || status.attempts == 0 {
        return None;
    }
    Some(OnAgent {
        attempt: status.attempts,
        assignment: assignment(
            status.agent.clone().unwrap_or_default(),
            status.placement_reason.clone().unwrap_or_default(),
        ),
        shown: true,
        known: dispatcher.attempt(uid, status.attempts),
    })
}

/// Who runs `attempt`: the agent, or the attempt's pod.
fn attempt_runner<'a>(
    owned: &'a [Pod],
    attempt: i32,
    on_agent: Option<&OnAgent>,
    status: Option<&WasmExecutionStatus>,
) -> Result<(Assignment, Option<&'a Pod>)> {
    if let Some(run) = on_agent.filter(|run| run.attempt == attempt) {
        return Ok((run.assignment.clone(), None));
    }
    let pod = pod_of(owned, attempt)?;
    Ok((assignment_of(pod, status), Some(pod)))
}

/// The start of the current attempt in nanoseconds, for spans: when it was handed to its agent
/// (the status may not show it yet), else the status's start time.
fn attempt_started(
    on_agent: Option<&OnAgent>,
    status: Option<&WasmExecutionStatus>,
    now: Timestamp,
) -> u64 {
    let handed = on_agent
        .and_then(|run| run.known.as_ref())
        .map(|known| known.started.0);
    nanos(
        handed
            .or_else(|| status.and_then(|s| s.start_time.as_ref()).map(|t| t.0))
            .unwrap_or(now),
    )
}

/// An attempt about to start on an agent.
struct AgentStart<'a> {
    execution: &'a WasmExecution,
    uid: &'a str,
    attempt: i32,
    function: &'a WasmFunction,
    inputs: &'a RunInputs,
    settings: RunSettings,
    placement: &'a Placement,
    trace_problem: Option<String>,
    now: Timestamp,
}

/// Hands the attempt to the agent. Nothing is written yet: the answer usually comes first and
/// is recorded in one write; a longer run is noted Running after [`RUNNING_NOTE_AFTER`]. Should
/// this replica stop before either write, the next leader starts the attempt again.
async fn start_on_agent(
    ctx: &Context,
    executions: &Api<WasmExecution>,
    update: StatusUpdate,
    start: AgentStart<'_>,
) -> Result<Action> {
    let Placement::Agent {
        agent,
        node,
        address,
        reason,
    } = start.placement
    else {
        return Err(Error::Invariant("start_on_agent without an agent".into()));
    };
    let (Some(agents), Some(namespace)) = (&ctx.agents, start.execution.namespace()) else {
        return Err(Error::Invariant("an agent placement without agents".into()));
    };
    let artifact = match stored_artifact(start.function) {
        Ok(artifact) => artifact.clone(),
        Err(ModuleProblem(message, _)) => {
            let status = update.failed("ArtifactUnavailable", &message, start.attempt - 1);
            if write_status(ctx, executions, start.execution, &status).await? {
                report_outcome(ctx, start.execution, &status, start.now);
                ctx.event(start.execution, true, "ArtifactUnavailable", "Run", message)
                    .await;
            }
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    };
    let started = Time(start.now);
    if let Some(problem) = start.trace_problem {
        let note = format!("{problem}; the execution's spans start a trace of their own");
        ctx.event(start.execution, true, "InvalidTraceparent", "Trace", note)
            .await;
    }
    let run = RunAssignment {
        namespace: namespace.clone(),
        execution: start.execution.name_any(),
        uid: start.uid.to_owned(),
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
        object: ObjectRef::from_obj(start.execution),
        agent: AgentView {
            pod: agent.clone(),
            node: node.clone(),
            address: address.clone(),
            ready: true,
        },
        assignment: run,
        started,
        reason: reason.clone(),
    };
    agents.dispatcher.dispatch(handoff, fetch);
    ctx.metrics
        .inc("wasmfn_agent_runs_dispatched_total", &[("agent", agent)]);
    Ok(Action::requeue(RUNNING_NOTE_AFTER))
}

/// Places with the nodes and RuntimeClasses as the watches see them (read from the API server
/// until the watches have listed them).
/// Also returns the nodes a run pod of the placement may be admitted to.
async fn place_now(ctx: &Context, execution: &WasmExecution) -> Result<(Placement, Vec<String>)> {
    let nodes = watched_or_read(ctx, &ctx.watched.nodes).await?;
    let nodes = node_views(nodes.iter().map(AsRef::as_ref));
    let classes = watched_or_read(ctx, &ctx.watched.classes).await?;
    let classes = class_views(classes.iter().map(AsRef::as_ref));
    let placement = place(execution.spec.runtime, &policy(ctx), &nodes, &classes);
    let candidates = pod_nodes(&placement, &nodes);
    let Some(agents) = &ctx.agents else {
        return Ok((placement, candidates));
    };
    let views = agents.views();
    let placement = prefer_agent(placement, |nodes| {
        choose(
            &views,
            nodes,
            |agent| agents.dispatcher.pending(agent),
            agents.max_pending,
        )
        .map(|(agent, pending)| (agent.clone(), pending))
    });
    Ok((placement, candidates))
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
    ctx.metrics.set(
        "wasmfn_executions_queued",
        &[],
        ctx.admission.queued() as f64,
    );
    Ok(match decided {
        Admitted::Node(node) => Ok(Some(node)),
        Admitted::Queued { message } => Err(message),
    })
}

/// An execution's place in the admission queue: its creation, then its uid.
pub fn queue_key(execution: &WasmExecution, uid: &str) -> QueueKey {
    let created = execution
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    (created, uid.to_owned())
}

/// Every object of a cluster-scoped kind: from its watch once that has listed them all, else
/// from the API server.
async fn watched_or_read<K>(ctx: &Context, store: &Store<K>) -> Result<Vec<Arc<K>>>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Ok(match listed(store) {
        Some(seen) => seen,
        None => Api::<K>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect(),
    })
}

/// The first `limit` bytes of the run container's log; `None` when it cannot be read (the
/// status then keeps the document's head and says the output was cut).
async fn read_log(pods: &Api<Pod>, pod: &str, limit: u64) -> Option<String> {
    let params = LogParams {
        container: Some(CONTAINER.to_owned()),
        limit_bytes: i64::try_from(limit).ok(),
        ..Default::default()
    };
    match pods.logs(pod, &params).await {
        Ok(log) => Some(log),
        Err(error) => {
            warn!(%error, pod, "could not read the run pod's log");
            None
        }
    }
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

/// The execution's function: the watched copy when it is Ready for its current generation, a
/// fresh read otherwise (a function that just became Ready is not made to wait for the watch).
async fn function_of(ctx: &Context, namespace: &str, name: &str) -> Result<Option<WasmFunction>> {
    if let Some(function) = ctx.watched.function(namespace, name) {
        if function_state(Some(&function)) == FunctionState::Ready {
            return Ok(Some(function.as_ref().clone()));
        }
    }
    Ok(
        Api::<WasmFunction>::namespaced(ctx.client.clone(), namespace)
            .get_opt(name)
            .await?,
    )
}

fn function_state(function: Option<&WasmFunction>) -> FunctionState {
    let Some(function) = function else {
        return FunctionState::Missing;
    };
    let status = function.status.as_ref();
    let ready_message = status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_else(|| "not reconciled yet".to_owned());
    let current = status.and_then(|s| s.observed_generation) == function.metadata.generation;
    match status.and_then(|s| s.phase) {
        Some(FunctionPhase::Ready) if current => FunctionState::Ready,
        Some(FunctionPhase::Failed) if current => FunctionState::Failed {
            message: ready_message,
        },
        _ => FunctionState::NotReady {
            message: ready_message,
        },
    }
}

fn policy(ctx: &Context) -> Policy {
    Policy {
        wasmedge_enabled: ctx.config.wasmedge_enabled,
        node_selectors: ctx.config.wasmedge_node_selectors.clone(),
        handler: ctx.config.wasmedge_handler.clone(),
    }
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
    }
}

fn node_views<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<NodeView> {
    nodes
        .map(|node| {
            let spec = node.spec.clone().unwrap_or_default();
            NodeView {
                name: node.name_any(),
                labels: node.labels().clone(),
                ready: node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "True"),
                unschedulable: spec.unschedulable.unwrap_or(false),
                taints: spec
                    .taints
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| Taint {
                        key: t.key,
                        value: t.value.unwrap_or_default(),
                        effect: t.effect,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn class_views<'a>(classes: impl Iterator<Item = &'a RuntimeClass>) -> Vec<RuntimeClassView> {
    classes
        .map(|class| {
            let scheduling = class.scheduling.clone().unwrap_or_default();
            RuntimeClassView {
                name: class.name_any(),
                handler: class.handler.clone(),
                node_selector: scheduling.node_selector.unwrap_or_else(BTreeMap::new),
                tolerations: scheduling
                    .tolerations
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| Toleration {
                        key: t.key.unwrap_or_default(),
                        operator: t.operator.unwrap_or_default(),
                        value: t.value.unwrap_or_default(),
                        effect: t.effect.unwrap_or_default(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Writes the status when it differs ([`reconciler::write_status`]); returns whether it
/// changed. A status that would leave a final phase is never written.
async fn write_status(
    ctx: &Context,
    api: &Api<WasmExecution>,
    execution: &WasmExecution,
    status: &WasmExecutionStatus,
) -> Result<bool> {
    if leaves_a_final_phase(execution.status.as_ref(), status) {
        // Never rewrite a recorded result; the write is also fenced by the resourceVersion it
        // was computed from, this guards against a wrong computation itself.
        warn!(
            execution = %execution.name_any(),
            "refusing a status write that would leave the final phase {:?} for {:?}",
            execution.status.as_ref().and_then(|s| s.phase),
            status.phase
        );
        return Ok(false);
    }
    let Some(written) = reconciler::write_status(ctx, api, execution, status).await? else {
        return Ok(false);
    };
    if let (Some(uid), Some(version)) = (written.uid(), written.resource_version()) {
        ctx.last_writes.record(&uid, version);
    }
    Ok(true)
}
