//! Exclusion per (region, job) across processes: one Lease per job in the operator's namespace,
//! taken with a conditional write before the claim and deleted after the answer is recorded.
//! Any number of replicas of one installation, with or without leader election, never have two
//! calls in flight for one job.
//!
//! The Lease expires like any other ([`crate::lease`]): a holder that died is taken over once
//! this process has watched its Lease unchanged for the Lease's duration, which covers a whole
//! attempt (the claim's validity), so its call — if it was sent — has ended by then.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use sha2::Digest as _;
use tokio::time::Instant;

use super::exclusion::JobKey;
use crate::crd::FIELD_MANAGER;
use crate::kubeapi::bounded;
use crate::lease::{LeaseStep, Observations, next_lease};

/// Label on every job Lease (to find them: `kubectl get lease -l dtsops.io/job-lease`).
pub const JOB_LEASE_LABEL: &str = "dtsops.io/job-lease";
/// Annotation naming the region of a job Lease.
pub const REGION_ANNOTATION: &str = "dtsops.io/region";
/// Annotation naming the job of a job Lease.
pub const JOB_ANNOTATION: &str = "dtsops.io/dts-job-id";
/// Annotation naming the resource (`namespace/name`) whose call the Lease covers.
pub const RESOURCE_ANNOTATION: &str = "dtsops.io/resource";

/// The job Leases of one installation.
pub struct JobLeases {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
    observed: Observations,
}

/// A job Lease this process holds.
#[derive(Debug)]
pub struct HeldJob {
    name: String,
    resource_version: Option<String>,
    /// When the acquiring write was sent: the Lease is ours until this plus its duration.
    sent_at: Instant,
    duration: Duration,
}

impl HeldJob {
    /// How long the Lease is still ours, for this process.
    pub fn remaining(&self) -> Duration {
        (self.sent_at + self.duration).saturating_duration_since(Instant::now())
    }
}

/// The result of trying to take a job.
#[derive(Debug)]
pub enum Acquired {
    /// Ours until released.
    Held(HeldJob),
    /// Another process's call for this job may be in flight; it names the resource.
    Busy(String),
}

/// The Lease name of a job: a digest, since job IDs hold characters names may not.
pub fn lease_name(key: &JobKey) -> String {
    let digest = sha2::Sha256::digest(format!("{}\n{}", key.0, key.1).as_bytes());
    format!("dts-job-{}", &hex::encode(digest)[..20])
}

fn params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_string()),
    }
}

impl JobLeases {
    /// Job Leases in `namespace`, held as `identity` for `duration` at a time.
    pub fn new(client: Client, namespace: &str, identity: &str, duration: Duration) -> JobLeases {
        JobLeases {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            duration,
            observed: Observations::default(),
        }
    }

    /// Takes the job for the resource `resource` (`namespace/name`), or says who has it.
    ///
    /// Usually no Lease exists (it is deleted after each answer), so the first request creates
    /// it; creation is atomic, and a Lease that exists already (409) is read and decided on as
    /// below. Either way the Lease is ours from before the first request was sent.
    pub async fn acquire(&self, key: &JobKey, resource: &str) -> Result<Acquired, kube::Error> {
        let name = lease_name(key);
        let sent_at = Instant::now();
        let LeaseStep::Create(spec) = next_lease(
            None,
            &self.identity,
            self.duration,
            Duration::ZERO,
            Timestamp::now(),
        ) else {
            unreachable!("no Lease: a create")
        };
        match bounded(
            self.api
                .create(&params(), &self.new_lease(&name, key, resource, spec)),
        )
        .await
        {
            Ok(stored) => return Ok(self.held(name, &stored, sent_at)),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
        self.acquire_existing(key, resource, name, sent_at).await
    }

    /// [`acquire`](Self::acquire) when a Lease existed: held by another process (until it
    /// expires on this process's watch), or taken over with a conditional write.
    async fn acquire_existing(
        &self,
        key: &JobKey,
        resource: &str,
        name: String,
        sent_at: Instant,
    ) -> Result<Acquired, kube::Error> {
        let existing = bounded(self.api.get_opt(&name)).await?;
        let current = existing
            .as_ref()
            .map(|l| l.spec.clone().unwrap_or_default());
        let observed_for = self.observed.observe(&name, current.as_ref());
        let holder_resource = existing
            .as_ref()
            .and_then(|l| l.annotations().get(RESOURCE_ANNOTATION).cloned());
        let step = next_lease(
            current.as_ref(),
            &self.identity,
            self.duration,
            observed_for,
            Timestamp::now(),
        );
        let written = match step {
            LeaseStep::HeldBy(holder) => {
                return Ok(Acquired::Busy(holder_resource.unwrap_or(holder)));
            }
            LeaseStep::Create(spec) => {
                bounded(
                    self.api
                        .create(&params(), &self.new_lease(&name, key, resource, spec)),
                )
                .await
            }
            LeaseStep::Write(spec) => {
                let mut lease = existing.expect("a write follows a read lease");
                lease.metadata.annotations = Some(annotations(key, resource));
                lease.spec = Some(spec);
                bounded(self.api.replace(&name, &params(), &lease)).await
            }
        };
        match written {
            Ok(stored) => Ok(self.held(name, &stored, sent_at)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Acquired::Busy(
                holder_resource.unwrap_or_else(|| "another replica".to_string()),
            )),
            Err(e) => Err(e),
        }
    }

    fn new_lease(&self, name: &str, key: &JobKey, resource: &str, spec: LeaseSpec) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some([(JOB_LEASE_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some(annotations(key, resource)),
                ..Default::default()
            },
            spec: Some(spec),
        }
    }

    fn held(&self, name: String, stored: &Lease, sent_at: Instant) -> Acquired {
        Acquired::Held(HeldJob {
            name,
            resource_version: stored.resource_version(),
            sent_at,
            duration: self.duration,
        })
    }

    /// Gives the job back: deletes the Lease if it is still the one this process wrote. A
    /// failure only delays the next call for this job until the Lease expires.
    pub async fn release(&self, held: HeldJob) {
        self.observed.forget(&held.name);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: held.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match bounded(self.api.delete(&held.name, &dp)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(lease = %held.name, error = %e, "could not release the job Lease; it expires")
            }
        }
    }
}

/// What a job Lease says about itself: the region, the job, and the resource whose call it
/// covers.
fn annotations(key: &JobKey, resource: &str) -> BTreeMap<String, String> {
    [
        (REGION_ANNOTATION.to_string(), key.0.clone()),
        (JOB_ANNOTATION.to_string(), key.1.clone()),
        (RESOURCE_ANNOTATION.to_string(), resource.to_string()),
    ]
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_valid_stable_and_distinct() {
        let a = lease_name(&("cn-hangzhou".into(), "l3m1213ye7l****".into()));
        assert_eq!(
            a,
            lease_name(&("cn-hangzhou".into(), "l3m1213ye7l****".into()))
        );
        assert_ne!(
            a,
            lease_name(&("cn-shanghai".into(), "l3m1213ye7l****".into()))
        );
        assert_ne!(a, lease_name(&("cn-hangzhou".into(), "other".into())));
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
    }
}
