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
        let now = Timestamp::now();
        let me = &self.config.identity;
        let existing = self.api.get_opt(&self.config.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(secs(self.config.lease_duration)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&params(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        let expired = match (spec.renew_time.as_ref(), spec.lease_duration_seconds) {
            (Some(renew), Some(d)) => {
                renew.0 + jiff::SignedDuration::from_secs(i64::from(d.max(0))) <= now
            }
            _ => true,
        };
        if !held_by_me && holder.is_some() && !expired {
            return Ok(false);
        }
        let mut new_spec = spec.clone();
        if !held_by_me {
            new_spec.acquire_time = Some(MicroTime(now));
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.holder_identity = Some(me.clone());
        new_spec.lease_duration_seconds = Some(secs(self.config.lease_duration));
        new_spec.renew_time = Some(MicroTime(now));
        lease.spec = Some(new_spec);
        match self.api.replace(&lease.name_any(), &params(), &lease).await {
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
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self.api.replace(&lease.name_any(), &params(), &lease).await {
            Ok(_) => tracing::info!("released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the leader lease"),
        }
    }
}
