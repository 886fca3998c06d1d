//! One reconcile of an execution: *observe* what exists ([`observe`]), *decide* the next step
//! (the pure [`decide`], with a placement made only when a start is due), and take that *step*
//! ([`steps`]).

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::{info, instrument};
use wasmfn_api::{WasmExecution, WasmExecutionStatus};

use super::decision::{decide, Step};
use super::observe::{is_finished, observation, observe, place_now, with_pod_cause, Seen};
use super::placement::Placement;
use super::steps::{self, Run};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::reconciler::{self, Read, Reconciled};
use crate::telemetry::object_spans::{ExecutionTrace, Reconcile as ReconcileSpan};
use crate::telemetry::span::Span;

/// Reconciles one execution.
#[instrument(skip(execution, ctx), fields(namespace = execution.namespace(), name = execution.name_any()))]
pub async fn reconcile(execution: Arc<WasmExecution>, ctx: Arc<Context>) -> Result<Action> {
    reconciler::run(execution, ctx, |execution, ctx, read| async move {
        reconcile_inner(&execution, &ctx, read).await
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

/// Observes, decides and takes the step.
async fn reconcile_inner(execution: &WasmExecution, ctx: &Context, read: Read) -> Result<Action> {
    let Some(seen) = observe(execution, ctx, read).await? else {
        return Ok(Action::await_change());
    };
    let run = Run::new(ctx, &seen);
    if seen.finished() {
        return steps::finish(&run).await;
    }
    let (step, placed) = decide_placing(ctx, &seen).await?;
    let step = with_pod_cause(ctx, step, &seen.owned).await;
    info!(?step, "decided");
    match step {
        Step::Place => Err(Error::Invariant("placement asked for twice".into())),
        Step::Done => steps::finish(&run).await,
        Step::Wait { reason, message } => steps::wait(&run, reason, message, "Wait").await,
        Step::Fail {
            reason,
            message,
            attempts,
        } => steps::fail(&run, reason, message, attempts).await,
        Step::Start { attempt } => {
            let (placement, candidates) =
                placed.ok_or_else(|| Error::Invariant("Start without a placement".into()))?;
            steps::start(&run, attempt, placement, candidates).await
        }
        Step::Track { attempt, state } => steps::track(&run, attempt, state).await,
        Step::Record { attempt, state } => steps::record(&run, attempt, state).await,
        Step::Retry {
            attempt,
            loss,
            message,
            at,
        } => steps::retry(&run, attempt, loss, message, at).await,
        Step::BackOff { remaining } => Ok(Action::requeue(remaining + Duration::from_millis(100))),
    }
}

/// Decides; when the decision is to place a new attempt, places it (reading the nodes) and
/// decides again with the placement. Returns the placement and the nodes its pod may be
/// admitted to along with the step.
async fn decide_placing(
    ctx: &Context,
    seen: &Seen<'_>,
) -> Result<(Step, Option<(Placement, Vec<String>)>)> {
    let step = decide(&observation(seen, &ctx.config, None));
    if step != Step::Place {
        return Ok((step, None));
    }
    let (placement, candidates) = place_now(ctx, &seen.execution).await?;
    let step = decide(&observation(seen, &ctx.config, Some(&placement)));
    Ok((step, Some((placement, candidates))))
}
