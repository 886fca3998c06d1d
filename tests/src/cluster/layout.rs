//! Where everything of one cluster lives: directories, sockets, ports, addresses and names.
//! Pure data, chosen once at start and written to `cluster.json` in the state directory, so the
//! fixture, `make cluster-down` and people debugging all read the same facts.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The name under which every project image is pulled. Each node's containerd maps it to the
/// cluster's own registry port, so pod specs never carry a port number.
pub const IMAGE_REGISTRY: &str = "wasmfn.local";
/// The sandbox (pause) image, imported into every node's containerd at start.
pub const PAUSE_IMAGE: &str = "wasmfn.local/pause:3.8";
/// Label marking a node whose containerd has the project's Wasm handler.
pub const WASMEDGE_NODE_LABEL: &str = "wasmfn.dev/wasmedge";
/// RuntimeClass (and containerd runtime handler) name for Wasm pods: the node installer's own.
pub const WASM_RUNTIME_CLASS: &str = wasmfn_node_installer::containerd_config::HANDLER_NAME;

/// One kubelet + containerd pair.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name and address (a loopback address such as `127.0.0.2`).
    pub name: String,
    /// `a` or `b`: used in directory, cgroup and bridge names.
    pub key: String,
    /// Whether this node has the project's (`wasmfn`) runtime handler and label.
    pub wasmedge: bool,
    pub kubelet_port: u16,
    pub dir: PathBuf,
    pub containerd_socket: PathBuf,
    /// Cgroup (in every v1 hierarchy) holding the node's pods.
    pub pods_cgroup: String,
    /// Cgroup holding the node's containerd and its shims.
    pub runtime_cgroup: String,
    pub bridge: String,
    pub pod_subnet: String,
}

/// Everything about one running (or starting) cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    pub id: String,
    pub state_dir: PathBuf,
    /// Directory with kube-apiserver, kubelet, kubectl … (the setup cache).
    pub kube_bin_dir: PathBuf,
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    pub apiserver_port: u16,
    pub registry_port: u16,
    /// Shared registry storage (images pushed by `make images` live here).
    pub registry_root: PathBuf,
    pub pause_archive: PathBuf,
    pub nodes: Vec<NodeInfo>,
    /// PID of the process that owns every component (set once it runs).
    pub supervisor_pid: Option<u32>,
}

/// Ports a cluster needs, chosen free by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub registry: u16,
    pub kubelet_a: u16,
    pub kubelet_b: u16,
}

#[cfg(test)]
impl Ports {
    /// Distinct made-up ports, for tests that never start anything.
    pub fn made_up() -> Ports {
        Ports {
            etcd_client: 1,
            etcd_peer: 2,
            apiserver: 3,
            registry: 4,
            kubelet_a: 5,
            kubelet_b: 6,
        }
    }
}

impl ClusterInfo {
    /// Lays out a cluster with id `id` under `state_dir`.
    pub fn new(id: &str, state_dir: &Path, cache_dir: &Path, ports: Ports) -> ClusterInfo {
        let node = |key: &str, name: &str, wasmedge: bool, kubelet_port: u16, subnet: &str| {
            let dir = state_dir.join(format!("node-{key}"));
            NodeInfo {
                name: name.to_string(),
                key: key.to_string(),
                wasmedge,
                kubelet_port,
                containerd_socket: dir.join("containerd.sock"),
                dir,
                pods_cgroup: format!("/wasmfn-{id}-{key}"),
                runtime_cgroup: format!("/wasmfn-{id}-{key}-runtime"),
                bridge: format!("wfn{id}{key}"),
                pod_subnet: subnet.to_string(),
            }
        };
        ClusterInfo {
            id: id.to_string(),
            state_dir: state_dir.to_path_buf(),
            kube_bin_dir: cache_dir.join("kubernetes-1.20.2/bin"),
            etcd_client_port: ports.etcd_client,
            etcd_peer_port: ports.etcd_peer,
            apiserver_port: ports.apiserver,
            registry_port: ports.registry,
            registry_root: cache_dir.join("registry"),
            pause_archive: cache_dir.join("kubernetes-1.20.2/pause.tar"),
            nodes: vec![
                node("a", "127.0.0.2", true, ports.kubelet_a, "10.88.0.0/24"),
                node("b", "127.0.0.3", false, ports.kubelet_b, "10.88.1.0/24"),
            ],
            supervisor_pid: None,
        }
    }

    pub fn info_file(state_dir: &Path) -> PathBuf {
        state_dir.join("cluster.json")
    }
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki")
    }
    /// etcd's data directory: in memory (`/dev/shm`) where the host has one, else in the state
    /// directory. The cluster is thrown away with its state anyway, and on a shared disk
    /// etcd's fsyncs and the kernel's writeback of its files took as much CPU as etcd itself.
    pub fn etcd_dir(&self) -> PathBuf {
        let memory = Path::new("/dev/shm");
        if memory.is_dir() {
            memory.join(format!("wasmfn-{}-etcd", self.id))
        } else {
            self.state_dir.join("etcd")
        }
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
    /// The admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.state_dir.join("admin.kubeconfig")
    }
    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }
    pub fn binary(&self, name: &str) -> PathBuf {
        self.kube_bin_dir.join(name)
    }
    pub fn kubectl_path(&self) -> PathBuf {
        self.binary("kubectl")
    }
    pub fn node(&self, key: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.key == key || n.name == key)
    }
    /// The WasmEdge node (node A).
    pub fn wasmedge_node(&self) -> &NodeInfo {
        &self.nodes[0]
    }
    /// The plain node (node B).
    pub fn plain_node(&self) -> &NodeInfo {
        &self.nodes[1]
    }
}

impl NodeInfo {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubelet.kubeconfig")
    }
    pub fn kubelet_config(&self) -> PathBuf {
        self.dir.join("kubelet-config.yaml")
    }
    /// In a directory of its own, as on a real node (`/etc/containerd/config.toml`), so a test
    /// can mount just the directory into a node-installer pod.
    pub fn containerd_config(&self) -> PathBuf {
        self.dir.join("etc/containerd/config.toml")
    }
    pub fn cni_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }
    pub fn registry_hosts_dir(&self) -> PathBuf {
        self.dir.join("registry-hosts")
    }
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.join("kubelet")
    }
    /// Bind-mounted over `/var/log/pods` inside the node's mount namespace.
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.dir.join("log-pods")
    }
    /// Bind-mounted over `/var/log/containers` inside the node's mount namespace.
    pub fn container_logs_dir(&self) -> PathBuf {
        self.dir.join("log-containers")
    }
}
