//! The simulated gateway: every request that is not an admin call goes through [`gateway`].
//!
//! Owns: the order of the gateway's decisions (style, authentication, action, version, required
//! parameters), the execution of scripted answers (including hangs, dropped connections and gates)
//! and the recording and logging of each call. Network I/O is axum's; this module only turns one
//! request into one answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use crate::answer::{self, Answer, HttpAnswer};
use crate::net::ConnInfo;
use crate::record::RecordedCall;
use crate::state::Shared;
use crate::sts;
use crate::verify::{self, Format, ParsedRequest, Rejection, Style, VerifyOptions, WireRequest};

/// The DTS action the simulator implements.
pub const DTS_ACTION: &str = "ResetDtsJob";
/// The read-only DTS action it implements.
pub const DESCRIBE_ACTION: &str = "DescribeDtsJobDetail";
/// The DTS API version it implements.
pub const DTS_VERSION: &str = "2020-01-01";

/// How one call ended.
pub(crate) enum Outcome {
    /// Send this answer.
    Answer(HttpAnswer),
    /// Close the connection without answering.
    Drop,
}

pub(crate) fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_ascii_uppercase()
}

/// The handler for `/` (and any other non-admin path).
pub(crate) async fn gateway(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wire = WireRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        raw_query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let parsed = ParsedRequest::parse(wire, uri.authority().map(|a| a.as_str()));
    let now = shared.now();
    let seq = shared.push_call(initial_record(&parsed, now));
    let request_id = new_request_id();

    let outcome = handle(&shared, &parsed, seq, &request_id, now).await;
    match outcome {
        Outcome::Answer(a) => to_response(a),
        Outcome::Drop => {
            conn.kill();
            // Never written: the killed stream fails the first write and hyper drops the
            // connection.
            Response::new(Body::empty())
        }
    }
}

fn initial_record(parsed: &ParsedRequest, now: jiff::Timestamp) -> RecordedCall {
    let w = &parsed.wire;
    let oidc_token = (parsed.style == Style::StsOidc)
        .then(|| {
            parsed
                .form
                .iter()
                .chain(parsed.query.iter())
                .find(|(k, _)| k == "OIDCToken")
                .map(|(_, v)| v.clone())
        })
        .flatten();
    RecordedCall {
        seq: 0,
        received_at: now,
        method: w.method.clone(),
        path: w.path.clone(),
        raw_query: w.raw_query.clone(),
        headers: w.headers.clone(),
        body: String::from_utf8_lossy(&w.body).into_owned(),
        style: parsed.style,
        access_key_id: parsed.access_key_id.clone(),
        action: parsed.action.clone(),
        version: parsed.version.clone(),
        dts_job_id: parsed.params.get("DtsJobId").cloned(),
        region_id: parsed.params.get("RegionId").cloned(),
        params: if parsed.style == Style::StsOidc {
            parsed.params.clone()
        } else {
            parsed.operation_params()
        },
        host: parsed.host.clone(),
        nonce: parsed.nonce.clone(),
        timestamp: parsed.timestamp.clone(),
        has_security_token: parsed.security_token.is_some(),
        oidc_token,
        outcome: "pending".to_owned(),
        http_status: 0,
        executed: false,
        throttled: false,
        request_id: None,
    }
}

fn product(parsed: &ParsedRequest) -> &'static str {
    if parsed.style == Style::StsOidc {
        "Sts"
    } else {
        "Dts"
    }
}

fn reject(parsed: &ParsedRequest, request_id: &str, r: &Rejection) -> HttpAnswer {
    let host_id = parsed.host.as_deref().unwrap_or("dts.aliyuncs.com");
    answer::gateway_error(
        parsed.format,
        r.http_status,
        request_id,
        host_id,
        &r.code,
        &r.message,
        product(parsed),
    )
}

async fn handle(
    shared: &Arc<Shared>,
    parsed: &ParsedRequest,
    seq: u64,
    request_id: &str,
    now: jiff::Timestamp,
) -> Outcome {
    let decided = decide(shared, parsed, now);
    match decided {
        Err(rejection) => {
            let a = reject(parsed, request_id, &rejection);
            finish(shared, parsed, seq, request_id, &rejection.code, &a);
            Outcome::Answer(a)
        }
        Ok(Decision::Throttled) => {
            let a = reject(parsed, request_id, &throttled());
            shared.update_call(seq, |c| c.throttled = true);
            finish(shared, parsed, seq, request_id, THROTTLED_CODE, &a);
            Outcome::Answer(a)
        }
        Ok(Decision::Sts(mut value)) => {
            value["RequestId"] = request_id.into();
            let a = answer::object_response(
                parsed.format,
                "AssumeRoleWithOIDCResponse",
                request_id,
                &value,
            );
            finish(shared, parsed, seq, request_id, "ok", &a);
            Outcome::Answer(a)
        }
        Ok(Decision::Describe { job }) => {
            let answer = shared.next_read_answer(&job);
            let ctx = exec_ctx(shared, parsed, request_id, &job);
            let (outcome, label) = perform(&ctx, answer, Effect::Read).await;
            match &outcome {
                Outcome::Answer(a) => finish(shared, parsed, seq, request_id, &label, a),
                Outcome::Drop => finish_dropped(shared, parsed, seq),
            }
            outcome
        }
        Ok(Decision::Execute { job, region }) => {
            let answer = shared.next_answer(&job);
            shared.update_call(seq, |c| c.executed = true);
            let guard = shared.enter(&region, &job);
            let ctx = exec_ctx(shared, parsed, request_id, &job);
            let parsed_for_log = parsed.clone();
            let request_id = request_id.to_owned();
            // The execution runs in its own task so that a client giving up (timeout,
            // disconnect) does not cancel it: like the real service, the reset goes on.
            let task = tokio::spawn(async move {
                let (outcome, label) = perform(&ctx, answer, Effect::Reset).await;
                match &outcome {
                    Outcome::Answer(a) => {
                        finish(&ctx.shared, &parsed_for_log, seq, &request_id, &label, a)
                    }
                    Outcome::Drop => finish_dropped(&ctx.shared, &parsed_for_log, seq),
                }
                drop(guard);
                outcome
            });
            task.await.unwrap_or(Outcome::Drop)
        }
    }
}

enum Decision {
    Sts(serde_json::Value),
    /// Above the server-side limit: refused before execution.
    Throttled,
    Execute {
        job: String,
        region: String,
    },
    Describe {
        job: String,
    },
}

fn exec_ctx(shared: &Arc<Shared>, parsed: &ParsedRequest, request_id: &str, job: &str) -> ExecCtx {
    ExecCtx {
        shared: shared.clone(),
        format: parsed.format,
        request_id: request_id.to_owned(),
        host_id: parsed
            .host
            .clone()
            .unwrap_or_else(|| "dts.aliyuncs.com".to_owned()),
        job: job.to_owned(),
    }
}

/// The gateway's decisions, in order, up to (not including) execution.
fn decide(
    shared: &Arc<Shared>,
    parsed: &ParsedRequest,
    now: jiff::Timestamp,
) -> Result<Decision, Rejection> {
    if parsed.wire.path != "/" {
        return Err(not_found());
    }
    if !matches!(parsed.wire.method.as_str(), "GET" | "POST") {
        return Err(not_found());
    }
    if parsed.style == Style::StsOidc {
        return sts::assume_role_with_oidc(shared, parsed, now).map(Decision::Sts);
    }
    if parsed.action.as_deref() == Some(sts::ACTION) && parsed.style != Style::Unknown {
        return Err(Rejection::new(
            400,
            "InvalidParameter",
            "AssumeRoleWithOIDC is an anonymous API: send it without AccessKeyId, Signature or Authorization.",
        ));
    }
    verify::authenticate(
        parsed,
        shared.as_ref(),
        VerifyOptions {
            now,
            max_skew: Some(shared.max_skew),
        },
    )?;
    let action = parsed.action.as_deref();
    if action != Some(DTS_ACTION) && action != Some(DESCRIBE_ACTION) {
        return Err(not_found());
    }
    if parsed.version.as_deref() != Some(DTS_VERSION) {
        return Err(Rejection::new(
            400,
            "InvalidVersion",
            format!(
                "Specified parameter Version is not valid: {:?}; DTS is in version {DTS_VERSION}.",
                parsed.version.as_deref().unwrap_or_default()
            ),
        ));
    }
    let key = parsed.access_key_id.as_deref().unwrap_or_default();
    if !shared.admit(key, action.unwrap_or_default()) {
        return Ok(Decision::Throttled);
    }
    let job = parsed
        .params
        .get("DtsJobId")
        .filter(|j| !j.is_empty())
        .cloned()
        .ok_or_else(|| {
            Rejection::new(
                400,
                "MissingDtsJobId",
                "The input parameter \"DtsJobId\" that is mandatory for processing this request is not supplied.",
            )
        })?;
    if action == Some(DESCRIBE_ACTION) {
        return Ok(Decision::Describe { job });
    }
    let region = parsed.params.get("RegionId").cloned().unwrap_or_default();
    Ok(Decision::Execute { job, region })
}

/// The code of the answer above the server-side limit.
const THROTTLED_CODE: &str = "Throttling.User";

/// The gateway's flow-control refusal, as [`Answer::throttling`] answers it.
fn throttled() -> Rejection {
    Rejection::new(
        400,
        THROTTLED_CODE,
        "Request was denied due to user flow control.",
    )
}

fn not_found() -> Rejection {
    Rejection::new(
        404,
        "InvalidAction.NotFound",
        "Specified api is not found, please check your url and method.",
    )
}

struct ExecCtx {
    shared: Arc<Shared>,
    format: Format,
    request_id: String,
    host_id: String,
    job: String,
}

/// What an answer does to the job besides answering.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// A reset: `Success` (and what ends in it) resets the job.
    Reset,
    /// Nothing happens to the job.
    Never,
    /// A read: `Success` answers the job's state.
    Read,
}

impl ExecCtx {
    fn reset_job(&self) {
        self.shared.reset_job(&self.job, self.shared.now());
    }
}

type Performed<'a> = Pin<Box<dyn Future<Output = (Outcome, String)> + Send + 'a>>;

/// Carries out a scripted answer; returns it with its `outcome` label (`ok`, the error code,
/// `raw` or `dropped`).
fn perform(ctx: &ExecCtx, answer: Answer, effect: Effect) -> Performed<'_> {
    Box::pin(async move {
        match answer {
            Answer::Success if effect == Effect::Read => {
                match ctx.shared.job(&ctx.job, ctx.shared.now()) {
                    Some(job) => (
                        Outcome::Answer(answer::object_response(
                            ctx.format,
                            "DescribeDtsJobDetailResponse",
                            &ctx.request_id,
                            &job.describe_body(&ctx.job, &ctx.request_id),
                        )),
                        "ok".to_owned(),
                    ),
                    None => {
                        let code = "Forbidden.InstanceNotFound";
                        let a = answer::gateway_error(
                            ctx.format,
                            403,
                            &ctx.request_id,
                            &ctx.host_id,
                            code,
                            "The specified instance is not found.",
                            "Dts",
                        );
                        (Outcome::Answer(a), code.to_owned())
                    }
                }
            }
            Answer::Success => {
                if effect == Effect::Reset {
                    ctx.reset_job();
                }
                (
                    Outcome::Answer(answer::dts_response(ctx.format, 200, &ctx.request_id, None)),
                    "ok".to_owned(),
                )
            }
            Answer::Executed { then } => {
                if effect != Effect::Read {
                    ctx.reset_job();
                }
                perform(ctx, *then, Effect::Never).await
            }
            Answer::NotExecuted { then } => perform(ctx, *then, Effect::Never).await,
            Answer::DtsError {
                http_status,
                err_code,
                err_message,
                dynamic_message,
                dynamic_code,
            } => {
                let a = answer::dts_response(
                    ctx.format,
                    http_status,
                    &ctx.request_id,
                    Some((
                        &err_code,
                        &err_message,
                        dynamic_message.as_deref(),
                        dynamic_code.as_deref(),
                    )),
                );
                (Outcome::Answer(a), err_code)
            }
            Answer::GatewayError {
                http_status,
                code,
                message,
                retry_after_ms,
                retry_after_secs,
            } => {
                let mut a = answer::gateway_error(
                    ctx.format,
                    http_status,
                    &ctx.request_id,
                    &ctx.host_id,
                    &code,
                    &message,
                    "Dts",
                );
                if let Some(ms) = retry_after_ms {
                    a.headers
                        .push(("x-acs-retry-after".to_owned(), ms.to_string()));
                }
                if let Some(s) = retry_after_secs {
                    a.headers.push(("retry-after".to_owned(), s.to_string()));
                }
                (Outcome::Answer(a), code)
            }
            Answer::Raw {
                http_status,
                content_type,
                body,
            } => (
                Outcome::Answer(HttpAnswer {
                    status: http_status,
                    headers: Vec::new(),
                    content_type,
                    body,
                }),
                "raw".to_owned(),
            ),
            Answer::Hang { millis } => {
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(millis)) => {
                        perform(ctx, Answer::Success, effect).await
                    }
                    () = ctx.shared.shutting_down() => (Outcome::Drop, "dropped".to_owned()),
                }
            }
            Answer::Drop => (Outcome::Drop, "dropped".to_owned()),
            Answer::Gate { name, then } => {
                tokio::select! {
                    () = ctx.shared.pass_gate(&name) => perform(ctx, *then, effect).await,
                    () = ctx.shared.shutting_down() => (Outcome::Drop, "dropped".to_owned()),
                }
            }
        }
    })
}

fn finish(
    shared: &Shared,
    parsed: &ParsedRequest,
    seq: u64,
    request_id: &str,
    outcome: &str,
    a: &HttpAnswer,
) {
    let mut executed = false;
    shared.update_call(seq, |c| {
        c.outcome = outcome.to_owned();
        c.http_status = a.status;
        c.request_id = Some(request_id.to_owned());
        executed = c.executed;
    });
    log_call(parsed, seq, outcome, a.status, executed);
}

fn finish_dropped(shared: &Shared, parsed: &ParsedRequest, seq: u64) {
    shared.update_call(seq, |c| {
        c.outcome = "dropped".to_owned();
        c.http_status = 0;
    });
    log_call(parsed, seq, "dropped", 0, true);
}

/// One line per call. Never logs secrets, tokens, signatures or the raw query/body.
fn log_call(parsed: &ParsedRequest, seq: u64, outcome: &str, status: u16, executed: bool) {
    tracing::info!(
        target: "dts_simulator::call",
        seq,
        method = %parsed.wire.method,
        style = ?parsed.style,
        action = parsed.action.as_deref().unwrap_or("-"),
        job = parsed.params.get("DtsJobId").map_or("-", String::as_str),
        region = parsed.params.get("RegionId").map_or("-", String::as_str),
        outcome,
        status,
        executed,
        "call"
    );
}

fn to_response(a: HttpAnswer) -> Response {
    let mut resp = Response::new(Body::from(a.body));
    *resp.status_mut() =
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&a.content_type) {
        headers.insert(axum::http::header::CONTENT_TYPE, ct);
    }
    for (k, v) in a.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            headers.append(k, v);
        }
    }
    resp
}
