//! Real faults for the integration tests, from real tools rather than hooks in the product:
//!
//! - **Network**: Shopify's toxiproxy (`toxiproxy-server`, built by `hack/tools/toxiproxy/build.sh`)
//!   as a TCP proxy in front of kube-apiserver (or anything else on loopback), driven through its
//!   HTTP API: latency, black holes, timeouts, connection resets, bandwidth limits, partitions
//!   ([`toxiproxy`], [`Toxiproxy::proxy`], [`Proxy`]); kubeconfigs whose server is the proxy
//!   ([`kubeconfig_through`], [`kubeconfig_file_through`]).
//! - **Clocks**: libfaketime (Debian's `faketime` package) preloaded into a child process shifts
//!   its wall clock and leaves its monotonic clock alone ([`faketime_env`], [`faketime_command`],
//!   and `OperatorOptions::faketime` in `operator.rs`).
//! - **Throttling**: kube-apiserver's own API Priority and Fairness answering 429 to one
//!   ServiceAccount ([`throttle_service_account`]), and a ServiceAccount holding exactly the
//!   operator's permissions to run it with ([`operator_service_account`]); [`burst`] counts the
//!   answers of concurrent requests.
//!
//! Network: loopback only (toxiproxy listens on 127.0.0.1, its upstreams are the test cluster and
//! local servers). One `toxiproxy-server` serves the whole test process; it is stopped when the
//! process exits, however it exits. Only configuration is kept in statics: every `#[tokio::test]`
//! has its own runtime, so HTTP and kube clients are made per call.
#![allow(dead_code)] // a toolbox: not every test uses every helper

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::OnceCell;

use super::cluster::{cluster, install_crypto_provider, local_bin, repo_root, unique_name};

// ---------------------------------------------------------------------------------------------
// toxiproxy

/// Bound of every call to toxiproxy's API: it answers in microseconds on loopback, so a slow
/// answer means it is gone, and a test should fail rather than hang.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The test process's `toxiproxy-server`.
pub struct Toxiproxy {
    api: SocketAddr,
    pid: u32,
    // The write end of the watchdog's stdin. Never written and never closed while the process
    // lives: the kernel closes it when the test process exits, however it exits (a panic, a
    // signal, SIGKILL), and the watchdog then stops the server by its PID.
    _lifeline: Mutex<std::process::ChildStdin>,
}

static TOXIPROXY: OnceCell<Result<Toxiproxy, String>> = OnceCell::const_new();

/// The toxiproxy server of this test process, started on first use: builds (or re-links, 0.05 s
/// when cached) `hack/tools/toxiproxy/build.sh`, starts `.local/bin/toxiproxy-server` on a free
/// loopback port and waits for its API. Panics when it cannot be had.
pub async fn toxiproxy() -> &'static Toxiproxy {
    match TOXIPROXY.get_or_init(Toxiproxy::init).await {
        Ok(t) => t,
        Err(e) => panic!("no toxiproxy for the fault tests: {e}"),
    }
}

impl Toxiproxy {
    async fn init() -> Result<Self, String> {
        install_crypto_provider();
        tokio::task::spawn_blocking(build_toxiproxy)
            .await
            .map_err(|e| format!("hack/tools/toxiproxy/build.sh: {e}"))??;
        let mut last = String::new();
        // A free port can be taken by someone else between our probe and the server's bind:
        // a few tries with fresh ports.
        for _ in 0..3 {
            match Self::start_once().await {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn start_once() -> Result<Self, String> {
        let bin = local_bin("toxiproxy-server");
        let port = free_port();
        let log = repo_root().join(".local/toxiproxy.log");
        // The watchdog: a shell that starts the server in the background, prints its PID, and
        // stops it when its stdin reaches end of file — when this process is gone. A background
        // job of a non-interactive shell reads /dev/null, so only the shell holds the pipe.
        let script = r#"bin=$1; port=$2; log=$3
"$bin" -host 127.0.0.1 -port "$port" >>"$log" 2>&1 &
pid=$!
echo "$pid"
read -r _ || true
kill -TERM "$pid" 2>/dev/null
wait "$pid""#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("toxiproxy-watchdog")
            .arg(&bin)
            .arg(port.to_string())
            .arg(&log)
            // Proxy connections are logged at info level: one line per connection is noise.
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let lifeline = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .map_err(|e| format!("reading the toxiproxy PID: {e}"))?;
        let pid: u32 = line
            .trim()
            .parse()
            .map_err(|_| format!("toxiproxy watchdog printed {line:?}, not a PID"))?;
        // The watchdog is reaped by init once this process is gone; nothing waits for it.
        drop(child);
        let api = SocketAddr::from(([127, 0, 0, 1], port));
        let t = Toxiproxy {
            api,
            pid,
            _lifeline: Mutex::new(lifeline),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((200, _)) = t.call(reqwest::Method::GET, "/version", None).await {
                return Ok(t);
            }
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(format!(
                    "toxiproxy-server (port {port}) exited at start; see {}",
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                // Ours, by the PID we were given: never by name.
                let _ = Command::new("kill").arg(pid.to_string()).status();
                return Err(format!(
                    "toxiproxy-server (port {port}) not answering after 10 s; see {}",
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Address of the HTTP API.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// PID of the `toxiproxy-server` process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A new proxy named `<name_prefix>-<random>`, listening on a free 127.0.0.1 port (chosen by
    /// toxiproxy itself, so no other process can take it first) and forwarding to `upstream`.
    /// Deleted when dropped, which closes its connections.
    pub async fn proxy(&self, name_prefix: &str, upstream: SocketAddr) -> Proxy {
        let name = unique_name(name_prefix);
        let body = json!({
            "name": name,
            "listen": "127.0.0.1:0",
            "upstream": upstream.to_string(),
            "enabled": true,
        });
        let (code, text) = self
            .call(reqwest::Method::POST, "/proxies", Some(body))
            .await
            .unwrap_or_else(|e| panic!("toxiproxy: creating proxy {name}: {e}"));
        assert_eq!(code, 201, "toxiproxy: creating proxy {name}: {text}");
        let created: serde_json::Value = serde_json::from_str(&text).expect("proxy JSON");
        let listen = created["listen"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("toxiproxy: proxy {name} without a listen address: {text}"));
        Proxy {
            api: self.api,
            name,
            listen,
            upstream,
        }
    }

    /// A new proxy in front of the test cluster's kube-apiserver.
    pub async fn apiserver_proxy(&self, name_prefix: &str) -> Proxy {
        self.proxy(name_prefix, apiserver_addr().await).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, String), String> {
        api_call(self.api, method, path, body).await
    }
}

/// The test cluster's kube-apiserver address (from the admin kubeconfig).
pub async fn apiserver_addr() -> SocketAddr {
    let url = &cluster().await.config().cluster_url;
    let host = url.host().expect("kubeconfig server has a host");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    let ip: std::net::IpAddr = if host == "localhost" {
        [127, 0, 0, 1].into()
    } else {
        host.parse()
            .unwrap_or_else(|_| panic!("kube-apiserver host {host:?} is not an IP address"))
    };
    SocketAddr::new(ip, port)
}

async fn api_call(
    api: SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, String), String> {
    install_crypto_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(API_TIMEOUT)
        .timeout(API_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut req = http.request(method, format!("http://{api}{path}"));
    if let Some(body) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
    let code = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("{path}: {e}"))?;
    Ok((code, text))
}

/// Which direction of a proxied connection a toxic acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Client to server: requests. Dropped here, a request never reaches the server.
    Upstream,
    /// Server to client: answers. Dropped here, the server executed the request but the client
    /// never learns the answer.
    Downstream,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

static TOXIC_SEQ: AtomicU64 = AtomicU64::new(0);

/// One toxiproxy proxy. Toxics act on existing connections as well as new ones.
pub struct Proxy {
    api: SocketAddr,
    name: String,
    listen: SocketAddr,
    upstream: SocketAddr,
}

impl Proxy {
    /// Where clients connect (127.0.0.1:<port>).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where it forwards to.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
    }

    /// Its name in toxiproxy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delays every chunk of data on `stream` by `ms` ± `jitter_ms` milliseconds. Returns the
    /// toxic's name (for [`Proxy::remove`]).
    pub async fn latency(&self, stream: Stream, ms: u64, jitter_ms: u64) -> String {
        self.add_toxic(
            "latency",
            stream,
            json!({"latency": ms, "jitter": jitter_ms}),
        )
        .await
    }

    /// A black hole: data on `stream` is dropped (not held: it is gone for good) and the
    /// connection stays open, until the toxic is removed. A request through it hangs until the
    /// client's own timeout; after removal new connections work, while a connection that lost
    /// data is usually unusable (TLS records are missing). Toxiproxy's `timeout` toxic with
    /// `timeout: 0`.
    pub async fn black_hole(&self, stream: Stream) -> String {
        self.add_toxic("timeout", stream, json!({"timeout": 0}))
            .await
    }

    /// Drops the data on `stream`, and closes the connection after `ms` milliseconds.
    pub async fn timeout(&self, stream: Stream, ms: u64) -> String {
        self.add_toxic("timeout", stream, json!({"timeout": ms}))
            .await
    }

    /// Resets connections (TCP RST, "connection reset by peer") `ms` milliseconds after they
    /// carry data on `stream` (0: at once).
    pub async fn reset_peer(&self, stream: Stream, ms: u64) -> String {
        self.add_toxic("reset_peer", stream, json!({"timeout": ms}))
            .await
    }

    /// Limits `stream` to `kb_per_s` kilobytes per second.
    pub async fn bandwidth(&self, stream: Stream, kb_per_s: u64) -> String {
        self.add_toxic("bandwidth", stream, json!({"rate": kb_per_s}))
            .await
    }

    /// Removes one toxic.
    pub async fn remove(&self, toxic: &str) {
        let path = format!("/proxies/{}/toxics/{toxic}", self.name);
        let (code, text) = self
            .call(reqwest::Method::DELETE, &path, None)
            .await
            .unwrap_or_else(|e| panic!("toxiproxy: removing {toxic}: {e}"));
        assert_eq!(code, 204, "toxiproxy: removing {toxic}: {text}");
    }

    /// Removes every toxic of this proxy.
    pub async fn clear(&self) {
        let path = format!("/proxies/{}/toxics", self.name);
        let (code, text) = self
            .call(reqwest::Method::GET, &path, None)
            .await
            .unwrap_or_else(|e| panic!("toxiproxy: listing toxics of {}: {e}", self.name));
        assert_eq!(code, 200, "toxiproxy: listing toxics: {text}");
        let toxics: Vec<serde_json::Value> = serde_json::from_str(&text).expect("toxics JSON");
        for t in toxics {
            if let Some(name) = t["name"].as_str() {
                self.remove(name).await;
            }
        }
    }

    /// A partition: closes every connection through the proxy and stops listening, so new
    /// connections are refused, until [`Proxy::enable`].
    pub async fn disable(&self) {
        self.set_enabled(false).await;
    }

    /// Ends a partition: listens again on the same address.
    pub async fn enable(&self) {
        self.set_enabled(true).await;
    }

    async fn set_enabled(&self, enabled: bool) {
        let path = format!("/proxies/{}", self.name);
        let (code, text) = self
            .call(
                reqwest::Method::PATCH,
                &path,
                Some(json!({"enabled": enabled})),
            )
            .await
            .unwrap_or_else(|e| panic!("toxiproxy: setting enabled={enabled}: {e}"));
        assert_eq!(code, 200, "toxiproxy: setting enabled={enabled}: {text}");
    }

    async fn add_toxic(&self, kind: &str, stream: Stream, attributes: serde_json::Value) -> String {
        let name = format!(
            "{kind}-{}-{}",
            stream.as_str(),
            TOXIC_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = format!("/proxies/{}/toxics", self.name);
        let body = json!({
            "name": name,
            "type": kind,
            "stream": stream.as_str(),
            "toxicity": 1.0,
            "attributes": attributes,
        });
        let (code, text) = self
            .call(reqwest::Method::POST, &path, Some(body))
            .await
            .unwrap_or_else(|e| panic!("toxiproxy: adding {kind} to {}: {e}", self.name));
        assert_eq!(
            code, 200,
            "toxiproxy: adding {kind} to {}: {text}",
            self.name
        );
        name
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, String), String> {
        api_call(self.api, method, path, body).await
    }
}

impl Drop for Proxy {
    // Deleting the proxy closes its connections and frees its port. Drop cannot await, so this
    // is a blocking HTTP/1.0 DELETE over loopback (sub-millisecond), bounded, best effort.
    fn drop(&mut self) {
        let Ok(mut s) = TcpStream::connect_timeout(&self.api, Duration::from_secs(1)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "DELETE /proxies/{} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.name, self.api
        );
        if s.write_all(req.as_bytes()).is_ok() {
            let _ = s.read(&mut [0u8; 256]);
        }
    }
}

fn build_toxiproxy() -> Result<(), String> {
    let script = repo_root().join("hack/tools/toxiproxy/build.sh");
    let out = Command::new(&script)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}); see the messages above",
            script.display(),
            out.status
        ));
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A copy of the test cluster's admin kubeconfig whose server is `proxy`, written into `dir`.
/// The API server's certificate names 127.0.0.1, which the proxy's address is, so TLS verifies
/// as before.
pub async fn kubeconfig_through(proxy: &Proxy, dir: &Path) -> PathBuf {
    let admin = cluster().await.kubeconfig_path().to_path_buf();
    kubeconfig_file_through(proxy, &admin, dir)
}

/// A copy of the kubeconfig `source` (e.g. one of `Cluster::token_kubeconfig`) whose every
/// cluster's server is `proxy` (scheme and path kept), written into `dir` as
/// `kubeconfig-<proxy name>`. Everything else, credentials included, is copied as it is.
pub fn kubeconfig_file_through(proxy: &Proxy, source: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(source)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", source.display()));
    let mut doc: serde_json::Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing kubeconfig {}: {e}", source.display()));
    let clusters = doc["clusters"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("kubeconfig {} has no clusters", source.display()));
    for entry in clusters {
        let server = &mut entry["cluster"]["server"];
        let mut url = url::Url::parse(server.as_str().expect("cluster server"))
            .unwrap_or_else(|e| panic!("cluster server {server}: {e}"));
        url.set_ip_host(proxy.listen_addr().ip()).expect("IP host");
        url.set_port(Some(proxy.listen_addr().port()))
            .expect("port");
        // Url renders an empty path as "/": keep the server as written otherwise.
        *server = json!(url.as_str().trim_end_matches('/'));
    }
    let path = dir.join(format!("kubeconfig-{}", proxy.name()));
    std::fs::write(&path, serde_saphyr::to_string(&doc).unwrap())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// The kube configuration of a kubeconfig file (to adjust — timeouts, `default_retry` — and
/// turn into a client with `Client::try_from`).
pub async fn config_from(kubeconfig: &Path) -> kube::Config {
    install_crypto_provider();
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading {}: {e}", kubeconfig.display()))
}

// ---------------------------------------------------------------------------------------------
// libfaketime

/// Overrides where libfaketime is looked for.
pub const LIBFAKETIME_ENV: &str = "DTS_TEST_LIBFAKETIME";

/// The path of `libfaketime.so.1` (Debian's `libfaketime`, pulled in by the `faketime` package:
/// `/usr/lib/<multiarch>/faketime/libfaketime.so.1`), or `$DTS_TEST_LIBFAKETIME`. Panics, saying
/// how to install it, when it is missing: a clock-skew test must never pass without a skew.
pub fn libfaketime() -> PathBuf {
    if let Some(p) = std::env::var_os(LIBFAKETIME_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{LIBFAKETIME_ENV}={} is not a file",
            p.display()
        );
        return p;
    }
    let mut candidates = vec![
        PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
        PathBuf::from("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
    ];
    if let Ok(dirs) = std::fs::read_dir("/usr/lib") {
        for d in dirs.flatten() {
            candidates.push(d.path().join("faketime/libfaketime.so.1"));
        }
    }
    candidates.push(PathBuf::from("/usr/lib/faketime/libfaketime.so.1"));
    candidates.push(PathBuf::from("/usr/local/lib/faketime/libfaketime.so.1"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libfaketime.so.1 not found under /usr/lib/*/faketime: install Debian's \
                 `faketime` package (`apt-get install faketime`; .ci/run does), or set \
                 {LIBFAKETIME_ENV} to the library"
            )
        })
}

/// The environment that runs a (dynamically linked) program with its wall clock shifted by
/// `offset` — `+15s`, `-15s`, `+2m`, `-1h`, `+1d` (a sign, a number, an optional unit
/// s/m/h/d/y; no unit means seconds) — relative to the real clock, advancing in real time:
///
/// - `LD_PRELOAD=<libfaketime.so.1>`, `FAKETIME=<offset>`: `clock_gettime(CLOCK_REALTIME)`,
///   `gettimeofday`, `time` (Rust's `SystemTime`, jiff, `date`) are shifted;
/// - `FAKETIME_DONT_FAKE_MONOTONIC=1`: `CLOCK_MONOTONIC` (Rust's `Instant`, tokio's timers) stays
///   the kernel's. Without it libfaketime replaces the monotonic clock by a shifted wall-clock
///   value (a jump of decades), which a real skewed machine never shows.
///
/// Child processes inherit the environment, so they see the same shift (an offset, unlike an
/// absolute `@date`, needs no `FAKETIME_DONT_RESET`). Statically linked programs (Go binaries
/// like kube-apiserver, toxiproxy) and setuid ones ignore `LD_PRELOAD`.
pub fn faketime_env(offset: &str) -> Vec<(String, String)> {
    assert!(
        valid_offset(offset),
        "faketime offset {offset:?}: want a sign, a number and an optional unit s/m/h/d/y \
         (e.g. +15s, -15s, +2m)"
    );
    vec![
        ("LD_PRELOAD".into(), libfaketime().display().to_string()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

fn valid_offset(offset: &str) -> bool {
    let Some(rest) = offset.strip_prefix(['+', '-']) else {
        return false;
    };
    let number = rest.trim_end_matches(['s', 'm', 'h', 'd', 'y']);
    rest.len() - number.len() <= 1 && !number.is_empty() && number.parse::<f64>().is_ok()
}

/// `program` to be run with its wall clock shifted by `offset` (see [`faketime_env`]).
pub fn faketime_command(
    offset: &str,
    program: impl AsRef<std::ffi::OsStr>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.envs(faketime_env(offset));
    cmd
}

// ---------------------------------------------------------------------------------------------
// The operator's permissions, and API Priority and Fairness

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// What an operator watching one namespace (and holding its Leases there) may do there. Wider
/// on Leases than `deploy/` (list, watch, delete, any name), so scenarios may add per-job Leases
/// without touching this; the RBAC matrix test in `deploy.rs` checks the shipped rules.
pub fn operator_role_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &["dtsops.io"],
            &["dtsjobresets"],
            &["get", "list", "watch", "delete"],
        ),
        rule(&["dtsops.io"], &["dtsjobresets/status"], &["get", "update"]),
        rule(&[""], &["secrets"], &["get"]),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
    ]
}

/// Creates the ServiceAccount `ns/name`, a Role `name` with [`operator_role_rules`] and its
/// RoleBinding, and returns a kubeconfig (in `dir`, as `dir/kubeconfig`) with a fresh token of
/// that account: run the operator with `--namespace ns` (and `--leader-election-namespace ns`)
/// on it, as a real pod would, so its requests are the account's — for
/// [`throttle_service_account`], and for RBAC to apply.
pub async fn operator_service_account(dir: &Path, ns: &str, name: &str) -> PathBuf {
    let c = cluster().await;
    let admin = c.admin_client();
    c.create_service_account(ns, name).await;
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        rules: Some(operator_role_rules()),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("creating Role {ns}/{name}: {e}"));
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("creating RoleBinding {ns}/{name}: {e}"));
    wait_rbac_effective(&admin, ns, name).await;
    c.token_kubeconfig(dir, ns, name).await
}

// The RBAC authorizer reads Roles and bindings through informers: for a few milliseconds after
// the writes the account is still refused. Ask the authorizer itself (a SubjectAccessReview)
// until it allows, so the first request of a test is not a spurious 403.
async fn wait_rbac_effective(admin: &Client, ns: &str, name: &str) {
    let user = format!("system:serviceaccount:{ns}:{name}");
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}")],
            "resourceAttributes": {
                "namespace": ns, "verb": "update", "group": "dtsops.io",
                "resource": "dtsjobresets", "subresource": "status",
            },
        },
    }))
    .expect("SubjectAccessReview");
    let reviews = Api::<SubjectAccessReview>::all(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap_or_else(|e| panic!("SubjectAccessReview for {user}: {e}"));
        if answer.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Role for {user} is not in effect after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What happens to the throttled account's requests beyond its concurrency limit.
#[derive(Clone, Copy, Debug)]
pub enum ApfLimit {
    /// Answered 429 at once.
    Reject,
    /// Queued (one queue per flow here, the account being one flow) up to `queue_length`
    /// requests, 429 beyond; a queued request waits at most about a quarter of the server's
    /// request timeout (15 s) before its 429.
    Queue { queue_length: i32 },
}

/// How hard [`throttle_service_account`] throttles.
#[derive(Clone, Copy, Debug)]
pub struct ApfOptions {
    /// The priority level's `nominalConcurrencyShares`. Its seats are
    /// ceil(600 × shares / (245 + shares)) with this server's defaults (400 + 200 in flight,
    /// built-in levels' shares summing to 245): 1 → 3 seats, 10 → 24. 0 is the server's
    /// "jail": it still runs one request at a time (sequential requests pass, concurrent ones
    /// are refused), and takes no seat from the other levels.
    pub shares: i32,
    /// Beyond the seats.
    pub limit: ApfLimit,
}

impl Default for ApfOptions {
    /// One seat, reject the rest: any two concurrent requests of the account, one gets 429.
    fn default() -> Self {
        ApfOptions {
            shares: 0,
            limit: ApfLimit::Reject,
        }
    }
}

/// A PriorityLevelConfiguration and a FlowSchema that classify one ServiceAccount's requests
/// (and only its: the admin is `system:masters`, exempt) into a tiny priority level. Remove
/// with [`ApfThrottle::remove`]; left behind (a failed test), the default one (0 shares, no
/// borrowing) takes nothing from other levels and matches only that test's account.
pub struct ApfThrottle {
    name: String,
    namespace: String,
    service_account: String,
    flow_schema_uid: String,
    priority_level_uid: String,
}

/// The response headers kube-apiserver puts on every answer classified by APF.
pub const PF_FLOW_SCHEMA_HEADER: &str = "x-kubernetes-pf-flowschema-uid";
pub const PF_PRIORITY_LEVEL_HEADER: &str = "x-kubernetes-pf-prioritylevel-uid";

/// Throttles the ServiceAccount `ns/sa` with kube-apiserver's API Priority and Fairness and
/// waits (up to 30 s) until the server classifies its requests so. Its concurrent requests then
/// get real 429s (`Retry-After` set) from the server, on every verb and path.
pub async fn throttle_service_account(ns: &str, sa: &str, opts: ApfOptions) -> ApfThrottle {
    let admin = cluster().await.admin_client();
    let name = unique_name(&format!("it-throttle-{sa}"));
    let limit_response = match opts.limit {
        ApfLimit::Reject => json!({"type": "Reject"}),
        ApfLimit::Queue { queue_length } => json!({
            "type": "Queue",
            "queuing": {"queues": 1, "handSize": 1, "queueLengthLimit": queue_length},
        }),
    };
    let plc: PriorityLevelConfiguration = serde_json::from_value(json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": opts.shares,
                // Neither lends nor borrows seats: the limit is the level's own.
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": limit_response,
            },
        },
    }))
    .expect("PriorityLevelConfiguration");
    let plc = Api::<PriorityLevelConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &plc)
        .await
        .unwrap_or_else(|e| panic!("creating PriorityLevelConfiguration {name}: {e}"));
    let fs: FlowSchema = serde_json::from_value(json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": name},
            // Before the built-in `service-accounts` (9000) and `global-default` (9900); the
            // subject makes it match this account only.
            "matchingPrecedence": 500,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{
                    "kind": "ServiceAccount",
                    "serviceAccount": {"namespace": ns, "name": sa},
                }],
                "resourceRules": [{
                    "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                    "namespaces": ["*"], "clusterScope": true,
                }],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    }))
    .expect("FlowSchema");
    let fs = Api::<FlowSchema>::all(admin)
        .create(&PostParams::default(), &fs)
        .await
        .unwrap_or_else(|e| panic!("creating FlowSchema {name}: {e}"));
    let throttle = ApfThrottle {
        name,
        namespace: ns.into(),
        service_account: sa.into(),
        flow_schema_uid: fs.metadata.uid.expect("uid"),
        priority_level_uid: plc.metadata.uid.expect("uid"),
    };
    throttle.wait_classified(true).await;
    throttle
}

impl ApfThrottle {
    /// The PriorityLevelConfiguration's and FlowSchema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The priority level's UID, as in the `X-Kubernetes-PF-PriorityLevel-UID` header.
    pub fn priority_level_uid(&self) -> &str {
        &self.priority_level_uid
    }

    /// Deletes the FlowSchema and the priority level and waits (up to 30 s) until the server no
    /// longer classifies the account's requests into them.
    pub async fn remove(self) {
        let admin = cluster().await.admin_client();
        Api::<FlowSchema>::all(admin.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting FlowSchema {}: {e}", self.name));
        Api::<PriorityLevelConfiguration>::all(admin)
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting PriorityLevelConfiguration {}: {e}", self.name));
        self.wait_classified(false).await;
    }

    // The APF configuration reaches the request filter through an informer: probe, as the
    // account (impersonation is resolved before classification), until the answer's FlowSchema
    // header says what we want. One sequential request always fits in one seat.
    async fn wait_classified(&self, by_us: bool) {
        let client = cluster()
            .await
            .service_account_client(&self.namespace, &self.service_account);
        let path = format!("/api/v1/namespaces/{}/serviceaccounts", self.namespace);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answers = burst(&client, &path, 1).await;
            let ours = answers[0].flow_schema_uid.as_deref() == Some(&self.flow_schema_uid);
            if ours == by_us {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "APF throttle {}: requests of {}/{} {} classified by it after 30 s: {answers:?}",
                self.name,
                self.namespace,
                self.service_account,
                if by_us { "not yet" } else { "still" },
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One answer of a [`burst`].
#[derive(Clone, Debug)]
pub struct BurstAnswer {
    /// HTTP status; 0 when no answer came (transport error or the 10 s bound).
    pub status: u16,
    pub flow_schema_uid: Option<String>,
    pub priority_level_uid: Option<String>,
    pub retry_after: Option<String>,
}

/// Sends `n` GETs of `path` at once through `client` (raw: kube's retry layer, if the client
/// has one, may still retry 429s — make the client from a config with `default_retry = false`)
/// and returns each answer's status and APF headers, each request bounded by 10 s.
pub async fn burst(client: &Client, path: &str, n: usize) -> Vec<BurstAnswer> {
    let one = || async {
        let req = http::Request::get(path)
            .body(kube::client::Body::empty())
            .expect("request");
        match tokio::time::timeout(Duration::from_secs(10), client.send(req)).await {
            Ok(Ok(resp)) => {
                let header = |h: &str| {
                    resp.headers()
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                BurstAnswer {
                    status: resp.status().as_u16(),
                    flow_schema_uid: header(PF_FLOW_SCHEMA_HEADER),
                    priority_level_uid: header(PF_PRIORITY_LEVEL_HEADER),
                    retry_after: header("retry-after"),
                }
            }
            _ => BurstAnswer {
                status: 0,
                flow_schema_uid: None,
                priority_level_uid: None,
                retry_after: None,
            },
        }
    };
    futures::future::join_all((0..n).map(|_| one())).await
}

/// Waits (up to 30 s) until a LIST of `path` answers 200 to the admin without retries. Right
/// after a CRD is Established, kube-apiserver answers its LISTs with 429 "storage is
/// (re)initializing" (`Retry-After: 1`) until its watch cache is filled; kube's default retry
/// layer hides that, a client without it (as the fault tests use) sees it. Call this before
/// counting 429s so only the throttle's are counted.
pub async fn wait_listable(path: &str) {
    let mut config = cluster().await.config();
    config.default_retry = false;
    let client = Client::try_from(config).expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = burst(&client, path, 1).await.remove(0);
        if answer.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "LIST {path} still answers {} after 30 s",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many answers of a burst had each status.
pub fn status_counts(answers: &[BurstAnswer]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.status).or_insert(0) += 1;
    }
    counts
}
