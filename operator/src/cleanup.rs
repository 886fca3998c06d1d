//! `wasmfn-operator cleanup`: deletes the objects the operator made that nothing owns, so that
//! uninstalling the operator (the chart runs this in a `pre-delete` hook Job) leaves none of
//! them behind. Those are the `wasmfn-deny-egress` NetworkPolicies (one per namespace the
//! operator started pods in) and the artifact stores' ConfigMaps: records (`wasmfn-artifact-*`,
//! `wasmfn-oci-*`) and the part ConfigMaps of ConfigMap-store modules.
//!
//! Everything else is left alone on purpose: the users' WasmFunctions and WasmExecutions (and
//! the CRDs), and whatever the operator made *for* one of them, which carries an owner reference
//! and goes with its owner (compile Jobs and their source ConfigMaps, run pods, stdin
//! ConfigMaps). An object qualifies only when it carries the operator's `managed-by` label, has
//! the name and labels the operator gives such objects, and has no owner; a user's object with
//! a look-alike name but without the label is never touched. A function whose artifact was
//! removed here is compiled again when an operator next reconciles it.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use wasmfn_api::labels;
use wasmfn_operator::error::Result;
use wasmfn_operator::idempotent::delete_if_present;
use wasmfn_operator::network_policy;
use wasmfn_operator::store::record::PART_OF_LABEL;

/// The name prefixes of artifact records (and of their parts), one per store.
const RECORD_PREFIXES: [&str; 2] = ["wasmfn-artifact-", "wasmfn-oci-"];

/// What an object to delete is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// A namespace's `wasmfn-deny-egress` policy.
    NetworkPolicy,
    /// An artifact record or one of its part ConfigMaps.
    ConfigMap,
}

/// One object the cleanup deletes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Target {
    /// Its kind.
    pub(crate) kind: Kind,
    /// Its namespace.
    pub(crate) namespace: String,
    /// Its name.
    pub(crate) name: String,
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether `meta` is of an object the operator made and nothing owns.
fn made_by_the_operator_and_unowned(meta: &ObjectMeta) -> bool {
    label(meta, labels::MANAGED_BY) == Some(labels::MANAGED_BY_VALUE)
        && meta.owner_references.as_ref().is_none_or(Vec::is_empty)
}

/// Whether a NetworkPolicy is one the operator applied.
pub(crate) fn is_operators_policy(meta: &ObjectMeta) -> bool {
    made_by_the_operator_and_unowned(meta) && meta.name.as_deref() == Some(network_policy::NAME)
}

/// Whether a ConfigMap is an artifact record, or a part of one, that the operator stored.
pub(crate) fn is_operators_artifact(meta: &ObjectMeta) -> bool {
    if !made_by_the_operator_and_unowned(meta) {
        return false;
    }
    let name = meta.name.as_deref().unwrap_or_default();
    let record_name = RECORD_PREFIXES.iter().any(|p| name.starts_with(p));
    let record = label(meta, labels::ARTIFACT) == Some("true") && record_name;
    // A part is named after its record: `<record>-<n>`.
    let part = label(meta, PART_OF_LABEL).is_some_and(|record| {
        RECORD_PREFIXES.iter().any(|p| record.starts_with(p))
            && name
                .strip_prefix(record)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    record || part
}

/// The objects to delete among the listed policies and ConfigMaps, sorted. Pure.
pub(crate) fn plan(policies: &[ObjectMeta], config_maps: &[ObjectMeta]) -> Vec<Target> {
    let target = |kind, meta: &ObjectMeta| {
        Some(Target {
            kind,
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
        })
    };
    let mut targets: Vec<Target> = policies
        .iter()
        .filter(|meta| is_operators_policy(meta))
        .filter_map(|meta| target(Kind::NetworkPolicy, meta))
        .chain(
            config_maps
                .iter()
                .filter(|meta| is_operators_artifact(meta))
                .filter_map(|meta| target(Kind::ConfigMap, meta)),
        )
        .collect();
    targets.sort();
    targets
}

/// Lists the candidates cluster-wide, deletes the planned ones (all of them unless `dry_run`)
/// and prints one line per object and a summary on stdout.
pub(crate) async fn run(dry_run: bool) -> Result<()> {
    let client = Client::try_default().await?;
    let managed = ListParams::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let policies = Api::<NetworkPolicy>::all(client.clone())
        .list_metadata(&managed)
        .await?;
    let maps = Api::<ConfigMap>::all(client.clone())
        .list_metadata(&managed)
        .await?;
    let policies: Vec<ObjectMeta> = policies.items.into_iter().map(|o| o.metadata).collect();
    let maps: Vec<ObjectMeta> = maps.items.into_iter().map(|o| o.metadata).collect();
    let targets = plan(&policies, &maps);
    let verb = if dry_run { "would delete" } else { "deleted" };
    for target in &targets {
        if !dry_run {
            let params = DeleteParams::default();
            match target.kind {
                Kind::NetworkPolicy => {
                    let api = Api::<NetworkPolicy>::namespaced(client.clone(), &target.namespace);
                    delete_if_present(&api, &target.name, &params).await?;
                }
                Kind::ConfigMap => {
                    let api = Api::<ConfigMap>::namespaced(client.clone(), &target.namespace);
                    delete_if_present(&api, &target.name, &params).await?;
                }
            }
        }
        println!(
            "{verb} {:?} {}/{}",
            target.kind, target.namespace, target.name
        );
    }
    let count = |kind| targets.iter().filter(|t| t.kind == kind).count();
    println!(
        "cleanup: {verb} {} NetworkPolicies and {} artifact ConfigMaps; kept the CRDs, the \
         WasmFunctions and WasmExecutions and what they own",
        count(Kind::NetworkPolicy),
        count(Kind::ConfigMap)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use wasmfn_api::ArtifactStore;
    use wasmfn_operator::store::configmap::part_config_map;
    use wasmfn_operator::store::record::{record_labels, record_name};

    use super::*;

    fn meta(namespace: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    const DIGEST: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const KEY: &str = "sha256:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn owned(mut meta: ObjectMeta) -> ObjectMeta {
        meta.owner_references = Some(vec![OwnerReference {
            api_version: "wasmfn.dev/v1alpha1".into(),
            kind: "WasmExecution".into(),
            name: "run".into(),
            uid: "uid".into(),
            ..Default::default()
        }]);
        meta
    }

    #[test]
    fn the_policy_the_operator_applies_is_deleted_and_look_alikes_are_kept() {
        let ours = network_policy::deny_egress("team-a").metadata;
        assert!(is_operators_policy(&ours));
        // A user's policy of the same name, without the operator's label.
        assert!(!is_operators_policy(&meta(
            "team-a",
            network_policy::NAME,
            &[]
        )));
        // The chart's own policy is Helm's, and another name.
        assert!(!is_operators_policy(&meta(
            "wasmfn-system",
            "wasmfn-deny-workloads",
            &[(labels::MANAGED_BY, "Helm")]
        )));
        // Another name with the operator's label is not one it makes.
        assert!(!is_operators_policy(&meta(
            "team-a",
            "other",
            &[(labels::MANAGED_BY, labels::MANAGED_BY_VALUE)]
        )));
        assert!(!is_operators_policy(&owned(ours)));
    }

    #[test]
    fn artifact_records_of_both_stores_and_their_parts_are_deleted() {
        for store in [ArtifactStore::ConfigMap, ArtifactStore::Oci] {
            let name = record_name(store, DIGEST);
            let mut record = meta("team-a", &name, &[]);
            record.labels = Some(record_labels(store, DIGEST, KEY));
            assert!(is_operators_artifact(&record), "{name}");
        }
        let record = record_name(ArtifactStore::ConfigMap, DIGEST);
        let part = part_config_map(&format!("{record}-1"), &record, "part-1".into(), vec![1]);
        let mut part = part.metadata;
        part.namespace = Some("team-a".into());
        assert!(is_operators_artifact(&part));
    }

    #[test]
    fn configmaps_the_operator_made_for_a_user_object_or_a_user_made_are_kept() {
        let record = record_name(ArtifactStore::ConfigMap, DIGEST);
        // The user's own ConfigMap with an artifact-like name and no label.
        assert!(!is_operators_artifact(&meta("team-a", &record, &[])));
        // A user's ConfigMap claiming the artifact label but not the operator's managed-by.
        assert!(!is_operators_artifact(&meta(
            "team-a",
            &record,
            &[(labels::ARTIFACT, "true")]
        )));
        // A stdin ConfigMap of an execution: the operator's, but owned (it goes with its owner).
        let stdin = owned(meta(
            "team-a",
            "run-stdin",
            &[
                (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
                (labels::EXECUTION_UID, "uid"),
            ],
        ));
        assert!(!is_operators_artifact(&stdin));
        // An owned record-looking map is still not deleted: its owner decides.
        let mut owned_record = meta("team-a", &record, &[]);
        owned_record.labels = Some(record_labels(ArtifactStore::ConfigMap, DIGEST, KEY));
        assert!(!is_operators_artifact(&owned(owned_record)));
        // A part label that does not match the name is not trusted.
        let stray = meta(
            "team-a",
            "settings",
            &[
                (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
                (PART_OF_LABEL, &record),
            ],
        );
        assert!(!is_operators_artifact(&stray));
        let unrelated = meta(
            "team-a",
            "notes-1",
            &[
                (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
                (PART_OF_LABEL, "notes"),
            ],
        );
        assert!(!is_operators_artifact(&unrelated));
    }

    #[test]
    fn the_plan_lists_exactly_the_operators_objects_across_namespaces_sorted() {
        let policy_b = network_policy::deny_egress("team-b").metadata;
        let policy_a = network_policy::deny_egress("team-a").metadata;
        let users_policy = meta("team-a", "allow-dns", &[]);
        let record = record_name(ArtifactStore::ConfigMap, DIGEST);
        let mut record_map = meta("team-a", &record, &[]);
        record_map.labels = Some(record_labels(ArtifactStore::ConfigMap, DIGEST, KEY));
        let users_map = meta("team-a", "app-config", &[]);
        let targets = plan(
            &[policy_b, users_policy, policy_a],
            &[users_map, record_map],
        );
        let names: Vec<(Kind, &str, &str)> = targets
            .iter()
            .map(|t| (t.kind, t.namespace.as_str(), t.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (Kind::NetworkPolicy, "team-a", network_policy::NAME),
                (Kind::NetworkPolicy, "team-b", network_policy::NAME),
                (Kind::ConfigMap, "team-a", record.as_str()),
            ]
        );
    }
}
