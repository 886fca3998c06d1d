//! The WasmFunction controller: validate → cache key → stored artifact or one compile Job per
//! key → collect, verify and store the module → status and events.
//!
//! Pure parts: [`source`] (validation), [`cache_key`], [`decision`] (the next step),
//! [`compile_job`] (the Job), [`compile_output`] (reading what the Job produced), [`status`].
//! [`reconcile`] runs one pass: [`observe`] reads what the decision needs, [`decision`] names
//! the step, and [`steps`] carries it out.

pub mod cache_key;
pub mod compile_job;
pub mod compile_output;
pub mod decision;
pub mod observe;
pub mod reconcile;
#[cfg(test)]
mod scenarios;
pub mod source;
pub mod status;
pub mod steps;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use wasmfn_api::{labels, WasmFunction};

use crate::context::Context;

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let functions = Api::<WasmFunction>::all(ctx.client.clone());
    let jobs = Api::<Job>::all(ctx.client.clone());
    let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    Controller::new(functions, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
        // A shared Job has several function owners; each of them hears about it.
        .watches(jobs, watcher::Config::default().labels(&managed), |job| {
            let namespace = job.namespace();
            job.owner_references()
                .iter()
                .filter(|owner| owner.kind == "WasmFunction")
                .map(|owner| {
                    let reference = ObjectRef::<WasmFunction>::new(&owner.name);
                    match &namespace {
                        Some(ns) => reference.within(ns),
                        None => reference,
                    }
                })
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, crate::reconciler::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
