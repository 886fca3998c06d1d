//! What the execution controller reads on every reconcile without asking the API server: the
//! nodes, RuntimeClasses, functions and run pods from watches, and whether its cached copy of an
//! execution can be trusted ([`trust_cached`]).
//!
//! A burst of executions is limited by API server requests: a LIST of nodes and of
//! RuntimeClasses per placement and a GET of the execution and of its function per reconcile
//! cost more than the one status write that matters. The watches keep these views within
//! milliseconds of the API server; every status write carries the resourceVersion its decision
//! was made on, so a decision made on a stale copy never lands (the API server answers 409 and
//! the reconcile runs again on a fresh read).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::ResourceExt as _;
use wasmfn_api::{WasmExecution, WasmFunction};

/// Readers of the watched objects (their writers belong to the controller's watches).
#[derive(Clone)]
pub struct Watched {
    /// The cluster's nodes.
    pub nodes: Store<Node>,
    /// The cluster's RuntimeClasses.
    pub classes: Store<RuntimeClass>,
    /// Every namespace's WasmFunctions.
    pub functions: Store<WasmFunction>,
    /// The run pods (those the operator labels as managed).
    pub pods: Store<Pod>,
}

/// The writing ends of [`Watched`], fed by the controller's watches.
pub struct Writers {
    /// Fed by the node watch.
    pub nodes: reflector::store::Writer<Node>,
    /// Fed by the RuntimeClass watch.
    pub classes: reflector::store::Writer<RuntimeClass>,
    /// Fed by the WasmFunction watch.
    pub functions: reflector::store::Writer<WasmFunction>,
    /// Fed by the run pod watch.
    pub pods: reflector::store::Writer<Pod>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("nodes", &self.nodes.len())
            .field("classes", &self.classes.len())
            .field("functions", &self.functions.len())
            .field("pods", &self.pods.len())
            .finish()
    }
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers").finish_non_exhaustive()
    }
}

impl Watched {
    /// Empty views and the writers that fill them.
    pub fn new() -> (Watched, Writers) {
        let (nodes, node_writer) = reflector::store();
        let (classes, class_writer) = reflector::store();
        let (functions, function_writer) = reflector::store();
        let (pods, pod_writer) = reflector::store();
        (
            Watched {
                nodes,
                classes,
                functions,
                pods,
            },
            Writers {
                nodes: node_writer,
                classes: class_writer,
                functions: function_writer,
                pods: pod_writer,
            },
        )
    }

    /// The function `namespace/name` as last watched; `None` before the first list (or when
    /// it does not exist).
    pub fn function(&self, namespace: &str, name: &str) -> Option<Arc<WasmFunction>> {
        listed(&self.functions)?;
        self.functions.get(&ObjectRef::new(name).within(namespace))
    }
}

/// The run pods labelled `label=value` as last watched; `None` before the first list.
pub fn watched_pods(store: &Store<Pod>, label: &str, value: &str) -> Option<Vec<Pod>> {
    Some(
        listed(store)?
            .iter()
            .filter(|pod| pod.labels().get(label).is_some_and(|v| v == value))
            .map(|pod| pod.as_ref().clone())
            .collect(),
    )
}

/// Every object in `store`, once its watch has listed them all.
pub fn listed<K>(store: &Store<K>) -> Option<Vec<Arc<K>>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().now_or_never()?.ok()?;
    Some(store.state())
}

/// Whether a cached execution is fresh enough to decide on without a GET.
///
/// `last_write` is the resourceVersion this replica's last status write of the execution
/// returned. A cache holding exactly that version is as fresh as anything this replica knows;
/// any other version means the cache lags behind that write (or someone else wrote). An
/// execution this replica never wrote is trusted only while it has no status: nothing has
/// been decided for it yet, and a write decided on it carries its resourceVersion anyway.
pub fn trust_cached(
    last_write: Option<&str>,
    cached_version: Option<&str>,
    has_status: bool,
) -> bool {
    match (last_write, cached_version) {
        (Some(written), Some(cached)) => written == cached,
        (Some(_), None) => false,
        (None, _) => !has_status,
    }
}

/// The resourceVersion of this replica's last status write, per execution uid.
#[derive(Debug, Default)]
pub struct LastWrites(Mutex<HashMap<String, String>>);

impl LastWrites {
    /// Notes that a status write of `uid` produced `version`.
    pub fn record(&self, uid: &str, version: String) {
        self.lock().insert(uid.to_owned(), version);
    }

    /// Whether the cached `execution` may be decided on without a GET ([`trust_cached`]).
    pub fn trusts(&self, execution: &WasmExecution) -> bool {
        let uid = execution.uid().unwrap_or_default();
        let writes = self.lock();
        trust_cached(
            writes.get(&uid).map(String::as_str),
            execution.resource_version().as_deref(),
            execution.status.is_some(),
        )
    }

    /// Forgets the executions for which `exists` is false (deleted ones).
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.lock().retain(|uid, _| exists(uid));
    }

    /// How many executions are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_holding_the_version_this_replica_wrote_is_trusted() {
        assert!(trust_cached(Some("42"), Some("42"), true));
    }

    #[test]
    fn a_cache_behind_this_replicas_last_write_is_not_trusted() {
        assert!(!trust_cached(Some("42"), Some("41"), true));
        assert!(!trust_cached(Some("42"), Some("41"), false));
    }

    #[test]
    fn a_cache_changed_by_someone_else_after_this_replicas_write_is_not_trusted() {
        assert!(!trust_cached(Some("42"), Some("57"), true));
    }

    #[test]
    fn a_cached_copy_without_a_version_is_not_trusted_once_written() {
        assert!(!trust_cached(Some("42"), None, true));
    }

    #[test]
    fn a_new_execution_nobody_decided_on_yet_is_trusted() {
        assert!(trust_cached(None, Some("7"), false));
    }

    #[test]
    fn an_execution_with_a_status_this_replica_did_not_write_is_read_again() {
        // Written by an earlier leader, or by this process before it restarted.
        assert!(!trust_cached(None, Some("7"), true));
    }

    fn execution(uid: &str, version: &str, with_status: bool) -> WasmExecution {
        let mut execution: WasmExecution = serde_json::from_value(serde_json::json!({
            "apiVersion": wasmfn_api::API_VERSION,
            "kind": "WasmExecution",
            "metadata": {"name": "e", "namespace": "n", "uid": uid, "resourceVersion": version},
            "spec": {"functionRef": {"name": "f"}},
        }))
        .expect("a valid execution");
        if with_status {
            execution.status = Some(Default::default());
        }
        execution
    }

    #[test]
    fn last_writes_trust_the_written_version_and_forget_deleted_executions() {
        let writes = LastWrites::default();
        assert!(writes.trusts(&execution("a", "1", false)));
        writes.record("a", "2".into());
        assert!(!writes.trusts(&execution("a", "1", false)));
        assert!(writes.trusts(&execution("a", "2", true)));
        writes.record("b", "5".into());
        writes.retain(|uid| uid == "b");
        assert_eq!(writes.len(), 1);
        assert!(!writes.trusts(&execution("a", "2", true)));
    }
}
