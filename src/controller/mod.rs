//! The controller: [`reconcile`] reads a resource, asks the pure state machine ([`decide`]) for
//! the next step, and performs it. The only effects are status writes (one function,
//! [`status::write_status`]), events ([`events`]), a Secret `get`, TTL deletion, and the DTS
//! call itself — made by the attempt pipeline ([`attempt`]).
//!
//! A DTS call is only ever sent after a claim (phase Running, attempts+1) was accepted by the API
//! server with the `resourceVersion` read; its answer is then recorded on top of that claim. So a
//! restart, a second replica or a replayed event can never send a second call for a request whose
//! answer is recorded, and a claim found without an answer after its deadline is reported as
//! Unknown, never retried.
//!
//! Layout: [`decide`] (pure: status + time → step), [`status`] (pure builders and the one write),
//! [`resolve`] (endpoint and credentials of an attempt), [`exclusion`] (one call per job),
//! [`attempt`] (the pipeline), [`events`] (what is published after status says it), [`cache`]
//! (what the watch cache keeps of each resource).

pub mod attempt;
pub mod cache;
pub mod decide;
pub mod events;
pub mod exclusion;
#[cfg(test)]
mod fixtures;
pub mod joblease;
pub mod resolve;
pub mod status;
pub mod verification;
pub mod verify;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;

use crate::aliyun::client::DtsApi;
use crate::aliyun::endpoint::{Endpoint, EndpointAllowlist};
use crate::aliyun::provider::CredentialsProvider;
use crate::crd::{
    DtsJobReset, DtsJobResetStatus, Phase, RequestIdentity, VerificationState, condition,
    event_reason,
};
use crate::lease::{LeaseClock, Observations};
use crate::metrics::{Metrics, ResultLabels};
use crate::ratelimit::TokenBucket;
use crate::retry::{Backoff, DEFAULT_BACKOFF_LIMIT};
use crate::selector::LabelSelector;

use attempt::Attempt;
use decide::{Observed, Step, decide};
use exclusion::Reservations;
use joblease::JobLeases;
use resolve::DefaultCredentialsScope;
use status::{WriteError, write_status};
use verify::VerifyPolicy;

/// Settings of the controller (from `dts-operator run` flags).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// `--default-region`.
    pub default_region: String,
    /// `--dts-endpoint`: every call goes there.
    pub dts_endpoint: Option<Endpoint>,
    /// `--endpoint-allowlist`.
    pub allowlist: EndpointAllowlist,
    /// `--default-credentials-namespaces`.
    pub default_scope: DefaultCredentialsScope,
    /// Backoff between retries.
    pub backoff: Backoff,
    /// Timeout of one DTS call.
    pub attempt_timeout: Duration,
    /// This instance's identity (claims name it).
    pub identity: String,
    /// `--max-clock-skew`.
    pub max_clock_skew: Duration,
    /// `--verify-interval`, `--verify-window`.
    pub verify: VerifyPolicy,
    /// `--selector`: the resources of this shard (everything by default).
    pub selector: LabelSelector,
}

impl ControllerConfig {
    /// How long a claim stays valid: the attempt's timeout plus time to record its answer.
    pub fn claim_validity(&self) -> Duration {
        self.attempt_timeout + attempt::CLAIM_GRACE
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client for requests: every call bounded, none retried behind our back.
    pub client: Client,
    /// Kubernetes client for the watch.
    pub watch_client: Client,
    /// Settings.
    pub config: ControllerConfig,
    /// The DTS API (the real client in production).
    pub dts: Arc<dyn DtsApi>,
    /// The controller's own credentials (environment or RRSA), if any.
    pub default_credentials: Option<CredentialsProvider>,
    /// Publishes events.
    pub recorder: events::Publisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `--dts-qps` / `--dts-burst`: resets.
    pub bucket: TokenBucket,
    /// `--dts-read-qps` / `--dts-read-burst`: reads, so they never slow resets.
    pub read_bucket: TokenBucket,
    /// `--max-concurrent-resets`.
    pub sends: Semaphore,
    /// The jobs whose call is in flight in this process.
    pub reservations: Reservations,
    /// The controller's cache, to see other resources' claims.
    pub store: OnceLock<Store<DtsJobReset>>,
    /// Set on SIGTERM or when the lease is lost: no new claims (answers are still recorded).
    pub stopping: AtomicBool,
    /// With leader election: this process's own view of its lease (nothing is claimed or sent
    /// unless it outlasts the attempt).
    pub leader: OnceLock<Arc<LeaseClock>>,
    /// The job Leases (exclusion across processes), when the operator has a namespace for them.
    pub job_leases: Option<JobLeases>,
    /// How long this process has watched each resource's current claim unchanged.
    pub claims: Observations,
    /// Claims of this process that were withdrawn-to-be: never sent, but the withdrawal write
    /// failed. Keyed by (UID, attempt); the status to restore.
    pub unsent: Mutex<HashMap<(String, i32), DtsJobResetStatus>>,
}

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API read or delete failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Status write failed or conflicted.
    #[error(transparent)]
    Status(#[from] WriteError),
    /// A namespaced resource without a namespace.
    #[error("the resource has no namespace")]
    NoNamespace,
}

impl Error {
    /// A stable, bounded name for the error: the `category` label of
    /// `dts_operator_reconciles_total`.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::Status(WriteError::Conflict) => "conflict",
            Error::Status(WriteError::Api(_)) => "status_write",
            Error::NoNamespace => "invalid_object",
        }
    }

    /// Every category, for dashboards, alerts and tests.
    pub const CATEGORIES: [&'static str; 4] =
        ["kube_api", "conflict", "status_write", "invalid_object"];
}

fn requeue_at(t: Timestamp, now: Timestamp) -> Action {
    let wait = Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
    Action::requeue(wait + Duration::from_millis(50))
}

fn max_attempts(obj: &DtsJobReset) -> u32 {
    let limit = obj
        .spec
        .backoff_limit
        .map(|l| u32::try_from(l.max(0)).unwrap_or(0))
        .unwrap_or(DEFAULT_BACKOFF_LIMIT);
    limit.saturating_add(1)
}

/// The reconcile entry point (kube-runtime).
#[tracing::instrument(skip_all, fields(resource = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())))]
pub async fn reconcile(obj: Arc<DtsJobReset>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_inner(&obj, &ctx).await;
    let labels = match &result {
        Ok(_) => ResultLabels {
            result: "ok",
            category: "",
        },
        Err(e) => ResultLabels {
            result: "error",
            category: e.category(),
        },
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    result
}

/// Requeue policy after an error: a conflict is retried at once (re-read), anything else soon.
pub fn error_policy(_obj: Arc<DtsJobReset>, error: &Error, _ctx: Arc<Context>) -> Action {
    match error {
        Error::Status(WriteError::Conflict) => Action::requeue(Duration::from_millis(200)),
        other => {
            tracing::warn!(error = %other, "reconcile failed; retrying in 5s");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

async fn reconcile_inner(obj: &DtsJobReset, ctx: &Context) -> Result<Action, Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DtsJobReset> = Api::namespaced(ctx.client.clone(), &ns);
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(current) = fresh_if_claimed(&api, obj).await? else {
        return Ok(Action::await_change());
    };
    if let Some(action) = withdraw_own_unsent_claim(ctx, &api, &current).await? {
        return Ok(action);
    }
    // The cache holds only this shard's resources, but a fresh copy may have been relabelled
    // into another shard since: that shard acts on it now.
    if !ctx.config.selector.matches(current.labels()) {
        tracing::debug!("no longer matches --selector: left to its new shard");
        return Ok(Action::await_change());
    }
    let desired = RequestIdentity::of(&current);
    let st = current.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let step = decide(&Observed {
        desired: &desired,
        status: &st,
        max_attempts: max_attempts(&current),
        ttl_seconds: current.spec.ttl_seconds_after_finished,
        now,
        claim_observed_for: watch_claim(ctx, &current),
        max_clock_skew: ctx.config.max_clock_skew,
        default_claim_validity: ctx.config.claim_validity(),
        verify_interval: ctx.config.verify.interval,
    });
    tracing::debug!(?step, "decided");
    perform(ctx, &api, &current, &desired, st, step, now).await
}

/// How long this process has watched `obj`'s current claim unchanged (zero when it has none, or
/// one seen for the first time: after a restart the watch starts again).
fn watch_claim(ctx: &Context, obj: &DtsJobReset) -> Duration {
    let uid = obj.uid().unwrap_or_default();
    match obj
        .status
        .as_ref()
        .filter(|s| s.phase == Some(Phase::Running))
    {
        Some(s) => ctx.claims.observe_state(
            &uid,
            format!(
                "{:?}|{:?}|{:?}|{:?}",
                s.claimed_by,
                s.last_attempt_time.as_ref().map(|t| t.0),
                s.attempts,
                s.request
            ),
        ),
        None => {
            ctx.claims.forget(&uid);
            Duration::ZERO
        }
    }
}

/// A claim of this very process that it never sent (fenced) and could not withdraw at the time:
/// this process knows nothing went out, so it restores the status from before the claim.
async fn withdraw_own_unsent_claim(
    ctx: &Context,
    api: &Api<DtsJobReset>,
    obj: &DtsJobReset,
) -> Result<Option<Action>, Error> {
    let Some(st) = obj.status.as_ref().filter(|s| {
        s.phase == Some(Phase::Running)
            && s.claimed_by.as_deref() == Some(ctx.config.identity.as_str())
    }) else {
        return Ok(None);
    };
    let key = (obj.uid().unwrap_or_default(), st.attempts.unwrap_or(0));
    let Some(before) = ctx.unsent.lock().expect("unsent lock").get(&key).cloned() else {
        return Ok(None);
    };
    write_status(api, obj, before).await?;
    ctx.unsent.lock().expect("unsent lock").remove(&key);
    tracing::info!("withdrew a claim this process never sent");
    Ok(Some(Action::requeue(Duration::from_millis(200))))
}

/// A claim seen in the cache may be our own, already answered, in a stale copy: only a fresh
/// read can tell an in-flight or abandoned claim from a recorded answer. `None`: deleted.
async fn fresh_if_claimed(
    api: &Api<DtsJobReset>,
    obj: &DtsJobReset,
) -> Result<Option<DtsJobReset>, Error> {
    if obj.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running) {
        Ok(crate::kubeapi::bounded(api.get_opt(&obj.name_any())).await?)
    } else {
        Ok(Some(obj.clone()))
    }
}

/// Performs one step of the state machine.
async fn perform(
    ctx: &Context,
    api: &Api<DtsJobReset>,
    obj: &DtsJobReset,
    desired: &RequestIdentity,
    st: DtsJobResetStatus,
    step: Step,
    now: Timestamp,
) -> Result<Action, Error> {
    let generation = obj.meta().generation;
    let max = max_attempts(obj);
    match step {
        // A new request goes straight to its first attempt: the request is recorded by the same
        // write as the claim (or as the reason for waiting), one status write fewer. Its region
        // is resolved now, once.
        Step::StartRequest => {
            let request = desired.resolve(&ctx.config.default_region);
            let base = status::start_request(&st, &request, generation, now);
            let attempt = Attempt {
                api,
                obj,
                desired: &request,
                base,
                max_attempts: max,
            };
            attempt::run(ctx, attempt).await
        }
        // A later attempt sends the request as recorded: to the region it was resolved to.
        Step::Attempt => {
            let request = st
                .request
                .clone()
                .unwrap_or_else(|| desired.resolve(&ctx.config.default_region));
            let attempt = Attempt {
                api,
                obj,
                desired: &request,
                base: st,
                max_attempts: max,
            };
            attempt::run(ctx, attempt).await
        }
        Step::AwaitClaim(after) => Ok(Action::requeue(after + Duration::from_millis(200))),
        Step::AbandonedClaim => {
            let s = status::abandoned_claim(&st, &ctx.config.verify, generation, now);
            verification::count_begun(ctx, &s);
            if s.verification.as_ref().map(|v| v.state) == Some(VerificationState::Verifying) {
                // Nothing to tell yet: the job's state decides, at the next check.
                write_status(api, obj, s).await?;
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            conclude(ctx, api, obj, s, event_reason::OUTCOME_UNKNOWN).await
        }
        Step::Verify => verification::check(ctx, api, obj, &st).await,
        Step::VerifyAt(t) => Ok(requeue_at(t, now)),
        Step::Exhausted => {
            let s = status::exhausted(&st, max, generation, now);
            conclude(ctx, api, obj, s, event_reason::RESET_FAILED).await
        }
        Step::WaitUntil(t) | Step::DeleteAt(t) => {
            observe_generation(api, obj, &st, generation).await?;
            Ok(requeue_at(t, now))
        }
        Step::Idle => {
            observe_generation(api, obj, &st, generation).await?;
            Ok(Action::await_change())
        }
        Step::Delete => delete_after_ttl(api, obj).await,
    }
}

/// Writes a final status found without a call (abandoned claim, retries used up) and its
/// Warning event, with the Stalled condition's message.
async fn conclude(
    ctx: &Context,
    api: &Api<DtsJobReset>,
    obj: &DtsJobReset,
    s: DtsJobResetStatus,
    event: &str,
) -> Result<Action, Error> {
    let msg = events::condition_message(&s, condition::STALLED).unwrap_or_default();
    write_status(api, obj, s).await?;
    events::publish(&ctx.recorder, obj, EventType::Warning, event, msg).await;
    Ok(Action::await_change())
}

async fn observe_generation(
    api: &Api<DtsJobReset>,
    obj: &DtsJobReset,
    st: &DtsJobResetStatus,
    generation: Option<i64>,
) -> Result<(), Error> {
    if st.observed_generation != generation {
        write_status(api, obj, status::observe_generation(st, generation)).await?;
    }
    Ok(())
}

/// `ttlSecondsAfterFinished` passed: delete exactly this object (UID precondition).
async fn delete_after_ttl(api: &Api<DtsJobReset>, obj: &DtsJobReset) -> Result<Action, Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match crate::kubeapi::bounded(api.delete(&obj.name_any(), &dp)).await {
        Ok(_) => tracing::info!("deleted after ttlSecondsAfterFinished"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Counts cached resources per phase (for the `dts_operator_resources` gauge).
pub fn phase_counts(store: &Store<DtsJobReset>) -> Vec<(Phase, i64)> {
    let mut counts: HashMap<Phase, i64> = HashMap::new();
    for o in store.state() {
        let p = o
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(Phase::Pending);
        *counts.entry(p).or_default() += 1;
    }
    counts.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_listed_stable_category() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        let errors = [
            Error::Kube(api(500)),
            Error::Status(WriteError::Conflict),
            Error::Status(WriteError::Api(api(503))),
            Error::NoNamespace,
        ];
        let seen: Vec<&str> = errors.iter().map(Error::category).collect();
        assert_eq!(seen, Error::CATEGORIES);
    }
}
