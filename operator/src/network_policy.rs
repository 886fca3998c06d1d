//! The NetworkPolicy `wasmfn-deny-egress` that cuts the pods the operator starts (compile Jobs
//! and execution run pods, both labelled `app.kubernetes.io/managed-by=wasmfn-operator`) off
//! from the network: they run untrusted code, and the operator reads what they produce through
//! the apiserver, so they need no egress at all. Ingress is left alone.
//!
//! NetworkPolicies are namespaced and those pods run in the namespace of their function or
//! execution, so the operator makes sure the policy exists in a namespace before it starts the
//! first pod there ([`Guard::ensure`]). A namespace once seen with the policy is remembered for
//! [`RECHECK_AFTER`], so a burst of executions costs one API call, and a policy someone deleted
//! comes back on the next pod after that.
//!
//! The policy is not owned by anything (it serves every workload of its namespace); uninstalling
//! the chart removes it through `wasmfn-operator cleanup` (its pre-delete hook).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tracing::info;
use wasmfn_api::labels;

use crate::error::{Error, Result};
use crate::store::FIELD_MANAGER;

/// The policy's name in every namespace.
pub const NAME: &str = "wasmfn-deny-egress";
/// How long a namespace's policy is trusted to still be there before it is looked at again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(600);

/// The selector of every pod the operator starts (and of nothing else: the operator's own pods
/// carry Helm's `managed-by`).
fn workload_selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        )])),
        match_expressions: None,
    }
}

/// The policy for `namespace`: selects the operator's workloads, is of type Egress only and
/// allows no egress, so their outgoing traffic (DNS included) is denied where the network
/// plugin enforces NetworkPolicy.
pub fn deny_egress(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                labels::MANAGED_BY.to_owned(),
                labels::MANAGED_BY_VALUE.to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(workload_selector()),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: None,
            ingress: None,
        }),
    }
}

/// Whether an existing policy still does what [`deny_egress`] asks: same selector, Egress among
/// its types. Rules someone else added are theirs (server-side apply would keep them anyway).
pub fn is_in_force(existing: &NetworkPolicy) -> bool {
    let Some(spec) = existing.spec.as_ref() else {
        return false;
    };
    spec.pod_selector.as_ref() == Some(&workload_selector())
        && spec.policy_types.iter().flatten().any(|t| t == "Egress")
}

/// Namespaces whose policy was seen in force, and when.
#[derive(Debug, Default)]
pub struct Ensured {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Ensured {
    /// Whether `namespace`'s policy was seen in force less than [`RECHECK_AFTER`] before `now`.
    pub fn is_fresh(&self, namespace: &str, now: Instant) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(namespace)
            .is_some_and(|at| now.saturating_duration_since(*at) < RECHECK_AFTER)
    }

    /// Remembers that `namespace`'s policy is in force as of `now`.
    pub fn record(&self, namespace: &str, now: Instant) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_owned(), now);
    }
}

/// The context's guard: applies the policy in a namespace before the first pod there (a no-op
/// with `--run-pod-network-policy=false`), remembering the namespaces it has seen it in.
pub struct Guard {
    client: Client,
    enabled: bool,
    ensured: Ensured,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("enabled", &self.enabled)
            .field("ensured", &self.ensured)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard applying policies through `client`, when `enabled`.
    pub fn new(client: Client, enabled: bool) -> Self {
        Guard {
            client,
            enabled,
            ensured: Ensured::default(),
        }
    }

    /// Makes sure `namespace` has the deny-egress policy.
    pub async fn ensure(&self, namespace: &str) -> Result<()> {
        if !self.enabled || self.ensured.is_fresh(namespace, Instant::now()) {
            return Ok(());
        }
        apply(&self.client, namespace)
            .await
            .map_err(|source| Error::NetworkPolicy {
                namespace: namespace.to_owned(),
                source,
            })?;
        self.ensured.record(namespace, Instant::now());
        Ok(())
    }
}

async fn apply(client: &Client, namespace: &str) -> Result<(), kube::Error> {
    let api = Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
    if api.get_opt(NAME).await?.is_some_and(|p| is_in_force(&p)) {
        return Ok(());
    }
    api.patch(
        NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&deny_egress(namespace)),
    )
    .await?;
    info!(
        namespace,
        policy = NAME,
        "applied the deny-egress NetworkPolicy"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_denies_all_egress_of_the_operators_workloads_and_leaves_ingress_alone() {
        let policy = deny_egress("team-a");
        assert_eq!(policy.metadata.name.as_deref(), Some(NAME));
        assert_eq!(policy.metadata.namespace.as_deref(), Some("team-a"));
        assert!(policy.metadata.owner_references.is_none());
        let spec = policy.spec.as_ref().expect("spec");
        assert_eq!(
            spec.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "wasmfn-operator".to_owned()
            )]))
        );
        assert_eq!(spec.policy_types, Some(vec!["Egress".to_owned()]));
        assert!(spec.egress.is_none(), "no rule: nothing is allowed out");
        assert!(spec.ingress.is_none());
        // Server-side apply needs the type on the wire.
        let wire = serde_json::to_value(&policy).expect("serialises");
        assert_eq!(wire["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(wire["kind"], "NetworkPolicy");
        assert_eq!(wire["spec"]["policyTypes"], serde_json::json!(["Egress"]));
    }

    #[test]
    fn the_policy_selects_the_pods_the_operator_starts_and_not_the_operator() {
        use crate::execution::{placement::Placement, run_pod};
        use crate::function::{compile_job, source::SourceFiles};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let wanted = workload_selector().match_labels.expect("labels");
        let selects = |labels: Option<&BTreeMap<String, String>>| {
            let labels = labels.cloned().unwrap_or_default();
            wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        let owner = OwnerReference::default();
        let settings = run_pod::PodSettings {
            runner_image: "runner".into(),
            wasm_pod_image: "wasm-pod".into(),
            memory_overhead_bytes: 1 << 20,
            deadline_grace_seconds: 1,
            cpu_limit: None,
            image_pull_secrets: Vec::new(),
        };
        let placement = Placement::Container {
            reason: String::new(),
        };
        let pod = run_pod::run_pod(&run_pod::RunSpec {
            execution: "hello",
            uid: "uid",
            owner: owner.clone(),
            attempt: 1,
            placement: &placement,
            node: Some("a"),
            module: run_pod::ModuleMount::ConfigMaps(vec!["art".into()]),
            contract: run_pod::RunContract {
                entrypoint: None,
                invoke_args: &[],
                args: &[],
                env: &[],
                timeout_ms: 1000,
                memory_bytes: 1 << 20,
                max_output_bytes: 1,
                traceparent: None,
            },
            stdin_config_map: None,
            settings: &settings,
        });
        assert!(selects(pod.metadata.labels.as_ref()), "run pods");
        let files = SourceFiles::from([("main.rs".into(), b"fn main(){}".to_vec())]);
        let key = format!("sha256:{}", "0".repeat(64));
        let job = compile_job::compile_job(&compile_job::CompileJobInputs {
            key: &key,
            language: wasmfn_api::Language::Rust,
            build: &wasmfn_api::BuildOptions::default(),
            files: &files,
            builder_image: "builder",
            deadline_seconds: 60,
            memory_bytes: 1 << 30,
            owner,
            isolate_network: true,
            image_pull_secrets: &[],
        });
        let template_labels = job
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref());
        assert!(selects(template_labels), "compile Job pods");
        // The chart labels the operator's own pods as Helm's.
        let helm = BTreeMap::from([(labels::MANAGED_BY.to_owned(), "Helm".to_owned())]);
        assert!(!selects(Some(&helm)));
    }

    #[test]
    fn an_existing_policy_counts_only_while_it_still_denies_egress_to_the_same_pods() {
        assert!(is_in_force(&deny_egress("a")));
        let mut with_ingress = deny_egress("a");
        if let Some(spec) = with_ingress.spec.as_mut() {
            spec.policy_types = Some(vec!["Ingress".into(), "Egress".into()]);
        }
        assert!(is_in_force(&with_ingress));
        let mut ingress_only = deny_egress("a");
        if let Some(spec) = ingress_only.spec.as_mut() {
            spec.policy_types = Some(vec!["Ingress".into()]);
        }
        assert!(!is_in_force(&ingress_only));
        let mut other_pods = deny_egress("a");
        if let Some(spec) = other_pods.spec.as_mut() {
            spec.pod_selector = Some(LabelSelector::default());
        }
        assert!(!is_in_force(&other_pods));
        assert!(!is_in_force(&NetworkPolicy::default()));
    }

    #[test]
    fn a_namespace_is_trusted_for_a_while_then_looked_at_again() {
        let ensured = Ensured::default();
        let start = Instant::now();
        assert!(!ensured.is_fresh("team-a", start));
        ensured.record("team-a", start);
        assert!(ensured.is_fresh("team-a", start));
        assert!(ensured.is_fresh("team-a", start + RECHECK_AFTER - Duration::from_secs(1)));
        assert!(!ensured.is_fresh("team-a", start + RECHECK_AFTER));
        assert!(!ensured.is_fresh("team-b", start));
    }
}
