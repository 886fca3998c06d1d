//! A finished execution: its pods go (unless kept), and it goes itself after its TTL.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::info;

use super::Run;
use crate::error::Result;
use crate::idempotent::delete_if_present;

/// Cleans up after the result and deletes the execution once its TTL has passed.
pub async fn finish(run: &Run<'_>) -> Result<Action> {
    let (ctx, seen) = (run.ctx, run.seen);
    if !ctx.config.keep_run_pods {
        delete_pods(&run.pods, &seen.owned).await?;
    }
    if let Some(agents) = &ctx.agents {
        agents.dispatcher.forget(&seen.uid, i32::MAX);
    }
    let retention = i64::try_from(ctx.config.finished_ttl_seconds).unwrap_or(i64::MAX);
    let ttl = seen
        .execution
        .spec
        .ttl_seconds_after_finished
        .or((retention > 0).then_some(retention));
    let finished = seen
        .status()
        .and_then(|s| s.completion_time.as_ref())
        .map(|t| t.0);
    let Some(left) = ttl_left(ttl, finished, seen.now) else {
        return Ok(Action::await_change());
    };
    if !left.is_zero() {
        return Ok(Action::requeue(left + Duration::from_millis(100)));
    }
    info!("deleting: ttlSecondsAfterFinished passed");
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    delete_if_present(&run.executions, &seen.name, &params).await?;
    Ok(Action::await_change())
}

/// How long a finished execution has left: `None` without a TTL, zero once it has passed.
/// An execution without a completion time counts from `now`.
fn ttl_left(ttl: Option<i64>, finished: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let finished = finished.unwrap_or(now);
    let expires = finished
        .checked_add(SignedDuration::from_secs(ttl?.max(0)))
        .unwrap_or(finished);
    let left = expires.duration_since(now);
    Some(if left.is_positive() {
        Duration::try_from(left).unwrap_or(Duration::from_secs(1))
    } else {
        Duration::ZERO
    })
}

/// Deletes the pods not already being deleted.
pub(super) async fn delete_pods(pods: &Api<Pod>, owned: &[Pod]) -> Result<()> {
    for pod in owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        delete_if_present(pods, &pod.name_any(), &DeleteParams::default()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid")
    }

    #[test]
    fn without_a_ttl_a_finished_execution_stays() {
        assert_eq!(ttl_left(None, Some(at(100)), at(1_000)), None);
    }

    #[test]
    fn the_ttl_counts_from_the_completion_time() {
        assert_eq!(
            ttl_left(Some(60), Some(at(100)), at(130)),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_passed_ttl_leaves_nothing() {
        assert_eq!(
            ttl_left(Some(60), Some(at(100)), at(161)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            ttl_left(Some(0), Some(at(100)), at(100)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn an_execution_without_a_completion_time_counts_from_now() {
        assert_eq!(
            ttl_left(Some(60), None, at(500)),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_negative_ttl_counts_as_zero() {
        assert_eq!(
            ttl_left(Some(-5), Some(at(100)), at(100)),
            Some(Duration::ZERO)
        );
    }
}
