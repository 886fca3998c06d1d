//! The pod that runs one attempt of an execution, and the ConfigMap carrying its stdin. Pure.
//!
//! Both kinds of pod run the same stored module with the same inputs and limits:
//!
//! - a **Wasm pod** names the WasmEdge RuntimeClass; containerd hands it to the project's shim,
//!   which reads its settings from `WASMFN_*` variables (the guest's environment travels whole
//!   in `WASMFN_GUEST_ENV`, so nothing the kubelet injects reaches the guest);
//! - a **container pod** runs the runner image's `wasmfn exec` with the same settings as flags.
//!
//! The module is the function's artifact: the ConfigMap store's parts mounted as one projected
//! volume at `/artifact`, or, for the OCI store, the image itself (Wasm pod only; a container
//! pod of an OCI-stored function reads a ConfigMap copy the reconciler makes). Stdin is a file
//! from the execution's input ConfigMap. Every run pod is unprivileged, has no service-account
//! token and a read-only root filesystem; its memory limit is the guest's linear-memory cap plus
//! the runtime's overhead, and `activeDeadlineSeconds` is the timeout plus a grace period.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapProjection, Container, EmptyDirVolumeSource, EnvVar,
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    ProjectedVolumeSource, Toleration, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};
use wasmfn_api::{labels, Runtime};
use wasmfn_result::run_settings::{Invoke, RunSettings};

use super::placement;
use crate::pod_security::{self, Compute};

/// The run container's name.
pub const CONTAINER: &str = "run";
/// Where the artifact is mounted.
const ARTIFACT_DIR: &str = "/artifact";
/// Where a script is staged (an emptyDir).
const SCRATCH_DIR: &str = "/tmp";
/// The staging emptyDir's size limit (a script is at most a few MiB).
const SCRATCH_LIMIT: &str = "64Mi";
/// Where the input ConfigMap is mounted.
const INPUT_DIR: &str = "/inputs";
/// The input ConfigMap's key holding stdin.
pub const STDIN_KEY: &str = "stdin";

/// The label with the execution's uid (the exact selector the reconciler lists by).
pub const EXECUTION_UID_LABEL: &str = labels::EXECUTION_UID;
/// The label with the execution's name (shortened with a hash beyond 63 characters).
pub const EXECUTION_LABEL: &str = labels::EXECUTION;
/// The label with the attempt number.
pub const ATTEMPT_LABEL: &str = labels::ATTEMPT;
/// Annotation with the runtime the pod was placed for (`WasmEdge` or `Container`).
pub const RUNTIME_ANNOTATION: &str = labels::RUNTIME;
/// The label naming the node a run pod was admitted to (and pinned on).
pub const NODE_LABEL: &str = labels::RUN_NODE;
/// The taints the node controller puts on a node that stopped answering.
const NODE_LOSS_TAINTS: [&str; 2] = [
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/not-ready",
];
/// How long a run pod stays on a node that stopped answering before Kubernetes evicts it (its
/// attempt is then lost as `NodeLost` and retried elsewhere). Kubernetes' default, five minutes,
/// is far longer than a function runs.
pub const NODE_LOSS_TOLERATION_SECONDS: i64 = 30;

/// How the module reaches the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleMount {
    /// These ConfigMaps (manifest and parts) mounted together at `/artifact`.
    ConfigMaps(Vec<String>),
    /// The image itself (an OCI Wasm artifact; Wasm pods only).
    Image(String),
    /// A Python or JavaScript script's ConfigMaps, mounted like a module's. The runner stages
    /// the script in `/tmp` (an emptyDir of the pod) and runs it under the interpreter its
    /// image ships.
    Script(Vec<String>),
}

impl ModuleMount {
    /// The ConfigMaps mounted at `/artifact`, if the artifact comes from ConfigMaps.
    fn config_maps(&self) -> Option<&[String]> {
        match self {
            ModuleMount::ConfigMaps(maps) | ModuleMount::Script(maps) => Some(maps),
            ModuleMount::Image(_) => None,
        }
    }
}

/// Operator-wide settings of run pods.
#[derive(Clone, Debug)]
pub struct PodSettings {
    /// Image of container pods (`wasmfn exec`).
    pub runner_image: String,
    /// Image a Wasm pod names when the module comes from a mounted artifact.
    pub wasm_pod_image: String,
    /// Memory added to the guest's cap for the pod's limit (the runtime itself).
    pub memory_overhead_bytes: u64,
    /// Seconds added to the timeout for `activeDeadlineSeconds` (pod start, result writing).
    pub deadline_grace_seconds: u64,
    /// CPU a run pod may use (a looping guest takes at most this from its neighbours).
    pub cpu_limit: Option<Quantity>,
    /// Secrets the kubelet pulls the pod's image with (a module image in a private registry).
    pub image_pull_secrets: Vec<String>,
}

/// Everything one attempt's pod is built from.
#[derive(Clone, Debug)]
pub struct RunSpec<'a> {
    /// The execution's name, uid and the owner reference pointing at it.
    pub execution: &'a str,
    /// The execution's uid.
    pub uid: &'a str,
    /// Owner reference to the execution.
    pub owner: OwnerReference,
    /// 1 for the first attempt.
    pub attempt: i32,
    /// Where to run.
    pub placement: &'a placement::Placement,
    /// The node admission chose: the pod is pinned there and labelled with it.
    pub node: Option<&'a str>,
    /// The module.
    pub module: ModuleMount,
    /// What the run takes, on every path.
    pub contract: RunContract<'a>,
    /// Name of the input ConfigMap holding stdin, when there is stdin.
    pub stdin_config_map: Option<&'a str>,
    /// Operator-wide settings.
    pub settings: &'a PodSettings,
}

/// What one attempt runs with, whichever path runs it (agent, Wasm pod, container pod).
#[derive(Clone, Debug)]
pub struct RunContract<'a> {
    /// The export to call, when not `_start`.
    pub entrypoint: Option<&'a str>,
    /// Arguments for that export.
    pub invoke_args: &'a [serde_json::Number],
    /// Guest argv after argv[0].
    pub args: &'a [String],
    /// Guest environment, in order.
    pub env: &'a [(String, String)],
    /// Wall-clock limit of the guest.
    pub timeout_ms: u64,
    /// Linear-memory cap of the guest.
    pub memory_bytes: u64,
    /// Bytes of each stream the result keeps.
    pub max_output_bytes: u64,
    /// W3C traceparent of the attempt's span, when the trace is exported: the runner then puts
    /// its spans in the result document.
    pub traceparent: Option<&'a str>,
}

impl RunContract<'_> {
    /// The run contract's settings; `stdin_file` is where a pod's runner finds stdin.
    pub fn settings(&self, stdin_file: Option<String>) -> RunSettings {
        RunSettings {
            timeout_ms: Some(self.timeout_ms),
            memory_bytes: Some(self.memory_bytes),
            max_output_bytes: Some(self.max_output_bytes),
            invoke: self.entrypoint.map(|export| Invoke {
                export: export.to_owned(),
                args: self
                    .invoke_args
                    .iter()
                    .cloned()
                    .map(serde_json::Value::Number)
                    .collect(),
            }),
            stdin_file,
            env: self.env.to_vec(),
            args: self.args.to_vec(),
            traceparent: self.traceparent.map(str::to_owned),
        }
    }
}

/// A Kubernetes name of at most `max` characters: `text` when it fits, else its start plus a
/// hash of the whole (so distinct long names stay distinct).
fn bounded_name(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..5]);
    let keep = max - hash.len() - 1;
    let start = text[..keep].trim_end_matches(['-', '.']);
    format!("{start}-{hash}")
}

/// The pod's name for `attempt` of execution `name`: `<name>-run-<attempt>`, at most 63
/// characters (a valid hostname).
pub fn pod_name(name: &str, attempt: i32) -> String {
    let suffix = format!("-run-{attempt}");
    format!("{}{suffix}", bounded_name(name, 63 - suffix.len()))
}

/// The input ConfigMap's name.
pub fn input_config_map_name(name: &str) -> String {
    format!("{}-input", bounded_name(name, 253 - "-input".len()))
}

/// The execution label's value (label values are at most 63 characters).
pub fn execution_label(name: &str) -> String {
    bounded_name(name, 63)
}

/// The input ConfigMap: stdin, owned by the execution.
pub fn input_config_map(name: &str, owner: OwnerReference, stdin: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(input_config_map_name(name)),
            labels: Some(BTreeMap::from([
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                ),
                (EXECUTION_LABEL.to_owned(), execution_label(name)),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(STDIN_KEY.to_owned(), stdin.to_owned())])),
        ..Default::default()
    }
}

fn env_var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The run contract for this attempt, with stdin where the pod mounts it.
fn run_settings(spec: &RunSpec<'_>) -> RunSettings {
    spec.contract.settings(
        spec.stdin_config_map
            .map(|_| format!("{INPUT_DIR}/{STDIN_KEY}")),
    )
}

/// The runner's command line (`wasmfn exec …`) for a container pod.
fn runner_command(spec: &RunSpec<'_>) -> Vec<String> {
    std::iter::once("wasmfn".to_owned())
        .chain(run_settings(spec).to_exec_args(ARTIFACT_DIR))
        .collect()
}

/// The shim's settings for a Wasm pod.
fn shim_env(spec: &RunSpec<'_>) -> Vec<EnvVar> {
    run_settings(spec)
        .to_shim_env()
        .into_iter()
        .map(|(name, value)| env_var(&name, value))
        .collect()
}

/// The pod for one attempt.
pub fn run_pod(spec: &RunSpec<'_>) -> Pod {
    let settings = spec.settings;
    let wasm = match spec.placement {
        placement::Placement::Wasm {
            runtime_class,
            tolerations,
            nodes,
            ..
        } => Some((runtime_class, tolerations, nodes)),
        _ => None,
    };
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    if let Some(maps) = spec.module.config_maps() {
        mounts.push(VolumeMount {
            name: "artifact".to_owned(),
            mount_path: ARTIFACT_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "artifact".to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(
                    maps.iter()
                        .map(|name| VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: name.clone(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let ModuleMount::Script(_) = &spec.module {
        mounts.push(VolumeMount {
            name: "scratch".to_owned(),
            mount_path: SCRATCH_DIR.to_owned(),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "scratch".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(SCRATCH_LIMIT.to_owned())),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(name) = spec.stdin_config_map {
        mounts.push(VolumeMount {
            name: "inputs".to_owned(),
            mount_path: INPUT_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "inputs".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let (image, command, env) = match (wasm.is_some(), &spec.module) {
        (true, ModuleMount::Image(reference)) => {
            // The shim takes the module from the image's Wasm layer; argv[0] only names it.
            let mut command = vec!["function.wasm".to_owned()];
            command.extend(spec.contract.args.iter().cloned());
            (reference.clone(), command, shim_env(spec))
        }
        (true, ModuleMount::ConfigMaps(_) | ModuleMount::Script(_)) => {
            let mut command = vec![ARTIFACT_DIR.to_owned()];
            command.extend(spec.contract.args.iter().cloned());
            (settings.wasm_pod_image.clone(), command, shim_env(spec))
        }
        (false, _) => (
            settings.runner_image.clone(),
            runner_command(spec),
            Vec::new(),
        ),
    };
    let limit = Quantity(
        spec.contract
            .memory_bytes
            .saturating_add(settings.memory_overhead_bytes)
            .to_string(),
    );
    let request = Quantity(settings.memory_overhead_bytes.to_string());
    let deadline = spec.contract.timeout_ms.div_ceil(1000) + settings.deadline_grace_seconds;
    let runtime = if wasm.is_some() {
        Runtime::WasmEdge
    } else {
        Runtime::Container
    };
    // Pinned to the admitted node by its name, else (a Wasm pod without admission) to the
    // eligible nodes.
    let pinned = match (spec.node, wasm) {
        (Some(node), _) => Some(NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![node.to_owned()]),
            }]),
            ..Default::default()
        }),
        (None, Some((_, _, nodes))) => Some(NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "kubernetes.io/hostname".to_owned(),
                operator: "In".to_owned(),
                values: Some(nodes.clone()),
            }]),
            ..Default::default()
        }),
        (None, None) => None,
    };
    let affinity = pinned.map(|term| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![term],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let placed = wasm.map(|(_, tolerations, _)| {
        tolerations.iter().map(|t| Toleration {
            key: (!t.key.is_empty()).then(|| t.key.clone()),
            operator: (!t.operator.is_empty()).then(|| t.operator.clone()),
            value: (!t.value.is_empty()).then(|| t.value.clone()),
            effect: (!t.effect.is_empty()).then(|| t.effect.clone()),
            toleration_seconds: None,
        })
    });
    let node_loss = NODE_LOSS_TAINTS.iter().map(|key| Toleration {
        key: Some((*key).to_owned()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(NODE_LOSS_TOLERATION_SECONDS),
        value: None,
    });
    let tolerations = Some(placed.into_iter().flatten().chain(node_loss).collect());
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(spec.execution, spec.attempt)),
            labels: Some(
                BTreeMap::from([
                    (
                        labels::MANAGED_BY.to_owned(),
                        labels::MANAGED_BY_VALUE.to_owned(),
                    ),
                    (EXECUTION_LABEL.to_owned(), execution_label(spec.execution)),
                    (EXECUTION_UID_LABEL.to_owned(), spec.uid.to_owned()),
                    (ATTEMPT_LABEL.to_owned(), spec.attempt.to_string()),
                ])
                .into_iter()
                .chain(
                    spec.node
                        .map(|node| (NODE_LABEL.to_owned(), node.to_owned())),
                )
                .collect(),
            ),
            annotations: Some(BTreeMap::from([(
                RUNTIME_ANNOTATION.to_owned(),
                runtime.as_str().to_owned(),
            )])),
            owner_references: Some(vec![spec.owner.clone()]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            runtime_class_name: wasm.map(|(class, _, _)| class.clone()),
            affinity,
            tolerations,
            restart_policy: Some("Never".to_owned()),
            active_deadline_seconds: Some(i64::try_from(deadline).unwrap_or(i64::MAX)),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            image_pull_secrets: pod_security::pull_secrets(&spec.settings.image_pull_secrets),
            termination_grace_period_seconds: Some(2),
            security_context: Some(pod_security::non_root_pod()),
            containers: vec![Container {
                name: CONTAINER.to_owned(),
                image: Some(image),
                command: Some(command),
                env: (!env.is_empty()).then_some(env),
                resources: Some(pod_security::resource_requirements(Compute {
                    // Small, so a burst queues on the kubelet rather than the scheduler.
                    cpu_request: Quantity("10m".to_owned()),
                    cpu_limit: settings.cpu_limit.clone(),
                    memory_request: request,
                    memory_limit: limit,
                })),
                security_context: Some(pod_security::restricted_container()),
                volume_mounts: (!mounts.is_empty()).then_some(mounts),
                termination_message_policy: Some("File".to_owned()),
                ..Default::default()
            }],
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::placement::{Placement, Toleration as PlacementToleration};
    use kube::ResourceExt as _;

    fn settings() -> PodSettings {
        PodSettings {
            runner_image: "wasmfn.local/runner:dev".into(),
            wasm_pod_image: "wasmfn.local/wasm-pod:dev".into(),
            memory_overhead_bytes: 64 << 20,
            deadline_grace_seconds: 30,
            cpu_limit: Some(Quantity("1".into())),
            image_pull_secrets: Vec::new(),
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "wasmfn.dev/v1alpha1".into(),
            kind: "WasmExecution".into(),
            name: "hello".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn wasm_placement() -> Placement {
        Placement::Wasm {
            runtime_class: "wasmfn".into(),
            tolerations: vec![PlacementToleration {
                key: "wasm".into(),
                operator: "Exists".into(),
                ..Default::default()
            }],
            nodes: vec!["a".into()],
            reason: String::new(),
        }
    }

    fn container_placement() -> Placement {
        Placement::Container {
            reason: String::new(),
        }
    }

    struct Fixture {
        args: Vec<String>,
        env: Vec<(String, String)>,
        invoke: Vec<serde_json::Number>,
        settings: PodSettings,
    }

    fn fixture() -> Fixture {
        Fixture {
            args: vec!["one".into(), "--two".into()],
            env: vec![("B".into(), "2".into()), ("A".into(), "1".into())],
            invoke: vec![3.into(), 4.into()],
            settings: settings(),
        }
    }

    fn spec<'a>(f: &'a Fixture, placement: &'a Placement, module: ModuleMount) -> RunSpec<'a> {
        RunSpec {
            execution: "hello",
            uid: "uid-1",
            owner: owner(),
            attempt: 2,
            placement,
            node: None,
            module,
            contract: RunContract {
                entrypoint: None,
                invoke_args: &f.invoke,
                args: &f.args,
                env: &f.env,
                timeout_ms: 1500,
                memory_bytes: 32 << 20,
                max_output_bytes: 4096,
                traceparent: None,
            },
            stdin_config_map: Some("hello-input"),
            settings: &f.settings,
        }
    }

    fn maps() -> ModuleMount {
        ModuleMount::ConfigMaps(vec!["art".into(), "art-1".into()])
    }

    fn container(pod: &Pod) -> &Container {
        &pod.spec.as_ref().expect("valid").containers[0]
    }

    fn env_of(pod: &Pod) -> BTreeMap<String, String> {
        container(pod)
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn names_are_bounded_distinct_and_deterministic() {
        assert_eq!(pod_name("hello", 1), "hello-run-1");
        let long = "x".repeat(80);
        let other = format!("{}y", "x".repeat(79));
        let a = pod_name(&long, 1);
        assert!(a.len() <= 63, "{a}");
        assert_ne!(a, pod_name(&other, 1));
        assert_eq!(a, pod_name(&long, 1));
        assert!(a.ends_with("-run-1"));
        assert!(execution_label(&long).len() <= 63);
        assert_eq!(execution_label("hello"), "hello");
        assert_eq!(input_config_map_name("hello"), "hello-input");
        assert!(input_config_map_name(&"z".repeat(253)).len() <= 253);
    }

    #[test]
    fn a_wasm_pod_names_the_runtime_class_pins_the_nodes_and_carries_shim_settings() {
        let f = fixture();
        let placement = wasm_placement();
        let pod = run_pod(&spec(&f, &placement, maps()));
        let pod_spec = pod.spec.as_ref().expect("valid");
        assert_eq!(pod_spec.runtime_class_name.as_deref(), Some("wasmfn"));
        let terms = &pod_spec
            .affinity
            .as_ref()
            .expect("valid")
            .node_affinity
            .as_ref()
            .expect("valid")
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("valid")
            .node_selector_terms;
        let requirement = &terms[0].match_expressions.as_ref().expect("valid")[0];
        assert_eq!(requirement.values, Some(vec!["a".to_string()]));
        let tolerations = pod_spec.tolerations.as_ref().expect("valid");
        assert_eq!(
            tolerations.len(),
            3,
            "the placement's and the node-loss ones"
        );
        assert_eq!(tolerations[0].key.as_deref(), Some("wasm"));
        let c = container(&pod);
        assert_eq!(c.image.as_deref(), Some("wasmfn.local/wasm-pod:dev"));
        assert_eq!(
            c.command,
            Some(vec!["/artifact".into(), "one".into(), "--two".into()])
        );
        let env = env_of(&pod);
        assert_eq!(env["WASMFN_TIMEOUT_MS"], "1500");
        assert_eq!(env["WASMFN_MEMORY_BYTES"], (32u64 << 20).to_string());
        assert_eq!(
            env["WASMFN_MAX_OUTPUT_BYTES"], "4096",
            "maxOutputBytes reaches the shim"
        );
        assert_eq!(env["WASMFN_GUEST_ENV"], r#"["B=2","A=1"]"#);
        assert_eq!(env["WASMFN_STDIN_FILE"], "/inputs/stdin");
        assert!(!env.contains_key("WASMFN_INVOKE"));
        assert_eq!(
            pod.metadata.annotations.as_ref().expect("valid")[RUNTIME_ANNOTATION],
            "WasmEdge"
        );
    }

    #[test]
    fn an_oci_module_is_the_wasm_pods_image() {
        let f = fixture();
        let placement = wasm_placement();
        let reference = "registry:5000/wasmfn/modules@sha256:abc".to_string();
        let pod = run_pod(&spec(&f, &placement, ModuleMount::Image(reference.clone())));
        let c = container(&pod);
        assert_eq!(c.image.as_ref(), Some(&reference));
        assert_eq!(c.command.as_ref().expect("valid")[0], "function.wasm");
        let volumes = pod
            .spec
            .as_ref()
            .expect("valid")
            .volumes
            .as_ref()
            .expect("valid");
        assert_eq!(volumes.len(), 1, "only the inputs volume");
        assert_eq!(volumes[0].name, "inputs");
    }

    #[test]
    fn a_private_module_image_is_pulled_with_the_configured_secrets() {
        let mut f = fixture();
        let placement = wasm_placement();
        let image = ModuleMount::Image("registry:5000/wasmfn/modules@sha256:abc".into());
        let pod = run_pod(&spec(&f, &placement, image.clone()));
        assert_eq!(pod.spec.as_ref().expect("valid").image_pull_secrets, None);
        f.settings.image_pull_secrets = vec!["registry-credentials".into()];
        let pod = run_pod(&spec(&f, &placement, image));
        let names: Vec<&str> = pod
            .spec
            .as_ref()
            .expect("valid")
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["registry-credentials"]);
    }

    #[test]
    fn a_script_is_mounted_like_a_module_with_an_empty_dir_to_stage_it_in_on_both_paths() {
        let f = fixture();
        for (placement, image) in [
            (wasm_placement(), "wasmfn.local/wasm-pod:dev"),
            (container_placement(), "wasmfn.local/runner:dev"),
        ] {
            let script = ModuleMount::Script(vec!["art".into()]);
            let pod = run_pod(&spec(&f, &placement, script));
            let pod_spec = pod.spec.as_ref().expect("valid");
            let c = container(&pod);
            assert_eq!(c.image.as_deref(), Some(image));
            let mounts: Vec<_> = c
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
                .collect();
            assert_eq!(
                mounts,
                [
                    ("artifact", "/artifact", Some(true)),
                    ("scratch", "/tmp", None),
                    ("inputs", "/inputs", Some(true)),
                ]
            );
            let scratch = pod_spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == "scratch")
                .and_then(|v| v.empty_dir.as_ref())
                .expect("an emptyDir");
            assert_eq!(scratch.size_limit, Some(Quantity("64Mi".into())));
            assert_eq!(
                c.security_context
                    .as_ref()
                    .and_then(|s| s.read_only_root_filesystem),
                Some(true),
                "the root filesystem stays read-only"
            );
        }
        // A module needs no scratch space.
        let pod = run_pod(&spec(&f, &container_placement(), maps()));
        let volumes = pod.spec.as_ref().expect("valid").volumes.clone();
        assert!(volumes.iter().flatten().all(|v| v.name != "scratch"));
    }

    fn pinned_node(pod: &Pod) -> Option<Vec<String>> {
        let terms = &pod
            .spec
            .as_ref()?
            .affinity
            .as_ref()?
            .node_affinity
            .as_ref()?
            .required_during_scheduling_ignored_during_execution
            .as_ref()?
            .node_selector_terms;
        let field = &terms.first()?.match_fields.as_ref()?[0];
        assert_eq!(
            (field.key.as_str(), field.operator.as_str()),
            ("metadata.name", "In")
        );
        field.values.clone()
    }

    #[test]
    fn an_admitted_pod_of_either_kind_is_pinned_to_its_node_by_name_labelled_and_cpu_limited() {
        let f = fixture();
        for placement in [wasm_placement(), container_placement()] {
            let mut s = spec(&f, &placement, maps());
            s.node = Some("node-b");
            let pod = run_pod(&s);
            assert_eq!(pinned_node(&pod), Some(vec!["node-b".to_string()]));
            assert_eq!(
                pod.labels().get(NODE_LABEL).map(String::as_str),
                Some("node-b")
            );
            let limits = container(&pod)
                .resources
                .as_ref()
                .and_then(|r| r.limits.clone())
                .expect("limits");
            assert_eq!(limits.get("cpu"), Some(&Quantity("1".into())));
        }
        // Without admission a container pod goes where the scheduler puts it.
        let placement = container_placement();
        let pod = run_pod(&spec(&f, &placement, maps()));
        assert_eq!(pinned_node(&pod), None);
        assert!(!pod.labels().contains_key(NODE_LABEL));
    }

    #[test]
    fn a_container_pod_runs_wasmfn_exec_with_the_same_settings() {
        let f = fixture();
        let placement = container_placement();
        let mut s = spec(&f, &placement, maps());
        s.contract.entrypoint = Some("add");
        let pod = run_pod(&s);
        let pod_spec = pod.spec.as_ref().expect("valid");
        assert_eq!(pod_spec.runtime_class_name, None);
        assert!(pod_spec.affinity.is_none());
        // Evicted from a lost node after NODE_LOSS_TOLERATION_SECONDS, not Kubernetes' 300 s.
        let tolerations: Vec<(Option<&str>, Option<&str>, Option<i64>)> = pod_spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| (t.key.as_deref(), t.effect.as_deref(), t.toleration_seconds))
            .collect();
        assert_eq!(
            tolerations,
            [
                (
                    Some("node.kubernetes.io/unreachable"),
                    Some("NoExecute"),
                    Some(30)
                ),
                (
                    Some("node.kubernetes.io/not-ready"),
                    Some("NoExecute"),
                    Some(30)
                ),
            ]
        );
        let c = container(&pod);
        assert_eq!(c.image.as_deref(), Some("wasmfn.local/runner:dev"));
        assert_eq!(
            c.command.clone().expect("valid"),
            [
                "wasmfn",
                "exec",
                "--timeout=1500ms",
                "--memory=33554432",
                "--max-output=4096",
                "--stdin-file=/inputs/stdin",
                "--invoke=add",
                "--args=[3,4]",
                "--env=B=2",
                "--env=A=1",
                "/artifact",
                "--",
                "one",
                "--two",
            ]
            .map(String::from)
            .to_vec()
        );
        assert!(c.env.is_none(), "settings travel as flags");
        // The projected artifact volume lists every ConfigMap.
        let volume = &pod_spec.volumes.as_ref().expect("valid")[0];
        let sources = volume
            .projected
            .as_ref()
            .expect("valid")
            .sources
            .as_ref()
            .expect("valid");
        let names: Vec<_> = sources
            .iter()
            .map(|s| s.config_map.as_ref().expect("valid").name.clone())
            .collect();
        assert_eq!(names, ["art", "art-1"]);
    }

    #[test]
    fn the_attempts_traceparent_reaches_the_runner_on_both_paths_only_when_set() {
        let f = fixture();
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let wasm = wasm_placement();
        let container_place = container_placement();
        let mut traced = spec(&f, &wasm, maps());
        traced.contract.traceparent = Some(header);
        assert_eq!(env_of(&run_pod(&traced))["WASMFN_TRACEPARENT"], header);
        assert!(!env_of(&run_pod(&spec(&f, &wasm, maps()))).contains_key("WASMFN_TRACEPARENT"));
        let mut traced = spec(&f, &container_place, maps());
        traced.contract.traceparent = Some(header);
        let command = container(&run_pod(&traced)).command.clone().expect("valid");
        let flag = format!("--traceparent={header}");
        let at = command.iter().position(|a| *a == flag).expect("the flag");
        assert!(at < command.iter().position(|a| a == "--").expect("--"));
        let plain = container(&run_pod(&spec(&f, &container_place, maps())))
            .command
            .clone()
            .expect("valid");
        assert!(plain.iter().all(|a| !a.starts_with("--traceparent")));
    }

    #[test]
    fn invoke_settings_reach_the_shim() {
        let f = fixture();
        let placement = wasm_placement();
        let mut s = spec(&f, &placement, maps());
        s.contract.entrypoint = Some("add");
        s.stdin_config_map = None;
        let pod = run_pod(&s);
        let env = env_of(&pod);
        assert_eq!(env["WASMFN_INVOKE"], "add");
        assert_eq!(env["WASMFN_INVOKE_ARGS"], "[3,4]");
        assert!(!env.contains_key("WASMFN_STDIN_FILE"));
        let volumes = pod
            .spec
            .as_ref()
            .expect("valid")
            .volumes
            .as_ref()
            .expect("valid");
        assert!(volumes.iter().all(|v| v.name != "inputs"));
    }

    #[test]
    fn every_run_pod_is_unprivileged_bounded_and_owned() {
        let f = fixture();
        for placement in [wasm_placement(), container_placement()] {
            let pod = run_pod(&spec(&f, &placement, maps()));
            let pod_spec = pod.spec.as_ref().expect("valid");
            assert_eq!(pod_spec.automount_service_account_token, Some(false));
            assert_eq!(pod_spec.restart_policy.as_deref(), Some("Never"));
            assert_eq!(pod_spec.active_deadline_seconds, Some(2 + 30));
            let security = pod_spec.security_context.as_ref().expect("valid");
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(security.run_as_user, Some(65532));
            let c = container(&pod);
            let cs = c.security_context.as_ref().expect("valid");
            assert_eq!(cs.read_only_root_filesystem, Some(true));
            assert_eq!(cs.allow_privilege_escalation, Some(false));
            assert_eq!(
                cs.capabilities.as_ref().expect("valid").drop,
                Some(vec!["ALL".to_string()])
            );
            let limits = c
                .resources
                .as_ref()
                .expect("valid")
                .limits
                .as_ref()
                .expect("valid");
            assert_eq!(limits["memory"].0, ((32u64 + 64) << 20).to_string());
            let meta = &pod.metadata;
            assert_eq!(meta.name.as_deref(), Some("hello-run-2"));
            let labels = meta.labels.as_ref().expect("valid");
            assert_eq!(labels[ATTEMPT_LABEL], "2");
            assert_eq!(labels[EXECUTION_UID_LABEL], "uid-1");
            assert_eq!(labels[EXECUTION_LABEL], "hello");
            assert_eq!(
                meta.owner_references.as_ref().expect("valid")[0].uid,
                "uid-1"
            );
        }
    }

    #[test]
    fn the_input_config_map_holds_stdin_and_is_owned() {
        let map = input_config_map("hello", owner(), "line\n");
        assert_eq!(map.metadata.name.as_deref(), Some("hello-input"));
        assert_eq!(map.data.as_ref().expect("valid")[STDIN_KEY], "line\n");
        assert_eq!(
            map.metadata.owner_references.as_ref().expect("valid")[0].uid,
            "uid-1"
        );
    }
}
