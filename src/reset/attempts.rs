//! The `reset` command's attempt loop: attempts until a final result, each with fresh
//! credentials, a fresh nonce and timestamp, and the wait [`next_step`] decides between them.
//!
//! It sleeps with `tokio::time`, so tests drive it with paused time. The decision itself is
//! [`crate::retry`]'s, shared with the controller.

use crate::aliyun::client::{DtsApi, ResetCall};
use crate::aliyun::credentials::CredentialsError;
use crate::aliyun::error::{AttemptOutcome, classify};
use crate::aliyun::provider::CredentialsProvider;
use crate::aliyun::signer::SigningContext;
use crate::retry::{Backoff, Final, NextStep, next_step};

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
    api: &dyn DtsApi,
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
    use std::time::Duration;

    use futures::future::BoxFuture;

    use super::*;
    use crate::aliyun::credentials::Credentials;
    use crate::aliyun::dts::{DtsAnswer, ResetDtsJobParams};
    use crate::aliyun::endpoint::Endpoint;
    use crate::aliyun::error::TransportFailure;
    use crate::aliyun::signer::SignatureVersion;

    /// A scripted fake of the API that records when each attempt arrived and its nonce.
    struct Scripted {
        outcomes: Mutex<VecDeque<AttemptOutcome>>,
        seen: Mutex<Vec<(tokio::time::Instant, String, String)>>,
    }

    impl DtsApi for Scripted {
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

        fn describe_dts_job_detail<'a>(
            &'a self,
            _call: &'a crate::aliyun::client::DescribeCall,
        ) -> BoxFuture<'a, crate::aliyun::client::ReadOutcome> {
            unreachable!("the reset loop without --verify never reads")
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
