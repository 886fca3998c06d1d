//! The WasmExecution controller: wait for the function → place the run (WasmEdge node or
//! container pod) → one pod per attempt → record the result from its termination message →
//! clean up, retry lost attempts, expire finished executions.
//!
//! Pure parts: [`placement`], [`run_pod`] (the pod and input ConfigMap), [`outcome`] (reading a
//! run pod and its result document), [`decision`] (the next step), [`status`].
//! [`reconcile`] fetches, calls them and applies the result; [`watched`] holds what it reads
//! from watches instead of the API server.

pub mod decision;
pub mod inputs;
pub mod observe;
pub mod outcome;
pub mod placement;
pub mod reasons;
pub mod reconcile;
pub mod run_pod;
#[cfg(test)]
mod scenarios;
pub mod status;
pub mod steps;
pub mod trim;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, ResourceExt};
use wasmfn_api::{labels, ExecutionPhase, WasmExecution, WasmFunction};

use crate::context::Context;
use crate::metrics::PhaseLabels;
use crate::{admission, watched};

/// Queued executions woken when a run pod finishes or goes away: a few, in case an earlier one
/// runs elsewhere now (each pod is seen finishing, then deleted, so room is offered twice).
const WOKEN_PER_FREED_POD: usize = 2;

/// Executions that have not started a run yet (they wait for a function or a node).
fn waiting(store: &Store<WasmExecution>) -> Vec<ObjectRef<WasmExecution>> {
    store
        .state()
        .iter()
        .filter(|e| {
            matches!(
                e.status.as_ref().and_then(|s| s.phase),
                None | Some(ExecutionPhase::Pending)
            )
        })
        .map(|e| ObjectRef::from_obj(e.as_ref()))
        .collect()
}

/// Every few seconds, sets the `wasmfn_executions_in_phase{phase}` gauge from the controller's cache:
/// Pending executions are the queue, Scheduled and Running ones are in flight.
async fn count_phases(store: Store<WasmExecution>, ctx: Arc<Context>) {
    let phases = [
        ("Pending", Some(ExecutionPhase::Pending)),
        ("Scheduled", Some(ExecutionPhase::Scheduled)),
        ("Running", Some(ExecutionPhase::Running)),
        ("Succeeded", Some(ExecutionPhase::Succeeded)),
        ("Failed", Some(ExecutionPhase::Failed)),
        ("TimedOut", Some(ExecutionPhase::TimedOut)),
    ];
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let state = store.state();
        // Deleted executions leave the cache; their last writes and agent attempts are
        // forgotten with them.
        if watched::listed(&store).is_some() {
            let live: std::collections::HashSet<String> =
                state.iter().filter_map(|e| e.uid()).collect();
            ctx.last_writes.retain(|uid| live.contains(uid));
            // Only executions still waiting to start stay queued.
            let waiting: std::collections::HashSet<String> = state
                .iter()
                .filter(|e| {
                    matches!(
                        e.status.as_ref().and_then(|s| s.phase),
                        None | Some(ExecutionPhase::Pending)
                    )
                })
                .filter_map(|e| e.uid())
                .collect();
            ctx.admission.retain(|uid| waiting.contains(uid));
            ctx.metrics
                .executions_queued
                .set(i64::try_from(ctx.admission.queued()).unwrap_or(i64::MAX));
            if let Some(agents) = &ctx.agents {
                let settled = std::time::Duration::from_secs(60);
                agents
                    .dispatcher
                    .forget_gone(|uid| live.contains(uid), settled);
            }
        }
        for (label, phase) in phases {
            let count = state
                .iter()
                .filter(|e| {
                    let current = e.status.as_ref().and_then(|s| s.phase);
                    // Not yet reconciled counts as Pending.
                    current == phase || (label == "Pending" && current.is_none())
                })
                .count();
            ctx.metrics
                .executions_in_phase
                .get_or_create(&PhaseLabels { phase: label })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let Some(writers) = ctx.take_watch_writers() else {
        tracing::error!("the execution controller was started twice in one process");
        return;
    };
    let concurrency = ctx.config.concurrency;
    let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    // The controller's cache holds trimmed copies (see [`trim`]).
    let (executions, execution_writer) = kube::runtime::reflector::store();
    let controller = Controller::for_stream(
        watcher(
            Api::<WasmExecution>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(trim::execution)
        .reflect(execution_writer)
        .applied_objects(),
        executions.clone(),
    );
    // An agent's answer wakes its execution at once (the poll is the fallback).
    let controller = match ctx.agents.as_ref().and_then(|agents| agents.take_wake()) {
        Some(mut woken) => {
            controller.reconcile_on(futures::stream::poll_fn(move |cx| woken.poll_recv(cx)))
        }
        None => controller,
    };
    // A run pod finishing wakes the head of the admission queue.
    let controller = match ctx.admission.take_woken() {
        Some(mut woken) => {
            controller.reconcile_on(futures::stream::poll_fn(move |cx| woken.poll_recv(cx)))
        }
        None => controller,
    };
    let on_pod = ctx.clone();
    tokio::spawn(count_phases(executions.clone(), ctx.clone()));
    let for_function = executions.clone();
    let for_nodes = executions.clone();
    let for_classes = executions;
    controller
        .with_config(controller::Config::default().concurrency(concurrency))
        .owns_stream(
            watcher(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().labels(&managed),
            )
            .default_backoff()
            .reflect(writers.pods)
            .touched_objects()
            .inspect(move |pod| {
                if pod.as_ref().is_ok_and(admission::frees_room) {
                    on_pod.admission.wake(WOKEN_PER_FREED_POD);
                }
            }),
        )
        // A function becoming Ready (or Failed) moves the executions waiting for it.
        .watches_stream(
            watcher(
                Api::<WasmFunction>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(trim::function)
            .reflect(writers.functions)
            .touched_objects(),
            move |function| {
                let namespace = function.namespace();
                let name = function.name_any();
                waiting(&for_function)
                    .into_iter()
                    .filter(|r| r.namespace == namespace)
                    .filter(|r| {
                        for_function
                            .get(r)
                            .is_some_and(|e| e.spec.function_ref.name == name)
                    })
                    .collect::<Vec<_>>()
            },
        )
        // A node or RuntimeClass change may give a waiting execution a place to run.
        .watches_stream(
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .reflect(writers.nodes)
                .touched_objects(),
            move |_| waiting(&for_nodes),
        )
        .watches_stream(
            watcher(Api::<RuntimeClass>::all(client), watcher::Config::default())
                .default_backoff()
                .reflect(writers.classes)
                .touched_objects(),
            move |_| waiting(&for_classes),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, crate::reconciler::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
