//! Benchmark of the controller (numbers, not assertions): the time for a fleet of resources
//! created at once to reach `Succeeded`, the API-server requests and DTS calls per request, the
//! resident memory idle, after the initial list and with the fleet held, and the latency of one
//! request on an idle operator.
//!
//! Runs the real `dts-operator run` binary against the cluster in `KUBECONFIG` (see
//! `hack/bench-operator.sh`) and an in-process DTS simulator that answers at once; the operator's
//! DTS rate limits are off (`--dts-qps 0 --dts-read-qps 0`), so what is measured is the operator and the API server.
//!
//! ```text
//! cargo run --release --example bench_operator -- <path/to/dts-operator> [N=10000] [LATENCY_N=200]
//! ```
//!
//! In order: idle RSS; `LATENCY_N` resources created one after the other, each once the previous
//! one is `Succeeded` (create → `Succeeded` as seen by a watch); `N` resources created at once
//! (time until all are `Succeeded`, kube-apiserver's own `apiserver_request_total` before and
//! after, the simulator's calls); RSS held; then a restart of the operator with the fleet in place
//! (RSS right after its initial list, then steady, and its peak). `BENCH_OPERATOR_LOG=<file>`
//! keeps the operator's log (at `RUST_LOG`, default debug) to see where a request's time goes.

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dts_operator::crd::{DtsJobReset, Phase};
use dts_simulator::Simulator;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

mod common;
use common::{install_crd, namespace_with_secret, spec};

/// Concurrent creates of the fleet ("at once", bounded so the client does not open thousands of
/// streams).
const CREATE_CONCURRENCY: usize = 64;
/// How long the RSS is left to settle before "held" and "steady" are read.
const SETTLE: Duration = Duration::from_secs(15);

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A running `dts-operator run`, its admin port, and its memory as `/proc` shows it.
struct Operator {
    child: tokio::process::Child,
    pid: u32,
    admin: String,
}

impl Operator {
    async fn start(bin: &str, kubeconfig: &str, ns: &str, sim: &Simulator) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let admin = format!("127.0.0.1:{port}");
        // BENCH_OPERATOR_LOG=<file>: the operator's log goes there, at RUST_LOG (default debug).
        let log = std::env::var_os("BENCH_OPERATOR_LOG").map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("BENCH_OPERATOR_LOG")
        });
        let level = match &log {
            Some(_) => std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
            None => "warn".into(),
        };
        let child = tokio::process::Command::new(bin)
            .args([
                "run",
                "--kubeconfig",
                kubeconfig,
                "--namespace",
                ns,
                "--dts-endpoint",
                &sim.url(),
                "--metrics-addr",
                &admin,
                "--dts-qps",
                "0",
                "--dts-read-qps",
                "0",
            ])
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, Stdio::from))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        Operator { child, pid, admin }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Waits until `/readyz` answers 200: the initial list is in the operator's cache.
    async fn wait_ready(&self) -> Duration {
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            let url = format!("http://{}/readyz", self.admin);
            if let Ok(r) = http.get(&url).send().await
                && r.status() == 200
            {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(600), "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        // SIGTERM: the operator drains and exits on its own.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// kube-apiserver's `apiserver_request_total`, summed over codes: (verb, resource, subresource)
/// → count.
type RequestCounts = BTreeMap<(String, String, String), f64>;

async fn apiserver_requests(client: &Client) -> RequestCounts {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .expect("kube-apiserver /metrics (admin kubeconfig)");
    let mut counts = RequestCounts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        *counts
            .entry((label("verb"), label("resource"), label("subresource")))
            .or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// Watches the namespace and sends (name, phase, when seen) for every object event.
fn watch_phases(
    api: Api<DtsJobReset>,
) -> mpsc::UnboundedReceiver<(String, Option<Phase>, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(ev)) = stream.try_next().await {
            if let WatchEvent::Apply(o) = ev {
                let phase = o.status.as_ref().and_then(|s| s.phase);
                if tx.send((o.name_any(), phase, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn create(api: &Api<DtsJobReset>, name: &str, job: &str) {
    api.create(&PostParams::default(), &DtsJobReset::new(name, spec(job)))
        .await
        .unwrap();
}

async fn setup(client: &Client) -> (String, Simulator) {
    install_crd(client).await;
    let ns = namespace_with_secret(client, "bench").await;
    let sim = Simulator::start().await;
    sim.add_access_key("benchid", "benchsecret");
    (ns, sim)
}

/// `LATENCY_N` requests one after the other: create → `Succeeded` as the watch shows it.
async fn sequential_latency(
    api: &Api<DtsJobReset>,
    phases: &mut mpsc::UnboundedReceiver<(String, Option<Phase>, Instant)>,
    n: usize,
) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("lat-{i:04}");
        let created = Instant::now();
        create(api, &name, &format!("lat-job-{i}")).await;
        loop {
            let (seen, phase, at) = tokio::time::timeout(Duration::from_secs(60), phases.recv())
                .await
                .expect("a Succeeded within 60 s")
                .expect("watch running");
            if seen == name && phase == Some(Phase::Succeeded) {
                lat.push(at.duration_since(created));
                break;
            }
        }
    }
    lat.sort();
    lat
}

/// `n` resources created at once; returns (time until all were created, until all Succeeded).
async fn fleet(
    api: &Api<DtsJobReset>,
    phases: &mut mpsc::UnboundedReceiver<(String, Option<Phase>, Instant)>,
    n: usize,
) -> (Duration, Duration) {
    let started = Instant::now();
    let creating = {
        let api = api.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..n)
                .for_each_concurrent(CREATE_CONCURRENCY, |i| {
                    let api = api.clone();
                    async move { create(&api, &format!("r{i:05}"), &format!("job-{i}")).await }
                })
                .await;
            started.elapsed()
        })
    };
    let mut done: HashSet<String> = HashSet::with_capacity(n);
    let mut last = started;
    while done.len() < n {
        let (name, phase, at) = tokio::time::timeout(Duration::from_secs(600), phases.recv())
            .await
            .expect("progress within 600 s")
            .expect("watch running");
        if phase == Some(Phase::Succeeded) && name.starts_with('r') && done.insert(name) {
            last = at;
        }
    }
    (creating.await.unwrap(), last.duration_since(started))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("path to the dts-operator binary")
        .clone();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let latency_n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
    dts_operator::install_crypto_provider();
    let client = Client::try_default().await.expect("KUBECONFIG");
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let (ns, sim) = setup(&client).await;
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    let mut phases = watch_phases(api.clone());

    let op = Operator::start(&bin, &kubeconfig, &ns, &sim).await;
    op.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle, _) = op.memory();

    let lat = sequential_latency(&api, &mut phases, latency_n).await;

    let before = apiserver_requests(&client).await;
    let calls_before = sim.calls().len();
    let resets_before = sim.reset_calls().len();
    let (created_in, succeeded_in) = fleet(&api, &mut phases, n).await;
    // Events are published after the status says it: let the last ones land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = apiserver_requests(&client).await;
    let calls = sim.calls().len() - calls_before;
    let resets = sim.reset_calls().len() - resets_before;
    tokio::time::sleep(SETTLE).await;
    let (held, peak) = op.memory();
    op.stop().await;

    // A restart with the fleet in place: the initial list of everything held.
    let op = Operator::start(&bin, &kubeconfig, &ns, &sim).await;
    let synced_in = op.wait_ready().await;
    let (after_list, _) = op.memory();
    tokio::time::sleep(SETTLE).await;
    let (restart_steady, restart_peak) = op.memory();
    op.stop().await;
    let total = n + latency_n;

    println!(
        "dts-operator controller benchmark ({bin}), --dts-qps 0 --dts-read-qps 0, zero-latency simulator"
    );
    println!(
        "  fleet: {n} created at once ({CREATE_CONCURRENCY} concurrent creates, done in {:.1} s) → all Succeeded in {:.1} s ({:.0}/s)",
        created_in.as_secs_f64(),
        succeeded_in.as_secs_f64(),
        n as f64 / succeeded_in.as_secs_f64()
    );
    println!(
        "  DTS calls per request (simulator): {:.2} ResetDtsJob, {:.2} all actions",
        resets as f64 / n as f64,
        calls as f64 / n as f64
    );
    println!(
        "  kube-apiserver requests per request (apiserver_request_total, delta over the fleet):"
    );
    for (key, count) in &after {
        let delta = count - before.get(key).copied().unwrap_or(0.0);
        let (verb, resource, sub) = key;
        if delta >= n as f64 / 100.0 && !matches!(verb.as_str(), "WATCH" | "LIST") {
            let what = if sub.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{sub}")
            };
            println!("    {verb:<7} {what:<24} {:.2}", delta / n as f64);
        }
    }
    println!(
        "  RSS idle (no resources):                   {:.1} MiB",
        mib(idle)
    );
    println!(
        "  RSS held, {total} Succeeded, after the fleet: {:.1} MiB (peak VmHWM {:.1} MiB)",
        mib(held),
        mib(peak)
    );
    println!(
        "  restart with {total} held: initial list synced in {:.2} s; RSS right after it {:.1} MiB, steady {:.1} MiB after {} s (peak VmHWM {:.1} MiB)",
        synced_in.as_secs_f64(),
        mib(after_list),
        mib(restart_steady),
        SETTLE.as_secs(),
        mib(restart_peak)
    );
    println!(
        "  one request on an idle operator, create → Succeeded over {latency_n} sequential: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap()),
    );
    println!("  namespace {ns} left in place (no controller-manager deletes namespaces)");
}
