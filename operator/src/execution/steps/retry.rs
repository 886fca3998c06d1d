//! A lost attempt (no result, a guest that may not have run): the status says it was lost and
//! when the next one starts, and the lost attempt's pod goes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::finish::delete_pods;
use super::{created_nanos, Run};
use crate::error::Result;
use crate::execution::observe::{attempt_of, attempt_runner, attempt_started};
use crate::execution::outcome::Loss;
use crate::metrics::LossLabels;
use crate::telemetry::object_spans::{nanos, AttemptEnd};

/// Notes that `attempt` was lost for `message` and retries it at `at`.
pub async fn retry(
    run: &Run<'_>,
    attempt: i32,
    loss: Loss,
    message: String,
    at: Timestamp,
) -> Result<Action> {
    let (ctx, seen) = (run.ctx, run.seen);
    let retries = seen.execution.spec.retries;
    let status = run
        .update
        .clone()
        .retrying(attempt, loss, &message, Time(at), retries);
    if run.write(&status).await? {
        let labels = LossLabels {
            reason: loss.reason(),
        };
        ctx.metrics.run_attempts_lost.get_or_create(&labels).inc();
        trace_lost(run, attempt, loss, &message);
        let note = format!("attempt {attempt} was lost ({message}); retrying");
        run.event(EventType::Warning, loss.reason(), "Run", note)
            .await;
    }
    // A lost attempt's pod has nothing more to say: an evicted one stays as a Failed object,
    // an unscheduled one would wait for a node forever.
    let lost: Vec<Pod> = seen
        .owned
        .iter()
        .filter(|p| attempt_of(p) == Some(attempt))
        .cloned()
        .collect();
    delete_pods(&run.pods, &lost).await?;
    if let Some(agents) = &ctx.agents {
        agents.dispatcher.forget(&seen.uid, attempt);
    }
    let wait = Duration::try_from(at.duration_since(seen.now)).unwrap_or(Duration::ZERO);
    Ok(Action::requeue(wait + Duration::from_millis(100)))
}

/// The lost attempt's span.
fn trace_lost(run: &Run<'_>, attempt: i32, loss: Loss, message: &str) {
    let seen = run.seen;
    let on_agent = seen.on_agent.as_ref();
    let Ok((assignment, pod)) = attempt_runner(&seen.owned, attempt, on_agent, seen.status())
    else {
        return;
    };
    let end = AttemptEnd {
        attempt,
        pod: &assignment.pod,
        node: pod.map_or_else(
            || seen.status().and_then(|s| s.node.as_deref()),
            |pod| pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        ),
        runtime: assignment.runtime.as_str(),
        reason: loss.reason(),
        started: pod.map_or_else(
            || attempt_started(on_agent, seen.status(), seen.now),
            |pod| created_nanos(pod, seen.now),
        ),
        ended: nanos(seen.now),
        error: Some(message.to_owned()),
    };
    run.trace_attempt(&end, None);
}
