//! The process that owns a cluster: starts every component in order, waits until both nodes are
//! Ready, serves a few control commands, and tears everything down — on SIGTERM/SIGINT, or when
//! the test process that started it goes away (its stdin closes).

use super::config;
use super::layout::{ClusterInfo, NodeInfo, WASMEDGE_NODE_LABEL};
use super::process::{run, tail, Process};
use super::{cgroups, pki};
use crate::error::{Error, Result};
use crate::kubectl::Kubectl;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Commands accepted on the supervisor's stdin, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `stop-kubelet <node>`: the node goes NotReady, its pods keep running.
    StopKubelet(String),
    /// `start-kubelet <node>`.
    StartKubelet(String),
    /// `restart-containerd <node>`: what `systemctl restart containerd` is on a real node (the
    /// node installer's restart step), with the node's kubelet restarted too so it keeps sharing
    /// containerd's mount namespace. Acknowledged on stdout with [`ACK_PREFIX`].
    RestartContainerd(String),
    /// `restart-apiserver`: the API server stopped (SIGTERM, as a control-plane upgrade or a
    /// static pod's restart does) and started again with the same flags, over the same etcd.
    /// Acknowledged on stdout with [`ACK_PREFIX`] once the new one answers `/readyz`.
    RestartApiserver,
    /// stdin closed or `shutdown`.
    Shutdown,
}

impl Control {
    pub fn parse(line: &str) -> Option<Control> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("stop-kubelet"), Some(node)) => Some(Control::StopKubelet(node.into())),
            (Some("start-kubelet"), Some(node)) => Some(Control::StartKubelet(node.into())),
            (Some("restart-containerd"), Some(node)) => {
                Some(Control::RestartContainerd(node.into()))
            }
            (Some("restart-apiserver"), None) => Some(Control::RestartApiserver),
            (Some("shutdown"), None) => Some(Control::Shutdown),
            _ => None,
        }
    }
}

/// Starts the supervisor's stdout line acknowledging a control command: `DONE <command>` or
/// `FAILED <command>: <error>`.
pub const ACK_PREFIX: [&str; 2] = ["DONE ", "FAILED "];

struct RunningNode {
    info: NodeInfo,
    containerd: Process,
    kubelet: Option<Process>,
}

/// A cluster being brought up or running. Dropping it tears it down.
pub struct Supervisor {
    info: ClusterInfo,
    control_plane: Vec<Process>,
    nodes: Vec<RunningNode>,
    kubectl: Kubectl,
    keep_state: bool,
    torn_down: bool,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("id", &self.info.id)
            .finish()
    }
}

fn require(path: &Path) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(Error::Prerequisite(format!(
            "{} (make setup provides it)",
            path.display()
        )))
    }
}

fn require_command(name: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(Error::Prerequisite(format!(
            "`{name}` on PATH (make setup installs it)"
        )))
    }
}

/// The project's containerd shim, built next to this binary (`cargo build` builds both), or
/// named by `WASMFN_SHIM_BINARY`.
fn shim_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("WASMFN_SHIM_BINARY") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(Error::io("find the supervisor's own binary"))?
            .with_file_name(SHIM_BINARY),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Prerequisite(format!(
            "{} (build it: cargo build -p containerd-shim-wasmfn)",
            path.display()
        )))
    }
}

/// Name containerd derives from runtime type `io.containerd.wasmfn.v1`.
pub const SHIM_BINARY: &str = "containerd-shim-wasmfn-v1";

/// Puts the shim on the WasmEdge node's containerd PATH (the node's own `bin/`), the way the node
/// installer puts it on a real node's host.
fn install_shim(node: &NodeInfo, shim: &Path) -> Result<()> {
    let bin = node.dir.join("bin");
    mkdir(&bin)?;
    let target = bin.join(SHIM_BINARY);
    std::fs::copy(shim, &target).map_err(Error::io(format!("install {}", target.display())))?;
    Ok(())
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: what.into(),
                seconds: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("create {}", parent.display())))?;
    }
    std::fs::write(path, contents).map_err(Error::io(format!("write {}", path.display())))
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io(format!("create {}", path.display())))
}

/// The API server's name among the control-plane processes (and its log's).
const APISERVER: &str = "kube-apiserver";

/// The API server's command line: the same at start and at every restart.
fn apiserver_command(info: &ClusterInfo) -> Command {
    let pki = info.pki_dir();
    let client = format!("http://127.0.0.1:{}", info.etcd_client_port);
    let mut apiserver = Command::new(info.binary(APISERVER));
    apiserver
        .arg(format!("--etcd-servers={client}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={}", info.apiserver_port))
        .arg("--insecure-port=0")
        .arg(format!(
            "--tls-cert-file={}",
            pki.join("apiserver.crt").display()
        ))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.join("apiserver.key").display()
        ))
        .arg(format!("--client-ca-file={}", pki.join("ca.crt").display()))
        .arg(format!(
            "--token-auth-file={}",
            pki.join("tokens.csv").display()
        ))
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!(
            "--service-account-key-file={}",
            pki.join("sa.pub").display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki.join("sa.key").display()
        ))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--enable-admission-plugins=NodeRestriction")
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg(format!(
            "--kubelet-client-certificate={}",
            pki.join("kubelet-client.crt").display()
        ))
        .arg(format!(
            "--kubelet-client-key={}",
            pki.join("kubelet-client.key").display()
        ))
        .arg("--kubelet-preferred-address-types=InternalIP,Hostname")
        .arg("--allow-privileged=true")
        .arg("--profiling=false")
        .arg("--v=1");
    apiserver
}

impl Supervisor {
    /// Brings the whole cluster up; returns once both nodes are Ready.
    pub fn start(mut info: ClusterInfo, keep_state: bool) -> Result<Supervisor> {
        for b in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kubectl",
        ] {
            require(&info.binary(b))?;
        }
        require(&info.pause_archive)?;
        for c in [
            "etcd",
            "containerd",
            "runc",
            "ctr",
            "docker-registry",
            "openssl",
            "unshare",
            "nsenter",
            "ip",
        ] {
            require_command(c)?;
        }
        require(Path::new("/usr/lib/cni/bridge"))?;
        let shim = shim_binary()?;

        info.supervisor_pid = Some(std::process::id());
        mkdir(&info.logs_dir())?;
        mkdir(&info.registry_root)?;
        let pki_dir = info.pki_dir();
        pki::generate(&pki_dir)?;
        let ca = pki_dir.join("ca.crt");
        let admin_token = pki::random_hex(16)?;
        let node_tokens = info
            .nodes
            .iter()
            .map(|n| Ok((n.name.clone(), pki::random_hex(16)?)))
            .collect::<Result<Vec<_>>>()?;
        write(
            &pki_dir.join("tokens.csv"),
            &config::token_file(&admin_token, &node_tokens),
        )?;
        write(
            &info.kubeconfig(),
            &config::kubeconfig(&info.apiserver_url(), &ca, "admin", &admin_token),
        )?;
        for (node, (_, token)) in info.nodes.iter().zip(&node_tokens) {
            let user = format!("system:node:{}", node.name);
            write(
                &node.kubeconfig(),
                &config::kubeconfig(&info.apiserver_url(), &ca, &user, token),
            )?;
        }
        write(&ClusterInfo::info_file(&info.state_dir), &to_json(&info))?;

        let kubectl = Kubectl::new(info.kubectl_path(), info.kubeconfig());
        let mut sup = Supervisor {
            info,
            control_plane: Vec::new(),
            nodes: Vec::new(),
            kubectl,
            keep_state,
            torn_down: false,
        };
        sup.start_control_plane()?;
        let node_infos = sup.info.nodes.clone();
        for node in &node_infos {
            if node.wasmedge {
                install_shim(node, &shim)?;
            }
            sup.start_node(node)?;
        }
        sup.wait_for_nodes_ready(Duration::from_secs(120))?;
        sup.configure_cluster_objects()?;
        Ok(sup)
    }

    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    fn log(&self, name: &str) -> PathBuf {
        self.info.logs_dir().join(format!("{name}.log"))
    }

    fn start_control_plane(&mut self) -> Result<()> {
        let info = self.info.clone();
        let pki = info.pki_dir();
        let etcd_dir = info.etcd_dir();
        let client = format!("http://127.0.0.1:{}", info.etcd_client_port);
        let peer = format!("http://127.0.0.1:{}", info.etcd_peer_port);
        let mut etcd = Command::new("etcd");
        etcd.arg("--name=default")
            .arg(format!("--data-dir={}", etcd_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--quota-backend-bytes=4294967296")
            .arg("--log-level=warn");
        self.control_plane
            .push(Process::spawn("etcd", etcd, &self.log("etcd"))?);

        let registry_config = info.state_dir.join("registry.yaml");
        write(
            &registry_config,
            &config::registry_config(&info.registry_root, info.registry_port),
        )?;
        let mut registry = Command::new("docker-registry");
        registry.arg("serve").arg(&registry_config);
        self.control_plane
            .push(Process::spawn("registry", registry, &self.log("registry"))?);

        let apiserver = apiserver_command(&info);
        self.control_plane
            .push(Process::spawn(APISERVER, apiserver, &self.log(APISERVER))?);
        let took = self.wait_for_apiserver()?;
        eprintln!("apiserver ready in {:.1}s", took.as_secs_f64());

        let kubeconfig = format!("--kubeconfig={}", info.kubeconfig().display());
        let mut cm = Command::new(info.binary("kube-controller-manager"));
        cm.arg(&kubeconfig)
            .args(["--bind-address=127.0.0.1", "--secure-port=0", "--port=0", "--leader-elect=false"])
            .arg(format!("--service-account-private-key-file={}", pki.join("sa.key").display()))
            .arg(format!("--root-ca-file={}", pki.join("ca.crt").display()))
            .arg("--controllers=*,-nodeipam,-service,-route,-cloud-node-lifecycle,-bootstrapsigner,-tokencleaner")
            .arg("--use-service-account-credentials=false")
            .arg("--node-monitor-period=2s")
            .arg("--node-monitor-grace-period=20s")
            .arg("--v=1");
        self.control_plane.push(Process::spawn(
            "kube-controller-manager",
            cm,
            &self.log("kube-controller-manager"),
        )?);
        let mut scheduler = Command::new(info.binary("kube-scheduler"));
        scheduler.arg(&kubeconfig).args([
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--port=0",
            "--leader-elect=false",
            "--v=1",
        ]);
        self.control_plane.push(Process::spawn(
            "kube-scheduler",
            scheduler,
            &self.log("kube-scheduler"),
        )?);
        Ok(())
    }

    fn start_node(&mut self, node: &NodeInfo) -> Result<()> {
        let info = self.info.clone();
        for dir in [
            node.dir.clone(),
            node.cni_dir(),
            node.kubelet_root(),
            node.pod_logs_dir(),
            node.container_logs_dir(),
            node.registry_hosts_dir()
                .join(super::layout::IMAGE_REGISTRY),
        ] {
            mkdir(&dir)?;
        }
        // Bind-mount targets; each node mounts its own directory over them in its namespace.
        mkdir(Path::new("/var/log/pods"))?;
        mkdir(Path::new("/var/log/containers"))?;
        let containerd_config = config::containerd_config(node)
            .map_err(|e| Error::Cluster(format!("containerd config of node {}: {e}", node.name)))?;
        write(&node.containerd_config(), &containerd_config)?;
        write(
            &node.cni_dir().join("10-wasmfn.conflist"),
            &config::cni_conflist(node),
        )?;
        write(
            &node
                .registry_hosts_dir()
                .join(super::layout::IMAGE_REGISTRY)
                .join("hosts.toml"),
            &config::registry_hosts(info.registry_port),
        )?;
        write(
            &node.kubelet_config(),
            &config::kubelet_config(node, &info.pki_dir().join("ca.crt")),
        )?;
        cgroups::create(&node.pods_cgroup)?;
        cgroups::create(&node.runtime_cgroup)?;

        let containerd = self.spawn_containerd(node)?;
        run(Command::new("ctr")
            .arg("--address")
            .arg(&node.containerd_socket)
            .args(["-n", "k8s.io", "images", "import", "--all-platforms"])
            .arg(&info.pause_archive))?;
        let kubelet = self.spawn_kubelet(node, containerd.pid())?;
        self.nodes.push(RunningNode {
            info: node.clone(),
            containerd,
            kubelet: Some(kubelet),
        });
        Ok(())
    }

    /// Starts the node's containerd and waits for its socket.
    fn spawn_containerd(&self, node: &NodeInfo) -> Result<Process> {
        // containerd in a mount namespace of its own with private /var/log/pods and
        // /var/log/containers (two kubelets sharing them delete each other's pod logs), and in the
        // node's runtime cgroup so teardown finds its shims.
        let join_cgroup: String = cgroups::hierarchies()
            .iter()
            .map(|h| {
                format!(
                    "echo $$ > '{}/cgroup.procs' && ",
                    h.join(node.runtime_cgroup.trim_start_matches('/'))
                        .display()
                )
            })
            .collect();
        let script = format!(
            "{join_cgroup}mount --bind '{}' /var/log/pods && mount --bind '{}' /var/log/containers && exec \"$@\"",
            node.pod_logs_dir().display(),
            node.container_logs_dir().display()
        );
        let mut containerd = Command::new("unshare");
        containerd
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                &script,
                "sh",
            ])
            .arg("containerd")
            .arg("--config")
            .arg(node.containerd_config());
        // The node's own bin/ (the shim on the WasmEdge node) comes first on containerd's PATH.
        if let Some(path) = std::env::var_os("PATH") {
            let mut paths = vec![node.dir.join("bin")];
            paths.extend(std::env::split_paths(&path));
            containerd.env(
                "PATH",
                std::env::join_paths(paths).map_err(|e| Error::Cluster(e.to_string()))?,
            );
        }
        let mut containerd = Process::spawn(
            &format!("containerd ({})", node.name),
            containerd,
            &self.log(&format!("containerd-{}", node.key)),
        )?;
        let socket = node.containerd_socket.clone();
        wait_until(
            &format!("containerd of node {}", node.name),
            Duration::from_secs(30),
            || {
                containerd.check_alive()?;
                Ok(socket.exists())
            },
        )?;
        Ok(containerd)
    }

    fn spawn_kubelet(&self, node: &NodeInfo, containerd_pid: u32) -> Result<Process> {
        let endpoint = format!("unix://{}", node.containerd_socket.display());
        let mut kubelet = Command::new("nsenter");
        kubelet
            .arg(format!("--target={containerd_pid}"))
            .args(["--mount", "--"])
            .arg(self.info.binary("kubelet"))
            .arg(format!("--config={}", node.kubelet_config().display()))
            .arg(format!("--kubeconfig={}", node.kubeconfig().display()))
            .arg("--container-runtime=remote")
            .arg(format!("--container-runtime-endpoint={endpoint}"))
            .arg(format!("--image-service-endpoint={endpoint}"))
            .arg(format!("--hostname-override={}", node.name))
            .arg(format!("--root-dir={}", node.kubelet_root().display()))
            .arg(format!(
                "--cert-dir={}",
                node.dir.join("kubelet-pki").display()
            ))
            .arg("--v=1");
        Process::spawn(
            &format!("kubelet ({})", node.name),
            kubelet,
            &self.log(&format!("kubelet-{}", node.key)),
        )
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut RunningNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.info.name == name || n.info.key == name)
            .ok_or_else(|| Error::Cluster(format!("no node {name}")))
    }

    /// Stops a node's kubelet (its containers keep running, the node goes NotReady).
    pub fn stop_kubelet(&mut self, name: &str) -> Result<()> {
        let node = self.node_mut(name)?;
        if let Some(mut kubelet) = node.kubelet.take() {
            kubelet.stop(Duration::from_secs(10));
        }
        Ok(())
    }

    /// Restarts a node's containerd (it rereads its config) and, after it, the node's kubelet.
    /// Running containers survive, as they do a real containerd restart: their shims are not
    /// containerd's children.
    pub fn restart_containerd(&mut self, name: &str) -> Result<()> {
        let info = {
            let node = self.node_mut(name)?;
            if let Some(mut kubelet) = node.kubelet.take() {
                kubelet.stop(Duration::from_secs(10));
            }
            node.containerd.stop(Duration::from_secs(10));
            node.info.clone()
        };
        // Its socket must be the new containerd's before the kubelet connects.
        let _ = std::fs::remove_file(&info.containerd_socket);
        let containerd = self.spawn_containerd(&info)?;
        let kubelet = self.spawn_kubelet(&info, containerd.pid())?;
        let node = self.node_mut(name)?;
        node.containerd = containerd;
        node.kubelet = Some(kubelet);
        Ok(())
    }

    /// Starts a node's kubelet again.
    pub fn start_kubelet(&mut self, name: &str) -> Result<()> {
        let (info, pid) = {
            let node = self.node_mut(name)?;
            if node.kubelet.is_some() {
                return Ok(());
            }
            (node.info.clone(), node.containerd.pid())
        };
        let kubelet = self.spawn_kubelet(&info, pid)?;
        self.node_mut(name)?.kubelet = Some(kubelet);
        Ok(())
    }

    /// Waits until the API server answers `/readyz` (failing at once if a control-plane process
    /// died); how long that took.
    fn wait_for_apiserver(&mut self) -> Result<Duration> {
        let kubectl = self.kubectl.clone();
        let started = Instant::now();
        let control_plane = &mut self.control_plane;
        wait_until("the apiserver's /readyz", Duration::from_secs(60), || {
            for p in control_plane.iter_mut() {
                p.check_alive()?;
            }
            Ok(kubectl
                .run(&["get", "--raw", "/readyz"])
                .map(|s| s.trim() == "ok")
                .unwrap_or(false))
        })?;
        Ok(started.elapsed())
    }

    /// Stops the API server (SIGTERM; SIGKILL after 10 s) and starts it again with the same
    /// command line; returns once the new one answers `/readyz`. Every client's connection and
    /// watch breaks meanwhile; etcd, and so every object, stays.
    pub fn restart_apiserver(&mut self) -> Result<()> {
        let index = self
            .control_plane
            .iter()
            .position(|p| p.name == APISERVER)
            .ok_or_else(|| Error::Cluster("no API server process".into()))?;
        let started = Instant::now();
        self.control_plane[index].stop(Duration::from_secs(10));
        let stopped = started.elapsed();
        // Same place in the list: teardown stops the control plane in reverse start order.
        self.control_plane[index] = Process::spawn(
            APISERVER,
            apiserver_command(&self.info),
            &self.log(APISERVER),
        )?;
        let ready = self.wait_for_apiserver()?;
        eprintln!(
            "apiserver restarted: stopped in {:.1}s, ready {:.1}s later",
            stopped.as_secs_f64(),
            ready.as_secs_f64()
        );
        Ok(())
    }

    fn wait_for_nodes_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let names: Vec<String> = self.info.nodes.iter().map(|n| n.name.clone()).collect();
        let kubectl = self.kubectl.clone();
        let nodes = &mut self.nodes;
        wait_until("both nodes to be Ready", timeout, || {
            for n in nodes.iter_mut() {
                n.containerd.check_alive()?;
                if let Some(k) = n.kubelet.as_mut() {
                    k.check_alive()?;
                }
            }
            let Ok(list) = kubectl.json(&["get", "nodes"]) else {
                return Ok(false);
            };
            let ready = names.iter().all(|name| {
                list["items"].as_array().into_iter().flatten().any(|node| {
                    node["metadata"]["name"] == name.as_str()
                        && node["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            });
            Ok(ready)
        })?;
        eprintln!(
            "both nodes Ready {:.1}s after the control plane",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn configure_cluster_objects(&self) -> Result<()> {
        let a = self.info.wasmedge_node();
        self.kubectl.run(&[
            "label",
            "node",
            &a.name,
            &format!("{WASMEDGE_NODE_LABEL}=true"),
            "--overwrite",
        ])?;
        self.kubectl
            .apply(&config::runtime_class(WASMEDGE_NODE_LABEL))?;
        Ok(())
    }

    /// Reports components that died, so a crash shows up in the supervisor's log at once.
    pub fn check_components(&mut self) -> Vec<String> {
        let mut dead = Vec::new();
        for p in &mut self.control_plane {
            if let Some(status) = p.exited() {
                dead.push(format!(
                    "{} exited ({status}):\n{}",
                    p.name,
                    tail(&p.log, 20)
                ));
            }
        }
        for n in &mut self.nodes {
            if let Some(status) = n.containerd.exited() {
                dead.push(format!("{} exited ({status})", n.containerd.name));
            }
        }
        dead
    }

    /// Stops everything: kubelets, every container (by cgroup), containerds, the control plane;
    /// removes bridges, cgroups and (unless asked to keep it) the state directory.
    pub fn teardown(&mut self) {
        if std::mem::replace(&mut self.torn_down, true) {
            return;
        }
        for node in &mut self.nodes {
            if let Some(mut k) = node.kubelet.take() {
                k.stop(Duration::from_secs(5));
            }
        }
        for node in &self.info.nodes {
            cgroups::kill_all(&node.pods_cgroup);
        }
        for node in &mut self.nodes {
            node.containerd.stop(Duration::from_secs(5));
        }
        for node in &self.info.nodes {
            cgroups::kill_all(&node.runtime_cgroup);
            cgroups::remove(&node.pods_cgroup);
            cgroups::remove(&node.runtime_cgroup);
            let _ = Command::new("ip")
                .args(["link", "delete", &node.bridge])
                .stderr(std::process::Stdio::null())
                .status();
        }
        self.nodes.clear();
        while let Some(mut p) = self.control_plane.pop() {
            p.stop(Duration::from_secs(5));
        }
        if !self.keep_state {
            let _ = std::fs::remove_dir_all(self.info.etcd_dir());
            remove_state(&self.info.state_dir);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes a cluster's state directory but keeps its `logs/` next to it (as `<dir>.logs`) for
/// post-mortems; container images and filesystems are what take the space.
pub fn remove_state(dir: &Path) {
    let logs = dir.join("logs");
    let kept = dir.with_extension("logs");
    let _ = std::fs::remove_dir_all(&kept);
    let _ = std::fs::rename(&logs, &kept);
    let _ = std::fs::remove_dir_all(dir);
}

fn to_json(info: &ClusterInfo) -> String {
    serde_json::to_string_pretty(info).unwrap_or_default()
}

/// Runs the supervisor loop until shutdown. `ready` is called once the cluster is up.
pub fn serve(
    info: ClusterInfo,
    keep_state: bool,
    commands: Receiver<Control>,
    terminate: Arc<AtomicBool>,
    ready: impl FnOnce(&ClusterInfo),
) -> Result<()> {
    let mut sup = Supervisor::start(info, keep_state)?;
    write(
        &ClusterInfo::info_file(&sup.info.state_dir),
        &to_json(&sup.info),
    )?;
    ready(&sup.info);
    let mut reported = 0;
    loop {
        if terminate.load(Ordering::SeqCst) {
            break;
        }
        match commands.recv_timeout(Duration::from_millis(500)) {
            Ok(Control::Shutdown) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Control::StopKubelet(node)) => report(sup.stop_kubelet(&node), "stop-kubelet"),
            Ok(Control::StartKubelet(node)) => report(sup.start_kubelet(&node), "start-kubelet"),
            Ok(Control::RestartContainerd(node)) => {
                let result = sup.restart_containerd(&node);
                acknowledge(&result, &format!("restart-containerd {node}"));
                report(result, "restart-containerd");
            }
            Ok(Control::RestartApiserver) => {
                let result = sup.restart_apiserver();
                acknowledge(&result, "restart-apiserver");
                report(result, "restart-apiserver");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let dead = sup.check_components();
        if dead.len() > reported {
            for d in &dead[reported..] {
                eprintln!("component died: {d}");
            }
            reported = dead.len();
        }
    }
    eprintln!("shutting down cluster {}", sup.info.id);
    sup.teardown();
    Ok(())
}

/// Tells the process driving the supervisor (on its stdout) that a command finished.
fn acknowledge(result: &Result<()>, command: &str) {
    use std::io::Write;
    let line = match result {
        Ok(()) => format!("{}{command}", ACK_PREFIX[0]),
        Err(e) => format!("{}{command}: {e}", ACK_PREFIX[1]),
    };
    // Nobody reads a detached supervisor's stdout; a closed pipe is not an error here.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}

fn report(result: Result<()>, what: &str) {
    match result {
        Ok(()) => eprintln!("{what}: done"),
        Err(e) => eprintln!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::Control;

    #[test]
    fn control_lines_name_a_command_and_its_node_and_nothing_else() {
        assert_eq!(
            Control::parse("restart-apiserver"),
            Some(Control::RestartApiserver)
        );
        assert_eq!(Control::parse("restart-apiserver now"), None);
        assert_eq!(
            Control::parse("restart-containerd node-a"),
            Some(Control::RestartContainerd("node-a".into()))
        );
        assert_eq!(Control::parse("restart-containerd"), None);
        assert_eq!(
            Control::parse("stop-kubelet node-b"),
            Some(Control::StopKubelet("node-b".into()))
        );
        assert_eq!(Control::parse("shutdown"), Some(Control::Shutdown));
        assert_eq!(Control::parse("reboot"), None);
    }
}
