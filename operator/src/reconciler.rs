//! What both controllers do around their decisions, written once: the reconcile's metrics
//! guard, span and backoff bookkeeping; the error policy; owner references; and the fenced
//! status write. A controller supplies what differs through [`Reconciled`].

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;
use wasmfn_api::API_VERSION;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::{ActiveReconcile, ReconcileErrorLabels};
use crate::store::FIELD_MANAGER;
use crate::telemetry::object_spans::{nanos, Reconcile};
use crate::telemetry::span::Span;

/// A kind one of the controllers reconciles.
pub trait Reconciled:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
    /// Its status.
    type Status: Serialize + Clone;

    /// The controller's name in metrics ("execution", "function").
    const CONTROLLER: &'static str;

    /// The status, when written.
    fn status(&self) -> Option<&Self::Status>;

    /// Replaces the status.
    fn set_status(&mut self, status: Self::Status);

    /// Whether the object needs nothing more (its quiet reconciles get no span).
    fn settled(&self) -> bool;

    /// The reconcile's span under the object's own, with the caller's sampling decision.
    fn reconcile_span(&self, service: &str, reconcile: &Reconcile<'_>) -> (Span, Option<bool>);
}

/// How the object a reconcile decides on was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// As the controller's watch cache handed it over.
    Cached,
    /// Just read from the API server: a status write on the cached copy was refused as stale.
    Fresh,
}

/// Runs one reconcile of `object` with the metrics guard, the span and the backoff
/// bookkeeping around it. A status write refused as stale ([`Error::StaleRead`]) makes `inner`
/// decide once more on the object read fresh ([`Read::Fresh`]); an object gone by then needs
/// nothing more.
pub async fn run<K, F, Fut>(object: Arc<K>, ctx: Arc<Context>, inner: F) -> Result<Action>
where
    K: Reconciled,
    F: Fn(Arc<K>, Arc<Context>, Read) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let _active = ActiveReconcile::start(&ctx.metrics, K::CONTROLLER);
    let started = Timestamp::now();
    let result = match inner(object.clone(), ctx.clone(), Read::Cached).await {
        Err(Error::StaleRead) => match read_fresh(&ctx, object.as_ref()).await {
            Ok(Some(fresh)) => inner(Arc::new(fresh), ctx.clone(), Read::Fresh).await,
            Ok(None) => Ok(Action::await_change()),
            Err(error) => Err(error),
        },
        other => other,
    };
    trace_reconcile(&ctx, object.as_ref(), started, result.as_ref().err());
    let action = result?;
    ctx.succeeded(&backoff_key(object.as_ref()));
    Ok(action)
}

/// The object as the API server has it now; `None` once it is gone.
async fn read_fresh<K: Reconciled>(ctx: &Context, object: &K) -> Result<Option<K>> {
    let namespace = object
        .namespace()
        .ok_or_else(|| Error::Invariant(format!("a {} without a namespace", K::kind(&()))))?;
    let api = Api::<K>::namespaced(ctx.client.clone(), &namespace);
    Ok(api.get_opt(&object.name_any()).await?)
}

/// A span for the reconcile (none for the quiet reconciles of a settled object).
fn trace_reconcile<K: Reconciled>(
    ctx: &Context,
    object: &K,
    started: Timestamp,
    error: Option<&Error>,
) {
    let Some(service) = ctx.tracer.service() else {
        return;
    };
    if error.is_none() && object.settled() {
        return;
    }
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let (span, caller_sampled) = object.reconcile_span(
        service,
        &Reconcile {
            namespace: &namespace,
            name: &name,
            started: nanos(started),
            ended: nanos(Timestamp::now()),
            error: error.map(ToString::to_string),
        },
    );
    ctx.tracer.record(caller_sampled, [span]);
}

/// Retries a failed reconcile with per-object exponential backoff.
pub fn error_policy<K: Reconciled>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let labels = ReconcileErrorLabels {
        controller: K::CONTROLLER,
        category: error.metric_label(),
    };
    ctx.metrics.reconcile_errors.get_or_create(&labels).inc();
    let delay = ctx.backoff(&backoff_key(object.as_ref()));
    warn!(name = object.name_any(), %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The key of an object's reconcile backoff: its reference (kind, namespace and name), so
/// that two kinds never share one.
pub fn backoff_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    ObjectRef::from_obj(object).to_string()
}

/// A reference from an object the controller makes to the `owner` it makes it for.
/// `controller` marks the owner that manages it (only one may).
pub fn owner_reference<K: Resource<DynamicType = ()>>(
    owner: &K,
    controller: bool,
) -> Result<OwnerReference> {
    Ok(OwnerReference {
        api_version: API_VERSION.to_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner
            .uid()
            .ok_or_else(|| Error::Invariant(format!("a {} without a uid", K::kind(&()))))?,
        controller: Some(controller),
        block_owner_deletion: Some(true),
    })
}

/// Writes `status` when it differs from the object's; returns the written object, or `None`
/// when there was nothing to write.
///
/// A replace of the status subresource, conditional on the resourceVersion the decision was
/// made on: should the object have changed since, the API server refuses it and
/// [`Error::StaleRead`] makes the reconcile decide again on a fresh read ([`run`]). The
/// operator is the status's only writer; a replace costs the API server less than a
/// server-side apply, which matters in a burst, and unlike a forced apply it cannot overwrite
/// a newer status with one decided on an old view.
pub async fn write_status<K: Reconciled>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    status: &K::Status,
) -> Result<Option<K>> {
    // Compared as written: times are stored to the second, so a status computed again from
    // the same facts differs in memory from the one read back, not on the wire.
    if object.status().map(serde_json::to_value).transpose()? == Some(serde_json::to_value(status)?)
    {
        return Ok(None);
    }
    ctx.ensure_leading()?;
    let mut updated = object.clone();
    updated.set_status(status.clone());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    let written = api
        .replace_status(&object.name_any(), &params, &updated)
        .await
        .map_err(|error| match error {
            kube::Error::Api(status) if status.code == 409 => Error::StaleRead,
            other => Error::Kube(other),
        })?;
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_api::{WasmExecution, WasmFunction};

    fn execution(namespace: &str, name: &str) -> WasmExecution {
        let spec = serde_json::from_value(serde_json::json!({"functionRef": {"name": "f"}}))
            .expect("valid spec");
        let mut execution = WasmExecution::new(name, spec);
        execution.metadata.namespace = Some(namespace.into());
        execution
    }

    fn function(namespace: &str, name: &str) -> WasmFunction {
        let spec = serde_json::from_value(
            serde_json::json!({"language": "rust", "source": {"code": "fn main() {}"}}),
        )
        .expect("valid spec");
        let mut function = WasmFunction::new(name, spec);
        function.metadata.namespace = Some(namespace.into());
        function
    }

    #[test]
    fn backoff_keys_of_two_kinds_with_one_name_differ() {
        assert_ne!(
            backoff_key(&execution("a", "same")),
            backoff_key(&function("a", "same"))
        );
    }

    #[test]
    fn backoff_keys_of_one_name_in_two_namespaces_differ() {
        assert_ne!(
            backoff_key(&execution("a", "same")),
            backoff_key(&execution("b", "same"))
        );
    }

    #[test]
    fn an_owner_reference_names_the_owners_kind_and_uid() {
        let mut function = function("a", "f");
        function.metadata.uid = Some("u-1".into());
        let reference = owner_reference(&function, false).expect("has a uid");
        assert_eq!(
            (
                reference.api_version.as_str(),
                reference.kind.as_str(),
                reference.name.as_str(),
                reference.uid.as_str(),
                reference.controller
            ),
            (API_VERSION, "WasmFunction", "f", "u-1", Some(false))
        );
    }

    #[test]
    fn an_owner_without_a_uid_is_an_invariant_error() {
        assert!(matches!(
            owner_reference(&execution("a", "e"), true),
            Err(Error::Invariant(message)) if message.contains("WasmExecution")
        ));
    }
}
