//! Garbage collection of artifacts no function uses. A sweep marks an unreferenced record with
//! the time it was first seen unreferenced, unmarks records that are referenced again, and
//! deletes records (with their part ConfigMaps) marked longer ago than the cache TTL. Deciding
//! is pure ([`plan`]); [`sweep`] lists, decides and applies.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tracing::info;
use wasmfn_api::{labels, ArtifactStore, WasmFunction};

use super::record::{record_name, PART_OF_LABEL};
use crate::error::Result;
use crate::idempotent::delete_if_present;

/// A record as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    /// Namespace.
    pub namespace: String,
    /// Record name.
    pub name: String,
    /// When it was first seen unreferenced.
    pub unreferenced_since: Option<Timestamp>,
}

/// What to do with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// Note that nothing refers to it since now.
    Mark(RecordView),
    /// Something refers to it again.
    Unmark(RecordView),
    /// Unreferenced for longer than the TTL.
    Delete(RecordView),
}

/// Decides the actions for `records` given the `(namespace, record name)` pairs functions use.
pub fn plan(
    records: &[RecordView],
    referenced: &HashSet<(String, String)>,
    now: Timestamp,
    ttl: Duration,
) -> Vec<GcAction> {
    records
        .iter()
        .filter_map(|record| {
            let used = referenced.contains(&(record.namespace.clone(), record.name.clone()));
            match (used, record.unreferenced_since) {
                (true, Some(_)) => Some(GcAction::Unmark(record.clone())),
                (true, None) => None,
                (false, None) => Some(GcAction::Mark(record.clone())),
                (false, Some(since)) => {
                    let age = now.duration_since(since);
                    let expired = age.as_secs_f64() >= ttl.as_secs_f64();
                    expired.then(|| GcAction::Delete(record.clone()))
                }
            }
        })
        .collect()
}

/// The records functions refer to: their own, and for an OCI-stored module also its
/// ConfigMap copy (made when one of its executions ran in a container pod).
pub fn references(functions: &[WasmFunction]) -> HashSet<(String, String)> {
    functions
        .iter()
        .filter_map(|function| {
            let artifact = function.status.as_ref()?.artifact.as_ref()?;
            let namespace = function.namespace()?;
            let mut names = vec![record_name(ArtifactStore::ConfigMap, &artifact.digest)];
            if artifact.store == "oci" {
                names.push(record_name(ArtifactStore::Oci, &artifact.digest));
            }
            Some(names.into_iter().map(move |name| (namespace.clone(), name)))
        })
        .flatten()
        .collect()
}

/// One sweep over the cluster; returns how many records it deleted.
pub async fn sweep(client: &Client, ttl: Duration) -> Result<usize> {
    let functions = Api::<WasmFunction>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let referenced = references(&functions.items);
    let selector = format!("{}=true", labels::ARTIFACT);
    let maps = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await?;
    let records: Vec<RecordView> = maps
        .items
        .iter()
        .filter_map(|map| {
            Some(RecordView {
                namespace: map.namespace()?,
                name: map.name_any(),
                unreferenced_since: map
                    .annotations()
                    .get(labels::UNREFERENCED_SINCE)
                    .and_then(|t| t.parse().ok()),
            })
        })
        .collect();
    let now = Timestamp::now();
    let mut deleted = 0;
    for action in plan(&records, &referenced, now, ttl) {
        match action {
            GcAction::Mark(record) => annotate(client, &record, Some(now.to_string())).await?,
            GcAction::Unmark(record) => annotate(client, &record, None).await?,
            GcAction::Delete(record) => {
                let api = Api::<ConfigMap>::namespaced(client.clone(), &record.namespace);
                let parts =
                    ListParams::default().labels(&format!("{PART_OF_LABEL}={}", record.name));
                api.delete_collection(&DeleteParams::default(), &parts)
                    .await?;
                delete_if_present(&api, &record.name, &DeleteParams::default()).await?;
                info!(namespace = %record.namespace, record = %record.name, "deleted an artifact no function used for the cache TTL");
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

async fn annotate(client: &Client, record: &RecordView, value: Option<String>) -> Result<()> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), &record.namespace);
    let patch =
        serde_json::json!({"metadata": {"annotations": {labels::UNREFERENCED_SINCE: value}}});
    match api
        .patch(&record.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, since: Option<i64>) -> RecordView {
        RecordView {
            namespace: "ns".into(),
            name: name.into(),
            unreferenced_since: since.map(|s| Timestamp::from_second(s).expect("time")),
        }
    }

    #[test]
    fn records_are_marked_unmarked_and_deleted_after_the_ttl() {
        let records = [
            view("used", None),
            view("used-again", Some(100)),
            view("new-orphan", None),
            view("young-orphan", Some(990)),
            view("old-orphan", Some(900)),
        ];
        let referenced: HashSet<_> = [
            ("ns".to_owned(), "used".to_owned()),
            ("ns".to_owned(), "used-again".to_owned()),
        ]
        .into();
        let now = Timestamp::from_second(1000).expect("time");
        let actions = plan(&records, &referenced, now, Duration::from_secs(60));
        assert_eq!(
            actions,
            [
                GcAction::Unmark(records[1].clone()),
                GcAction::Mark(records[2].clone()),
                GcAction::Delete(records[4].clone()),
            ]
        );
    }

    #[test]
    fn the_same_name_in_another_namespace_is_not_a_reference() {
        let referenced: HashSet<_> = [("other".to_owned(), "a".to_owned())].into();
        let now = Timestamp::from_second(1000).expect("time");
        let actions = plan(
            &[view("a", Some(0))],
            &referenced,
            now,
            Duration::from_secs(60),
        );
        assert_eq!(actions, [GcAction::Delete(view("a", Some(0)))]);
    }
}
