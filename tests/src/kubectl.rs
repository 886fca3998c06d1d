//! A thin wrapper over the cluster's `kubectl` (v1.20.2, built by `make setup`), the same tool a
//! person uses against the cluster.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    namespace: Option<String>,
}

impl Kubectl {
    /// The namespace this kubectl is bound to, if any.
    pub fn namespace_name(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn new(binary: PathBuf, kubeconfig: PathBuf) -> Kubectl {
        Kubectl {
            binary,
            kubeconfig,
            namespace: None,
        }
    }

    /// The same client, defaulting to `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Kubectl {
        Kubectl {
            namespace: Some(namespace.to_string()),
            ..self.clone()
        }
    }

    /// The kubectl binary.
    pub fn binary(&self) -> &PathBuf {
        &self.binary
    }

    pub fn kubeconfig(&self) -> &PathBuf {
        &self.kubeconfig
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        if let Some(ns) = &self.namespace {
            c.arg(format!("--namespace={ns}"));
        }
        c.args(args);
        c
    }

    /// Runs `kubectl ARGS`, returning stdout; a non-zero exit is an error carrying stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with_stdin(args, None)
    }

    /// Runs `kubectl ARGS` and returns its stdout as raw bytes (e.g. `logs` of binary output).
    pub fn run_bytes(&self, args: &[&str]) -> Result<Vec<u8>> {
        let output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io("run kubectl"))?;
        if !output.status.success() {
            return Err(Error::Command {
                command: format!("kubectl {}", args.join(" ")),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(output.stdout)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut child = self
            .command(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(format!("run {}", self.binary.display())))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(Error::io("write kubectl stdin"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(Error::io("wait for kubectl"))?;
        if !output.status.success() {
            return Err(Error::Command {
                command: format!("kubectl {}", args.join(" ")),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `kubectl apply -f -` with `manifest` on stdin.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        self.run_with_stdin(&["apply", "-f", "-"], Some(manifest))
    }

    /// `kubectl create -f -` with `manifest` on stdin.
    pub fn create(&self, manifest: &str) -> Result<String> {
        self.run_with_stdin(&["create", "-f", "-"], Some(manifest))
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.run(&all)?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            what: format!("kubectl {}", args.join(" ")),
            source,
        })
    }

    /// Polls `kubectl get KIND NAME -o json` until `done` returns `Some`, or fails after `timeout`
    /// with the object's last state in the message.
    pub fn wait_for<T>(
        &self,
        kind_and_name: &[&str],
        timeout: Duration,
        mut done: impl FnMut(&serde_json::Value) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut args = vec!["get"];
        args.extend_from_slice(kind_and_name);
        let mut last = serde_json::Value::Null;
        loop {
            if let Ok(object) = self.json(&args) {
                if let Some(v) = done(&object) {
                    return Ok(v);
                }
                last = object;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{} (last state: {})",
                        kind_and_name.join(" "),
                        last["status"]
                    ),
                    seconds: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
