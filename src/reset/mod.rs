//! `dts-operator reset`: one ResetDtsJob from the command line, with the operator's client,
//! credentials chain and retry policy. One JSON object on one line on stdout, progress on stderr,
//! exit codes 0 (succeeded), 1 (failed), 2 (usage/configuration, nothing sent), 3 (unknown).
//! The attempt loop itself is [`attempts`].

pub mod attempts;

use std::io::Write;

use serde::Serialize;

use crate::aliyun::client::{
    ClientOptions, DtsApi, DtsClient, ResetCall, TrustRoots, build_http_client,
};
use crate::aliyun::credentials::{Credentials, CredentialsError};
use crate::aliyun::dts::{DtsAnswer, ResetDtsJobParams, validate_job_id};
use crate::aliyun::endpoint::{Endpoint, Scheme, dts_endpoint_for_region};
use crate::aliyun::error::AttemptOutcome;
use crate::aliyun::provider::CredentialsProvider;
use crate::aliyun::signer::SigningContext;
use crate::cli::ResetArgs;
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
    /// `succeeded` | `failed` | `unknown`.
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

/// The endpoint from the flags: `--endpoint` (loopback rule applies), else the SDK's region map.
/// (The controller's choice adds an admin override and an allowlist:
/// `crate::controller::resolve::endpoint_for_resource`.)
pub fn endpoint_from_flags(args: &ResetArgs) -> Result<Endpoint, String> {
    match &args.endpoint {
        Some(e) => Endpoint::parse(e).map_err(|e| e.to_string()),
        None => Ok(dts_endpoint_for_region(&args.region)),
    }
}

/// The request parameters from the flags.
pub fn params_from(args: &ResetArgs) -> ResetDtsJobParams {
    ResetDtsJobParams {
        dts_job_id: args.job_id.clone(),
        dts_instance_id: args.instance_id.clone().filter(|s| !s.is_empty()),
        synchronization_direction: args.direction.map(|d| d.as_str().to_string()),
        region_id: Some(args.region.clone()),
    }
}

/// What a run needs, from the flags and the environment; every usage error is found here.
struct Prepared {
    client: DtsClient,
    provider: CredentialsProvider,
    /// The call, with placeholder credentials and context: fresh ones for every attempt.
    template: ResetCall,
    backoff: crate::retry::Backoff,
    max_attempts: u32,
}

fn prepare(args: &ResetArgs) -> Result<Prepared, String> {
    validate_job_id(&args.job_id).map_err(|e| format!("--job-id: {e}"))?;
    let backoff = args.backoff.policy()?;
    let endpoint = endpoint_from_flags(args).map_err(|e| format!("--endpoint: {e}"))?;
    // Plain http to a local gateway with a static key needs no trust store: skip loading it.
    let needs_tls = endpoint.scheme() == Scheme::Https
        || CredentialsProvider::chain_needs_tls(&|k| std::env::var(k).ok());
    let options = ClientOptions {
        timeout: args.timeout,
        ca_bundle: args.ca_bundle.clone(),
        trust_roots: if needs_tls {
            TrustRoots::System
        } else {
            TrustRoots::None
        },
        ..ClientOptions::default()
    };
    let http = build_http_client(&options).map_err(|e| e.to_string())?;
    let provider = CredentialsProvider::from_env(http.clone())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| CredentialsError::NotConfigured.to_string())?;
    Ok(Prepared {
        client: DtsClient::with_http(http, args.timeout),
        provider,
        template: ResetCall {
            endpoint,
            params: params_from(args),
            credentials: Credentials::new("", "", None),
            signature_version: args.signature_version,
            context: SigningContext::fresh(),
        },
        backoff,
        max_attempts: args.max_attempts,
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
        client,
        provider,
        template,
        backoff,
        max_attempts,
    } = prepared;
    let mut progress = |p: Progress<'_>| {
        let _ = writeln!(
            stderr,
            "dts-operator reset: {}",
            progress_line(&template, max_attempts, &p)
        );
    };
    let api: &dyn DtsApi = &client;
    let result = run_attempts(
        api,
        &provider,
        &template,
        max_attempts,
        &backoff,
        &mut jitter_unit,
        &mut SigningContext::fresh,
        &mut progress,
    )
    .await;
    match result {
        Err(e) => usage(stderr, &e.to_string()),
        Ok(run) => {
            let out = ResetOutput::from_outcome(run.result, run.attempts, run.last.as_ref());
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string(&out).expect("plain data serializes")
            );
            exit_code(run.result)
        }
    }
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
    let credentials = match p.provider.get().await {
        Ok(c) => c,
        Err(e) => return usage(stderr, &e.to_string()),
    };
    let call = ResetCall {
        credentials,
        ..p.template.clone()
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
