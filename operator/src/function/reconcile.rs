//! The reconciler: [`observe`] what the decision needs → [`decide`] → carry out the step
//! ([`steps`]).
//!
//! [`observe`]: super::observe::observe
//! [`steps`]: super::steps

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::{info, instrument};
use wasmfn_api::{FunctionPhase, WasmFunction, WasmFunctionStatus};

use super::decision::{decide, Step};
use super::observe::{observe, read_outcome, Facts, Seen};
use super::steps::{self, LostTry, Pass, SOURCE_POLL};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::reconciler::{self, Reconciled};
use crate::telemetry::object_spans::{FunctionTrace, Reconcile as ReconcileSpan};
use crate::telemetry::span::Span;

/// Reconciles one function.
#[instrument(skip(function, ctx), fields(namespace = function.namespace(), name = function.name_any()))]
pub async fn reconcile(function: Arc<WasmFunction>, ctx: Arc<Context>) -> Result<Action> {
    reconciler::run(function, ctx, |function, ctx, _| async move {
        reconcile_inner(&function, &ctx).await
    })
    .await
}

impl Reconciled for WasmFunction {
    type Status = WasmFunctionStatus;
    const CONTROLLER: &'static str = "function";

    fn status(&self) -> Option<&WasmFunctionStatus> {
        self.status.as_ref()
    }

    fn set_status(&mut self, status: WasmFunctionStatus) {
        self.status = Some(status);
    }

    fn settled(&self) -> bool {
        is_settled(self)
    }

    fn reconcile_span(&self, service: &str, reconcile: &ReconcileSpan<'_>) -> (Span, Option<bool>) {
        (
            FunctionTrace::of(self).reconcile_span(service, reconcile),
            None,
        )
    }
}

/// Whether the function's status already describes its current generation's final outcome.
fn is_settled(function: &WasmFunction) -> bool {
    function.status.as_ref().is_some_and(|s| {
        s.observed_generation == function.metadata.generation
            && matches!(s.phase, Some(FunctionPhase::Ready | FunctionPhase::Failed))
    })
}

/// One pass over `function` as read: observe what the decision needs, decide, carry out the
/// step.
async fn reconcile_inner(function: &WasmFunction, ctx: &Context) -> Result<Action> {
    let namespace = namespace_of(function)?;
    let pass = Pass::new(ctx, function, Timestamp::now());
    let mut facts = match observe(ctx, function, &namespace).await? {
        Seen::Buildable(facts) => facts,
        Seen::Invalid { invalid, recheck } => {
            steps::refuse(&pass, invalid).await?;
            return Ok(if recheck {
                Action::requeue(SOURCE_POLL)
            } else {
                Action::await_change()
            });
        }
        Seen::SourceMissing { message } => return steps::wait_for_source(&pass, message).await,
        Seen::BuilderUnresolved { message } => {
            return steps::wait_for_builder(&pass, message).await
        }
    };
    let step = decide_with_outcome(ctx, function, &pass, &mut facts).await?;
    info!(?step, key = %facts.key, "decided");
    carry_out(&pass, &facts, step).await
}

/// Decides; a finished Job's output is read only when the decision asks for it (reading costs
/// a pod list and a log fetch), then decided on.
async fn decide_with_outcome(
    ctx: &Context,
    function: &WasmFunction,
    pass: &Pass<'_>,
    facts: &mut Facts,
) -> Result<Step> {
    let step = decide(facts.observation(function, pass.now()));
    if step != Step::Collect {
        return Ok(step);
    }
    let job = facts.job_for("Collect")?;
    facts.outcome = Some(read_outcome(ctx, &facts.namespace, job).await?);
    match decide(facts.observation(function, pass.now())) {
        Step::Collect => Err(Error::Invariant(
            "Collect decided again with the outcome in hand".into(),
        )),
        step => Ok(step),
    }
}

/// Carries out `step`.
async fn carry_out(pass: &Pass<'_>, facts: &Facts, step: Step) -> Result<Action> {
    match step {
        Step::UpToDate => Ok(Action::await_change()),
        Step::UseStored => steps::use_stored(pass, facts).await,
        Step::StorePrebuilt => steps::store_prebuilt(pass, facts).await,
        Step::StartCompile {
            try_number,
            replace,
        } => steps::start_compile(pass, facts, try_number, replace).await,
        Step::JoinCompile { try_number } => steps::join_compile(pass, facts, try_number).await,
        Step::WaitForCompile { try_number } => {
            steps::wait_for_compile(pass, facts, try_number).await
        }
        Step::Collect => Err(Error::Invariant("Collect left undecided".into())),
        Step::StoreModule { try_number } => steps::store_module(pass, facts, try_number).await,
        Step::Fail {
            failure,
            try_number,
        } => steps::fail(pass, facts, failure, try_number).await,
        Step::Retry {
            failure,
            try_number,
            delay,
        } => {
            let lost = LostTry {
                failure,
                try_number,
                delay,
            };
            steps::retry(pass, facts, lost).await
        }
        Step::BackOff { remaining } => Ok(Action::requeue(remaining)),
        Step::ReadAgain {
            message,
            give_up_at,
        } => steps::read_again(pass, facts, &message, give_up_at).await,
    }
}

fn namespace_of(function: &WasmFunction) -> Result<String> {
    function
        .namespace()
        .ok_or_else(|| Error::Invariant("a WasmFunction without a namespace".into()))
}
