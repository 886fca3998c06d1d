//! Leader election on a `coordination.k8s.io/v1` Lease: one replica acts, the others wait.
//!
//! A replica takes the Lease when it is free or its holder has not renewed it for the lease
//! duration. "Not renewed" is judged by this replica's own clock: the Lease must have stayed
//! unchanged (holder, `renewTime`, `resourceVersion`) for the duration since this replica last saw
//! it change, so a holder whose clock is ahead or behind is judged the same. Every write carries the `resourceVersion` it read, so two replicas can never both
//! win the same round. The leader renews every third of the duration and **stops acting before
//! its lease can be taken** (it exits when it has not renewed for two thirds of the duration),
//! so a standby taking over an expired lease never overlaps with it. On shutdown the leader
//! releases the Lease so a standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
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

/// Decides from the Lease's spec and how long it has stayed unchanged by this replica's clock
/// (pure). The holder's `renewTime` is never compared with our clock: the two may disagree.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => LeaseDecision::Renew,
        None | Some("") => LeaseDecision::Acquire,
        Some(_) => {
            let seconds = spec.lease_duration_seconds.unwrap_or(15).max(0);
            if unchanged_for < Duration::from_secs(seconds.unsigned_abs().into()) {
                LeaseDecision::Wait
            } else {
                LeaseDecision::Acquire
            }
        }
    }
}

/// What a holder changes each time it renews the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeaseVersion {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    resource_version: Option<String>,
}

impl LeaseVersion {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        LeaseVersion {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// When this replica last saw the Lease change, by its own monotonic clock.
#[derive(Debug, Default)]
pub struct LeaseWatch {
    last_change: Option<(LeaseVersion, Instant)>,
}

impl LeaseWatch {
    /// Records the Lease as read at `now` (`None`: there is none); returns how long it has stayed
    /// unchanged since this replica first saw its current version (zero on the first sight, so a
    /// Lease found held is waited on for a full duration before it counts as expired).
    pub fn observe(&mut self, lease: Option<&Lease>, now: Instant) -> Duration {
        let Some(lease) = lease else {
            self.last_change = None;
            return Duration::ZERO;
        };
        let version = LeaseVersion::of(lease);
        match &self.last_change {
            Some((seen, since)) if *seen == version => now.saturating_duration_since(*since),
            _ => {
                self.last_change = Some((version, now));
                Duration::ZERO
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
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    watch: std::sync::Mutex<LeaseWatch>,
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
            watch: std::sync::Mutex::new(LeaseWatch::default()),
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One round: returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let existing = self.api.get_opt(&self.name).await?;
        let unchanged_for = self
            .watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(existing.as_ref(), Instant::now());
        let decision = decide(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            unchanged_for,
        );
        // Written for other tools to read; no replica judges expiry by it.
        let now = Timestamp::now();
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

    /// Gives the Lease up (on shutdown) so a standby need not wait for it to expire. A Lease
    /// another replica holds by now is left alone; a failed write is returned (a standby then
    /// waits for the Lease to expire).
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
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        info!(identity = %self.identity, lease = %self.name, "released the lease");
        Ok(())
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

    fn spec(holder: Option<&str>, renewed: Option<i64>, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).expect("time"))),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    /// The Lease as read: held by `holder`, renewed at `renewed` by the holder's clock.
    fn lease(holder: &str, renewed: i64, resource_version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("wasmfn".to_owned()),
                resource_version: Some(resource_version.to_owned()),
                ..Default::default()
            },
            spec: Some(spec(Some(holder), Some(renewed), 10)),
        }
    }

    fn seconds(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A standby's decision on `lease` read at `now`, after its earlier reads.
    fn judge(watch: &mut LeaseWatch, lease: &Lease, now: Instant) -> LeaseDecision {
        let unchanged_for = watch.observe(Some(lease), now);
        decide(lease.spec.as_ref(), "me", unchanged_for)
    }

    #[test]
    fn a_missing_or_free_lease_is_acquired() {
        assert_eq!(decide(None, "me", Duration::ZERO), LeaseDecision::Acquire);
        assert_eq!(
            decide(Some(&spec(None, None, 10)), "me", Duration::ZERO),
            LeaseDecision::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some(""), Some(99), 10)), "me", Duration::ZERO),
            LeaseDecision::Acquire
        );
    }

    #[test]
    fn our_own_lease_is_renewed_even_when_expired() {
        assert_eq!(
            decide(Some(&spec(Some("me"), Some(95), 10)), "me", Duration::ZERO),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("me"), Some(10), 10)), "me", seconds(60)),
            LeaseDecision::Renew
        );
    }

    #[test]
    fn another_holders_lease_is_respected_until_it_stays_unchanged_for_its_duration() {
        let held = spec(Some("other"), Some(95), 10);
        assert_eq!(decide(Some(&held), "me", seconds(9)), LeaseDecision::Wait);
        assert_eq!(
            decide(Some(&held), "me", seconds(10)),
            LeaseDecision::Acquire
        );
        let never_renewed = spec(Some("other"), None, 10);
        assert_eq!(
            decide(Some(&never_renewed), "me", seconds(9)),
            LeaseDecision::Wait
        );
    }

    #[test]
    fn a_lease_found_held_is_waited_on_for_a_full_duration_however_old_its_renew_time() {
        let mut watch = LeaseWatch::default();
        let start = Instant::now();
        // renewTime is a day old by any clock, but this replica has only just seen the Lease.
        let stale = lease("other", 0, "7");
        assert_eq!(judge(&mut watch, &stale, start), LeaseDecision::Wait);
        assert_eq!(
            judge(&mut watch, &stale, start + seconds(9)),
            LeaseDecision::Wait
        );
        assert_eq!(
            judge(&mut watch, &stale, start + seconds(10)),
            LeaseDecision::Acquire
        );
    }

    #[test]
    fn a_holder_whose_clock_runs_an_hour_ahead_loses_the_lease_a_duration_after_its_last_renewal() {
        let mut watch = LeaseWatch::default();
        let start = Instant::now();
        let ours_now = 1_000_000;
        // The holder renews every 3 s, stamping times an hour in our future.
        for (n, at) in [0u64, 3, 6].into_iter().enumerate() {
            let renewed = lease("other", ours_now + 3600 + at as i64, &n.to_string());
            assert_eq!(
                judge(&mut watch, &renewed, start + seconds(at)),
                LeaseDecision::Wait
            );
        }
        // Then it stops; by the holder's renewTime the Lease would run for another hour.
        let last = lease("other", ours_now + 3600 + 6, "2");
        assert_eq!(
            judge(&mut watch, &last, start + seconds(15)),
            LeaseDecision::Wait
        );
        assert_eq!(
            judge(&mut watch, &last, start + seconds(16)),
            LeaseDecision::Acquire
        );
    }

    #[test]
    fn a_holder_whose_clock_runs_an_hour_behind_keeps_the_lease_while_it_renews() {
        let mut watch = LeaseWatch::default();
        let start = Instant::now();
        let ours_now = 1_000_000;
        // Every renewTime is an hour older than our clock: expired by it, yet the holder is alive.
        for (n, at) in [0u64, 3, 6, 9, 12, 15, 18].into_iter().enumerate() {
            let renewed = lease("other", ours_now - 3600 + at as i64, &n.to_string());
            assert_eq!(
                judge(&mut watch, &renewed, start + seconds(at)),
                LeaseDecision::Wait,
                "renewal at {at} s"
            );
        }
    }

    #[test]
    fn a_new_resource_version_alone_counts_as_a_change() {
        let mut watch = LeaseWatch::default();
        let start = Instant::now();
        assert_eq!(
            watch.observe(Some(&lease("other", 5, "1")), start),
            Duration::ZERO
        );
        assert_eq!(
            watch.observe(Some(&lease("other", 5, "1")), start + seconds(4)),
            seconds(4)
        );
        assert_eq!(
            watch.observe(Some(&lease("other", 5, "2")), start + seconds(8)),
            Duration::ZERO
        );
        assert_eq!(watch.observe(None, start + seconds(9)), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_release_the_api_server_refuses_is_returned_not_swallowed() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let elector = LeaderElector::new(
            Client::new(service, "default"),
            "wasmfn-system",
            "wasmfn",
            "me",
            seconds(10),
        );
        let script = tokio::spawn(async move {
            let path = "/apis/coordination.k8s.io/v1/namespaces/wasmfn-system/leases/wasmfn";
            let answers = [
                (200, serde_json::to_string(&lease("me", 5, "3")).expect("JSON")),
                (409, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"message":"changed"}"#.to_owned()),
            ];
            let mut seen = Vec::new();
            for (code, body) in answers {
                let (request, respond) = api.next_request().await.expect("a request");
                seen.push(format!("{} {}", request.method(), request.uri().path()));
                let written = request.into_body().collect_bytes().await.expect("body");
                if !written.is_empty() {
                    let lease: serde_json::Value = serde_json::from_slice(&written).expect("JSON");
                    seen.push(format!("holder {}", lease["spec"]["holderIdentity"]));
                }
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(body.into_bytes()));
                respond.send_response(response.expect("response"));
            }
            assert_eq!(
                seen,
                [
                    format!("GET {path}"),
                    format!("PUT {path}"),
                    "holder null".to_owned()
                ]
            );
        });
        let released = elector.release().await;
        script
            .await
            .expect("the API server saw a read and a write giving the Lease up");
        assert!(
            matches!(&released, Err(Error::Kube(kube::Error::Api(s))) if s.code == 409),
            "{released:?}"
        );
    }
}
