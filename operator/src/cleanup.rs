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
//!
//! The sweep comes after the operator has stopped: an operator still running could store an
//! artifact or apply a policy between the sweep and the deletion of its Deployment, and that
//! object would outlive the uninstall. So, given the operator's Deployment, `cleanup` first
//! scales it to zero and waits (bounded) until its pods are gone. If they are not gone in time,
//! it sweeps anyway and says so: an uninstall is not blocked by a slow pod.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use wasmfn_api::labels;
use wasmfn_operator::error::Result;
use wasmfn_operator::idempotent::delete_if_present;
use wasmfn_operator::network_policy;
use wasmfn_operator::operator::own_namespace;
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

/// `wasmfn-operator cleanup`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CleanupArgs {
    /// Only print what would be deleted (the operator is not stopped either).
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// The operator's Deployment: scaled to zero, and its pods waited for, before the sweep.
    /// Without it the sweep runs beside whatever operator is running.
    #[arg(long)]
    pub(crate) operator_deployment: Option<String>,
    /// Namespace of `--operator-deployment` (default: this pod's namespace, else `default`).
    #[arg(long)]
    pub(crate) operator_namespace: Option<String>,
    /// Longest wait for the operator's pods to go; after it the sweep runs anyway, with a
    /// warning.
    #[arg(long, default_value_t = 60)]
    pub(crate) stop_timeout_seconds: u64,
}

/// What to do after a look at the operator's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopVerdict {
    /// No pod is left: sweep.
    Stopped,
    /// Pods are still there (terminating, most likely) and there is time: look again.
    Wait,
    /// Pods are still there at the deadline: sweep anyway, and warn.
    GiveUp,
}

/// The verdict after `waited` of at most `timeout`, with `pods_left` of the operator's pods
/// still there. Pure.
pub(crate) fn stop_verdict(pods_left: usize, waited: Duration, timeout: Duration) -> StopVerdict {
    if pods_left == 0 {
        StopVerdict::Stopped
    } else if waited < timeout {
        StopVerdict::Wait
    } else {
        StopVerdict::GiveUp
    }
}

/// How often the operator's pods are counted while it stops.
const STOP_POLL: Duration = Duration::from_secs(1);

/// Scales the operator's Deployment to zero and waits for its pods to go. Never fails the
/// cleanup: an error or a slow pod is a warning, and the sweep runs regardless.
async fn stop_operator(client: &Client, namespace: &str, name: &str, timeout: Duration) {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let scaled = deployments
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await;
    let selector = match scaled {
        Ok(scale) => scale.status.and_then(|status| status.selector),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            println!("cleanup: no Deployment {namespace}/{name}; no operator to stop");
            return;
        }
        Err(error) => {
            eprintln!(
                "cleanup: warning: could not scale the operator {namespace}/{name} to zero \
                 ({error}); sweeping while it may still run"
            );
            return;
        }
    };
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        eprintln!(
            "cleanup: warning: the operator {namespace}/{name} was scaled to zero but names no \
             pod selector; sweeping without waiting for its pods"
        );
        return;
    };
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        let left = match pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => list.items.len(),
            Err(error) => {
                eprintln!(
                    "cleanup: warning: could not list the operator's pods ({error}); sweeping \
                     without waiting for them"
                );
                return;
            }
        };
        match stop_verdict(left, started.elapsed(), timeout) {
            StopVerdict::Stopped => {
                println!(
                    "cleanup: stopped the operator {namespace}/{name} (scaled to zero, its pods \
                     gone after {:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            StopVerdict::Wait => tokio::time::sleep(STOP_POLL).await,
            StopVerdict::GiveUp => {
                eprintln!(
                    "cleanup: warning: {left} pod(s) of the operator {namespace}/{name} still \
                     there after {} s; sweeping anyway (an object such a pod makes from now on \
                     may outlive the uninstall)",
                    timeout.as_secs()
                );
                return;
            }
        }
    }
}

/// Stops the operator when asked (unless `dry_run`), then lists the candidates cluster-wide,
/// deletes the planned ones (all of them unless `dry_run`) and prints one line per object and
/// a summary on stdout.
pub(crate) async fn run(args: CleanupArgs) -> Result<()> {
    let dry_run = args.dry_run;
    let client = Client::try_default().await?;
    if let Some(name) = &args.operator_deployment {
        let namespace = args
            .operator_namespace
            .clone()
            .unwrap_or_else(own_namespace);
        if dry_run {
            println!("cleanup: would stop the operator {namespace}/{name} first");
        } else {
            let timeout = Duration::from_secs(args.stop_timeout_seconds);
            stop_operator(&client, &namespace, name, timeout).await;
        }
    }
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
    fn the_sweep_waits_while_operator_pods_remain_and_gives_up_only_at_the_deadline() {
        let timeout = Duration::from_secs(60);
        assert_eq!(
            stop_verdict(0, Duration::ZERO, timeout),
            StopVerdict::Stopped
        );
        assert_eq!(
            stop_verdict(0, Duration::from_secs(90), timeout),
            StopVerdict::Stopped,
            "no pod left is stopped however long it took"
        );
        assert_eq!(stop_verdict(2, Duration::ZERO, timeout), StopVerdict::Wait);
        assert_eq!(
            stop_verdict(1, Duration::from_millis(59_999), timeout),
            StopVerdict::Wait
        );
        assert_eq!(stop_verdict(1, timeout, timeout), StopVerdict::GiveUp);
        assert_eq!(
            stop_verdict(1, Duration::ZERO, Duration::ZERO),
            StopVerdict::GiveUp,
            "a zero timeout never waits"
        );
    }

    #[test]
    fn the_cleanup_flags_name_the_deployment_and_default_to_a_sixty_second_wait() {
        use clap::Parser as _;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: CleanupArgs,
        }
        let parsed = Cli::parse_from([
            "cleanup",
            "--operator-deployment",
            "wasmfn-operator",
            "--operator-namespace",
            "wasmfn-system",
        ])
        .args;
        assert_eq!(
            parsed.operator_deployment.as_deref(),
            Some("wasmfn-operator")
        );
        assert_eq!(parsed.operator_namespace.as_deref(), Some("wasmfn-system"));
        assert_eq!(parsed.stop_timeout_seconds, 60);
        assert!(!parsed.dry_run);
        let bare = Cli::parse_from(["cleanup"]).args;
        assert_eq!(bare.operator_deployment, None, "stopping is opt-in");
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
