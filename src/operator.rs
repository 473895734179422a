//! `dts-operator run`: wiring of the controller process — Kubernetes client, DTS client,
//! default credentials, admin server, leader election, the kube-runtime controller, and graceful
//! shutdown (stop claiming, let in-flight calls finish and be recorded, release the lease).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Config as ControllerRuntimeConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Semaphore;

use crate::admin::{self, AdminState};
use crate::aliyun::client::{ClientOptions, DtsClient};
use crate::aliyun::endpoint::{Endpoint, EndpointAllowlist};
use crate::aliyun::provider::CredentialsProvider;
use crate::cli::RunArgs;
use crate::controller::resolve::DefaultCredentialsScope;
use crate::controller::{self, Context, ControllerConfig};
use crate::crd::{DtsJobReset, FIELD_MANAGER};
use crate::leader::{LeaderConfig, LeaderElector};
use crate::metrics::Metrics;
use crate::ratelimit::TokenBucket;

/// Start-up errors: configuration (exit 2) or runtime (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad flags or environment.
    #[error("configuration: {0}")]
    Config(String),
    /// Something failed at run time.
    #[error("{0}")]
    Runtime(String),
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

async fn kube_client(args: &RunArgs) -> Result<Client, RunError> {
    crate::install_crypto_provider();
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| RunError::Config(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::Config(format!("--kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::Config(format!("no Kubernetes configuration: {e}")))?,
    };
    Client::try_from(config).map_err(|e| RunError::Config(format!("Kubernetes client: {e}")))
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
    let own_ns = own_namespace();
    let scope = match (&args.default_credentials_namespaces, &own_ns) {
        (Some(list), _) => DefaultCredentialsScope::parse(list),
        (None, Some(ns)) => DefaultCredentialsScope::Namespaces(vec![ns.clone()]),
        (None, None) => {
            tracing::warn!(
                "the operator's namespace is unknown (no POD_NAMESPACE, no service-account namespace file): no namespace may use its default credentials; set --default-credentials-namespaces"
            );
            DefaultCredentialsScope::Namespaces(Vec::new())
        }
    };
    let dts_endpoint = args
        .dts_endpoint
        .as_deref()
        .map(Endpoint::parse)
        .transpose()
        .map_err(|e| RunError::Config(format!("--dts-endpoint: {e}")))?;
    let backoff = args.backoff.policy().map_err(RunError::Config)?;
    let options = ClientOptions {
        timeout: args.dts_timeout,
        ca_bundle: args.ca_bundle.clone(),
        ..ClientOptions::default()
    };
    let dts = DtsClient::new(&options).map_err(|e| RunError::Config(e.to_string()))?;
    let default_credentials = CredentialsProvider::from_env(dts.http().clone())
        .map_err(|e| RunError::Config(e.to_string()))?;
    match &default_credentials {
        Some(p) => tracing::info!(kind = p.kind(), ?scope, "default credentials loaded"),
        None => tracing::info!("no default credentials: resources must name a Secret"),
    }
    let client = kube_client(&args).await?;
    let identity = identity();
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: ControllerConfig {
            default_region: args.default_region.clone(),
            dts_endpoint,
            allowlist: EndpointAllowlist::parse(&args.endpoint_allowlist),
            default_scope: scope,
            backoff,
            attempt_timeout: args.dts_timeout,
            identity: identity.clone(),
        },
        dts: Arc::new(dts),
        default_credentials,
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        bucket: TokenBucket::new(args.dts_qps, args.dts_burst),
        sends: Semaphore::new(args.max_concurrent_resets as usize),
        inflight: Mutex::default(),
        store: OnceLock::new(),
        stopping: AtomicBool::new(false),
    });

    let refresh_ctx = ctx.clone();
    let refresh_metrics = metrics.clone();
    admin::serve(
        args.metrics_addr,
        AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            refresh: Arc::new(move || {
                if let Some(store) = refresh_ctx.store.get() {
                    refresh_metrics.set_phase_counts(&controller::phase_counts(store));
                }
            }),
        },
    )
    .await
    .map_err(|e| RunError::Config(format!("--metrics-addr {}: {e}", args.metrics_addr)))?;

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    let elector = if args.leader_elect {
        let namespace = args
            .leader_election_namespace
            .clone()
            .or(own_ns.clone())
            .ok_or_else(|| {
                RunError::Config(
                    "--leader-elect needs --leader-election-namespace (the operator's namespace is unknown)".into(),
                )
            })?;
        let elector = LeaderElector::new(
            client.clone(),
            LeaderConfig {
                namespace,
                name: args.leader_election_lease_name.clone(),
                identity: identity.clone(),
                lease_duration: args.leader_election_lease_duration,
            },
        );
        metrics.leader.set(0);
        // A standby is healthy and ready: it is doing its job by waiting.
        ready.store(true, Ordering::SeqCst);
        tracing::info!(identity = %identity, "standing by for the leader lease");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = &mut shutdown => {
                tracing::info!("shutdown while standing by");
                return Ok(());
            }
        }
        ready.store(false, Ordering::SeqCst);
        Some(elector)
    } else {
        None
    };
    metrics.leader.set(1);

    let api: Api<DtsJobReset> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ctrl = Controller::new(api, watcher::Config::default())
        .with_config(ControllerRuntimeConfig::default().concurrency(
            u16::try_from(args.max_concurrent_resets.saturating_mul(4)).unwrap_or(u16::MAX),
        ))
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        });
    let store = ctrl.store();
    let _ = ctx.store.set(store.clone());
    let ready_flag = ready.clone();
    tokio::spawn(async move {
        // The store's readiness signal wakes only the last waiter to poll it, and the controller
        // waits on it too: re-poll instead of waiting once.
        loop {
            match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    ready_flag.store(true, Ordering::SeqCst);
                    tracing::info!("watch synced: ready");
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
    });
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

    tokio::select! {
        _ = &mut running => {
            return Err(RunError::Runtime("the controller stopped unexpectedly".into()));
        }
        _ = &mut lease_lost => {
            metrics.leader.set(0);
            return Err(RunError::Runtime("leader lease lost: stopping at once".into()));
        }
        _ = &mut shutdown => {}
    }
    tracing::info!(timeout = ?args.shutdown_timeout, "SIGTERM: no new claims; waiting for calls in flight");
    ctx.stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(args.shutdown_timeout, &mut running).await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown timeout reached with a call in flight: it stays claimed and the next controller reports it as Unknown"
        );
    }
    if let Some(e) = &elector {
        e.release().await;
    }
    metrics.leader.set(0);
    tracing::info!("stopped");
    // Reconcile tasks still running past the bound must not delay the exit.
    if drained.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
