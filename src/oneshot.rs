//! What the one-shot commands (`reset`, `describe`) share: from the flags and the environment
//! to a client, the credentials chain, the endpoint and the job's parameters — every usage error
//! found before anything is sent.

use std::time::Duration;

use crate::aliyun::client::{
    ClientOptions, DescribeCall, DtsApi, DtsCall, DtsClient, TrustRoots, build_http_client,
};
use crate::aliyun::credentials::{Credentials, CredentialsError};
use crate::aliyun::dts::{DescribeDtsJobDetailParams, ResetDtsJobParams, validate_job_id};
use crate::aliyun::endpoint::{Endpoint, Scheme, dts_endpoint_for_region};
use crate::aliyun::error::TransportFailure;
use crate::aliyun::provider::CredentialsProvider;
use crate::aliyun::signer::SigningContext;
use crate::cli::JobArgs;

/// The endpoint from the flags: `--endpoint` (loopback rule applies), else the SDK's region map.
/// (The controller's choice adds an admin override and an allowlist:
/// `crate::controller::resolve::endpoint_for_resource`.)
pub fn endpoint_from_flags(job: &JobArgs) -> Result<Endpoint, String> {
    match &job.endpoint {
        Some(e) => Endpoint::parse(e).map_err(|e| e.to_string()),
        None => Ok(dts_endpoint_for_region(&job.region)),
    }
}

/// The job's parameters from the flags.
pub fn params_from(job: &JobArgs) -> ResetDtsJobParams {
    ResetDtsJobParams {
        dts_job_id: job.job_id.clone(),
        dts_instance_id: job.instance_id.clone().filter(|s| !s.is_empty()),
        synchronization_direction: job.direction.map(|d| d.as_str().to_string()),
        region_id: Some(job.region.clone()),
    }
}

/// A client, the credentials chain and a call template for the job of the flags.
pub struct Connected {
    /// The DTS client.
    pub client: DtsClient,
    /// The standard credentials chain.
    pub provider: CredentialsProvider,
    /// The reset call, with placeholder credentials and context: fresh ones for every attempt.
    pub template: DtsCall<ResetDtsJobParams>,
}

/// Validates the flags and builds what a command needs; `Err` is a usage error (exit 2).
pub fn connect(job: &JobArgs) -> Result<Connected, String> {
    validate_job_id(&job.job_id).map_err(|e| format!("--job-id: {e}"))?;
    let endpoint = endpoint_from_flags(job).map_err(|e| format!("--endpoint: {e}"))?;
    // Plain http to a local gateway with a static key needs no trust store: skip loading it.
    let needs_tls = endpoint.scheme() == Scheme::Https
        || CredentialsProvider::chain_needs_tls(&|k| std::env::var(k).ok());
    let options = ClientOptions {
        timeout: job.timeout,
        ca_bundle: job.ca_bundle.clone(),
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
    Ok(Connected {
        client: DtsClient::with_http(http, job.timeout),
        provider,
        template: DtsCall {
            endpoint,
            params: params_from(job),
            credentials: Credentials::new("", "", None),
            signature_version: job.signature_version,
            context: SigningContext::fresh(),
        },
    })
}

/// Transport failures a read is repeated after (a read changes nothing): this many attempts.
const READ_ATTEMPTS: u32 = 3;

impl Connected {
    /// One `DescribeDtsJobDetail` of the job, with fresh credentials, repeated only after
    /// transport failures. `Err`: no credentials.
    pub async fn read_job(&self) -> Result<crate::aliyun::client::ReadOutcome, CredentialsError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let credentials = self.provider.get().await?;
            let call: DescribeCall = DtsCall {
                credentials,
                ..self
                    .template
                    .with_params(DescribeDtsJobDetailParams::from(&self.template.params))
            };
            let read = self.client.describe_dts_job_detail(&call).await;
            let transport = matches!(
                read.outcome,
                crate::aliyun::error::AttemptOutcome::Transport(
                    TransportFailure::NotSent(_) | TransportFailure::MaybeSent(_)
                )
            );
            if !transport || attempt >= READ_ATTEMPTS {
                return Ok(read);
            }
            tokio::time::sleep(Duration::from_millis(500) * attempt).await;
        }
    }
}
