//! The compile Job and its source ConfigMap, built from a function without touching the API.
//!
//! One Job per cache key (`wasmfn-compile-<key>`), so functions with the same source share it
//! and a restarted operator finds the Job it already started instead of starting another. The
//! Job runs untrusted code (build scripts, macros): no service-account token, no service links,
//! non-root, no privilege escalation, all capabilities dropped, read-only root filesystem,
//! RuntimeDefault seccomp, bounded CPU, memory and time, no retries.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use wasmfn_api::{labels, BuildOptions, Language};

use super::cache_key::{key_hex, key_label};
use super::source::SourceFiles;
use crate::pod_security::{self, Compute};

/// Where the source is mounted.
const SOURCE_DIR: &str = "/src";
/// The artifact directory inside the Job (on the /tmp emptyDir).
const OUT_DIR: &str = "/tmp/out";
/// Container name (the operator reads this container's log and termination message).
pub const CONTAINER: &str = "compile";
/// The init container that isolates the pod's network.
pub const ISOLATION_CONTAINER: &str = "isolate-network";

/// What a compile Job is built from.
#[derive(Debug, Clone)]
pub struct CompileJobInputs<'a> {
    /// The cache key.
    pub key: &'a str,
    /// Language.
    pub language: Language,
    /// Build options.
    pub build: &'a BuildOptions,
    /// Source files.
    pub files: &'a SourceFiles,
    /// Builder image.
    pub builder_image: &'a str,
    /// Deadline in seconds.
    pub deadline_seconds: i64,
    /// Container memory limit in bytes.
    pub memory_bytes: u64,
    /// The function starting it (the Job's controller).
    pub owner: OwnerReference,
    /// Take the pod's network down before the build (an init container with `NET_ADMIN`).
    pub isolate_network: bool,
    /// Secrets the kubelet pulls the builder image with.
    pub image_pull_secrets: &'a [String],
}

/// The init container that takes every interface but loopback down in the pod's network
/// namespace before the build runs: root with `NET_ADMIN` and nothing else, our own binary,
/// finished before any user code starts. The builder container shares the namespace without
/// the capability to undo it.
fn network_isolation(image: &str) -> Container {
    let mut security = pod_security::restricted_container();
    security.run_as_user = Some(0);
    security.run_as_non_root = Some(false);
    security.capabilities = Some(Capabilities {
        drop: Some(vec!["ALL".to_owned()]),
        add: Some(vec!["NET_ADMIN".to_owned()]),
    });
    Container {
        name: ISOLATION_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        args: Some(vec!["isolate-network".to_owned()]),
        resources: Some(pod_security::resource_requirements(Compute {
            cpu_request: Quantity("10m".to_owned()),
            cpu_limit: Some(Quantity("100m".to_owned())),
            memory_request: Quantity("16Mi".to_owned()),
            memory_limit: Quantity("64Mi".to_owned()),
        })),
        security_context: Some(security),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

/// `wasmfn-compile-<first 20 hex digits of the key>`.
pub fn job_name(key: &str) -> String {
    format!("wasmfn-compile-{}", &key_hex(key)[..20])
}

/// The source ConfigMap's name (same suffix as the Job).
pub fn source_config_map_name(key: &str) -> String {
    format!("wasmfn-source-{}", &key_hex(key)[..20])
}

fn config_map_key(path: &str) -> String {
    path.replace('/', "__")
}

/// The Job.
pub fn compile_job(inputs: &CompileJobInputs<'_>) -> Job {
    let name = job_name(inputs.key);
    let object_labels = BTreeMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (
            labels::CACHE_KEY.to_owned(),
            key_label(inputs.key).to_owned(),
        ),
    ]);
    // One file compiles as that file; a tree (a Cargo project, C with headers) as the directory.
    let source_arg = match inputs.files.keys().next() {
        Some(only) if inputs.files.len() == 1 => format!("{SOURCE_DIR}/{only}"),
        _ => SOURCE_DIR.to_owned(),
    };
    // The toolchain gets the deadline minus a margin, so the Job reports a compile timeout
    // (with diagnostics) rather than being killed by activeDeadlineSeconds.
    let toolchain_seconds = (inputs.deadline_seconds - 15).max(5);
    let mut args = vec![
        "compile".to_owned(),
        "--language".to_owned(),
        inputs.language.as_str().to_owned(),
        source_arg,
        "--out".to_owned(),
        OUT_DIR.to_owned(),
        "--opt-level".to_owned(),
        inputs.build.optimization.as_str().to_owned(),
        "--timeout".to_owned(),
        format!("{toolchain_seconds}s"),
        "--no-cache".to_owned(),
        "--log-artifact".to_owned(),
    ];
    if inputs.build.library {
        args.push("--library".to_owned());
    }
    let items = inputs
        .files
        .keys()
        .map(|path| KeyToPath {
            key: config_map_key(path),
            path: path.clone(),
            mode: None,
        })
        .collect();
    let memory = Quantity(inputs.memory_bytes.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(object_labels.clone()),
            annotations: Some(BTreeMap::from([(
                labels::CACHE_KEY.to_owned(),
                inputs.key.to_owned(),
            )])),
            owner_references: Some(vec![inputs.owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(inputs.deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(object_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    image_pull_secrets: pod_security::pull_secrets(inputs.image_pull_secrets),
                    termination_grace_period_seconds: Some(5),
                    security_context: Some(PodSecurityContext {
                        // The /tmp emptyDir must be writable by the builder's user.
                        fs_group: Some(pod_security::NON_ROOT_ID),
                        ..pod_security::non_root_pod()
                    }),
                    init_containers: inputs
                        .isolate_network
                        .then(|| vec![network_isolation(inputs.builder_image)]),
                    containers: vec![Container {
                        name: CONTAINER.to_owned(),
                        image: Some(inputs.builder_image.to_owned()),
                        args: Some(args),
                        resources: Some(pod_security::resource_requirements(Compute {
                            cpu_request: Quantity("100m".to_owned()),
                            cpu_limit: Some(Quantity("2".to_owned())),
                            memory_request: Quantity("256Mi".to_owned()),
                            memory_limit: memory,
                        })),
                        security_context: Some(pod_security::restricted_container()),
                        volume_mounts: Some(vec![
                            VolumeMount {
                                name: "tmp".to_owned(),
                                mount_path: "/tmp".to_owned(),
                                ..Default::default()
                            },
                            VolumeMount {
                                name: "source".to_owned(),
                                mount_path: SOURCE_DIR.to_owned(),
                                read_only: Some(true),
                                ..Default::default()
                            },
                        ]),
                        termination_message_policy: Some("File".to_owned()),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        Volume {
                            name: "tmp".to_owned(),
                            empty_dir: Some(EmptyDirVolumeSource {
                                size_limit: Some(Quantity("4Gi".to_owned())),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "source".to_owned(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: source_config_map_name(inputs.key),
                                items: Some(items),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The source ConfigMap, owned by the Job (`job_owner`) so it goes when the Job goes.
pub fn source_config_map(key: &str, files: &SourceFiles, job_owner: OwnerReference) -> ConfigMap {
    let mut data = BTreeMap::new();
    let mut binary_data = BTreeMap::new();
    for (path, bytes) in files {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                data.insert(config_map_key(path), text.to_owned());
            }
            Err(_) => {
                binary_data.insert(config_map_key(path), ByteString(bytes.clone()));
            }
        }
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(source_config_map_name(key)),
            labels: Some(BTreeMap::from([
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                ),
                (labels::CACHE_KEY.to_owned(), key_label(key).to_owned()),
            ])),
            owner_references: Some(vec![job_owner]),
            ..Default::default()
        },
        data: Some(data),
        binary_data: (!binary_data.is_empty()).then_some(binary_data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_api::Optimization;

    const KEY: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "wasmfn.dev/v1alpha1".into(),
            kind: "WasmFunction".into(),
            name: "hello".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn inputs<'a>(files: &'a SourceFiles, build: &'a BuildOptions) -> CompileJobInputs<'a> {
        CompileJobInputs {
            key: KEY,
            language: Language::Rust,
            build,
            files,
            builder_image: "wasmfn.local/builder:dev",
            deadline_seconds: 600,
            memory_bytes: 2 << 30,
            owner: owner(),
            isolate_network: true,
            image_pull_secrets: &[],
        }
    }

    fn job_for(files: &SourceFiles, build: &BuildOptions) -> Job {
        compile_job(&inputs(files, build))
    }

    fn pod(job: &Job) -> &PodSpec {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn names_derive_from_the_key() {
        assert_eq!(job_name(KEY), "wasmfn-compile-0123456789abcdef0123");
        assert_eq!(
            source_config_map_name(KEY),
            "wasmfn-source-0123456789abcdef0123"
        );
    }

    #[test]
    fn the_job_is_owned_labelled_bounded_and_never_retried() {
        let files = SourceFiles::from([("main.rs".into(), b"fn main(){}".to_vec())]);
        let job = job_for(&files, &BuildOptions::default());
        assert_eq!(job.metadata.owner_references, Some(vec![owner()]));
        let labels = job.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[labels::CACHE_KEY], &KEY[7..70]);
        assert_eq!(
            job.metadata.annotations.as_ref().expect("annotations")[labels::CACHE_KEY],
            KEY
        );
        let spec = job.spec.as_ref().expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        let container = &pod(&job).containers[0];
        let limits = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits["memory"], Quantity((2u64 << 30).to_string()));
        let args = container.args.as_ref().expect("args");
        assert_eq!(
            &args[..4],
            ["compile", "--language", "rust", "/src/main.rs"]
        );
        assert!(
            args.contains(&"585s".to_owned()),
            "toolchain deadline below the Job's: {args:?}"
        );
        assert!(!args.contains(&"--library".to_owned()));
    }

    #[test]
    fn the_network_is_taken_down_first_by_a_root_init_container_with_net_admin_alone() {
        let files = SourceFiles::from([("main.rs".into(), b"fn main(){}".to_vec())]);
        let build = BuildOptions::default();
        let job = job_for(&files, &build);
        let init = pod(&job)
            .init_containers
            .as_ref()
            .expect("an init container");
        assert_eq!(init.len(), 1);
        let isolate = &init[0];
        assert_eq!(isolate.name, ISOLATION_CONTAINER);
        assert_eq!(isolate.image.as_deref(), Some("wasmfn.local/builder:dev"));
        assert_eq!(isolate.args, Some(vec!["isolate-network".to_owned()]));
        let security = isolate.security_context.as_ref().expect("security");
        assert_eq!(security.run_as_user, Some(0));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        let capabilities = security.capabilities.as_ref().expect("capabilities");
        assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(capabilities.add, Some(vec!["NET_ADMIN".to_owned()]));
        // The build container keeps none.
        let build_security = pod(&job).containers[0].security_context.clone();
        assert_eq!(
            build_security
                .and_then(|s| s.capabilities)
                .and_then(|c| c.add),
            None
        );
        // Turned off (a namespace that refuses root containers): no init container.
        let mut inputs = inputs(&files, &build);
        assert!(pod(&compile_job(&inputs)).init_containers.is_some());
        inputs.isolate_network = false;
        assert!(pod(&compile_job(&inputs)).init_containers.is_none());
    }

    #[test]
    fn the_builder_is_pulled_with_the_configured_secrets_and_none_by_default() {
        let files = SourceFiles::from([("main.rs".into(), b"fn main(){}".to_vec())]);
        let build = BuildOptions::default();
        assert_eq!(pod(&job_for(&files, &build)).image_pull_secrets, None);
        let secrets = ["registry-credentials".to_owned()];
        let job = compile_job(&CompileJobInputs {
            image_pull_secrets: &secrets,
            ..inputs(&files, &build)
        });
        let names: Vec<&str> = pod(&job)
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["registry-credentials"]);
    }

    #[test]
    fn the_pod_holds_no_credentials_and_no_privilege() {
        let files = SourceFiles::from([("main.rs".into(), b"fn main(){}".to_vec())]);
        let job = job_for(&files, &BuildOptions::default());
        let pod = pod(&job);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let security = pod.security_context.as_ref().expect("pod security");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let container = pod.containers[0]
            .security_context
            .as_ref()
            .expect("container security");
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(
            container.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
    }

    #[test]
    fn a_tree_compiles_as_a_directory_with_paths_restored_from_keys() {
        let files = SourceFiles::from([
            ("Cargo.toml".into(), b"[package]".to_vec()),
            ("src/main.rs".into(), b"fn main(){}".to_vec()),
        ]);
        let build = BuildOptions {
            optimization: Optimization::Size,
            library: true,
            timeout_seconds: None,
        };
        let job = job_for(&files, &build);
        let pod = pod(&job);
        let args = pod.containers[0].args.as_ref().expect("args");
        assert_eq!(args[3], "/src");
        assert!(args.windows(2).any(|w| w == ["--opt-level", "size"]));
        assert!(args.contains(&"--library".to_owned()));
        let volume = pod
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find(|v| v.name == "source")
            .expect("source");
        let items = volume
            .config_map
            .as_ref()
            .and_then(|c| c.items.clone())
            .expect("items");
        assert_eq!(
            items
                .iter()
                .map(|i| (i.key.as_str(), i.path.as_str()))
                .collect::<Vec<_>>(),
            [
                ("Cargo.toml", "Cargo.toml"),
                ("src__main.rs", "src/main.rs")
            ]
        );
    }

    #[test]
    fn the_source_config_map_keeps_text_as_data_and_bytes_as_binary_data() {
        let files = SourceFiles::from([
            ("src/main.rs".into(), b"fn main(){}".to_vec()),
            ("blob.bin".into(), vec![0xff, 0xfe]),
        ]);
        let map = source_config_map(KEY, &files, owner());
        assert_eq!(
            map.data.as_ref().expect("data")["src__main.rs"],
            "fn main(){}"
        );
        assert_eq!(
            map.binary_data.as_ref().expect("binary")["blob.bin"],
            ByteString(vec![0xff, 0xfe])
        );
        assert_eq!(map.metadata.owner_references, Some(vec![owner()]));
    }
}
