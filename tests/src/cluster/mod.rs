//! A real two-node Kubernetes cluster on one machine.
//!
//! One process — the supervisor, `wasmfn-cluster supervise` — owns every component of a cluster.
//! Tests start it through [`Cluster::start`] with a pipe on its stdin: when the test process ends
//! (normally, by panic, or killed) the pipe closes and the supervisor tears the cluster down;
//! [`Drop`] does the same explicitly. `make cluster-up` starts a detached supervisor that stops on
//! SIGTERM (`make cluster-down`). Every component also dies with the supervisor (parent-death
//! signal), and containers are killed by cgroup, so nothing outlives a cluster.

pub mod cgroups;
pub mod config;
pub mod layout;
pub mod pki;
pub mod process;
pub mod supervisor;

pub use layout::{ClusterInfo, NodeInfo, Ports};

use crate::error::{Error, Result};
use crate::kubectl::Kubectl;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The line the supervisor prints on stdout once the cluster is up.
pub const READY_LINE: &str = "READY";

/// The setup cache (`make setup` fills it): `$WASMFN_CACHE` or `~/.cache/wasmfn`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WASMFN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/wasmfn")
        })
}

/// Picks free TCP ports (held open together so they are distinct).
pub fn free_ports(kubelet_a: &str, kubelet_b: &str) -> Result<Ports> {
    let bind = |addr: &str| {
        TcpListener::bind((addr, 0)).map_err(Error::io(format!("bind a free port on {addr}")))
    };
    let held = [
        bind("127.0.0.1")?,
        bind("127.0.0.1")?,
        bind("127.0.0.1")?,
        bind("127.0.0.1")?,
        bind(kubelet_a)?,
        bind(kubelet_b)?,
    ];
    let port = |i: usize| -> Result<u16> {
        held[i]
            .local_addr()
            .map(|a| a.port())
            .map_err(Error::io("read bound port"))
    };
    Ok(Ports {
        etcd_client: port(0)?,
        etcd_peer: port(1)?,
        apiserver: port(2)?,
        registry: port(3)?,
        kubelet_a: port(4)?,
        kubelet_b: port(5)?,
    })
}

/// Lays out a new cluster in a fresh state directory under `parent`.
pub fn plan(state_dir: Option<&Path>) -> Result<ClusterInfo> {
    let id = pki::random_hex(4)?;
    let state_dir = match state_dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            remove_abandoned(&std::env::temp_dir());
            std::env::temp_dir().join(format!("wasmfn-{id}"))
        }
    };
    std::fs::create_dir_all(&state_dir)
        .map_err(Error::io(format!("create {}", state_dir.display())))?;
    let ports = free_ports("127.0.0.2", "127.0.0.3")?;
    Ok(ClusterInfo::new(&id, &state_dir, &cache_dir(), ports))
}

/// Removes the state directories (and etcd data) that clusters under `parent` left when their
/// supervisor was killed outright (a CI run stopped at its time limit, a session's end): each
/// holds both nodes' unpacked images, GiBs a piece. A directory is left alone while its
/// supervisor runs, while a process of the cluster is still in its cgroups, or while anything
/// is mounted below it; its `logs/` stay behind as `<dir>.logs`, like after a normal teardown.
pub fn remove_abandoned(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_state_dir = entry.file_name().to_string_lossy().starts_with("wasmfn-")
            && dir.extension().is_none()
            && dir.is_dir();
        let Ok(info) = read_info(&ClusterInfo::info_file(&dir)) else {
            continue;
        };
        let abandoned = is_state_dir
            && info.state_dir == dir
            && info
                .supervisor_pid
                .is_some_and(|pid| !process::is_running(pid, "wasmfn-cluster"))
            && info.nodes.iter().all(|n| {
                cgroups::pids_below(&n.pods_cgroup).is_empty()
                    && cgroups::pids_below(&n.runtime_cgroup).is_empty()
            })
            && !mounted_below(&mounts, &dir);
        if abandoned {
            eprintln!(
                "removing the state of cluster {}, whose supervisor is gone",
                info.id
            );
            for n in &info.nodes {
                cgroups::remove(&n.pods_cgroup);
                cgroups::remove(&n.runtime_cgroup);
            }
            let _ = std::fs::remove_dir_all(info.etcd_dir());
            supervisor::remove_state(&dir);
        }
    }
}

/// Whether `/proc/self/mountinfo` text lists a mount point inside `dir`.
fn mounted_below(mountinfo: &str, dir: &Path) -> bool {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|point| Path::new(point).starts_with(dir))
}

/// A running cluster owned by this process.
#[derive(Debug)]
pub struct Cluster {
    info: ClusterInfo,
    supervisor: Child,
    control: Option<ChildStdin>,
    /// The supervisor's stdout after `READY`: acknowledgements of control commands.
    acknowledgements: std::io::Lines<BufReader<ChildStdout>>,
}

impl Cluster {
    /// Starts a cluster with the supervisor binary at `supervisor_binary` (in a test:
    /// `env!("CARGO_BIN_EXE_wasmfn-cluster")`), waiting until both nodes are Ready.
    pub fn start(supervisor_binary: &Path) -> Result<Cluster> {
        let mut child = Command::new(supervisor_binary)
            .arg("supervise")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(Error::io(format!("start {}", supervisor_binary.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Cluster("no stdout".into()))?;
        let control = child.stdin.take();
        let mut lines = BufReader::new(stdout).lines();
        let info_path = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(path) = line.strip_prefix(READY_LINE).map(str::trim) {
                        break PathBuf::from(path);
                    }
                }
                Some(Err(e)) => return Err(Error::io("read supervisor output")(e)),
                None => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(Error::Cluster(format!(
                        "the cluster supervisor exited ({status}) before the cluster was ready; its messages are above"
                    )));
                }
            }
        };
        let info = read_info(&info_path)?;
        Ok(Cluster {
            info,
            supervisor: child,
            control,
            acknowledgements: lines,
        })
    }

    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// An admin `kubectl` for this cluster.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(self.info.kubectl_path(), self.info.kubeconfig())
    }

    /// Creates namespace `name`, waits for its default service account (pods need it) and
    /// returns a `kubectl` bound to it.
    pub fn namespace(&self, name: &str) -> Result<Kubectl> {
        let kubectl = self.kubectl();
        kubectl.run(&["create", "namespace", name])?;
        let ns = kubectl.in_namespace(name);
        ns.wait_for(
            &["serviceaccount", "default"],
            Duration::from_secs(30),
            |_| Some(()),
        )?;
        Ok(ns)
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let pipe = self
            .control
            .as_mut()
            .ok_or_else(|| Error::Cluster("supervisor already shut down".into()))?;
        writeln!(pipe, "{line}").map_err(Error::io("write to the supervisor"))
    }

    /// Stops node `name`'s kubelet (the node goes NotReady; its containers keep running).
    pub fn stop_kubelet(&mut self, name: &str) -> Result<()> {
        self.send(&format!("stop-kubelet {name}"))
    }

    /// Starts node `name`'s kubelet again.
    pub fn start_kubelet(&mut self, name: &str) -> Result<()> {
        self.send(&format!("start-kubelet {name}"))
    }

    /// Restarts node `name`'s containerd (and its kubelet), as the node installer's restart step
    /// does on a real node; returns once the new containerd serves its socket.
    pub fn restart_containerd(&mut self, name: &str) -> Result<()> {
        self.acknowledged(&format!("restart-containerd {name}"))
    }

    /// Restarts the API server (stopped with SIGTERM, started again with the same flags over the
    /// same etcd); returns once the new one answers `/readyz`. Every watch open on it ends.
    pub fn restart_apiserver(&mut self) -> Result<()> {
        self.acknowledged("restart-apiserver")
    }

    /// Sends `command` and waits for the supervisor's acknowledgement of it.
    fn acknowledged(&mut self, command: &str) -> Result<()> {
        self.send(command)?;
        for line in self.acknowledgements.by_ref() {
            let line = line.map_err(Error::io("read supervisor output"))?;
            if line == format!("{}{command}", supervisor::ACK_PREFIX[0]) {
                return Ok(());
            }
            if let Some(error) = line.strip_prefix(supervisor::ACK_PREFIX[1]) {
                return Err(Error::Cluster(error.to_string()));
            }
        }
        Err(Error::Cluster(format!(
            "the supervisor exited before acknowledging `{command}`"
        )))
    }

    /// Tears the cluster down and waits for the supervisor to finish.
    pub fn shutdown(&mut self) {
        // Closing stdin is the shutdown signal.
        self.control.take();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.supervisor.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reads `cluster.json`.
pub fn read_info(path: &Path) -> Result<ClusterInfo> {
    let text =
        std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn leave_state(parent: &Path, id: &str, supervisor_pid: u32) -> PathBuf {
        let dir = parent.join(format!("wasmfn-{id}"));
        let mut info = ClusterInfo::new(id, &dir, parent, Ports::made_up());
        info.supervisor_pid = Some(supervisor_pid);
        std::fs::create_dir_all(dir.join("logs")).expect("writes the fake state");
        std::fs::create_dir_all(dir.join("node-a/containerd")).expect("writes the fake state");
        std::fs::write(dir.join("logs/etcd.log"), "etcd").expect("writes the fake state");
        std::fs::write(
            ClusterInfo::info_file(&dir),
            serde_json::to_string(&info).expect("cluster info serialises"),
        )
        .expect("writes the fake state");
        dir
    }

    #[test]
    fn a_dead_supervisors_state_is_removed_but_its_logs_are_kept() {
        let parent = tempfile::tempdir().expect("a temporary directory");
        // A child that has exited: its pid names no running wasmfn-cluster.
        let mut gone = Command::new("true").spawn().expect("true starts");
        gone.wait().expect("true exits");
        let dir = leave_state(parent.path(), "deadbeef", gone.id());
        remove_abandoned(parent.path());
        assert!(!dir.exists());
        let kept = parent.path().join("wasmfn-deadbeef.logs/etcd.log");
        assert_eq!(std::fs::read_to_string(kept).expect("the kept log"), "etcd");
    }

    #[test]
    fn a_running_supervisors_state_and_unknown_directories_are_left_alone() {
        let parent = tempfile::tempdir().expect("a temporary directory");
        // This test binary's command line does not mention wasmfn-cluster, so use a child
        // whose does.
        let mut alive = Command::new("sleep")
            .arg("30")
            .arg0("wasmfn-cluster")
            .spawn()
            .expect("sleep starts");
        let dir = leave_state(parent.path(), "0a11ce00", alive.id());
        let other = parent.path().join("wasmfn-notacluster");
        std::fs::create_dir_all(&other).expect("writes the fake state");
        // spawn returns once exec began; the new command line shows a moment later.
        for _ in 0..500 {
            if process::is_running(alive.id(), "wasmfn-cluster") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        remove_abandoned(parent.path());
        let _ = alive.kill();
        let _ = alive.wait();
        assert!(dir.join("node-a/containerd").is_dir());
        assert!(other.is_dir());
    }

    #[test]
    fn a_mount_inside_a_state_directory_is_found() {
        let mountinfo = "36 35 98:0 / /tmp/wasmfn-1/node-a/containerd/x rw - overlay overlay rw\n\
                         37 35 98:0 / /tmp/wasmfn-10 rw - tmpfs tmpfs rw\n";
        assert!(mounted_below(mountinfo, Path::new("/tmp/wasmfn-1")));
        assert!(!mounted_below(mountinfo, Path::new("/tmp/wasmfn-2")));
        assert!(mounted_below(mountinfo, Path::new("/tmp/wasmfn-10")));
    }
}
