//! The operator as the suites run it: the real `wasmfn-operator` binary (built by `make test`)
//! as a process on the host, talking to the local cluster with the admin kubeconfig, logging to
//! a file the tests can read. Stopped by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::config::image_ref;
use crate::cluster::ClusterInfo;
use crate::error::{Error, Result};

/// The CRD directory of the repository.
pub fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

/// `WASMFN_OPERATOR_BINARY`, else `target/<profile>/wasmfn-operator` next to the running test
/// binary's `deps/` directory.
pub fn operator_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WASMFN_OPERATOR_BINARY") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(Error::io("locate the test binary"))?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("wasmfn-operator"))
        .ok_or_else(|| Error::Prerequisite("no target directory".into()))?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(Error::Prerequisite(format!(
            "{} is missing: build it with `cargo build --workspace --bins` (make test does)",
            binary.display()
        )))
    }
}

/// Resident and peak memory (`VmRSS`, `VmHWM`) of process `pid`, in bytes.
pub fn process_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A running operator replica.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Option<Child>,
    /// `sh -c 'read _; kill -9 <pid>'` with its stdin held by this process: when the test
    /// process dies (a panic, a kill), the pipe closes and the operator goes with it.
    watchdog: Option<Child>,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its Lease identity.
    pub identity: String,
    /// Port of /healthz, /readyz, /metrics on 127.0.0.1.
    pub health_port: u16,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("pick a port"))?;
    Ok(listener
        .local_addr()
        .map_err(Error::io("pick a port"))?
        .port())
}

impl OperatorProcess {
    /// Starts a replica named `identity` with the suites' settings (builder image from
    /// `make images`, the cluster's registry as OCI store, Lease in `default`) plus `extra` flags.
    pub fn start(info: &ClusterInfo, identity: &str, extra: &[&str]) -> Result<OperatorProcess> {
        Self::start_with_env(info, identity, extra, &[])
    }

    /// [`OperatorProcess::start`] with extra environment variables (`OTEL_*`, say).
    pub fn start_with_env(
        info: &ClusterInfo,
        identity: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<OperatorProcess> {
        let binary = operator_binary()?;
        let health_port = free_port()?;
        let log = info.logs_dir().join(format!("operator-{identity}.log"));
        std::fs::create_dir_all(info.logs_dir()).map_err(Error::io("create the log directory"))?;
        let file =
            std::fs::File::create(&log).map_err(Error::io(format!("create {}", log.display())))?;
        let registry = format!("127.0.0.1:{}", info.registry_port);
        let builder = image_ref("builder");
        let pull_registry = builder.split('/').next().unwrap_or_default().to_owned();
        let health = format!("127.0.0.1:{health_port}");
        // The suites' settings; a flag `extra` names itself wins (a registry or builder of
        // the test's own).
        let defaults = [
            ("--oci-registry", registry.as_str()),
            ("--oci-pull-registry", pull_registry.as_str()),
            ("--oci-insecure", "true"),
            ("--builder-image", builder.as_str()),
        ];
        let child = Command::new(binary)
            .arg("run")
            .args(["--identity", identity, "--lease-namespace", "default"])
            .args(["--health-addr", &health])
            .args(
                defaults
                    .iter()
                    .filter(|(flag, _)| !extra.contains(flag))
                    .flat_map(|(flag, value)| [*flag, *value]),
            )
            .args(extra)
            .env("KUBECONFIG", info.kubeconfig())
            .env("RUST_LOG", "info,kube=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(Error::io("start wasmfn-operator"))?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!("read _ignored; kill -9 {} 2>/dev/null", child.id()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io("start the operator's watchdog"))?;
        Ok(OperatorProcess {
            child: Some(child),
            watchdog: Some(watchdog),
            log,
            identity: identity.to_owned(),
            health_port,
        })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns when it appeared (polling every 50 ms).
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return Ok(Instant::now());
            }
            if let Some(status) = self.exit_status() {
                return Err(Error::Cluster(format!(
                    "operator {} exited ({status}) before logging {needle:?}:\n{}",
                    self.identity,
                    self.log_text()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("operator log line {needle:?}"),
                    seconds: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its resident set size and peak (`VmRSS`, `VmHWM` of `/proc/<pid>/status`), in bytes.
    pub fn memory(&self) -> Option<(u64, u64)> {
        process_memory(self.child.as_ref()?.id())
    }

    /// The exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on the pid of a child this struct owns and has not reaped.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// Kills it (SIGKILL: no lease release, no cleanup) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stop_watchdog();
    }

    fn stop_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// Stops it with SIGTERM and waits up to `timeout`; returns whether it exited successfully.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.stop_watchdog();
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.stop_watchdog();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
