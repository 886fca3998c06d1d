//! What a run pod says about its attempt: still starting, running, finished (with the result
//! document from its termination message), or lost to the platform. Pure.
//!
//! The result document decides whenever the container wrote one — even on a pod that is being
//! deleted, the guest's own outcome stands. Without one, the pod's own status decides:
//! eviction, deletion or a lost node are the platform's failures (retried per `retries`), and
//! so is a container that never started (no guest ran, so there is nothing to repeat: it is
//! retried even past `retries`, a bounded number of times); an OOM kill, the pod's deadline
//! after the guest started, or an unreadable result of a guest that ran are final.

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use wasmfn_result::{Reason, ResultDocument, KIND};

use super::run_pod::CONTAINER;
use crate::agent::dispatch::{AgentAttempt, AgentRun};

/// How an attempt that produced no result document was lost to the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// The kubelet evicted the pod (node pressure) or refused to admit it.
    PodEvicted,
    /// The pod was deleted before it finished.
    PodDeleted,
    /// The node went away or was shut down.
    NodeLost,
    /// No node took the pod in time (its node became unusable after placement).
    NotScheduled,
    /// The agent running the attempt went away (killed, node lost, connection broken) or the
    /// operator that handed it over restarted: the result cannot be collected.
    AgentLost,
    /// The agent chosen for the attempt could not be reached at all (a killed agent whose pod is
    /// still Ready refuses connections until it is back): the run never started. Reported as
    /// `AgentLost`, but retried like a pod that never started.
    AgentUnreachable,
    /// The container never started: its deadline passed before it did (an image pull behind a
    /// backlog), or the runtime could not create it (exit 128 without a start time).
    NeverStarted,
}

impl Loss {
    /// The losses of a pod attempt (all but an agent's).
    pub const POD_LOSSES: [Loss; 5] = [
        Loss::PodEvicted,
        Loss::PodDeleted,
        Loss::NodeLost,
        Loss::NotScheduled,
        Loss::NeverStarted,
    ];

    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Loss::PodEvicted => "PodEvicted",
            Loss::PodDeleted => "PodDeleted",
            Loss::NodeLost => "NodeLost",
            Loss::NotScheduled => "Unschedulable",
            Loss::AgentLost | Loss::AgentUnreachable => "AgentLost",
            Loss::NeverStarted => "PodStartFailed",
        }
    }

    /// Whether no guest can have run: such an attempt is retried even past `spec.retries`.
    pub fn before_the_guest(self) -> bool {
        matches!(
            self,
            Loss::NeverStarted | Loss::NotScheduled | Loss::AgentUnreachable
        )
    }
}

/// A final outcome without a result document.
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformFailure {
    /// `TimedOut`, `OOMKilled` or `ResultUnreadable`.
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
    /// The container's exit code, when it ran.
    pub exit_code: Option<i32>,
}

/// The attempt's state.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Not running yet: unscheduled, pulling, creating.
    Starting {
        /// The node, once scheduled.
        node: Option<String>,
        /// Why it is waiting, when Kubernetes says (`Unschedulable: …`, `ErrImagePull: …`).
        detail: Option<String>,
    },
    /// The guest is running.
    Running {
        /// The node.
        node: Option<String>,
        /// When the container started.
        started: Option<Time>,
    },
    /// The guest finished and wrote its result document.
    Finished {
        /// The node.
        node: Option<String>,
        /// When the container started and finished.
        started: Option<Time>,
        /// When it finished.
        finished: Option<Time>,
        /// The document.
        document: Box<ResultDocument>,
    },
    /// The attempt ended without a document and that is final.
    Failed {
        /// The node.
        node: Option<String>,
        /// When the container started and finished.
        started: Option<Time>,
        /// When it finished.
        finished: Option<Time>,
        /// What happened.
        failure: PlatformFailure,
    },
    /// The platform lost the attempt (retryable).
    Lost {
        /// How.
        loss: Loss,
        /// What happened, for people.
        message: String,
    },
}

/// The state of an attempt handed to an agent, from what the dispatcher knows of it (`None`:
/// this replica did not hand it over, so its answer can never be collected).
pub fn agent_attempt_state(known: Option<AgentAttempt>, attempt: i32, agent: &str) -> RunState {
    let Some(known) = known else {
        return RunState::Lost {
            loss: Loss::AgentLost,
            message: format!(
                "attempt {attempt} was handed to agent {agent} by an operator replica that has \
                 restarted or handed over since; its result cannot be collected"
            ),
        };
    };
    match known.run {
        AgentRun::Pending => RunState::Running {
            node: Some(known.node),
            started: Some(known.started),
        },
        AgentRun::Done { document, finished } => RunState::Finished {
            node: Some(known.node),
            started: Some(known.started),
            finished: Some(finished),
            document,
        },
        AgentRun::Lost { message, unreached } => RunState::Lost {
            loss: if unreached {
                Loss::AgentUnreachable
            } else {
                Loss::AgentLost
            },
            message,
        },
    }
}

/// Parses a termination message as a result document (`None` when it is not one).
pub fn parse_document(message: &str) -> Option<ResultDocument> {
    let document: ResultDocument = serde_json::from_str(message.trim()).ok()?;
    (document.kind == KIND).then_some(document)
}

/// Reads the attempt's state from its pod.
pub fn run_state(pod: &Pod) -> RunState {
    let status = pod.status.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.name == CONTAINER));
    let state = container.and_then(|c| c.state.clone()).unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let pod_reason = status.reason.as_deref().unwrap_or("");
    let pod_message = status.message.clone().unwrap_or_default();
    let deleting = pod.metadata.deletion_timestamp.is_some();

    if let Some(terminated) = &state.terminated {
        let started = terminated.started_at.clone();
        let finished = terminated.finished_at.clone();
        if let Some(document) = terminated.message.as_deref().and_then(parse_document) {
            return RunState::Finished {
                node,
                started,
                finished,
                document: Box::new(document),
            };
        }
        if deleting {
            return deleted(pod, "the run pod was deleted while the guest ran");
        }
        if terminated.reason.as_deref() == Some("OOMKilled") {
            return RunState::Failed {
                node,
                started,
                finished,
                failure: PlatformFailure {
                    reason: "OOMKilled",
                    message: "the run pod exceeded its memory limit (guest memory cap plus the runtime's overhead) and was killed".into(),
                    exit_code: Some(terminated.exit_code),
                },
            };
        }
        if let Some(loss) = pod_loss(pod_reason) {
            return lost(loss, &pod_message);
        }
        // The runtime could not start the container (exit 128 and no start time, or the epoch
        // the kubelet writes for one): the runner never ran.
        if started.as_ref().is_none_or(|t| t.0.as_second() == 0) {
            return lost(
                Loss::NeverStarted,
                &format!(
                    "the run container never started: {} {}",
                    terminated.reason.as_deref().unwrap_or("no reason"),
                    terminated.message.as_deref().unwrap_or("")
                ),
            );
        }
        if pod_reason == "DeadlineExceeded" {
            return RunState::Failed {
                node,
                started,
                finished,
                failure: deadline_failure(&pod_message),
            };
        }
        return RunState::Failed {
            node,
            started,
            finished,
            failure: PlatformFailure {
                reason: "ResultUnreadable",
                message: format!(
                    "the runner exited with code {} ({}) without a result document{}",
                    terminated.exit_code,
                    terminated.reason.as_deref().unwrap_or("no reason"),
                    terminated
                        .message
                        .as_deref()
                        .filter(|m| !m.trim().is_empty())
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                ),
                exit_code: Some(terminated.exit_code),
            },
        };
    }
    if deleting {
        return deleted(pod, "the run pod was deleted before it finished");
    }
    if phase == "Failed" {
        if let Some(loss) = pod_loss(pod_reason) {
            return lost(loss, &pod_message);
        }
        if pod_reason == "DeadlineExceeded" && state.running.is_some() {
            return RunState::Failed {
                node,
                started: None,
                finished: None,
                failure: deadline_failure(&pod_message),
            };
        }
        let why = if pod_reason == "DeadlineExceeded" {
            "the run pod reached its deadline before its container started (an image pull or a volume)".to_owned()
        } else {
            format!("the run pod failed before its container started: {pod_reason} {pod_message}")
        };
        return lost(Loss::NeverStarted, &why);
    }
    if let Some(running) = &state.running {
        return RunState::Running {
            node,
            started: running.started_at.clone(),
        };
    }
    let detail = state
        .waiting
        .as_ref()
        .and_then(|w| w.reason.as_ref().map(|r| (r, w.message.as_deref())))
        .filter(|(reason, _)| reason.as_str() != "ContainerCreating")
        .map(|(reason, message)| format!("{reason}: {}", message.unwrap_or("")))
        .or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.reason.as_deref().unwrap_or("Unschedulable"),
                        c.message.as_deref().unwrap_or("")
                    )
                })
        })
        .map(|d| d.trim_end_matches([' ', ':']).to_owned());
    RunState::Starting { node, detail }
}

/// When the pod reached its node: its `PodScheduled` condition's transition, or its creation
/// when a node is set without one (a pod bound by name).
pub fn scheduled_at(pod: &Pod) -> Option<Time> {
    pod.spec.as_ref()?.node_name.as_ref()?;
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| pod.metadata.creation_timestamp.clone())
}

/// The longest cause taken from a pod's events into a lost attempt's message.
const CAUSE_CHARS: usize = 400;

/// What a lost pod's events say went wrong: its newest warning (`reason: message`), or `None`
/// when it has none. Kubelet and runtime failures before a container starts (a RuntimeClass
/// handler the node's containerd lacks, a sandbox or volume that cannot be set up) show only
/// there, and the pod and its events go once the attempt is retried.
pub fn pod_cause(events: &[Event]) -> Option<String> {
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    let newest = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .max_by_key(|e| when(e))?;
    let text = format!(
        "{}: {}",
        newest.reason.as_deref().unwrap_or("Warning"),
        newest.message.as_deref().unwrap_or("").trim()
    );
    Some(
        cut(&text, CAUSE_CHARS)
            .trim_end_matches([' ', ':'])
            .to_owned(),
    )
}

/// A deleted pod's attempt on a node that is not Ready (stopped answering, or gone) was lost with
/// its node: Kubernetes before 1.26 deletes such pods without saying why. Other states are
/// returned as they are.
pub fn with_node_health(state: RunState, node: Option<&Node>) -> RunState {
    let RunState::Lost {
        loss: Loss::PodDeleted,
        message,
    } = &state
    else {
        return state;
    };
    let ready = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    match (node, ready) {
        (_, Some("True")) => state,
        (None, _) => lost(
            Loss::NodeLost,
            &format!("{message}; its node no longer exists"),
        ),
        (Some(node), ready) => lost(
            Loss::NodeLost,
            &format!(
                "{message}; its node {} is not Ready ({})",
                node.metadata.name.as_deref().unwrap_or("?"),
                ready.unwrap_or("no Ready condition")
            ),
        ),
    }
}

/// A pod being deleted: by the node controller from a node that stopped answering (`NodeLost`),
/// by an eviction or preemption (`PodEvicted`), else by someone (`PodDeleted`). Kubernetes says
/// which in the pod's `DisruptionTarget` condition.
fn deleted(pod: &Pod, otherwise: &str) -> RunState {
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("its node");
    let disruption = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        });
    match disruption.and_then(|c| c.reason.as_deref()) {
        Some("DeletionByTaintManager") => lost(
            Loss::NodeLost,
            &format!("node {node} stopped answering and the run pod was evicted from it"),
        ),
        Some(
            reason @ ("EvictionByEvictionAPI" | "PreemptionByScheduler" | "TerminationByKubelet"),
        ) => lost(
            Loss::PodEvicted,
            &format!(
                "the run pod was evicted ({reason}: {})",
                disruption.and_then(|c| c.message.as_deref()).unwrap_or("")
            ),
        ),
        _ => lost(Loss::PodDeleted, otherwise),
    }
}

fn lost(loss: Loss, message: &str) -> RunState {
    RunState::Lost {
        loss,
        message: message.trim().to_owned(),
    }
}

fn pod_loss(pod_reason: &str) -> Option<Loss> {
    match pod_reason {
        "Evicted" | "UnexpectedAdmissionError" | "OutOfmemory" | "OutOfcpu" | "OutOfpods" => {
            Some(Loss::PodEvicted)
        }
        "NodeLost" | "Shutdown" | "Terminated" | "NodeShutdown" => Some(Loss::NodeLost),
        _ => None,
    }
}

/// The pod's deadline passed while the guest ran.
fn deadline_failure(pod_message: &str) -> PlatformFailure {
    PlatformFailure {
        reason: "TimedOut",
        message: format!(
            "the run pod passed its deadline (timeout plus grace) and was stopped: {pod_message}"
        )
        .trim_end_matches([' ', ':'])
        .to_owned(),
        exit_code: None,
    }
}

/// The part of a result that goes into status.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultFields {
    /// The condition reason (`Succeeded` or the document's failure reason).
    pub reason: String,
    /// True for a completed run.
    pub succeeded: bool,
    /// True when the guest timed out.
    pub timed_out: bool,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// The start of stdout, at most `cap` bytes.
    pub stdout: String,
    /// The start of stderr, at most `cap` bytes.
    pub stderr: String,
    /// stdout holds less than the guest wrote.
    pub stdout_truncated: bool,
    /// stderr holds less than the guest wrote.
    pub stderr_truncated: bool,
    /// Full sizes.
    pub stdout_bytes: u64,
    /// Full sizes.
    pub stderr_bytes: u64,
    /// stdout as JSON, when all of it is here and parses.
    pub result: Option<serde_json::Value>,
    /// A sentence about the outcome.
    pub message: String,
    /// Guest run time in ms.
    pub duration_ms: f64,
    /// The module that ran.
    pub digest: Option<String>,
    /// Whether AOT code ran.
    pub aot: bool,
    /// Where that AOT code came from.
    pub aot_source: Option<String>,
}

/// Whether the pod log is worth reading for `document`: stdout was cut in the document, the
/// status may hold more of it, and stderr is empty (the log interleaves both streams, so only
/// then is it exactly stdout).
pub fn wants_log(document: &ResultDocument, cap: u64) -> bool {
    let head = document.stdout.head_len() as u64;
    document.stdout.truncated && head < cap && document.stderr.size == 0
}

/// The bytes of the log to request for `document` (at most the cap).
pub fn log_limit(document: &ResultDocument, cap: u64) -> u64 {
    document.stdout.size.min(cap)
}

/// Cuts `text` to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Maps a document (and, when read, the start of the pod log) to status fields; `cap` is the
/// execution's `maxOutputBytes`.
pub fn result_fields(document: &ResultDocument, log: Option<&str>, cap: u64) -> ResultFields {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let head = String::from_utf8_lossy(&document.stdout.head_bytes()).into_owned();
    // The log is stdout only if it starts like the document's head.
    let stdout_text = match log {
        Some(log) if log.len() > head.len() && log.starts_with(&head) => log.to_owned(),
        _ => head,
    };
    let stdout = cut(&stdout_text, cap).to_owned();
    let stderr_text = String::from_utf8_lossy(&document.stderr.head_bytes()).into_owned();
    let stderr = cut(&stderr_text, cap).to_owned();
    let stdout_truncated = (stdout.len() as u64) < document.stdout.size;
    let stderr_truncated = (stderr.len() as u64) < document.stderr.size;
    let result = (!stdout_truncated)
        .then(|| serde_json::from_str::<serde_json::Value>(stdout.trim()).ok())
        .flatten()
        .filter(|_| !stdout.trim().is_empty());
    let succeeded = document.reason.succeeded();
    let reason = if succeeded {
        "Succeeded".to_owned()
    } else {
        document.reason.as_str().to_owned()
    };
    let mut message = match (document.reason, document.exit_code) {
        (Reason::Completed, _) => "the guest completed".to_owned(),
        (Reason::NonZeroExit, Some(code)) => format!("the guest exited with code {code}"),
        (reason, _) => format!("the run ended with {reason}"),
    };
    if !document.message.is_empty() {
        message = format!("{message}: {}", document.message);
    }
    if stdout_truncated {
        message = format!(
            "{message} (stdout is {} bytes; status keeps the first {})",
            document.stdout.size,
            stdout.len()
        );
    }
    ResultFields {
        reason,
        succeeded,
        timed_out: document.reason == Reason::TimedOut,
        exit_code: document.exit_code,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        stdout_bytes: document.stdout.size,
        stderr_bytes: document.stderr.size,
        result,
        message,
        duration_ms: document.timings.total_ms,
        // A script's run loads its interpreter module; the artifact that ran is the script.
        digest: document
            .script
            .as_ref()
            .map(|s| s.sha256.clone())
            .or_else(|| document.module.as_ref().map(|m| m.sha256.clone())),
        aot: document.runtime.aot,
        aot_source: document.runtime.aot_source.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodCondition, PodSpec, PodStatus,
    };
    use wasmfn_result::{RuntimeInfo, StreamSummary};

    fn runtime() -> RuntimeInfo {
        RuntimeInfo {
            name: "wasmedge".into(),
            version: "0.14".into(),
            aot: false,
            aot_source: None,
            aot_rejected: None,
        }
    }

    /// A result document of `reason` with these streams (exit 0 when Completed).
    pub(crate) fn document(reason: Reason, stdout: &[u8], stderr: &[u8]) -> ResultDocument {
        let mut doc = ResultDocument::new(reason, runtime());
        doc.stdout = StreamSummary::from_bytes(stdout);
        doc.stderr = StreamSummary::from_bytes(stderr);
        if reason == Reason::Completed {
            doc.exit_code = Some(0);
        }
        doc
    }

    fn pod(phase: &str, state: ContainerState) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: Some("a".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container that started, ran and ended.
    fn terminated(exit: i32, reason: &str, message: Option<String>) -> ContainerState {
        let started = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("valid");
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: exit,
                reason: Some(reason.into()),
                message,
                started_at: Some(Time(started)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn event(kind: &str, reason: &str, message: &str, second: i64) -> Event {
        Event {
            type_: Some(kind.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(second).expect("valid"),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn the_cause_of_a_lost_pod_is_its_newest_warning_event_cut_to_a_readable_length() {
        assert_eq!(pod_cause(&[]), None);
        assert_eq!(
            pod_cause(&[event("Normal", "Scheduled", "assigned to b", 10)]),
            None,
            "normal events are no cause"
        );
        let events = [
            event("Warning", "FailedMount", "old", 10),
            event(
                "Warning",
                "FailedCreatePodSandBox",
                "Failed to create pod sandbox: no runtime for \"wasmedge\" is configured",
                30,
            ),
            event("Normal", "Pulled", "newer but normal", 40),
            event("Warning", "BackOff", "older", 20),
        ];
        assert_eq!(
            pod_cause(&events).as_deref(),
            Some("FailedCreatePodSandBox: Failed to create pod sandbox: no runtime for \"wasmedge\" is configured")
        );
        let long = pod_cause(&[event("Warning", "Failed", &"x".repeat(5000), 1)]).expect("cause");
        assert!(long.len() <= CAUSE_CHARS + 4, "{}", long.len());
        assert!(long.starts_with("Failed: xxx"));
    }

    #[test]
    fn a_pod_is_on_its_node_from_its_scheduled_condition_or_else_its_creation() {
        let at = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("valid"));
        let mut p = pod("Pending", ContainerState::default());
        p.metadata.creation_timestamp = Some(at(100));
        assert_eq!(
            scheduled_at(&p),
            Some(at(100)),
            "bound by name: its creation"
        );
        p.status.as_mut().expect("set").conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(at(160)),
            ..Default::default()
        }]);
        assert_eq!(scheduled_at(&p), Some(at(160)));
        p.spec.as_mut().expect("set").node_name = None;
        assert_eq!(scheduled_at(&p), None, "on no node yet");
    }

    #[test]
    fn a_pod_deleted_by_the_node_controller_is_node_lost_and_an_evicted_one_evicted() {
        let disrupted = |state: ContainerState, reason: &str| {
            let mut p = pod("Running", state);
            p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
            p.status.as_mut().expect("set").conditions = Some(vec![PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some("why".into()),
                ..Default::default()
            }]);
            run_state(&p)
        };
        let running = ContainerState {
            running: Some(Default::default()),
            ..Default::default()
        };
        for state in [running.clone(), terminated(137, "Error", None)] {
            assert_eq!(
                disrupted(state.clone(), "DeletionByTaintManager"),
                RunState::Lost {
                    loss: Loss::NodeLost,
                    message: "node a stopped answering and the run pod was evicted from it".into()
                }
            );
            assert!(matches!(
                disrupted(state.clone(), "EvictionByEvictionAPI"),
                RunState::Lost { loss: Loss::PodEvicted, message } if message.contains("EvictionByEvictionAPI: why")
            ));
            assert!(matches!(
                disrupted(state, "SomethingNew"),
                RunState::Lost {
                    loss: Loss::PodDeleted,
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_pod_deleted_from_a_node_that_is_not_ready_or_gone_was_lost_with_its_node() {
        let node = |ready: &str| Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("b".into()),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::core::v1::NodeStatus {
                conditions: Some(vec![k8s_openapi::api::core::v1::NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let deleted = || {
            lost(
                Loss::PodDeleted,
                "the run pod was deleted before it finished",
            )
        };
        assert_eq!(with_node_health(deleted(), Some(&node("True"))), deleted());
        assert_eq!(
            with_node_health(deleted(), Some(&node("Unknown"))),
            lost(
                Loss::NodeLost,
                "the run pod was deleted before it finished; its node b is not Ready (Unknown)"
            )
        );
        assert!(matches!(
            with_node_health(deleted(), None),
            RunState::Lost { loss: Loss::NodeLost, message } if message.ends_with("its node no longer exists")
        ));
        // Only deletions are reinterpreted.
        let evicted = lost(Loss::PodEvicted, "evicted");
        assert_eq!(
            with_node_health(evicted.clone(), Some(&node("False"))),
            evicted
        );
    }

    #[test]
    fn a_document_decides_even_on_a_pod_being_deleted() {
        let doc = document(Reason::NonZeroExit, b"", b"");
        let mut p = pod("Failed", terminated(3, "Error", Some(doc.to_json())));
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        match run_state(&p) {
            RunState::Finished { node, document, .. } => {
                assert_eq!(node.as_deref(), Some("a"));
                assert_eq!(document.reason, Reason::NonZeroExit);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pods_without_a_document_map_to_losses_and_failures() {
        let with_reason = |mut p: Pod, reason: &str| {
            p.status.as_mut().expect("valid").reason = Some(reason.into());
            p
        };
        // Deleted while running.
        let mut p = pod("Running", terminated(137, "Error", None));
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(matches!(
            run_state(&p),
            RunState::Lost {
                loss: Loss::PodDeleted,
                ..
            }
        ));
        // Deleted before starting.
        let mut p = pod("Pending", ContainerState::default());
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(matches!(
            run_state(&p),
            RunState::Lost {
                loss: Loss::PodDeleted,
                ..
            }
        ));
        // Evicted, node lost.
        let p = with_reason(pod("Failed", ContainerState::default()), "Evicted");
        assert!(matches!(
            run_state(&p),
            RunState::Lost {
                loss: Loss::PodEvicted,
                ..
            }
        ));
        let p = with_reason(pod("Failed", terminated(137, "Error", None)), "NodeLost");
        assert!(matches!(
            run_state(&p),
            RunState::Lost {
                loss: Loss::NodeLost,
                ..
            }
        ));
        // OOM kill is final.
        let p = pod("Failed", terminated(137, "OOMKilled", None));
        assert!(matches!(
            run_state(&p),
            RunState::Failed {
                failure: PlatformFailure {
                    reason: "OOMKilled",
                    exit_code: Some(137),
                    ..
                },
                ..
            }
        ));
        // Deadline: TimedOut when the guest ran, a loss (retried) when it never started.
        let p = with_reason(
            pod("Failed", terminated(137, "Error", None)),
            "DeadlineExceeded",
        );
        assert!(matches!(
            run_state(&p),
            RunState::Failed {
                failure: PlatformFailure {
                    reason: "TimedOut",
                    ..
                },
                ..
            }
        ));
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        };
        let p = with_reason(pod("Failed", waiting), "DeadlineExceeded");
        assert!(matches!(
            run_state(&p),
            RunState::Lost {
                loss: Loss::NeverStarted,
                ..
            }
        ));
        // The runtime could not create the container: exit 128, no start time (or the epoch).
        for started_at in [None, Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))] {
            let mut state = terminated(128, "StartError", Some("no runtime for wasmedge".into()));
            if let Some(t) = state.terminated.as_mut() {
                t.started_at = started_at;
            }
            match run_state(&pod("Failed", state)) {
                RunState::Lost {
                    loss: Loss::NeverStarted,
                    message,
                } => assert!(message.contains("no runtime for wasmedge"), "{message}"),
                other => panic!("{other:?}"),
            }
        }
        // A runner that died without writing a document.
        let p = pod("Failed", terminated(139, "Error", Some("segfault".into())));
        match run_state(&p) {
            RunState::Failed { failure, .. } => {
                assert_eq!(failure.reason, "ResultUnreadable");
                assert!(failure.message.contains("139") && failure.message.contains("segfault"));
            }
            other => panic!("{other:?}"),
        }
        // Some other text in the termination message is not a document.
        let p = pod(
            "Failed",
            terminated(1, "Error", Some(r#"{"kind":"Other"}"#.into())),
        );
        assert!(matches!(run_state(&p), RunState::Failed { .. }));
    }

    #[test]
    fn starting_and_running_pods_say_where_and_why() {
        let running = ContainerState {
            running: Some(ContainerStateRunning { started_at: None }),
            ..Default::default()
        };
        assert!(matches!(
            run_state(&pod("Running", running)),
            RunState::Running { node: Some(n), .. } if n == "a"
        ));
        let pulling = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ErrImagePull".into()),
                message: Some("not found".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            run_state(&pod("Pending", pulling)),
            RunState::Starting {
                node: Some("a".into()),
                detail: Some("ErrImagePull: not found".into())
            }
        );
        let mut unscheduled = pod("Pending", ContainerState::default());
        unscheduled.spec.as_mut().expect("valid").node_name = None;
        unscheduled.status.as_mut().expect("valid").conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/2 nodes are available".into()),
            ..Default::default()
        }]);
        assert_eq!(
            run_state(&unscheduled),
            RunState::Starting {
                node: None,
                detail: Some("Unschedulable: 0/2 nodes are available".into())
            }
        );
    }

    #[test]
    fn the_digest_that_ran_is_the_scripts_for_a_script_and_the_modules_otherwise() {
        let mut doc = document(Reason::Completed, b"", b"");
        doc.module = Some(wasmfn_result::ModuleInfo {
            sha256: "sha256:interpreter".into(),
            size: 20,
            entrypoint: "_start".into(),
        });
        let fields = result_fields(&doc, None, 4096);
        assert_eq!(fields.digest.as_deref(), Some("sha256:interpreter"));
        doc.script = Some(wasmfn_result::ScriptInfo {
            sha256: "sha256:script".into(),
            size: 3,
            language: "python".into(),
        });
        let fields = result_fields(&doc, None, 4096);
        assert_eq!(fields.digest.as_deref(), Some("sha256:script"));
    }

    #[test]
    fn json_stdout_becomes_the_result_and_text_does_not() {
        let fields = result_fields(
            &document(Reason::Completed, b"{\"sum\": 3}\n", b""),
            None,
            4096,
        );
        assert!(fields.succeeded);
        assert_eq!(fields.reason, "Succeeded");
        assert_eq!(fields.result, Some(serde_json::json!({"sum": 3})));
        let fields = result_fields(&document(Reason::Completed, b"hello\n", b""), None, 4096);
        assert_eq!(fields.result, None);
        assert_eq!(fields.stdout, "hello\n");
        let fields = result_fields(&document(Reason::Completed, b"", b""), None, 4096);
        assert_eq!(fields.result, None);
    }

    #[test]
    fn output_is_capped_and_the_full_size_reported() {
        let big = vec![b'x'; 1 << 20];
        let doc: ResultDocument =
            serde_json::from_str(&document(Reason::Completed, &big, b"").to_json()).expect("valid");
        assert!(doc.stdout.truncated);
        assert!(wants_log(&doc, 65536));
        assert_eq!(log_limit(&doc, 65536), 65536);
        assert!(
            !wants_log(&doc, 100),
            "the document's head already covers a small cap"
        );
        // With the log's first 64 KiB.
        let log = "x".repeat(65536);
        let fields = result_fields(&doc, Some(&log), 65536);
        assert_eq!(fields.stdout.len(), 65536);
        assert!(fields.stdout_truncated);
        assert_eq!(fields.stdout_bytes, 1 << 20);
        assert!(fields.message.contains("1048576"), "{}", fields.message);
        // Without the log: the document's head, still flagged.
        let fields = result_fields(&doc, None, 65536);
        assert!(fields.stdout.len() < 4096 && fields.stdout_truncated);
        // A log that does not start like the head is not trusted.
        let fields = result_fields(&doc, Some(&"y".repeat(65536)), 65536);
        assert!(fields.stdout.starts_with('x'));
        // A small cap cuts the head.
        let fields = result_fields(&document(Reason::Completed, b"abcdef", b""), None, 3);
        assert_eq!(
            (fields.stdout.as_str(), fields.stdout_truncated),
            ("abc", true)
        );
        // Output on stderr means the log is not stdout alone.
        let doc: ResultDocument =
            serde_json::from_str(&document(Reason::Completed, &big, b"warn").to_json())
                .expect("valid");
        assert!(!wants_log(&doc, 65536));
    }

    #[test]
    fn failures_keep_their_reason_and_exit_code() {
        let mut doc = document(Reason::NonZeroExit, b"", b"boom");
        doc.exit_code = Some(3);
        let fields = result_fields(&doc, None, 4096);
        assert!(!fields.succeeded);
        assert_eq!(fields.reason, "NonZeroExit");
        assert_eq!(fields.exit_code, Some(3));
        assert_eq!(fields.stderr, "boom");
        assert!(fields.message.contains("code 3"));
        let mut doc = document(Reason::TimedOut, b"", b"");
        doc.set_message("stopped after 100 ms");
        let fields = result_fields(&doc, None, 4096);
        assert!(fields.timed_out);
        assert!(fields.message.contains("stopped after 100 ms"));
    }

    fn handed(run: AgentRun) -> AgentAttempt {
        AgentAttempt {
            agent: "wasmfn-agent-x".into(),
            node: "a".into(),
            started: Time(k8s_openapi::jiff::Timestamp::from_second(100).expect("valid")),
            reason: "a Ready agent with room".into(),
            run,
        }
    }

    #[test]
    fn an_agent_attempt_this_replica_did_not_hand_over_is_lost() {
        match agent_attempt_state(None, 3, "wasmfn-agent-x") {
            RunState::Lost { loss, message } => {
                assert_eq!(loss, Loss::AgentLost);
                assert!(
                    message.contains("attempt 3 was handed to agent wasmfn-agent-x"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_agent_attempt_is_running_until_answered_then_finished_or_lost() {
        let running = agent_attempt_state(Some(handed(AgentRun::Pending)), 1, "x");
        assert_eq!(
            running,
            RunState::Running {
                node: Some("a".into()),
                started: Some(handed(AgentRun::Pending).started),
            }
        );
        let document = ResultDocument::new(Reason::Completed, runtime());
        let finished = Time(k8s_openapi::jiff::Timestamp::from_second(101).expect("valid"));
        let done = agent_attempt_state(
            Some(handed(AgentRun::Done {
                document: Box::new(document.clone()),
                finished: finished.clone(),
            })),
            1,
            "x",
        );
        assert_eq!(
            done,
            RunState::Finished {
                node: Some("a".into()),
                started: Some(handed(AgentRun::Pending).started),
                finished: Some(finished),
                document: Box::new(document),
            }
        );
        let lost = agent_attempt_state(
            Some(handed(AgentRun::Lost {
                message: "connection reset".into(),
                unreached: false,
            })),
            1,
            "x",
        );
        assert_eq!(
            lost,
            RunState::Lost {
                loss: Loss::AgentLost,
                message: "connection reset".into(),
            }
        );
        assert!(
            !Loss::AgentLost.before_the_guest(),
            "the guest may have run"
        );
        // Refused at connect: the run never started, so it is retried past `retries`.
        let refused = agent_attempt_state(
            Some(handed(AgentRun::Lost {
                message: "Connection refused".into(),
                unreached: true,
            })),
            2,
            "x",
        );
        let RunState::Lost { loss, .. } = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(loss, Loss::AgentUnreachable);
        assert_eq!(loss.reason(), "AgentLost");
        assert!(loss.before_the_guest());
    }
}
