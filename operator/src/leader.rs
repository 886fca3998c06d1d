//! Leader election on a `coordination.k8s.io/v1` Lease: one replica acts, the others wait.
//!
//! A replica takes the Lease when it is free or its holder has not renewed it for the lease
//! duration; every write carries the `resourceVersion` it read, so two replicas can never both
//! win the same round. The leader renews every third of the duration and **stops acting before
//! its lease can be taken** (it exits when it has not renewed for two thirds of the duration),
//! so a standby taking over an expired lease never overlaps with it. On shutdown the leader
//! releases the Lease so a standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// What a replica may do with the Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else holds it.
    Wait,
}

/// Decides from the Lease's spec (pure).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => LeaseDecision::Renew,
        None | Some("") => LeaseDecision::Acquire,
        Some(_) => {
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            match renewed {
                Some(renewed) if now.duration_since(renewed) < duration => LeaseDecision::Wait,
                _ => LeaseDecision::Acquire,
            }
        }
    }
}

/// Whether this replica may still act as the leader: the Lease was renewed recently enough
/// that no other replica can have taken it. Checked before results are written.
#[derive(Debug)]
pub struct Leadership {
    renewed: std::sync::Mutex<Option<Instant>>,
    valid_for: Duration,
}

impl Leadership {
    /// Nobody leads yet; a renewal counts for `valid_for` (less than the Lease's duration).
    pub fn new(valid_for: Duration) -> Self {
        Leadership {
            renewed: std::sync::Mutex::new(None),
            valid_for,
        }
    }

    /// For a replica that runs without an election: it always holds.
    pub fn unelected() -> Self {
        Leadership {
            renewed: std::sync::Mutex::new(Some(Instant::now())),
            valid_for: Duration::MAX,
        }
    }

    /// The Lease was just acquired or renewed.
    pub fn renewed(&self) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// True while the last renewal is recent enough.
    pub fn holds(&self) -> bool {
        self.renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < self.valid_for)
    }
}

/// One replica's view of the election.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    /// An elector for Lease `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One round: returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let existing = self.api.get_opt(&self.name).await?;
        let now = Timestamp::now();
        let decision = decide(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        if decision == LeaseDecision::Wait {
            return Ok(false);
        }
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let previous = existing
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: match decision {
                LeaseDecision::Renew => previous.acquire_time.clone(),
                _ => Some(MicroTime(now)),
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.lease_transitions.unwrap_or(0)
                    + i32::from(decision == LeaseDecision::Acquire && existing.is_some()),
            ),
            ..Default::default()
        };
        let result = match existing {
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            // Another replica wrote first (conflict on resourceVersion, or created it first).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self, leadership: &Leadership) -> Result<()> {
        let retry = self.duration / 5;
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    leadership.renewed();
                    info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return Ok(());
                }
                Ok(false) if !announced => {
                    info!(identity = %self.identity, lease = %self.name, "standing by: another replica leads");
                    announced = true;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "lease check failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews until leadership is lost or cannot be confirmed in time; then returns the error
    /// the process must exit with.
    pub async fn hold(&self, leadership: &Leadership) -> Error {
        let renew_every = self.duration / 3;
        let give_up_after = self.duration * 2 / 3;
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(renew_every).await;
            // A renewal that hangs (an API server that stopped answering, this process paused)
            // is given up at the deadline, not awaited past it.
            let left = give_up_after.saturating_sub(last_renewed.elapsed());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    last_renewed = Instant::now();
                    leadership.renewed();
                }
                Ok(Ok(false)) => return Error::LostLeadership(last_renewed.elapsed()),
                Ok(Err(error)) => warn!(%error, "lease renewal failed"),
                Err(_) => warn!(?left, "lease renewal did not answer in time"),
            }
            if last_renewed.elapsed() >= give_up_after {
                return Error::LostLeadership(last_renewed.elapsed());
            }
        }
    }

    /// Gives the Lease up (on shutdown) so a standby need not wait for it to expire.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_holds_only_while_the_last_renewal_is_recent() {
        let leadership = Leadership::new(Duration::from_millis(20));
        assert!(!leadership.holds(), "never renewed");
        leadership.renewed();
        assert!(leadership.holds());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!leadership.holds(), "a renewal vouches for valid_for only");
        assert!(Leadership::unelected().holds());
    }

    #[tokio::test]
    async fn a_renewal_that_hangs_is_given_up_at_the_deadline_not_awaited() {
        // An "API server" that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = silent.local_addr().expect("address");
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((connection, _)) = silent.accept().await {
                open.push(connection);
            }
        });
        let mut config = kube::Config::new(format!("http://{address}").parse().expect("uri"));
        config.read_timeout = None;
        config.write_timeout = None;
        let client = Client::try_from(config).expect("client");
        let elector = LeaderElector::new(client, "default", "l", "me", Duration::from_millis(600));
        let leadership = Leadership::new(Duration::from_millis(400));
        leadership.renewed();
        let started = std::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), elector.hold(&leadership)).await;
        assert!(matches!(ended, Ok(Error::LostLeadership(_))), "{ended:?}");
        // Renew at 200 ms, give up at 400 ms after the last renewal.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(!leadership.holds());
        held.abort();
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).expect("time"))),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("time")
    }

    #[test]
    fn a_missing_or_free_lease_is_acquired() {
        assert_eq!(decide(None, "me", at(100)), LeaseDecision::Acquire);
        assert_eq!(
            decide(Some(&lease(None, None, 10)), "me", at(100)),
            LeaseDecision::Acquire
        );
        assert_eq!(
            decide(Some(&lease(Some(""), Some(99), 10)), "me", at(100)),
            LeaseDecision::Acquire
        );
    }

    #[test]
    fn our_own_lease_is_renewed_even_when_expired() {
        assert_eq!(
            decide(Some(&lease(Some("me"), Some(95), 10)), "me", at(100)),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("me"), Some(10), 10)), "me", at(100)),
            LeaseDecision::Renew
        );
    }

    #[test]
    fn another_holders_lease_is_respected_until_it_expires() {
        assert_eq!(
            decide(Some(&lease(Some("other"), Some(95), 10)), "me", at(100)),
            LeaseDecision::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), Some(90), 10)), "me", at(100)),
            LeaseDecision::Acquire
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), None, 10)), "me", at(100)),
            LeaseDecision::Acquire
        );
    }
}
