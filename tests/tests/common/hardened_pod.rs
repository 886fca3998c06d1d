//! The one pod the suites start by hand: locked down with the operator's own pod and container
//! security contexts (`wasmfn_api::pod_security`), so a suite's pod runs under exactly the
//! restrictions a compile Job or run pod does, and a hardening step reaches the suites too.
//! Each suite adds only what its test is about: image, command, env, runtime class, node,
//! volumes, resources.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, Pod,
    PodSpec, ProjectedVolumeSource, ResourceRequirements, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmfn_api::pod_security;

/// A single-container pod that runs once (restartPolicy Never), without a service-account
/// token or service-link variables, and dies quickly when deleted.
#[derive(Clone, Debug)]
pub struct HardenedPod {
    pod: Pod,
}

impl HardenedPod {
    /// Pod `name` with one container, `run`, from `image`.
    pub fn new(name: &str, image: &str) -> HardenedPod {
        let container = Container {
            name: "run".to_owned(),
            image: Some(image.to_owned()),
            security_context: Some(pod_security::restricted_container()),
            ..Default::default()
        };
        let spec = PodSpec {
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(2),
            security_context: Some(pod_security::non_root_pod()),
            containers: vec![container],
            ..Default::default()
        };
        HardenedPod {
            pod: Pod {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                spec: Some(spec),
                status: None,
            },
        }
    }

    /// Names the container (`run` by default).
    pub fn container_name(mut self, name: &str) -> HardenedPod {
        self.container().name = name.to_owned();
        self
    }

    /// The container's command (replaces the image's entrypoint).
    pub fn command<S: AsRef<str>>(mut self, command: &[S]) -> HardenedPod {
        self.container().command = Some(strings(command));
        self
    }

    /// The container's arguments.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> HardenedPod {
        self.container().args = Some(strings(args));
        self
    }

    /// One more environment variable.
    pub fn env(mut self, name: &str, value: &str) -> HardenedPod {
        self.container()
            .env
            .get_or_insert_with(Vec::new)
            .push(EnvVar {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                value_from: None,
            });
        self
    }

    /// Runs through RuntimeClass `name` (`wasmfn`: the project's shim).
    pub fn runtime_class(mut self, name: &str) -> HardenedPod {
        self.spec().runtime_class_name = Some(name.to_owned());
        self
    }

    /// Pins the pod to the node whose hostname label is `node`.
    pub fn on_node(mut self, node: &str) -> HardenedPod {
        self.spec().node_selector =
            Some([("kubernetes.io/hostname".to_owned(), node.to_owned())].into());
        self
    }

    /// Adds `volume`, mounted in the container at `path`.
    pub fn volume(mut self, volume: Volume, path: &str, read_only: bool) -> HardenedPod {
        self.container()
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: volume.name.clone(),
                mount_path: path.to_owned(),
                read_only: read_only.then_some(true),
                ..Default::default()
            });
        self.spec()
            .volumes
            .get_or_insert_with(Vec::new)
            .push(volume);
        self
    }

    /// The container's resources.
    pub fn resources(mut self, resources: ResourceRequirements) -> HardenedPod {
        self.container().resources = Some(resources);
        self
    }

    /// How long the pod may run before the kubelet stops it.
    pub fn active_deadline(mut self, deadline: Duration) -> HardenedPod {
        self.spec().active_deadline_seconds =
            Some(i64::try_from(deadline.as_secs()).expect("a deadline in range"));
        self
    }

    /// The pod as JSON, for `kubectl create -f -`.
    pub fn manifest(&self) -> String {
        serde_json::to_string(&self.pod).expect("a pod serialises")
    }

    fn spec(&mut self) -> &mut PodSpec {
        self.pod.spec.as_mut().expect("built with a spec")
    }

    fn container(&mut self) -> &mut Container {
        &mut self.spec().containers[0]
    }
}

/// An empty directory, as writable scratch space under a read-only root filesystem.
pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// ConfigMap `config_map`'s keys as files.
pub fn config_map(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The keys of all `config_maps` as files of one directory.
pub fn projected_config_maps(name: &str, config_maps: &[String]) -> Volume {
    let sources = config_maps
        .iter()
        .map(|config_map| VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: config_map.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Volume {
        name: name.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn strings<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items.iter().map(|s| s.as_ref().to_owned()).collect()
}
