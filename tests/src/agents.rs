//! The warm agents on the local cluster, installed exactly as production installs them: the
//! chart's DaemonSet and its generated certificates (`helm install` with the operator's
//! replicas at 0, so the suite's operator process is the one that talks to them, with the
//! client certificate the chart made for the operator).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use crate::helm::{chart_dir, Helm};
use crate::{Cluster, Error, Kubectl, Result};

/// The chart's release name (its objects are named `wasmfn-…`).
pub const RELEASE: &str = "wasmfn";
/// The agent DaemonSet's name.
pub const DAEMONSET: &str = "wasmfn-agent";
/// The agents' port on the local cluster (host network: each binds its node's address).
pub const PORT: u16 = 8443;

/// Agents running on the cluster's WasmEdge node.
#[derive(Debug)]
pub struct Agents {
    /// The release namespace (agents, their Secrets).
    pub namespace: Kubectl,
    /// The namespace's name.
    pub namespace_name: String,
    /// The operator's client certificate, from the chart's Secret (`ca.crt`, `tls.crt`,
    /// `tls.key`).
    pub client_tls: PathBuf,
    /// The module cache on the host (the DaemonSet's hostPath).
    pub cache_dir: PathBuf,
}

impl Agents {
    /// Installs the chart's agents into a new namespace `namespace` and waits until the agent on
    /// the WasmEdge node is Ready. `state_dir` holds the host-side cache and the certificate copy.
    pub fn install(cluster: &Cluster, namespace: &str, state_dir: &Path) -> Result<Agents> {
        let ns = cluster.namespace(namespace)?;
        let cache_dir = state_dir.join("agent-cache");
        let client_tls = state_dir.join("agent-client-tls");
        let helm = Helm::new()?.with_kubeconfig(&cluster.info().kubeconfig());
        let chart = chart_dir();
        helm.run(&[
            "install",
            RELEASE,
            chart.to_str().unwrap_or_default(),
            "--namespace",
            namespace,
            "--set",
            "operator.replicas=0",
            "--set",
            "localCluster.hostNetwork=true",
            "--set",
            "wasmedge.runtimeClass.create=false",
            "--set",
            "metrics.service.enabled=false",
            "--set",
            &format!("agent.cacheHostPath={}", cache_dir.display()),
        ])?;
        let agents = Agents {
            namespace: ns,
            namespace_name: namespace.to_owned(),
            client_tls,
            cache_dir,
        };
        agents.wait_ready(Duration::from_secs(180))?;
        agents.copy_client_certificate()?;
        Ok(agents)
    }

    /// Waits until the DaemonSet's agent is Ready (after a restart, too).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.namespace
            .wait_for(&["daemonset", DAEMONSET], timeout, |d| {
                let status = &d["status"];
                (status["desiredNumberScheduled"].as_i64().unwrap_or(0) > 0
                    && status["numberReady"] == status["desiredNumberScheduled"]
                    && status["updatedNumberScheduled"] == status["desiredNumberScheduled"])
                    .then_some(())
            })
            .map_err(|e| {
                let pods = self
                    .namespace
                    .run(&["get", "pods", "-o", "wide"])
                    .unwrap_or_default();
                let events = self.namespace.run(&["get", "events"]).unwrap_or_default();
                let selector = "app.kubernetes.io/component=agent";
                let logs = self
                    .namespace
                    .run(&["logs", "-l", selector, "--tail=40"])
                    .unwrap_or_default();
                let previous = self
                    .namespace
                    .run(&["logs", "-l", selector, "--previous", "--tail=40"])
                    .unwrap_or_default();
                Error::Cluster(format!(
                    "the agents never became Ready: {e}\n{pods}\n{events}\nagent log:\n{logs}\nprevious agent log:\n{previous}"
                ))
            })
    }

    fn copy_client_certificate(&self) -> Result<()> {
        let secret = self
            .namespace
            .json(&["get", "secret", &format!("{DAEMONSET}-client-tls")])?;
        std::fs::create_dir_all(&self.client_tls).map_err(Error::io("certificate directory"))?;
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            let encoded = secret["data"][key].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| Error::Cluster(format!("secret key {key}: {e}")))?;
            std::fs::write(self.client_tls.join(key), bytes)
                .map_err(Error::io(format!("write {key}")))?;
        }
        Ok(())
    }

    /// The operator flags that hand runs to these agents.
    pub fn operator_flags(&self) -> Vec<String> {
        vec![
            "--agent-enabled=true".into(),
            format!("--agent-namespace={}", self.namespace_name),
            format!(
                "--agent-selector=app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=agent"
            ),
            format!("--agent-tls-dir={}", self.client_tls.display()),
        ]
    }

    /// The agent pods: `(name, node, hostIP)`.
    pub fn pods(&self) -> Result<Vec<(String, String, String)>> {
        let list =
            self.namespace
                .json(&["get", "pods", "-l", "app.kubernetes.io/component=agent"])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&p["metadata"]["name"]),
                    text(&p["spec"]["nodeName"]),
                    text(&p["status"]["hostIP"]),
                )
            })
            .collect())
    }
}
