//! `dts-operator run`: the controller process, in stages —
//! [`RunConfig::from_args`] (pure: flags and environment facts → settings, every configuration
//! error found before anything starts), then [`run`]: build the clients, serve the admin
//! endpoints, stand by for the lease, run the kube-runtime controller, and drain on SIGTERM (stop
//! claiming, let in-flight calls finish and be recorded, release the lease).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Config as ControllerRuntimeConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Semaphore;

use crate::admin::{self, AdminState};
use crate::aliyun::client::{ClientOptions, DtsClient};
use crate::aliyun::endpoint::{Endpoint, EndpointAllowlist};
use crate::aliyun::provider::CredentialsProvider;
use crate::cli::RunArgs;
use crate::controller::joblease::JobLeases;
use crate::controller::resolve::DefaultCredentialsScope;
use crate::controller::{self, Context, ControllerConfig};
use crate::crd::{DtsJobReset, FIELD_MANAGER};
use crate::leader::{LeaderConfig, LeaderElector};
use crate::metrics::Metrics;
use crate::ratelimit::TokenBucket;
use crate::selector::LabelSelector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Objects per page of the watch's initial list: each page is held whole (as sent, before
/// stripping) while its objects are cached.
const LIST_PAGE_SIZE: u32 = 100;

/// A job Lease lasts a claim's validity and this much more: the claim is written after it.
const JOB_LEASE_EXTRA: Duration = Duration::from_secs(5);

/// Why `run` could not start (exit 2) or stopped (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad flags or environment: nothing was started.
    #[error("configuration: {what}")]
    Config {
        /// What is wrong, naming the flag.
        what: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The controller's event stream ended.
    #[error("the controller stopped unexpectedly")]
    ControllerStopped,
    /// Another instance holds the lease now, or it could not be renewed in time.
    #[error("leader lease lost: stopping at once")]
    LeaseLost,
}

impl RunError {
    fn config(what: impl Into<String>, source: impl Into<BoxError>) -> RunError {
        RunError::Config {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    fn invalid(what: impl Into<String>) -> RunError {
        RunError::Config {
            what: what.into(),
            source: None,
        }
    }

    /// The error and its sources on one line.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The operator's own namespace: `POD_NAMESPACE`, else the service-account namespace file.
pub fn own_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string(SA_NAMESPACE_FILE)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
}

/// A unique identity for this process (claims and the Lease name it).
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| hostname().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "dts-operator".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Facts about the process's environment that the settings depend on.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// [`own_namespace`].
    pub own_namespace: Option<String>,
    /// [`identity`].
    pub identity: String,
}

/// Everything `run` needs to know, decided before anything starts.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// `--kubeconfig` (else `KUBECONFIG`, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// `--namespace`: the one namespace watched, or all.
    pub watch_namespace: Option<String>,
    /// The controller's settings.
    pub controller: ControllerConfig,
    /// The DTS HTTP client's settings.
    pub client: ClientOptions,
    /// `--leader-elect`: the Lease to hold before acting.
    pub leader: Option<LeaderConfig>,
    /// Where the job Leases live (exclusion per job across processes): the leader election
    /// namespace, else the operator's own, else the one namespace watched. `None`: no namespace
    /// is known, and only this process's own exclusion applies (a warning says so).
    pub job_lease_namespace: Option<String>,
    /// `--metrics-addr`.
    pub metrics_addr: SocketAddr,
    /// `--max-concurrent-resets`.
    pub max_concurrent_resets: u32,
    /// `--dts-qps`.
    pub dts_qps: f64,
    /// `--dts-burst`.
    pub dts_burst: u32,
    /// `--dts-adaptive-rate`.
    pub dts_adaptive_rate: bool,
    /// `--dts-read-qps`.
    pub dts_read_qps: f64,
    /// `--dts-read-burst`.
    pub dts_read_burst: u32,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: Duration,
    /// Things worth a warning at start-up.
    pub warnings: Vec<String>,
}

impl RunConfig {
    /// The settings from the flags. Pure; every configuration error is found here.
    pub fn from_args(args: &RunArgs, env: &Environment) -> Result<RunConfig, RunError> {
        let mut warnings = Vec::new();
        let default_scope = default_scope(args, env, &mut warnings);
        let dts_endpoint = args
            .dts_endpoint
            .as_deref()
            .map(Endpoint::parse)
            .transpose()
            .map_err(|e| RunError::config("--dts-endpoint", e))?;
        let backoff = args.backoff.policy().map_err(RunError::invalid)?;
        let selector = LabelSelector::parse(args.selector.as_deref().unwrap_or_default())
            .map_err(|e| RunError::config("--selector", e))?;
        let verify = args.verify.policy().map_err(RunError::invalid)?;
        let leader = leader_config(args, env)?;
        let job_lease_namespace = job_lease_namespace(args, env, &selector, &mut warnings);
        Ok(RunConfig {
            kubeconfig: args.kubeconfig.clone(),
            watch_namespace: args.namespace.clone(),
            controller: ControllerConfig {
                default_region: args.default_region.clone(),
                dts_endpoint,
                allowlist: EndpointAllowlist::parse(&args.endpoint_allowlist),
                default_scope,
                backoff,
                attempt_timeout: args.dts_timeout,
                identity: env.identity.clone(),
                max_clock_skew: args.max_clock_skew,
                verify,
                selector,
            },
            client: ClientOptions {
                timeout: args.dts_timeout,
                ca_bundle: args.ca_bundle.clone(),
                ..ClientOptions::default()
            },
            leader,
            job_lease_namespace,
            metrics_addr: args.metrics_addr,
            max_concurrent_resets: args.max_concurrent_resets,
            dts_qps: args.dts_qps,
            dts_burst: args.dts_burst,
            dts_adaptive_rate: args.dts_adaptive_rate,
            dts_read_qps: args.dts_read_qps,
            dts_read_burst: args.dts_read_burst,
            shutdown_timeout: args.shutdown_timeout,
            warnings,
        })
    }
}

/// Who may use the operator's own credentials: the flag, else the operator's namespace (a
/// warning when that is unknown too).
fn default_scope(
    args: &RunArgs,
    env: &Environment,
    warnings: &mut Vec<String>,
) -> DefaultCredentialsScope {
    match (&args.default_credentials_namespaces, &env.own_namespace) {
        (Some(list), _) => DefaultCredentialsScope::parse(list),
        (None, Some(ns)) => DefaultCredentialsScope::Namespaces(vec![ns.clone()]),
        (None, None) => {
            warnings.push(
                "the operator's namespace is unknown (no POD_NAMESPACE, no service-account namespace file): no namespace may use its default credentials; set --default-credentials-namespaces".to_string(),
            );
            DefaultCredentialsScope::Namespaces(Vec::new())
        }
    }
}

/// Leader election with `--leader-elect`: its Lease, and a duration the attempt fits in.
fn leader_config(args: &RunArgs, env: &Environment) -> Result<Option<LeaderConfig>, RunError> {
    if !args.leader_elect {
        return Ok(None);
    }
    let namespace = args
        .leader_election_namespace
        .clone()
        .or(env.own_namespace.clone())
        .ok_or_else(|| {
            RunError::invalid(
                "--leader-elect needs --leader-election-namespace (the operator's namespace is unknown)",
            )
        })?;
    let leader = LeaderConfig {
        namespace,
        name: args.leader_election_lease_name.clone(),
        identity: env.identity.clone(),
        lease_duration: args.leader_election_lease_duration,
    };
    // The leader sends only while its own view of the lease outlasts the attempt, and
    // that view is renewed every retry period: a shorter lease would never send.
    let needed =
        args.dts_timeout + crate::controller::attempt::FENCE_MARGIN + leader.retry_period();
    if leader.lease_duration < needed {
        return Err(RunError::invalid(format!(
            "--leader-election-lease-duration ({:?}) must be at least --dts-timeout plus {:?} ({needed:?}): the leader sends only while its lease outlasts the call",
            leader.lease_duration,
            needed.saturating_sub(args.dts_timeout)
        )));
    }
    Ok(Some(leader))
}

/// Where the per-job Leases live (warnings when nowhere: exclusion is then per process only).
fn job_lease_namespace(
    args: &RunArgs,
    env: &Environment,
    selector: &LabelSelector,
    warnings: &mut Vec<String>,
) -> Option<String> {
    let namespace = args
        .leader_election_namespace
        .clone()
        .or(env.own_namespace.clone())
        .or(args.namespace.clone());
    if namespace.is_none() {
        warnings.push(
            "no namespace for the job Leases (no POD_NAMESPACE, no --leader-election-namespace, all namespaces watched): calls for one job are kept apart within this process only".to_string(),
        );
        if !selector.selects_all() {
            warnings.push(
                "--selector without a namespace for the job Leases: other shards' calls for the same job are not kept apart from this one's".to_string(),
            );
        }
    }
    namespace
}

impl RunConfig {
    /// The watch of DtsJobReset resources: only this shard's with `--selector`.
    fn watcher_config(&self) -> watcher::Config {
        let selector = &self.controller.selector;
        let config = watcher::Config::default().page_size(LIST_PAGE_SIZE);
        if selector.selects_all() {
            config
        } else {
            config.labels(&selector.to_string())
        }
    }
}

/// The Kubernetes configuration: `--kubeconfig`, else `KUBECONFIG`, else in-cluster.
async fn kube_config(kubeconfig: Option<&PathBuf>) -> Result<kube::Config, RunError> {
    crate::install_crypto_provider();
    match kubeconfig {
        Some(path) => {
            let what = || format!("--kubeconfig {}", path.display());
            let kc = Kubeconfig::read_from(path).map_err(|e| RunError::config(what(), e))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::config(what(), e))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::config("no Kubernetes configuration", e)),
    }
}

/// Two clients of one configuration: bounded requests (claims, records, leases, Secrets,
/// events) and the watch.
async fn kube_clients(kubeconfig: Option<&PathBuf>) -> Result<(Client, Client), RunError> {
    let config = kube_config(kubeconfig).await?;
    let requests = Client::try_from(crate::kubeapi::request_config(config.clone()))
        .map_err(|e| RunError::config("Kubernetes client", e))?;
    let watch = Client::try_from(crate::kubeapi::watch_config(config))
        .map_err(|e| RunError::config("Kubernetes client", e))?;
    Ok((requests, watch))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs the controller until SIGTERM (graceful) or a lost lease (error).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let env = Environment {
        own_namespace: own_namespace(),
        identity: identity(),
    };
    let config = RunConfig::from_args(&args, &env)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if !config.controller.selector.selects_all() {
        tracing::info!(selector = %config.controller.selector, "watching only resources matching --selector");
    }
    let ready = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(build_context(&config).await?);
    serve_admin(&config, &ctx, ready.clone()).await?;

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let elector = match &config.leader {
        Some(leader) => {
            let elector = LeaderElector::new(ctx.client.clone(), leader.clone());
            let _ = ctx.leader.set(elector.clock());
            if !stand_by(&elector, &ctx.metrics, &ready, &mut shutdown).await {
                return Ok(());
            }
            Some(elector)
        }
        None => None,
    };
    ctx.metrics.leader.set(1);
    act(&config, ctx, elector, ready, shutdown).await
}

/// The clients and shared state of the controller.
async fn build_context(config: &RunConfig) -> Result<Context, RunError> {
    let dts = DtsClient::new(&config.client).map_err(|e| RunError::config("DTS client", e))?;
    let default_credentials = CredentialsProvider::from_env(dts.http().clone())
        .map_err(|e| RunError::config("default credentials", e))?;
    match &default_credentials {
        Some(p) => {
            tracing::info!(kind = p.kind(), scope = ?config.controller.default_scope, "default credentials loaded")
        }
        None => tracing::info!("no default credentials: resources must name a Secret"),
    }
    let (client, watch_client) = kube_clients(config.kubeconfig.as_ref()).await?;
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(config.controller.identity.clone()),
    };
    let job_leases = config.job_lease_namespace.as_deref().map(|ns| {
        JobLeases::new(
            client.clone(),
            ns,
            &config.controller.identity,
            // The job is held from before the read of its state until after the record.
            config.controller.attempt_timeout
                + config.controller.claim_validity()
                + JOB_LEASE_EXTRA,
        )
    });
    let metrics = Arc::new(Metrics::new());
    Ok(Context {
        client: client.clone(),
        watch_client,
        config: config.controller.clone(),
        dts: Arc::new(dts),
        default_credentials,
        recorder: controller::events::Publisher::new(client, reporter),
        bucket: reset_bucket(config).with_gauge(metrics.dts_rate_limit.clone()),
        metrics,
        read_bucket: TokenBucket::new(config.dts_read_qps, config.dts_read_burst),
        sends: Semaphore::new(config.max_concurrent_resets as usize),
        reservations: Default::default(),
        store: OnceLock::new(),
        stopping: AtomicBool::new(false),
        leader: OnceLock::new(),
        job_leases,
        claims: Default::default(),
        unsent: Default::default(),
    })
}

/// The bucket shared by every ResetDtsJob call: adaptive unless `--dts-adaptive-rate=false`.
fn reset_bucket(config: &RunConfig) -> TokenBucket {
    if config.dts_adaptive_rate {
        TokenBucket::adaptive(config.dts_qps, config.dts_burst)
    } else {
        TokenBucket::new(config.dts_qps, config.dts_burst)
    }
}

/// `/metrics`, `/healthz`, `/readyz`; binding errors are configuration errors.
async fn serve_admin(
    config: &RunConfig,
    ctx: &Arc<Context>,
    ready: Arc<AtomicBool>,
) -> Result<(), RunError> {
    let refresh_ctx = ctx.clone();
    admin::serve(
        config.metrics_addr,
        AdminState {
            metrics: ctx.metrics.clone(),
            ready,
            refresh: Arc::new(move || {
                if let Some(store) = refresh_ctx.store.get() {
                    refresh_ctx
                        .metrics
                        .set_phase_counts(&controller::phase_counts(store));
                }
            }),
        },
    )
    .await
    .map(|_| ())
    .map_err(|e| RunError::config(format!("--metrics-addr {}", config.metrics_addr), e))
}

/// Waits for the lease; `false` when shutdown came first. A standby is healthy and ready: it is
/// doing its job by waiting.
async fn stand_by(
    elector: &LeaderElector,
    metrics: &Metrics,
    ready: &AtomicBool,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> bool {
    metrics.leader.set(0);
    ready.store(true, Ordering::SeqCst);
    tracing::info!("standing by for the leader lease");
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown => {
            tracing::info!("shutdown while standing by");
            return false;
        }
    }
    ready.store(false, Ordering::SeqCst);
    true
}

/// Marks the process ready once the watch has synced.
fn report_ready_after_sync(store: Store<DtsJobReset>, ready: Arc<AtomicBool>) {
    tokio::spawn(async move {
        // The store's readiness signal wakes only the last waiter to poll it, and the controller
        // waits on it too: re-poll instead of waiting once.
        loop {
            match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    ready.store(true, Ordering::SeqCst);
                    tracing::info!("watch synced: ready");
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
    });
}

/// Runs the controller until SIGTERM, the lease is lost, or it stops; then drains.
async fn act(
    config: &RunConfig,
    ctx: Arc<Context>,
    elector: Option<LeaderElector>,
    ready: Arc<AtomicBool>,
    mut shutdown: impl std::future::Future<Output = ()> + Unpin,
) -> Result<(), RunError> {
    let api: Api<DtsJobReset> = match &config.watch_namespace {
        Some(ns) => Api::namespaced(ctx.watch_client.clone(), ns),
        None => Api::all(ctx.watch_client.clone()),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The cache keeps only what the controller reads (controller::cache), stripped from each
    // object as it arrives; the initial list comes in pages, so it is never held whole.
    let (store, writer) = reflector::store();
    let watch = watcher(api, config.watcher_config())
        .modify(controller::cache::keep_read_fields)
        .reflect(writer)
        .applied_objects();
    let ctrl = Controller::for_stream(watch, store)
        .with_config(ControllerRuntimeConfig::default().concurrency(
            u16::try_from(config.max_concurrent_resets.saturating_mul(4)).unwrap_or(u16::MAX),
        ))
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        });
    let store = ctrl.store();
    let _ = ctx.store.set(store.clone());
    report_ready_after_sync(store, ready);
    let running = ctrl
        .run(controller::reconcile, controller::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        });
    tokio::pin!(running);
    let lease_lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => futures::future::pending::<()>().await,
        }
    };
    tokio::pin!(lease_lost);

    let lost = tokio::select! {
        _ = &mut running => return Err(RunError::ControllerStopped),
        _ = &mut lease_lost => true,
        _ = &mut shutdown => false,
    };
    // From here nothing new is claimed; answers of calls in flight are still recorded — also
    // when the lease was lost: recording is allowed, claiming is not.
    ctx.stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(());
    if lost {
        ctx.metrics.leader.set(0);
        tracing::error!(timeout = ?config.shutdown_timeout, "leader lease lost: no new claims; recording the answers of calls in flight, then stopping");
    } else {
        tracing::info!(timeout = ?config.shutdown_timeout, "SIGTERM: no new claims; waiting for calls in flight");
    }
    // The lease keeps being renewed while calls drain (unless it is already lost).
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        if lost {
            (&mut running).await;
        } else {
            tokio::select! {
                _ = &mut running => {}
                _ = &mut lease_lost => {
                    ctx.metrics.leader.set(0);
                    tracing::error!("leader lease lost while draining");
                    (&mut running).await;
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown timeout reached with a call in flight: it stays claimed and is reported by the next controller once its claim expires"
        );
    }
    if let Some(e) = &elector
        && !lost
    {
        e.release().await;
    }
    ctx.metrics.leader.set(0);
    tracing::info!("stopped");
    // Reconcile tasks still running past the bound must not delay the exit.
    if drained.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if lost {
        Err(RunError::LeaseLost)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["dts-operator", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            _ => unreachable!(),
        }
    }

    fn env(ns: Option<&str>) -> Environment {
        Environment {
            own_namespace: ns.map(str::to_string),
            identity: "me-1234".into(),
        }
    }

    #[test]
    fn defaults_scope_to_the_own_namespace_or_warn() {
        let c = RunConfig::from_args(&args(&[]), &env(Some("ops"))).unwrap();
        assert_eq!(
            c.controller.default_scope,
            DefaultCredentialsScope::Namespaces(vec!["ops".into()])
        );
        assert!(c.warnings.is_empty());
        assert_eq!(c.controller.identity, "me-1234");
        assert!(c.leader.is_none());
        let c = RunConfig::from_args(&args(&[]), &env(None)).unwrap();
        assert_eq!(
            c.controller.default_scope,
            DefaultCredentialsScope::Namespaces(vec![])
        );
        assert!(
            c.warnings.iter().any(|w| w.contains("default credentials")),
            "{:?}",
            c.warnings
        );
        let c = RunConfig::from_args(
            &args(&["--default-credentials-namespaces", "a, b"]),
            &env(None),
        )
        .unwrap();
        assert!(c.controller.default_scope.allows("b"));
    }

    #[test]
    fn endpoints_and_timeouts() {
        let c = RunConfig::from_args(
            &args(&[
                "--dts-endpoint",
                "http://127.0.0.1:9",
                "--dts-timeout",
                "3s",
                "--endpoint-allowlist",
                "gw.example",
            ]),
            &env(None),
        )
        .unwrap();
        assert_eq!(
            c.controller.dts_endpoint.as_ref().map(|e| e.base_url()),
            Some("http://127.0.0.1:9".to_string())
        );
        assert_eq!(c.controller.attempt_timeout, Duration::from_secs(3));
        assert_eq!(c.client.timeout, Duration::from_secs(3));
        assert!(c.controller.allowlist.allows("gw.example"));
        let e = RunConfig::from_args(&args(&["--dts-endpoint", "http://10.0.0.1"]), &env(None))
            .unwrap_err();
        assert!(e.chain().contains("--dts-endpoint"), "{}", e.chain());
        assert!(e.chain().contains("plain http"), "{}", e.chain());
    }

    #[test]
    fn leader_election_needs_a_namespace() {
        let e = RunConfig::from_args(&args(&["--leader-elect"]), &env(None)).unwrap_err();
        assert!(matches!(e, RunError::Config { .. }), "{e}");
        let c = RunConfig::from_args(&args(&["--leader-elect"]), &env(Some("ops"))).unwrap();
        let l = c.leader.unwrap();
        assert_eq!(
            (l.namespace.as_str(), l.name.as_str()),
            ("ops", "dts-operator")
        );
        assert_eq!(l.identity, "me-1234");
        assert_eq!(l.lease_duration, Duration::from_secs(15));
        let c = RunConfig::from_args(
            &args(&["--leader-elect", "--leader-election-namespace", "elsewhere"]),
            &env(Some("ops")),
        )
        .unwrap();
        assert_eq!(c.leader.unwrap().namespace, "elsewhere");
    }

    /// The leader sends only while its own view of the lease outlasts the call: a lease too
    /// short for the DTS timeout would never send, and is refused at start-up.
    #[test]
    fn a_lease_shorter_than_an_attempt_is_refused() {
        let e = RunConfig::from_args(
            &args(&["--leader-elect", "--dts-timeout", "20s"]),
            &env(Some("ops")),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("--leader-election-lease-duration"),
            "{e}"
        );
        assert!(
            RunConfig::from_args(
                &args(&[
                    "--leader-elect",
                    "--dts-timeout",
                    "20s",
                    "--leader-election-lease-duration",
                    "30s"
                ]),
                &env(Some("ops")),
            )
            .is_ok()
        );
    }

    #[test]
    fn job_leases_live_in_the_operators_namespace() {
        let ns = |a: &[&str], own: Option<&str>| {
            RunConfig::from_args(&args(a), &env(own))
                .unwrap()
                .job_lease_namespace
        };
        assert_eq!(ns(&[], Some("ops")), Some("ops".into()));
        assert_eq!(
            ns(&["--leader-election-namespace", "le"], Some("ops")),
            Some("le".into())
        );
        assert_eq!(ns(&["--namespace", "team-a"], None), Some("team-a".into()));
        let c = RunConfig::from_args(&args(&[]), &env(None)).unwrap();
        assert_eq!(c.job_lease_namespace, None);
        assert!(
            c.warnings.iter().any(|w| w.contains("job Leases")),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.controller.max_clock_skew, Duration::from_secs(30));
    }

    #[test]
    fn the_selector_is_validated_and_sent_canonical() {
        let c = RunConfig::from_args(&args(&[]), &env(Some("ops"))).unwrap();
        assert!(c.controller.selector.selects_all());
        assert_eq!(c.watcher_config().label_selector, None);
        let c = RunConfig::from_args(
            &args(&["--selector", "shard in (b,a), !legacy"]),
            &env(Some("ops")),
        )
        .unwrap();
        assert_eq!(
            c.watcher_config().label_selector.as_deref(),
            Some("shard in (a,b),!legacy")
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let e = RunConfig::from_args(&args(&["--selector", "shard=a,"]), &env(Some("ops")))
            .unwrap_err();
        assert!(matches!(e, RunError::Config { .. }), "{e}");
        assert!(
            e.chain()
                .starts_with("configuration: --selector: invalid label selector \"shard=a,\""),
            "{}",
            e.chain()
        );
        // A shard without a namespace for the job Leases is told it does not coordinate.
        let c = RunConfig::from_args(&args(&["--selector", "shard=a"]), &env(None)).unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("--selector")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn inconsistent_backoff_is_a_configuration_error() {
        let e = RunConfig::from_args(
            &args(&["--backoff-initial", "10s", "--backoff-max", "1s"]),
            &env(None),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--backoff-initial"), "{e}");
    }
}
