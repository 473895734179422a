//! "At most one reset" when leases and replicas misbehave, on the real API server with the DTS
//! simulator: exclusion per job across processes, leases that do not trust remote clocks, and a
//! lease lost while a call is in flight. Every test counts the calls the simulator executed and
//! the most it had in flight per job.

use std::time::Duration;

use dts_operator::crd::DtsJobReset;
use dts_simulator::Answer;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::support::operator::*;

const T: Duration = Duration::from_secs(30);

fn leader_opts(ns: &str, url: &str) -> OperatorOptions {
    OperatorOptions::new(ns, url)
        .arg("--leader-elect")
        .arg("--leader-election-namespace")
        .arg(ns)
        .arg("--leader-election-lease-duration")
        .arg("4s")
}

async fn wait_log(op: &Operator, needle: &str, timeout: Duration) {
    let start = std::time::Instant::now();
    while !op.logs().contains(needle) {
        assert!(
            start.elapsed() < timeout,
            "no {needle:?} in the log after {timeout:?}:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas without leader election, 20 pairs of resources, each pair naming one job, with
/// calls slow enough to overlap: never two calls in flight for one job — the job Leases keep the
/// processes apart where their caches cannot — and every request ends with one call.
#[tokio::test]
async fn two_replicas_never_overlap_calls_for_one_job() {
    let (client, ns, sim) = setup_with_secret("pairs").await;
    sim.set_default_answer(Answer::hang(Duration::from_millis(300)));
    let a = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    let b = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    for i in 0..20 {
        for side in ["x", "y"] {
            create(
                &client,
                &ns,
                &format!("p{i}-{side}"),
                spec(&format!("job-pair-{i}")),
            )
            .await;
        }
    }
    for i in 0..20 {
        for side in ["x", "y"] {
            wait_phase(
                &client,
                &ns,
                &format!("p{i}-{side}"),
                "Succeeded",
                Duration::from_secs(90),
            )
            .await;
        }
    }
    for i in 0..20 {
        let job = format!("job-pair-{i}");
        assert_eq!(
            sim.executed_calls(&job).len(),
            2,
            "{job}: one call per resource"
        );
        assert_eq!(
            sim.max_in_flight("cn-hangzhou", &job),
            1,
            "{job} overlapped"
        );
    }
    // Released after each answer: no job Lease is left behind.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let left: Vec<_> = leases
        .list(&kube::api::ListParams::default().labels("dtsops.io/job-lease"))
        .await
        .unwrap()
        .items;
    assert!(left.is_empty(), "{} job Leases left", left.len());
    a.terminate().await;
    b.terminate().await;
}

/// A dead holder's Lease whose renewTime is an hour in the future (its clock ran ahead) does not
/// block takeover beyond the lease duration of this process's own observation.
#[tokio::test]
async fn a_future_renew_time_does_not_block_takeover() {
    let (client, ns, sim) = setup_with_secret("future").await;
    let future = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("dts-operator".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("a-dead-replica-with-a-fast-clock".into()),
            lease_duration_seconds: Some(4),
            acquire_time: Some(MicroTime(future)),
            renew_time: Some(MicroTime(future)),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let op = Operator::start(leader_opts(&ns, &sim.url())).await;
    create(&client, &ns, "r", spec("job-future")).await;
    wait_phase(&client, &ns, "r", "Succeeded", T).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "takeover took {took:?} (lease 4 s)"
    );
    assert!(
        took >= Duration::from_secs(4),
        "taken over before 4 s of observation: {took:?}"
    );
    assert_eq!(sim.executed_calls("job-future").len(), 1);
    op.terminate().await;
}

/// The lease is taken away while a call is in flight: the leader stops claiming at once, but
/// the answer that arrives is recorded before it exits (with an error: it lost its lease).
#[tokio::test]
async fn an_answer_is_recorded_when_the_lease_is_lost_mid_call() {
    let (client, ns, sim) = setup_with_secret("lostmid").await;
    sim.script("job-mid", [Answer::gate("mid", Answer::Success)]);
    let op = Operator::start(leader_opts(&ns, &sim.url()).set("--dts-timeout", "2s")).await;
    create(&client, &ns, "r", spec("job-mid")).await;
    tokio::time::timeout(T, sim.wait_for_gate_waiters("mid", 1))
        .await
        .expect("the call reaches the simulator");
    // Someone else holds the Lease now.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let mut lease = leases.get("dts-operator").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("another-replica".into());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    leases
        .replace("dts-operator", &PostParams::default(), &lease)
        .await
        .unwrap();
    wait_log(&op, "leader lease lost", T).await;
    sim.open_gate("mid");
    let done = wait_phase(&client, &ns, "r", "Succeeded", T).await;
    assert!(done.status.unwrap().request_id.is_some());
    assert_eq!(sim.executed_calls("job-mid").len(), 1);
    let code = op.wait_exit(T).await;
    assert_eq!(code, Some(1), "exits with an error after recording");
}

/// Without leader election the claim is the only guard for one resource: a second process that
/// starts while the first one's call is held waits for the claim — never sends its own.
#[tokio::test]
async fn a_live_claim_is_never_taken_over() {
    let (client, ns, sim) = setup_with_secret("liveclaim").await;
    sim.script("job-live", [Answer::gate("live", Answer::Success)]);
    let a = Operator::start(OperatorOptions::new(&ns, &sim.url()).set("--dts-timeout", "8s")).await;
    create(&client, &ns, "r", spec("job-live")).await;
    tokio::time::timeout(T, sim.wait_for_gate_waiters("live", 1))
        .await
        .expect("the call reaches the simulator");
    let b = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    assert_eq!(phase(&api.get("r").await.unwrap()), "Running");
    sim.open_gate("live");
    wait_phase(&client, &ns, "r", "Succeeded", T).await;
    assert_eq!(sim.executed_calls("job-live").len(), 1);
    a.terminate().await;
    b.terminate().await;
}
