//! The retry policy, in one place: exponential backoff with full jitter, the server hint as a
//! floor, and the decision "what next" after a classified attempt ([`next_step`]).
//!
//! [`Backoff`] and [`next_step`] are pure (the jitter sample is passed in). [`run_attempts`] is
//! the loop the `reset` command uses; it sleeps with `tokio::time`, so tests drive it with paused
//! time. The controller does not loop: it stores the next attempt time in status and uses the
//! same [`next_step`].

use std::time::Duration;

use crate::aliyun::client::{ResetApi, ResetCall};
use crate::aliyun::credentials::{CredentialsError, CredentialsProvider};
use crate::aliyun::error::{AttemptOutcome, Class, MAX_RETRY_HINT, RetryReason, classify};
use crate::aliyun::signer::SigningContext;

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

/// What the loop reports as it goes (the `reset` command prints these on stderr).
#[derive(Debug)]
pub enum Progress<'a> {
    /// Attempt `n` is about to be sent.
    Sending {
        /// 1-based attempt number.
        attempt: u32,
    },
    /// Attempt `n` ended with this outcome and class.
    Attempted {
        /// 1-based attempt number.
        attempt: u32,
        /// What happened.
        outcome: &'a AttemptOutcome,
        /// The decision.
        step: &'a NextStep,
    },
}

/// Result of [`run_attempts`].
#[derive(Debug)]
pub struct RunResult {
    /// How it ended.
    pub result: Final,
    /// Attempts sent.
    pub attempts: u32,
    /// The last attempt's outcome (`None` if credentials failed before the first one).
    pub last: Option<AttemptOutcome>,
}

/// Errors that stop the loop before or between attempts.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Credentials could not be obtained before the first attempt: nothing was sent.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// Sends attempts until a final result: each with fresh credentials from `provider`, a fresh
/// nonce and timestamp, and the wait of [`next_step`] between them.
#[allow(clippy::too_many_arguments)]
pub async fn run_attempts(
    api: &dyn ResetApi,
    provider: &CredentialsProvider,
    template: &ResetCall,
    max_attempts: u32,
    backoff: &Backoff,
    jitter: &mut dyn FnMut() -> f64,
    new_context: &mut dyn FnMut() -> SigningContext,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<RunResult, RunError> {
    let max_attempts = max_attempts.max(1);
    let mut attempts = 0;
    let mut refreshed = false;
    let mut last: Option<AttemptOutcome> = None;
    loop {
        let credentials = match provider.get().await {
            Ok(c) => c,
            Err(e) if attempts == 0 => return Err(e.into()),
            // Earlier attempts were refused; without credentials there is no next one.
            Err(_) => {
                return Ok(RunResult {
                    result: Final::Failed,
                    attempts,
                    last,
                });
            }
        };
        attempts += 1;
        let call = ResetCall {
            credentials,
            context: new_context(),
            ..template.clone()
        };
        progress(Progress::Sending { attempt: attempts });
        let outcome = api.reset_dts_job(&call).await;
        let class = classify(&outcome);
        let step = next_step(
            class,
            attempts,
            max_attempts,
            refreshed,
            backoff,
            jitter(),
            outcome.retry_hint(),
        );
        progress(Progress::Attempted {
            attempt: attempts,
            outcome: &outcome,
            step: &step,
        });
        last = Some(outcome);
        match step {
            NextStep::Finish(result) => {
                return Ok(RunResult {
                    result,
                    attempts,
                    last,
                });
            }
            NextStep::RetryAfter { wait, .. } => tokio::time::sleep(wait).await,
            NextStep::RefreshCredentials => {
                refreshed = true;
                provider.invalidate().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;
    use crate::aliyun::credentials::Credentials;
    use crate::aliyun::dts::{DtsAnswer, ResetDtsJobParams};
    use crate::aliyun::endpoint::Endpoint;
    use crate::aliyun::error::TransportFailure;
    use crate::aliyun::signer::SignatureVersion;

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

    /// A scripted fake of the API that records when each attempt arrived and its nonce.
    struct Scripted {
        outcomes: Mutex<VecDeque<AttemptOutcome>>,
        seen: Mutex<Vec<(tokio::time::Instant, String, String)>>,
    }

    impl ResetApi for Scripted {
        fn reset_dts_job<'a>(&'a self, call: &'a ResetCall) -> BoxFuture<'a, AttemptOutcome> {
            self.seen.lock().unwrap().push((
                tokio::time::Instant::now(),
                call.context.nonce.clone(),
                call.credentials.access_key_id().to_string(),
            ));
            let next = self
                .outcomes
                .lock()
                .unwrap()
                .pop_front()
                .expect("more attempts than scripted");
            Box::pin(async move { next })
        }
    }

    fn throttled(hint: Option<Duration>) -> AttemptOutcome {
        AttemptOutcome::Answered {
            http_status: 400,
            answer: DtsAnswer {
                err_code: Some("Throttling.User".into()),
                ..Default::default()
            },
            retry_after: hint,
        }
    }

    fn ok() -> AttemptOutcome {
        AttemptOutcome::Answered {
            http_status: 200,
            answer: DtsAnswer {
                success: Some(true),
                request_id: Some("r".into()),
                ..Default::default()
            },
            retry_after: None,
        }
    }

    fn template() -> ResetCall {
        ResetCall {
            endpoint: Endpoint::parse("http://127.0.0.1:1").unwrap(),
            params: ResetDtsJobParams {
                dts_job_id: "j".into(),
                ..Default::default()
            },
            credentials: Credentials::new("placeholder", "x", None),
            signature_version: SignatureVersion::V3,
            context: SigningContext::fresh(),
        }
    }

    async fn run(
        api: &Scripted,
        max_attempts: u32,
        backoff: Backoff,
        unit: f64,
    ) -> (RunResult, Vec<Duration>, Vec<String>) {
        let provider = CredentialsProvider::Static(Credentials::new("AK", "s", None));
        let start = tokio::time::Instant::now();
        let mut n = 0u32;
        let r = run_attempts(
            api,
            &provider,
            &template(),
            max_attempts,
            &backoff,
            &mut || unit,
            &mut || {
                n += 1;
                SigningContext {
                    timestamp: jiff::Timestamp::now(),
                    nonce: format!("nonce-{n}"),
                }
            },
            &mut |_| {},
        )
        .await
        .unwrap();
        let seen = api.seen.lock().unwrap();
        let offsets = seen.iter().map(|(t, _, _)| *t - start).collect();
        let nonces = seen.iter().map(|(_, n, _)| n.clone()).collect();
        (r, offsets, nonces)
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_with_paused_time() {
        let api = Scripted {
            outcomes: Mutex::new(VecDeque::from(vec![
                throttled(None),
                throttled(None),
                throttled(None),
                ok(),
            ])),
            seen: Mutex::default(),
        };
        let (r, offsets, nonces) = run(
            &api,
            7,
            Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(3),
            },
            1.0,
        )
        .await;
        assert_eq!(r.result, Final::Succeeded);
        assert_eq!(r.attempts, 4);
        // Waits of 1 s, 2 s, then min(4, 3) = 3 s: attempts at 0, 1, 3, 6 seconds.
        assert_eq!(
            offsets,
            vec![
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(3),
                Duration::from_secs(6)
            ]
        );
        assert_eq!(nonces, vec!["nonce-1", "nonce-2", "nonce-3", "nonce-4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn server_hint_is_honoured_as_floor() {
        let api = Scripted {
            outcomes: Mutex::new(VecDeque::from(vec![
                throttled(Some(Duration::from_millis(2500))),
                ok(),
            ])),
            seen: Mutex::default(),
        };
        let (r, offsets, _) = run(&api, 7, Backoff::default(), 0.0).await;
        assert_eq!(r.result, Final::Succeeded);
        assert_eq!(offsets[1], Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_exhausted_after_max_attempts() {
        let api = Scripted {
            outcomes: Mutex::new((0..3).map(|_| throttled(None)).collect()),
            seen: Mutex::default(),
        };
        let (r, offsets, _) = run(&api, 3, Backoff::default(), 0.5).await;
        assert_eq!(r.result, Final::RetriesExhausted);
        assert_eq!(r.attempts, 3);
        assert_eq!(offsets.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_is_never_retried() {
        let api = Scripted {
            outcomes: Mutex::new(VecDeque::from(vec![AttemptOutcome::Transport(
                TransportFailure::MaybeSent("timeout".into()),
            )])),
            seen: Mutex::default(),
        };
        let (r, offsets, _) = run(&api, 7, Backoff::default(), 0.5).await;
        assert_eq!(r.result, Final::Unknown);
        assert_eq!(offsets.len(), 1);
    }
}
