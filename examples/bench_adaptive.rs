//! Benchmark of the adaptive rate toward DTS (numbers, not assertions): N requests created at
//! once against a DTS simulator that allows SERVER_RATE calls/s per access key (token bucket,
//! burst one second's worth), with `--dts-qps QPS` — once with `--dts-adaptive-rate=true`, once
//! with `=false`.
//!
//! Runs the real `dts-operator run` binary against the cluster in `KUBECONFIG` (see
//! `hack/bench-adaptive.sh`) and an in-process simulator. Operator flags: `--dts-qps QPS
//! --dts-burst 10`, backoff at its defaults (`--backoff-initial 1s --backoff-max 5m`), the
//! default `--max-concurrent-resets 8` and `backoffLimit` 6, and `--verify-window 0`: with reads
//! before each claim, the default `--dts-read-qps 10` alone would pace every attempt to 10/s
//! and hide what the reset bucket does.
//!
//! Figures, from the simulator's record of every ResetDtsJob call:
//! - throttled fraction = throttled answers / all ResetDtsJob calls, over the whole run and at
//!   steady state: the calls received from 10 s after the first call until the last executed
//!   call (the start, where the limiter is still finding the rate, left out);
//! - throughput = executed calls per second, over the run (first call → last executed call) and
//!   at steady state, against the SERVER_RATE allowed;
//! - the permitted rate (`dts_operator_dts_rate_limit`), sampled every 500 ms.
//!
//! ```text
//! cargo run --release --example bench_adaptive -- <path/to/dts-operator> [N=1000] [SERVER_RATE=10] [QPS=50]
//! ```

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dts_operator::crd::{DtsJobReset, Phase};
use dts_simulator::{DTS_ACTION, RateLimit, Simulator};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{install_crd, namespace_with_secret, spec};

/// Calls before this long after the first one are the start, not the steady state.
const WARM_UP: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `dts_operator_dts_rate_limit` from the operator's /metrics, if it answers.
async fn permitted_rate(port: u16) -> Option<f64> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("dts_operator_dts_rate_limit "))
        .and_then(|v| v.trim().parse().ok())
}

/// What one run measured.
struct Run {
    adaptive: bool,
    succeeded: usize,
    failed: usize,
    wall: Duration,
    calls: usize,
    throttled: usize,
    executed: usize,
    span: f64,
    steady_calls: usize,
    steady_throttled: usize,
    steady_executed: usize,
    steady_span: f64,
    rates: Vec<f64>,
    steady_rates: Vec<f64>,
}

async fn run(
    bin: &str,
    client: &Client,
    n: usize,
    server_rate: f64,
    qps: &str,
    adaptive: bool,
) -> Run {
    let ns = namespace_with_secret(client, "bench-ar").await;
    let sim = Simulator::start().await;
    sim.add_access_key("benchid", "benchsecret");
    sim.set_rate_limit(Some(RateLimit::per_second(server_rate)));
    let port = free_port();
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let mut child = tokio::process::Command::new(bin)
        .args([
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            &ns,
            "--dts-endpoint",
            &sim.url(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--dts-qps",
            qps,
            "--dts-burst",
            "10",
            "--verify-window",
            "0",
            &format!("--dts-adaptive-rate={adaptive}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    while permitted_rate(port).await.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    for i in 0..n {
        api.create(
            &PostParams::default(),
            &DtsJobReset::new(&format!("r{i:05}"), spec(&format!("job-{i}"))),
        )
        .await
        .unwrap();
    }
    let mut samples: Vec<(Instant, f64)> = Vec::new();
    let mut last_list = Instant::now() - Duration::from_secs(10);
    let (succeeded, failed) = loop {
        if let Some(r) = permitted_rate(port).await {
            samples.push((Instant::now(), r));
        }
        if last_list.elapsed() >= Duration::from_secs(2) {
            last_list = Instant::now();
            let items = api.list(&ListParams::default()).await.unwrap().items;
            let phase = |p: Phase| {
                items
                    .iter()
                    .filter(|o| o.status.as_ref().and_then(|s| s.phase) == Some(p))
                    .count()
            };
            let (s, f, u) = (
                phase(Phase::Succeeded),
                phase(Phase::Failed),
                phase(Phase::Unknown),
            );
            if s + f + u >= n {
                break (s, f + u);
            }
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "timed out");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wall = started.elapsed();
    let _ = child.kill().await;

    let calls: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| c.action.as_deref() == Some(DTS_ACTION))
        .collect();
    let t0 = calls.iter().map(|c| c.received_at).min().unwrap();
    let last_exec = calls
        .iter()
        .filter(|c| c.executed)
        .map(|c| c.received_at)
        .max()
        .unwrap();
    let secs = |t: jiff::Timestamp| (t - t0).total(jiff::Unit::Second).unwrap();
    let span = secs(last_exec);
    let warm = WARM_UP.as_secs_f64();
    let steady: Vec<_> = calls
        .iter()
        .filter(|c| secs(c.received_at) >= warm && c.received_at <= last_exec)
        .collect();
    let rates: Vec<f64> = samples.iter().map(|(_, r)| *r).collect();
    let wall_t0 = samples.first().map_or(started, |(t, _)| *t);
    let steady_rates: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| t.duration_since(wall_t0) >= WARM_UP)
        .map(|(_, r)| *r)
        .collect();
    Run {
        adaptive,
        succeeded,
        failed,
        wall,
        calls: calls.len(),
        throttled: calls.iter().filter(|c| c.throttled).count(),
        executed: calls.iter().filter(|c| c.executed).count(),
        span,
        steady_calls: steady.len(),
        steady_throttled: steady.iter().filter(|c| c.throttled).count(),
        steady_executed: steady.iter().filter(|c| c.executed).count(),
        steady_span: (span - warm).max(0.001),
        rates,
        steady_rates,
    }
}

fn stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!("min {min:.1} / mean {mean:.1} / max {max:.1}")
}

fn report(r: &Run, n: usize, server_rate: f64, qps: &str) {
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "--dts-adaptive-rate={} (--dts-qps {qps}, server allows {server_rate}/s, N={n})",
        r.adaptive
    );
    println!(
        "  finished: {} Succeeded, {} Failed/Unknown, in {:.1} s (create of the first → all finished)",
        r.succeeded,
        r.failed,
        r.wall.as_secs_f64()
    );
    println!(
        "  ResetDtsJob calls: {} ({} executed, {} throttled); {:.2} calls per request",
        r.calls,
        r.executed,
        r.throttled,
        r.calls as f64 / n as f64
    );
    println!(
        "  throttled: {:.1}% of all calls over the run; {:.1}% at steady state ({} of {} calls from {} s after the first call to the last executed one)",
        pct(r.throttled, r.calls),
        pct(r.steady_throttled, r.steady_calls),
        r.steady_throttled,
        r.steady_calls,
        WARM_UP.as_secs()
    );
    let tput = r.executed as f64 / r.span.max(0.001);
    let steady_tput = r.steady_executed as f64 / r.steady_span;
    println!(
        "  throughput: {tput:.2} executed calls/s over the run ({:.0}% of {server_rate}/s, first call → last executed, {:.1} s); {steady_tput:.2}/s at steady state ({:.0}%)",
        100.0 * tput / server_rate,
        r.span,
        100.0 * steady_tput / server_rate
    );
    println!(
        "  permitted rate (dts_operator_dts_rate_limit, every 500 ms): {}; at steady state {}",
        stats(&r.rates),
        stats(&r.steady_rates)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("path to the dts-operator binary")
        .clone();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let server_rate: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let qps: String = args.get(4).cloned().unwrap_or_else(|| "50".into());
    dts_operator::install_crypto_provider();
    let client = Client::try_default().await.expect("KUBECONFIG");
    install_crd(&client).await;
    println!("dts-operator adaptive rate benchmark ({bin})");
    for adaptive in [true, false] {
        let r = run(&bin, &client, n, server_rate, &qps, adaptive).await;
        report(&r, n, server_rate, &qps);
    }
    println!("  namespaces bench-ar-* left in place (no controller-manager deletes namespaces)");
}
