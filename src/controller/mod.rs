//! The controller: [`reconcile`] reads a resource, asks the pure state machine ([`decide`]) for
//! the next step, and performs it. The only effects are status writes (one function,
//! [`status::write_status`]), events, a Secret `get`, TTL deletion, and the DTS call itself.
//!
//! A DTS call is only ever sent after a claim (phase Running, attempts+1) was accepted by the API
//! server with the `resourceVersion` read; its answer is then recorded on top of that claim. So a
//! restart, a second replica or a replayed event can never send a second call for a request whose
//! answer is recorded, and a claim found without an answer after its deadline is reported as
//! Unknown, never retried.

pub mod decide;
pub mod resolve;
pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;

use crate::aliyun::client::{ResetApi, ResetCall};
use crate::aliyun::dts::{ACTION, ResetDtsJobParams};
use crate::aliyun::endpoint::{Endpoint, EndpointAllowlist};
use crate::aliyun::error::{AttemptOutcome, classify, metric_code};
use crate::aliyun::provider::CredentialsProvider;
use crate::aliyun::signer::SigningContext;
use crate::crd::{DtsJobReset, DtsJobResetStatus, Phase, RequestRecord, event_reason, reason};
use crate::metrics::{ActionLabels, Metrics, ReasonLabels, RequestLabels, ResultLabels};
use crate::ratelimit::TokenBucket;
use crate::retry::{Backoff, DEFAULT_BACKOFF_LIMIT, Final, NextStep, jitter_unit, next_step};

use decide::{Observed, Step, decide};
use resolve::{
    CredentialsProblem, DefaultCredentialsScope, endpoint_for_resource, resolve_credentials,
};
use status::{WriteError, write_status};

/// How long past an attempt's timeout a claim stays valid before another controller may report
/// it as Unknown. Covers recording the answer after the call returns.
pub const CLAIM_GRACE: Duration = Duration::from_secs(10);
/// How often a missing Secret is looked for again (Secrets are never watched: `get` only).
pub const SECRET_RECHECK: Duration = Duration::from_secs(5);

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
}

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Settings.
    pub config: ControllerConfig,
    /// The DTS API (the real client in production).
    pub dts: Arc<dyn ResetApi>,
    /// The controller's own credentials (environment or RRSA), if any.
    pub default_credentials: Option<CredentialsProvider>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `--dts-qps` / `--dts-burst`.
    pub bucket: TokenBucket,
    /// `--max-concurrent-resets`.
    pub sends: Semaphore,
    /// (region, job) → UID of the resource whose call is in flight in this process.
    pub inflight: Mutex<HashMap<(String, String), String>>,
    /// The controller's cache, to see other resources' claims.
    pub store: OnceLock<Store<DtsJobReset>>,
    /// Set on SIGTERM: no new claims.
    pub stopping: AtomicBool,
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

/// Releases an in-flight reservation when dropped.
struct InflightGuard<'a> {
    ctx: &'a Context,
    key: (String, String),
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.ctx.inflight.lock() {
            m.remove(&self.key);
        }
    }
}

impl Context {
    fn reserve(&self, key: (String, String), uid: &str) -> Result<InflightGuard<'_>, String> {
        let mut m = self.inflight.lock().expect("inflight lock");
        match m.get(&key) {
            Some(holder) if holder != uid => Err(holder.clone()),
            _ => {
                m.insert(key.clone(), uid.to_string());
                Ok(InflightGuard { ctx: self, key })
            }
        }
    }

    /// Another resource in the cache holding a live claim for the same job (other replicas).
    fn claimed_elsewhere(
        &self,
        key: &(String, String),
        uid: &str,
        now: Timestamp,
    ) -> Option<String> {
        let store = self.store.get()?;
        store.state().iter().find_map(|o| {
            let s = o.status.as_ref()?;
            let r = s.request.as_ref()?;
            let live = s.phase == Some(Phase::Running)
                && s.claim_deadline.as_ref().is_some_and(|d| d.0 > now);
            (live
                && o.uid().as_deref() != Some(uid)
                && (&r.region_id, &r.dts_job_id) == (&key.0, &key.1))
                .then(|| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
        })
    }

    async fn event(&self, obj: &DtsJobReset, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reset".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
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
    let mut current = obj.clone();
    // A claim seen in the cache may be our own, already answered, in a stale copy: only a fresh
    // read can tell an in-flight or abandoned claim from a recorded answer.
    if current.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running) {
        match api.get_opt(&current.name_any()).await? {
            Some(fresh) => current = fresh,
            None => return Ok(Action::await_change()),
        }
    }
    let desired = status::desired_request(&current, &ctx.config.default_region);
    let st = current.status.clone().unwrap_or_default();
    let generation = current.meta().generation;
    let now = Timestamp::now();
    let max = max_attempts(&current);
    let step = decide(&Observed {
        desired: &desired,
        status: &st,
        max_attempts: max,
        ttl_seconds: current.spec.ttl_seconds_after_finished,
        now,
    });
    tracing::debug!(?step, "decided");
    match step {
        // A new request goes straight to its first attempt: the request is recorded by the same
        // write as the claim (or as the reason for waiting), one status write fewer.
        Step::StartRequest => {
            let base = status::start_request(&st, &desired, generation, now);
            attempt(&api, current, desired, base, ctx).await
        }
        Step::Attempt => attempt(&api, current, desired, st, ctx).await,
        Step::AwaitClaim(deadline) => Ok(requeue_at(deadline, now)),
        Step::AbandonedClaim => {
            let s = status::abandoned_claim(&st, generation, now);
            let msg = stalled_message(&s);
            write_status(&api, &current, s).await?;
            ctx.event(
                &current,
                EventType::Warning,
                event_reason::OUTCOME_UNKNOWN,
                msg,
            )
            .await;
            Ok(Action::await_change())
        }
        Step::WaitUntil(t) => {
            observe_generation(&api, &current, &st, generation).await?;
            Ok(requeue_at(t, now))
        }
        Step::Exhausted => {
            let s = status::exhausted(&st, max, generation, now);
            let msg = stalled_message(&s);
            write_status(&api, &current, s).await?;
            ctx.event(
                &current,
                EventType::Warning,
                event_reason::RESET_FAILED,
                msg,
            )
            .await;
            Ok(Action::await_change())
        }
        Step::Idle => {
            observe_generation(&api, &current, &st, generation).await?;
            Ok(Action::await_change())
        }
        Step::DeleteAt(t) => {
            observe_generation(&api, &current, &st, generation).await?;
            Ok(requeue_at(t, now))
        }
        Step::Delete => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: current.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&current.name_any(), &dp).await {
                Ok(_) => tracing::info!("deleted after ttlSecondsAfterFinished"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::await_change())
        }
    }
}

fn stalled_message(s: &DtsJobResetStatus) -> String {
    s.conditions
        .iter()
        .find(|c| c.type_ == crate::crd::condition::STALLED)
        .map(|c| c.message.clone())
        .unwrap_or_default()
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

/// Writes a waiting status on top of `base` unless the stored status is already exactly that;
/// returns whether it wrote.
async fn wait_with(
    api: &Api<DtsJobReset>,
    obj: &DtsJobReset,
    base: &DtsJobResetStatus,
    why: &str,
    message: &str,
    stalled: bool,
) -> Result<bool, Error> {
    let st = base.clone();
    let generation = obj.meta().generation;
    let same = obj.status.as_ref() == Some(base)
        && st.phase == Some(Phase::Pending)
        && st.observed_generation == generation
        && st
            .conditions
            .iter()
            .find(|c| c.type_ == crate::crd::condition::RECONCILING)
            .is_some_and(|c| c.reason == why && c.message == message);
    if same {
        return Ok(false);
    }
    let s = status::waiting(&st, why, message, stalled, generation, Timestamp::now());
    write_status(api, obj, s).await?;
    Ok(true)
}

/// One attempt, from `base` (the stored status, or a new request's): checks, claim, call, record.
async fn attempt(
    api: &Api<DtsJobReset>,
    obj: DtsJobReset,
    desired: RequestRecord,
    base: DtsJobResetStatus,
    ctx: &Context,
) -> Result<Action, Error> {
    if ctx.stopping.load(Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let uid = obj.uid().unwrap_or_default();

    // 1. Where to send: an invalid endpoint is a spec problem for a human.
    let endpoint = match endpoint_for_resource(
        &obj,
        &desired.region_id,
        ctx.config.dts_endpoint.as_ref(),
        &ctx.config.allowlist,
    ) {
        Ok(e) => e,
        Err(msg) => {
            wait_with(api, &obj, &base, reason::INVALID_SPEC, &msg, true).await?;
            return Ok(Action::await_change());
        }
    };

    // 2. Credentials, read fresh for every attempt.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let creds = match resolve_credentials(
        &secrets,
        &obj,
        &ns,
        ctx.default_credentials.as_ref(),
        &ctx.config.default_scope,
    )
    .await
    {
        Ok(c) => c,
        Err(problem) => {
            let msg = problem.message();
            return match problem {
                CredentialsProblem::SecretNotFound(_) => {
                    wait_with(api, &obj, &base, reason::WAITING_FOR_SECRET, &msg, false).await?;
                    Ok(Action::requeue(SECRET_RECHECK))
                }
                CredentialsProblem::Transient(_) => {
                    wait_with(
                        api,
                        &obj,
                        &base,
                        reason::CREDENTIALS_UNAVAILABLE,
                        &msg,
                        false,
                    )
                    .await?;
                    Ok(Action::requeue(Duration::from_secs(10)))
                }
                CredentialsProblem::SecretInvalid(_)
                | CredentialsProblem::DefaultsNotPermitted(_)
                | CredentialsProblem::NoDefaults => {
                    let changed = wait_with(
                        api,
                        &obj,
                        &base,
                        reason::CREDENTIALS_UNAVAILABLE,
                        &msg,
                        true,
                    )
                    .await?;
                    if changed {
                        ctx.event(
                            &obj,
                            EventType::Warning,
                            event_reason::CREDENTIALS_UNAVAILABLE,
                            msg,
                        )
                        .await;
                    }
                    Ok(Action::requeue(Duration::from_secs(30)))
                }
            };
        }
    };

    // 3. One call in flight per (region, job), across resources.
    let key = (desired.region_id.clone(), desired.dts_job_id.clone());
    let now = Timestamp::now();
    let other = match ctx.reserve(key.clone(), &uid) {
        Ok(guard) => match ctx.claimed_elsewhere(&key, &uid, now) {
            None => Ok(guard),
            Some(o) => Err(o),
        },
        Err(holder_uid) => Err(ctx
            .store
            .get()
            .and_then(|s| {
                s.state()
                    .iter()
                    .find(|o| o.uid().as_deref() == Some(holder_uid.as_str()))
                    .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
            })
            .unwrap_or(holder_uid)),
    };
    let _guard = match other {
        Ok(g) => g,
        Err(who) => {
            let msg = format!(
                "Waiting: {who} has a ResetDtsJob call in flight for job {} in {}",
                key.1, key.0
            );
            wait_with(api, &obj, &base, reason::CONCURRENT_REQUEST, &msg, false).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    };

    // 4. Limits toward DTS, then a last look at shutdown before claiming.
    let _permit = ctx.sends.acquire().await.expect("semaphore never closed");
    ctx.bucket.acquire().await;
    if ctx.stopping.load(Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // 5. The claim: accepted only if nobody wrote since we read.
    let st = base;
    let generation = obj.meta().generation;
    let max = max_attempts(&obj);
    let now = Timestamp::now();
    let deadline = now
        + jiff::SignedDuration::try_from(ctx.config.attempt_timeout + CLAIM_GRACE)
            .unwrap_or_default();
    let claimed_status = status::claim(&st, &ctx.config.identity, deadline, max, generation, now);
    let attempt_no = claimed_status.attempts.unwrap_or(1);
    let claimed = write_status(api, &obj, claimed_status.clone()).await?;
    ctx.event(
        &claimed,
        EventType::Normal,
        event_reason::RESET_REQUESTED,
        // kube-rs's recorder folds repeats of a reason into one Event and keeps the first note,
        // so no per-attempt number here: status.attempts has it.
        format!(
            "Sending ResetDtsJob for job {} in {}",
            desired.dts_job_id, desired.region_id
        ),
    )
    .await;

    // 6. The call.
    let signature_version = obj.spec.signature_version.unwrap_or_default();
    let call = ResetCall {
        endpoint,
        params: ResetDtsJobParams {
            dts_job_id: desired.dts_job_id.clone(),
            dts_instance_id: desired.dts_instance_id.clone(),
            synchronization_direction: desired.synchronization_direction.clone(),
            region_id: Some(desired.region_id.clone()),
        },
        credentials: creds.credentials,
        signature_version,
        context: SigningContext::fresh(),
    };
    let started = std::time::Instant::now();
    let outcome = ctx.dts.reset_dts_job(&call).await;
    ctx.metrics
        .dts_request_duration
        .get_or_create(&ActionLabels { action: ACTION })
        .observe(started.elapsed().as_secs_f64());
    let class = classify(&outcome);
    ctx.metrics
        .dts_requests
        .get_or_create(&RequestLabels {
            action: ACTION,
            outcome: class.metric_outcome(),
            code: metric_code(&outcome),
        })
        .inc();
    tracing::info!(attempt = attempt_no, outcome = %outcome.describe(), ?class, "ResetDtsJob answered");

    // 7. Decide and record on top of the claim.
    let step = next_step(
        class,
        u32::try_from(attempt_no.max(1)).unwrap_or(1),
        max,
        claimed_status.credentials_refreshed.unwrap_or(false),
        &ctx.config.backoff,
        jitter_unit(),
        outcome.retry_hint(),
    );
    if step == NextStep::RefreshCredentials
        && let Some(p) = &creds.provider
    {
        p.invalidate().await;
    }
    let recorded = status::record(
        &claimed_status,
        &outcome,
        &step,
        max,
        generation,
        Timestamp::now(),
    );
    let stored = record_answer(api, claimed, recorded, &ctx.config.identity, attempt_no).await?;
    publish_outcome(ctx, &stored, &outcome, &step).await;
    Ok(match step {
        NextStep::RetryAfter { wait, .. } => Action::requeue(wait + Duration::from_millis(50)),
        NextStep::RefreshCredentials => Action::requeue(Duration::from_millis(10)),
        NextStep::Finish(_) => Action::await_change(),
    })
}

/// Writes the answer on top of the claim. On conflict the fresh object is read again and the
/// answer is written as long as it still belongs to the same attempt: an answer is never lost
/// to a concurrent writer, and never written over a newer request.
async fn record_answer(
    api: &Api<DtsJobReset>,
    claimed: DtsJobReset,
    recorded: DtsJobResetStatus,
    identity: &str,
    attempt_no: i32,
) -> Result<DtsJobReset, Error> {
    let mut base = claimed;
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match write_status(api, &base, recorded.clone()).await {
            Ok(o) => return Ok(o),
            Err(WriteError::Conflict) => {
                let Some(fresh) = api.get_opt(&base.name_any()).await? else {
                    tracing::warn!("resource deleted before its answer could be recorded");
                    return Ok(base);
                };
                let fs = fresh.status.clone().unwrap_or_default();
                let same_attempt =
                    fs.request == recorded.request && fs.attempts == Some(attempt_no);
                if !same_attempt {
                    tracing::error!(
                        identity,
                        "the resource moved on to another request before this answer could be recorded"
                    );
                    return Ok(fresh);
                }
                base = fresh;
            }
            Err(WriteError::Api(e)) => {
                // The answer is the only record of a destructive call: keep trying for a while.
                if started.elapsed() > Duration::from_secs(120) {
                    return Err(Error::Status(WriteError::Api(e)));
                }
                tracing::warn!(error = %e, "recording the answer failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn publish_outcome(
    ctx: &Context,
    obj: &DtsJobReset,
    outcome: &AttemptOutcome,
    step: &NextStep,
) {
    let st = obj.status.clone().unwrap_or_default();
    let message = |t: &str| {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.message.clone())
            .unwrap_or_else(|| outcome.describe())
    };
    match step {
        NextStep::Finish(Final::Succeeded) => {
            ctx.event(
                obj,
                EventType::Normal,
                event_reason::RESET_SUCCEEDED,
                message(crate::crd::condition::READY),
            )
            .await
        }
        NextStep::Finish(Final::Failed) | NextStep::Finish(Final::RetriesExhausted) => {
            ctx.event(
                obj,
                EventType::Warning,
                event_reason::RESET_FAILED,
                message(crate::crd::condition::STALLED),
            )
            .await
        }
        NextStep::Finish(Final::Unknown) => {
            ctx.event(
                obj,
                EventType::Warning,
                event_reason::OUTCOME_UNKNOWN,
                message(crate::crd::condition::STALLED),
            )
            .await
        }
        NextStep::RetryAfter { reason: r, .. } => {
            ctx.metrics
                .retries
                .get_or_create(&ReasonLabels { reason: r.as_str() })
                .inc();
            // Repeats are folded into one Event (first note kept): no attempt number or time.
            ctx.event(
                obj,
                EventType::Warning,
                event_reason::RESET_RETRYING,
                format!(
                    "Refused before execution ({}); retrying with backoff, see status.nextAttemptTime",
                    outcome.describe()
                ),
            )
            .await
        }
        NextStep::RefreshCredentials => {
            ctx.metrics
                .retries
                .get_or_create(&ReasonLabels {
                    reason: "CredentialsExpired",
                })
                .inc();
            ctx.event(
                obj,
                EventType::Warning,
                event_reason::RESET_RETRYING,
                message(crate::crd::condition::RECONCILING),
            )
            .await
        }
    }
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
