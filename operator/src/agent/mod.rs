//! The operator's side of the warm agents: which agent pods exist ([`pool`], from a watch of
//! the pods the chart's DaemonSet makes) and the runs handed to them ([`dispatch`]).

pub mod dispatch;
pub mod pool;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tracing::warn;
use wasmfn_agent_protocol::tls::Identity;
use wasmfn_api::WasmExecution;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use dispatch::Dispatcher;
use pool::AgentView;

/// The agents and the runs handed to them.
pub struct Agents {
    pods: Store<Pod>,
    port: u16,
    /// Most runs pending on one agent.
    pub max_pending: u32,
    /// The runs handed over.
    pub dispatcher: Arc<Dispatcher>,
    wake: Mutex<Option<UnboundedReceiver<ObjectRef<WasmExecution>>>>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Agents {
    /// Starts watching the agent pods in `namespace`; reads the client certificate now, so a
    /// missing one stops the operator's start with a clear error.
    pub fn start(
        client: Client,
        config: &Config,
        namespace: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Agents>> {
        let tls = Identity::read_dir(&config.agent_tls_dir)
            .and_then(|identity| identity.client_config())
            .map_err(|e| Error::Config(format!("agent client certificate: {e}")))?;
        let (reader, writer) = reflector::store();
        let api = Api::<Pod>::namespaced(client, namespace);
        let watch = watcher(
            api,
            watcher::Config::default().labels(&config.agent_selector),
        )
        .default_backoff()
        .reflect(writer)
        .applied_objects();
        tokio::spawn(async move {
            let mut watch = std::pin::pin!(watch);
            while let Some(event) = watch.next().await {
                if let Err(error) = event {
                    warn!(%error, "watching the agent pods");
                }
            }
        });
        let (wake, woken) = unbounded_channel();
        let grace = Duration::from_secs(config.run_deadline_grace_seconds);
        Ok(Arc::new(Agents {
            pods: reader,
            port: config.agent_port,
            max_pending: config.agent_max_pending,
            dispatcher: Arc::new(Dispatcher::new(tls, wake, grace, metrics)),
            wake: Mutex::new(Some(woken)),
        }))
    }

    /// The agent pods seen now.
    pub fn views(&self) -> Vec<AgentView> {
        self.pods
            .state()
            .iter()
            .filter_map(|pod| AgentView::of(pod, self.port))
            .collect()
    }

    /// The executions to reconcile as their agent runs end (taken once, by the controller).
    pub fn take_wake(&self) -> Option<UnboundedReceiver<ObjectRef<WasmExecution>>> {
        self.wake.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
