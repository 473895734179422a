//! Lease-based leader election (`coordination.k8s.io/v1`), a small loop of our own: kube-rs has
//! none built in. Only the holder of the Lease reconciles; a standby sends nothing.
//!
//! Every Lease write carries the `resourceVersion` read, so two candidates can never both believe
//! they acquired it. A leader that cannot renew in time stops acting before its lease can expire.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use crate::crd::FIELD_MANAGER;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This instance's identity (unique per process).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
}

impl LeaderConfig {
    /// How often the leader renews.
    pub fn renew_period(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How often a standby tries to acquire.
    pub fn retry_period(&self) -> Duration {
        (self.lease_duration / 5).max(Duration::from_millis(200))
    }
}

/// A candidate for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
}

fn params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_string()),
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: Client, config: LeaderConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// One step: acquire or renew. `Ok(true)` when this instance holds the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let existing = self.api.get_opt(&self.config.name).await?;
        let current = existing
            .as_ref()
            .map(|l| l.spec.clone().unwrap_or_default());
        let written = match next_lease(current.as_ref(), &self.config, Timestamp::now()) {
            LeaseStep::HeldBy(_) => return Ok(false),
            LeaseStep::Create(spec) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&params(), &lease).await
            }
            LeaseStep::Write(spec) => {
                let mut lease = existing.expect("a write follows a read lease");
                lease.spec = Some(spec);
                self.api.replace(&lease.name_any(), &params(), &lease).await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this instance holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired the leader lease");
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the Lease")
                }
            }
            tokio::time::sleep(self.config.retry_period()).await;
        }
    }

    /// Renews until renewal fails for too long or another holder appears; then returns, and the
    /// caller must stop acting at once.
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        // Give up before the lease can expire for others: one renew period of safety.
        let give_up_after = self
            .config
            .lease_duration
            .saturating_sub(self.config.renew_period());
        loop {
            tokio::time::sleep(self.config.renew_period()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    // A conflict can be our own race with a stale read; only a different holder
                    // means the lease is lost.
                    if let Ok(Some(l)) = self.api.get_opt(&self.config.name).await {
                        let holder = l.spec.and_then(|s| s.holder_identity);
                        if holder.as_deref() != Some(self.config.identity.as_str()) {
                            tracing::error!(holder = ?holder, "leader lease taken by another instance");
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renewal failed"),
            }
            if last_renewed.elapsed() >= give_up_after {
                tracing::error!("leader lease not renewed in time");
                return;
            }
        }
    }

    /// Gives the lease up (on graceful shutdown) so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease
            .spec
            .as_ref()
            .and_then(|s| released(s, &self.config.identity))
        else {
            return;
        };
        lease.spec = Some(spec);
        match self.api.replace(&lease.name_any(), &params(), &lease).await {
            Ok(_) => tracing::info!("released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the leader lease"),
        }
    }
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

/// The next step for `config`'s candidate, given the Lease's spec as read (`None`: no Lease) and
/// the time. Pure.
pub fn next_lease(current: Option<&LeaseSpec>, config: &LeaderConfig, now: Timestamp) -> LeaseStep {
    let me = &config.identity;
    let duration = Some(secs(config.lease_duration));
    let Some(spec) = current else {
        return LeaseStep::Create(LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: duration,
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..Default::default()
        });
    };
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let held_by_me = holder.as_deref() == Some(me.as_str());
    let expired = match (spec.renew_time.as_ref(), spec.lease_duration_seconds) {
        (Some(renew), Some(d)) => {
            renew.0 + jiff::SignedDuration::from_secs(i64::from(d.max(0))) <= now
        }
        _ => true,
    };
    if let Some(other) = holder.filter(|_| !held_by_me && !expired) {
        return LeaseStep::HeldBy(other);
    }
    let mut next = spec.clone();
    if !held_by_me {
        next.acquire_time = Some(MicroTime(now));
        next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    next.holder_identity = Some(me.clone());
    next.lease_duration_seconds = duration;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn config(me: &str) -> LeaderConfig {
        LeaderConfig {
            namespace: "ns".into(),
            name: "dts-operator".into(),
            identity: me.into(),
            lease_duration: Duration::from_secs(15),
        }
    }

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

    const NOW: &str = "2026-01-01T00:01:00Z";

    #[test]
    fn no_lease_is_created_for_me() {
        let LeaseStep::Create(spec) = next_lease(None, &config("me"), ts(NOW)) else {
            panic!("create expected")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.renew_time, Some(MicroTime(ts(NOW))));
    }

    #[test]
    fn a_valid_lease_of_another_is_left_alone() {
        let spec = held("other", "2026-01-01T00:00:50Z", 3);
        assert_eq!(
            next_lease(Some(&spec), &config("me"), ts(NOW)),
            LeaseStep::HeldBy("other".into())
        );
    }

    #[test]
    fn renewing_my_lease_keeps_acquire_time_and_transitions() {
        let spec = held("me", "2026-01-01T00:00:50Z", 3);
        let LeaseStep::Write(next) = next_lease(Some(&spec), &config("me"), ts(NOW)) else {
            panic!("write expected")
        };
        assert_eq!(next.renew_time, Some(MicroTime(ts(NOW))));
        assert_eq!(next.acquire_time, spec.acquire_time);
        assert_eq!(next.lease_transitions, Some(3));
    }

    #[test]
    fn an_expired_or_empty_lease_is_acquired() {
        for spec in [
            held("other", "2026-01-01T00:00:45Z", 3),
            LeaseSpec {
                holder_identity: Some(String::new()),
                ..held("x", "2026-01-01T00:00:59Z", 3)
            },
            LeaseSpec {
                renew_time: None,
                ..held("other", NOW, 3)
            },
        ] {
            let LeaseStep::Write(next) = next_lease(Some(&spec), &config("me"), ts(NOW)) else {
                panic!("write expected for {spec:?}")
            };
            assert_eq!(next.holder_identity.as_deref(), Some("me"));
            assert_eq!(next.acquire_time, Some(MicroTime(ts(NOW))));
            assert_eq!(next.lease_transitions, Some(4));
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
}
