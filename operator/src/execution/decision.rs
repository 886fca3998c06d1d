//! The next step for an execution: a pure function of its status, its function, its latest
//! run pod, the placement and the clock.
//!
//! Attempts are numbered from 1; a run pod's name and `wasmfn.dev/attempt` label carry its
//! number, so a pod is created at most once per attempt (a second create of the same name is
//! refused by the apiserver) and a restarted operator finds the pod it created before it could
//! record it. The status is written after the pod exists and the result before the pod is
//! deleted, so a crash between the two repeats only the second.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use wasmfn_api::{ExecutionPhase, WasmExecutionStatus};

use super::outcome::{Loss, RunState};
use super::placement::Placement;
use super::reasons::{Failure, Pending};

/// The condition reason while waiting to retry a lost attempt.
pub const RETRYING: &str = "Retrying";

/// How long an attempt handed to an agent runs before its status is written to say so: most
/// runs answer well within it and cost one status write, their result. In a burst, runs wait
/// in the agent's queue: at 1 s nearly every run of a 1,000 burst was noted too (1.89 status
/// writes per execution, 130 executions/s, against 1.00 and 159/s without notes), so the note
/// is for runs that are really long.
pub const RUNNING_NOTE_AFTER: Duration = Duration::from_secs(5);

/// For an attempt on an agent that the status does not show yet, `handed_over_ago`: how long
/// to wait before noting it Running (`None`: note it now).
pub fn note_running_in(handed_over_ago: Duration) -> Option<Duration> {
    RUNNING_NOTE_AFTER
        .checked_sub(handed_over_ago)
        .filter(|left| !left.is_zero())
}

/// The function as the execution sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum FunctionState {
    /// No WasmFunction of that name.
    Missing,
    /// Not Ready yet (compiling, waiting for its source).
    NotReady {
        /// Why, from the function's Ready condition.
        message: String,
    },
    /// The function failed (invalid source, compile error).
    Failed {
        /// Why.
        message: String,
    },
    /// Ready with a stored module.
    Ready,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// The current status.
    pub status: Option<&'a WasmExecutionStatus>,
    /// The function.
    pub function: FunctionState,
    /// Why the inputs cannot be run (too large, malformed), if so.
    pub input_problem: Option<(Failure, String)>,
    /// The newest run pod's attempt number and state.
    pub pod: Option<(i32, RunState)>,
    /// Where a new attempt would run; `None` until [`Step::Place`] asked for it (placement
    /// reads the nodes fresh, so only when an attempt is about to start).
    pub placement: Option<&'a Placement>,
    /// How long the newest run pod has existed.
    pub pod_age: Option<Duration>,
    /// How long the newest run pod has been on its node (since it was scheduled).
    pub on_node_for: Option<Duration>,
    /// How long a pod may be on its node without its container starting: past it the attempt
    /// is lost (no guest ran) and retried.
    pub start_deadline: Duration,
    /// How long a Wasm pod may stay unscheduled before placement is checked again: when no
    /// WasmEdge node qualifies any more, its attempt counts as lost (the pod's deadline only
    /// runs once a node has it). A pod waiting for room on nodes that still qualify is queued,
    /// not lost, however long it waits.
    pub schedule_timeout: Duration,
    /// The newest run pod is a Wasm pod (a container pod can run on any node, so waiting for
    /// one is always a queue).
    pub pod_is_wasm: bool,
    /// The newest run pod was admitted to one node and pinned there: the node had room, so a
    /// pod it has not taken within `schedule_timeout` is lost (the node cannot take it) and the
    /// next attempt is admitted again.
    pub pod_pinned: bool,
    /// `spec.retries`.
    pub retries: i32,
    /// Now.
    pub now: Timestamp,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The result is recorded: clean up, expire.
    Done,
    /// Wait (phase Pending) with this reason and message.
    Wait {
        /// Condition reason.
        reason: Pending,
        /// Why.
        message: String,
    },
    /// Fail without running (phase Failed).
    Fail {
        /// Condition reason.
        reason: Failure,
        /// Why.
        message: String,
        /// Attempts made.
        attempts: i32,
    },
    /// Observe the nodes and RuntimeClasses and decide again with the placement.
    Place,
    /// Create the pod for this attempt where the placement says.
    Start {
        /// The attempt number.
        attempt: i32,
    },
    /// The attempt is under way: reflect its state.
    Track {
        /// The attempt.
        attempt: i32,
        /// Its state (Starting or Running).
        state: RunState,
    },
    /// The attempt ended: record its result.
    Record {
        /// The attempt.
        attempt: i32,
        /// Its final state (Finished or Failed).
        state: RunState,
    },
    /// The attempt was lost; try again at `at`.
    Retry {
        /// The lost attempt.
        attempt: i32,
        /// How it was lost.
        loss: Loss,
        /// Details.
        message: String,
        /// When the next attempt may start.
        at: Timestamp,
    },
    /// Waiting for a retry's backoff to pass.
    BackOff {
        /// How long is left.
        remaining: Duration,
    },
}

/// When a tracked attempt is looked at again without a pod event: just after its start deadline
/// while its pod waits on a node (a pod whose sandbox keeps failing changes nothing the watch
/// would see), else after `poll`.
pub fn track_poll(
    state: &RunState,
    on_node_for: Option<Duration>,
    start_deadline: Duration,
    poll: Duration,
) -> Duration {
    match (state, on_node_for) {
        (RunState::Starting { node: Some(_), .. }, Some(on_node)) => start_deadline
            .saturating_sub(on_node)
            .saturating_add(Duration::from_secs(1))
            .min(poll),
        _ => poll,
    }
}

/// Delay before the attempt after `lost` attempts: 1 s, 2 s, 4 s … at most 30 s.
pub fn retry_delay(lost: i32) -> Duration {
    let exponent = u32::try_from(lost.saturating_sub(1)).unwrap_or(0).min(5);
    Duration::from_secs(1 << exponent).min(Duration::from_secs(30))
}

fn finished(status: Option<&WasmExecutionStatus>) -> bool {
    matches!(
        status.and_then(|s| s.phase),
        Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed | ExecutionPhase::TimedOut)
    )
}

/// Between attempts: a Pending status after attempts were made says the last one was lost and
/// the next has not started, whatever it waits for now (its backoff, room in the admission
/// queue, the artifact, the function). A live attempt is Scheduled or Running.
fn retrying(status: Option<&WasmExecutionStatus>) -> bool {
    status.is_some_and(|s| s.phase == Some(ExecutionPhase::Pending))
}

/// Decides the next step.
pub fn decide(o: &Observation<'_>) -> Step {
    if finished(o.status) {
        return Step::Done;
    }
    let recorded = o.status.map(|s| s.attempts).unwrap_or(0);
    let latest = o.pod.as_ref().map(|(attempt, _)| *attempt).unwrap_or(0);
    let attempt = recorded.max(latest);
    let waiting_to_retry = retrying(o.status) && latest <= recorded;

    if !waiting_to_retry {
        // The current attempt's pod, if it exists, says how it is going.
        if let Some((pod_attempt, state)) = &o.pod {
            if *pod_attempt == attempt {
                let unscheduled = matches!(state, RunState::Starting { node: None, .. })
                    && o.pod_age.is_some_and(|age| age > o.schedule_timeout);
                if unscheduled && o.pod_pinned {
                    return lose(
                        o,
                        attempt,
                        Loss::NotScheduled,
                        format!(
                            "the node the run pod was admitted to did not take it within {}s{}",
                            o.schedule_timeout.as_secs(),
                            match state {
                                RunState::Starting {
                                    detail: Some(detail),
                                    ..
                                } => format!(": {detail}"),
                                _ => String::new(),
                            }
                        ),
                    );
                }
                if unscheduled && o.pod_is_wasm {
                    match o.placement {
                        None => return Step::Place,
                        // Still a WasmEdge node to go to: the pod is queued for room.
                        Some(Placement::Wasm { .. } | Placement::Agent { .. }) => {}
                        Some(other) => {
                            let why = match other {
                                Placement::Container { reason } | Placement::Wait { reason } => {
                                    reason.as_str()
                                }
                                Placement::Wasm { .. } | Placement::Agent { .. } => "",
                            };
                            return lose(
                                o,
                                attempt,
                                Loss::NotScheduled,
                                format!(
                                    "no node took the Wasm pod within {}s and none can now: {why}",
                                    o.schedule_timeout.as_secs()
                                ),
                            );
                        }
                    }
                }
                if let RunState::Starting {
                    node: Some(node),
                    detail,
                } = state
                {
                    if o.on_node_for.is_some_and(|t| t > o.start_deadline) {
                        return lose(
                            o,
                            attempt,
                            Loss::NeverStarted,
                            format!(
                                "the run container did not start within {}s on node {node}{}",
                                o.start_deadline.as_secs(),
                                detail
                                    .as_deref()
                                    .map(|d| format!(": {d}"))
                                    .unwrap_or_default()
                            ),
                        );
                    }
                }
                return match state {
                    RunState::Starting { .. } | RunState::Running { .. } => Step::Track {
                        attempt,
                        state: state.clone(),
                    },
                    RunState::Finished { .. } | RunState::Failed { .. } => Step::Record {
                        attempt,
                        state: state.clone(),
                    },
                    RunState::Lost { loss, message } => lose(o, attempt, *loss, message.clone()),
                };
            }
        }
        if attempt > 0 {
            // The attempt's pod is gone without a trace of its result.
            return lose(
                o,
                attempt,
                Loss::PodDeleted,
                "the run pod disappeared before it finished".into(),
            );
        }
    } else if let Some(at) = o.status.and_then(|s| s.next_attempt_time.as_ref()) {
        let remaining = at.0.duration_since(o.now);
        if remaining.is_positive() {
            return Step::BackOff {
                remaining: Duration::try_from(remaining).unwrap_or(Duration::from_secs(1)),
            };
        }
    }

    match &o.function {
        FunctionState::Missing => {
            return Step::Wait {
                reason: Pending::FunctionNotFound,
                message: "the WasmFunction does not exist (yet); the execution runs once it is created and Ready".into(),
            }
        }
        FunctionState::Failed { message } => {
            return Step::Fail {
                reason: Failure::FunctionFailed,
                message: format!("the function failed: {message}"),
                attempts: attempt,
            }
        }
        FunctionState::NotReady { message } => {
            return Step::Wait {
                reason: Pending::FunctionNotReady,
                message: format!("waiting for the function to become Ready: {message}"),
            }
        }
        FunctionState::Ready => {}
    }
    if let Some((reason, message)) = &o.input_problem {
        return Step::Fail {
            reason: *reason,
            message: message.clone(),
            attempts: attempt,
        };
    }
    match o.placement {
        None => return Step::Place,
        Some(Placement::Wait { reason }) => {
            return Step::Wait {
                reason: Pending::Unschedulable,
                message: reason.clone(),
            }
        }
        Some(_) => {}
    }
    Step::Start {
        attempt: attempt + 1,
    }
}

/// Attempts beyond `spec.retries` that a loss before any guest ran may add: such an attempt
/// repeats nothing, but a pod that can never start (a missing image) must still end.
pub const START_RETRIES: i32 = 3;

fn lose(o: &Observation<'_>, attempt: i32, loss: Loss, message: String) -> Step {
    let allowed = if loss.before_the_guest() {
        o.retries.saturating_add(START_RETRIES)
    } else {
        o.retries
    };
    if attempt <= allowed {
        let delay = retry_delay(attempt);
        let at = o
            .now
            .checked_add(k8s_openapi::jiff::SignedDuration::try_from(delay).unwrap_or_default())
            .unwrap_or(o.now);
        Step::Retry {
            attempt,
            loss,
            message,
            at,
        }
    } else {
        let tries = if attempt == 1 {
            "no retries allowed".to_owned()
        } else {
            format!("after {attempt} attempts")
        };
        Step::Fail {
            reason: Failure::Lost(loss),
            message: format!("attempt {attempt} was lost ({message}); {tries}"),
            attempts: attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use wasmfn_result::{Reason, ResultDocument, RuntimeInfo};

    use crate::execution::outcome::PlatformFailure;

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("valid")
    }

    fn wasm() -> Placement {
        Placement::Wasm {
            runtime_class: "wasmfn".into(),
            tolerations: vec![],
            nodes: vec!["a".into()],
            reason: "a".into(),
        }
    }

    fn observe<'a>(
        status: Option<&'a WasmExecutionStatus>,
        pod: Option<(i32, RunState)>,
        placement: &'a Placement,
    ) -> Observation<'a> {
        Observation {
            status,
            function: FunctionState::Ready,
            input_problem: None,
            pod,
            placement: Some(placement),
            pod_age: Some(Duration::from_secs(1)),
            on_node_for: None,
            start_deadline: Duration::from_secs(120),
            schedule_timeout: Duration::from_secs(60),
            pod_is_wasm: true,
            pod_pinned: false,
            retries: 1,
            now: now(),
        }
    }

    fn status(phase: ExecutionPhase, attempts: i32, reason: &str) -> WasmExecutionStatus {
        WasmExecutionStatus {
            phase: Some(phase),
            attempts,
            conditions: vec![Condition {
                type_: "Succeeded".into(),
                status: "Unknown".into(),
                reason: reason.into(),
                message: reason.into(),
                observed_generation: None,
                last_transition_time: Time(now()),
            }],
            ..Default::default()
        }
    }

    fn running() -> RunState {
        RunState::Running {
            node: Some("a".into()),
            started: None,
        }
    }

    fn finished_state() -> RunState {
        RunState::Finished {
            node: Some("a".into()),
            started: None,
            finished: None,
            document: Box::new(ResultDocument::new(
                Reason::Completed,
                RuntimeInfo {
                    name: "wasmedge".into(),
                    version: "x".into(),
                    aot: false,
                    aot_source: None,
                    aot_rejected: None,
                },
            )),
        }
    }

    fn lost() -> RunState {
        RunState::Lost {
            loss: Loss::PodEvicted,
            message: "evicted".into(),
        }
    }

    #[test]
    fn a_new_execution_starts_its_first_attempt() {
        let p = wasm();
        assert_eq!(decide(&observe(None, None, &p)), Step::Start { attempt: 1 });
    }

    #[test]
    fn the_function_gates_the_start() {
        let p = wasm();
        let mut o = observe(None, None, &p);
        o.function = FunctionState::Missing;
        assert!(matches!(
            decide(&o),
            Step::Wait {
                reason: Pending::FunctionNotFound,
                ..
            }
        ));
        o.function = FunctionState::NotReady {
            message: "compiling".into(),
        };
        assert!(
            matches!(decide(&o), Step::Wait { reason: Pending::FunctionNotReady, message } if message.contains("compiling"))
        );
        o.function = FunctionState::Failed {
            message: "syntax error".into(),
        };
        assert!(
            matches!(decide(&o), Step::Fail { reason: Failure::FunctionFailed, message, attempts: 0 } if message.contains("syntax error"))
        );
        o.function = FunctionState::Ready;
        o.input_problem = Some((Failure::InputTooLarge, "stdin is 300 KiB".into()));
        assert!(matches!(
            decide(&o),
            Step::Fail {
                reason: Failure::InputTooLarge,
                ..
            }
        ));
    }

    #[test]
    fn placement_is_asked_for_only_when_an_attempt_would_start() {
        let p = wasm();
        let mut o = observe(None, None, &p);
        o.placement = None;
        assert_eq!(decide(&o), Step::Place);
        let s = status(ExecutionPhase::Running, 1, "Running");
        o.status = Some(&s);
        o.pod = Some((1, running()));
        assert!(matches!(decide(&o), Step::Track { .. }));
    }

    #[test]
    fn a_pod_no_node_takes_is_a_lost_attempt() {
        let p = wasm();
        let s = status(ExecutionPhase::Scheduled, 1, "Scheduled");
        let unscheduled = RunState::Starting {
            node: None,
            detail: Some("Unschedulable: 0/2 nodes".into()),
        };
        let mut o = observe(Some(&s), Some((1, unscheduled.clone())), &p);
        assert!(matches!(decide(&o), Step::Track { .. }), "young: wait");
        o.pod_age = Some(Duration::from_secs(61));
        // Long unscheduled: placement is looked at again.
        o.placement = None;
        assert_eq!(decide(&o), Step::Place);
        // A WasmEdge node still qualifies: the pod is queued for room (a burst), not lost.
        o.placement = Some(&p);
        assert!(matches!(decide(&o), Step::Track { .. }));
        // None does any more: the attempt is lost.
        let gone = Placement::Container {
            reason: "a is cordoned".into(),
        };
        o.placement = Some(&gone);
        match decide(&o) {
            Step::Retry {
                loss: Loss::NotScheduled,
                message,
                ..
            } => assert!(message.contains("a is cordoned"), "{message}"),
            other => panic!("{other:?}"),
        }
        // A container pod waiting for room is always queued.
        o.pod_is_wasm = false;
        assert!(matches!(decide(&o), Step::Track { .. }));
        // Scheduled pods pulling images are not stuck in this sense (their deadline runs).
        o.pod = Some((
            1,
            RunState::Starting {
                node: Some("a".into()),
                detail: None,
            },
        ));
        assert!(matches!(decide(&o), Step::Track { .. }));
    }

    #[test]
    fn an_admitted_pod_its_node_does_not_take_in_time_is_lost_whatever_its_kind() {
        let p = wasm();
        let s = status(ExecutionPhase::Scheduled, 1, "Scheduled");
        let unscheduled = RunState::Starting {
            node: None,
            detail: Some("Unschedulable: Insufficient memory".into()),
        };
        for is_wasm in [true, false] {
            let mut o = observe(Some(&s), Some((1, unscheduled.clone())), &p);
            o.pod_pinned = true;
            o.pod_is_wasm = is_wasm;
            o.retries = 0;
            assert!(matches!(decide(&o), Step::Track { .. }), "young: wait");
            o.pod_age = Some(Duration::from_secs(61));
            match decide(&o) {
                Step::Retry {
                    loss: Loss::NotScheduled,
                    message,
                    ..
                } => assert!(
                    message.contains("within 60s: Unschedulable: Insufficient memory"),
                    "{message}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_pod_on_its_node_past_the_start_deadline_is_lost_and_retried_whatever_retries_says() {
        let p = wasm();
        let s = status(ExecutionPhase::Scheduled, 1, "Scheduled");
        let stuck = RunState::Starting {
            node: Some("b".into()),
            detail: Some("ImagePullBackOff: not found".into()),
        };
        let mut o = observe(Some(&s), Some((1, stuck)), &p);
        o.retries = 0;
        o.pod_age = Some(Duration::from_secs(600));
        o.on_node_for = Some(Duration::from_secs(100));
        let poll = Duration::from_secs(60);
        match decide(&o) {
            Step::Track { state, .. } => assert_eq!(
                track_poll(&state, o.on_node_for, o.start_deadline, poll),
                Duration::from_secs(21),
                "looked at again just after the deadline"
            ),
            other => panic!("{other:?}"),
        }
        o.on_node_for = Some(Duration::from_secs(120));
        assert!(
            matches!(decide(&o), Step::Track { .. }),
            "at the deadline: still starting"
        );
        o.on_node_for = Some(Duration::from_secs(10));
        assert_eq!(
            track_poll(&running(), o.on_node_for, o.start_deadline, poll),
            poll,
            "a running pod: the usual poll"
        );
        o.on_node_for = Some(Duration::from_secs(121));
        match decide(&o) {
            Step::Retry {
                attempt: 1,
                loss: Loss::NeverStarted,
                message,
                ..
            } => {
                assert!(message.contains("within 120s on node b"), "{message}");
                assert!(
                    message.ends_with(": ImagePullBackOff: not found"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        // No guest ran: retried past spec.retries, up to START_RETRIES more, then final.
        let last = 1 + START_RETRIES;
        let s = status(ExecutionPhase::Scheduled, last, "Scheduled");
        o.status = Some(&s);
        o.pod = Some((
            last,
            RunState::Starting {
                node: Some("b".into()),
                detail: None,
            },
        ));
        match decide(&o) {
            Step::Fail {
                reason: Failure::Lost(Loss::NeverStarted),
                attempts,
                message,
            } => {
                assert_eq!(attempts, last);
                assert!(
                    message.ends_with("within 120s on node b); after 4 attempts"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A pod no node has taken is governed by placement, not by the start deadline; a
        // running one by its timeout.
        for state in [
            RunState::Starting {
                node: None,
                detail: None,
            },
            running(),
        ] {
            o.pod = Some((last, state));
            assert!(matches!(decide(&o), Step::Track { .. }));
        }
    }

    #[test]
    fn waiting_placement_is_unschedulable() {
        let p = Placement::Wait {
            reason: "no WasmEdge node".into(),
        };
        assert!(matches!(
            decide(&observe(None, None, &p)),
            Step::Wait { reason: Pending::Unschedulable, message } if message == "no WasmEdge node"
        ));
    }

    #[test]
    fn a_finished_execution_is_done_whatever_else_is_seen() {
        let p = wasm();
        for phase in [
            ExecutionPhase::Succeeded,
            ExecutionPhase::Failed,
            ExecutionPhase::TimedOut,
        ] {
            let s = status(phase, 1, "x");
            assert_eq!(
                decide(&observe(Some(&s), Some((1, lost())), &p)),
                Step::Done
            );
        }
    }

    #[test]
    fn the_current_attempts_pod_is_tracked_or_recorded() {
        let p = wasm();
        let s = status(ExecutionPhase::Scheduled, 1, "Scheduled");
        assert!(matches!(
            decide(&observe(Some(&s), Some((1, running())), &p)),
            Step::Track { attempt: 1, .. }
        ));
        assert!(matches!(
            decide(&observe(Some(&s), Some((1, finished_state())), &p)),
            Step::Record { attempt: 1, .. }
        ));
        let failed = RunState::Failed {
            node: None,
            started: None,
            finished: None,
            failure: PlatformFailure {
                reason: "OOMKilled",
                message: String::new(),
                exit_code: Some(137),
            },
        };
        assert!(matches!(
            decide(&observe(Some(&s), Some((1, failed)), &p)),
            Step::Record { attempt: 1, .. }
        ));
    }

    #[test]
    fn a_pod_created_before_a_crash_is_adopted_not_duplicated() {
        // The status never recorded attempt 1, but its pod exists.
        let p = wasm();
        assert!(matches!(
            decide(&observe(None, Some((1, running())), &p)),
            Step::Track { attempt: 1, .. }
        ));
        let s = status(ExecutionPhase::Pending, 0, "FunctionNotReady");
        assert!(matches!(
            decide(&observe(Some(&s), Some((1, finished_state())), &p)),
            Step::Record { attempt: 1, .. }
        ));
    }

    #[test]
    fn lost_attempts_retry_with_backoff_until_retries_run_out() {
        let p = wasm();
        let s = status(ExecutionPhase::Running, 1, "Running");
        match decide(&observe(Some(&s), Some((1, lost())), &p)) {
            Step::Retry {
                attempt: 1,
                loss: Loss::PodEvicted,
                at,
                ..
            } => assert_eq!(at.duration_since(now()).as_secs(), 1),
            other => panic!("{other:?}"),
        }
        // A vanished pod is a deletion.
        assert!(matches!(
            decide(&observe(Some(&s), None, &p)),
            Step::Retry {
                loss: Loss::PodDeleted,
                ..
            }
        ));
        // With retries spent, the loss is final.
        let s = status(ExecutionPhase::Running, 2, "Running");
        match decide(&observe(Some(&s), Some((2, lost())), &p)) {
            Step::Fail {
                reason: Failure::Lost(Loss::PodEvicted),
                message,
                attempts: 2,
            } => assert!(message.contains("after 2 attempts"), "{message}"),
            other => panic!("{other:?}"),
        }
        let mut o = observe(Some(&s), Some((2, lost())), &p);
        o.retries = 0;
        let s1 = status(ExecutionPhase::Running, 1, "Running");
        o.status = Some(&s1);
        o.pod = None;
        assert!(
            matches!(decide(&o), Step::Fail { reason: Failure::Lost(Loss::PodDeleted), message, .. } if message.contains("no retries"))
        );
    }

    #[test]
    fn an_attempt_that_never_started_is_retried_past_spec_retries_a_bounded_number_of_times() {
        let p = wasm();
        let never_started = RunState::Lost {
            loss: Loss::NeverStarted,
            message: "the deadline came first".into(),
        };
        for attempt in 1..=START_RETRIES + 1 {
            let s = status(ExecutionPhase::Running, attempt, "Running");
            let mut o = observe(Some(&s), Some((attempt, never_started.clone())), &p);
            o.retries = 0;
            let step = decide(&o);
            if attempt <= START_RETRIES {
                assert!(
                    matches!(
                        step,
                        Step::Retry {
                            loss: Loss::NeverStarted,
                            ..
                        }
                    ),
                    "attempt {attempt}: {step:?}"
                );
            } else {
                assert!(
                    matches!(&step, Step::Fail { reason: Failure::Lost(Loss::NeverStarted), attempts, .. } if *attempts == attempt),
                    "attempt {attempt}: {step:?}"
                );
            }
        }
        // A loss after the guest may have run keeps to spec.retries.
        let s = status(ExecutionPhase::Running, 1, "Running");
        let mut o = observe(Some(&s), Some((1, lost())), &p);
        o.retries = 0;
        assert!(matches!(
            decide(&o),
            Step::Fail {
                reason: Failure::Lost(Loss::PodEvicted),
                ..
            }
        ));
    }

    #[test]
    fn a_retry_waits_for_its_time_then_starts_the_next_attempt() {
        let p = wasm();
        let mut s = status(ExecutionPhase::Pending, 1, RETRYING);
        s.next_attempt_time = Some(Time(
            now()
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(3))
                .expect("valid"),
        ));
        // The lost pod may still be around (terminating): it is not counted twice.
        assert_eq!(
            decide(&observe(Some(&s), Some((1, lost())), &p)),
            Step::BackOff {
                remaining: Duration::from_secs(3)
            }
        );
        s.next_attempt_time = Some(Time(now()));
        assert_eq!(
            decide(&observe(Some(&s), Some((1, lost())), &p)),
            Step::Start { attempt: 2 }
        );
        // Once attempt 2's pod exists it is tracked even before the status says so.
        assert!(matches!(
            decide(&observe(Some(&s), Some((2, running())), &p)),
            Step::Track { attempt: 2, .. }
        ));
    }

    #[test]
    fn a_retry_that_waits_for_room_or_its_artifact_starts_the_next_attempt_and_loses_nothing_more()
    {
        let p = wasm();
        for waiting in ["Queued", "ArtifactUnavailable", "FunctionNotReady"] {
            // Attempt 1 was lost and its pod deleted; the next start was queued.
            let mut s = status(ExecutionPhase::Pending, 1, waiting);
            s.next_attempt_time = Some(Time(now()));
            assert_eq!(
                decide(&observe(Some(&s), None, &p)),
                Step::Start { attempt: 2 },
                "{waiting}"
            );
        }
    }

    #[test]
    fn retry_delays_double_and_are_capped() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_run_handed_over_just_now_is_noted_running_only_after_the_delay() {
        assert_eq!(note_running_in(Duration::ZERO), Some(RUNNING_NOTE_AFTER));
        assert_eq!(
            note_running_in(Duration::from_millis(300)),
            Some(RUNNING_NOTE_AFTER - Duration::from_millis(300))
        );
    }

    #[test]
    fn a_run_still_going_after_the_delay_is_noted_running_now() {
        assert_eq!(note_running_in(RUNNING_NOTE_AFTER), None);
        assert_eq!(note_running_in(Duration::from_secs(60)), None);
    }
}
