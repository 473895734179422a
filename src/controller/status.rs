//! Status: pure builders for every transition (new request, waiting, claim, record, abandoned
//! claim) with their kstatus conditions, and the one function that writes status.
//!
//! The write is a `replace_status` carrying the `resourceVersion` that was read, with the
//! operator's constant field manager: a stale writer gets 409 Conflict. That optimistic
//! concurrency is what makes a claim a claim.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use crate::aliyun::dts::DtsAnswer;
use crate::aliyun::error::{AttemptOutcome, RetryReason};
use crate::crd::{
    DtsJobReset, DtsJobResetStatus, FIELD_MANAGER, JobSnapshot, Phase, REQUESTED_AT_ANNOTATION,
    RequestRecord, Verification, VerificationState, condition, reason,
};
use crate::retry::{Final, NextStep};

use super::verify::VerifyPolicy;

const TRUE: &str = "True";
const FALSE: &str = "False";

/// Sets a condition, keeping `lastTransitionTime` when its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { TRUE } else { FALSE };
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(now);
        }
        c.status = status.to_string();
        c.reason = reason.to_string();
        c.message = message.to_string();
        c.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: Time(now),
        });
    }
}

/// The three kstatus conditions at once: exactly one "state".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Ready=True.
    Ready,
    /// Reconciling=True (pending, running, retrying).
    Reconciling,
    /// Stalled=True (a human is needed).
    Stalled,
    /// Reconciling=True and Stalled=True: waiting, but not by itself likely to progress.
    Blocked,
}

/// Sets Ready, Reconciling and Stalled for `health`, all with `reason` and `message`.
pub fn set_health(
    status: &mut DtsJobResetStatus,
    health: Health,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let (ready, reconciling, stalled) = match health {
        Health::Ready => (true, false, false),
        Health::Reconciling => (false, true, false),
        Health::Stalled => (false, false, true),
        Health::Blocked => (false, true, true),
    };
    let c = &mut status.conditions;
    set_condition(c, condition::READY, ready, reason, message, generation, now);
    set_condition(
        c,
        condition::RECONCILING,
        reconciling,
        reason,
        message,
        generation,
        now,
    );
    set_condition(
        c,
        condition::STALLED,
        stalled,
        reason,
        message,
        generation,
        now,
    );
    status.observed_generation = generation;
}

/// The job of the request a status describes (empty before the first request).
fn job_of(s: &DtsJobResetStatus) -> String {
    s.request
        .as_ref()
        .map(|r| r.dts_job_id.clone())
        .unwrap_or_default()
}

/// Status holds the last answer's fields (as `recorded_answer` gives them); a new request or an
/// abandoned claim clears them.
fn set_answer(s: &mut DtsJobResetStatus, answer: DtsAnswer) {
    s.request_id = answer.request_id;
    s.success = answer.success;
    s.http_status_code = answer.http_status_code;
    s.err_code = answer.err_code;
    s.err_message = answer.err_message;
    s.dynamic_message = answer.dynamic_message;
    s.dynamic_code = answer.dynamic_code;
}

fn clear_answer(s: &mut DtsJobResetStatus) {
    set_answer(s, DtsAnswer::default());
}

fn t(now: Timestamp) -> Option<Time> {
    Some(Time(now))
}

/// Status times are stored with whole seconds (RFC 3339 without fraction): a time that bounds a
/// wait from below (next attempt, claim deadline) is rounded up, so storing it never shortens
/// the wait.
pub fn ceil_to_second(ts: Timestamp) -> Timestamp {
    let truncated = Timestamp::from_second(ts.as_second()).unwrap_or(ts);
    if truncated < ts {
        truncated
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap_or(ts)
    } else {
        truncated
    }
}

/// A new request: attempts and answer cleared, phase Pending.
pub fn start_request(
    old: &DtsJobResetStatus,
    desired: &RequestRecord,
    generation: Option<i64>,
    now: Timestamp,
) -> DtsJobResetStatus {
    let mut s = old.clone();
    clear_answer(&mut s);
    s.phase = Some(Phase::Pending);
    s.request = Some(desired.clone());
    s.attempts = Some(0);
    s.start_time = t(now);
    s.last_attempt_time = None;
    s.next_attempt_time = None;
    s.completion_time = None;
    s.claimed_by = None;
    s.claim_deadline = None;
    s.credentials_refreshed = None;
    s.job_before = None;
    s.verification = None;
    let msg = format!(
        "New request: ResetDtsJob for job {} in {}",
        desired.dts_job_id, desired.region_id
    );
    set_health(
        &mut s,
        Health::Reconciling,
        reason::PENDING,
        &msg,
        generation,
        now,
    );
    s
}

/// Waiting with nothing sent (Secret missing, concurrent request, credentials not permitted,
/// invalid spec). `stalled` marks the ones that need a human.
pub fn waiting(
    old: &DtsJobResetStatus,
    why: &str,
    message: &str,
    stalled: bool,
    generation: Option<i64>,
    now: Timestamp,
) -> DtsJobResetStatus {
    let mut s = old.clone();
    s.phase = Some(Phase::Pending);
    let health = if stalled {
        Health::Blocked
    } else {
        Health::Reconciling
    };
    set_health(&mut s, health, why, message, generation, now);
    s
}

/// Only `observedGeneration` (and the conditions' copies) follow the new generation.
pub fn observe_generation(old: &DtsJobResetStatus, generation: Option<i64>) -> DtsJobResetStatus {
    let mut s = old.clone();
    s.observed_generation = generation;
    for c in &mut s.conditions {
        c.observed_generation = generation;
    }
    s
}

/// The claim written (with the read `resourceVersion`) before an attempt is sent, with the job
/// as read just before (`None`: it could not be read).
#[allow(clippy::too_many_arguments)]
pub fn claim(
    old: &DtsJobResetStatus,
    holder: &str,
    deadline: Timestamp,
    max_attempts: u32,
    generation: Option<i64>,
    now: Timestamp,
    job_before: Option<JobSnapshot>,
) -> DtsJobResetStatus {
    let mut s = old.clone();
    s.job_before = job_before;
    s.verification = None;
    let attempt = s.attempts.unwrap_or(0).saturating_add(1);
    s.phase = Some(Phase::Running);
    s.attempts = Some(attempt);
    s.last_attempt_time = t(now);
    s.next_attempt_time = None;
    s.claimed_by = Some(holder.to_string());
    s.claim_deadline = Some(Time(ceil_to_second(deadline)));
    if s.start_time.is_none() {
        s.start_time = t(now);
    }
    let job = job_of(&s);
    let msg = format!("Sending ResetDtsJob for job {job} (attempt {attempt} of {max_attempts})");
    set_health(
        &mut s,
        Health::Reconciling,
        reason::RUNNING,
        &msg,
        generation,
        now,
    );
    s
}

fn finish(s: &mut DtsJobResetStatus, phase: Phase, now: Timestamp) {
    s.phase = Some(phase);
    s.completion_time = t(now);
    s.next_attempt_time = None;
    s.claimed_by = None;
    s.claim_deadline = None;
    s.last_handled_request = s
        .request
        .as_ref()
        .and_then(|r| r.requested_at.clone())
        .or(s.last_handled_request.take());
}

/// The human sentence telling how to re-run after an unknown outcome.
pub fn unknown_advice(job: &str) -> String {
    format!(
        "Check the state of job {job} in the DTS console before doing anything; to reset it again, set the annotation {REQUESTED_AT_ANNOTATION} to a new value (for example the current time)."
    )
}

/// Condition reason for a retry.
pub fn retry_condition_reason(r: RetryReason) -> &'static str {
    match r {
        RetryReason::Throttled => reason::THROTTLED,
        RetryReason::ServiceUnavailable | RetryReason::ConnectionFailed => {
            reason::SERVICE_UNAVAILABLE
        }
    }
}

/// Records the answer of the claimed attempt and the decision taken from it; an uncertain
/// outcome starts its verification where `verify` allows.
pub fn record(
    claimed: &DtsJobResetStatus,
    outcome: &AttemptOutcome,
    step: &NextStep,
    max_attempts: u32,
    verify: &VerifyPolicy,
    generation: Option<i64>,
    now: Timestamp,
) -> DtsJobResetStatus {
    let mut s = claimed.clone();
    set_answer(&mut s, outcome.recorded_answer());
    s.claimed_by = None;
    s.claim_deadline = None;
    let attempts = s.attempts.unwrap_or(0);
    let job = job_of(&s);
    let what = outcome.describe();
    match step {
        NextStep::Finish(Final::Unknown) => {
            finish(&mut s, Phase::Unknown, now);
            set_unknown(
                &mut s,
                format!(
                    "The ResetDtsJob call for job {job} may or may not have executed ({what})."
                ),
                verify,
                generation,
                now,
            );
        }
        NextStep::Finish(fin) => {
            let (phase, health, why, msg) = match fin {
                Final::Succeeded => {
                    let rid = s.request_id.clone().unwrap_or_else(|| "-".into());
                    (
                        Phase::Succeeded,
                        Health::Ready,
                        reason::RESET_SUCCEEDED,
                        format!("DTS reset job {job} (RequestId {rid}, attempt {attempts})"),
                    )
                }
                Final::Failed => (
                    Phase::Failed,
                    Health::Stalled,
                    reason::RESET_FAILED,
                    format!("DTS refused to reset job {job}: {what}"),
                ),
                Final::RetriesExhausted => (
                    Phase::Failed,
                    Health::Stalled,
                    reason::RETRIES_EXHAUSTED,
                    format!(
                        "Gave up on job {job} after {attempts} attempt(s), all refused before execution; last: {what}"
                    ),
                ),
                Final::Unknown => unreachable!("handled above"),
            };
            finish(&mut s, phase, now);
            set_health(&mut s, health, why, &msg, generation, now);
        }
        NextStep::RetryAfter { wait, reason: r } => {
            s.phase = Some(Phase::Retrying);
            let at = ceil_to_second(
                now.checked_add(jiff::SignedDuration::try_from(*wait).unwrap_or_default())
                    .unwrap_or(now),
            );
            s.next_attempt_time = Some(Time(at));
            let msg = format!(
                "Refused before execution ({what}); attempt {} of {max_attempts} at {}",
                attempts + 1,
                at.strftime("%Y-%m-%dT%H:%M:%SZ")
            );
            set_health(
                &mut s,
                Health::Reconciling,
                retry_condition_reason(*r),
                &msg,
                generation,
                now,
            );
        }
        NextStep::RefreshCredentials => {
            s.phase = Some(Phase::Retrying);
            s.credentials_refreshed = Some(true);
            s.next_attempt_time = t(now);
            let msg = format!(
                "The security token expired ({what}); reloading credentials and retrying once"
            );
            set_health(
                &mut s,
                Health::Reconciling,
                reason::PENDING,
                &msg,
                generation,
                now,
            );
        }
    }
    s
}

/// A claim watched past its validity with no recorded answer: `Unknown`, verified where
/// `verify` allows.
pub fn abandoned_claim(
    old: &DtsJobResetStatus,
    verify: &VerifyPolicy,
    generation: Option<i64>,
    now: Timestamp,
) -> DtsJobResetStatus {
    let mut s = old.clone();
    let job = job_of(&s);
    let holder = s
        .claimed_by
        .clone()
        .unwrap_or_else(|| "a controller".into());
    let when = s
        .last_attempt_time
        .as_ref()
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "an unknown time".into());
    clear_answer(&mut s);
    finish(&mut s, Phase::Unknown, now);
    let headline = format!(
        "Attempt {} for job {job} was claimed at {when} by {holder}, no answer recorded; the call may or may not have been sent.",
        s.attempts.unwrap_or(0),
    );
    set_unknown(&mut s, headline, verify, generation, now);
    s
}

/// An uncertain outcome: phase Unknown, and verification begun where the state from before can
/// tell a reset (Reconciling, `VerifyingOutcome`); otherwise Stalled, `OutcomeUnknown`, saying
/// why verification cannot decide and what a human can do.
fn set_unknown(
    s: &mut DtsJobResetStatus,
    headline: String,
    verify: &VerifyPolicy,
    generation: Option<i64>,
    now: Timestamp,
) {
    let job = job_of(s);
    s.verification = super::verify::begin(s.job_before.as_ref(), verify);
    let (health, why, msg) = match s.verification.as_ref() {
        Some(v) if v.state == VerificationState::Verifying => (
            Health::Reconciling,
            reason::VERIFYING_OUTCOME,
            format!(
                "{headline} Checking the job's state every {} for up to {} (it was {} before); the reset is never sent again by itself.",
                humantime::format_duration(verify.interval),
                humantime::format_duration(verify.window),
                s.job_before
                    .as_ref()
                    .and_then(|b| b.status.as_deref())
                    .unwrap_or("unknown")
            ),
        ),
        Some(v) => (
            Health::Stalled,
            reason::OUTCOME_UNKNOWN,
            format!(
                "{headline} Verification unavailable: {}. {}",
                v.reason.as_deref().unwrap_or("unknown"),
                unknown_advice(&job)
            ),
        ),
        None => (
            Health::Stalled,
            reason::OUTCOME_UNKNOWN,
            format!("{headline} {}", unknown_advice(&job)),
        ),
    };
    set_health(s, health, why, &msg, generation, now);
}

/// The status after one more read of a job being verified: still Verifying, or concluded —
/// Verified (Succeeded, `ResetVerified`), NoEffectObserved or Unavailable (Unknown, Stalled,
/// `OutcomeUnknown`, with the evidence).
pub fn verified(
    old: &DtsJobResetStatus,
    v: Verification,
    generation: Option<i64>,
    now: Timestamp,
) -> DtsJobResetStatus {
    let mut s = old.clone();
    let job = job_of(&s);
    let why = v.reason.clone().unwrap_or_default();
    let state = v.state;
    s.verification = Some(v);
    match state {
        VerificationState::Verifying => s.observed_generation = generation,
        VerificationState::Verified => {
            s.phase = Some(Phase::Succeeded);
            let msg = format!(
                "The answer of the ResetDtsJob call for job {job} was lost, but the job's state proves the reset ran: {why}."
            );
            set_health(
                &mut s,
                Health::Ready,
                reason::RESET_VERIFIED,
                &msg,
                generation,
                now,
            );
        }
        VerificationState::NoEffectObserved => {
            let msg = format!(
                "Job {job}: {why}; the reset probably did not run. It is never sent again by itself: to send it again set the annotation {REQUESTED_AT_ANNOTATION} to a new value."
            );
            set_health(
                &mut s,
                Health::Stalled,
                reason::OUTCOME_UNKNOWN,
                &msg,
                generation,
                now,
            );
        }
        VerificationState::Unavailable => {
            let msg = format!(
                "The ResetDtsJob call for job {job} may or may not have executed; verification unavailable: {why}. {}",
                unknown_advice(&job)
            );
            set_health(
                &mut s,
                Health::Stalled,
                reason::OUTCOME_UNKNOWN,
                &msg,
                generation,
                now,
            );
        }
    }
    s
}

/// `backoffLimit` was lowered below the attempts already made: Failed, nothing sent.
pub fn exhausted(
    old: &DtsJobResetStatus,
    max_attempts: u32,
    generation: Option<i64>,
    now: Timestamp,
) -> DtsJobResetStatus {
    let mut s = old.clone();
    finish(&mut s, Phase::Failed, now);
    let msg = format!(
        "Gave up after {} attempt(s): backoffLimit allows {max_attempts}; last answer: {}",
        s.attempts.unwrap_or(0),
        s.err_code.clone().unwrap_or_else(|| "none".into())
    );
    set_health(
        &mut s,
        Health::Stalled,
        reason::RETRIES_EXHAUSTED,
        &msg,
        generation,
        now,
    );
    s
}

/// Errors of the status write.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another writer changed the object since it was read (409).
    #[error("conflict: the resource changed since it was read")]
    Conflict,
    /// Any other API error.
    #[error("status write failed: {0}")]
    Api(#[source] kube::Error),
}

/// The one status write: `replace_status` with the read `resourceVersion` and the operator's
/// field manager. Returns the object as stored (with its new `resourceVersion`).
pub async fn write_status(
    api: &Api<DtsJobReset>,
    read: &DtsJobReset,
    status: DtsJobResetStatus,
) -> Result<DtsJobReset, WriteError> {
    let mut obj = DtsJobReset::new(&read.name_any(), read.spec.clone());
    obj.meta_mut().namespace = read.namespace();
    obj.meta_mut().resource_version = read.resource_version();
    obj.status = Some(status);
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_string()),
    };
    match crate::kubeapi::bounded(api.replace_status(&read.name_any(), &params, &obj)).await {
        Ok(o) => Ok(o),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(WriteError::Conflict),
        Err(e) => Err(WriteError::Api(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aliyun::error::TransportFailure;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn req() -> RequestRecord {
        RequestRecord {
            dts_job_id: "j1".into(),
            region_id: "cn-hangzhou".into(),
            requested_at: Some("r1".into()),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a DtsJobResetStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn claimed() -> DtsJobResetStatus {
        let s = start_request(
            &DtsJobResetStatus::default(),
            &req(),
            Some(1),
            ts("2026-01-01T00:00:00Z"),
        );
        claim(
            &s,
            "me",
            ts("2026-01-01T00:00:30Z"),
            7,
            Some(1),
            ts("2026-01-01T00:00:01Z"),
            None,
        )
    }

    #[test]
    fn claim_counts_the_attempt_before_sending() {
        let c = claimed();
        assert_eq!(c.phase, Some(Phase::Running));
        assert_eq!(c.attempts, Some(1));
        assert_eq!(c.claimed_by.as_deref(), Some("me"));
        assert_eq!(cond(&c, "Reconciling").status, "True");
        assert_eq!(cond(&c, "Reconciling").reason, "Running");
    }

    #[test]
    fn success_record() {
        let out = AttemptOutcome::Answered {
            http_status: 200,
            answer: DtsAnswer {
                request_id: Some("rid".into()),
                success: Some(true),
                http_status_code: Some(200),
                ..Default::default()
            },
            retry_after: None,
        };
        let now = ts("2026-01-01T00:00:02Z");
        let s = record(
            &claimed(),
            &out,
            &NextStep::Finish(Final::Succeeded),
            7,
            &VerifyPolicy::default(),
            Some(1),
            now,
        );
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert_eq!(s.request_id.as_deref(), Some("rid"));
        assert_eq!(s.success, Some(true));
        assert_eq!(s.completion_time, Some(Time(now)));
        assert_eq!(s.last_handled_request.as_deref(), Some("r1"));
        assert_eq!(s.claimed_by, None);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").reason, "ResetSucceeded");
        assert_eq!(cond(&s, "Reconciling").status, "False");
        assert_eq!(cond(&s, "Stalled").status, "False");
        assert_eq!(s.observed_generation, Some(1));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
    }

    #[test]
    fn failure_message_fills_the_template() {
        let out = AttemptOutcome::Answered {
            http_status: 400,
            answer: DtsAnswer {
                success: Some(false),
                err_code: Some("InvalidParameter".into()),
                err_message: Some("The Value of Input Parameter %s is not valid.".into()),
                dynamic_message: Some("DtsJobId".into()),
                ..Default::default()
            },
            retry_after: None,
        };
        let s = record(
            &claimed(),
            &out,
            &NextStep::Finish(Final::Failed),
            7,
            &VerifyPolicy::default(),
            Some(1),
            ts("2026-01-01T00:00:02Z"),
        );
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(
            s.err_message.as_deref(),
            Some("The Value of Input Parameter %s is not valid.")
        );
        let stalled = cond(&s, "Stalled");
        assert_eq!(stalled.status, "True");
        assert_eq!(stalled.reason, "ResetFailed");
        assert!(
            stalled
                .message
                .contains("The Value of Input Parameter DtsJobId is not valid."),
            "{}",
            stalled.message
        );
    }

    #[test]
    fn retry_record_schedules_durably() {
        let out = AttemptOutcome::Answered {
            http_status: 400,
            answer: DtsAnswer {
                err_code: Some("Throttling.User".into()),
                ..Default::default()
            },
            retry_after: None,
        };
        let now = ts("2026-01-01T00:00:02Z");
        let step = NextStep::RetryAfter {
            wait: Duration::from_millis(1500),
            reason: RetryReason::Throttled,
        };
        let s = record(
            &claimed(),
            &out,
            &step,
            7,
            &VerifyPolicy::default(),
            Some(1),
            now,
        );
        assert_eq!(s.phase, Some(Phase::Retrying));
        // 2 s + 1.5 s, rounded up to the whole second that status can store.
        assert_eq!(s.next_attempt_time, Some(Time(ts("2026-01-01T00:00:04Z"))));
        assert_eq!(cond(&s, "Reconciling").reason, "Throttled");
        assert_eq!(s.completion_time, None);
    }

    #[test]
    fn unknown_record_says_what_to_check_and_how_to_rerun() {
        let out = AttemptOutcome::Transport(TransportFailure::MaybeSent("timed out".into()));
        let s = record(
            &claimed(),
            &out,
            &NextStep::Finish(Final::Unknown),
            7,
            &VerifyPolicy::default(),
            Some(1),
            ts("2026-01-01T00:00:12Z"),
        );
        assert_eq!(s.phase, Some(Phase::Unknown));
        let c = cond(&s, "Stalled");
        assert_eq!(c.reason, "OutcomeUnknown");
        assert!(c.message.contains("DTS console"));
        assert!(c.message.contains(REQUESTED_AT_ANNOTATION));
    }

    #[test]
    fn abandoned_claim_is_unknown() {
        let s = abandoned_claim(
            &claimed(),
            &VerifyPolicy::default(),
            Some(2),
            ts("2026-01-01T00:01:00Z"),
        );
        assert_eq!(s.phase, Some(Phase::Unknown));
        assert_eq!(s.attempts, Some(1), "the claimed attempt stays counted");
        assert_eq!(cond(&s, "Stalled").reason, "OutcomeUnknown");
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn new_request_clears_the_last_answer() {
        let mut old = claimed();
        old.request_id = Some("old".into());
        old.phase = Some(Phase::Succeeded);
        let mut r2 = req();
        r2.requested_at = Some("r2".into());
        let s = start_request(&old, &r2, Some(2), ts("2026-01-01T01:00:00Z"));
        assert_eq!(s.request_id, None);
        assert_eq!(s.attempts, Some(0));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.request, Some(r2));
    }

    #[test]
    fn ceil_to_second_never_shortens() {
        assert_eq!(
            ceil_to_second(ts("2026-01-01T00:00:03.001Z")),
            ts("2026-01-01T00:00:04Z")
        );
        assert_eq!(
            ceil_to_second(ts("2026-01-01T00:00:03Z")),
            ts("2026-01-01T00:00:03Z")
        );
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let mut c = Vec::new();
        set_condition(
            &mut c,
            "Ready",
            false,
            "A",
            "a",
            None,
            ts("2026-01-01T00:00:00Z"),
        );
        set_condition(
            &mut c,
            "Ready",
            false,
            "B",
            "b",
            None,
            ts("2026-01-01T00:00:09Z"),
        );
        assert_eq!(c[0].last_transition_time, Time(ts("2026-01-01T00:00:00Z")));
        set_condition(
            &mut c,
            "Ready",
            true,
            "C",
            "c",
            None,
            ts("2026-01-01T00:00:10Z"),
        );
        assert_eq!(c[0].last_transition_time, Time(ts("2026-01-01T00:00:10Z")));
    }
}
