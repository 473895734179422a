//! One attempt, as a pipeline of typed steps:
//! `endpoint` → `credentials` → `exclusion` → `permits` → `job_lease` → `claim` → `fence` →
//! `send` → `record` → release the job → publish (each a function of that name).
//!
//! Each step before the claim either hands its result to the next or stops with a [`Wait`]
//! (nothing was sent; the status says why), and every `Wait` is handled in one place, `hold`.
//! From the accepted claim on, no Kubernetes API call stands before the send: the `fence` checks
//! on this process's monotonic clock that the claim (measured from before its write), the job
//! Lease and — with leader election — this process's view of its lease all outlast the attempt;
//! otherwise nothing is sent and the claim is withdrawn. The answer is then recorded on top of
//! the claim, and events follow the record, never precede the call.

use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::events;
use super::exclusion::{self, Reservation};
use super::joblease::{Acquired, HeldJob};
use super::resolve::{CredentialsProblem, ResolvedCredentials, endpoint_for_resource};
use super::status::{self, WriteError, write_status};
use super::{Context, Error, verification};
use crate::aliyun::client::ResetCall;
use crate::aliyun::dts::ResetDtsJobParams;
use crate::aliyun::endpoint::Endpoint;
use crate::aliyun::error::{AttemptOutcome, Class, RetryReason, classify};
use crate::aliyun::signer::SigningContext;
use crate::crd::{
    DtsJobReset, DtsJobResetStatus, JobSnapshot, Phase, RequestRecord, condition, event_reason,
    reason,
};
use crate::ratelimit::Grant;
use crate::retry::{NextStep, jitter_unit, next_step};

/// How long past an attempt's timeout a claim stays valid before another controller may report
/// it as Unknown. Covers recording the answer after the call returns.
pub const CLAIM_GRACE: Duration = Duration::from_secs(10);
/// How often a missing Secret is looked for again (Secrets are never watched: `get` only).
pub const SECRET_RECHECK: Duration = Duration::from_secs(5);
/// How often credentials that failed for a transient reason are tried again.
const TRANSIENT_CREDENTIALS_RECHECK: Duration = Duration::from_secs(10);
/// How often credentials that need a human are checked again (a fix recovers by itself).
const STALLED_CREDENTIALS_RECHECK: Duration = Duration::from_secs(30);
/// How often a resource waiting for another one's call on the same job looks again.
const CONCURRENT_RECHECK: Duration = Duration::from_secs(1);
/// How soon a reconcile turned away by shutdown looks again (another process, usually).
const STOPPING_RECHECK: Duration = Duration::from_secs(1);
/// What a claim, a job Lease and the leader's lease must outlast the attempt timeout by, at the
/// moment of sending: the call's own setup and the scheduling around it.
pub const FENCE_MARGIN: Duration = Duration::from_secs(1);
/// How soon a fenced attempt (nothing sent) looks again.
const FENCED_RECHECK: Duration = Duration::from_millis(500);

/// What one attempt starts from.
pub struct Attempt<'a> {
    /// The resource's namespace API.
    pub api: &'a Api<DtsJobReset>,
    /// The resource as read (its `resourceVersion` guards the claim).
    pub obj: &'a DtsJobReset,
    /// The request to send.
    pub desired: &'a RequestRecord,
    /// The status the claim builds on: the stored one, or a new request's.
    pub base: DtsJobResetStatus,
    /// Attempts allowed for the request: 1 + backoffLimit.
    pub max_attempts: u32,
}

/// Why nothing is sent now, for the user (status Pending with this reason and message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
    /// Whether a human is needed (`Stalled=True` beside `Reconciling=True`).
    pub stalled: bool,
    /// Look again after this; `None`: when the resource changes.
    pub requeue: Option<Duration>,
    /// A Warning event to publish when the status changes to this wait.
    pub event: Option<&'static str>,
}

/// How the pipeline stops early.
enum Stop {
    /// Nothing sent; tell the user why.
    Wait(Wait),
    /// Nothing sent and nothing to tell (shutting down): look again after this.
    Later(Duration),
    /// A Kubernetes API error.
    Failed(Error),
    /// Nothing more to do for this attempt; then this.
    Done(Action),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

impl From<WriteError> for Stop {
    fn from(e: WriteError) -> Self {
        Stop::Failed(Error::Status(e))
    }
}

/// The accepted claim.
struct Claimed {
    /// The resource as stored by the claim write (its `resourceVersion` guards the record).
    object: DtsJobReset,
    /// The claimed status.
    status: DtsJobResetStatus,
    /// The claimed attempt's number.
    attempt: i32,
    /// When the claim write was sent (monotonic): the claim is valid until this plus its
    /// validity, for this process.
    sent_at: tokio::time::Instant,
}

/// What the call produced and what follows from it.
struct Sent {
    outcome: AttemptOutcome,
    step: NextStep,
    /// How long the call took.
    elapsed: Duration,
}

/// Whether an answer landed in status.
#[derive(Debug)]
pub enum Recorded {
    /// On the claim it answers: the resource as stored.
    Landed(Box<DtsJobReset>),
    /// Not recorded: the object was replaced, deleted, or moved on from the claim. Logged at
    /// error with the RequestId; nothing is published about it.
    Lost,
}

impl Sent {
    /// When to look at the resource again.
    fn requeue(&self) -> Action {
        match self.step {
            NextStep::RetryAfter { wait, .. } => Action::requeue(wait + Duration::from_millis(50)),
            NextStep::RefreshCredentials => Action::requeue(Duration::from_millis(10)),
            NextStep::Finish(_) => Action::await_change(),
        }
    }
}

/// Runs one attempt: the pipeline, and the one place that handles its waits.
pub async fn run(ctx: &Context, attempt: Attempt<'_>) -> Result<Action, Error> {
    match pipeline(ctx, &attempt).await {
        Ok(action) => Ok(action),
        Err(Stop::Wait(w)) => hold(ctx, &attempt, w).await,
        Err(Stop::Later(after)) => Ok(Action::requeue(after)),
        Err(Stop::Done(action)) => Ok(action),
        Err(Stop::Failed(e)) => Err(e),
    }
}

async fn pipeline(ctx: &Context, a: &Attempt<'_>) -> Result<Action, Stop> {
    not_stopping(ctx)?;
    let endpoint = endpoint(ctx, a)?;
    let credentials = credentials(ctx, a).await?;
    let _reservation = exclusion(ctx, a)?;
    let (_permit, grant) = permits(ctx).await?;
    let job = job_lease(ctx, a).await?;
    let before = verification::pre_image(ctx, a.obj, a.desired, &endpoint, &credentials).await;
    let result = claimed_attempt(ctx, a, job.as_ref(), endpoint, credentials, before, grant).await;
    if let (Some(held), Some(leases)) = (job, ctx.job_leases.as_ref()) {
        leases.release(held).await;
    }
    let (sent, stored) = result?;
    // Events and metrics describe answers that are in status, never others.
    events::count_call(&ctx.metrics, &sent.outcome, sent.elapsed);
    if let Some(st) = stored.status.as_ref() {
        verification::count_begun(ctx, st);
    }
    events::publish(
        &ctx.recorder,
        &stored,
        EventType::Normal,
        event_reason::RESET_REQUESTED,
        // No per-attempt number here: status.attempts has it.
        format!(
            "Sent ResetDtsJob for job {} in {}",
            a.desired.dts_job_id, a.desired.region_id
        ),
    )
    .await;
    events::publish_outcome(
        &ctx.recorder,
        &ctx.metrics,
        &stored,
        &sent.outcome,
        &sent.step,
    )
    .await;
    Ok(sent.requeue())
}

/// Claim, fence, send, record — while this process holds the job.
async fn claimed_attempt(
    ctx: &Context,
    a: &Attempt<'_>,
    job: Option<&HeldJob>,
    endpoint: Endpoint,
    credentials: ResolvedCredentials,
    before: Option<JobSnapshot>,
    grant: Grant,
) -> Result<(Sent, DtsJobReset), Stop> {
    let claim = claim(ctx, a, before).await?;
    if let Err(why) = fence(ctx, &claim, job) {
        tracing::warn!(%why, attempt = claim.attempt, "not sending: {why}");
        withdraw(ctx, a, &claim).await;
        return Err(Stop::Later(FENCED_RECHECK));
    }
    let sent = send(ctx, a, &claim, endpoint, credentials, grant).await;
    match record(ctx, a, claim, &sent).await? {
        Recorded::Landed(stored) => Ok((sent, *stored)),
        Recorded::Lost => Err(Stop::Done(Action::await_change())),
    }
}

/// After SIGTERM nothing new is claimed.
fn not_stopping(ctx: &Context) -> Result<(), Stop> {
    if ctx.stopping.load(Ordering::SeqCst) {
        Err(Stop::Later(STOPPING_RECHECK))
    } else {
        Ok(())
    }
}

/// Where to send: an invalid endpoint is a spec problem for a human.
fn endpoint(ctx: &Context, a: &Attempt<'_>) -> Result<Endpoint, Stop> {
    endpoint_for_resource(
        a.obj,
        &a.desired.region_id,
        ctx.config.dts_endpoint.as_ref(),
        &ctx.config.allowlist,
    )
    .map_err(|message| {
        Stop::Wait(Wait {
            reason: reason::INVALID_SPEC,
            message,
            stalled: true,
            requeue: None,
            event: None,
        })
    })
}

/// Credentials, read fresh for every attempt.
async fn credentials(ctx: &Context, a: &Attempt<'_>) -> Result<ResolvedCredentials, Stop> {
    let ns = a.obj.namespace().ok_or(Error::NoNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    super::resolve::resolve_credentials(
        &secrets,
        a.obj,
        &ns,
        ctx.default_credentials.as_ref(),
        &ctx.config.default_scope,
    )
    .await
    .map_err(|problem| Stop::Wait(credentials_wait(&problem)))
}

/// How each credentials problem is shown and rechecked.
fn credentials_wait(problem: &CredentialsProblem) -> Wait {
    let message = problem.message();
    match problem {
        CredentialsProblem::SecretNotFound(_) => Wait {
            reason: reason::WAITING_FOR_SECRET,
            message,
            stalled: false,
            requeue: Some(SECRET_RECHECK),
            event: None,
        },
        CredentialsProblem::Transient(_) => Wait {
            reason: reason::CREDENTIALS_UNAVAILABLE,
            message,
            stalled: false,
            requeue: Some(TRANSIENT_CREDENTIALS_RECHECK),
            event: None,
        },
        CredentialsProblem::SecretInvalid(_)
        | CredentialsProblem::DefaultsNotPermitted(_)
        | CredentialsProblem::NoDefaults
        | CredentialsProblem::Forbidden(_)
        | CredentialsProblem::NeedsHuman(_) => Wait {
            reason: reason::CREDENTIALS_UNAVAILABLE,
            message,
            stalled: true,
            requeue: Some(STALLED_CREDENTIALS_RECHECK),
            event: Some(event_reason::CREDENTIALS_UNAVAILABLE),
        },
    }
}

/// One call in flight per (region, job), across resources.
fn exclusion<'c>(ctx: &'c Context, a: &Attempt<'_>) -> Result<Reservation<'c>, Stop> {
    let key = (a.desired.region_id.clone(), a.desired.dts_job_id.clone());
    let uid = a.obj.uid().unwrap_or_default();
    exclusion::acquire(
        &ctx.reservations,
        ctx.store.get(),
        &key,
        &uid,
        Timestamp::now(),
    )
    .map_err(|who| Stop::Wait(concurrent_wait(&who, &key)))
}

/// Waiting for another resource's call on the same job.
fn concurrent_wait(who: &str, key: &super::exclusion::JobKey) -> Wait {
    Wait {
        reason: reason::CONCURRENT_REQUEST,
        message: format!(
            "Waiting: {who} has a ResetDtsJob call in flight for job {} in {}",
            key.1, key.0
        ),
        stalled: false,
        requeue: Some(CONCURRENT_RECHECK),
        event: None,
    }
}

/// Limits toward DTS (concurrency, then rate), then a last look at shutdown and — with leader
/// election — at this process's view of its lease before claiming: a leader whose view could
/// expire during the attempt claims nothing.
async fn permits(ctx: &Context) -> Result<(tokio::sync::SemaphorePermit<'_>, Grant), Stop> {
    let permit = ctx.sends.acquire().await.expect("semaphore never closed");
    let grant = ctx.bucket.acquire().await;
    not_stopping(ctx)?;
    if let Some(lease) = ctx.leader.get()
        && lease.remaining() < ctx.config.attempt_timeout + FENCE_MARGIN
    {
        return Err(Stop::Later(FENCED_RECHECK));
    }
    Ok((permit, grant))
}

/// The job Lease: no other process may have a call in flight for this (region, job).
async fn job_lease(ctx: &Context, a: &Attempt<'_>) -> Result<Option<HeldJob>, Stop> {
    let Some(leases) = ctx.job_leases.as_ref() else {
        return Ok(None);
    };
    let key = (a.desired.region_id.clone(), a.desired.dts_job_id.clone());
    let resource = format!(
        "{}/{}",
        a.obj.namespace().unwrap_or_default(),
        a.obj.name_any()
    );
    match leases.acquire(&key, &resource).await.map_err(Error::Kube)? {
        Acquired::Held(held) => Ok(Some(held)),
        Acquired::Busy(who) => Err(Stop::Wait(concurrent_wait(&who, &key))),
    }
}

/// Immediately before sending, on this process's monotonic clock: the claim (from before its
/// write), the job Lease and the leader's lease must each outlast the attempt.
fn fence(ctx: &Context, claim: &Claimed, job: Option<&HeldJob>) -> Result<(), String> {
    let needed = ctx.config.attempt_timeout + FENCE_MARGIN;
    let claim_left = (claim.sent_at + ctx.config.claim_validity())
        .saturating_duration_since(tokio::time::Instant::now());
    if claim_left < needed {
        return Err(format!(
            "the claim is valid for {claim_left:?} more, the attempt needs {needed:?}"
        ));
    }
    if let Some(job) = job
        && job.remaining() < needed
    {
        return Err(format!(
            "the job Lease is ours for {:?} more, the attempt needs {needed:?}",
            job.remaining()
        ));
    }
    if let Some(lease) = ctx.leader.get()
        && lease.remaining() < needed
    {
        return Err(format!(
            "this process's view of the leader lease ends in {:?}, the attempt needs {needed:?}",
            lease.remaining()
        ));
    }
    Ok(())
}

/// Takes back a claim whose call was never sent: a conditional write of the status from before
/// the claim. If it fails, this process remembers the claim and withdraws it when it sees it
/// again; any other process reports it when it expires.
async fn withdraw(ctx: &Context, a: &Attempt<'_>, claim: &Claimed) {
    match write_status(a.api, &claim.object, a.base.clone()).await {
        Ok(_) => tracing::info!(attempt = claim.attempt, "claim withdrawn, nothing was sent"),
        Err(e) => {
            tracing::warn!(error = %e, "could not withdraw the claim; it is withdrawn when seen again");
            ctx.unsent.lock().expect("unsent lock").insert(
                (claim.object.uid().unwrap_or_default(), claim.attempt),
                a.base.clone(),
            );
        }
    }
}

/// The claim: accepted only if nobody wrote since the resource was read.
async fn claim(
    ctx: &Context,
    a: &Attempt<'_>,
    before: Option<JobSnapshot>,
) -> Result<Claimed, Stop> {
    let generation = a.obj.meta().generation;
    let sent_at = tokio::time::Instant::now();
    let now = Timestamp::now();
    let deadline =
        now + jiff::SignedDuration::try_from(ctx.config.claim_validity()).unwrap_or_default();
    let status = status::claim(
        &a.base,
        &ctx.config.identity,
        deadline,
        a.max_attempts,
        generation,
        now,
        before,
    );
    let attempt = status.attempts.unwrap_or(1);
    let object = match write_status(a.api, a.obj, status.clone()).await {
        Ok(o) => o,
        Err(WriteError::Conflict) => return Err(WriteError::Conflict.into()),
        Err(e) => {
            // The claim may have landed without us knowing; we know it was never sent.
            ctx.unsent
                .lock()
                .expect("unsent lock")
                .insert((a.obj.uid().unwrap_or_default(), attempt), a.base.clone());
            return Err(e.into());
        }
    };
    Ok(Claimed {
        object,
        status,
        attempt,
        sent_at,
    })
}

/// The call, and the decision taken from its outcome.
async fn send(
    ctx: &Context,
    a: &Attempt<'_>,
    claim: &Claimed,
    endpoint: Endpoint,
    credentials: ResolvedCredentials,
    grant: Grant,
) -> Sent {
    let call = ResetCall {
        endpoint,
        params: ResetDtsJobParams::from(a.desired),
        credentials: credentials.credentials,
        signature_version: a.obj.spec.signature_version.unwrap_or_default(),
        context: SigningContext::fresh(),
    };
    let started = std::time::Instant::now();
    let outcome = ctx.dts.reset_dts_job(&call).await;
    let elapsed = started.elapsed();
    let class = classify(&outcome);
    tracing::info!(attempt = claim.attempt, outcome = %outcome.describe(), ?class, "ResetDtsJob answered");
    rate_feedback(ctx, class, grant);
    let step = next_step(
        class,
        u32::try_from(claim.attempt.max(1)).unwrap_or(1),
        a.max_attempts,
        claim.status.credentials_refreshed.unwrap_or(false),
        &ctx.config.backoff,
        jitter_unit(),
        outcome.retry_hint(),
    );
    if step == NextStep::RefreshCredentials
        && let Some(p) = &credentials.provider
    {
        p.invalidate().await;
    }
    Sent {
        outcome,
        step,
        elapsed,
    }
}

/// What the answer says about the rate DTS allows: throttled, or accepted (the adaptive bucket).
fn rate_feedback(ctx: &Context, class: Class, grant: Grant) {
    match class {
        Class::Retryable(RetryReason::Throttled) => ctx.bucket.throttled(grant),
        Class::Succeeded => ctx.bucket.succeeded(grant),
        _ => {}
    }
}

/// Records the answer on top of the claim.
async fn record(
    ctx: &Context,
    a: &Attempt<'_>,
    claim: Claimed,
    sent: &Sent,
) -> Result<Recorded, Stop> {
    let recorded = status::record(
        &claim.status,
        &sent.outcome,
        &sent.step,
        a.max_attempts,
        &ctx.config.verify,
        a.obj.meta().generation,
        Timestamp::now(),
    );
    let result = record_answer(a.api, &claim.object, recorded).await?;
    if let Recorded::Lost = result {
        let answer = sent.outcome.recorded_answer();
        tracing::error!(
            identity = %ctx.config.identity,
            request_id = answer.request_id.as_deref().unwrap_or("-"),
            outcome = %sent.outcome.describe(),
            attempt = claim.attempt,
            "the answer of a ResetDtsJob call could not be recorded: the resource was replaced, deleted or moved on from this claim"
        );
    }
    Ok(result)
}

/// Whether `fresh` still carries the claim of `claimed` (the object as the claim write stored
/// it — stored times have whole seconds): the same object (UID), the same request and attempt,
/// the same holder and claim time.
fn same_claim(fresh: &DtsJobReset, claimed: &DtsJobReset) -> bool {
    let (f, c) = (
        fresh.status.clone().unwrap_or_default(),
        claimed.status.clone().unwrap_or_default(),
    );
    fresh.uid() == claimed.uid()
        && f.phase == Some(Phase::Running)
        && f.request == c.request
        && f.attempts == c.attempts
        && f.claimed_by == c.claimed_by
        && f.last_attempt_time == c.last_attempt_time
}

/// Writes the answer on top of the claim (`claimed`: the object as the claim write stored it).
/// On conflict the fresh object is read again and the answer is written as long as it still
/// carries the same claim ([`same_claim`]): an answer is never lost to a concurrent writer, and
/// never written onto another object, request or claim.
pub async fn record_answer(
    api: &Api<DtsJobReset>,
    claimed: &DtsJobReset,
    recorded: DtsJobResetStatus,
) -> Result<Recorded, Error> {
    let mut base = claimed.clone();
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match write_status(api, &base, recorded.clone()).await {
            Ok(o) => return Ok(Recorded::Landed(Box::new(o))),
            Err(WriteError::Conflict) => {
                let Some(fresh) = crate::kubeapi::bounded(api.get_opt(&base.name_any())).await?
                else {
                    return Ok(Recorded::Lost);
                };
                if !same_claim(&fresh, claimed) {
                    return Ok(Recorded::Lost);
                }
                base = fresh;
            }
            Err(WriteError::Api(kube::Error::Api(s))) if s.code == 404 => {
                return Ok(Recorded::Lost);
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

/// The one place a [`Wait`] is handled: the waiting status is written unless it is already
/// stored, its event published when it changed, and the resource looked at again when due.
async fn hold(ctx: &Context, a: &Attempt<'_>, wait: Wait) -> Result<Action, Error> {
    let wrote = write_wait(a, &wait).await?;
    // Logged when the status changes to it (a wait repeated unchanged writes nothing and logs at
    // debug only), so an operator that cannot reach STS or a Secret says so in its log too.
    if wrote && wait.stalled {
        tracing::warn!(reason = wait.reason, "waiting: {}", wait.message);
    } else if wrote {
        tracing::info!(reason = wait.reason, "waiting: {}", wait.message);
    } else {
        tracing::debug!(reason = wait.reason, "still waiting: {}", wait.message);
    }
    if wrote && let Some(reason) = wait.event {
        events::publish(
            &ctx.recorder,
            a.obj,
            EventType::Warning,
            reason,
            wait.message.clone(),
        )
        .await;
    }
    Ok(wait
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// Writes the waiting status on top of the attempt's base unless the stored status is already
/// exactly that; returns whether it wrote.
async fn write_wait(a: &Attempt<'_>, wait: &Wait) -> Result<bool, Error> {
    let generation = a.obj.meta().generation;
    let base = &a.base;
    let same = a.obj.status.as_ref() == Some(base)
        && base.phase == Some(Phase::Pending)
        && base.observed_generation == generation
        && base
            .conditions
            .iter()
            .find(|c| c.type_ == condition::RECONCILING)
            .is_some_and(|c| c.reason == wait.reason && c.message == wait.message);
    if same {
        return Ok(false);
    }
    let s = status::waiting(
        base,
        wait.reason,
        &wait.message,
        wait.stalled,
        generation,
        Timestamp::now(),
    );
    write_status(a.api, a.obj, s).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::controller::fixtures::*;

    #[test]
    fn only_credentials_that_need_a_human_stall_and_warn() {
        let not_found = credentials_wait(&CredentialsProblem::SecretNotFound("s".into()));
        assert_eq!(not_found.reason, reason::WAITING_FOR_SECRET);
        assert!(!not_found.stalled && not_found.event.is_none());
        assert_eq!(not_found.requeue, Some(SECRET_RECHECK));
        let transient = credentials_wait(&CredentialsProblem::Transient("x".into()));
        assert!(!transient.stalled && transient.event.is_none());
        for p in [
            CredentialsProblem::SecretInvalid("x".into()),
            CredentialsProblem::DefaultsNotPermitted("ns".into()),
            CredentialsProblem::NoDefaults,
            CredentialsProblem::Forbidden("Secret s: forbidden".into()),
            CredentialsProblem::NeedsHuman("STS: EntityNotExist.Role".into()),
        ] {
            let w = credentials_wait(&p);
            assert_eq!(w.reason, reason::CREDENTIALS_UNAVAILABLE);
            assert!(w.stalled, "{p:?}");
            assert_eq!(w.event, Some(event_reason::CREDENTIALS_UNAVAILABLE));
            assert_eq!(w.message, p.message());
        }
    }

    fn claimed_status(attempts: i32) -> DtsJobResetStatus {
        let desired = RequestRecord {
            dts_job_id: "j".into(),
            region_id: "cn-hangzhou".into(),
            ..Default::default()
        };
        // Whole seconds, as the API server stores times.
        let now: Timestamp = "2026-01-01T00:00:01Z".parse().unwrap();
        let started = status::start_request(&DtsJobResetStatus::default(), &desired, Some(1), now);
        let mut s = status::claim(&started, ME, now, 7, Some(1), now, None);
        s.attempts = Some(attempts);
        s
    }

    /// The first attempt of a new request for `r` (job `j`, read at resourceVersion 41), in a
    /// task.
    fn spawn_new_request(
        ctx: crate::controller::Context,
        client: kube::Client,
    ) -> tokio::task::JoinHandle<Result<Action, Error>> {
        tokio::spawn(async move {
            let api: Api<DtsJobReset> = Api::namespaced(client, NS);
            let obj = resource("r", "j", "41", None);
            let desired = crate::crd::RequestIdentity::of(&obj).resolve("cn-hangzhou");
            let base = status::start_request(
                &DtsJobResetStatus::default(),
                &desired,
                Some(1),
                Timestamp::now(),
            );
            let attempt = Attempt {
                api: &api,
                obj: &obj,
                desired: &desired,
                base,
                max_attempts: 7,
            };
            run(&ctx, attempt).await
        })
    }

    /// `record_answer` of attempt 1 on `r` (claimed at resourceVersion 42), in a task.
    fn spawn_record(
        client: kube::Client,
        claimed: DtsJobResetStatus,
        recorded: DtsJobResetStatus,
    ) -> tokio::task::JoinHandle<Result<Recorded, Error>> {
        tokio::spawn(async move {
            let api: Api<DtsJobReset> = Api::namespaced(client, NS);
            let object = resource("r", "j", "42", Some(claimed));
            record_answer(&api, &object, recorded).await
        })
    }

    fn landed(r: Recorded) -> DtsJobReset {
        match r {
            Recorded::Landed(o) => *o,
            Recorded::Lost => panic!("the answer must land"),
        }
    }

    /// The exact requests of one happy attempt, in order: the Secret; the job Lease (created at
    /// once: none exists); the claim (carrying the resourceVersion read, before any DTS call); the record
    /// on top of the claim (carrying the claim's resourceVersion) — no API call between the
    /// accepted claim and the send; the job Lease deleted; then the events.
    #[tokio::test]
    async fn an_attempt_claims_with_the_read_version_then_records_on_the_claim() {
        let (client, mut apiserver) = api_server();
        let dts = ScriptedDts::answering_reads([success("rid-1")], [job_read("Synchronizing")]);
        let ctx = context(client.clone(), dts.clone());
        let run = spawn_new_request(ctx, client);

        let get = apiserver.answer(200, secret()).await;
        assert_eq!(get.method, Method::GET);
        assert_eq!(get.path, "/api/v1/namespaces/ns/secrets/creds");

        let lease = job_lease_name("cn-hangzhou", "j");
        let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases");
        let created = apiserver.store("7").await;
        assert_eq!(
            (created.method, created.path.as_str()),
            (Method::POST, lease_path.as_str())
        );
        assert_eq!(created.body["metadata"]["name"], lease);
        assert_eq!(created.body["spec"]["holderIdentity"], ME);
        assert_eq!(
            created.body["metadata"]["annotations"]["dtsops.io/resource"],
            "ns/r"
        );

        assert_eq!(
            dts.calls(),
            0,
            "nothing is sent before the claim is accepted"
        );
        let claim = apiserver.store("42").await;
        assert_eq!(dts.read_calls(), 1, "the job was read before the claim");
        assert_eq!(
            claim.body["status"]["jobBefore"]["status"], "Synchronizing",
            "the pre-image travels in the claim write itself"
        );
        assert_eq!(claim.method, Method::PUT);
        assert_eq!(claim.path, status_path("r"));
        assert!(
            claim.query.contains("fieldManager=dts-operator"),
            "{}",
            claim.query
        );
        assert_eq!(claim.body["metadata"]["resourceVersion"], "41");
        assert_eq!(claim.body["status"]["phase"], "Running");
        assert_eq!(claim.body["status"]["attempts"], 1);
        assert_eq!(claim.body["status"]["claimedBy"], ME);
        assert_eq!(claim.body["status"]["request"]["dtsJobId"], "j");

        let record = apiserver.store("43").await;
        assert_eq!(dts.calls(), 1, "one call, before its record");
        assert_eq!(record.method, Method::PUT);
        assert_eq!(record.path, status_path("r"));
        assert_eq!(
            record.body["metadata"]["resourceVersion"], "42",
            "the record is written on top of the claim"
        );
        assert_eq!(record.body["status"]["phase"], "Succeeded");
        assert_eq!(record.body["status"]["requestId"], "rid-1");
        assert_eq!(record.body["status"]["attempts"], 1);
        assert!(record.body["status"].get("claimedBy").is_none());

        let released = apiserver.answer(200, json!({})).await;
        assert_eq!(
            (released.method, released.path),
            (Method::DELETE, format!("{lease_path}/{lease}"))
        );
        assert_eq!(released.body["preconditions"]["resourceVersion"], "7");

        let requested = apiserver.answer(201, json!({})).await;
        assert_eq!(
            (requested.method, requested.path.as_str()),
            (Method::POST, EVENTS_PATH)
        );
        assert_eq!(requested.body["reason"], "ResetRequested");
        let succeeded = apiserver.answer(201, json!({})).await;
        assert_eq!(succeeded.body["reason"], "ResetSucceeded");
        assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
        assert_eq!(dts.calls(), 1);
        apiserver.finished().await;
    }

    /// A claim that cannot be sent within its validity is withdrawn, and nothing is sent: here
    /// this process's view of the leader lease ends before the attempt could (a leader about to
    /// lose its lease). The withdrawal is a conditional write of the status from before.
    #[tokio::test]
    async fn a_fenced_claim_is_withdrawn_and_nothing_is_sent() {
        let (client, mut apiserver) = api_server();
        let dts = ScriptedDts::answering_reads([], [job_read("Synchronizing")]);
        let mut ctx = context(client.clone(), dts.clone());
        ctx.job_leases = None;
        let clock = std::sync::Arc::new(crate::lease::LeaseClock::default());
        // Valid long enough to claim (10 s timeout + 1 s margin), not after the claim write.
        clock.renewed(tokio::time::Instant::now(), Duration::from_millis(11_300));
        let _ = ctx.leader.set(clock);
        let run = spawn_new_request(ctx, client);
        apiserver.answer(200, secret()).await;
        // The claim's answer is slow: by the time it arrives the lease view is too short.
        let claim = apiserver
            .answer_with(|seen| {
                std::thread::sleep(Duration::from_millis(400));
                let mut stored = seen.body.clone();
                stored["metadata"]["resourceVersion"] = json!("42");
                (200, stored)
            })
            .await;
        assert_eq!(claim.body["status"]["phase"], "Running");
        let withdrawal = apiserver.store("43").await;
        assert_eq!(withdrawal.method, Method::PUT);
        assert_eq!(withdrawal.body["metadata"]["resourceVersion"], "42");
        assert_eq!(withdrawal.body["status"]["phase"], "Pending");
        assert_eq!(withdrawal.body["status"]["attempts"], 0);
        let action = run.await.unwrap().unwrap();
        assert_eq!(action, Action::requeue(FENCED_RECHECK));
        assert_eq!(dts.calls(), 0, "a fenced claim sends nothing");
        apiserver.finished().await;
    }

    /// A conflicting record is re-read and written again on the fresh version, as long as the
    /// fresh object is still on the same attempt.
    #[tokio::test]
    async fn a_conflicting_record_is_rewritten_on_the_same_attempt() {
        let (client, mut apiserver) = api_server();
        let claimed = claimed_status(1);
        let mut recorded = claimed.clone();
        recorded.phase = Some(Phase::Succeeded);
        let run = spawn_record(client, claimed.clone(), recorded);
        let first = apiserver.answer(409, failure(409, "Conflict")).await;
        assert_eq!(first.body["metadata"]["resourceVersion"], "42");
        // Someone else wrote (labels, say): same request, same attempt.
        let mut fresh = resource("r", "j", "50", Some(claimed));
        fresh.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        let get = apiserver
            .answer(200, serde_json::to_value(&fresh).unwrap())
            .await;
        assert_eq!(
            (get.method, get.path.as_str()),
            (
                Method::GET,
                "/apis/dtsops.io/v1alpha1/namespaces/ns/dtsjobresets/r"
            )
        );
        let second = apiserver.store("51").await;
        assert_eq!(second.method, Method::PUT);
        assert_eq!(second.body["metadata"]["resourceVersion"], "50");
        assert_eq!(second.body["status"]["phase"], "Succeeded");
        let stored = landed(run.await.unwrap().unwrap());
        assert_eq!(stored.metadata.resource_version.as_deref(), Some("51"));
        apiserver.finished().await;
    }

    /// A record lands only on the claim it answers: after a conflict, a fresh object that moved
    /// on to another attempt, was replaced by a new object of the same name (another UID), or
    /// carries another holder's claim is left alone — nothing is written.
    #[tokio::test]
    async fn a_record_never_lands_on_another_attempt_object_or_claim() {
        let claimed = claimed_status(1);
        let moved_on = resource("r", "j", "60", Some(claimed_status(2)));
        let mut replaced = resource("r", "j", "61", Some(claimed.clone()));
        replaced.metadata.uid = Some("uid-of-the-re-created-object".into());
        let mut other_holder = claimed.clone();
        other_holder.claimed_by = Some("someone-else".into());
        let reclaimed = resource("r", "j", "62", Some(other_holder));
        for fresh in [moved_on, replaced, reclaimed] {
            let (client, mut apiserver) = api_server();
            let run = spawn_record(client, claimed.clone(), claimed.clone());
            apiserver.answer(409, failure(409, "Conflict")).await;
            apiserver
                .answer(200, serde_json::to_value(&fresh).unwrap())
                .await;
            let result = run.await.unwrap().unwrap();
            assert!(matches!(result, Recorded::Lost), "{:?}", fresh.metadata);
            apiserver.finished().await;
        }
        // Deleted: the write is refused with 404, and nothing is retried.
        let (client, mut apiserver) = api_server();
        let run = spawn_record(client, claimed.clone(), claimed);
        apiserver.answer(404, failure(404, "NotFound")).await;
        assert!(matches!(run.await.unwrap().unwrap(), Recorded::Lost));
        apiserver.finished().await;
    }

    /// The answer of a destructive call is retried for two minutes of write errors, then the
    /// reconcile fails with the write error (paused time: the backoff is real, the wait is not).
    #[tokio::test(start_paused = true)]
    async fn recording_gives_up_after_two_minutes_of_write_errors() {
        let (client, mut apiserver) = api_server();
        let started = tokio::time::Instant::now();
        let run = spawn_record(client, claimed_status(1), claimed_status(1));
        let mut run = run;
        let mut writes = 0;
        let result = loop {
            tokio::select! {
                biased;
                result = &mut run => break result,
                seen = apiserver.answer(500, failure(500, "InternalError")) => {
                    assert_eq!(seen.method, Method::PUT);
                    writes += 1;
                    assert!(writes < 100, "recording never gives up");
                }
            }
        };
        let err = result.unwrap().unwrap_err();
        assert!(matches!(err, Error::Status(WriteError::Api(_))), "{err}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(120) && elapsed < Duration::from_secs(130),
            "{elapsed:?}"
        );
        assert!(writes >= 10, "retried with capped backoff: {writes} writes");
        apiserver.finished().await;
    }
}
