//! The execution status each step produces. Pure: the reconciler applies it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use wasmfn_api::{
    set_condition, ConditionStatus, ExecutionPath, ExecutionPhase, Runtime, WasmExecutionStatus,
};

use super::decision::RETRYING;
use super::outcome::{Loss, PlatformFailure, ResultFields};

/// The condition `kubectl wait --for=condition=Succeeded` waits for.
pub const SUCCEEDED: &str = "Succeeded";

/// Where an attempt runs, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The runtime that runs it.
    pub runtime: Runtime,
    /// Agent, Wasm pod or container pod.
    pub path: ExecutionPath,
    /// Why.
    pub reason: String,
    /// The run pod, or the agent pod on the agent path.
    pub pod: String,
}

impl Assignment {
    /// `pod <name>` or `agent <name>`, for messages.
    pub fn runner(&self) -> String {
        match self.path {
            ExecutionPath::Agent => format!("agent {}", self.pod),
            _ => format!("pod {}", self.pod),
        }
    }

    fn record(&self, status: &mut WasmExecutionStatus) {
        status.runtime = Some(self.runtime);
        status.path = Some(self.path);
        let (pod, agent) = match self.path {
            ExecutionPath::Agent => (None, Some(self.pod.clone())),
            _ => (Some(self.pod.clone()), None),
        };
        status.pod_name = pod;
        status.agent = agent;
    }
}

/// A status update in the making, from the current status (conditions keep their transition
/// times).
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    status: WasmExecutionStatus,
    generation: Option<i64>,
    now: Time,
}

/// Formats milliseconds for people: `850µs`, `12ms`, `1.4s`, `2m5s`.
pub fn human_duration(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else {
        let seconds = (ms / 1000.0).round() as u64;
        format!("{}m{}s", seconds / 60, seconds % 60)
    }
}

impl StatusUpdate {
    /// Starts from `current` for the object at `generation`.
    pub fn new(current: Option<&WasmExecutionStatus>, generation: Option<i64>, now: Time) -> Self {
        let mut status = current.cloned().unwrap_or_default();
        status.observed_generation = generation;
        StatusUpdate {
            status,
            generation,
            now,
        }
    }

    fn condition(&mut self, status: ConditionStatus, reason: &str, message: &str) {
        set_condition(
            &mut self.status.conditions,
            SUCCEEDED,
            status,
            reason,
            message,
            self.generation,
            self.now.clone(),
        );
        self.status.message = Some(message.to_owned());
    }

    /// Waiting for the function or a place to run.
    pub fn pending(mut self, reason: &str, message: &str) -> WasmExecutionStatus {
        self.status.phase = Some(ExecutionPhase::Pending);
        self.condition(ConditionStatus::Unknown, reason, message);
        self.status
    }

    /// Finished without a run of the guest (function failed, bad input, lost attempts).
    pub fn failed(mut self, reason: &str, message: &str, attempts: i32) -> WasmExecutionStatus {
        self.status.phase = Some(ExecutionPhase::Failed);
        self.status.reason = Some(reason.to_owned());
        self.status.attempts = attempts;
        self.status.next_attempt_time = None;
        self.status.completion_time = Some(self.now.clone());
        self.condition(ConditionStatus::False, reason, message);
        self.status
    }

    /// A pod was created for `attempt`.
    pub fn scheduled(mut self, attempt: i32, assignment: &Assignment) -> WasmExecutionStatus {
        self.status.phase = Some(ExecutionPhase::Scheduled);
        self.status.attempts = attempt;
        self.status.next_attempt_time = None;
        assignment.record(&mut self.status);
        self.status.placement_reason = Some(assignment.reason.clone());
        self.status.node = None;
        self.status.start_time = None;
        let message = format!(
            "attempt {attempt}: pod {} created ({}: {})",
            assignment.pod, assignment.runtime, assignment.reason
        );
        self.condition(ConditionStatus::Unknown, "Scheduled", &message);
        self.status
    }

    /// The attempt's pod exists but the guest has not started.
    pub fn starting(
        mut self,
        attempt: i32,
        assignment: &Assignment,
        node: Option<String>,
        detail: Option<&str>,
    ) -> WasmExecutionStatus {
        self.status.phase = Some(ExecutionPhase::Scheduled);
        self.adopt(attempt, assignment);
        self.status.node = node;
        let message = match detail {
            Some(detail) => format!(
                "attempt {attempt}: pod {} waiting: {detail}",
                assignment.pod
            ),
            None => format!("attempt {attempt}: pod {} starting", assignment.pod),
        };
        self.condition(ConditionStatus::Unknown, "Scheduled", &message);
        self.status
    }

    /// An attempt handed to an agent has not answered within the note delay (it runs, or waits
    /// in the agent's queue).
    pub fn handed_to_agent(
        mut self,
        attempt: i32,
        assignment: &Assignment,
        node: String,
        started: Time,
    ) -> WasmExecutionStatus {
        self.status.placement_reason = Some(assignment.reason.clone());
        self.running(attempt, assignment, Some(node), Some(started))
    }

    /// The guest is running.
    pub fn running(
        mut self,
        attempt: i32,
        assignment: &Assignment,
        node: Option<String>,
        started: Option<Time>,
    ) -> WasmExecutionStatus {
        self.status.phase = Some(ExecutionPhase::Running);
        self.adopt(attempt, assignment);
        self.status.node = node.clone();
        self.status.start_time = started.or_else(|| Some(self.now.clone()));
        let message = format!(
            "attempt {attempt} running in {} on {}",
            assignment.runner(),
            node.as_deref().unwrap_or("a node")
        );
        self.condition(ConditionStatus::Unknown, "Running", &message);
        self.status
    }

    /// Records what a pod found about the attempt it runs (also when the status never saw the
    /// pod's creation, after a restart).
    fn adopt(&mut self, attempt: i32, assignment: &Assignment) {
        self.status.attempts = attempt;
        self.status.next_attempt_time = None;
        assignment.record(&mut self.status);
        if self.status.placement_reason.is_none() {
            self.status.placement_reason = Some(assignment.reason.clone());
        }
    }

    /// Records where and when an attempt ran, as it ends.
    fn close(
        &mut self,
        attempt: i32,
        assignment: &Assignment,
        node: Option<String>,
        started: Option<Time>,
        finished: Option<Time>,
    ) {
        self.adopt(attempt, assignment);
        self.status.node = node;
        self.status.start_time = started.or(self.status.start_time.take());
        self.status.completion_time = finished.or_else(|| Some(self.now.clone()));
    }

    /// The guest finished with a result document.
    #[allow(clippy::too_many_arguments)]
    pub fn finished(
        mut self,
        attempt: i32,
        assignment: &Assignment,
        node: Option<String>,
        started: Option<Time>,
        finished: Option<Time>,
        fields: ResultFields,
    ) -> WasmExecutionStatus {
        self.status.phase = Some(if fields.succeeded {
            ExecutionPhase::Succeeded
        } else if fields.timed_out {
            ExecutionPhase::TimedOut
        } else {
            ExecutionPhase::Failed
        });
        self.close(attempt, assignment, node, started, finished);
        self.status.duration_ms = Some((fields.duration_ms * 1000.0).round() / 1000.0);
        self.status.duration = Some(human_duration(fields.duration_ms));
        self.status.exit_code = fields.exit_code;
        self.status.reason = Some(fields.reason.clone());
        // Empty streams are left out: the 1.20 apiserver's server-side apply drops "" anyway.
        self.status.stdout = Some(fields.stdout).filter(|s| !s.is_empty());
        self.status.stderr = Some(fields.stderr).filter(|s| !s.is_empty());
        self.status.stdout_truncated = fields.stdout_truncated;
        self.status.stderr_truncated = fields.stderr_truncated;
        self.status.stdout_bytes = i64::try_from(fields.stdout_bytes).ok();
        self.status.stderr_bytes = i64::try_from(fields.stderr_bytes).ok();
        self.status.result = fields.result;
        if fields.digest.is_some() {
            self.status.artifact_digest = fields.digest;
        }
        self.status.aot = Some(fields.aot);
        self.status.aot_source = fields.aot_source;
        let status = if fields.succeeded {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.condition(status, &fields.reason, &fields.message);
        self.status
    }

    /// The attempt ended without a result document, finally.
    #[allow(clippy::too_many_arguments)]
    pub fn platform_failure(
        mut self,
        attempt: i32,
        assignment: &Assignment,
        node: Option<String>,
        started: Option<Time>,
        finished: Option<Time>,
        failure: &PlatformFailure,
    ) -> WasmExecutionStatus {
        self.status.phase = Some(if failure.reason == "TimedOut" {
            ExecutionPhase::TimedOut
        } else {
            ExecutionPhase::Failed
        });
        self.close(attempt, assignment, node, started, finished);
        self.status.exit_code = failure.exit_code;
        self.status.reason = Some(failure.reason.to_owned());
        self.condition(ConditionStatus::False, failure.reason, &failure.message);
        self.status
    }

    /// The attempt was lost; the next one starts at `at`.
    pub fn retrying(
        mut self,
        attempt: i32,
        loss: Loss,
        message: &str,
        at: Time,
        retries: i32,
    ) -> WasmExecutionStatus {
        self.status.phase = Some(ExecutionPhase::Pending);
        self.status.attempts = attempt;
        self.status.next_attempt_time = Some(at);
        self.status.node = None;
        self.status.start_time = None;
        let text = format!(
            "attempt {attempt} was lost ({}: {message}); attempt {} of {} follows",
            loss.reason(),
            attempt + 1,
            retries + 1
        );
        self.condition(ConditionStatus::Unknown, RETRYING, &text);
        self.status
    }
}

/// Whether writing `next` over `current` would take a finished execution (Succeeded, Failed,
/// TimedOut) to another phase. A finished result is recorded once; whatever computes something
/// else afterwards (a replica acting on an old view, a stale watch) is wrong, not the record.
pub fn leaves_a_final_phase(
    current: Option<&WasmExecutionStatus>,
    next: &WasmExecutionStatus,
) -> bool {
    let final_phase = |phase: Option<ExecutionPhase>| {
        matches!(
            phase,
            Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed | ExecutionPhase::TimedOut)
        )
    };
    let current = current.and_then(|s| s.phase);
    final_phase(current) && next.phase != current
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn a_final_phase_is_never_left_and_every_other_move_is_allowed() {
        let with = |phase| WasmExecutionStatus {
            phase,
            ..Default::default()
        };
        let all = [
            None,
            Some(ExecutionPhase::Pending),
            Some(ExecutionPhase::Running),
            Some(ExecutionPhase::Succeeded),
            Some(ExecutionPhase::Failed),
            Some(ExecutionPhase::TimedOut),
        ];
        for from in all {
            for to in all {
                let finished = matches!(
                    from,
                    Some(
                        ExecutionPhase::Succeeded
                            | ExecutionPhase::Failed
                            | ExecutionPhase::TimedOut
                    )
                );
                assert_eq!(
                    leaves_a_final_phase(Some(&with(from)), &with(to)),
                    finished && from != to,
                    "{from:?} -> {to:?}"
                );
            }
            assert!(
                !leaves_a_final_phase(None, &with(from)),
                "nothing -> {from:?}"
            );
        }
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_000_000).expect("valid"))
    }

    fn assignment() -> Assignment {
        Assignment {
            runtime: Runtime::WasmEdge,
            path: ExecutionPath::WasmPod,
            reason: "node a".into(),
            pod: "x-run-1".into(),
        }
    }

    fn condition(status: &WasmExecutionStatus) -> (&str, &str) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == SUCCEEDED)
            .expect("condition");
        (c.status.as_str(), c.reason.as_str())
    }

    fn fields(succeeded: bool, timed_out: bool, reason: &str) -> ResultFields {
        ResultFields {
            reason: reason.into(),
            succeeded,
            timed_out,
            exit_code: Some(0),
            stdout: "hi\n".into(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            stdout_bytes: 3,
            stderr_bytes: 0,
            result: None,
            message: "m".into(),
            duration_ms: 1.5,
            digest: Some("sha256:ab".into()),
            aot: true,
            aot_source: Some("/artifact/module.wasm.aot.so (compiled by wasmfn)".into()),
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(0.25), "250µs");
        assert_eq!(human_duration(12.4), "12ms");
        assert_eq!(human_duration(1400.0), "1.4s");
        assert_eq!(human_duration(125_000.0), "2m5s");
    }

    #[test]
    fn phases_and_the_succeeded_condition_follow_each_step() {
        let s = StatusUpdate::new(None, Some(1), now()).pending("FunctionNotReady", "wait");
        assert_eq!(s.phase, Some(ExecutionPhase::Pending));
        assert_eq!(condition(&s), ("Unknown", "FunctionNotReady"));
        assert_eq!(s.observed_generation, Some(1));

        let s = StatusUpdate::new(Some(&s), Some(1), now()).scheduled(1, &assignment());
        assert_eq!(s.phase, Some(ExecutionPhase::Scheduled));
        assert_eq!((s.attempts, s.pod_name.as_deref()), (1, Some("x-run-1")));
        assert_eq!(s.runtime, Some(Runtime::WasmEdge));
        assert_eq!(condition(&s), ("Unknown", "Scheduled"));

        let s = StatusUpdate::new(Some(&s), Some(1), now()).running(
            1,
            &assignment(),
            Some("a".into()),
            None,
        );
        assert_eq!(s.phase, Some(ExecutionPhase::Running));
        assert_eq!(s.start_time, Some(now()));
        assert_eq!(condition(&s), ("Unknown", "Running"));

        let done = StatusUpdate::new(Some(&s), Some(1), now()).finished(
            1,
            &assignment(),
            Some("a".into()),
            None,
            None,
            fields(true, false, "Succeeded"),
        );
        assert_eq!(done.phase, Some(ExecutionPhase::Succeeded));
        assert_eq!(condition(&done), ("True", "Succeeded"));
        assert_eq!(done.duration.as_deref(), Some("2ms"));
        assert_eq!(done.artifact_digest.as_deref(), Some("sha256:ab"));
        assert_eq!(done.aot, Some(true));
        assert!(done.aot_source.is_some_and(|s| s.starts_with("/artifact/")));
        assert_eq!(done.stdout.as_deref(), Some("hi\n"));
        assert_eq!(done.stderr, None, "an empty stream is left out");
        assert_eq!(done.start_time, Some(now()), "kept from Running");

        let timed_out = StatusUpdate::new(Some(&s), Some(1), now()).finished(
            1,
            &assignment(),
            None,
            None,
            None,
            fields(false, true, "TimedOut"),
        );
        assert_eq!(timed_out.phase, Some(ExecutionPhase::TimedOut));
        assert_eq!(condition(&timed_out), ("False", "TimedOut"));

        let trap = StatusUpdate::new(Some(&s), Some(1), now()).finished(
            1,
            &assignment(),
            None,
            None,
            None,
            fields(false, false, "Trap"),
        );
        assert_eq!(trap.phase, Some(ExecutionPhase::Failed));
        assert_eq!(trap.reason.as_deref(), Some("Trap"));
    }

    #[test]
    fn platform_failures_and_retries() {
        let failure = PlatformFailure {
            reason: "OOMKilled",
            message: "killed".into(),
            exit_code: Some(137),
        };
        let s = StatusUpdate::new(None, None, now()).platform_failure(
            1,
            &assignment(),
            None,
            None,
            None,
            &failure,
        );
        assert_eq!(s.phase, Some(ExecutionPhase::Failed));
        assert_eq!(condition(&s), ("False", "OOMKilled"));
        assert_eq!(s.exit_code, Some(137));

        let retry =
            StatusUpdate::new(None, None, now()).retrying(1, Loss::PodDeleted, "gone", now(), 2);
        assert_eq!(retry.phase, Some(ExecutionPhase::Pending));
        assert_eq!(condition(&retry), ("Unknown", RETRYING));
        assert!(retry
            .message
            .as_deref()
            .expect("valid")
            .contains("attempt 2 of 3"));
        let rescheduled = StatusUpdate::new(Some(&retry), None, now()).scheduled(2, &assignment());
        assert_eq!(rescheduled.next_attempt_time, None);

        let failed = StatusUpdate::new(Some(&retry), None, now()).failed("PodDeleted", "lost", 2);
        assert_eq!(failed.phase, Some(ExecutionPhase::Failed));
        assert_eq!(failed.attempts, 2);
        assert_eq!(condition(&failed), ("False", "PodDeleted"));
        assert!(failed.completion_time.is_some());
    }

    #[test]
    fn an_attempt_handed_to_an_agent_names_the_agent_not_a_pod_and_tracking_it_changes_nothing() {
        let agent = Assignment {
            runtime: Runtime::WasmEdge,
            path: ExecutionPath::Agent,
            reason: "agent wasmfn-agent-x on WasmEdge node a is Ready with 0 runs pending".into(),
            pod: "wasmfn-agent-x".into(),
        };
        // A retry after a pod attempt: the pod and the old reason make way.
        let before = StatusUpdate::new(None, Some(1), now()).scheduled(1, &assignment());
        let handed = StatusUpdate::new(Some(&before), Some(1), now()).handed_to_agent(
            2,
            &agent,
            "a".into(),
            now(),
        );
        assert_eq!(handed.phase, Some(ExecutionPhase::Running));
        assert_eq!(handed.path, Some(ExecutionPath::Agent));
        assert_eq!(handed.agent.as_deref(), Some("wasmfn-agent-x"));
        assert_eq!(handed.pod_name, None);
        assert_eq!(
            handed.placement_reason.as_deref(),
            Some(agent.reason.as_str())
        );
        assert_eq!(condition(&handed), ("Unknown", "Running"));
        assert_eq!(
            handed.message.as_deref(),
            Some("attempt 2 running in agent wasmfn-agent-x on a")
        );
        let tracked = StatusUpdate::new(Some(&handed), Some(1), now()).running(
            2,
            &agent,
            Some("a".into()),
            Some(now()),
        );
        assert_eq!(tracked, handed, "tracking an unanswered run writes nothing");
    }
}
