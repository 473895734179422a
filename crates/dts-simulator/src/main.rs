//! `dts-simulator`: runs the DTS/STS simulator as a process (for the demo and manual testing).
//! Wiring only: parse flags, set up logging, register keys and scripts, serve until Ctrl-C.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use dts_simulator::{Answer, OidcProvider, RateLimit, SimConfig, Simulator, TlsIdentity};

/// A local SIMULATOR of the Alibaba Cloud DTS API (ResetDtsJob) and STS AssumeRoleWithOIDC, for
/// testing. It is not the real service and never contacts Alibaba Cloud.
#[derive(Parser, Debug)]
#[command(name = "dts-simulator", version)]
struct Args {
    /// Address to listen on; a loopback address unless --allow-non-loopback.
    #[arg(long, env = "DTS_SIMULATOR_LISTEN", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,

    /// Serve https with this certificate chain (PEM, server certificate first); needs --tls-key.
    #[arg(long, env = "DTS_SIMULATOR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "DTS_SIMULATOR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Allow --listen on a specific non-loopback address of this machine (e.g. the bridge of a
    /// local test node). Only with TLS; never 0.0.0.0 or [::].
    #[arg(long, env = "DTS_SIMULATOR_ALLOW_NON_LOOPBACK")]
    allow_non_loopback: bool,

    /// STS trusts this OIDC provider's keys (a JWKS file, e.g. a Kubernetes API server's
    /// /openid/v1/jwks): AssumeRoleWithOIDC then needs an RS256 token signed by one of them.
    #[arg(long, env = "DTS_SIMULATOR_OIDC_JWKS")]
    oidc_jwks: Option<PathBuf>,

    /// The audience (client ID) an OIDC token must carry (with --oidc-jwks).
    #[arg(
        long,
        env = "DTS_SIMULATOR_OIDC_AUDIENCE",
        default_value = "sts.aliyuncs.com"
    )]
    oidc_audience: String,

    /// The issuer an OIDC token must carry (with --oidc-jwks; default: any).
    #[arg(long, env = "DTS_SIMULATOR_OIDC_ISSUER")]
    oidc_issuer: Option<String>,

    /// AccessKeyId to accept (repeat together with --access-key-secret for several keys).
    #[arg(long, env = "DTS_SIMULATOR_ACCESS_KEY_ID")]
    access_key_id: Vec<String>,

    /// AccessKeySecret for the AccessKeyId at the same position.
    #[arg(long, env = "DTS_SIMULATOR_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: Vec<String>,

    /// JSON file: an object mapping a DtsJobId to a list of answers, e.g.
    /// {"job1":[{"kind":"gateway_error","http_status":400,"code":"Throttling.User","message":"..."},{"kind":"success"}]}
    #[arg(long, env = "DTS_SIMULATOR_SCRIPT")]
    script: Option<PathBuf>,

    /// Validity in seconds of credentials issued by STS AssumeRoleWithOIDC (default: the
    /// request's DurationSeconds).
    #[arg(long, env = "DTS_SIMULATOR_STS_VALIDITY_SECS")]
    sts_validity_secs: Option<u64>,

    /// Server-side flow control, RATE[:BURST] calls per second per AccessKeyId and action (burst
    /// default: one second's worth): authenticated calls above it are answered HTTP 400
    /// Throttling.User, like the gateway's flow control, and are not executed. Default: no limit.
    #[arg(long, env = "DTS_SIMULATOR_RATE_LIMIT", value_name = "RATE[:BURST]", value_parser = RateLimit::parse)]
    rate_limit: Option<RateLimit>,

    /// Log format on stderr.
    #[arg(long, env = "DTS_SIMULATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_script(path: &PathBuf) -> Result<BTreeMap<String, Vec<Answer>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read script {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("invalid script {}: {e}", path.display()))
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Args {
        listen,
        tls_cert,
        tls_key,
        allow_non_loopback,
        oidc_jwks,
        oidc_audience,
        oidc_issuer,
        access_key_id,
        access_key_secret,
        script,
        sts_validity_secs,
        rate_limit,
        log_format,
    } = args;
    init_logging(log_format);

    let tls = match (&tls_cert, &tls_key) {
        (Some(cert), Some(key)) => match TlsIdentity::from_files(cert, key) {
            Ok(identity) => Some(identity),
            Err(e) => {
                eprintln!("dts-simulator: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    if !listen.ip().is_loopback() {
        if !allow_non_loopback || listen.ip().is_unspecified() {
            eprintln!(
                "dts-simulator: refusing to listen on {listen}: only loopback addresses (127.0.0.0/8, ::1) are allowed, or with --allow-non-loopback and TLS a specific address of this machine"
            );
            return ExitCode::from(2);
        }
        if tls.is_none() {
            eprintln!(
                "dts-simulator: refusing to listen on {listen} without TLS: give --tls-cert and --tls-key"
            );
            return ExitCode::from(2);
        }
    }
    let oidc = match &oidc_jwks {
        Some(path) => {
            let jwks = match std::fs::read_to_string(path) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("dts-simulator: cannot read {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            match OidcProvider::new(&oidc_audience, oidc_issuer.as_deref(), &jwks) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("dts-simulator: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    if access_key_id.len() != access_key_secret.len() {
        eprintln!(
            "dts-simulator: got {} --access-key-id but {} --access-key-secret; give them in pairs",
            access_key_id.len(),
            access_key_secret.len()
        );
        return ExitCode::from(2);
    }
    let scripts = match script.as_ref().map(load_script).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            eprintln!("dts-simulator: {e}");
            return ExitCode::from(2);
        }
    };

    eprintln!(
        "==============================================================================\n\
         dts-simulator: a SIMULATOR of the Alibaba Cloud DTS API (ResetDtsJob 2020-01-01)\n\
         and STS AssumeRoleWithOIDC, for local testing only. It is NOT the real service,\n\
         nothing here reaches Alibaba Cloud, and no DTS task is touched.\n\
         =============================================================================="
    );

    let config = SimConfig {
        bind: listen,
        sts_validity: sts_validity_secs.map(std::time::Duration::from_secs),
        tls,
        allow_non_loopback,
        oidc,
        rate_limit,
        ..SimConfig::default()
    };
    let sim = match Simulator::try_start_with(config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("dts-simulator: {e}");
            return ExitCode::from(1);
        }
    };
    for (id, secret) in access_key_id.iter().zip(&access_key_secret) {
        sim.add_access_key(id, secret);
        tracing::info!(access_key_id = %id, "accepting access key");
    }
    if access_key_id.is_empty() {
        tracing::warn!("no access key configured; add one with POST /_simulator/keys");
    }
    for (job, answers) in scripts {
        tracing::info!(dts_job_id = %job, answers = answers.len(), "scripted");
        sim.script(&job, answers);
    }

    println!("listening on {}", sim.url());
    let _ = std::io::stdout().flush();

    wait_for_signal().await;
    tracing::info!("shutting down");
    sim.shutdown().await;
    ExitCode::SUCCESS
}
