//! An attempt under way: its status follows the pod (Starting, Running) or notes a long
//! agent run.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;

use super::{Run, RUN_POLL};
use crate::error::{Error, Result};
use crate::execution::decision::{note_running_in, track_poll};
use crate::execution::observe::attempt_runner;
use crate::execution::outcome::RunState;

/// Writes how `attempt` stands.
pub async fn track(run: &Run<'_>, attempt: i32, state: RunState) -> Result<Action> {
    let seen = run.seen;
    let on_agent = seen.on_agent.as_ref();
    let (assignment, _) = attempt_runner(&seen.owned, attempt, on_agent, seen.status())?;
    let start_deadline = Duration::from_secs(run.ctx.config.start_deadline_seconds);
    let poll = track_poll(&state, seen.on_node_for(), start_deadline, RUN_POLL);
    let update = run.update.clone();
    let status = match state {
        // An agent run the status does not show yet is noted only once it has run for a
        // while (most answer first, and their result is the one write).
        RunState::Running { node, started } if on_agent.is_some_and(|r| !r.shown) => {
            let started = started.unwrap_or(Time(seen.now));
            let ago = Duration::try_from(seen.now.duration_since(started.0)).unwrap_or_default();
            if let Some(left) = note_running_in(ago) {
                return Ok(Action::requeue(left));
            }
            update.handed_to_agent(attempt, &assignment, node.unwrap_or_default(), started)
        }
        RunState::Running { node, started } => update.running(attempt, &assignment, node, started),
        RunState::Starting { node, detail } => {
            update.starting(attempt, &assignment, node, detail.as_deref())
        }
        other => return Err(Error::Invariant(format!("Track with {other:?}"))),
    };
    run.write(&status).await?;
    Ok(Action::requeue(poll))
}
