//! Benchmark of the controller (numbers, not assertions): resident memory idle and with many
//! resources, API-server writes per request, and the time from create to `Succeeded`.
//!
//! Runs the real `dts-operator run` binary against the cluster in `KUBECONFIG` (see
//! `hack/bench-operator.sh`) and an in-process DTS simulator.
//!
//! ```text
//! cargo run --release --example bench_operator -- <path/to/dts-operator> [latency-resources] [total-resources] [dts-qps]
//! ```

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dts_operator::crd::{DtsJobReset, DtsJobResetSpec, Phase};
use dts_simulator::Simulator;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Client, ResourceExt};

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
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

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn spec(job: &str) -> DtsJobResetSpec {
    serde_json::from_value(serde_json::json!({
        "dtsJobId": job,
        "regionId": "cn-hangzhou",
        "credentials": {"secretRef": {"name": "creds"}}
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("path to the dts-operator binary")
        .clone();
    let latency_n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let total_n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let qps: String = args.get(4).cloned().unwrap_or_else(|| "5".into());
    dts_operator::install_crypto_provider();
    let client = Client::try_default().await.expect("KUBECONFIG");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "dtsjobresets.dtsops.io",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(dts_operator::crd::crd()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sim = Simulator::start().await;
    sim.add_access_key("benchid", "benchsecret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("creds".into()),
                    ..Default::default()
                },
                data: Some(
                    [
                        ("accessKeyId".to_string(), ByteString(b"benchid".to_vec())),
                        (
                            "accessKeySecret".to_string(),
                            ByteString(b"benchsecret".to_vec()),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let mut child = tokio::process::Command::new(&bin)
        .args([
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            &ns,
            "--dts-endpoint",
            &sim.url(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--dts-qps",
            &qps,
            "--dts-burst",
            "10",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_rss, _) = rss_kib(pid);

    // Every status write is one MODIFIED watch event; record them and the Succeeded times.
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Option<Phase>, Instant)>();
    let watch_api = api.clone();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(watch_api, watcher::Config::default()).boxed();
        while let Ok(Some(ev)) = stream.try_next().await {
            if let WatchEvent::Apply(o) = ev {
                let phase = o.status.as_ref().and_then(|s| s.phase);
                let _ = tx.send((o.name_any(), phase, Instant::now()));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut done: HashMap<String, Instant> = HashMap::new();
    let mut writes: HashMap<String, usize> = HashMap::new();
    let drain =
        |rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Option<Phase>, Instant)>,
         done: &mut HashMap<String, Instant>,
         writes: &mut HashMap<String, usize>| {
            while let Ok((name, phase, at)) = rx.try_recv() {
                *writes.entry(name.clone()).or_default() += 1;
                if phase == Some(Phase::Succeeded) {
                    done.entry(name).or_insert(at);
                }
            }
        };
    let started = Instant::now();
    for i in 0..latency_n {
        let name = format!("r{i:05}");
        created.insert(name.clone(), Instant::now());
        api.create(
            &PostParams::default(),
            &DtsJobReset::new(&name, spec(&format!("job-{i}"))),
        )
        .await
        .unwrap();
    }
    while done.len() < latency_n {
        drain(&mut rx, &mut done, &mut writes);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(started.elapsed() < Duration::from_secs(1800), "timed out");
    }
    let mut lat: Vec<Duration> = done
        .iter()
        .map(|(n, t)| t.duration_since(created[n]))
        .collect();
    lat.sort();
    let batch_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drain(&mut rx, &mut done, &mut writes);
    // The watcher's first event per object is its creation; the rest are writes by the operator.
    let status_writes: Vec<usize> = writes.values().map(|w| w.saturating_sub(1)).collect();
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();

    for i in latency_n..total_n {
        let name = format!("r{i:05}");
        api.create(
            &PostParams::default(),
            &DtsJobReset::new(&name, spec(&format!("job-{i}"))),
        )
        .await
        .unwrap();
    }
    while done.len() < total_n {
        drain(&mut rx, &mut done, &mut writes);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_secs(3600), "timed out");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (full_rss, hwm) = rss_kib(pid);
    let calls = sim.calls().len();
    let _ = child.kill().await;

    println!("dts-operator controller benchmark ({bin})");
    println!(
        "  idle RSS (no resources):                 {:.1} MiB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  RSS with {total_n} Succeeded resources:       {:.1} MiB (peak {:.1} MiB)",
        full_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  status writes per request (happy path):  min {} / max {} (+1 create by the user, +{:.1} Events per request)",
        status_writes.iter().min().unwrap(),
        status_writes.iter().max().unwrap(),
        events as f64 / latency_n as f64
    );
    println!(
        "  create → Succeeded over {latency_n} resources (--dts-qps {qps}, burst 10): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; batch done in {batch_secs:.1} s",
        pct(&lat, 0.5).as_secs_f64() * 1000.0,
        pct(&lat, 0.99).as_secs_f64() * 1000.0,
        lat.last().unwrap().as_secs_f64() * 1000.0,
    );
    println!("  ResetDtsJob calls seen by the simulator: {calls} for {total_n} resources");
    println!("  namespace {ns} left in place (no controller-manager deletes namespaces)");
}
