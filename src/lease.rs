//! What every Lease this operator holds has in common — the leader election and the per-job
//! exclusion — decided without trusting anyone's wall clock:
//!
//! - another holder's lease expires when *this process* has watched it unchanged for its
//!   `leaseDurationSeconds` ([`Observations`], monotonic time, as client-go does): its
//!   `renewTime` is never compared with the local clock, so a skewed or future `renewTime`
//!   neither steals a live lease nor blocks takeover of a dead one beyond that duration;
//! - a lease this process holds is valid, for this process, until the moment it sent its last
//!   successful write plus the duration ([`LeaseClock`]), also monotonic.
//!
//! [`next_lease`] is the pure decision; the modules holding leases do the I/O around it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use tokio::time::Instant;

/// Seconds of a lease duration as the Lease stores them (at least 1).
pub fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs_f64().ceil() as u64)
        .unwrap_or(i32::MAX)
        .max(1)
}

/// What a candidate does with the Lease it read (pure).
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseStep {
    /// No Lease exists: create it, held by this candidate.
    Create(LeaseSpec),
    /// Acquire (the holder is gone or expired) or renew (this candidate holds it): write this
    /// spec with the read `resourceVersion`.
    Write(LeaseSpec),
    /// Another holder's lease is still valid.
    HeldBy(String),
}

/// The next step for candidate `me` wanting the lease for `duration`, given the Lease's spec as
/// read (`None`: no Lease), how long this process has watched that spec unchanged, and the time
/// to write into it. Pure.
pub fn next_lease(
    current: Option<&LeaseSpec>,
    me: &str,
    duration: Duration,
    observed_for: Duration,
    now: Timestamp,
) -> LeaseStep {
    let seconds = Some(secs(duration));
    let Some(spec) = current else {
        return LeaseStep::Create(LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: seconds,
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..Default::default()
        });
    };
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let held_by_me = holder.as_deref() == Some(me);
    let their_duration = Duration::from_secs(
        u64::try_from(spec.lease_duration_seconds.unwrap_or(0).max(0)).unwrap_or(0),
    );
    let expired = observed_for >= their_duration;
    if let Some(other) = holder.filter(|_| !held_by_me && !expired) {
        return LeaseStep::HeldBy(other);
    }
    let mut next = spec.clone();
    if !held_by_me {
        next.acquire_time = Some(MicroTime(now));
        next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    next.holder_identity = Some(me.to_string());
    next.lease_duration_seconds = seconds;
    next.renew_time = Some(MicroTime(now));
    LeaseStep::Write(next)
}

/// The spec that gives the lease up, if `me` holds it. Pure.
pub fn released(spec: &LeaseSpec, me: &str) -> Option<LeaseSpec> {
    (spec.holder_identity.as_deref() == Some(me)).then(|| LeaseSpec {
        holder_identity: None,
        renew_time: None,
        acquire_time: None,
        ..spec.clone()
    })
}

/// The parts of a Lease whose change means its holder is alive.
fn fingerprint(spec: Option<&LeaseSpec>) -> String {
    match spec {
        None => String::new(),
        Some(s) => format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}",
            s.holder_identity,
            s.renew_time.as_ref().map(|t| t.0),
            s.acquire_time.as_ref().map(|t| t.0),
            s.lease_duration_seconds,
            s.lease_transitions
        ),
    }
}

/// When this process first saw each Lease (or claim) in its current state.
#[derive(Debug, Default)]
pub struct Observations {
    seen: Mutex<HashMap<String, (String, Instant)>>,
}

impl Observations {
    /// Records the Lease `name` as read now; returns how long this process has watched it in
    /// this state (zero for a state seen for the first time — after a restart too).
    pub fn observe(&self, name: &str, spec: Option<&LeaseSpec>) -> Duration {
        self.observe_state(name, fingerprint(spec))
    }

    /// [`observe`](Self::observe) for anything whose state a string captures (a claim, say).
    pub fn observe_state(&self, name: &str, print: String) -> Duration {
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("observations lock");
        match seen.get(name) {
            Some((p, since)) if *p == print => now.duration_since(*since),
            _ => {
                seen.insert(name.to_string(), (print, now));
                Duration::ZERO
            }
        }
    }

    /// Forgets `name` (the Lease was deleted or released by this process).
    pub fn forget(&self, name: &str) {
        self.seen.lock().expect("observations lock").remove(name);
    }
}

/// This process's own view of a lease it holds: valid until the moment it sent its last
/// successful write, plus the duration. Never longer than anyone else can see it valid.
#[derive(Debug, Default)]
pub struct LeaseClock {
    valid_until: Mutex<Option<Instant>>,
}

impl LeaseClock {
    /// A write sent at `sent_at` succeeded: the lease is ours until `sent_at + duration`.
    pub fn renewed(&self, sent_at: Instant, duration: Duration) {
        *self.valid_until.lock().expect("lease clock lock") = Some(sent_at + duration);
    }

    /// The lease is no longer ours.
    pub fn lost(&self) {
        *self.valid_until.lock().expect("lease clock lock") = None;
    }

    /// How long the lease is still ours (zero when not held or expired).
    pub fn remaining(&self) -> Duration {
        self.valid_until
            .lock()
            .expect("lease clock lock")
            .map(|until| until.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const D: Duration = Duration::from_secs(15);
    const NOW: &str = "2026-01-01T00:01:00Z";

    fn held(by: &str, renewed: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(ts("2026-01-01T00:00:00Z"))),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn step(spec: Option<&LeaseSpec>, observed_for: Duration) -> LeaseStep {
        next_lease(spec, "me", D, observed_for, ts(NOW))
    }

    #[test]
    fn no_lease_is_created_for_me() {
        let LeaseStep::Create(spec) = step(None, Duration::ZERO) else {
            panic!("create expected")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.renew_time, Some(MicroTime(ts(NOW))));
    }

    /// Expiry is local observation, never the holder's renewTime against the local clock: an
    /// old renewTime (a clock behind) does not expire a lease watched for less than its
    /// duration, and a renewTime an hour ahead does not keep one watched for longer.
    #[test]
    fn another_holders_lease_expires_only_by_local_observation() {
        let behind = held("other", "2025-01-01T00:00:00Z", 3);
        assert_eq!(
            step(Some(&behind), Duration::from_secs(14)),
            LeaseStep::HeldBy("other".into())
        );
        let ahead = held("other", "2026-01-01T01:01:00Z", 3);
        let LeaseStep::Write(next) = step(Some(&ahead), Duration::from_secs(15)) else {
            panic!("a lease watched unchanged for its duration is taken over")
        };
        assert_eq!(next.holder_identity.as_deref(), Some("me"));
        assert_eq!(next.acquire_time, Some(MicroTime(ts(NOW))));
        assert_eq!(next.lease_transitions, Some(4));
    }

    #[test]
    fn renewing_my_lease_keeps_acquire_time_and_transitions() {
        let spec = held("me", "2026-01-01T00:00:50Z", 3);
        let LeaseStep::Write(next) = step(Some(&spec), Duration::ZERO) else {
            panic!("write expected")
        };
        assert_eq!(next.renew_time, Some(MicroTime(ts(NOW))));
        assert_eq!(next.acquire_time, spec.acquire_time);
        assert_eq!(next.lease_transitions, Some(3));
    }

    #[test]
    fn an_empty_or_durationless_lease_is_acquired() {
        for spec in [
            LeaseSpec {
                holder_identity: Some(String::new()),
                ..held("x", NOW, 3)
            },
            LeaseSpec {
                lease_duration_seconds: None,
                ..held("other", NOW, 3)
            },
        ] {
            let LeaseStep::Write(next) = step(Some(&spec), Duration::ZERO) else {
                panic!("write expected for {spec:?}")
            };
            assert_eq!(next.holder_identity.as_deref(), Some("me"));
        }
    }

    #[test]
    fn only_the_holder_releases() {
        let spec = held("me", NOW, 1);
        let r = released(&spec, "me").unwrap();
        assert_eq!(
            (r.holder_identity, r.renew_time, r.acquire_time),
            (None, None, None)
        );
        assert_eq!(r.lease_transitions, Some(1));
        assert_eq!(released(&spec, "other"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn observation_restarts_when_the_lease_changes() {
        let o = Observations::default();
        let a = held("other", "2026-01-01T00:00:00Z", 1);
        assert_eq!(o.observe("l", Some(&a)), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(o.observe("l", Some(&a)), Duration::from_secs(5));
        let renewed = held("other", "2026-01-01T00:00:05Z", 1);
        assert_eq!(o.observe("l", Some(&renewed)), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(o.observe("l", Some(&renewed)), Duration::from_secs(2));
        o.forget("l");
        assert_eq!(o.observe("l", Some(&renewed)), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn my_view_of_my_lease_runs_from_when_the_write_was_sent() {
        let c = LeaseClock::default();
        assert_eq!(c.remaining(), Duration::ZERO);
        let sent = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        c.renewed(sent, D);
        assert_eq!(c.remaining(), Duration::from_secs(13));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(c.remaining(), Duration::ZERO);
        c.renewed(Instant::now(), D);
        c.lost();
        assert_eq!(c.remaining(), Duration::ZERO);
    }
}
