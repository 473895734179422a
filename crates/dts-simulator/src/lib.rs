//! A local simulator of the Alibaba Cloud DTS gateway (`ResetDtsJob`, API 2020-01-01) and of
//! STS `AssumeRoleWithOIDC`, for tests and the demo. **It is not the real service.**
//!
//! It verifies V1 (`HMAC-SHA1`) and V3 (`ACS3-HMAC-SHA256`) signatures the way the real gateway
//! does — timestamp skew, nonce replay, access keys, security tokens — with an implementation that
//! is independent of the operator's signer, then answers `ResetDtsJob` from a per-job script of
//! [`Answer`]s and records every request as a [`RecordedCall`].
//!
//! Modules:
//! - [`verify`]: pure signature algorithms and request authentication (no I/O, clock passed in).
//! - [`answer`]: scripted answers and the exact response bodies (pure).
//! - [`flow`]: the server-side rate limit per AccessKeyId and action (pure).
//! - [`record`]: the call record tests assert on (pure data).
//! - `server`: the gateway handler — decision order, execution of answers, logging.
//! - `sts`: `AssumeRoleWithOIDC` — validation, issuing and registering temporary keys.
//! - [`oidc`]: RS256 JWT checks of OIDC tokens against a provider's JWKS (pure).
//! - [`tls`]: the https server identity (PEM certificate chain and key).
//! - `admin`: the `/_simulator/*` HTTP endpoints for out-of-process use.
//! - `state`: the shared mutable state. `net`: the listener (plain or TLS) with per-connection
//!   kill switch.
//!
//! ```no_run
//! # async fn demo() {
//! use dts_simulator::{Answer, Simulator};
//! let sim = Simulator::start().await;
//! sim.add_access_key("testid", "testsecret");
//! sim.script("dtsjob1", [Answer::throttling(), Answer::Success]);
//! // ... point the client at sim.url() ...
//! assert_eq!(sim.executed_calls("dtsjob1").len(), 2);
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
pub mod flow;
pub mod jobs;
pub mod oidc;
pub mod record;
pub mod tls;
pub mod verify;

mod admin;
mod net;
mod server;
mod state;
mod sts;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use answer::Answer;
pub use flow::RateLimit;
pub use jobs::Job;
pub use oidc::OidcProvider;
pub use record::{RecordedCall, Style};
pub use server::{DESCRIBE_ACTION, DTS_ACTION, DTS_VERSION};
pub use sts::{ACTION as STS_ACTION, VERSION as STS_VERSION};
pub use tls::{TlsError, TlsIdentity};

use net::{ConnInfo, SimListener};
use state::Shared;
use verify::KeyRecord;

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen. Default `127.0.0.1:0` (any free port). A loopback address, unless
    /// `allow_non_loopback` is set.
    pub bind: SocketAddr,
    /// Largest accepted clock skew of a request's timestamp. Default 15 minutes, like the gateway.
    pub max_skew: Duration,
    /// Validity of STS credentials issued by `AssumeRoleWithOIDC`. Default `None`: the request's
    /// `DurationSeconds` (3600 when absent).
    pub sts_validity: Option<Duration>,
    /// Serve https with this identity instead of plain http. Default `None`.
    pub tls: Option<TlsIdentity>,
    /// Allow `bind` to be a specific non-loopback address of this machine — such as the bridge
    /// of a local test node, so that Pods reach the simulator as a private gateway. Only with
    /// `tls` (no secret crosses a network in the clear), and never the unspecified address
    /// (`0.0.0.0`, `::`: every interface). Default `false`.
    pub allow_non_loopback: bool,
    /// The OIDC provider the simulated STS trusts. `None` (the default): any non-empty token is
    /// accepted (or only registered ones, see [`Simulator::add_valid_oidc_token`]); set: a token
    /// must also be an RS256 JWT signed by one of its keys, for its audience, not expired.
    pub oidc: Option<OidcProvider>,
    /// Server-side flow control per (AccessKeyId, action): authenticated calls above it are
    /// answered HTTP 400 `Throttling.User` and not executed (see [`Simulator::set_rate_limit`]).
    /// Default `None`: no limit.
    pub rate_limit: Option<RateLimit>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_skew: Duration::from_secs(15 * 60),
            sts_validity: None,
            tls: None,
            allow_non_loopback: false,
            oidc: None,
            rate_limit: None,
        }
    }
}

impl SimConfig {
    /// Whether `bind` is acceptable under these settings.
    fn check_bind(&self) -> Result<(), StartError> {
        let ip = self.bind.ip();
        if ip.is_loopback() {
            return Ok(());
        }
        if ip.is_unspecified() || !self.allow_non_loopback {
            return Err(StartError::NotLoopback(self.bind));
        }
        if self.tls.is_none() {
            return Err(StartError::PlainBeyondLoopback(self.bind));
        }
        Ok(())
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The bind address is not loopback (and not allowed, or every interface).
    #[error(
        "refusing to listen on {0}: the simulator only listens on loopback addresses, or on one allowed address of this machine"
    )]
    NotLoopback(SocketAddr),
    /// A non-loopback address was allowed, but without TLS.
    #[error(
        "refusing to listen on {0} without TLS: beyond loopback the simulator serves https only"
    )]
    PlainBeyondLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A running simulator. Cheap to clone; the server stops when the last clone is dropped or on
/// [`Simulator::shutdown`].
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Handle>,
}

struct Handle {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Graceful: idle keep-alive connections close, held requests give up.
        self.shared.shutdown.send_replace(true);
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts on `127.0.0.1:0` with the default configuration (no access keys registered).
    pub async fn start() -> Simulator {
        Simulator::start_with(SimConfig::default()).await
    }

    /// Starts with `config`. Panics if it cannot listen (tests want a loud failure); see
    /// [`Simulator::try_start_with`].
    pub async fn start_with(config: SimConfig) -> Simulator {
        match Simulator::try_start_with(config).await {
            Ok(sim) => sim,
            Err(e) => panic!("dts-simulator: {e}"),
        }
    }

    /// Starts with `config`, reporting failures.
    pub async fn try_start_with(config: SimConfig) -> Result<Simulator, StartError> {
        config.check_bind()?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let shared = Arc::new(Shared::new(config.max_skew, config.sts_validity));
        if let Some(provider) = config.oidc.clone() {
            shared.set_oidc_provider(provider);
        }
        shared.set_rate_limit(config.rate_limit);
        let app = admin::routes()
            .fallback(server::gateway)
            .with_state(shared.clone());
        let stop = shared.clone();
        let tls = config.tls.is_some();
        let listener = match &config.tls {
            None => SimListener::Plain(listener),
            Some(identity) => {
                SimListener::tls(listener, identity.config.clone()).map_err(|source| {
                    StartError::Bind {
                        addr: config.bind,
                        source,
                    }
                })?
            }
        };
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ConnInfo>(),
        )
        .with_graceful_shutdown(async move { stop.shutting_down().await });
        let task = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        Ok(Simulator {
            inner: Arc::new(Handle {
                addr,
                tls,
                shared,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// `http://127.0.0.1:PORT`, or `https://ADDR:PORT` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.inner.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.inner.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Registers a plain AccessKey (no security token allowed).
    pub fn add_access_key(&self, id: &str, secret: &str) {
        self.shared().add_key(
            id,
            KeyRecord {
                secret: secret.to_owned(),
                security_token: None,
                expires_at: None,
            },
        );
    }

    /// Registers an STS AccessKey that must be accompanied by `token`.
    pub fn add_sts_key(&self, id: &str, secret: &str, token: &str) {
        self.shared().add_key(
            id,
            KeyRecord {
                secret: secret.to_owned(),
                security_token: Some(token.to_owned()),
                expires_at: None,
            },
        );
    }

    /// Later calls carrying `token` get 403 `InvalidSecurityToken.Expired`.
    pub fn expire_token(&self, token: &str) {
        self.shared().expire_token(token);
    }

    /// Appends answers to the queue for `dts_job_id` (consumed first in, first out by executed
    /// calls; when empty, the default answer is used).
    pub fn script(&self, dts_job_id: &str, answers: impl IntoIterator<Item = Answer>) {
        self.shared().script(dts_job_id, answers);
    }

    /// Answers still queued for `dts_job_id`.
    pub fn pending_answers(&self, dts_job_id: &str) -> usize {
        self.shared().pending_answers(dts_job_id)
    }

    /// The answer used when a job's queue is empty (initially [`Answer::Success`]).
    pub fn set_default_answer(&self, answer: Answer) {
        self.shared().set_default_answer(answer);
    }

    /// Sets the server-side limit from now on (`None` lifts it); every bucket starts full.
    /// Authenticated calls above it get HTTP 400 `Throttling.User` (no retry hint), are not
    /// executed (never among [`executed_calls`](Self::executed_calls)) and are recorded with
    /// [`RecordedCall::throttled`] set (see [`throttled_calls`](Self::throttled_calls)).
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared().set_rate_limit(limit);
    }

    /// Calls refused by the server-side limit, in order.
    pub fn throttled_calls(&self) -> Vec<RecordedCall> {
        self.calls().into_iter().filter(|c| c.throttled).collect()
    }

    /// Opens gate `name`: held requests proceed, and later ones pass straight through.
    pub fn open_gate(&self, name: &str) {
        self.shared().open_gate(name);
    }

    /// Closes gate `name` again (later requests at it are held).
    pub fn close_gate(&self, name: &str) {
        self.shared().close_gate(name);
    }

    /// Number of requests currently held at gate `name`.
    pub fn gate_waiters(&self, name: &str) -> usize {
        self.shared().gate_waiters(name)
    }

    /// Waits until at least `n` requests are held at gate `name`. No timeout: wrap it in
    /// `tokio::time::timeout` in tests.
    pub async fn wait_for_gate_waiters(&self, name: &str, n: usize) {
        self.shared().wait_for_gate_waiters(name, n).await;
    }

    /// Every request received, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared().calls()
    }

    /// Forgets the recorded calls (the nonce memory and in-flight maxima stay).
    pub fn clear_calls(&self) {
        self.shared().clear_calls();
    }

    /// Executed calls (passed verification, reached ResetDtsJob) for `dts_job_id`, in order.
    pub fn executed_calls(&self, dts_job_id: &str) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.executed
                    && c.action.as_deref() == Some(DTS_ACTION)
                    && c.dts_job_id.as_deref() == Some(dts_job_id)
            })
            .collect()
    }

    /// Every `ResetDtsJob` request received, in order (refused ones too; reads never).
    pub fn reset_calls(&self) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.action.as_deref() == Some(DTS_ACTION))
            .collect()
    }

    /// `DescribeDtsJobDetail` calls for `dts_job_id` that passed authentication, in order
    /// (reads; never counted among [`executed_calls`](Self::executed_calls)).
    pub fn read_calls(&self, dts_job_id: &str) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.action.as_deref() == Some(DESCRIBE_ACTION)
                    && c.dts_job_id.as_deref() == Some(dts_job_id)
                    && c.http_status != 0
                    && !c.outcome.starts_with("Signature")
                    && !c.outcome.starts_with("Invalid")
            })
            .collect()
    }

    /// Job `id` as DTS shows it now (`None`: no such job). A job nobody set exists as
    /// `Synchronizing` and configured.
    pub fn job(&self, id: &str) -> Option<Job> {
        self.shared().job(id, self.shared().now())
    }

    /// Sets job `id`'s state; `None` makes DTS know no such job (`Forbidden.InstanceNotFound`).
    pub fn set_job(&self, id: &str, job: Option<Job>) {
        self.shared().set_job(id, job);
    }

    /// How long an executed reset takes to show `NotConfigured` (default: at once).
    pub fn set_reset_delay(&self, delay: Duration) {
        self.shared().set_reset_delay(delay);
    }

    /// Queues answers for reads of `dts_job_id` (`Success`: the job's state, the default).
    pub fn script_reads(&self, dts_job_id: &str, answers: impl IntoIterator<Item = Answer>) {
        self.shared().script_reads(dts_job_id, answers);
    }

    /// STS `AssumeRoleWithOIDC` calls, in order (accepted or not).
    pub fn sts_calls(&self) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.style == Style::StsOidc)
            .collect()
    }

    /// The most executed calls ever in flight at once for (`region_id`, `dts_job_id`); a call
    /// without `RegionId` counts under `""`.
    pub fn max_in_flight(&self, region_id: &str, dts_job_id: &str) -> usize {
        self.shared().max_in_flight(region_id, dts_job_id)
    }

    /// Executed calls in flight right now for (`region_id`, `dts_job_id`).
    pub fn in_flight(&self, region_id: &str, dts_job_id: &str) -> usize {
        self.shared().in_flight(region_id, dts_job_id)
    }

    /// Validity of credentials issued by STS from now on, overriding `DurationSeconds`.
    pub fn set_sts_validity(&self, secs: u64) {
        self.shared().set_sts_validity(Duration::from_secs(secs));
    }

    /// Registers a valid OIDC token; once any is registered, only registered tokens are accepted
    /// (before that, any non-empty token is).
    pub fn add_valid_oidc_token(&self, token: &str) {
        self.shared().add_valid_oidc_token(token);
    }

    /// Makes the simulated STS trust `provider` from now on (see [`SimConfig::oidc`]).
    pub fn set_oidc_provider(&self, provider: OidcProvider) {
        self.shared().set_oidc_provider(provider);
    }

    /// Shifts the simulator's clock (e.g. to make the client's timestamps look skewed).
    pub fn set_clock_offset(&self, offset: jiff::SignedDuration) {
        self.shared().set_clock_offset(offset);
    }

    /// Stops accepting, releases held requests (their connections are closed unanswered) and
    /// waits up to 10 s for open connections to finish.
    pub async fn shutdown(self) {
        self.inner.shared.shutdown.send_replace(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(10), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}
