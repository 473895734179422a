//! The HTTP side of DTS calls: one reqwest client (rustls, extra CA bundle, connect and per-attempt
//! timeouts, no redirects, no transport retries) that sends one signed attempt and reports what
//! happened as an [`AttemptOutcome`].
//!
//! This module and the RRSA provider are the only places that talk to Alibaba Cloud. The
//! [`DtsApi`] trait puts the calls behind a seam so the reconcile logic can be unit-tested with
//! a fake; integration tests use the real client against the local simulator.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;

use super::credentials::Credentials;
use super::dts::{Action, DescribeDtsJobDetailParams, JobDetail, ResetDtsJobParams, parse_answer};
use super::endpoint::Endpoint;
use super::error::{AttemptOutcome, Class, TransportFailure, classify, retry_hint_from_headers};
use super::signer::{SignatureVersion, SignedRequest, SigningContext, sign};

/// The official SDK's connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The official SDK's read timeout, used as the whole-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger bodies are cut here: an answer is a few hundred bytes.
const MAX_BODY: usize = 1 << 20;

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle could not be read.
    #[error("cannot read CA bundle {path}: {source}")]
    CaBundleRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA bundle holds no usable certificate.
    #[error("CA bundle {path} holds no PEM certificate: {reason}")]
    CaBundleInvalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Transport settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Connect timeout (a connect failure is safe to retry).
    pub connect_timeout: Duration,
    /// Whole-attempt timeout (expiry after sending means the outcome is unknown).
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM), for private gateways.
    pub ca_bundle: Option<PathBuf>,
    /// Which certificate authorities to trust.
    pub trust_roots: TrustRoots,
}

/// Which certificate authorities a client trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustRoots {
    /// The system's roots plus the extra CA bundle, if any (the default).
    System,
    /// No CA at all, for a run that only speaks plain http to loopback: loading the system's
    /// trust store is most of a cold `reset`'s memory. Any https call then fails to verify.
    None,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            ca_bundle: None,
            trust_roots: TrustRoots::System,
        }
    }
}

/// A reqwest client configured for Alibaba Cloud APIs. Also used for STS.
pub fn build_http_client(options: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    crate::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        // A redirect would re-send a destructive call somewhere else; transport-level retries
        // would re-send it at all. Both are decisions for the classification, not the transport.
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .user_agent(concat!("dts-operator/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30));
    // A CA bundle that was asked for is always checked, even when this run needs no TLS.
    let extra_roots = options
        .ca_bundle
        .as_deref()
        .map(read_ca_bundle)
        .transpose()?;
    match (options.trust_roots, extra_roots) {
        (TrustRoots::None, _) => builder = builder.tls_certs_only(Vec::new()),
        (TrustRoots::System, Some(roots)) => builder = builder.tls_certs_merge(roots),
        (TrustRoots::System, None) => {}
    }
    builder
        .build()
        .map_err(|e| ClientError::Build(error_chain(&e)))
}

fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::CaBundleRead {
        path: path.to_path_buf(),
        source,
    })?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::CaBundleInvalid {
            path: path.to_path_buf(),
            reason: error_chain(&e),
        })?;
    if certs.is_empty() {
        return Err(ClientError::CaBundleInvalid {
            path: path.to_path_buf(),
            reason: "no certificate found".to_string(),
        });
    }
    Ok(certs)
}

/// An error and its sources on one line. Call it on `without_url()` errors where a URL could
/// carry a token.
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Everything needed to make one attempt of a DTS action.
#[derive(Clone, Debug)]
pub struct DtsCall<A> {
    /// Where to send it.
    pub endpoint: Endpoint,
    /// The action's parameters.
    pub params: A,
    /// Credentials for this attempt.
    pub credentials: Credentials,
    /// V1 or V3.
    pub signature_version: SignatureVersion,
    /// Fresh time and nonce for this attempt.
    pub context: SigningContext,
}

/// One `ResetDtsJob` attempt.
pub type ResetCall = DtsCall<ResetDtsJobParams>;
/// One `DescribeDtsJobDetail` attempt.
pub type DescribeCall = DtsCall<DescribeDtsJobDetailParams>;

impl<A: Action> DtsCall<A> {
    /// The signed request this call sends.
    pub fn signed(&self) -> SignedRequest {
        sign(
            self.signature_version,
            &self.params.to_rpc(),
            &self.credentials,
            &self.endpoint,
            &self.context,
        )
    }

    /// The same call for another action (same endpoint, credentials and signature version),
    /// with a fresh nonce and time.
    pub fn with_params<B: Action>(&self, params: B) -> DtsCall<B> {
        DtsCall {
            endpoint: self.endpoint.clone(),
            params,
            credentials: self.credentials.clone(),
            signature_version: self.signature_version,
            context: SigningContext::fresh(),
        }
    }
}

/// What a read produced: the outcome (classified like any answer) and, when the service
/// answered with a job, the job.
#[derive(Clone, Debug)]
pub struct ReadOutcome {
    /// The answer or the failure.
    pub outcome: AttemptOutcome,
    /// The job, from a successful answer.
    pub job: Option<JobDetail>,
}

/// The seam between decisions and the network: one attempt of each DTS action.
pub trait DtsApi: Send + Sync {
    /// Sends one `ResetDtsJob` attempt and reports what happened. Never retries.
    fn reset_dts_job<'a>(&'a self, call: &'a ResetCall) -> BoxFuture<'a, AttemptOutcome>;
    /// Sends one `DescribeDtsJobDetail` attempt (read-only). Never retries.
    fn describe_dts_job_detail<'a>(&'a self, call: &'a DescribeCall) -> BoxFuture<'a, ReadOutcome>;
}

/// The real client.
#[derive(Clone, Debug)]
pub struct DtsClient {
    http: reqwest::Client,
    timeout: Duration,
}

impl DtsClient {
    /// A client with its own reqwest client.
    pub fn new(options: &ClientOptions) -> Result<DtsClient, ClientError> {
        Ok(DtsClient {
            http: build_http_client(options)?,
            timeout: options.timeout,
        })
    }

    /// A client sharing an existing reqwest client.
    pub fn with_http(http: reqwest::Client, timeout: Duration) -> DtsClient {
        DtsClient { http, timeout }
    }

    /// The underlying reqwest client (shared with STS).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a signed request once and classifies the transport result.
    pub async fn send(&self, req: &SignedRequest) -> AttemptOutcome {
        self.exchange(req).await.0
    }

    /// Sends a signed request once: the outcome, and the body when an answer was parsed.
    async fn exchange(&self, req: &SignedRequest) -> (AttemptOutcome, Option<Vec<u8>>) {
        let mut builder = self
            .http
            .post(&req.url)
            .timeout(self.timeout)
            .body(req.body.clone());
        for (name, value) in &req.headers {
            // hyper derives `host` from the URL exactly as signed (non-default port included).
            if name != "host" {
                builder = builder.header(name, value);
            }
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return (AttemptOutcome::Transport(transport_failure(e)), None),
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = retry_hint_from_headers(&header);
        let content_type = header("content-type");
        let body = match read_body(response).await {
            Ok(b) => b,
            // The status arrived but the answer did not: the call may have executed.
            Err(e) => {
                return (
                    AttemptOutcome::Transport(TransportFailure::MaybeSent(format!(
                        "HTTP {status} but the body was lost: {e}"
                    ))),
                    None,
                );
            }
        };
        match parse_answer(status, content_type.as_deref(), &body) {
            Ok(answer) => (
                AttemptOutcome::Answered {
                    http_status: status,
                    answer,
                    retry_after,
                },
                Some(body),
            ),
            Err(error) => (AttemptOutcome::Unparseable { error, retry_after }, None),
        }
    }
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| error_chain(&e.without_url()))?
    {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok(body)
}

/// Connect errors (DNS, refused, TLS handshake, connect timeout) happen before the request is
/// written; everything else may happen after. The URL is dropped from the message: a V1 URL
/// carries the security token.
fn transport_failure(e: reqwest::Error) -> TransportFailure {
    let not_sent = e.is_connect() || e.is_builder();
    let text = error_chain(&e.without_url());
    if not_sent {
        TransportFailure::NotSent(text)
    } else {
        TransportFailure::MaybeSent(text)
    }
}

impl DtsApi for DtsClient {
    fn reset_dts_job<'a>(&'a self, call: &'a ResetCall) -> BoxFuture<'a, AttemptOutcome> {
        Box::pin(async move {
            let mut outcome = self.send(&call.signed()).await;
            // Whatever comes back is stored, logged and printed: no form of a secret may.
            outcome.redact(&call.credentials.redactor());
            outcome
        })
    }

    fn describe_dts_job_detail<'a>(&'a self, call: &'a DescribeCall) -> BoxFuture<'a, ReadOutcome> {
        Box::pin(async move {
            let (mut outcome, body) = self.exchange(&call.signed()).await;
            let redactor = call.credentials.redactor();
            outcome.redact(&redactor);
            let job = match (classify(&outcome), body) {
                (Class::Succeeded, Some(body)) => JobDetail::from_body(&body).map(|mut j| {
                    for field in [&mut j.job_name, &mut j.status, &mut j.dts_job_id] {
                        redactor.redact_option(field);
                    }
                    j
                }),
                _ => None,
            };
            ReadOutcome { outcome, job }
        })
    }
}
