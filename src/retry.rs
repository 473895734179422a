//! The retry policy, in one place: exponential backoff with full jitter, the server hint as a
//! floor, and the decision "what next" after a classified attempt ([`next_step`]).
//!
//! Pure (the jitter sample is passed in). Two callers make the same decision with it: the
//! controller, which stores the next attempt time in status, and the `reset` command's loop
//! (`crate::reset::attempts`).

use std::time::Duration;

use crate::aliyun::error::{Class, MAX_RETRY_HINT, RetryReason};

/// Default first backoff ceiling.
pub const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
/// Default maximum backoff ceiling.
pub const DEFAULT_MAX: Duration = Duration::from_secs(300);
/// Default retries after the first attempt (`backoffLimit`).
pub const DEFAULT_BACKOFF_LIMIT: u32 = 6;

/// Exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's wait.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: DEFAULT_INITIAL,
            max: DEFAULT_MAX,
        }
    }
}

impl Backoff {
    /// Ceiling before retry number `retry` (1-based): `min(max, initial × 2^(retry−1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(62);
        let factor = 1u64 << exp;
        let nanos = (self.initial.as_nanos()).saturating_mul(u128::from(factor));
        let capped = nanos.min(self.max.as_nanos());
        Duration::from_nanos(u64::try_from(capped).unwrap_or(u64::MAX))
    }

    /// The wait before retry `retry`: uniform in `[0, ceiling]` (full jitter; `unit` in
    /// `[0, 1]`), raised to the server hint when there is one. The hint is a floor even above
    /// `max`, itself capped at ten minutes.
    pub fn wait(&self, retry: u32, unit: f64, hint: Option<Duration>) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jittered = self.ceiling(retry).mul_f64(unit);
        match hint {
            Some(h) => jittered.max(h.min(MAX_RETRY_HINT)),
            None => jittered,
        }
    }
}

/// A jitter sample in `[0, 1)`.
pub fn jitter_unit() -> f64 {
    rand::random::<f64>()
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Final {
    /// Reset done.
    Succeeded,
    /// The service answered with a terminal error.
    Failed,
    /// Every allowed attempt was refused with a retryable error.
    RetriesExhausted,
    /// The call may have executed; nobody knows.
    Unknown,
}

impl Final {
    /// `succeeded` | `failed` | `unknown`, as the `reset` command prints it.
    pub fn outcome_str(self) -> &'static str {
        match self {
            Final::Succeeded => "succeeded",
            Final::Failed | Final::RetriesExhausted => "failed",
            Final::Unknown => "unknown",
        }
    }
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NextStep {
    /// Stop with this result.
    Finish(Final),
    /// Retry after this wait.
    RetryAfter {
        /// How long to wait.
        wait: Duration,
        /// Why it is safe.
        reason: RetryReason,
    },
    /// Reload credentials and retry at once (only once per request).
    RefreshCredentials,
}

/// The retry decision, made once from the class. `attempts` counts attempts made so far
/// (including this one); `max_attempts` = 1 + backoffLimit; `refreshed` says whether this request
/// already used its one credential refresh.
pub fn next_step(
    class: Class,
    attempts: u32,
    max_attempts: u32,
    refreshed: bool,
    backoff: &Backoff,
    unit: f64,
    hint: Option<Duration>,
) -> NextStep {
    match class {
        Class::Succeeded => NextStep::Finish(Final::Succeeded),
        Class::Terminal => NextStep::Finish(Final::Failed),
        Class::Unknown => NextStep::Finish(Final::Unknown),
        Class::RefreshCredentials => {
            if refreshed || attempts >= max_attempts {
                NextStep::Finish(Final::Failed)
            } else {
                NextStep::RefreshCredentials
            }
        }
        Class::Retryable(reason) => {
            if attempts >= max_attempts {
                NextStep::Finish(Final::RetriesExhausted)
            } else {
                NextStep::RetryAfter {
                    wait: backoff.wait(attempts, unit, hint),
                    reason,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_and_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        let c: Vec<u64> = (1..=6).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(c, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.ceiling(10_000), Duration::from_secs(10));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.wait(3, 0.0, None), Duration::ZERO);
        assert_eq!(b.wait(3, 1.0, None), Duration::from_secs(4));
        assert_eq!(b.wait(3, 0.5, None), Duration::from_secs(2));
        assert_eq!(b.wait(3, f64::NAN, None), Duration::ZERO);
    }

    #[test]
    fn hint_is_a_floor_even_above_max_but_capped_at_ten_minutes() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        assert_eq!(
            b.wait(1, 0.1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            b.wait(3, 1.0, Some(Duration::from_millis(100))),
            Duration::from_secs(4)
        );
        assert_eq!(
            b.wait(1, 0.0, Some(Duration::from_secs(7200))),
            MAX_RETRY_HINT
        );
    }

    #[test]
    fn next_step_table() {
        let b = Backoff::default();
        use Class::*;
        assert_eq!(
            next_step(Succeeded, 1, 7, false, &b, 0.5, None),
            NextStep::Finish(Final::Succeeded)
        );
        assert_eq!(
            next_step(Terminal, 1, 7, false, &b, 0.5, None),
            NextStep::Finish(Final::Failed)
        );
        assert_eq!(
            next_step(Unknown, 1, 7, false, &b, 0.5, None),
            NextStep::Finish(Final::Unknown)
        );
        assert_eq!(
            next_step(
                Retryable(RetryReason::Throttled),
                2,
                7,
                false,
                &b,
                1.0,
                None
            ),
            NextStep::RetryAfter {
                wait: Duration::from_secs(2),
                reason: RetryReason::Throttled
            }
        );
        assert_eq!(
            next_step(
                Retryable(RetryReason::Throttled),
                7,
                7,
                false,
                &b,
                1.0,
                None
            ),
            NextStep::Finish(Final::RetriesExhausted)
        );
        assert_eq!(
            next_step(RefreshCredentials, 1, 7, false, &b, 1.0, None),
            NextStep::RefreshCredentials
        );
        assert_eq!(
            next_step(RefreshCredentials, 2, 7, true, &b, 1.0, None),
            NextStep::Finish(Final::Failed)
        );
        assert_eq!(
            next_step(RefreshCredentials, 1, 1, false, &b, 1.0, None),
            NextStep::Finish(Final::Failed)
        );
    }
}
