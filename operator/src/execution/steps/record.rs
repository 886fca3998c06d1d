//! An attempt that ended with a result: the status records it once (with the run's spans,
//! metrics and event), then the attempt's pod goes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::warn;
use wasmfn_api::{ExecutionPath, WasmExecutionStatus};
use wasmfn_result::trace::RunTrace;

use super::finish::delete_pods;
use super::{created_nanos, Run};
use crate::error::{Error, Result};
use crate::execution::observe::{attempt_runner, attempt_started};
use crate::execution::outcome::{log_limit, result_fields, wants_log, RunState};
use crate::execution::run_pod::CONTAINER;
use crate::execution::status::{Assignment, StatusUpdate};
use crate::telemetry::object_spans::{nanos, AttemptEnd};

/// Records how `attempt` ended.
pub async fn record(run: &Run<'_>, attempt: i32, state: RunState) -> Result<Action> {
    let (ctx, seen) = (run.ctx, run.seen);
    let on_agent = seen.on_agent.as_ref();
    let (assignment, pod) = attempt_runner(&seen.owned, attempt, on_agent, seen.status())?;
    let cap = seen
        .runnable_inputs()
        .map_or(ctx.config.max_output_bytes, |i| i.max_output_bytes);
    // An agent's document holds each stream up to the cap; a pod's holds what fits its
    // termination message, and its log has the rest.
    let log = match (&state, pod) {
        (RunState::Finished { document, .. }, Some(pod)) if wants_log(document, cap) => {
            read_log(&run.pods, &pod.name_any(), log_limit(document, cap)).await
        }
        _ => None,
    };
    let ended = recorded(
        run.update.clone(),
        attempt,
        &assignment,
        state,
        log.as_deref(),
        cap,
    )?;
    if run.write(&ended.status).await? {
        let end = AttemptEnd {
            attempt,
            pod: &assignment.pod,
            node: ended.node.as_deref(),
            runtime: assignment.runtime.as_str(),
            reason: &ended.reason,
            started: pod.map_or_else(
                || attempt_started(on_agent, seen.status(), seen.now),
                |pod| created_nanos(pod, seen.now),
            ),
            ended: nanos(seen.now),
            error: ended.warning.then(|| ended.message.clone()),
        };
        run.trace_attempt(&end, ended.trace.as_ref());
        run.report_outcome(&ended.status);
        let note = match assignment.path {
            ExecutionPath::Agent => {
                format!("{} (path Agent: {})", ended.message, assignment.reason)
            }
            _ => format!(
                "{} ({} {})",
                ended.message,
                assignment.runtime,
                assignment.runner()
            ),
        };
        run.event(ended.event_type(), &ended.reason, "Run", note)
            .await;
    }
    if let Some(agents) = &ctx.agents {
        agents.dispatcher.forget(&seen.uid, attempt);
    }
    if let Some(pod) = pod.filter(|_| !ctx.config.keep_run_pods) {
        delete_pods(&run.pods, std::slice::from_ref(pod)).await?;
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// What recording an attempt's end writes and says.
#[derive(Debug)]
pub(super) struct Recorded {
    /// The final status.
    pub status: WasmExecutionStatus,
    /// Its reason.
    pub reason: String,
    /// Whether the run failed (a warning event, an error on its span).
    pub warning: bool,
    /// What happened, for people.
    pub message: String,
    /// The node it ran on.
    pub node: Option<String>,
    /// The runner's own spans, from its result document.
    pub trace: Option<RunTrace>,
}

impl Recorded {
    /// A warning for a failed run, else normal.
    fn event_type(&self) -> EventType {
        if self.warning {
            EventType::Warning
        } else {
            EventType::Normal
        }
    }
}

/// The record of `attempt`, which ended in `state` (finished with a document, or failed
/// without one); `log` is the run container's log when the document's stdout was cut.
pub(super) fn recorded(
    update: StatusUpdate,
    attempt: i32,
    assignment: &Assignment,
    state: RunState,
    log: Option<&str>,
    cap: u64,
) -> Result<Recorded> {
    match state {
        RunState::Finished {
            node,
            started,
            finished,
            document,
        } => {
            let fields = result_fields(&document, log, cap);
            Ok(Recorded {
                reason: fields.reason.clone(),
                warning: !fields.succeeded,
                message: fields.message.clone(),
                node: node.clone(),
                trace: document.trace.clone(),
                status: update.finished(attempt, assignment, node, started, finished, fields),
            })
        }
        RunState::Failed {
            node,
            started,
            finished,
            failure,
        } => Ok(Recorded {
            status: update.platform_failure(
                attempt,
                assignment,
                node.clone(),
                started,
                finished,
                &failure,
            ),
            reason: failure.reason.to_owned(),
            warning: true,
            message: failure.message,
            node,
            trace: None,
        }),
        other => Err(Error::Invariant(format!("Record with {other:?}"))),
    }
}

/// The first `limit` bytes of the run container's log; `None` when it cannot be read (the
/// status then keeps the document's head and says the output was cut).
async fn read_log(pods: &Api<Pod>, pod: &str, limit: u64) -> Option<String> {
    let params = kube::api::LogParams {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use wasmfn_api::{ExecutionPhase, Runtime};
    use wasmfn_result::Reason;

    use crate::execution::outcome::tests::document;
    use crate::execution::outcome::PlatformFailure;

    fn update() -> StatusUpdate {
        StatusUpdate::new(
            None,
            Some(1),
            Time(Timestamp::from_second(1_000).expect("valid")),
        )
    }

    fn pod_assignment() -> Assignment {
        Assignment {
            runtime: Runtime::WasmEdge,
            path: ExecutionPath::WasmPod,
            reason: "a WasmEdge node is Ready".into(),
            pod: "run-1".into(),
        }
    }

    fn finished(reason: Reason, stdout: &[u8]) -> RunState {
        let mut document = document(reason, stdout, b"");
        document.exit_code = Some(if reason == Reason::Completed { 0 } else { 3 });
        RunState::Finished {
            node: Some("node-a".into()),
            started: None,
            finished: None,
            document: Box::new(document),
        }
    }

    #[test]
    fn a_completed_run_is_recorded_as_succeeded_without_a_warning() {
        let ended = recorded(
            update(),
            1,
            &pod_assignment(),
            finished(Reason::Completed, b"hi"),
            None,
            1024,
        )
        .expect("a finished state");
        assert_eq!(ended.status.phase, Some(ExecutionPhase::Succeeded));
        assert_eq!(ended.status.stdout.as_deref(), Some("hi"));
        assert!(!ended.warning);
        assert_eq!(ended.node.as_deref(), Some("node-a"));
    }

    #[test]
    fn a_non_zero_exit_is_recorded_as_failed_with_a_warning_and_its_reason() {
        let ended = recorded(
            update(),
            2,
            &pod_assignment(),
            finished(Reason::NonZeroExit, b""),
            None,
            1024,
        )
        .expect("a finished state");
        assert_eq!(ended.status.phase, Some(ExecutionPhase::Failed));
        assert_eq!(ended.status.attempts, 2);
        assert_eq!(ended.reason, "NonZeroExit");
        assert!(ended.warning);
    }

    #[test]
    fn a_platform_failure_is_recorded_with_its_own_reason_and_message() {
        let state = RunState::Failed {
            node: Some("node-b".into()),
            started: None,
            finished: None,
            failure: PlatformFailure {
                reason: "OOMKilled",
                message: "the run container was killed for memory".into(),
                exit_code: Some(137),
            },
        };
        let ended =
            recorded(update(), 1, &pod_assignment(), state, None, 1024).expect("a failed state");
        assert_eq!(
            (ended.reason.as_str(), ended.message.as_str(), ended.warning),
            ("OOMKilled", "the run container was killed for memory", true)
        );
        assert_eq!(ended.status.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(ended.node.as_deref(), Some("node-b"));
        assert!(ended.trace.is_none());
    }

    #[test]
    fn recording_an_attempt_still_running_is_an_invariant_error() {
        let state = RunState::Running {
            node: None,
            started: None,
        };
        assert!(matches!(
            recorded(update(), 1, &pod_assignment(), state, None, 1024),
            Err(Error::Invariant(_))
        ));
    }
}
