//! Command-line interface: `dts-operator run | crd | reset`. Every flag can also be set with an
//! environment variable `DTS_OPERATOR_<FLAG>`, except where a standard variable exists
//! (`KUBECONFIG`, the `ALIBABA_CLOUD_*` credentials).
//!
//! Parsing only; no I/O.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::aliyun::signer::SignatureVersion;

/// Parses `500ms`, `30s`, `5m`, `1h30m` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 500ms, 30s, 5m)"))
}

/// Kubernetes operator that resets Alibaba Cloud DTS jobs declaratively — at most one
/// ResetDtsJob per request.
#[derive(Debug, Parser)]
#[command(name = "dts-operator", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call DTS ResetDtsJob once from the command line, with the operator's client and retry
    /// policy. Prints one JSON object on one line on stdout; progress goes to stderr.
    ///
    /// Exit codes: 0 succeeded; 1 failed (terminal error, or retries exhausted); 2 usage or
    /// configuration error, nothing sent; 3 outcome unknown (the job may have been reset:
    /// check it in the DTS console before re-running).
    Reset(ResetArgs),
}

/// `--direction` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// Source to destination.
    #[value(name = "Forward")]
    Forward,
    /// Destination to source (two-way synchronization).
    #[value(name = "Reverse")]
    Reverse,
}

impl Direction {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "Forward",
            Direction::Reverse => "Reverse",
        }
    }
}

/// `--signature-version` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SignatureVersionArg {
    /// HMAC-SHA1, parameters in the query (as in the API reference).
    V1,
    /// ACS3-HMAC-SHA256 (the official SDKs' default).
    V3,
}

impl From<SignatureVersionArg> for SignatureVersion {
    fn from(v: SignatureVersionArg) -> Self {
        match v {
            SignatureVersionArg::V1 => SignatureVersion::V1,
            SignatureVersionArg::V3 => SignatureVersion::V3,
        }
    }
}

/// Flags of `dts-operator reset`. Credentials come from the standard chain:
/// ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET / ALIBABA_CLOUD_SECURITY_TOKEN,
/// then RRSA (ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN,
/// ALIBABA_CLOUD_OIDC_TOKEN_FILE, optional ALIBABA_CLOUD_STS_ENDPOINT / ALIBABA_CLOUD_STS_REGION).
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The ID of the data synchronization or change tracking task (DtsJobId).
    #[arg(long, env = "DTS_OPERATOR_JOB_ID", value_name = "ID")]
    pub job_id: String,

    /// The ID of the DTS instance (DtsInstanceId).
    #[arg(long, env = "DTS_OPERATOR_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,

    /// The synchronization direction (SynchronizationDirection).
    #[arg(long, env = "DTS_OPERATOR_DIRECTION", value_enum)]
    pub direction: Option<Direction>,

    /// The region of the DTS instance (RegionId); also selects the endpoint.
    #[arg(long, env = "DTS_OPERATOR_REGION", default_value = "cn-hangzhou")]
    pub region: String,

    /// Endpoint URL (https://host[:port]; a bare host means https). Plain http:// only for
    /// localhost, 127.0.0.0/8 or ::1. Default: the official SDK's endpoint for the region.
    #[arg(long, env = "DTS_OPERATOR_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// Signature version: v3 (ACS3-HMAC-SHA256, the SDKs' default) or v1 (HMAC-SHA1).
    #[arg(
        long,
        env = "DTS_OPERATOR_SIGNATURE_VERSION",
        value_enum,
        default_value = "v3"
    )]
    pub signature_version: SignatureVersionArg,

    /// Attempts in all: one plus retries (retries only for throttling, 503 and connection
    /// failures before sending).
    #[arg(
        long,
        env = "DTS_OPERATOR_MAX_ATTEMPTS",
        default_value_t = 7,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub max_attempts: u32,

    /// Ceiling of the first backoff (exponential, full jitter).
    #[arg(long, env = "DTS_OPERATOR_BACKOFF_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub backoff_initial: Duration,

    /// Largest backoff ceiling. A server hint (x-acs-retry-after, Retry-After) can exceed it.
    #[arg(long, env = "DTS_OPERATOR_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// Timeout of each attempt (e.g. 500ms, 30s). Expiry after sending = outcome unknown.
    #[arg(long, env = "DTS_OPERATOR_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Extra trusted CA certificates (PEM file), for private gateways.
    #[arg(long, env = "DTS_OPERATOR_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// Print the signed request (security token redacted) as JSON on stdout; send nothing.
    #[arg(long, env = "DTS_OPERATOR_DRY_RUN")]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reset_defaults_follow_the_contract() {
        let cli = Cli::try_parse_from(["dts-operator", "reset", "--job-id", "j1"]).unwrap();
        let Command::Reset(a) = cli.command;
        assert_eq!(a.region, "cn-hangzhou");
        assert_eq!(a.signature_version, SignatureVersionArg::V3);
        assert_eq!(a.max_attempts, 7);
        assert_eq!(a.backoff_initial, Duration::from_secs(1));
        assert_eq!(a.backoff_max, Duration::from_secs(300));
        assert_eq!(a.timeout, Duration::from_secs(10));
        assert!(!a.dry_run);
    }

    #[test]
    fn durations_and_enums_parse() {
        let cli = Cli::try_parse_from([
            "dts-operator",
            "reset",
            "--job-id",
            "j1",
            "--timeout",
            "500ms",
            "--backoff-max",
            "30s",
            "--direction",
            "Reverse",
            "--signature-version",
            "v1",
        ])
        .unwrap();
        let Command::Reset(a) = cli.command;
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.backoff_max, Duration::from_secs(30));
        assert_eq!(a.direction, Some(Direction::Reverse));
        assert_eq!(a.signature_version, SignatureVersionArg::V1);
        assert!(Cli::try_parse_from(["dts-operator", "reset"]).is_err());
        assert!(
            Cli::try_parse_from([
                "dts-operator",
                "reset",
                "--job-id",
                "j",
                "--timeout",
                "soon"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "dts-operator",
                "reset",
                "--job-id",
                "j",
                "--max-attempts",
                "0"
            ])
            .is_err()
        );
    }
}
