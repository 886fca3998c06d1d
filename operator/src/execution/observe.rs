//! What one reconcile of an execution looks at, read once before any decision: the execution
//! (cached or fresh), its pods or its agent attempt, its function and resolved inputs
//! ([`observe`]); the pure [`observation`] the decision is made on; and the cluster as
//! placement sees it ([`place_now`]). The adapters from Kubernetes objects to the decision's
//! views are pure and tested here.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use tracing::warn;
use wasmfn_api::{
    ExecutionPath, ExecutionPhase, FunctionPhase, Runtime, WasmExecution, WasmExecutionStatus,
    WasmFunction,
};

use super::decision::{FunctionState, Observation, Step};
use super::inputs::{resolve, Defaults, RunInputs};
use super::outcome::{
    agent_attempt_state, pod_cause, run_state, scheduled_at, with_node_health, Loss, RunState,
};
use super::placement::{
    place, pod_nodes, prefer_agent, NodeView, Placement, Policy, RuntimeClassView, Taint,
    Toleration,
};
use super::reasons::Failure;
use super::run_pod::{ATTEMPT_LABEL, EXECUTION_UID_LABEL, NODE_LABEL, RUNTIME_ANNOTATION};
use super::status::Assignment;
use super::trim;
use crate::agent::dispatch::AgentAttempt;
use crate::agent::pool::choose;
use crate::config::Config;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::reconciler::Read;
use crate::telemetry::object_spans::nanos;
use crate::watched::{listed, watched_pods};

/// What a reconcile of one execution found.
#[derive(Debug)]
pub struct Seen<'a> {
    /// The execution, as cached or as read again.
    pub execution: Cow<'a, WasmExecution>,
    /// Its namespace, name and uid.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its run pods (none while an agent runs the current attempt).
    pub owned: Vec<Pod>,
    /// The current attempt, when an agent runs it.
    pub on_agent: Option<OnAgent>,
    /// The newest attempt's number and state, from its agent or its pod.
    pub attempt: Option<(i32, RunState)>,
    /// Its function (`None` when missing, or not read for a finished execution).
    pub function: Option<WasmFunction>,
    /// Its inputs resolved against the function and the defaults, or why they cannot run.
    pub inputs: Option<Result<RunInputs, (Failure, String)>>,
    /// When the reconcile began.
    pub now: Timestamp,
}

impl Seen<'_> {
    /// The current status.
    pub fn status(&self) -> Option<&WasmExecutionStatus> {
        self.execution.status.as_ref()
    }

    /// Whether the execution has its result.
    pub fn finished(&self) -> bool {
        is_finished(self.status())
    }

    /// The newest run pod and its attempt number (none on the agent path).
    pub fn latest_pod(&self) -> Option<(i32, &Pod)> {
        if self.on_agent.is_some() {
            return None;
        }
        self.owned
            .iter()
            .filter_map(|p| attempt_of(p).map(|a| (a, p)))
            .max_by_key(|(a, _)| *a)
    }

    /// How long the newest run pod has been on its node (since it was scheduled).
    pub fn on_node_for(&self) -> Option<Duration> {
        let (_, pod) = self.latest_pod()?;
        Duration::try_from(self.now.duration_since(scheduled_at(pod)?.0)).ok()
    }

    /// The resolved inputs, when they can run.
    pub fn runnable_inputs(&self) -> Option<&RunInputs> {
        self.inputs.as_ref().and_then(|i| i.as_ref().ok())
    }
}

/// Reads what the decision needs. An execution from the watch cache is decided on when
/// [`LastWrites::trusts`] it, read again otherwise; `None` when it is gone.
///
/// [`LastWrites::trusts`]: crate::watched::LastWrites::trusts
pub async fn observe<'a>(
    cached: &'a WasmExecution,
    ctx: &Context,
    read: Read,
) -> Result<Option<Seen<'a>>> {
    let namespace = cached
        .namespace()
        .ok_or_else(|| Error::Invariant("a WasmExecution without a namespace".into()))?;
    let name = cached.name_any();
    // The watch cache may not have seen this operator's last status write yet; acting on it
    // could record a result twice or take a pod deleted after recording for a lost attempt.
    // A trimmed cached copy lacks payloads: fine for cleaning up after a result (which
    // writes no status), read whole before anything else.
    let whole = !trim::is_trimmed(cached) || is_finished(cached.status.as_ref());
    let fresh = read == Read::Fresh;
    let execution = if fresh || (whole && ctx.last_writes.trusts(cached)) {
        Cow::Borrowed(cached)
    } else {
        let executions = Api::<WasmExecution>::namespaced(ctx.client.clone(), &namespace);
        match executions.get_opt(&name).await? {
            Some(read) => Cow::Owned(read),
            None => return Ok(None),
        }
    };
    let uid = execution
        .uid()
        .ok_or_else(|| Error::Invariant("a WasmExecution without a uid".into()))?;
    let current = execution.status.as_ref();
    // The current attempt runs on an agent: no pod of this execution is alive (a lost pod
    // attempt's pods are deleted before the next attempt starts).
    let on_agent = on_agent(ctx, &uid, current);
    let owned = match &on_agent {
        Some(_) => Vec::new(),
        None => run_pods(ctx, &namespace, &uid, current).await?,
    };
    let mut seen = Seen {
        namespace,
        name,
        uid,
        owned,
        on_agent,
        attempt: None,
        function: None,
        inputs: None,
        now: Timestamp::now(),
        execution,
    };
    if seen.finished() {
        return Ok(Some(seen));
    }
    seen.attempt = match &seen.on_agent {
        Some(run) => Some((
            run.attempt,
            agent_attempt_state(run.known.clone(), run.attempt, &run.assignment.pod),
        )),
        None => seen.latest_pod().map(|(a, p)| (a, pod_state(ctx, p))),
    };
    seen.function =
        function_of(ctx, &seen.namespace, &seen.execution.spec.function_ref.name).await?;
    let defaults = Defaults {
        timeout_ms: ctx.config.wasmedge_timeout_ms,
        memory_bytes: ctx.config.wasmedge_memory_limit,
        max_output_bytes: ctx.config.max_output_bytes,
    };
    seen.inputs = seen
        .function
        .as_ref()
        .map(|f| resolve(&seen.execution.spec, &f.spec, defaults));
    Ok(Some(seen))
}

/// The execution's run pods. Once an attempt has started, always a fresh list: a stale view
/// could take a live attempt for a lost one. Before that, the watched pods (only a pod an
/// earlier leader made without recording it can exist, and starting it again is idempotent).
async fn run_pods(
    ctx: &Context,
    namespace: &str,
    uid: &str,
    status: Option<&WasmExecutionStatus>,
) -> Result<Vec<Pod>> {
    let started_any = status.is_some_and(|s| s.attempts > 0);
    if !started_any {
        if let Some(seen) = watched_pods(&ctx.watched.pods, EXECUTION_UID_LABEL, uid) {
            return Ok(seen);
        }
    }
    Ok(Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{EXECUTION_UID_LABEL}={uid}")))
        .await?
        .items)
}

/// The decision's view of what was seen, with the placement once one was made.
pub fn observation<'s>(
    seen: &'s Seen<'_>,
    config: &Config,
    placement: Option<&'s Placement>,
) -> Observation<'s> {
    let now = seen.now;
    let age = |t: Time| Duration::try_from(now.duration_since(t.0)).ok();
    let latest = seen.latest_pod();
    let timeout_ms = seen
        .runnable_inputs()
        .map_or(config.wasmedge_timeout_ms, |i| i.timeout_ms);
    let input_problem = match &seen.inputs {
        Some(Err((reason, message))) => Some((*reason, message.clone())),
        _ => None,
    };
    Observation {
        status: seen.status(),
        function: function_state(seen.function.as_ref()),
        input_problem,
        pod: seen.attempt.clone(),
        placement,
        pod_age: latest
            .and_then(|(_, p)| p.metadata.creation_timestamp.clone())
            .and_then(age),
        on_node_for: seen.on_node_for(),
        start_deadline: Duration::from_secs(config.start_deadline_seconds),
        schedule_timeout: Duration::from_secs(
            timeout_ms.div_ceil(1000) + config.run_deadline_grace_seconds,
        ),
        pod_is_wasm: latest.is_some_and(|(_, p)| runtime_of(p) == Runtime::WasmEdge),
        pod_pinned: latest.is_some_and(|(_, p)| p.labels().contains_key(NODE_LABEL)),
        retries: seen.execution.spec.retries,
        now,
    }
}

pub fn is_finished(status: Option<&WasmExecutionStatus>) -> bool {
    matches!(
        status.and_then(|s| s.phase),
        Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed | ExecutionPhase::TimedOut)
    )
}

pub fn attempt_of(pod: &Pod) -> Option<i32> {
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
pub async fn with_pod_cause(ctx: &Context, mut step: Step, owned: &[Pod]) -> Step {
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
        } if reason.loss().is_some_and(|l| Loss::POD_LOSSES.contains(&l)) => (*attempts, message),
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

fn pod_of(owned: &[Pod], attempt: i32) -> Result<&Pod> {
    owned
        .iter()
        .find(|p| attempt_of(p) == Some(attempt))
        .ok_or_else(|| Error::Invariant(format!("no pod for attempt {attempt}")))
}

/// The runtime a run pod was made for (its annotation; a pod without one is a container pod).
pub fn runtime_of(pod: &Pod) -> Runtime {
    pod.annotations()
        .get(RUNTIME_ANNOTATION)
        .and_then(|text| text.parse().ok())
        .unwrap_or(Runtime::Container)
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

pub fn path_of(pod: &Pod) -> ExecutionPath {
    if runtime_of(pod) == Runtime::WasmEdge {
        ExecutionPath::WasmPod
    } else {
        ExecutionPath::ContainerPod
    }
}

/// The current attempt, when an agent runs it.
#[derive(Debug)]
pub struct OnAgent {
    /// The attempt's number.
    pub attempt: i32,
    /// The agent and why it was chosen.
    pub assignment: Assignment,
    /// Whether the status shows the attempt (a short run is written only with its result).
    pub shown: bool,
    /// How it stands, when this replica handed it over.
    pub known: Option<AgentAttempt>,
}

/// The newest attempt this replica handed to an agent when the status does not show it yet,
/// else the agent attempt the status names.
fn on_agent(ctx: &Context, uid: &str, status: Option<&WasmExecutionStatus>) -> Option<OnAgent> {
    let dispatcher = &ctx.agents.as_ref()?.dispatcher;
    let recorded = status.map_or(0, |s| s.attempts);
    let assignment = |agent: String, reason: String| Assignment {
        runtime: Runtime::WasmEdge,
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
pub fn attempt_runner<'a>(
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
pub fn attempt_started(
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

/// Places with the nodes and RuntimeClasses as the watches see them (read from the API server
/// until the watches have listed them).
/// Also returns the nodes a run pod of the placement may be admitted to.
pub async fn place_now(
    ctx: &Context,
    execution: &WasmExecution,
) -> Result<(Placement, Vec<String>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use crate::execution::scenarios::ready_node;
    use crate::scenario::default_config;

    fn config() -> Config {
        let mut config = default_config();
        config.start_deadline_seconds = 60;
        config
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid")
    }

    fn execution() -> WasmExecution {
        let spec =
            serde_json::from_value(serde_json::json!({"functionRef": {"name": "f"}, "retries": 2}))
                .expect("valid spec");
        WasmExecution::new("run", spec)
    }

    /// A Wasm pod of attempt 1, created at 100 s and scheduled at 110 s, pinned to node-a.
    fn wasm_pod() -> Pod {
        let mut pod = Pod {
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(at(110))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        pod.metadata.creation_timestamp = Some(Time(at(100)));
        pod.metadata.labels = Some(
            [
                (ATTEMPT_LABEL.to_owned(), "1".to_owned()),
                (NODE_LABEL.to_owned(), "node-a".to_owned()),
            ]
            .into(),
        );
        pod.metadata.annotations =
            Some([(RUNTIME_ANNOTATION.to_owned(), "WasmEdge".to_owned())].into());
        pod
    }

    fn seen(execution: &WasmExecution, owned: Vec<Pod>, now: Timestamp) -> Seen<'_> {
        Seen {
            execution: Cow::Borrowed(execution),
            namespace: "team".into(),
            name: "run".into(),
            uid: "u-1".into(),
            owned,
            on_agent: None,
            attempt: None,
            function: None,
            inputs: None,
            now,
        }
    }

    fn inputs(timeout_ms: u64) -> RunInputs {
        RunInputs {
            stdin: None,
            env: Vec::new(),
            timeout_ms,
            memory_bytes: 1 << 20,
            max_output_bytes: 1024,
        }
    }

    #[test]
    fn the_observation_of_a_pinned_wasm_pod_carries_its_age_time_on_node_and_timeouts() {
        let execution = execution();
        let mut seen = seen(&execution, vec![wasm_pod()], at(130));
        seen.inputs = Some(Ok(inputs(4_500)));
        let config = config();
        let observed = observation(&seen, &config, None);
        assert_eq!(observed.pod_age, Some(Duration::from_secs(30)));
        assert_eq!(observed.on_node_for, Some(Duration::from_secs(20)));
        assert!(observed.pod_is_wasm && observed.pod_pinned);
        assert_eq!(observed.start_deadline, Duration::from_secs(60));
        assert_eq!(
            observed.schedule_timeout,
            Duration::from_secs(5 + config.run_deadline_grace_seconds)
        );
        assert_eq!(observed.retries, 2);
    }

    #[test]
    fn without_runnable_inputs_the_schedule_timeout_uses_the_default_timeout() {
        let execution = execution();
        let mut seen = seen(&execution, vec![wasm_pod()], at(130));
        seen.inputs = Some(Err((Failure::InputTooLarge, "too large".into())));
        let config = config();
        let observed = observation(&seen, &config, None);
        assert_eq!(
            observed.schedule_timeout,
            Duration::from_secs(
                config.wasmedge_timeout_ms.div_ceil(1000) + config.run_deadline_grace_seconds
            )
        );
        assert_eq!(
            observed.input_problem,
            Some((Failure::InputTooLarge, "too large".to_owned()))
        );
    }

    #[test]
    fn an_attempt_on_an_agent_hides_any_pod_from_the_observation() {
        let execution = execution();
        let mut seen = seen(&execution, vec![wasm_pod()], at(130));
        seen.on_agent = Some(OnAgent {
            attempt: 2,
            assignment: Assignment {
                runtime: Runtime::WasmEdge,
                path: ExecutionPath::Agent,
                reason: "warm agent".into(),
                pod: "agent-x".into(),
            },
            shown: true,
            known: None,
        });
        let observed = observation(&seen, &config(), None);
        assert_eq!((observed.pod_age, observed.on_node_for), (None, None));
        assert!(!observed.pod_is_wasm && !observed.pod_pinned);
    }

    #[test]
    fn the_newest_attempts_pod_is_the_latest() {
        let execution = execution();
        let mut second = wasm_pod();
        second
            .labels_mut()
            .insert(ATTEMPT_LABEL.to_owned(), "2".to_owned());
        second.metadata.name = Some("run-run-2".into());
        let seen = seen(&execution, vec![wasm_pod(), second], at(130));
        let (attempt, pod) = seen.latest_pod().expect("a pod");
        assert_eq!((attempt, pod.name_any().as_str()), (2, "run-run-2"));
    }

    fn function(phase: Option<FunctionPhase>, observed: i64, generation: i64) -> WasmFunction {
        let spec = serde_json::from_value(
            serde_json::json!({"language": "rust", "source": {"code": "fn main() {}"}}),
        )
        .expect("valid spec");
        let mut function = WasmFunction::new("f", spec);
        function.metadata.generation = Some(generation);
        function.status = Some(wasmfn_api::WasmFunctionStatus {
            phase,
            observed_generation: Some(observed),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "Compiling".into(),
                message: "compiling generation 2".into(),
                last_transition_time: Time(at(0)),
                observed_generation: None,
            }],
            ..Default::default()
        });
        function
    }

    #[test]
    fn a_function_is_ready_only_for_its_current_generation() {
        assert_eq!(function_state(None), FunctionState::Missing);
        assert_eq!(
            function_state(Some(&function(Some(FunctionPhase::Ready), 2, 2))),
            FunctionState::Ready
        );
        assert_eq!(
            function_state(Some(&function(Some(FunctionPhase::Ready), 1, 2))),
            FunctionState::NotReady {
                message: "compiling generation 2".into()
            }
        );
        assert_eq!(
            function_state(Some(&function(Some(FunctionPhase::Failed), 2, 2))),
            FunctionState::Failed {
                message: "compiling generation 2".into()
            }
        );
    }

    #[test]
    fn a_node_view_reads_readiness_cordoning_and_taints() {
        let mut node = ready_node("a");
        node.spec = Some(NodeSpec {
            unschedulable: Some(true),
            taints: Some(vec![k8s_openapi::api::core::v1::Taint {
                key: "dedicated".into(),
                value: None,
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let views = node_views(std::iter::once(&node));
        assert!(views[0].ready && views[0].unschedulable);
        assert_eq!(
            (
                views[0].taints[0].key.as_str(),
                views[0].taints[0].value.as_str(),
                views[0].taints[0].effect.as_str()
            ),
            ("dedicated", "", "NoSchedule")
        );
        assert!(!node_views(std::iter::once(&Node::default()))[0].ready);
    }

    #[test]
    fn a_pod_adopted_before_its_placement_was_recorded_says_what_it_is() {
        let pod = wasm_pod();
        let assignment = assignment_of(&pod, None);
        assert_eq!(
            (
                assignment.runtime.as_str(),
                assignment.path,
                assignment.reason.as_str()
            ),
            (
                "WasmEdge",
                ExecutionPath::WasmPod,
                "placed as a WasmEdge pod"
            )
        );
        let mut plain = Pod::default();
        plain.metadata.name = Some("p".into());
        assert_eq!(
            assignment_of(&plain, None).path,
            ExecutionPath::ContainerPod
        );
    }
}
