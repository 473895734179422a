//! Outcome verification, the pure part: after an uncertain outcome the job's own state is read
//! (never the reset re-sent) and compared with the state read just before the call.
//!
//! A reset leaves a mark: the job goes to `NotConfigured`. So — **Verified** when the job was not
//! `NotConfigured` before and two consecutive reads show it `NotConfigured`; **NoEffectObserved**
//! when the window passes with the job still as it was; **Unavailable** when it cannot be told
//! (no state from before, the job already `NotConfigured` before, reads refused, the job not
//! found). No I/O and no clock: the caller passes the read and the times.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::aliyun::client::ReadOutcome;
use crate::aliyun::dts::{JobDetail, NOT_CONFIGURED};
use crate::aliyun::error::{Class, classify};
use crate::crd::{JobSnapshot, Verification, VerificationState};

/// `--verify-interval` and `--verify-window` (a zero window turns verification off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// How often the job is read.
    pub interval: Duration,
    /// How long after the uncertain outcome it is read at most.
    pub window: Duration,
}

impl VerifyPolicy {
    /// Whether verification is on.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(300),
        }
    }
}

/// What one read of the job said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRead {
    /// The job, as it is now.
    Job(JobDetail),
    /// DTS has no such job (`Forbidden.InstanceNotFound`).
    NotFound(String),
    /// DTS refused the read (e.g. `Forbidden.RAM`: the role may not read): it will not change
    /// by waiting.
    Refused(String),
    /// No usable answer this time (throttled, unavailable, a timeout): a read can be repeated.
    NoAnswer(String),
}

impl JobRead {
    /// The read from a `DescribeDtsJobDetail` outcome.
    pub fn from_outcome(read: &ReadOutcome) -> JobRead {
        let what = read.outcome.describe();
        match (classify(&read.outcome), &read.job) {
            (Class::Succeeded, Some(job)) => JobRead::Job(job.clone()),
            (Class::Succeeded, None) => JobRead::NoAnswer(format!("{what}, without the job")),
            (Class::Terminal, _)
                if read.outcome.answer().and_then(|a| a.err_code.as_deref())
                    == Some("Forbidden.InstanceNotFound") =>
            {
                JobRead::NotFound(what)
            }
            (Class::Terminal, _) => JobRead::Refused(what),
            _ => JobRead::NoAnswer(what),
        }
    }
}

/// The job as recorded in status.
pub fn snapshot(job: &JobDetail, now: Timestamp) -> JobSnapshot {
    JobSnapshot {
        status: job.status.clone(),
        job_name: job.job_name.clone(),
        create_time: job.create_time.clone(),
        configured: Some(job.configured),
        observed_time: Some(Time(now)),
    }
}

fn is_not_configured(status: Option<&str>) -> bool {
    status.is_some_and(|s| s.eq_ignore_ascii_case(NOT_CONFIGURED))
}

fn unavailable(reason: String, checks: i32, last: Option<&Verification>) -> Verification {
    Verification {
        state: VerificationState::Unavailable,
        reason: Some(reason),
        checks: Some(checks),
        last_check_time: last.and_then(|v| v.last_check_time.clone()),
        job_status: last.and_then(|v| v.job_status.clone()),
    }
}

/// Where verification starts after an uncertain outcome: `None` when it is off; Unavailable
/// when the state from before cannot tell a reset; else Verifying.
pub fn begin(before: Option<&JobSnapshot>, policy: &VerifyPolicy) -> Option<Verification> {
    if !policy.enabled() {
        return None;
    }
    Some(match before {
        None => unavailable(
            "the job could not be read before the call, so there is nothing to compare with"
                .to_string(),
            0,
            None,
        ),
        Some(b) if is_not_configured(b.status.as_deref()) => unavailable(
            "the job was already NotConfigured before the call: a reset leaves no mark on it"
                .to_string(),
            0,
            None,
        ),
        Some(_) => Verification {
            state: VerificationState::Verifying,
            reason: None,
            checks: Some(0),
            last_check_time: None,
            job_status: None,
        },
    })
}

/// The verification after one more read. `since_outcome`: how long ago the uncertain outcome was
/// recorded.
pub fn next(
    v: &Verification,
    before: Option<&JobSnapshot>,
    read: &JobRead,
    since_outcome: Duration,
    policy: &VerifyPolicy,
    now: Timestamp,
) -> Verification {
    let checks = v.checks.unwrap_or(0).saturating_add(1);
    let was = before
        .and_then(|b| b.status.clone())
        .unwrap_or_else(|| "unknown".into());
    let window_over = since_outcome >= policy.window;
    let mut out = Verification {
        state: VerificationState::Verifying,
        reason: None,
        checks: Some(checks),
        last_check_time: Some(Time(now)),
        job_status: v.job_status.clone(),
    };
    match read {
        JobRead::Job(job) => {
            out.job_status = job.status.clone();
            let now_unconfigured = job.is_not_configured();
            if now_unconfigured && is_not_configured(v.job_status.as_deref()) {
                out.state = VerificationState::Verified;
                out.reason = Some(format!(
                    "the job went from {was} to NotConfigured (two consecutive reads)"
                ));
            } else if !now_unconfigured && window_over {
                out.state = VerificationState::NoEffectObserved;
                out.reason = Some(format!(
                    "the job is still {} {} after the call (it was {was} before)",
                    job.status.as_deref().unwrap_or("without a status"),
                    humantime::format_duration(policy.window)
                ));
            }
        }
        JobRead::NotFound(why) => {
            return unavailable(format!("the job was not found ({why})"), checks, Some(&out));
        }
        JobRead::Refused(why) => {
            return unavailable(
                format!("the job may not be read ({why})"),
                checks,
                Some(&out),
            );
        }
        JobRead::NoAnswer(why) if window_over => {
            return unavailable(
                format!("no read of the job succeeded within the window (last: {why})"),
                checks,
                Some(&out),
            );
        }
        JobRead::NoAnswer(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-01-01T00:01:00Z";

    fn policy() -> VerifyPolicy {
        VerifyPolicy {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(60),
        }
    }

    fn before(status: &str) -> JobSnapshot {
        JobSnapshot {
            status: Some(status.into()),
            configured: Some(true),
            ..Default::default()
        }
    }

    fn job(status: &str) -> JobRead {
        JobRead::Job(JobDetail {
            status: Some(status.into()),
            ..Default::default()
        })
    }

    fn step(v: &Verification, read: &JobRead, since: u64) -> Verification {
        next(
            v,
            Some(&before("Synchronizing")),
            read,
            Duration::from_secs(since),
            &policy(),
            ts(NOW),
        )
    }

    #[test]
    fn begins_only_with_a_state_that_a_reset_would_change() {
        let p = policy();
        assert_eq!(
            begin(Some(&before("Synchronizing")), &p).unwrap().state,
            VerificationState::Verifying
        );
        for b in [
            None,
            Some(before("NotConfigured")),
            Some(before("notconfigured")),
        ] {
            let v = begin(b.as_ref(), &p).unwrap();
            assert_eq!(v.state, VerificationState::Unavailable, "{b:?}");
            assert!(v.reason.is_some());
        }
        let off = VerifyPolicy {
            window: Duration::ZERO,
            ..p
        };
        assert_eq!(begin(Some(&before("Synchronizing")), &off), None);
    }

    #[test]
    fn two_consecutive_not_configured_reads_verify() {
        let v = begin(Some(&before("Synchronizing")), &policy()).unwrap();
        let v = step(&v, &job("Synchronizing"), 10);
        assert_eq!(v.state, VerificationState::Verifying);
        let v = step(&v, &job("NotConfigured"), 20);
        assert_eq!(
            v.state,
            VerificationState::Verifying,
            "one read is not enough"
        );
        let v = step(&v, &job("notconfigured"), 30);
        assert_eq!(v.state, VerificationState::Verified);
        assert_eq!(v.checks, Some(3));
        assert!(
            v.reason
                .unwrap()
                .contains("from Synchronizing to NotConfigured")
        );
    }

    #[test]
    fn a_read_in_between_restarts_the_count() {
        let v = begin(Some(&before("Synchronizing")), &policy()).unwrap();
        let v = step(&v, &job("NotConfigured"), 10);
        let v = step(&v, &job("Synchronizing"), 20);
        let v = step(&v, &job("NotConfigured"), 30);
        assert_eq!(v.state, VerificationState::Verifying);
    }

    #[test]
    fn the_window_passing_unchanged_is_no_effect_observed_never_a_resend() {
        let v = begin(Some(&before("Synchronizing")), &policy()).unwrap();
        let v = step(&v, &job("Synchronizing"), 59);
        assert_eq!(v.state, VerificationState::Verifying);
        let v = step(&v, &job("Synchronizing"), 60);
        assert_eq!(v.state, VerificationState::NoEffectObserved);
        let reason = v.reason.unwrap();
        assert!(
            reason.contains("still Synchronizing 1m after the call"),
            "{reason}"
        );
        // A job that just went NotConfigured at the end is not "no effect": it is read again.
        let v = begin(Some(&before("Synchronizing")), &policy()).unwrap();
        assert_eq!(
            step(&v, &job("NotConfigured"), 70).state,
            VerificationState::Verifying
        );
    }

    #[test]
    fn refused_or_missing_reads_are_unavailable_transient_ones_wait_for_the_window() {
        let v = begin(Some(&before("Synchronizing")), &policy()).unwrap();
        for read in [
            JobRead::NotFound("HTTP 403 Forbidden.InstanceNotFound".into()),
            JobRead::Refused("HTTP 403 Forbidden.RAM".into()),
        ] {
            let out = step(&v, &read, 10);
            assert_eq!(out.state, VerificationState::Unavailable, "{read:?}");
        }
        let busy = JobRead::NoAnswer("HTTP 400 Throttling.User".into());
        assert_eq!(step(&v, &busy, 10).state, VerificationState::Verifying);
        let out = step(&v, &busy, 61);
        assert_eq!(out.state, VerificationState::Unavailable);
        assert!(out.reason.unwrap().contains("Throttling.User"));
    }
}
