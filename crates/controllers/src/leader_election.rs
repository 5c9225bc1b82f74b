//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` package
//! does it for kube-controller-manager: several replicas of one virtual cluster serve its API,
//! and only the holder of the lease runs the syncer and the controllers.
//!
//! The rules (client-go's `tryAcquireOrRenew`):
//! - a missing lease is created with this replica as its holder;
//! - a lease held by another replica is taken over only once `leaseDurationSeconds` have passed
//!   since this replica last *saw the record change* (local time, so clocks need not agree);
//! - the holder renews every retry period and gives up when it could not renew for the renew
//!   deadline, which is shorter than the lease duration: it stops before anyone may take over;
//! - every write is a compare-and-swap on the lease's resourceVersion, so two candidates never
//!   both win; a replica that shuts down cleanly releases the lease (holder cleared, duration
//!   1 s) so a standby takes over at once.
//!
//! [`decide`] is the pure decision; [`Elector`] does the I/O.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{PostParams, ResourceExt as _};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Where the lease lives in the virtual cluster.
pub const NAMESPACE: &str = "kube-system";
/// The lease's name.
pub const NAME: &str = "vkube-controller";

/// The three times of an election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long after the last renewal a standby may take over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// kube-controller-manager's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate does with the lease it just read.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// No lease yet: create it with this spec.
    Create(Value),
    /// Write this spec over the lease read (compare-and-swap on its resourceVersion).
    Update(Value),
    /// Another replica holds a live lease.
    Wait { holder: String },
}

/// The decision of `me` on the lease `spec` it read (`None`: there is none), where `held` says
/// whether another holder's lease is still live by this replica's observation; `now` is the
/// RFC 3339 time written as renew (and acquire) time.
pub fn decide(spec: Option<&Value>, held: bool, me: &str, timing: &Timing, now: &str) -> Step {
    let seconds = timing.lease_duration.as_secs().max(1);
    let Some(spec) = spec else {
        return Step::Create(json!({
            "holderIdentity": me, "leaseDurationSeconds": seconds,
            "acquireTime": now, "renewTime": now, "leaseTransitions": 0,
        }));
    };
    let holder = spec.get("holderIdentity").and_then(Value::as_str).unwrap_or_default();
    if !holder.is_empty() && holder != me && held {
        return Step::Wait { holder: holder.to_string() };
    }
    let transitions = spec.get("leaseTransitions").and_then(Value::as_i64).unwrap_or(0);
    let (acquired, transitions) = if holder == me {
        (spec.get("acquireTime").cloned().unwrap_or_else(|| json!(now)), transitions)
    } else {
        (json!(now), transitions + 1)
    };
    Step::Update(json!({
        "holderIdentity": me, "leaseDurationSeconds": seconds,
        "acquireTime": acquired, "renewTime": now, "leaseTransitions": transitions,
    }))
}

/// The holder named in a lease spec, if any.
fn holder_of(spec: &Value) -> &str {
    spec.get("holderIdentity").and_then(Value::as_str).unwrap_or_default()
}

/// The lease's own duration (what a standby waits after seeing it change).
fn duration_of(spec: &Value) -> Duration {
    Duration::from_secs(spec.get("leaseDurationSeconds").and_then(Value::as_u64).unwrap_or(1).max(1))
}

/// RFC 3339 with microseconds, as `MicroTime` is written.
fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// The last lease record seen and when (this replica's clock).
#[derive(Default)]
struct Observed {
    spec: Option<Value>,
    at: Option<Instant>,
    leading: bool,
}

/// One replica's candidacy.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    timing: Timing,
    observed: Mutex<Observed>,
}

/// How a standby's attempt ended.
enum Attempt {
    Leading,
    /// Someone else holds the lease; it may be taken over at `expires` unless it changes.
    Held {
        holder: String,
        expires: Instant,
    },
    Failed(String),
}

impl Elector {
    /// A candidate named `identity` for the lease `kube-system/vkube-controller` of `client`'s
    /// cluster.
    pub fn new(client: kube::Client, identity: String, timing: Timing) -> Self {
        Elector { api: Api::namespaced(client, NAMESPACE), identity, timing, observed: Mutex::default() }
    }

    /// This replica's identity (the lease's `holderIdentity` while it leads).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this replica held the lease at its last attempt.
    pub fn is_leader(&self) -> bool {
        self.observed.lock().unwrap_or_else(|p| p.into_inner()).leading
    }

    fn observe(&self, spec: Option<Value>, leading: bool) -> (Option<Value>, Instant) {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        if observed.spec != spec || observed.at.is_none() {
            observed.spec = spec;
            observed.at = Some(Instant::now());
        }
        observed.leading = leading;
        (observed.spec.clone(), observed.at.unwrap_or_else(Instant::now))
    }

    /// One try (client-go's `tryAcquireOrRenew`).
    async fn attempt(&self) -> Attempt {
        let current = match self.api.get_opt(NAME).await {
            Ok(current) => current,
            Err(error) => return Attempt::Failed(format!("reading the lease: {error}")),
        };
        let spec = current.as_ref().map(|lease| serde_json::to_value(&lease.spec).unwrap_or_default());
        let (seen, seen_at) = self.observe(spec.clone(), self.is_leader());
        let held = seen.as_ref().is_some_and(|s| seen_at + duration_of(s) > Instant::now());
        let wanted = match decide(spec.as_ref(), held, &self.identity, &self.timing, &micro_now()) {
            Step::Wait { holder } => {
                let expires = seen_at + seen.as_ref().map(duration_of).unwrap_or_default();
                self.observe(spec, false);
                return Attempt::Held { holder, expires };
            }
            Step::Create(spec) | Step::Update(spec) => spec,
        };
        let mut lease: Lease = match serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NAMESPACE}, "spec": wanted,
        })) {
            Ok(lease) => lease,
            Err(error) => return Attempt::Failed(format!("building the lease: {error}")),
        };
        let written = match current {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(current) => {
                lease.metadata.resource_version = current.resource_version();
                self.api.replace(NAME, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(written) => {
                self.observe(Some(serde_json::to_value(&written.spec).unwrap_or_default()), true);
                Attempt::Leading
            }
            // Another candidate wrote first (409): read again next time.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.observe(spec, false);
                Attempt::Failed("another replica wrote the lease first".into())
            }
            Err(error) => Attempt::Failed(format!("writing the lease: {error}")),
        }
    }

    /// Waits until this replica holds the lease. `standby` is called once with the holder's
    /// identity when another replica is found leading.
    pub async fn acquire(&self, mut standby: impl FnMut(&str)) {
        let mut told = false;
        loop {
            let next = Instant::now() + jittered(self.timing.retry_period);
            match self.attempt().await {
                Attempt::Leading => return,
                Attempt::Held { holder, expires } => {
                    if !told {
                        standby(&holder);
                        told = true;
                    }
                    // Try again at the next period, or the moment the lease runs out.
                    tokio::time::sleep_until(next.min(expires.max(Instant::now()))).await;
                    continue;
                }
                Attempt::Failed(why) => tracing::debug!(%why, "leader election: not acquired"),
            }
            tokio::time::sleep_until(next).await;
        }
    }

    /// Renews the lease every retry period while this replica leads; returns (with why) once it
    /// could not renew for the renew deadline: the caller must then stop everything the lease
    /// guards before a standby takes over.
    pub async fn hold(&self) -> String {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            let left = self.timing.renew_deadline.saturating_sub(renewed.elapsed());
            let why = match tokio::time::timeout(left, self.attempt()).await {
                Ok(Attempt::Leading) => {
                    renewed = Instant::now();
                    continue;
                }
                Ok(Attempt::Held { holder, .. }) => {
                    // Taken over (this replica was too slow to renew): stop at once.
                    self.observed.lock().unwrap_or_else(|p| p.into_inner()).leading = false;
                    return format!("{holder} took the lease over");
                }
                Ok(Attempt::Failed(why)) => why,
                Err(_) => "renewing timed out".into(),
            };
            if renewed.elapsed() + self.timing.retry_period >= self.timing.renew_deadline {
                self.observed.lock().unwrap_or_else(|p| p.into_inner()).leading = false;
                return format!("could not renew the lease for {} s ({why})", self.timing.renew_deadline.as_secs_f64());
            }
            tracing::warn!(%why, "leader election: renewing failed; retrying");
        }
    }

    /// Gives the lease up (holder cleared, duration 1 s) so a standby takes over at once; does
    /// nothing unless this replica holds it.
    pub async fn release(&self) {
        if !self.is_leader() {
            return;
        }
        let Ok(Some(mut lease)) = self.api.get_opt(NAME).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        let released: Result<k8s_openapi::api::coordination::v1::LeaseSpec, _> = serde_json::from_value(json!({
            "holderIdentity": null, "leaseDurationSeconds": 1, "renewTime": micro_now(),
            "acquireTime": micro_now(), "leaseTransitions": spec.lease_transitions.unwrap_or(0),
        }));
        let Ok(released) = released else { return };
        lease.spec = Some(released);
        if let Err(error) = self.api.replace(NAME, &PostParams::default(), &lease).await {
            tracing::warn!(%error, "leader election: could not release the lease");
        }
        self.observed.lock().unwrap_or_else(|p| p.into_inner()).leading = false;
    }

    /// The holder of the lease as last read (empty when none was read yet).
    pub fn last_holder(&self) -> String {
        let observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        observed.spec.as_ref().map(holder_of).unwrap_or_default().to_string()
    }
}

/// `period` plus up to a fifth more, so standbys do not all try in the same instant.
fn jittered(period: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    period + period.mul_f64(0.2 * f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-03T11:00:00.000000Z";

    #[test]
    fn a_missing_lease_is_created_with_this_replica_holding_it() {
        let Step::Create(spec) = decide(None, false, "a", &Timing::default(), NOW) else { panic!("not created") };
        assert_eq!(spec["holderIdentity"], "a");
        assert_eq!(spec["leaseDurationSeconds"], 15);
        assert_eq!(spec["leaseTransitions"], 0);
        assert_eq!(spec["renewTime"], NOW);
    }

    #[test]
    fn a_live_lease_of_another_replica_is_left_alone() {
        let spec = json!({"holderIdentity": "b", "leaseDurationSeconds": 15, "leaseTransitions": 3});
        assert_eq!(decide(Some(&spec), true, "a", &Timing::default(), NOW), Step::Wait { holder: "b".into() });
    }

    #[test]
    fn an_expired_or_released_lease_is_taken_over_and_counts_a_transition() {
        let spec = json!({"holderIdentity": "b", "leaseDurationSeconds": 15, "leaseTransitions": 3,
            "acquireTime": "2026-12-01T00:00:00.000000Z"});
        let Step::Update(taken) = decide(Some(&spec), false, "a", &Timing::default(), NOW) else { panic!() };
        assert_eq!(taken["holderIdentity"], "a");
        assert_eq!(taken["leaseTransitions"], 4);
        assert_eq!(taken["acquireTime"], NOW);
        // Released (no holder): taken at once, even while "live".
        let released = json!({"leaseDurationSeconds": 1, "leaseTransitions": 4});
        let Step::Update(taken) = decide(Some(&released), true, "a", &Timing::default(), NOW) else { panic!() };
        assert_eq!(taken["holderIdentity"], "a");
        assert_eq!(taken["leaseTransitions"], 5);
    }

    #[test]
    fn renewing_keeps_the_acquire_time_and_the_transition_count() {
        let spec = json!({"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 2,
            "acquireTime": "2026-12-01T00:00:00.000000Z", "renewTime": "2026-12-03T10:59:58.000000Z"});
        let Step::Update(renewed) = decide(Some(&spec), true, "a", &Timing::default(), NOW) else { panic!() };
        assert_eq!(renewed["acquireTime"], "2026-12-01T00:00:00.000000Z");
        assert_eq!(renewed["leaseTransitions"], 2);
        assert_eq!(renewed["renewTime"], NOW);
    }
}
