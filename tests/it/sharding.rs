//! Sharding a fleet by label (`run --selector`): two real `dts-operator run` processes in one
//! namespace, each with its own leader-election Lease and its own selector, against the real
//! control plane and the DTS simulator. Each resource is handled by exactly its shard, an
//! unlabelled one by none, a relabelled finished one is never sent again, and the job Leases
//! (in the namespace both shards share) keep calls for one job apart across shards.

use std::time::Duration;

use dts_operator::crd::DtsJobReset;
use dts_simulator::{Answer, Simulator};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::support::operator::*;

const T: Duration = Duration::from_secs(30);

/// One shard: leader election on a Lease of its own, `--selector shard=<name>`, and an identity
/// (`POD_NAME`) that names it in claims.
async fn shard(ns: &str, sim: &Simulator, name: &str) -> Operator {
    Operator::start(
        OperatorOptions::new(ns, &sim.url())
            .arg("--leader-elect")
            .set("--leader-election-namespace", ns)
            .set("--leader-election-lease-name", &format!("shard-{name}"))
            .set("--leader-election-lease-duration", "4s")
            .set("--selector", &format!("shard={name}"))
            .env("POD_NAME", &format!("shard-{name}")),
    )
    .await
}

async fn setup_shards(prefix: &str) -> (kube::Client, String, Simulator, Operator, Operator) {
    let (client, ns) = setup(prefix).await;
    create_default_secret(&client, &ns).await;
    let sim = Simulator::start().await;
    sim.add_access_key(AK_ID, AK_SECRET);
    let a = shard(&ns, &sim, "a").await;
    let b = shard(&ns, &sim, "b").await;
    // Both lead their own shard: neither stands by for the other.
    for op in [&a, &b] {
        op.wait_metrics(&["dts_operator_leader 1"], T).await;
    }
    (client, ns, sim, a, b)
}

/// Creates a resource for `job`, labelled `shard=<shard>` (none: unlabelled).
async fn create_in(client: &kube::Client, ns: &str, name: &str, job: &str, shard: Option<&str>) {
    let mut obj = DtsJobReset::new(name, spec(job));
    obj.metadata.labels = shard.map(|s| [("shard".to_string(), s.to_string())].into());
    Api::<DtsJobReset>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create DtsJobReset");
}

/// Waits until a call for `job` is held at the gate, then returns who claimed the resource.
async fn claimed_by(
    client: &kube::Client,
    ns: &str,
    name: &str,
    sim: &Simulator,
    gate: &str,
) -> String {
    tokio::time::timeout(T, sim.wait_for_gate_waiters(gate, 1))
        .await
        .unwrap_or_else(|_| panic!("no call reached gate {gate}; calls: {:?}", sim.calls()));
    let o = wait_phase(client, ns, name, "Running", T).await;
    o.status
        .unwrap()
        .claimed_by
        .expect("a claim names its claimer")
}

#[tokio::test]
async fn each_resource_is_handled_by_its_shard_only() {
    let (client, ns, sim, a, b) = setup_shards("shards").await;
    sim.script("job-a", [Answer::gate("ga", Answer::Success)]);
    sim.script("job-b", [Answer::gate("gb", Answer::Success)]);
    create_in(&client, &ns, "ra", "job-a", Some("a")).await;
    create_in(&client, &ns, "rb", "job-b", Some("b")).await;
    create_in(&client, &ns, "rn", "job-n", None).await;

    let by = claimed_by(&client, &ns, "ra", &sim, "ga").await;
    assert!(by.starts_with("shard-a-"), "ra claimed by {by}");
    let by = claimed_by(&client, &ns, "rb", &sim, "gb").await;
    assert!(by.starts_with("shard-b-"), "rb claimed by {by}");
    sim.open_gate("ga");
    sim.open_gate("gb");
    for name in ["ra", "rb"] {
        let o = wait_phase(&client, &ns, name, "Succeeded", T).await;
        assert_eq!(o.status.unwrap().attempts, Some(1), "{name}");
    }
    // Each shard counts its own resources only; the unlabelled one is nobody's.
    for op in [&a, &b] {
        op.wait_metrics(
            &[
                "dts_operator_resources{phase=\"Succeeded\"} 1",
                "dts_operator_resources{phase=\"Pending\"} 0",
            ],
            T,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.executed_calls("job-a").len(), 1);
    assert_eq!(sim.executed_calls("job-b").len(), 1);
    assert!(
        sim.executed_calls("job-n").is_empty(),
        "no shard selects rn"
    );
    let rn = Api::<DtsJobReset>::namespaced(client.clone(), &ns)
        .get("rn")
        .await
        .unwrap();
    assert_eq!(rn.status, None, "no shard wrote rn's status");

    // Relabelled into shard b after it succeeded: b takes it over and finds the request
    // answered (its identity is the spec and the annotation, not the labels).
    Api::<DtsJobReset>::namespaced(client.clone(), &ns)
        .patch(
            "ra",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"shard": "b"}}})),
        )
        .await
        .expect("relabel ra");
    b.wait_metrics(&["dts_operator_resources{phase=\"Succeeded\"} 2"], T)
        .await;
    a.wait_metrics(&["dts_operator_resources{phase=\"Succeeded\"} 0"], T)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.executed_calls("job-a").len(), 1, "never sent again");
    let ra = wait_phase(&client, &ns, "ra", "Succeeded", T).await;
    assert_eq!(ra.status.unwrap().attempts, Some(1));
    assert_eq!(a.terminate().await, Some(0));
    assert_eq!(b.terminate().await, Some(0));
}

/// The job Leases live in the operator's namespace, which both shards share: two resources in
/// different shards naming one job never have calls in flight together.
#[tokio::test]
async fn shards_sharing_a_namespace_keep_calls_for_one_job_apart() {
    let (client, ns, sim, a, b) = setup_shards("shardjob").await;
    sim.script(
        "job-same",
        [Answer::gate("first", Answer::Success), Answer::Success],
    );
    create_in(&client, &ns, "x", "job-same", Some("a")).await;
    let by = claimed_by(&client, &ns, "x", &sim, "first").await;
    assert!(by.starts_with("shard-a-"), "x claimed by {by}");
    create_in(&client, &ns, "y", "job-same", Some("b")).await;
    let y = wait_for(&client, &ns, "y", T, |o| {
        condition(o, "Reconciling").is_some_and(|c| c.reason == "ConcurrentRequest")
    })
    .await;
    assert_eq!(phase(&y), "Pending");
    let msg = &condition(&y, "Reconciling").unwrap().message;
    assert!(msg.contains(&format!("{ns}/x")), "names the holder: {msg}");
    assert_eq!(sim.executed_calls("job-same").len(), 1);
    sim.open_gate("first");
    wait_phase(&client, &ns, "x", "Succeeded", T).await;
    let y = wait_phase(&client, &ns, "y", "Succeeded", T).await;
    assert_eq!(y.status.unwrap().attempts, Some(1));
    assert_eq!(sim.executed_calls("job-same").len(), 2);
    assert_eq!(sim.max_in_flight("cn-hangzhou", "job-same"), 1);
    assert_eq!(a.terminate().await, Some(0));
    assert_eq!(b.terminate().await, Some(0));
}

/// A malformed selector is a configuration error at start-up (exit 2, naming the flag), not a
/// watch that the API server refuses forever.
#[tokio::test]
async fn a_malformed_selector_is_refused_at_start_up() {
    for selector in ["shard in a", "shard=a,", "-x=y"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dts-operator"))
            .args([
                "run",
                &format!("--selector={selector}"),
                "--kubeconfig",
                "/nonexistent",
            ])
            .env_clear()
            .output()
            .await
            .expect("dts-operator runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{selector:?}: {stderr}");
        assert!(
            stderr.contains("--selector: invalid label selector"),
            "{selector:?}: {stderr}"
        );
    }
    // The same through the environment variable.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dts-operator"))
        .args(["run", "--kubeconfig", "/nonexistent"])
        .env_clear()
        .env("DTS_OPERATOR_SELECTOR", "shard notin (a b)")
        .output()
        .await
        .expect("dts-operator runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--selector"));
}
