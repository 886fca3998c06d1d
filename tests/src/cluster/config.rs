//! Configuration files of the cluster's components, rendered from its [`ClusterInfo`]. Pure
//! functions: no I/O, unit-tested below.

use super::layout::{NodeInfo, IMAGE_REGISTRY, PAUSE_IMAGE, WASM_RUNTIME_CLASS};
use std::path::Path;
use wasmfn_node_installer::containerd_config::{self, ExistingHandler, Handler, SchemaVersion};

/// Static bearer tokens: `token,user,uid,"group1,group2"` as the apiserver's `--token-auth-file`
/// reads them. The admin is in `system:masters`; each kubelet is `system:node:<name>` so the Node
/// authorizer and NodeRestriction apply to it.
pub fn token_file(admin_token: &str, node_tokens: &[(String, String)]) -> String {
    let mut out = format!("{admin_token},admin,admin,\"system:masters\"\n");
    for (node, token) in node_tokens {
        out.push_str(&format!(
            "{token},system:node:{node},node-{node},\"system:nodes\"\n"
        ));
    }
    out
}

/// A kubeconfig with a bearer token, verifying the apiserver against `ca_file`.
pub fn kubeconfig(server: &str, ca_file: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: wasmfn-local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: wasmfn-local
  context:
    cluster: wasmfn-local
    user: {user}
    namespace: default
current-context: wasmfn-local
",
        ca = ca_file.display()
    )
}

/// containerd (1.7, config version 2) for one node: its own root, state and socket, CNI from the
/// node's directory, the local registry, `restrict_oom_score_adj` (these machines lack
/// CAP_SYS_RESOURCE), and on the WasmEdge node the project's shim as runtime handler `wasmfn`,
/// added by the node installer's own config edit.
pub fn containerd_config(node: &NodeInfo) -> Result<String, containerd_config::Error> {
    let dir = &node.dir;
    let base = format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{hosts}"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
"#,
        root = dir.join("containerd/root").display(),
        state = dir.join("containerd/state").display(),
        socket = node.containerd_socket.display(),
        pause = PAUSE_IMAGE,
        cni = node.cni_dir().display(),
        hosts = node.registry_hosts_dir().display(),
    );
    if !node.wasmedge {
        return Ok(base);
    }
    // No runtime_path: the shim binary `containerd-shim-wasmfn-v1` is found on containerd's PATH.
    let handler = Handler {
        name: WASM_RUNTIME_CLASS.to_string(),
        runtime_type: containerd_config::RUNTIME_TYPE.to_string(),
        runtime_path: None,
    };
    containerd_config::add_handler(&base, &handler, SchemaVersion::V2, ExistingHandler::Refuse)
        .map(|edit| edit.text)
}

/// `hosts.toml` mapping the image namespace `wasmfn.local` to the cluster's registry on loopback.
pub fn registry_hosts(registry_port: u16) -> String {
    format!(
        r#"server = "http://127.0.0.1:{registry_port}"

[host."http://127.0.0.1:{registry_port}"]
  capabilities = ["pull", "resolve"]
"#
    )
}

/// CNI: a bridge with no gateway and no masquerading, so pods get an address and no route out.
pub fn cni_conflist(node: &NodeInfo) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "wasmfn-pods",
        "plugins": [{
            "type": "bridge",
            "bridge": node.bridge,
            "isGateway": false,
            "ipMasq": false,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": node.pod_subnet }]],
                "dataDir": node.dir.join("cni-ipam"),
            }
        }]
    })
    .to_string()
}

/// KubeletConfiguration: own address and port, cgroupfs under the node's own cgroup root,
/// client-certificate authentication for the apiserver and webhook authorization, no disk-pressure
/// eviction (the kubelet ignores a `0%` threshold: a shared CI disk with little free space must
/// not evict test pods), no changes to the host's iptables, and at most 1,024 processes per pod
/// (the pids cgroup: a fork bomb in one pod — a hostile build script — stops there instead of
/// taking the machine's pid space).
pub fn kubelet_config(node: &NodeInfo, ca_file: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {addr}
port: {port}
readOnlyPort: 0
healthzPort: 0
cgroupDriver: cgroupfs
cgroupRoot: {cgroup}
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
makeIPTablesUtilChains: false
serializeImagePulls: false
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 20s
runtimeRequestTimeout: 2m
containerLogMaxSize: 10Mi
containerLogMaxFiles: 3
maxPods: 110
podPidsLimit: 1024
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
evictionHard:
  memory.available: 100Mi
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
volumePluginDir: {plugins}
"#,
        addr = node.name,
        port = node.kubelet_port,
        cgroup = node.pods_cgroup,
        ca = ca_file.display(),
        plugins = node.dir.join("volume-plugins").display(),
    )
}

/// The registry (Debian's `docker-registry`, distribution 2.8) on loopback, serving the shared
/// storage that `make images` pushes into.
pub fn registry_config(root: &Path, port: u16) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
",
        root = root.display()
    )
}

/// The RuntimeClass for Wasm pods: handler `wasmfn`, scheduled onto nodes labelled as WasmEdge
/// nodes.
pub fn runtime_class(label: &str) -> String {
    format!(
        "apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: {WASM_RUNTIME_CLASS}
handler: {WASM_RUNTIME_CLASS}
scheduling:
  nodeSelector:
    {label}: \"true\"
"
    )
}

/// The image reference a pod uses for a project image built by `make images`.
pub fn image_ref(name: &str) -> String {
    format!("{IMAGE_REGISTRY}/{name}:dev")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::layout::{ClusterInfo, Ports};
    use std::path::PathBuf;

    fn info() -> ClusterInfo {
        ClusterInfo::new(
            "0123abcd",
            &PathBuf::from("/tmp/wasmfn-0123abcd"),
            &PathBuf::from("/cache"),
            Ports::made_up(),
        )
    }

    #[test]
    fn only_the_wasmedge_node_gets_the_wasm_handler() {
        let info = info();
        let a = containerd_config(info.wasmedge_node()).expect("node A");
        let b = containerd_config(info.plain_node()).expect("node B");
        assert!(a.contains("runtimes.wasmfn]"));
        assert!(a.contains(r#"runtime_type = "io.containerd.wasmfn.v1""#));
        assert!(!b.contains("wasmfn.v1"));
        for config in [&a, &b] {
            assert!(config.contains("restrict_oom_score_adj = true"));
            assert!(config.contains(r#"sandbox_image = "wasmfn.local/pause:3.8""#));
        }
        assert!(a.contains("/tmp/wasmfn-0123abcd/node-a/containerd.sock"));
        assert!(b.contains("/tmp/wasmfn-0123abcd/node-b/containerd/root"));
    }

    #[test]
    fn pod_network_has_no_gateway_and_no_masquerade() {
        let info = info();
        let conf: serde_json::Value =
            serde_json::from_str(&cni_conflist(info.plain_node())).expect("valid JSON");
        let bridge = &conf["plugins"][0];
        assert_eq!(bridge["isGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["bridge"], "wfn0123abcdb");
        assert!(
            bridge["bridge"].as_str().map(str::len) <= Some(15),
            "Linux interface names are at most 15 bytes"
        );
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.1.0/24");
    }

    #[test]
    fn nodes_are_distinct_everywhere_they_could_collide() {
        let info = info();
        let (a, b) = (info.wasmedge_node(), info.plain_node());
        assert_ne!(a.name, b.name);
        assert_ne!(a.bridge, b.bridge);
        assert_ne!(a.pods_cgroup, b.pods_cgroup);
        assert_ne!(a.runtime_cgroup, b.runtime_cgroup);
        assert_ne!(a.pod_subnet, b.pod_subnet);
        assert_ne!(a.containerd_socket, b.containerd_socket);
        let ka = kubelet_config(a, &PathBuf::from("/ca.crt"));
        assert!(ka.contains("address: 127.0.0.2\nport: 5\n"));
        assert!(ka.contains("cgroupRoot: /wasmfn-0123abcd-a\n"));
        assert!(ka.contains("clientCAFile: /ca.crt"));
        assert!(ka.contains("makeIPTablesUtilChains: false"));
    }

    #[test]
    fn tokens_put_kubelets_in_system_nodes() {
        let file = token_file("adm", &[("127.0.0.2".into(), "t2".into())]);
        assert_eq!(
            file,
            "adm,admin,admin,\"system:masters\"\nt2,system:node:127.0.0.2,node-127.0.0.2,\"system:nodes\"\n"
        );
    }

    #[test]
    fn registry_hosts_point_at_the_clusters_port() {
        let hosts = registry_hosts(5123);
        assert!(hosts.starts_with("server = \"http://127.0.0.1:5123\"\n"));
        assert!(hosts.contains("[host.\"http://127.0.0.1:5123\"]"));
    }
}
