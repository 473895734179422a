//! Lease-based leader election (`coordination.k8s.io/v1`), a small loop of our own: kube-rs has
//! none built in. Only the holder of the Lease reconciles; a standby sends nothing.
//!
//! Every Lease write carries the `resourceVersion` read, so two candidates can never both believe
//! they acquired it. Expiry follows [`crate::lease`]: another holder's lease is judged by how
//! long this process has watched it unchanged, never by its `renewTime` against the local clock;
//! this process's own lease is valid, for itself, from when its last successful write was sent
//! ([`LeaseClock`]) — the controller stops claiming and sending before that view can expire.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use crate::crd::FIELD_MANAGER;
use crate::kubeapi::bounded;
use crate::lease::{LeaseClock, LeaseStep, Observations, next_lease, released};

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
    /// How often the leader renews and a standby tries to acquire: a fifth of the lease, so the
    /// leader's own view of its lease rarely drops below four fifths of it.
    pub fn retry_period(&self) -> Duration {
        (self.lease_duration / 5).max(Duration::from_millis(200))
    }
}

/// A candidate for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Observations,
    clock: Arc<LeaseClock>,
}

fn params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_string()),
    }
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: Client, config: LeaderConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observations::default(),
            clock: Arc::new(LeaseClock::default()),
        }
    }

    /// This process's own view of the lease, for the controller's fencing.
    pub fn clock(&self) -> Arc<LeaseClock> {
        self.clock.clone()
    }

    /// One step: acquire or renew. `Ok(true)` when this instance holds the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        // Validity counts from before anything was sent: never longer than others can see.
        let sent_at = Instant::now();
        let existing = bounded(self.api.get_opt(&self.config.name)).await?;
        let current = existing
            .as_ref()
            .map(|l| l.spec.clone().unwrap_or_default());
        let observed_for = self.observed.observe(&self.config.name, current.as_ref());
        let step = next_lease(
            current.as_ref(),
            &self.config.identity,
            self.config.lease_duration,
            observed_for,
            Timestamp::now(),
        );
        let written = match step {
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
                bounded(self.api.create(&params(), &lease)).await
            }
            LeaseStep::Write(spec) => {
                let mut lease = existing.expect("a write follows a read lease");
                lease.spec = Some(spec);
                bounded(self.api.replace(&lease.name_any(), &params(), &lease)).await
            }
        };
        match written {
            Ok(_) => {
                self.clock.renewed(sent_at, self.config.lease_duration);
                Ok(true)
            }
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

    /// Renews until this process's own view of the lease expires or another holder appears;
    /// then returns, and the caller must stop claiming at once (recording answers that arrive
    /// is still allowed).
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.config.retry_period()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => {}
                Ok(false) => {
                    // A conflict can be our own race with a stale read; only a different holder
                    // means the lease is lost.
                    if let Ok(Some(l)) = bounded(self.api.get_opt(&self.config.name)).await {
                        let holder = l.spec.and_then(|s| s.holder_identity);
                        if holder.as_deref() != Some(self.config.identity.as_str()) {
                            tracing::error!(holder = ?holder, "leader lease taken by another instance");
                            self.clock.lost();
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renewal failed"),
            }
            if self.clock.remaining().is_zero() {
                tracing::error!("leader lease not renewed in time: this process's view expired");
                return;
            }
        }
    }

    /// Gives the lease up (on graceful shutdown) so a standby takes over at once.
    pub async fn release(&self) {
        self.clock.lost();
        let Ok(Some(mut lease)) = bounded(self.api.get_opt(&self.config.name)).await else {
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
        match bounded(self.api.replace(&lease.name_any(), &params(), &lease)).await {
            Ok(_) => tracing::info!("released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the leader lease"),
        }
    }
}
