//! The security settings and resource block shared by every pod the operator starts (compile
//! Jobs and execution run pods). Both run untrusted code, so both get the same lock-down; keeping
//! it in one place means a hardening step reaches both. Pure builders, no client. They live in
//! the API crate so the end-to-end suites start their own pods with exactly this lock-down.
//!
//! Together the pod and container contexts pass the `restricted` Pod Security profile: non-root
//! (a fixed numeric user, so the kubelet can check it without reading the image), RuntimeDefault
//! seccomp, no privilege escalation, every capability dropped, and a read-only root filesystem.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, LocalObjectReference, PodSecurityContext, ResourceRequirements, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The numeric user and group of every pod the operator starts (the images' non-root user).
pub const NON_ROOT_ID: i64 = 65532;

/// `imagePullSecrets` naming `secrets` (none when the list is empty).
pub fn pull_secrets(secrets: &[String]) -> Option<Vec<LocalObjectReference>> {
    (!secrets.is_empty()).then(|| {
        secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}

/// The pod-level context: runs as [`NON_ROOT_ID`] (user and group), refuses to run as root, and
/// confines every container with the runtime's default seccomp profile.
pub fn non_root_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT_ID),
        run_as_group: Some(NON_ROOT_ID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The container-level context: unprivileged, no privilege escalation, no capabilities, and a
/// root filesystem it cannot write (scratch space comes from volumes).
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// CPU and memory of one container. Requests are always set (the scheduler places by them);
/// a CPU limit only where the work is meant to be throttled.
#[derive(Clone, Debug, PartialEq)]
pub struct Compute {
    /// CPU the scheduler reserves.
    pub cpu_request: Quantity,
    /// CPU the container may use at most, if bounded.
    pub cpu_limit: Option<Quantity>,
    /// Memory the scheduler reserves.
    pub memory_request: Quantity,
    /// Memory beyond which the container is OOM-killed.
    pub memory_limit: Quantity,
}

/// The container's `resources` block for `compute`.
pub fn resource_requirements(compute: Compute) -> ResourceRequirements {
    let mut limits = BTreeMap::from([("memory".to_owned(), compute.memory_limit)]);
    if let Some(cpu) = compute.cpu_limit {
        limits.insert("cpu".to_owned(), cpu);
    }
    ResourceRequirements {
        limits: Some(limits),
        requests: Some(BTreeMap::from([
            ("memory".to_owned(), compute.memory_request),
            ("cpu".to_owned(), compute.cpu_request),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a container ends up with when its own context is layered over the pod's, as the
    /// kubelet does: a container setting wins, else the pod's applies.
    struct Effective {
        run_as_non_root: Option<bool>,
        run_as_user: Option<i64>,
        seccomp: Option<String>,
        allow_privilege_escalation: Option<bool>,
        privileged: Option<bool>,
        read_only_root_filesystem: Option<bool>,
        dropped: Vec<String>,
        added: Vec<String>,
    }

    fn effective(pod: &PodSecurityContext, container: &SecurityContext) -> Effective {
        let seccomp = container
            .seccomp_profile
            .as_ref()
            .or(pod.seccomp_profile.as_ref())
            .map(|p| p.type_.clone());
        let capabilities = container.capabilities.clone().unwrap_or_default();
        Effective {
            run_as_non_root: container.run_as_non_root.or(pod.run_as_non_root),
            run_as_user: container.run_as_user.or(pod.run_as_user),
            seccomp,
            allow_privilege_escalation: container.allow_privilege_escalation,
            privileged: container.privileged,
            read_only_root_filesystem: container.read_only_root_filesystem,
            dropped: capabilities.drop.unwrap_or_default(),
            added: capabilities.add.unwrap_or_default(),
        }
    }

    #[test]
    fn pod_and_container_contexts_together_pass_the_restricted_profile() {
        let e = effective(&non_root_pod(), &restricted_container());
        // runAsNonRoot must be true, and a set user must not be root.
        assert_eq!(e.run_as_non_root, Some(true));
        assert_eq!(e.run_as_user, Some(NON_ROOT_ID));
        assert_ne!(e.run_as_user, Some(0));
        // seccomp RuntimeDefault (or Localhost) is required.
        assert_eq!(e.seccomp.as_deref(), Some("RuntimeDefault"));
        // allowPrivilegeEscalation must be explicitly false.
        assert_eq!(e.allow_privilege_escalation, Some(false));
        assert_ne!(e.privileged, Some(true));
        // ALL dropped; at most NET_BIND_SERVICE may be added back (we add nothing).
        assert_eq!(e.dropped, ["ALL"]);
        assert!(e.added.is_empty());
        // Not part of the profile, but ours: the container cannot write its image.
        assert_eq!(e.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn the_pod_context_runs_as_the_images_non_root_user_and_group() {
        let pod = non_root_pod();
        assert_eq!(pod.run_as_group, Some(65532));
        assert_eq!(pod.run_as_user, Some(65532));
        assert_eq!(
            pod.fs_group, None,
            "volume ownership is each pod's own choice"
        );
    }

    #[test]
    fn resources_always_request_and_limit_cpu_only_when_asked() {
        let unbounded = resource_requirements(Compute {
            cpu_request: Quantity("10m".into()),
            cpu_limit: None,
            memory_request: Quantity("96Mi".into()),
            memory_limit: Quantity("160Mi".into()),
        });
        let limits = unbounded.limits.expect("limits");
        assert_eq!(limits.len(), 1);
        assert_eq!(limits["memory"], Quantity("160Mi".into()));
        let requests = unbounded.requests.expect("requests");
        assert_eq!(requests["cpu"], Quantity("10m".into()));
        assert_eq!(requests["memory"], Quantity("96Mi".into()));

        let bounded = resource_requirements(Compute {
            cpu_request: Quantity("100m".into()),
            cpu_limit: Some(Quantity("2".into())),
            memory_request: Quantity("256Mi".into()),
            memory_limit: Quantity("2Gi".into()),
        });
        let limits = bounded.limits.expect("limits");
        assert_eq!(limits["cpu"], Quantity("2".into()));
        assert_eq!(limits["memory"], Quantity("2Gi".into()));
        assert!(bounded.claims.is_none());
    }
}
