//! Command-line interface: `dts-operator run | crd | reset`. Every flag can also be set with an
//! environment variable `DTS_OPERATOR_<FLAG>`, except where a standard variable exists
//! (`KUBECONFIG`, the `ALIBABA_CLOUD_*` credentials).
//!
//! Parsing only; no I/O.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::aliyun::dts::SynchronizationDirection;
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

/// The subcommands. Each one's flags are built only when it runs (`defer`): a cold `reset` does
/// not construct `run`'s thirty flags (nor read their environment variables) to parse its own.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Run the controller: watch DtsJobReset resources and reset their DTS jobs, at most once
    /// per request.
    Run(Box<RunArgs>),
    /// Print the DtsJobReset CustomResourceDefinition (YAML) on stdout.
    Crd,
    /// Call DTS ResetDtsJob once from the command line, with the operator's client and retry
    /// policy. Prints one JSON object on one line on stdout; progress goes to stderr.
    ///
    /// Exit codes: 0 succeeded; 1 failed (terminal error, or retries exhausted); 2 usage or
    /// configuration error, nothing sent; 3 outcome unknown (the job may have been reset:
    /// check it in the DTS console before re-running).
    Reset(ResetArgs),
    /// Read a DTS job's state with DescribeDtsJobDetail (read-only). Prints one JSON object on
    /// one line on stdout.
    ///
    /// Exit codes: 0 found; 1 the service answered an error; 2 usage or configuration error;
    /// 3 no answer (timeout, unparseable).
    Describe(DescribeArgs),
}

/// Flags of `dts-operator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig file (default: KUBECONFIG, then in-cluster configuration).
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch one namespace only (default: all namespaces).
    #[arg(long, env = "DTS_OPERATOR_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,

    /// Watch only resources whose labels match this label selector, as `kubectl -l`
    /// (`shard=a`, `shard in (a,b)`, `!legacy`, …), so several installations — each with its own
    /// leader-election Lease — split a fleet. Default: every resource.
    #[arg(long, env = "DTS_OPERATOR_SELECTOR", value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Region of resources that name none.
    #[arg(
        long,
        env = "DTS_OPERATOR_DEFAULT_REGION",
        default_value = "cn-hangzhou"
    )]
    pub default_region: String,

    /// Send every DTS call to this endpoint, whatever the resources say (private gateways, test
    /// servers). Wins over spec.endpoint. http:// only for loopback.
    #[arg(long, env = "DTS_OPERATOR_DTS_ENDPOINT", value_name = "URL")]
    pub dts_endpoint: Option<String>,

    /// Comma list of host patterns spec.endpoint may use (`*` matches one DNS label).
    #[arg(
        long,
        env = "DTS_OPERATOR_ENDPOINT_ALLOWLIST",
        default_value = crate::aliyun::endpoint::DEFAULT_ENDPOINT_ALLOWLIST,
        value_name = "PATTERNS"
    )]
    pub endpoint_allowlist: String,

    /// Extra trusted CA certificates (PEM file), for private gateways.
    #[arg(long, env = "DTS_OPERATOR_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// Comma list of namespaces whose resources may use the operator's own credentials
    /// (environment, RRSA), or `*`. Default: the operator's namespace (POD_NAMESPACE, else the
    /// service-account namespace file), else none.
    #[arg(
        long,
        env = "DTS_OPERATOR_DEFAULT_CREDENTIALS_NAMESPACES",
        value_name = "LIST"
    )]
    pub default_credentials_namespaces: Option<String>,

    /// ResetDtsJob calls in flight at once, across all resources.
    #[arg(
        long,
        env = "DTS_OPERATOR_MAX_CONCURRENT_RESETS",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub max_concurrent_resets: u32,

    /// Client-side rate limit toward DTS, calls per second (shared by all resources; 0 = none).
    #[arg(long, env = "DTS_OPERATOR_DTS_QPS", default_value_t = 5.0)]
    pub dts_qps: f64,

    /// Burst of the client-side rate limit.
    #[arg(
        long,
        env = "DTS_OPERATOR_DTS_BURST",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=10000)
    )]
    pub dts_burst: u32,

    /// Adapt the ResetDtsJob rate to the service: a Throttling* answer lowers it (x0.7, never
    /// below 5% of --dts-qps), successes raise it again, never above --dts-qps. `true` or
    /// `false`.
    #[arg(
        long,
        env = "DTS_OPERATOR_DTS_ADAPTIVE_RATE",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dts_adaptive_rate: bool,

    /// Client-side rate limit of reads (DescribeDtsJobDetail), calls per second (0 = none): a
    /// bucket of its own, so verification never slows resets.
    #[arg(long, env = "DTS_OPERATOR_DTS_READ_QPS", default_value_t = 10.0)]
    pub dts_read_qps: f64,

    /// Burst of the read rate limit.
    #[arg(
        long,
        env = "DTS_OPERATOR_DTS_READ_BURST",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..=10000)
    )]
    pub dts_read_burst: u32,

    /// Verification of uncertain outcomes against the job's state.
    #[command(flatten)]
    pub verify: VerifyArgs,

    /// Timeout of each DTS call (expiry after sending = outcome Unknown).
    #[arg(long, env = "DTS_OPERATOR_DTS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub dts_timeout: Duration,

    /// Backoff between retries.
    #[command(flatten)]
    pub backoff: BackoffArgs,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "DTS_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: std::net::SocketAddr,

    /// Lease-based leader election, for several replicas: only the leader acts.
    #[arg(long, env = "DTS_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Namespace of the Lease (default: the operator's namespace).
    #[arg(
        long,
        env = "DTS_OPERATOR_LEADER_ELECTION_NAMESPACE",
        value_name = "NS"
    )]
    pub leader_election_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(
        long,
        env = "DTS_OPERATOR_LEADER_ELECTION_LEASE_NAME",
        default_value = "dts-operator"
    )]
    pub leader_election_lease_name: String,

    /// How long the lease is valid without renewal; a standby takes over within about this long.
    #[arg(
        long,
        env = "DTS_OPERATOR_LEADER_ELECTION_LEASE_DURATION",
        default_value = "15s",
        value_parser = parse_duration
    )]
    pub leader_election_lease_duration: Duration,

    /// How far another replica's clock may be off: a claim written by another process is
    /// declared abandoned only after this process has watched it, unchanged, for longer than
    /// the claim's validity plus this.
    #[arg(long, env = "DTS_OPERATOR_MAX_CLOCK_SKEW", default_value = "30s", value_parser = parse_duration)]
    pub max_clock_skew: Duration,

    /// On SIGTERM: stop claiming, let in-flight calls finish and be recorded within this bound.
    #[arg(long, env = "DTS_OPERATOR_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log format.
    #[arg(
        long,
        env = "DTS_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::telemetry::LogFormat,
}

/// The verification flags, shared by `run` and `reset --verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// How often the job is read to verify an uncertain outcome.
    #[arg(long, env = "DTS_OPERATOR_VERIFY_INTERVAL", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub verify_interval: Duration,

    /// How long after an uncertain outcome the job is read at most (0 turns verification off).
    #[arg(long, env = "DTS_OPERATOR_VERIFY_WINDOW", default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub verify_window: Duration,
}

impl VerifyArgs {
    /// The policy, or why the flags are inconsistent.
    pub fn policy(&self) -> Result<crate::controller::verify::VerifyPolicy, String> {
        if self.verify_interval.is_zero() && !self.verify_window.is_zero() {
            return Err("--verify-interval must be more than 0".to_string());
        }
        Ok(crate::controller::verify::VerifyPolicy {
            interval: self.verify_interval,
            window: self.verify_window,
        })
    }
}

/// The backoff flags, shared by `run` and `reset`.
#[derive(Debug, Args)]
pub struct BackoffArgs {
    /// Ceiling of the first retry's wait (exponential backoff, full jitter).
    #[arg(long = "backoff-initial", env = "DTS_OPERATOR_BACKOFF_INITIAL", default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub initial: Duration,

    /// Largest backoff ceiling. A server hint (x-acs-retry-after, Retry-After) can exceed it.
    #[arg(long = "backoff-max", env = "DTS_OPERATOR_BACKOFF_MAX", default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub max: Duration,
}

impl BackoffArgs {
    /// The policy, or why the flags are inconsistent.
    pub fn policy(&self) -> Result<crate::retry::Backoff, String> {
        if self.initial > self.max {
            return Err("--backoff-initial must not exceed --backoff-max".to_string());
        }
        Ok(crate::retry::Backoff {
            initial: self.initial,
            max: self.max,
        })
    }
}

/// The job and how to reach DTS, shared by `reset` and `describe`. Credentials come from the
/// standard chain: ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET /
/// ALIBABA_CLOUD_SECURITY_TOKEN, then RRSA (ALIBABA_CLOUD_ROLE_ARN,
/// ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE, optional
/// ALIBABA_CLOUD_STS_ENDPOINT / ALIBABA_CLOUD_STS_REGION).
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The ID of the data synchronization or change tracking task (DtsJobId).
    #[arg(long, env = "DTS_OPERATOR_JOB_ID", value_name = "ID")]
    pub job_id: String,

    /// The ID of the DTS instance (DtsInstanceId).
    #[arg(long, env = "DTS_OPERATOR_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,

    /// The synchronization direction (SynchronizationDirection).
    #[arg(long, env = "DTS_OPERATOR_DIRECTION", value_enum)]
    pub direction: Option<SynchronizationDirection>,

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
    pub signature_version: SignatureVersion,

    /// Timeout of each attempt (e.g. 500ms, 30s). Expiry after sending = outcome unknown.
    #[arg(long, env = "DTS_OPERATOR_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Extra trusted CA certificates (PEM file), for private gateways.
    #[arg(long, env = "DTS_OPERATOR_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
}

/// Flags of `dts-operator reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The job, the endpoint, signing and the timeout.
    #[command(flatten)]
    pub job: JobArgs,

    /// Attempts in all: one plus retries (retries only for throttling, 503 and connection
    /// failures before sending).
    #[arg(
        long,
        env = "DTS_OPERATOR_MAX_ATTEMPTS",
        default_value_t = 7,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub max_attempts: u32,

    /// Backoff between retries.
    #[command(flatten)]
    pub backoff: BackoffArgs,

    /// Print the signed request (security token redacted) as JSON on stdout; send nothing.
    #[arg(long, env = "DTS_OPERATOR_DRY_RUN")]
    pub dry_run: bool,

    /// Read the job before the call and, after an uncertain outcome, verify it from the job's
    /// state as the controller does (never sending again): outcome `verified` (exit 0) when
    /// proven, else `unknown` (exit 3).
    #[arg(long, env = "DTS_OPERATOR_VERIFY")]
    pub verify: bool,

    /// How often and how long `--verify` reads the job.
    #[command(flatten)]
    pub verify_flags: VerifyArgs,
}

/// Flags of `dts-operator describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The job, the endpoint, signing and the timeout.
    #[command(flatten)]
    pub job: JobArgs,
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
        let Command::Reset(a) = cli.command else {
            panic!("reset expected")
        };
        assert_eq!(a.job.region, "cn-hangzhou");
        assert_eq!(a.job.signature_version, SignatureVersion::V3);
        assert_eq!(a.max_attempts, 7);
        assert_eq!(a.backoff.initial, Duration::from_secs(1));
        assert_eq!(a.backoff.max, Duration::from_secs(300));
        assert_eq!(a.job.timeout, Duration::from_secs(10));
        assert!(!a.dry_run);
        assert!(!a.verify);
        assert_eq!(a.verify_flags.verify_window, Duration::from_secs(300));
    }

    #[test]
    fn run_defaults_follow_the_contract() {
        let cli = Cli::try_parse_from(["dts-operator", "run"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(a.default_region, "cn-hangzhou");
        assert_eq!(
            a.endpoint_allowlist,
            "dts.aliyuncs.com,dts.*.aliyuncs.com,dts-vpc.*.aliyuncs.com"
        );
        assert_eq!(a.max_concurrent_resets, 8);
        assert_eq!(a.dts_qps, 5.0);
        assert_eq!(a.dts_burst, 10);
        assert!(a.dts_adaptive_rate);
        assert_eq!(a.metrics_addr.to_string(), "0.0.0.0:8080");
        assert!(!a.leader_elect);
        assert_eq!(a.leader_election_lease_name, "dts-operator");
        assert_eq!(a.leader_election_lease_duration, Duration::from_secs(15));
        assert_eq!(a.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(a.max_clock_skew, Duration::from_secs(30));
        assert_eq!(a.dts_read_qps, 10.0);
        assert_eq!(a.dts_read_burst, 20);
        assert_eq!(a.verify.verify_interval, Duration::from_secs(10));
        assert_eq!(a.verify.verify_window, Duration::from_secs(300));
        assert_eq!(a.log_format, crate::telemetry::LogFormat::Text);
        assert_eq!(a.selector, None);
    }

    #[test]
    fn adaptive_rate_takes_true_or_false() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["dts-operator", "run"], args].concat())?;
            let Command::Run(a) = cli.command else {
                panic!("run expected")
            };
            Ok::<bool, clap::Error>(a.dts_adaptive_rate)
        };
        assert!(!parse(&["--dts-adaptive-rate=false"]).unwrap());
        assert!(!parse(&["--dts-adaptive-rate", "false"]).unwrap());
        assert!(parse(&["--dts-adaptive-rate=true"]).unwrap());
        assert!(parse(&["--dts-adaptive-rate"]).unwrap());
        assert!(parse(&["--dts-adaptive-rate=maybe"]).is_err());
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
        let Command::Reset(a) = cli.command else {
            panic!("reset expected")
        };
        assert_eq!(a.job.timeout, Duration::from_millis(500));
        assert_eq!(a.backoff.max, Duration::from_secs(30));
        assert_eq!(a.job.direction, Some(SynchronizationDirection::Reverse));
        assert_eq!(a.job.signature_version, SignatureVersion::V1);
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
