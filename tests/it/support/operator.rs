//! Harness for the operator integration tests: the real `dts-operator run` binary as a child
//! process against the real control plane and the in-process DTS simulator, with its log
//! captured; plus the CRD, Secrets, resources and polling helpers.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dts_operator::crd::{DtsJobReset, DtsJobResetSpec};
use dts_simulator::Simulator;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use super::cluster::{apply_crd, cluster};

/// Access key the simulator accepts in these tests.
pub const AK_ID: &str = "LTAI5tOperatorTest";
/// Its secret: must never appear in logs, events, status or metrics.
pub const AK_SECRET: &str = "op-secret-7f3a9c2e1b";

const BIN: &str = env!("CARGO_BIN_EXE_dts-operator");

static CRD: OnceCell<()> = OnceCell::const_new();

/// Applies the DtsJobReset CRD once per test process.
pub async fn ensure_crd() {
    CRD.get_or_init(|| async {
        let client = cluster().await.admin_client();
        apply_crd(&client, &dts_operator::crd::crd(), Duration::from_secs(60)).await;
    })
    .await;
}

/// A test namespace with the CRD applied, and an admin client.
pub async fn setup(prefix: &str) -> (Client, String) {
    ensure_crd().await;
    let c = cluster().await;
    let ns = c.fresh_namespace(prefix).await;
    (c.admin_client(), ns)
}

/// A simulator that accepts the standard AccessKey.
pub async fn simulator() -> Simulator {
    let s = Simulator::start().await;
    s.add_access_key(AK_ID, AK_SECRET);
    s
}

/// A fresh namespace with the standard credentials Secret, and a simulator that accepts it.
pub async fn setup_with_secret(prefix: &str) -> (Client, String, Simulator) {
    let (client, ns) = setup(prefix).await;
    create_default_secret(&client, &ns).await;
    (client, ns, simulator().await)
}

/// A free loopback port (bind, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `dts-operator run` process.
pub struct Operator {
    child: Option<tokio::process::Child>,
    log: Arc<Mutex<String>>,
    /// Port of /metrics, /healthz, /readyz.
    pub metrics_port: u16,
}

/// How to start an operator.
pub struct OperatorOptions {
    /// Namespace to watch (`--namespace`); `None` = all.
    pub namespace: Option<String>,
    /// `--dts-endpoint`.
    pub dts_endpoint: String,
    /// More flags.
    pub args: Vec<String>,
    /// More environment.
    pub env: Vec<(String, String)>,
    /// `RUST_LOG`.
    pub rust_log: String,
    /// `--kubeconfig` (default: the admin kubeconfig of the test cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl OperatorOptions {
    /// Watching `ns`, calls to `endpoint`, fast backoff, short DTS timeout.
    pub fn new(ns: &str, endpoint: &str) -> Self {
        OperatorOptions {
            namespace: Some(ns.to_string()),
            dts_endpoint: endpoint.to_string(),
            args: vec![
                "--backoff-initial".into(),
                "200ms".into(),
                "--backoff-max".into(),
                "1s".into(),
                "--dts-timeout".into(),
                "2s".into(),
                "--shutdown-timeout".into(),
                "10s".into(),
                // Every operator of a test runs on this machine's one clock.
                "--max-clock-skew".into(),
                "2s".into(),
            ],
            env: Vec::new(),
            rust_log: "info,dts_operator=debug".to_string(),
            kubeconfig: None,
        }
    }

    /// Adds flags.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// Sets a flag's value, replacing the default given by [`OperatorOptions::new`] if any.
    pub fn set(mut self, flag: &str, value: &str) -> Self {
        match self.args.iter().position(|a| a == flag) {
            Some(i) => self.args[i + 1] = value.to_string(),
            None => self.args.extend([flag.to_string(), value.to_string()]),
        }
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Runs the operator under libfaketime, its wall clock `offset` (`+15s`, `-15s`, `+2m`)
    /// from the real one while its monotonic clock (tokio's timers) stays the kernel's; see
    /// [`super::faults::faketime_env`]. Panics when libfaketime is not installed.
    pub fn faketime(mut self, offset: &str) -> Self {
        self.env.extend(super::faults::faketime_env(offset));
        self
    }
}

impl Operator {
    /// Starts the binary and waits until /readyz answers 200.
    pub async fn start(opts: OperatorOptions) -> Operator {
        let c = cluster().await;
        let metrics_port = free_port();
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(
                opts.kubeconfig
                    .as_deref()
                    .unwrap_or_else(|| c.kubeconfig_path()),
            )
            .arg("--dts-endpoint")
            .arg(&opts.dts_endpoint)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"));
        if let Some(ns) = &opts.namespace {
            cmd.arg("--namespace").arg(ns);
        }
        cmd.args(&opts.args);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", &opts.rust_log);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("dts-operator starts");
        let log = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let op = Operator {
            child: Some(child),
            log,
            metrics_port,
        };
        op.wait_ready().await;
        op
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        for _ in 0..300 {
            if let Ok(body) = http_get(&url).await
                && body.0 == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator not ready after 30s; log:\n{}", self.logs());
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// GET on the admin server.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(&format!("http://127.0.0.1:{}{path}", self.metrics_port))
            .await
            .expect("admin server answers")
    }

    /// Polls `/metrics` until it holds every needle (events and gauges follow a status change,
    /// they are not part of it); panics with the last scrape after `timeout`.
    pub async fn wait_metrics(&self, needles: &[&str], timeout: Duration) -> String {
        let start = std::time::Instant::now();
        loop {
            let (code, text) = self.admin_get("/metrics").await;
            if code == 200 && needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            if start.elapsed() > timeout {
                let missing: Vec<_> = needles.iter().filter(|n| !text.contains(*n)).collect();
                panic!("metrics lack {missing:?} after {timeout:?}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let pid = child.id().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .expect("exits after SIGTERM within 40s")
            .unwrap();
        status.code()
    }

    /// Waits (bounded) for the process to exit by itself; returns the exit code.
    pub async fn wait_exit(mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {timeout:?}; log:\n{}", self.logs()))
            .unwrap();
        status.code()
    }

    /// SIGKILL: an abrupt crash.
    pub async fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().await.unwrap();
    }
}

/// Minimal HTTP/1.0 GET over a raw socket (tokio has no HTTP client here; keeps tests free of
/// TLS setup): returns status and body.
pub async fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Creates a credentials Secret with the given data.
pub async fn create_secret(client: &Client, ns: &str, name: &str, pairs: &[(&str, &str)]) {
    let data: BTreeMap<String, ByteString> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let s = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .expect("create Secret");
}

/// The standard test Secret (`creds`).
pub async fn create_default_secret(client: &Client, ns: &str) {
    create_secret(
        client,
        ns,
        "creds",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    )
    .await;
}

/// A resource spec for `job` using the `creds` Secret.
pub fn spec(job: &str) -> DtsJobResetSpec {
    serde_json::from_value(serde_json::json!({
        "dtsJobId": job,
        "regionId": "cn-hangzhou",
        "credentials": {"secretRef": {"name": "creds"}}
    }))
    .unwrap()
}

/// Creates a resource.
pub async fn create(client: &Client, ns: &str, name: &str, spec: DtsJobResetSpec) -> DtsJobReset {
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &DtsJobReset::new(name, spec))
        .await
        .expect("create DtsJobReset")
}

/// Polls `name` until `pred` holds; panics with the last state after `timeout`.
pub async fn wait_for(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&DtsJobReset) -> bool,
) -> DtsJobReset {
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), ns);
    let start = std::time::Instant::now();
    loop {
        let obj = api.get_opt(name).await.expect("get");
        if let Some(o) = &obj
            && pred(o)
        {
            return o.clone();
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting on {ns}/{name}; last: {}",
                serde_json::to_string_pretty(&obj).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The phase as a string (`""` when none).
pub fn phase(o: &DtsJobReset) -> String {
    o.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| p.as_str().to_string())
        .unwrap_or_default()
}

/// Waits for a phase.
pub async fn wait_phase(
    client: &Client,
    ns: &str,
    name: &str,
    want: &str,
    timeout: Duration,
) -> DtsJobReset {
    wait_for(client, ns, name, timeout, |o| phase(o) == want).await
}

/// A condition of a resource.
pub fn condition<'a>(
    o: &'a DtsJobReset,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Events about `name` in `ns` (events.k8s.io/v1), as (type, reason, note).
pub async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.expect("list events");
    let mut out: Vec<_> = list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    out.sort_by_key(|e| e.metadata.creation_timestamp.clone());
    out.into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until an event with `reason` exists for `name`.
pub async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Vec<(String, String, String)> {
    let start = std::time::Instant::now();
    loop {
        let evs = events(client, ns, name).await;
        if evs.iter().any(|(_, r, _)| r == reason) {
            return evs;
        }
        if start.elapsed() > timeout {
            panic!("no {reason} event for {ns}/{name} after {timeout:?}; events: {evs:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the built `kubectl` (v1.36.3) against the test cluster.
pub async fn kubectl(args: &[&str]) -> (bool, String, String) {
    let c = cluster().await;
    let out = tokio::process::Command::new(super::cluster::local_bin("kubectl"))
        .arg("--kubeconfig")
        .arg(c.kubeconfig_path())
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
