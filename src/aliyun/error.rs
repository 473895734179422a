//! What one attempt produced ([`AttemptOutcome`]) and the single decision made from it
//! ([`classify`] → [`Class`]): succeeded, retry (refused before execution), refresh credentials,
//! terminal failure, or unknown outcome.
//!
//! Pure. ResetDtsJob is destructive and has no idempotency token, so the rule is: retry only what
//! the service provably refused before executing it; anything that may have executed is
//! `Unknown` and is never retried automatically.

use std::time::Duration;

use super::dts::{DtsAnswer, UnparseableAnswer};

/// A hint larger than this counts as this: a server cannot park a request for hours.
pub const MAX_RETRY_HINT: Duration = Duration::from_secs(600);

/// A transport failure, split by whether the request can have reached the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportFailure {
    /// Connecting failed (DNS, refused, TLS handshake, connect timeout): nothing was sent.
    NotSent(String),
    /// The request may have been sent: timeout after sending, connection lost mid-request.
    MaybeSent(String),
}

/// Everything one attempt can end in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A parseable answer (DTS body or gateway error body).
    Answered {
        /// HTTP status of the response.
        http_status: u16,
        /// The parsed answer.
        answer: DtsAnswer,
        /// Server hint for the wait before a retry (`x-acs-retry-after` ms, `Retry-After` s).
        retry_after: Option<Duration>,
    },
    /// A response whose body is neither known shape.
    Unparseable {
        /// Why, with status and an excerpt.
        error: UnparseableAnswer,
        /// Server hint, as above.
        retry_after: Option<Duration>,
    },
    /// No response.
    Transport(TransportFailure),
}

impl AttemptOutcome {
    /// The parsed answer, if there is one.
    pub fn answer(&self) -> Option<&DtsAnswer> {
        match self {
            AttemptOutcome::Answered { answer, .. } => Some(answer),
            _ => None,
        }
    }

    /// HTTP status, if a response arrived.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            AttemptOutcome::Answered { http_status, .. } => Some(*http_status),
            AttemptOutcome::Unparseable { error, .. } => Some(error.http_status),
            AttemptOutcome::Transport(_) => None,
        }
    }

    /// The server's retry hint, capped at [`MAX_RETRY_HINT`].
    pub fn retry_hint(&self) -> Option<Duration> {
        match self {
            AttemptOutcome::Answered { retry_after, .. }
            | AttemptOutcome::Unparseable { retry_after, .. } => {
                retry_after.map(|h| h.min(MAX_RETRY_HINT))
            }
            AttemptOutcome::Transport(_) => None,
        }
    }

    /// The answer as it is recorded (status, `reset` output): the parsed answer; for an
    /// unparseable body only its HTTP status; nothing without a response.
    pub fn recorded_answer(&self) -> DtsAnswer {
        match self {
            AttemptOutcome::Answered { answer, .. } => answer.clone(),
            AttemptOutcome::Unparseable { error, .. } => DtsAnswer {
                http_status_code: Some(i64::from(error.http_status)),
                ..DtsAnswer::default()
            },
            AttemptOutcome::Transport(_) => DtsAnswer::default(),
        }
    }

    /// One line about what happened, for humans (conditions, events, logs, stderr): the HTTP
    /// status, the code and the message with `%s` filled in.
    pub fn describe(&self) -> String {
        match self {
            AttemptOutcome::Answered {
                http_status,
                answer,
                ..
            } => match (&answer.err_code, answer.rendered_message()) {
                (Some(code), Some(msg)) => format!("HTTP {http_status} {code}: {msg}"),
                (Some(code), None) => format!("HTTP {http_status} {code}"),
                (None, _) if answer.success == Some(true) => format!("HTTP {http_status} Success"),
                (None, Some(msg)) => format!("HTTP {http_status}: {msg}"),
                (None, None) => format!("HTTP {http_status} without an error code"),
            },
            AttemptOutcome::Unparseable { error, .. } => error.to_string(),
            AttemptOutcome::Transport(TransportFailure::NotSent(e)) => {
                format!("connection failed before sending: {e}")
            }
            AttemptOutcome::Transport(TransportFailure::MaybeSent(e)) => {
                format!("no answer after sending: {e}")
            }
        }
    }
}

/// Why a retry is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// `Throttling*` or HTTP 429: flow control refused the call.
    Throttled,
    /// `ServiceUnavailable` / HTTP 503.
    ServiceUnavailable,
    /// Connecting failed; nothing was sent.
    ConnectionFailed,
}

impl RetryReason {
    /// Stable label (metrics, condition reasons map from it).
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Throttled => "Throttled",
            RetryReason::ServiceUnavailable => "ServiceUnavailable",
            RetryReason::ConnectionFailed => "ConnectionFailed",
        }
    }
}

/// The decision about an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// The job was reset.
    Succeeded,
    /// Refused before execution: safe to retry after a backoff.
    Retryable(RetryReason),
    /// `InvalidSecurityToken.Expired`: reload credentials and retry once.
    RefreshCredentials,
    /// The service answered with an error: no retry.
    Terminal,
    /// The call may have executed: never retried automatically.
    Unknown,
}

impl Class {
    /// Label for the `outcome` of `dts_operator_dts_requests_total`.
    pub fn metric_outcome(self) -> &'static str {
        match self {
            Class::Succeeded => "succeeded",
            Class::Retryable(_) | Class::RefreshCredentials => "retryable",
            Class::Terminal => "failed",
            Class::Unknown => "unknown",
        }
    }
}

/// Error codes after which the call may have executed, whatever the HTTP status says.
const UNKNOWN_CODES: &[&str] = &["InternalError", "ServiceTimeout", "UnknownError"];

/// The one classification of an attempt.
pub fn classify(outcome: &AttemptOutcome) -> Class {
    match outcome {
        AttemptOutcome::Answered {
            http_status,
            answer,
            ..
        } => classify_answer(*http_status, answer),
        AttemptOutcome::Unparseable { error, .. } => match error.http_status {
            503 => Class::Retryable(RetryReason::ServiceUnavailable),
            // 429 comes from flow control in front of the service: not executed.
            429 => Class::Retryable(RetryReason::Throttled),
            _ => Class::Unknown,
        },
        AttemptOutcome::Transport(TransportFailure::NotSent(_)) => {
            Class::Retryable(RetryReason::ConnectionFailed)
        }
        AttemptOutcome::Transport(TransportFailure::MaybeSent(_)) => Class::Unknown,
    }
}

fn classify_answer(http_status: u16, answer: &DtsAnswer) -> Class {
    let code = answer.err_code.as_deref().unwrap_or("");
    if code == "Throttling" || code.starts_with("Throttling.") {
        return Class::Retryable(RetryReason::Throttled);
    }
    if code == "ServiceUnavailable" || (code.is_empty() && http_status == 503) {
        return Class::Retryable(RetryReason::ServiceUnavailable);
    }
    if code == "InvalidSecurityToken.Expired" {
        return Class::RefreshCredentials;
    }
    if UNKNOWN_CODES.contains(&code) {
        return Class::Unknown;
    }
    if http_status == 503 {
        // A 503 with some other code: still refused by an unavailable service.
        return Class::Retryable(RetryReason::ServiceUnavailable);
    }
    if http_status >= 500 {
        return Class::Unknown;
    }
    if (200..300).contains(&http_status) && answer.success == Some(true) {
        // Success with an error code contradicts itself: not guessed.
        return if code.is_empty() {
            Class::Succeeded
        } else {
            Class::Unknown
        };
    }
    if answer.success == Some(false) || !code.is_empty() || (400..500).contains(&http_status) {
        return Class::Terminal;
    }
    // A 2xx (or 1xx/3xx) answer that claims neither success nor an error: not guessed.
    Class::Unknown
}

/// Codes the `code` metric label may carry; anything else is `other` (bounded cardinality).
pub const KNOWN_CODES: &[&str] = &[
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "ServiceUnavailable",
    "InternalError",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "InvalidTimeStamp.Expired",
    "InvalidTimeStamp.Format",
    "SignatureNonceUsed",
    "MissingParameter",
    "InvalidParameter",
    "InvalidSecurityToken.Expired",
    "InvalidSecurityToken.Malformed",
    "InvalidSecurityToken.MismatchWithAccessKey",
    "Forbidden.RAM",
    "Forbidden.InstanceNotFound",
];

/// The `code` label: empty for success, a known code, `http_<status>` for code-less HTTP
/// errors, `transport` for no answer, else `other`.
pub fn metric_code(outcome: &AttemptOutcome) -> String {
    match outcome {
        AttemptOutcome::Answered { answer, .. } => match answer.err_code.as_deref() {
            None => String::new(),
            Some(c) if KNOWN_CODES.contains(&c) => c.to_string(),
            Some(_) => "other".to_string(),
        },
        AttemptOutcome::Unparseable { .. } => "unparseable".to_string(),
        AttemptOutcome::Transport(_) => "transport".to_string(),
    }
}

/// Reads a retry hint from response headers: `x-acs-retry-after` (milliseconds) wins over
/// `Retry-After` (seconds). Unreadable values are ignored.
pub fn retry_hint_from_headers(get: &dyn Fn(&str) -> Option<String>) -> Option<Duration> {
    if let Some(ms) = get("x-acs-retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, code: Option<&str>, success: Option<bool>) -> AttemptOutcome {
        AttemptOutcome::Answered {
            http_status: status,
            answer: DtsAnswer {
                request_id: Some("r".into()),
                http_status_code: Some(i64::from(status)),
                success,
                err_code: code.map(str::to_string),
                ..Default::default()
            },
            retry_after: None,
        }
    }

    fn unparseable(status: u16) -> AttemptOutcome {
        AttemptOutcome::Unparseable {
            error: UnparseableAnswer {
                http_status: status,
                content_type: None,
                len: 3,
                reason: "x".into(),
                excerpt: "x".into(),
            },
            retry_after: None,
        }
    }

    /// Every documented error code, HTTP status and transport failure, plus the edges.
    #[test]
    fn classification_table() {
        use Class::*;
        use RetryReason::*;
        let table: Vec<(AttemptOutcome, Class)> = vec![
            (answered(200, None, Some(true)), Succeeded),
            // Flow control: refused before execution.
            (
                answered(400, Some("Throttling"), Some(false)),
                Retryable(Throttled),
            ),
            (
                answered(400, Some("Throttling.User"), None),
                Retryable(Throttled),
            ),
            (
                answered(400, Some("Throttling.Api"), None),
                Retryable(Throttled),
            ),
            (
                answered(503, Some("Throttling.Tenant"), None),
                Retryable(Throttled),
            ),
            (
                answered(200, Some("Throttling.User"), Some(false)),
                Retryable(Throttled),
            ),
            (unparseable(429), Retryable(Throttled)),
            // Unavailable: refused.
            (
                answered(503, Some("ServiceUnavailable"), None),
                Retryable(ServiceUnavailable),
            ),
            (
                answered(500, Some("ServiceUnavailable"), None),
                Retryable(ServiceUnavailable),
            ),
            (answered(503, None, None), Retryable(ServiceUnavailable)),
            (unparseable(503), Retryable(ServiceUnavailable)),
            // Credentials.
            (
                answered(403, Some("InvalidSecurityToken.Expired"), None),
                RefreshCredentials,
            ),
            (
                answered(400, Some("InvalidSecurityToken.Malformed"), None),
                Terminal,
            ),
            (
                answered(
                    400,
                    Some("InvalidSecurityToken.MismatchWithAccessKey"),
                    None,
                ),
                Terminal,
            ),
            // May have executed.
            (answered(500, Some("InternalError"), None), Unknown),
            (answered(200, Some("InternalError"), Some(false)), Unknown),
            (answered(502, Some("BadGateway"), None), Unknown),
            (answered(504, None, None), Unknown),
            (unparseable(500), Unknown),
            (unparseable(502), Unknown),
            (unparseable(200), Unknown),
            (unparseable(400), Unknown),
            (answered(200, None, None), Unknown),
            (answered(200, Some(""), None), Unknown),
            // Terminal answers.
            (
                answered(200, Some("InvalidParameter"), Some(false)),
                Terminal,
            ),
            (answered(200, None, Some(false)), Terminal),
            (
                answered(400, Some("InvalidParameter"), Some(false)),
                Terminal,
            ),
            (answered(400, Some("SignatureDoesNotMatch"), None), Terminal),
            (answered(400, Some("IncompleteSignature"), None), Terminal),
            (
                answered(404, Some("InvalidAccessKeyId.NotFound"), None),
                Terminal,
            ),
            (
                answered(400, Some("InvalidAccessKeyId.NotFound"), None),
                Terminal,
            ),
            (
                answered(400, Some("InvalidAccessKeyId.Inactive"), None),
                Terminal,
            ),
            (
                answered(400, Some("InvalidTimeStamp.Expired"), None),
                Terminal,
            ),
            (
                answered(400, Some("InvalidTimeStamp.Format"), None),
                Terminal,
            ),
            (answered(400, Some("SignatureNonceUsed"), None), Terminal),
            (answered(400, Some("MissingParameter"), None), Terminal),
            (answered(400, Some("MissingDtsJobId"), None), Terminal),
            (answered(403, Some("Forbidden.RAM"), None), Terminal),
            (
                answered(403, Some("Forbidden.InstanceNotFound"), None),
                Terminal,
            ),
            (answered(404, None, None), Terminal),
            (answered(200, Some("SomethingNew"), Some(true)), Unknown),
            // Transport.
            (
                AttemptOutcome::Transport(TransportFailure::NotSent("refused".into())),
                Retryable(ConnectionFailed),
            ),
            (
                AttemptOutcome::Transport(TransportFailure::MaybeSent("timeout".into())),
                Unknown,
            ),
        ];
        for (outcome, want) in table {
            assert_eq!(classify(&outcome), want, "{}", outcome.describe());
        }
    }

    #[test]
    fn hints_from_headers() {
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            retry_hint_from_headers(&h(&[("x-acs-retry-after", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_hint_from_headers(&h(&[("Retry-After", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_hint_from_headers(&h(&[("x-acs-retry-after", "200"), ("Retry-After", "9")])),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            retry_hint_from_headers(&h(&[("Retry-After", "soon")])),
            None
        );
        let capped = AttemptOutcome::Answered {
            http_status: 400,
            answer: DtsAnswer::default(),
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(capped.retry_hint(), Some(MAX_RETRY_HINT));
    }

    #[test]
    fn metric_codes_are_bounded() {
        assert_eq!(metric_code(&answered(200, None, Some(true))), "");
        assert_eq!(
            metric_code(&answered(400, Some("Throttling.User"), None)),
            "Throttling.User"
        );
        assert_eq!(
            metric_code(&answered(400, Some("Weird.New"), None)),
            "other"
        );
        assert_eq!(metric_code(&unparseable(502)), "unparseable");
    }
}
