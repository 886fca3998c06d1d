//! What every reconcile shares: the client, configuration, stores, event recorder, metrics and
//! per-object error backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::admission::Admission;
use crate::agent::Agents;
use crate::builder_pin::BuilderPin;
use crate::config::Config;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::network_policy;
use crate::store::Stores;
use crate::telemetry::Tracer;
use crate::watched::{LastWrites, Watched, Writers};

/// Shortest and longest wait before retrying an object whose reconcile failed.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Shared state.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Settings.
    pub config: Config,
    /// Artifact stores.
    pub stores: Stores,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The deny-egress NetworkPolicy of the namespaces pods start in.
    network_policies: network_policy::Guard,
    /// Span export (disabled when no `OTEL_*` endpoint is set).
    pub tracer: Tracer,
    /// The builder image of compile Jobs, pinned to a digest.
    pub builder: BuilderPin,
    /// The warm agents, when enabled.
    pub agents: Option<Arc<Agents>>,
    /// Whether this replica still holds the leader Lease.
    pub leadership: Arc<Leadership>,
    /// Nodes, RuntimeClasses and functions as the execution controller's watches see them.
    pub watched: Watched,
    /// The resourceVersion of this replica's last status write per execution.
    pub last_writes: LastWrites,
    /// Run pods in flight per node and the executions queued for room.
    pub admission: Admission,
    watch_writers: Mutex<Option<Writers>>,
    recorder: Recorder,
    failures: Failures,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Builds the context; `instance` names this replica in events.
    pub fn new(
        client: Client,
        config: Config,
        stores: Stores,
        metrics: Arc<Metrics>,
        tracer: Tracer,
        instance: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: "wasmfn-operator".into(),
            instance: Some(instance.to_owned()),
        };
        let (watched, watch_writers) = Watched::new();
        Context {
            watched,
            last_writes: LastWrites::default(),
            admission: Admission::new(config.max_run_pods_per_node),
            watch_writers: Mutex::new(Some(watch_writers)),
            recorder: Recorder::new(client.clone(), reporter),
            network_policies: network_policy::Guard::new(
                client.clone(),
                config.run_pod_network_policy,
            ),
            builder: BuilderPin::new(&config),
            client,
            config,
            stores,
            metrics,
            tracer,
            agents: None,
            leadership: Arc::new(Leadership::unelected()),
            failures: Failures::default(),
        }
    }

    /// The same context handing runs to `agents`.
    pub fn with_agents(mut self, agents: Option<Arc<Agents>>) -> Self {
        self.agents = agents;
        self
    }

    /// `Error::NotLeading` unless this replica's lease was renewed recently enough that no other
    /// replica can have taken it: checked before every status write.
    pub fn ensure_leading(&self) -> crate::error::Result<()> {
        if self.leadership.holds() {
            Ok(())
        } else {
            Err(crate::error::Error::NotLeading)
        }
    }

    /// The same context checking `leadership` before results are written.
    pub fn with_leadership(mut self, leadership: Arc<Leadership>) -> Self {
        self.leadership = leadership;
        self
    }

    /// The writers of [`Context::watched`] (taken once, by the execution controller).
    pub fn take_watch_writers(&self) -> Option<Writers> {
        self.watch_writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Makes sure `namespace` has the deny-egress NetworkPolicy before a pod for `object`
    /// starts there. A failure is a Warning event on `object` and an error, so the reconcile
    /// is retried with backoff and no pod starts unprotected.
    pub async fn ensure_network_policy<K: Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        object: &K,
    ) -> crate::error::Result<()> {
        let ensured = self.network_policies.ensure(namespace).await;
        if let Err(error) = &ensured {
            let note = format!("{error}; the pod is not started until it exists");
            self.event(
                object,
                EventType::Warning,
                "NetworkPolicyFailed",
                "Isolate",
                note,
            )
            .await;
        }
        ensured
    }

    /// Publishes an event on `object`; a failure to record is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.event_on(&object.object_ref(&()), type_, reason, action, note)
            .await;
    }

    /// [`Context::event`] on an object given by reference (a dynamic object's, say).
    pub async fn event_on(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, reference).await {
            tracing::warn!(%error, reason, "could not record an event");
        }
    }

    /// The next retry delay for `key` after a failure: 2 s doubling up to 5 minutes.
    pub fn backoff(&self, key: &str) -> Duration {
        backoff_delay(self.failed_again(key))
    }

    /// Counts one more consecutive failure of `key`; returns how many there have been.
    pub fn failed_again(&self, key: &str) -> u32 {
        self.failures.failed_again(key)
    }

    /// How long `key` should still wait after its last failure (its backoff delay), if at all:
    /// a reconcile woken early (by its own status write) does not try again before then.
    pub fn backoff_left(&self, key: &str) -> Option<Duration> {
        self.failures.backoff_left(key)
    }

    /// Forgets `key`'s failures after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures.forget(key);
    }
}

/// Consecutive failures by key and when the last one happened, for retries with backoff.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, (u32, std::time::Instant)>>);

impl Failures {
    /// Counts one more consecutive failure of `key`; returns how many there have been.
    pub fn failed_again(&self, key: &str) -> u32 {
        let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let (count, at) = failures.entry(key.to_owned()).or_insert((0, now));
        *count = count.saturating_add(1);
        *at = now;
        *count
    }

    /// What is left of `key`'s backoff delay since its last failure, if anything.
    pub fn backoff_left(&self, key: &str) -> Option<Duration> {
        let failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (count, at) = failures.get(key)?;
        backoff_delay(*count)
            .checked_sub(at.elapsed())
            .filter(|left| !left.is_zero())
    }

    /// Forgets `key`'s failures.
    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Delay after the `failures`-th consecutive failure.
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_up_hold_their_backoff_and_start_over_once_forgotten() {
        let failures = Failures::default();
        assert_eq!(failures.backoff_left("a"), None, "no failure, no wait");
        assert_eq!(failures.failed_again("a"), 1);
        assert_eq!(failures.failed_again("a"), 2);
        assert_eq!(failures.failed_again("b"), 1, "keys are apart");
        let left = failures.backoff_left("a").expect("waiting");
        assert!(
            left <= Duration::from_secs(4) && left > Duration::from_secs(3),
            "{left:?}"
        );
        failures.forget("a");
        assert_eq!(failures.backoff_left("a"), None);
        assert_eq!(
            failures.failed_again("a"),
            1,
            "counted from the start again"
        );
    }

    #[test]
    fn backoff_doubles_from_two_seconds_to_five_minutes() {
        let delays: Vec<u64> = (1..=10).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }
}
