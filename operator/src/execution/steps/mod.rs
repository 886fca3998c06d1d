//! The steps a decision leads to, one small function each: [`start`], [`track`],
//! [`record`], [`retry`] and [`finish`], plus the waits and failures written here. Each gets
//! the reconcile's [`Run`]: what was seen, the APIs, and the status update it builds on.

mod finish;
mod record;
mod retry;
mod start;
mod track;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::warn;
use wasmfn_api::{Runtime, WasmExecution, WasmExecutionStatus};
use wasmfn_result::trace::RunTrace;

pub use finish::finish;
pub use record::record;
pub use retry::retry;
pub use start::start;
pub use track::track;

use super::observe::Seen;
use super::reasons::{Failure, Pending};
use super::status::{leaves_a_final_phase, StatusUpdate};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::OutcomeLabels;
use crate::reconciler;
use crate::telemetry::object_spans::{nanos, AttemptEnd, ExecutionTrace};

/// How often a running attempt is looked at without a pod event.
const RUN_POLL: Duration = Duration::from_secs(5);

/// One reconcile's working set: what was seen and how to write.
#[derive(Debug)]
pub struct Run<'r> {
    /// The operator's shared state.
    pub ctx: &'r Context,
    /// What the reconcile found.
    pub seen: &'r Seen<'r>,
    /// The execution's namespace's executions.
    pub executions: Api<WasmExecution>,
    /// The execution's namespace's pods.
    pub pods: Api<Pod>,
    /// The status as it stands, to build the next one on.
    pub update: StatusUpdate,
}

impl<'r> Run<'r> {
    /// The working set of a reconcile of `seen`.
    pub fn new(ctx: &'r Context, seen: &'r Seen<'r>) -> Self {
        Run {
            ctx,
            seen,
            executions: Api::namespaced(ctx.client.clone(), &seen.namespace),
            pods: Api::namespaced(ctx.client.clone(), &seen.namespace),
            update: StatusUpdate::new(
                seen.status(),
                seen.execution.metadata.generation,
                Time(seen.now),
            ),
        }
    }

    /// The execution.
    pub fn execution(&self) -> &WasmExecution {
        &self.seen.execution
    }

    /// Writes the status when it differs ([`reconciler::write_status`]); returns whether it
    /// changed. A status that would leave a final phase is never written.
    pub async fn write(&self, status: &WasmExecutionStatus) -> Result<bool> {
        let execution = self.execution();
        if leaves_a_final_phase(execution.status.as_ref(), status) {
            // Never rewrite a recorded result; the write is also fenced by the resourceVersion
            // it was computed from, this guards against a wrong computation itself.
            warn!(
                execution = %execution.name_any(),
                "refusing a status write that would leave the final phase {:?} for {:?}",
                execution.status.as_ref().and_then(|s| s.phase),
                status.phase
            );
            return Ok(false);
        }
        let written =
            reconciler::write_status(self.ctx, &self.executions, execution, status).await?;
        let Some(written) = written else {
            return Ok(false);
        };
        if let (Some(uid), Some(version)) = (written.uid(), written.resource_version()) {
            self.ctx.last_writes.record(&uid, version);
        }
        Ok(true)
    }

    /// Records an event on the execution.
    async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        self.ctx
            .event(self.execution(), type_, reason, action, note)
            .await;
    }

    /// Fails the execution for good after `attempts` attempts; on the write that finished it,
    /// counts it, ends its span and says why in a warning event.
    async fn fail_with(&self, reason: Failure, message: String, attempts: i32) -> Result<()> {
        let status = self
            .update
            .clone()
            .failed(reason.reason(), &message, attempts);
        if self.write(&status).await? {
            self.report_outcome(&status);
            self.event(EventType::Warning, reason.reason(), "Run", message)
                .await;
        }
        Ok(())
    }

    /// Writes a Pending status for `reason` (an event on the write that changed it).
    async fn pend(&self, reason: Pending, message: String, action: &str) -> Result<()> {
        let status = self.update.clone().pending(reason.reason(), &message);
        if self.write(&status).await? {
            self.event(reason.event_type(), reason.reason(), action, message)
                .await;
        }
        Ok(())
    }
}

/// Waits (phase Pending) for what `reason` names; `action` names the step in the event.
pub async fn wait(run: &Run<'_>, reason: Pending, message: String, action: &str) -> Result<Action> {
    let poll = reason
        .poll()
        .ok_or_else(|| Error::Invariant(format!("{} waits by its own backoff", reason.reason())))?;
    run.pend(reason, message, action).await?;
    Ok(Action::requeue(poll))
}

/// Fails the execution for good after `attempts` attempts.
pub async fn fail(
    run: &Run<'_>,
    reason: Failure,
    message: String,
    attempts: i32,
) -> Result<Action> {
    run.fail_with(reason, message, attempts).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Waits (phase Pending) while an object an earlier execution of the same name left behind is
/// deleted: its name is the one this attempt needs.
async fn wait_for_leftover(run: &Run<'_>, kind: &str, name: &str) -> Result<Action> {
    let message = format!(
        "the {kind} {name} of an earlier execution of this name is being deleted; the run starts once it is gone"
    );
    wait(run, Pending::WaitingForCleanup, message, "Run").await
}

/// Fails the execution because an object it needs a name for belongs to someone else.
async fn name_taken(run: &Run<'_>, kind: &str, name: &str, attempts: i32) -> Result<Action> {
    let message = format!(
        "a {kind} named {name} already exists and does not belong to this execution; rename the execution or remove that {kind}"
    );
    run.fail_with(Failure::NameConflict, message, attempts)
        .await?;
    Ok(Action::await_change())
}

impl Run<'_> {
    /// Counts a finished execution in the metrics and ends its span (once: only the write
    /// that finished it calls this).
    fn report_outcome(&self, status: &WasmExecutionStatus) {
        let (ctx, execution, now) = (self.ctx, self.execution(), self.seen.now);
        let runtime = status.runtime.map_or("None", Runtime::as_str);
        let outcome = status.reason.as_deref().unwrap_or("Unknown");
        let labels = OutcomeLabels {
            runtime,
            outcome: outcome.to_owned(),
        };
        let latency = (execution.metadata.creation_timestamp.as_ref())
            .map(|created| now.duration_since(created.0).as_secs_f64().max(0.0));
        // The exemplar names the execution's trace only when its spans are exported.
        let trace_id = (ctx.tracer.service().is_some())
            .then(|| hex::encode(ExecutionTrace::of(execution).0.trace_id));
        ctx.metrics.execution_finished(
            &labels,
            status.duration_ms.map(|ms| ms / 1000.0),
            latency,
            trace_id,
        );
        if let Some(service) = ctx.tracer.service() {
            let (trace, _) = ExecutionTrace::of(execution);
            let span = trace.execution_span(service, execution, status, now);
            ctx.tracer.record(trace.caller_sampled, [span]);
        }
    }

    /// The spans of an attempt that ended: its own, and the runner's from its result document.
    fn trace_attempt(&self, end: &AttemptEnd<'_>, ran: Option<&RunTrace>) {
        let Some(service) = self.ctx.tracer.service() else {
            return;
        };
        let (trace, _) = ExecutionTrace::of(self.execution());
        let uid = &self.seen.uid;
        let mut spans = vec![trace.attempt_span(service, uid, end)];
        if let Some(ran) = ran {
            spans.extend(trace.runner_spans(uid, end.attempt, ran, end.pod));
        }
        self.ctx.tracer.record(trace.caller_sampled, spans);
    }
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
