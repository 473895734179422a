//! `dts-operator reset`: one ResetDtsJob from the command line, with the operator's client,
//! credentials chain and retry policy. One JSON object on one line on stdout, progress on stderr,
//! exit codes 0 (succeeded, or verified), 1 (failed), 2 (usage/configuration, nothing sent), 3
//! (unknown). The attempt loop itself is [`attempts`]; `--verify` checks an uncertain outcome
//! against the job's state as the controller does, never sending again.

pub mod attempts;

use std::io::Write;

use serde::Serialize;

use crate::aliyun::client::{DtsApi, ResetCall};
use crate::aliyun::dts::DtsAnswer;
use crate::aliyun::error::AttemptOutcome;
use crate::aliyun::signer::SigningContext;
use crate::cli::ResetArgs;
use crate::controller::verify::{self, JobRead, VerifyPolicy};
use crate::crd::{JobSnapshot, VerificationState};
use crate::oneshot::{Connected, connect};
use crate::retry::{Final, NextStep, jitter_unit};
use attempts::{Progress, run_attempts};

/// Process exit codes of `reset`.
pub mod exit {
    /// The job was reset.
    pub const SUCCEEDED: i32 = 0;
    /// Terminal error, or retries exhausted.
    pub const FAILED: i32 = 1;
    /// Usage or configuration error; nothing was sent.
    pub const USAGE: i32 = 2;
    /// The call may have executed.
    pub const UNKNOWN: i32 = 3;
}

/// The one line printed on stdout: the last answer's fields, then `attempts` and `outcome`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetOutput {
    /// The last answer as recorded (all `null` without one).
    #[serde(flatten)]
    pub answer: DtsAnswer,
    /// Attempts sent.
    pub attempts: u32,
    /// `succeeded` | `failed` | `unknown` | `verified`.
    pub outcome: &'static str,
}

impl ResetOutput {
    /// The output for a final result and the last attempt's outcome.
    pub fn from_outcome(result: Final, attempts: u32, last: Option<&AttemptOutcome>) -> Self {
        ResetOutput {
            answer: last
                .map(AttemptOutcome::recorded_answer)
                .unwrap_or_default(),
            attempts,
            outcome: result.outcome_str(),
        }
    }
}

/// What a run needs, from the flags and the environment; every usage error is found here.
struct Prepared {
    connected: Connected,
    backoff: crate::retry::Backoff,
    max_attempts: u32,
    /// `--verify`: how to check an uncertain outcome.
    verify: Option<VerifyPolicy>,
}

fn prepare(args: &ResetArgs) -> Result<Prepared, String> {
    let backoff = args.backoff.policy()?;
    let verify = if args.verify {
        Some(args.verify_flags.policy()?)
    } else {
        None
    };
    Ok(Prepared {
        connected: connect(&args.job)?,
        backoff,
        max_attempts: args.max_attempts,
        verify,
    })
}

fn usage(stderr: &mut dyn Write, msg: &str) -> i32 {
    let _ = writeln!(stderr, "dts-operator reset: {msg}");
    exit::USAGE
}

/// Runs the command; returns the exit code. `stdout` receives exactly one line.
pub async fn execute(args: ResetArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
    let prepared = match prepare(&args) {
        Ok(p) => p,
        Err(msg) => return usage(stderr, &msg),
    };
    if args.dry_run {
        return dry_run(&prepared, stdout, stderr).await;
    }
    let Prepared {
        connected,
        backoff,
        max_attempts,
        verify,
    } = prepared;
    // The job as it is before the call, for --verify (a failed read never blocks the reset).
    let before = match verify {
        Some(_) => pre_image(&connected, stderr).await,
        None => None,
    };
    let template = &connected.template;
    let mut progress = |p: Progress<'_>| {
        let _ = writeln!(
            stderr,
            "dts-operator reset: {}",
            progress_line(template, max_attempts, &p)
        );
    };
    let api: &dyn DtsApi = &connected.client;
    let result = run_attempts(
        api,
        &connected.provider,
        template,
        max_attempts,
        &backoff,
        &mut jitter_unit,
        &mut SigningContext::fresh,
        &mut progress,
    )
    .await;
    let run = match result {
        Err(e) => return usage(stderr, &e.to_string()),
        Ok(run) => run,
    };
    let mut out = ResetOutput::from_outcome(run.result, run.attempts, run.last.as_ref());
    let mut code = exit_code(run.result);
    if let (Final::Unknown, Some(policy)) = (run.result, verify)
        && verify_outcome(&connected, before.as_ref(), &policy, stderr).await
    {
        out.outcome = "verified";
        code = exit::SUCCEEDED;
    }
    let _ = writeln!(
        stdout,
        "{}",
        serde_json::to_string(&out).expect("plain data serializes")
    );
    code
}

/// The job before the call, or `None` (said on stderr).
async fn pre_image(connected: &Connected, stderr: &mut dyn Write) -> Option<JobSnapshot> {
    let read = match connected.read_job().await {
        Ok(read) => JobRead::from_outcome(&read),
        Err(e) => JobRead::NoAnswer(e.to_string()),
    };
    match read {
        JobRead::Job(job) => {
            let snapshot = verify::snapshot(&job, jiff::Timestamp::now());
            let _ = writeln!(
                stderr,
                "dts-operator reset: before the call the job is {}",
                snapshot.status.as_deref().unwrap_or("without a status")
            );
            Some(snapshot)
        }
        other => {
            let _ = writeln!(
                stderr,
                "dts-operator reset: the job could not be read before the call ({other:?}); an uncertain outcome cannot be verified"
            );
            None
        }
    }
}

/// Checks an uncertain outcome against the job's state, as the controller does: `true` when
/// the job proves the reset ran. Never sends the reset again.
async fn verify_outcome(
    connected: &Connected,
    before: Option<&JobSnapshot>,
    policy: &VerifyPolicy,
    stderr: &mut dyn Write,
) -> bool {
    let Some(mut v) = verify::begin(before, policy) else {
        return false;
    };
    let started = tokio::time::Instant::now();
    while v.state == VerificationState::Verifying {
        tokio::time::sleep(policy.interval).await;
        let read = match connected.read_job().await {
            Ok(read) => JobRead::from_outcome(&read),
            Err(e) => JobRead::NoAnswer(e.to_string()),
        };
        v = verify::next(
            &v,
            before,
            &read,
            started.elapsed(),
            policy,
            jiff::Timestamp::now(),
        );
        let _ = writeln!(
            stderr,
            "dts-operator reset: verifying: read {} shows {}",
            v.checks.unwrap_or(0),
            v.job_status.as_deref().unwrap_or("nothing")
        );
    }
    let why = v.reason.as_deref().unwrap_or_default();
    let _ = match v.state {
        VerificationState::Verified => {
            writeln!(stderr, "dts-operator reset: VERIFIED: {why}; the reset ran")
        }
        VerificationState::NoEffectObserved => writeln!(
            stderr,
            "dts-operator reset: no effect observed: {why}; the reset probably did not run (run again only if the job needs it)"
        ),
        _ => writeln!(
            stderr,
            "dts-operator reset: verification unavailable: {why}"
        ),
    };
    v.state == VerificationState::Verified
}

/// The exit code of a final result.
pub fn exit_code(result: Final) -> i32 {
    match result {
        Final::Succeeded => exit::SUCCEEDED,
        Final::Failed | Final::RetriesExhausted => exit::FAILED,
        Final::Unknown => exit::UNKNOWN,
    }
}

/// `--dry-run`: the signed request with fresh credentials, printed, nothing sent.
async fn dry_run(p: &Prepared, stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
    let credentials = match p.connected.provider.get().await {
        Ok(c) => c,
        Err(e) => return usage(stderr, &e.to_string()),
    };
    let call = ResetCall {
        credentials,
        ..p.connected.template.clone()
    };
    let _ = writeln!(stdout, "{}", dry_run_json(&call));
    let _ = writeln!(
        stderr,
        "dts-operator reset: dry run, nothing was sent (security token redacted)"
    );
    exit::SUCCEEDED
}

/// One stderr line about the loop's progress.
fn progress_line(template: &ResetCall, max_attempts: u32, p: &Progress<'_>) -> String {
    match p {
        Progress::Sending { attempt } => format!(
            "attempt {attempt}/{max_attempts}: ResetDtsJob DtsJobId={} → {} ({})",
            template.params.dts_job_id,
            template.endpoint,
            template.signature_version.as_str()
        ),
        Progress::Attempted { outcome, step, .. } => {
            let what = outcome.describe();
            match step {
                NextStep::Finish(Final::Succeeded) => format!("succeeded: {what}"),
                NextStep::Finish(Final::Failed) => format!("failed: {what}"),
                NextStep::Finish(Final::RetriesExhausted) => {
                    format!("failed, retries exhausted: {what}")
                }
                NextStep::Finish(Final::Unknown) => format!(
                    "OUTCOME UNKNOWN, the job may have been reset: {what}. Check the job in the DTS console before running again."
                ),
                NextStep::RetryAfter { wait, reason } => format!(
                    "retryable ({}): {what}; retrying in {}",
                    reason.as_str(),
                    humantime::format_duration(round_ms(*wait))
                ),
                NextStep::RefreshCredentials => {
                    format!("{what}; reloading credentials and retrying once")
                }
            }
        }
    }
}

fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

/// The signed request as one JSON line, every form of the secret and the token redacted.
pub fn dry_run_json(call: &ResetCall) -> String {
    let signed = call.signed().redacted(&call.credentials.redactor());
    let headers: serde_json::Map<String, serde_json::Value> = signed
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "dryRun": true,
        "method": signed.method,
        "url": signed.url,
        "headers": headers,
        "body": String::from_utf8_lossy(&signed.body),
        "signatureVersion": call.signature_version.as_str(),
        "stringToSign": signed.string_to_sign,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliyun::dts::DtsAnswer;
    use crate::aliyun::error::TransportFailure;

    #[test]
    fn output_has_every_key_and_nulls() {
        let out = ResetOutput::from_outcome(
            Final::Unknown,
            1,
            Some(&AttemptOutcome::Transport(TransportFailure::MaybeSent(
                "timeout".into(),
            ))),
        );
        let v: serde_json::Value = serde_json::to_value(&out).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "requestId",
            "success",
            "httpStatusCode",
            "errCode",
            "errMessage",
            "dynamicMessage",
            "dynamicCode",
            "attempts",
            "outcome",
        ] {
            assert!(keys.contains(&k), "missing {k}");
        }
        assert_eq!(v["outcome"], "unknown");
        assert!(v["requestId"].is_null());
        assert_eq!(v["attempts"], 1);
    }

    #[test]
    fn output_copies_the_answer() {
        let out = ResetOutput::from_outcome(
            Final::Failed,
            1,
            Some(&AttemptOutcome::Answered {
                http_status: 400,
                answer: DtsAnswer {
                    request_id: Some("r".into()),
                    http_status_code: Some(400),
                    success: Some(false),
                    err_code: Some("InvalidParameter".into()),
                    err_message: Some("The Value of Input Parameter %s is not valid.".into()),
                    dynamic_message: Some("DtsJobId".into()),
                    dynamic_code: Some("403".into()),
                },
                retry_after: None,
            }),
        );
        assert_eq!(
            out.answer.err_message.as_deref(),
            Some("The Value of Input Parameter %s is not valid.")
        );
        assert_eq!(out.outcome, "failed");
        assert_eq!(out.answer.success, Some(false));
    }
}
