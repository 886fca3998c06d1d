//! Shared by the end-to-end suites: one cluster per test binary (started on first use, torn down
//! by its supervisor when the test process exits), and a fresh namespace per test.

#![allow(dead_code, unreachable_pub)]

pub mod api_objects;
pub mod burst;
pub mod executions;
pub mod hardened_pod;
pub mod native_code;
pub mod registry;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use wasmfn_e2e::operator::{crds_dir, OperatorProcess};
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

/// Applies the CRDs to the test binary's cluster and starts an operator replica as `identity`
/// with `env` (it may stand by while another leads).
pub fn operator_replica(identity: &str, env: &[(&str, &str)]) -> OperatorProcess {
    let cluster = cluster();
    cluster
        .kubectl()
        .run(&["apply", "-f", crds_dir().to_str().expect("utf-8 path")])
        .expect("apply the CRDs");
    OperatorProcess::start_with_env(cluster.info(), identity, &[], env).expect("start the operator")
}

/// [`operator_replica`], once it leads.
pub fn leading_operator(identity: &str, env: &[(&str, &str)]) -> OperatorProcess {
    let mut operator = operator_replica(identity, env);
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("the operator leads");
    operator
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

/// The processes in the pod's cgroup on its node (pids hierarchy), each as its pid and start time
/// (so a pid reused later is not taken for it); `None` when the pod has no cgroup there.
pub fn pod_processes(pods_cgroup: &str, uid: &str) -> Option<Vec<(u32, u64)>> {
    let pod = find_cgroup(pods_cgroup, &format!("pod{uid}"))?;
    let mut found = Vec::new();
    let mut inner = vec![pod];
    while let Some(d) = inner.pop() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        found.extend(
            procs
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .filter_map(|pid| Some((pid, start_time(pid)?))),
        );
        inner.extend(
            std::fs::read_dir(&d)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    Some(found)
}

/// The directory named `name` below a node's pod cgroup (pids hierarchy): a pod's
/// (`pod<uid>`) or a container's (its id).
pub fn find_cgroup(pods_cgroup: &str, name: &str) -> Option<std::path::PathBuf> {
    let root =
        std::path::Path::new("/sys/fs/cgroup/pids").join(pods_cgroup.trim_start_matches('/'));
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry.file_name().to_string_lossy() == name {
                return Some(path);
            }
            stack.push(path);
        }
    }
    None
}

/// A process's start time (clock ticks after boot, field 22 of its stat), if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Which of `processes` (from [`pod_processes`]) still live, wherever their cgroup is now.
pub fn still_alive(processes: &[(u32, u64)]) -> Vec<u32> {
    processes
        .iter()
        .filter(|(pid, started)| start_time(*pid) == Some(*started))
        .map(|(pid, _)| *pid)
        .collect()
}
