//! The reconcile state machine, as a pure function: (desired request, status, now) → next step.
//!
//! No I/O and no clock: the caller passes `now`. The rules, in order:
//! 1. A claimed attempt (phase `Running`) is resolved first, whatever else changed: wait for its
//!    answer until this process has watched the claim unchanged for longer than its validity
//!    plus the allowed clock skew, then report it as `Unknown` (a crash between claim and
//!    record). No wall clock of another machine is compared with ours: the validity is the
//!    difference of two times the claimer wrote. This is what makes a restart, a second replica
//!    or a replayed event unable to send a second call for one request.
//! 2. A different request (call parameters as written, or `dtsops.io/requested-at`) starts a new
//!    one; the region a request was resolved to is recorded, never compared.
//! 3. A finished request stays finished (only the TTL may delete it) — except an uncertain
//!    outcome being verified, whose job is read every `--verify-interval` (never re-sent).
//! 4. Otherwise the next attempt is due at `nextAttemptTime`, unless the retries are used up.

use jiff::Timestamp;

use crate::crd::{DtsJobResetStatus, Phase, RequestIdentity, VerificationState};

/// What the controller should do next for one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The desired request differs from the recorded one: reset status for a new request.
    StartRequest,
    /// An attempt is claimed (by this or another instance) and may still be answered: look again
    /// after this long.
    AwaitClaim(std::time::Duration),
    /// A claim was watched unchanged past its validity and the skew: record `Unknown`. Never
    /// retried.
    AbandonedClaim,
    /// Backoff: nothing may be sent before this time.
    WaitUntil(Timestamp),
    /// Send the next attempt (after credentials, concurrency and rate checks, and a claim).
    Attempt,
    /// The attempts allowed by `backoffLimit` are used up (it was lowered while retrying).
    Exhausted,
    /// Finished; nothing to do until a new request.
    Idle,
    /// Finished; delete the resource at this time (`ttlSecondsAfterFinished`).
    DeleteAt(Timestamp),
    /// Finished and its TTL passed: delete the resource now.
    Delete,
    /// An uncertain outcome is being verified: read the job now.
    Verify,
    /// An uncertain outcome is being verified: read the job at this time.
    VerifyAt(Timestamp),
}

/// The inputs of [`decide`].
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The request the spec (as written) and the annotation ask for.
    pub desired: &'a RequestIdentity,
    /// Current status.
    pub status: &'a DtsJobResetStatus,
    /// Attempts allowed for one request: 1 + backoffLimit.
    pub max_attempts: u32,
    /// `ttlSecondsAfterFinished`.
    pub ttl_seconds: Option<i64>,
    /// The time of the decision.
    pub now: Timestamp,
    /// How long this process has watched the current claim unchanged (zero without one).
    pub claim_observed_for: std::time::Duration,
    /// `--max-clock-skew`.
    pub max_clock_skew: std::time::Duration,
    /// A claim's validity when the claim does not say (no deadline recorded).
    pub default_claim_validity: std::time::Duration,
    /// `--verify-interval`.
    pub verify_interval: std::time::Duration,
}

/// How long a claim is valid, as its claimer wrote it: deadline minus claim time — two times of
/// the same clock, so any offset of that clock cancels out.
pub fn claim_validity(status: &DtsJobResetStatus) -> Option<std::time::Duration> {
    let (claimed, deadline) = (
        status.last_attempt_time.as_ref()?,
        status.claim_deadline.as_ref()?,
    );
    std::time::Duration::try_from(deadline.0.duration_since(claimed.0)).ok()
}

/// The next step. Pure.
pub fn decide(o: &Observed<'_>) -> Step {
    let status = o.status;
    if status.phase == Some(Phase::Running) {
        let bound = claim_validity(status).unwrap_or(o.default_claim_validity) + o.max_clock_skew;
        return if o.claim_observed_for > bound {
            Step::AbandonedClaim
        } else {
            Step::AwaitClaim(bound - o.claim_observed_for)
        };
    }
    if !status
        .request
        .as_ref()
        .is_some_and(|r| o.desired.matches(r))
    {
        return Step::StartRequest;
    }
    if status.phase == Some(Phase::Unknown)
        && let Some(v) = status
            .verification
            .as_ref()
            .filter(|v| v.state == VerificationState::Verifying)
    {
        let due = v.last_check_time.as_ref().map(|t| {
            t.0.checked_add(jiff::SignedDuration::try_from(o.verify_interval).unwrap_or_default())
                .unwrap_or(Timestamp::MAX)
        });
        return match due {
            Some(at) if at > o.now => Step::VerifyAt(at),
            _ => Step::Verify,
        };
    }
    match status.phase {
        Some(p) if p.is_finished() => match (o.ttl_seconds, status.completion_time.as_ref()) {
            (Some(ttl), Some(done)) => {
                let at = done
                    .0
                    .checked_add(jiff::SignedDuration::from_secs(ttl.max(0)))
                    .unwrap_or(Timestamp::MAX);
                if at <= o.now {
                    Step::Delete
                } else {
                    Step::DeleteAt(at)
                }
            }
            _ => Step::Idle,
        },
        // Pending, Retrying, or no phase yet (a request recorded but never claimed).
        _ => {
            let attempts = u32::try_from(status.attempts.unwrap_or(0).max(0)).unwrap_or(0);
            if attempts >= o.max_attempts.max(1) {
                return Step::Exhausted;
            }
            match status.next_attempt_time.as_ref().map(|t| t.0) {
                Some(at) if at > o.now => Step::WaitUntil(at),
                _ => Step::Attempt,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use std::time::Duration;

    use super::*;
    use crate::crd::RequestRecord;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A spec without regionId: `job` and the annotation.
    fn want(job: &str, at: Option<&str>) -> RequestIdentity {
        RequestIdentity {
            dts_job_id: job.into(),
            requested_at: at.map(str::to_string),
            ..Default::default()
        }
    }

    /// What `want(job, at)` records with the default region cn-hangzhou.
    fn req(job: &str, at: Option<&str>) -> RequestRecord {
        want(job, at).resolve("cn-hangzhou")
    }

    const NOW: &str = "2026-01-01T00:00:10Z";
    const PAST: &str = "2026-01-01T00:00:05Z";
    const FUTURE: &str = "2026-01-01T00:00:20Z";

    fn status(phase: Option<Phase>, request: Option<RequestRecord>) -> DtsJobResetStatus {
        DtsJobResetStatus {
            phase,
            request,
            ..Default::default()
        }
    }

    const SKEW: Duration = Duration::from_secs(30);
    const VALIDITY: Duration = Duration::from_secs(20);

    /// The inputs that do not matter to a test: no claim watched yet, the default skew.
    fn defaults() -> Observed<'static> {
        static NONE: std::sync::OnceLock<(RequestIdentity, DtsJobResetStatus)> =
            std::sync::OnceLock::new();
        let (d, s) = NONE.get_or_init(Default::default);
        Observed {
            desired: d,
            status: s,
            max_attempts: 7,
            ttl_seconds: None,
            now: ts(NOW),
            claim_observed_for: Duration::ZERO,
            max_clock_skew: SKEW,
            default_claim_validity: VALIDITY,
            verify_interval: Duration::from_secs(10),
        }
    }

    fn run(desired: &RequestIdentity, s: &DtsJobResetStatus) -> Step {
        decide(&Observed {
            desired,
            status: s,
            max_attempts: 7,
            ttl_seconds: None,
            now: ts(NOW),
            ..defaults()
        })
    }

    /// Every phase × the desired request being the same or different × the claim deadline and
    /// backoff windows.
    #[test]
    fn every_phase_with_same_and_changed_request() {
        let current = want("j1", None);
        let changed_params = want("j2", None);
        let changed_annotation = want("j1", Some("2026-01-01T00:00:00Z"));
        let recorded = req("j1", None);
        for phase in [
            None,
            Some(Phase::Pending),
            Some(Phase::Running),
            Some(Phase::Retrying),
            Some(Phase::Succeeded),
            Some(Phase::Failed),
            Some(Phase::Unknown),
        ] {
            for desired in [&current, &changed_params, &changed_annotation] {
                for deadline in [None, Some(PAST), Some(FUTURE)] {
                    let mut s = status(phase, Some(recorded.clone()));
                    s.claim_deadline = deadline.map(|d| Time(ts(d)));
                    // The deadline is an absolute time of another clock: it never decides.
                    let step = run(desired, &s);
                    let expected = match phase {
                        Some(Phase::Running) => Step::AwaitClaim(VALIDITY + SKEW),
                        _ if desired != &current => Step::StartRequest,
                        Some(p) if p.is_finished() => Step::Idle,
                        _ => Step::Attempt,
                    };
                    assert_eq!(
                        step, expected,
                        "phase {phase:?} desired {desired:?} deadline {deadline:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_status_starts_a_request() {
        assert_eq!(
            run(&want("j", None), &DtsJobResetStatus::default()),
            Step::StartRequest
        );
    }

    #[test]
    fn backoff_is_durable() {
        let (w, r) = (want("j", None), req("j", None));
        for phase in [Phase::Pending, Phase::Retrying] {
            let mut s = status(Some(phase), Some(r.clone()));
            s.attempts = Some(2);
            s.next_attempt_time = Some(Time(ts(FUTURE)));
            assert_eq!(run(&w, &s), Step::WaitUntil(ts(FUTURE)));
            s.next_attempt_time = Some(Time(ts(PAST)));
            assert_eq!(run(&w, &s), Step::Attempt);
            s.next_attempt_time = Some(Time(ts(NOW)));
            assert_eq!(run(&w, &s), Step::Attempt, "due exactly now");
        }
    }

    #[test]
    fn lowered_backoff_limit_exhausts_without_sending() {
        let (w, r) = (want("j", None), req("j", None));
        let mut s = status(Some(Phase::Retrying), Some(r.clone()));
        s.attempts = Some(3);
        let step = decide(&Observed {
            desired: &w,
            status: &s,
            max_attempts: 2,
            ttl_seconds: None,
            now: ts(NOW),
            ..defaults()
        });
        assert_eq!(step, Step::Exhausted);
        let step = decide(&Observed {
            desired: &w,
            status: &s,
            max_attempts: 4,
            ttl_seconds: None,
            now: ts(NOW),
            ..defaults()
        });
        assert_eq!(step, Step::Attempt);
    }

    #[test]
    fn ttl_after_finished() {
        let (w, r) = (want("j", None), req("j", None));
        for phase in [Phase::Succeeded, Phase::Failed, Phase::Unknown] {
            let mut s = status(Some(phase), Some(r.clone()));
            s.completion_time = Some(Time(ts("2026-01-01T00:00:00Z")));
            let at = |ttl| {
                decide(&Observed {
                    desired: &w,
                    status: &s,
                    max_attempts: 7,
                    ttl_seconds: ttl,
                    now: ts(NOW),
                    ..defaults()
                })
            };
            assert_eq!(at(None), Step::Idle);
            assert_eq!(at(Some(60)), Step::DeleteAt(ts("2026-01-01T00:01:00Z")));
            assert_eq!(at(Some(10)), Step::Delete);
            assert_eq!(at(Some(0)), Step::Delete);
        }
        // Not finished: TTL does not apply.
        let s = status(Some(Phase::Retrying), Some(r.clone()));
        let step = decide(&Observed {
            desired: &w,
            status: &s,
            max_attempts: 7,
            ttl_seconds: Some(0),
            now: ts(NOW),
            ..defaults()
        });
        assert_eq!(step, Step::Attempt);
    }

    #[test]
    fn a_claim_blocks_even_a_new_request() {
        let mut s = status(Some(Phase::Running), Some(req("j1", None)));
        s.claim_deadline = Some(Time(ts(FUTURE)));
        assert!(matches!(run(&want("j2", None), &s), Step::AwaitClaim(_)));
    }

    /// An Unknown being verified reads the job every interval, even past a TTL; a new request
    /// still wins.
    #[test]
    fn a_verifying_unknown_reads_the_job_every_interval() {
        let (w, r) = (want("j", None), req("j", None));
        let mut s = status(Some(Phase::Unknown), Some(r));
        s.completion_time = Some(Time(ts("2026-01-01T00:00:00Z")));
        s.verification = Some(crate::crd::Verification {
            state: VerificationState::Verifying,
            reason: None,
            checks: Some(0),
            last_check_time: None,
            job_status: None,
        });
        let at = |s: &DtsJobResetStatus| {
            decide(&Observed {
                desired: &w,
                status: s,
                ttl_seconds: Some(0),
                ..defaults()
            })
        };
        assert_eq!(at(&s), Step::Verify, "first read at once");
        s.verification.as_mut().unwrap().last_check_time = Some(Time(ts("2026-01-01T00:00:05Z")));
        assert_eq!(at(&s), Step::VerifyAt(ts("2026-01-01T00:00:15Z")));
        s.verification.as_mut().unwrap().last_check_time = Some(Time(ts(PAST)));
        assert_eq!(at(&s), Step::VerifyAt(ts("2026-01-01T00:00:15Z")));
        s.verification.as_mut().unwrap().last_check_time = Some(Time(ts("2026-01-01T00:00:00Z")));
        assert_eq!(at(&s), Step::Verify);
        assert_eq!(run(&want("j", Some("again")), &s), Step::StartRequest);
        s.verification.as_mut().unwrap().state = VerificationState::NoEffectObserved;
        assert_eq!(at(&s), Step::Delete, "concluded: the TTL applies again");
    }

    /// A claim is abandoned only after this process watched it unchanged for longer than its
    /// validity — the claimer's deadline minus its claim time, whatever its clock said — plus
    /// the skew. A claimer whose clock is far ahead or behind changes nothing.
    #[test]
    fn a_claim_is_abandoned_only_after_local_observation() {
        let w = want("j", None);
        for (claimed, deadline) in [
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:12Z"),
            // The claimer's clock one hour ahead, then one hour behind: same validity.
            ("2026-01-01T01:00:00Z", "2026-01-01T01:00:12Z"),
            ("2025-12-31T23:00:00Z", "2025-12-31T23:00:12Z"),
        ] {
            let mut s = status(Some(Phase::Running), Some(req("j", None)));
            s.last_attempt_time = Some(Time(ts(claimed)));
            s.claim_deadline = Some(Time(ts(deadline)));
            let at = |watched: u64| {
                decide(&Observed {
                    desired: &w,
                    status: &s,
                    claim_observed_for: Duration::from_secs(watched),
                    ..defaults()
                })
            };
            assert_eq!(
                at(0),
                Step::AwaitClaim(Duration::from_secs(42)),
                "{claimed}"
            );
            assert_eq!(
                at(40),
                Step::AwaitClaim(Duration::from_secs(2)),
                "{claimed}"
            );
            assert_eq!(at(42), Step::AwaitClaim(Duration::ZERO), "{claimed}");
            assert_eq!(at(43), Step::AbandonedClaim, "{claimed}");
        }
        // No deadline recorded: the default validity applies.
        let s = status(Some(Phase::Running), Some(req("j", None)));
        let step = decide(&Observed {
            desired: &w,
            status: &s,
            claim_observed_for: VALIDITY + SKEW + Duration::from_secs(1),
            ..defaults()
        });
        assert_eq!(step, Step::AbandonedClaim);
    }

    /// The region is compared as written: a defaulted region matches a spec without one,
    /// whatever the default is now; an explicit region matches only itself; adding or removing
    /// spec.regionId is a new request.
    #[test]
    fn the_default_region_is_recorded_not_compared() {
        let finished = |recorded: RequestRecord| status(Some(Phase::Succeeded), Some(recorded));
        let defaulted = want("j", None).resolve("cn-hangzhou");
        assert_eq!(defaulted.region_defaulted, Some(true));
        assert_eq!(
            run(&want("j", None), &finished(defaulted.clone())),
            Step::Idle
        );
        let explicit = |r: &str| RequestIdentity {
            region_id: Some(r.into()),
            ..want("j", None)
        };
        assert_eq!(
            run(&explicit("cn-hangzhou"), &finished(defaulted)),
            Step::StartRequest,
            "naming a region where none was is a change as written"
        );
        let shanghai = explicit("cn-shanghai").resolve("cn-hangzhou");
        assert_eq!(shanghai.region_defaulted, Some(false));
        assert_eq!(shanghai.region_id, "cn-shanghai");
        assert_eq!(
            run(&explicit("cn-shanghai"), &finished(shanghai.clone())),
            Step::Idle
        );
        assert_eq!(
            run(&explicit("cn-beijing"), &finished(shanghai.clone())),
            Step::StartRequest
        );
        assert_eq!(
            run(&want("j", None), &finished(shanghai)),
            Step::StartRequest
        );
    }

    /// Statuses written before the defaulting was recorded (no `regionDefaulted`): a spec
    /// without regionId, or with the recorded one, is the same request — an upgrade never
    /// starts a new request; another region still does.
    #[test]
    fn a_request_recorded_by_the_previous_release_is_kept() {
        let legacy = RequestRecord {
            region_defaulted: None,
            ..req("j", None)
        };
        for phase in [Phase::Succeeded, Phase::Failed, Phase::Unknown] {
            let s = status(Some(phase), Some(legacy.clone()));
            assert_eq!(run(&want("j", None), &s), Step::Idle, "{phase:?}");
            let same = RequestIdentity {
                region_id: Some("cn-hangzhou".into()),
                ..want("j", None)
            };
            assert_eq!(run(&same, &s), Step::Idle, "{phase:?}");
            let other = RequestIdentity {
                region_id: Some("cn-shanghai".into()),
                ..want("j", None)
            };
            assert_eq!(run(&other, &s), Step::StartRequest, "{phase:?}");
        }
        let retrying = status(Some(Phase::Retrying), Some(legacy));
        assert_eq!(
            run(&want("j", None), &retrying),
            Step::Attempt,
            "continues, never restarts"
        );
    }
}
