//! Handing runs to agents and keeping what comes back until the reconciler records it.
//!
//! The reconciler calls [`Dispatcher::dispatch`]; a task sends the run (and the module, when the
//! agent lacks it), keeps the answer here under `(uid, attempt)` and wakes the execution, whose
//! reconcile records the result through the usual status path (conditional on the version it
//! read, and only while this replica holds the leader Lease). Until then the attempt lives only
//! here: a run that answers within [`RUNNING_NOTE_AFTER`] costs one status write, its result;
//! a longer one is shown Running after that long. Only the newest attempt is ever recorded: a
//! late answer for an earlier one is dropped with it. An attempt the status names but this
//! table does not know (the operator restarted mid-run) is lost (`AgentLost`); one the status
//! never named is started again by the next leader, so a guest may run twice across a leader
//! change but its result is recorded once (guests have no network and no storage to repeat an
//! effect on).
//!
//! [`RUNNING_NOTE_AFTER`]: crate::execution::decision::RUNNING_NOTE_AFTER

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};
use wasmfn_agent_protocol::client::{AgentClient, RunAnswer};
use wasmfn_agent_protocol::{ResultDocument, RunAssignment};
use wasmfn_api::WasmExecution;

use super::pool::AgentView;
use crate::metrics::{AgentLabels, Metrics};

/// Fetches a module's bytes from the artifact store (only when an agent lacks it).
pub type FetchModule =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> + Send>;

/// How an attempt handed to an agent stands.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentRun {
    /// Sent; no answer yet (queued or running on the agent).
    Pending,
    /// The agent answered with the run's result document.
    Done {
        /// The document.
        document: Box<ResultDocument>,
        /// When the answer came.
        finished: Time,
    },
    /// The run's fate is unknown: the agent went away, the connection broke, or it refused.
    Lost {
        /// What happened, for people.
        message: String,
        /// The agent was never reached (no connection could be made: a killed agent's address
        /// refuses until it is back), so it cannot have started the run.
        unreached: bool,
    },
}

/// One attempt on one agent.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentAttempt {
    /// The agent pod.
    pub agent: String,
    /// Its node.
    pub node: String,
    /// When it was handed over.
    pub started: Time,
    /// Why placement chose the agent.
    pub reason: String,
    /// How it stands.
    pub run: AgentRun,
}

/// The runs handed to agents by this replica.
pub struct Dispatcher {
    tls: Arc<rustls::ClientConfig>,
    clients: Mutex<HashMap<String, Arc<AgentClient>>>,
    /// Per execution uid, its attempts by number (reconciles ask for the newest).
    attempts: Mutex<HashMap<String, BTreeMap<i32, AgentAttempt>>>,
    pending: Mutex<HashMap<String, u32>>,
    wake: UnboundedSender<ObjectRef<WasmExecution>>,
    grace: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// One hand-over.
#[derive(Debug)]
pub struct Handoff {
    /// The execution, to wake when the answer comes.
    pub object: ObjectRef<WasmExecution>,
    /// The agent.
    pub agent: AgentView,
    /// What to run.
    pub assignment: RunAssignment,
    /// When the attempt started.
    pub started: Time,
    /// Why placement chose the agent.
    pub reason: String,
}

impl Dispatcher {
    /// A dispatcher whose answers wake executions through `wake`; a run whose agent has not
    /// answered `grace` after its timeout is lost.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        wake: UnboundedSender<ObjectRef<WasmExecution>>,
        grace: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Dispatcher {
            tls,
            clients: Mutex::default(),
            attempts: Mutex::default(),
            pending: Mutex::default(),
            wake,
            grace,
            metrics,
        }
    }

    /// Changes `agent`'s pending count by `delta` and publishes it
    /// (`wasmfn_agent_pending_runs`: the operator's view of each agent's queue).
    fn count_pending(&self, agent: &str, delta: i64) {
        let mut pending = lock(&self.pending);
        let n = pending.entry(agent.to_owned()).or_default();
        *n = u32::try_from((i64::from(*n) + delta).max(0)).unwrap_or(u32::MAX);
        let labels = AgentLabels {
            agent: agent.to_owned(),
        };
        self.metrics
            .agent_pending_runs
            .get_or_create(&labels)
            .set(i64::from(*n));
    }

    /// Runs handed to `agent` and not answered yet.
    pub fn pending(&self, agent: &str) -> u32 {
        lock(&self.pending).get(agent).copied().unwrap_or(0)
    }

    /// How attempt `attempt` of execution `uid` stands, if this replica handed it over.
    pub fn attempt(&self, uid: &str, attempt: i32) -> Option<AgentAttempt> {
        lock(&self.attempts)
            .get(uid)
            .and_then(|attempts| attempts.get(&attempt))
            .cloned()
    }

    /// The newest attempt of `uid` this replica handed over (and has not forgotten).
    pub fn latest(&self, uid: &str) -> Option<(i32, AgentAttempt)> {
        lock(&self.attempts)
            .get(uid)
            .and_then(|attempts| attempts.last_key_value())
            .map(|(attempt, known)| (*attempt, known.clone()))
    }

    /// Forgets the attempts of executions for which `exists` is false (deleted mid-run),
    /// once they were handed over more than `settled` ago (a newer one may not have reached the
    /// cache that `exists` reads yet).
    pub fn forget_gone(&self, exists: impl Fn(&str) -> bool, settled: Duration) {
        let now = Timestamp::now();
        lock(&self.attempts).retain(|uid, attempts| {
            exists(uid)
                || attempts.values().any(|known| {
                    Duration::try_from(now.duration_since(known.started.0))
                        .is_ok_and(|age| age < settled)
                })
        });
    }

    /// Forgets every attempt of `uid` up to `attempt` (recorded, or given up).
    pub fn forget(&self, uid: &str, attempt: i32) {
        let mut attempts = lock(&self.attempts);
        if let Some(of_uid) = attempts.get_mut(uid) {
            of_uid.retain(|a, _| *a > attempt);
            if of_uid.is_empty() {
                attempts.remove(uid);
            }
        }
    }

    /// Hands `handoff` to its agent in the background.
    pub fn dispatch(self: &Arc<Self>, handoff: Handoff, fetch: FetchModule) {
        let (uid, attempt) = (handoff.assignment.uid.clone(), handoff.assignment.attempt);
        lock(&self.attempts).entry(uid.clone()).or_default().insert(
            attempt,
            AgentAttempt {
                agent: handoff.agent.pod.clone(),
                node: handoff.agent.node.clone(),
                started: handoff.started.clone(),
                reason: handoff.reason.clone(),
                run: AgentRun::Pending,
            },
        );
        self.count_pending(&handoff.agent.pod, 1);
        let client = self.client(&handoff.agent.address);
        let limit =
            Duration::from_millis(handoff.assignment.settings.timeout_ms.unwrap_or(0)) + self.grace;
        let this = self.clone();
        tokio::spawn(async move {
            let answer = tokio::time::timeout(limit, run(&client, &handoff.assignment, fetch))
                .await
                .unwrap_or_else(|_| {
                    Err(Undelivered {
                        message: format!(
                            "agent {} gave no answer within {}s",
                            handoff.agent.pod,
                            limit.as_secs()
                        ),
                        unreached: false,
                    })
                });
            let run = match answer {
                Ok(document) => AgentRun::Done {
                    document: Box::new(document),
                    finished: Time(Timestamp::now()),
                },
                Err(Undelivered { message, unreached }) => {
                    warn!(execution = %handoff.object, agent = %handoff.agent.pod, %message, unreached, "agent run lost");
                    AgentRun::Lost { message, unreached }
                }
            };
            if let Some(entry) = lock(&this.attempts)
                .get_mut(&uid)
                .and_then(|attempts| attempts.get_mut(&attempt))
            {
                entry.run = run;
            }
            this.count_pending(&handoff.agent.pod, -1);
            let _ = this.wake.send(handoff.object);
        });
    }

    fn client(&self, address: &str) -> Arc<AgentClient> {
        lock(&self.clients)
            .entry(address.to_owned())
            .or_insert_with(|| Arc::new(AgentClient::new(address.to_owned(), self.tls.clone())))
            .clone()
    }
}

/// Why a run brought back no result document.
#[derive(Debug)]
struct Undelivered {
    message: String,
    /// Nothing reached the agent (see [`AgentRun::Lost`]).
    unreached: bool,
}

impl From<String> for Undelivered {
    fn from(message: String) -> Self {
        Undelivered {
            message,
            unreached: false,
        }
    }
}

/// Sends the run; sends the module first when the agent asks for it. A request that never
/// reached the agent started nothing: the module is only sent after the agent answered that it
/// lacks it, without running anything.
async fn run(
    client: &AgentClient,
    assignment: &RunAssignment,
    fetch: FetchModule,
) -> Result<ResultDocument, Undelivered> {
    let lost = |e: wasmfn_agent_protocol::Error| Undelivered {
        unreached: matches!(
            e,
            wasmfn_agent_protocol::Error::Connection {
                unreached: true,
                ..
            }
        ),
        message: e.to_string(),
    };
    match client.run(assignment).await.map_err(lost)? {
        RunAnswer::Ran(document) => return Ok(*document),
        RunAnswer::ModuleMissing => {}
    }
    let bytes = fetch()
        .await
        .map_err(|e| format!("reading the module for the agent: {e}"))?;
    info!(agent = client.address(), digest = %assignment.module_digest, bytes = bytes.len(), "sending a module to an agent");
    match &assignment.script_media_type {
        Some(media_type) => client
            .put_script(&assignment.module_digest, media_type, bytes)
            .await
            .map_err(lost)?,
        None => client
            .put_module(&assignment.module_digest, bytes)
            .await
            .map_err(lost)?,
    }
    match client.run(assignment).await.map_err(lost)? {
        RunAnswer::Ran(document) => Ok(*document),
        RunAnswer::ModuleMissing => Err(format!(
            "agent {} lost {} right after receiving it (its cache may be too small)",
            client.address(),
            assignment.module_digest
        )
        .into()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::pool::AgentView;
    use wasmfn_agent_protocol::RunSettings;

    /// A hand-over of attempt 1 of `uid` to an address where nothing listens.
    fn handoff(uid: &str) -> Handoff {
        Handoff {
            object: ObjectRef::new(uid).within("n"),
            agent: AgentView {
                pod: "wasmfn-agent-x".into(),
                node: "a".into(),
                address: "127.0.0.1:9".into(),
                ready: true,
            },
            assignment: RunAssignment {
                namespace: "n".into(),
                execution: uid.into(),
                uid: uid.into(),
                attempt: 1,
                module_digest: "sha256:00".into(),
                script_media_type: None,
                settings: RunSettings::default(),
                stdin_base64: None,
            },
            started: Time(Timestamp::now()),
            reason: "a Ready agent with room".into(),
        }
    }

    fn no_module() -> FetchModule {
        Box::new(|| Box::pin(async { Err("no store here".to_owned()) }))
    }

    #[tokio::test]
    async fn attempts_of_deleted_executions_are_forgotten_once_settled_and_the_newest_is_found() {
        let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
        let dispatcher = Arc::new(Dispatcher::new(
            wasmfn_agent_protocol::tls::anonymous_client_config(),
            wake,
            Duration::from_secs(1),
            Arc::new(Metrics::default()),
        ));
        dispatcher.dispatch(handoff("kept"), no_module());
        dispatcher.dispatch(handoff("deleted"), no_module());
        let mut second = handoff("kept");
        second.assignment.attempt = 2;
        dispatcher.dispatch(second, no_module());
        // Nothing listens: each run ends lost, and wakes its execution.
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(10), woken.recv())
                .await
                .expect("woken")
                .expect("an execution");
        }
        let (attempt, known) = dispatcher.latest("kept").expect("known");
        assert_eq!(attempt, 2);
        // Refused at connect: the agent never had the run.
        assert!(
            matches!(
                known.run,
                AgentRun::Lost {
                    unreached: true,
                    ..
                }
            ),
            "{known:?}"
        );
        assert_eq!(known.reason, "a Ready agent with room");

        // Too recent to judge: kept even though the cache does not show it.
        dispatcher.forget_gone(|uid| uid == "kept", Duration::from_secs(60));
        assert!(dispatcher.latest("deleted").is_some());
        dispatcher.forget_gone(|uid| uid == "kept", Duration::ZERO);
        assert!(dispatcher.latest("deleted").is_none());
        assert_eq!(dispatcher.latest("kept").map(|(a, _)| a), Some(2));
        assert_eq!(dispatcher.pending("wasmfn-agent-x"), 0);
    }
}
