//! Shared by the end-to-end suites: one cluster per test binary (started on first use, torn down
//! by its supervisor when the test process exits), and a fresh namespace per test.

#![allow(dead_code, unreachable_pub)]

pub mod executions;
pub mod native_code;

use std::sync::{Mutex, MutexGuard, OnceLock};
use wasmfn_e2e::{Cluster, Kubectl};

static CLUSTER: OnceLock<Mutex<Cluster>> = OnceLock::new();

/// The test binary's cluster.
pub fn cluster() -> MutexGuard<'static, Cluster> {
    CLUSTER
        .get_or_init(|| {
            let binary = std::path::Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster"));
            Mutex::new(Cluster::start(binary).expect("start the local cluster"))
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A new namespace `<prefix>-<random>` whose default service account exists; returns a kubectl
/// bound to it.
pub fn namespace(prefix: &str) -> Kubectl {
    let name = format!(
        "{prefix}-{}",
        wasmfn_e2e::cluster::pki::random_hex(3).expect("random")
    );
    cluster().namespace(&name).expect("create namespace")
}

/// The image reference of a project image built by `make images`.
pub fn image(name: &str) -> String {
    wasmfn_e2e::cluster::config::image_ref(name)
}

/// `status.conditions[type=kind].status == "True"` on a Job.
pub fn job_condition(job: &serde_json::Value, kind: &str) -> Option<serde_json::Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
        .cloned()
}

/// The terminated state of a pod's first container, once it has one.
pub fn terminated(pod: &serde_json::Value) -> Option<serde_json::Value> {
    let state = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    (!state.is_null()).then(|| state.clone())
}

/// A pod manifest running the probe image with `args`, optionally pinned to a node.
pub fn probe_pod(name: &str, node: Option<&str>, args: &[&str], extra_container: &str) -> String {
    let node_selector = node
        .map(|n| format!("  nodeSelector:\n    kubernetes.io/hostname: \"{n}\"\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
{node_selector}  containers:
  - name: probe
    image: {image}
    args: {args}
{extra_container}",
        image = image("probe"),
        args = serde_json::to_string(args).expect("args"),
    )
}

/// Pids in the pod's cgroup on its node (pids hierarchy).
pub fn pod_processes(pods_cgroup: &str, uid: &str) -> Option<usize> {
    let root =
        std::path::Path::new("/sys/fs/cgroup/pids").join(pods_cgroup.trim_start_matches('/'));
    let wanted = format!("pod{uid}");
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry.file_name().to_string_lossy() == wanted {
                let mut count = 0;
                let mut inner = vec![path];
                while let Some(d) = inner.pop() {
                    count += std::fs::read_to_string(d.join("cgroup.procs"))
                        .map(|s| s.lines().count())
                        .unwrap_or(0);
                    inner.extend(
                        std::fs::read_dir(&d)
                            .ok()?
                            .flatten()
                            .map(|e| e.path())
                            .filter(|p| p.is_dir()),
                    );
                }
                return Some(count);
            }
            stack.push(path);
        }
    }
    None
}
