//! "At most one reset" under real faults of the control plane: a TCP fault proxy (toxiproxy)
//! between an operator and kube-apiserver — black holes, latency — API Priority and Fairness
//! 429 storms from the real server, and operators whose clocks are 15 s off (libfaketime).
//! Every scenario counts the DTS calls the simulator executed per request and the most it had
//! in flight per job, and that every request ends.

use std::time::Duration;

use dts_operator::crd::DtsJobReset;
use dts_simulator::{Answer, Simulator};
use kube::api::{Api, Patch, PatchParams};

use crate::support::faults::{
    ApfLimit, ApfOptions, Stream, kubeconfig_file_through, kubeconfig_through,
    operator_service_account, throttle_service_account, toxiproxy,
};
use crate::support::operator::*;

const T: Duration = Duration::from_secs(30);

fn leader(ns: &str, sim: &Simulator) -> OperatorOptions {
    OperatorOptions::new(ns, &sim.url())
        .arg("--leader-elect")
        .arg("--leader-election-namespace")
        .arg(ns)
        .arg("--leader-election-lease-duration")
        .arg("4s")
}

fn claimed_by(o: &DtsJobReset) -> Option<String> {
    o.status
        .as_ref()
        .filter(|s| s.phase == Some(dts_operator::crd::Phase::Running))
        .and_then(|s| s.claimed_by.clone())
}

/// (a) The API is black-holed for the claimer right after its claim was accepted: its call —
/// sent with no API call in between — is the only one, received within the claim's validity;
/// its answer cannot be recorded, so another replica, after watching the claim past its validity
/// and the skew, proves it from the job's state; when the black hole lifts, the stale answer
/// lands nowhere. Whatever happens next (a new request), no second call for the first one.
#[tokio::test]
async fn a_black_hole_after_the_claim_sends_nothing_late() {
    let (client, ns, sim) = setup_with_secret("p-hole").await;
    sim.script("job-hole", [Answer::hang(Duration::from_millis(800))]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = toxiproxy().await.apiserver_proxy("p-hole").await;
    let mut a_opts = OperatorOptions::new(&ns, &sim.url());
    a_opts.kubeconfig = Some(kubeconfig_through(&proxy, dir.path()).await);
    let a = Operator::start(a_opts).await;
    create(&client, &ns, "r", spec("job-hole")).await;
    let claimed = wait_for(&client, &ns, "r", T, |o| claimed_by(o).is_some()).await;
    proxy.black_hole(Stream::Upstream).await;
    proxy.black_hole(Stream::Downstream).await;
    let st = claimed.status.clone().unwrap();
    let claimed_at = st.last_attempt_time.clone().unwrap().0;
    let validity = st
        .claim_deadline
        .clone()
        .unwrap()
        .0
        .duration_since(claimed_at);

    // Another replica, directly on the API: it watches the claim, then verifies the job.
    let b = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    let done = wait_phase(&client, &ns, "r", "Succeeded", Duration::from_secs(60)).await;
    let reason = condition(&done, "Ready").unwrap().reason.clone();
    assert_eq!(
        reason, "ResetVerified",
        "the call happened: proven, not guessed"
    );
    let calls = sim.executed_calls("job-hole");
    assert_eq!(calls.len(), 1, "one call: {calls:?}");
    let sent = calls[0].received_at;
    assert!(
        sent.duration_since(claimed_at) <= validity,
        "sent {sent} after the claim's validity ({claimed_at} + {validity:?})"
    );
    assert!(!b.logs().contains("ResetDtsJob answered"), "B sent nothing");

    proxy.clear().await;
    let start = std::time::Instant::now();
    while !a.logs().contains("could not be recorded") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the stale answer is never reported:\n{}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = Api::<DtsJobReset>::namespaced(client.clone(), &ns)
        .get("r")
        .await
        .unwrap();
    assert_eq!(after.status, done.status, "the stale answer landed nowhere");

    // What happens next: the user asks again. Exactly one more call, never a late one.
    Api::<DtsJobReset>::namespaced(client.clone(), &ns)
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"dtsops.io/requested-at": "again"}}})),
        )
        .await
        .unwrap();
    wait_for(&client, &ns, "r", T, |o| {
        phase(o) == "Succeeded"
            && o.status
                .as_ref()
                .and_then(|s| s.last_handled_request.as_deref())
                == Some("again")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.executed_calls("job-hole").len(), 2);
    assert_eq!(sim.max_in_flight("cn-hangzhou", "job-hole"), 1);
    a.kill().await;
    b.terminate().await;
}

/// (b) The leader is black-holed mid-call while a standby takes over: the leader's own view of
/// its lease expires, it claims nothing more and exits; the standby takes the lease after
/// watching it unchanged, finishes the rest, and reports the black-holed leader's claims once
/// they expire — proven from the jobs. At most one call per request, every request ends.
#[tokio::test]
async fn a_black_holed_leader_is_replaced_without_a_second_call() {
    let (client, ns, sim) = setup_with_secret("p-leader").await;
    sim.set_default_answer(Answer::hang(Duration::from_millis(700)));
    let dir = tempfile::tempdir().unwrap();
    let proxy = toxiproxy().await.apiserver_proxy("p-leader").await;
    let mut a_opts = leader(&ns, &sim);
    a_opts.kubeconfig = Some(kubeconfig_through(&proxy, dir.path()).await);
    let a = Operator::start(a_opts).await;
    // A holds the lease before the standby starts.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns);
    let start = std::time::Instant::now();
    while leases.get_opt("dts-operator").await.unwrap().is_none() {
        assert!(start.elapsed() < T, "A never leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Operator::start(leader(&ns, &sim)).await;
    for i in 0..8 {
        create(
            &client,
            &ns,
            &format!("r{i}"),
            spec(&format!("job-lead-{i}")),
        )
        .await;
    }
    // Mid-call: some resource claimed by A.
    let mut any = false;
    let start = std::time::Instant::now();
    while !any {
        assert!(start.elapsed() < T, "A claims nothing");
        for i in 0..8 {
            let o = Api::<DtsJobReset>::namespaced(client.clone(), &ns)
                .get(&format!("r{i}"))
                .await
                .unwrap();
            any |= claimed_by(&o).is_some();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.black_hole(Stream::Upstream).await;
    proxy.black_hole(Stream::Downstream).await;
    let blackholed_at = std::time::Instant::now();
    for i in 0..8 {
        let o = wait_phase(
            &client,
            &ns,
            &format!("r{i}"),
            "Succeeded",
            Duration::from_secs(90),
        )
        .await;
        let reason = condition(&o, "Ready").unwrap().reason.clone();
        assert!(
            reason == "ResetSucceeded" || reason == "ResetVerified",
            "r{i}: {reason}"
        );
    }
    let took = blackholed_at.elapsed();
    for i in 0..8 {
        let job = format!("job-lead-{i}");
        assert_eq!(sim.executed_calls(&job).len(), 1, "{job}");
        assert_eq!(sim.max_in_flight("cn-hangzhou", &job), 1, "{job}");
    }
    let code = a.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(1), "the partitioned leader stops with an error");
    let (_, m) = b.admin_get("/metrics").await;
    assert!(m.contains("dts_operator_leader 1"), "{m}");
    eprintln!("partition → all 8 requests ended in {took:?}");
    drop(proxy);
    b.terminate().await;
}

/// (c) API Priority and Fairness refuses most of the operator's concurrent requests with real
/// 429s, and every answer of the API server is 2 s late: 100 requests still end, each with one
/// call, never two in flight for a job.
#[tokio::test]
async fn a_throttled_slow_api_still_ends_every_request_once() {
    let (client, ns, sim) = setup_with_secret("p-storm").await;
    let dir = tempfile::tempdir().unwrap();
    let token = operator_service_account(dir.path(), &ns, "storm-operator").await;
    let throttle = throttle_service_account(
        &ns,
        "storm-operator",
        ApfOptions {
            shares: 1,
            limit: ApfLimit::Reject,
        },
    )
    .await;
    let proxy = toxiproxy().await.apiserver_proxy("p-storm").await;
    proxy.latency(Stream::Downstream, 2000, 0).await;
    let mut opts = OperatorOptions::new(&ns, &sim.url())
        .set("--dts-qps", "0")
        .set("--max-concurrent-resets", "16");
    opts.kubeconfig = Some(kubeconfig_file_through(&proxy, &token, dir.path()));
    let started = std::time::Instant::now();
    let op = Operator::start(opts).await;
    for i in 0..100 {
        create(
            &client,
            &ns,
            &format!("s{i}"),
            spec(&format!("job-storm-{i}")),
        )
        .await;
    }
    for i in 0..100 {
        wait_phase(
            &client,
            &ns,
            &format!("s{i}"),
            "Succeeded",
            Duration::from_secs(400),
        )
        .await;
    }
    let took = started.elapsed();
    for i in 0..100 {
        let job = format!("job-storm-{i}");
        assert_eq!(sim.executed_calls(&job).len(), 1, "{job}");
        assert_eq!(sim.max_in_flight("cn-hangzhou", &job), 1, "{job}");
    }
    let (_, m) = op.admin_get("/metrics").await;
    assert!(
        m.contains("dts_operator_reconciles_total{result=\"error\""),
        "the storm was real: some reconciles met 429s\n{m}"
    );
    eprintln!("100 requests under 429s and 2 s latency ended in {took:?}");
    op.terminate().await;
    throttle.remove().await;
}

/// Clocks: replicas whose clocks run 15 s ahead and 15 s behind watch a live call held for 20 s:
/// neither declares it Unknown (a claim is abandoned only after local observation), and one call
/// is all there is.
#[tokio::test]
async fn skewed_replicas_never_report_a_live_call_unknown() {
    let (client, ns, sim) = setup_with_secret("p-skew").await;
    sim.script("job-skew", [Answer::gate("live", Answer::Success)]);
    let a =
        Operator::start(OperatorOptions::new(&ns, &sim.url()).set("--dts-timeout", "25s")).await;
    create(&client, &ns, "r", spec("job-skew")).await;
    tokio::time::timeout(T, sim.wait_for_gate_waiters("live", 1))
        .await
        .expect("the call reaches the simulator");
    let ahead = Operator::start(
        OperatorOptions::new(&ns, &sim.url())
            .set("--max-clock-skew", "20s")
            .faketime("+15s"),
    )
    .await;
    let behind = Operator::start(
        OperatorOptions::new(&ns, &sim.url())
            .set("--max-clock-skew", "20s")
            .faketime("-15s"),
    )
    .await;
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let o = api.get("r").await.unwrap();
        assert_eq!(
            phase(&o),
            "Running",
            "a live call must stay claimed: {:?}",
            o.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sim.open_gate("live");
    let done = wait_phase(&client, &ns, "r", "Succeeded", T).await;
    assert_eq!(condition(&done, "Ready").unwrap().reason, "ResetSucceeded");
    assert_eq!(sim.executed_calls("job-skew").len(), 1);
    a.terminate().await;
    ahead.terminate().await;
    behind.terminate().await;
}

/// Clocks and leases: a standby 15 s ahead sees the leader's renewTime "in the past" and one
/// 15 s behind sees it "in the future"; neither takes over a live lease, and when the leader
/// dies, one of them takes over only after its own lease duration of observation.
#[tokio::test]
async fn skewed_standbys_take_over_only_after_local_expiry() {
    let (client, ns, sim) = setup_with_secret("p-lskew").await;
    let a = Operator::start(leader(&ns, &sim)).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns);
    let start = std::time::Instant::now();
    while leases.get_opt("dts-operator").await.unwrap().is_none() {
        assert!(start.elapsed() < T, "A never leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ahead = Operator::start(leader(&ns, &sim).faketime("+15s")).await;
    let behind = Operator::start(leader(&ns, &sim).faketime("-15s")).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (who, op) in [("ahead", &ahead), ("behind", &behind)] {
        let (_, m) = op.admin_get("/metrics").await;
        assert!(
            m.contains("dts_operator_leader 0"),
            "{who} took a live lease:\n{m}"
        );
    }
    let (_, m) = a.admin_get("/metrics").await;
    assert!(m.contains("dts_operator_leader 1"), "{m}");

    let killed_at = std::time::Instant::now();
    a.kill().await;
    create(&client, &ns, "r", spec("job-lskew")).await;
    wait_phase(&client, &ns, "r", "Succeeded", T).await;
    let took = killed_at.elapsed();
    // Observation of A's last renewal began up to one retry period (0.8 s) before the kill.
    assert!(
        took >= Duration::from_millis(3200),
        "taken over before local expiry: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "takeover took {took:?}");
    assert_eq!(sim.executed_calls("job-lskew").len(), 1);
    let mut leaders = 0;
    for op in [&ahead, &behind] {
        leaders += op
            .admin_get("/metrics")
            .await
            .1
            .contains("dts_operator_leader 1") as usize;
    }
    assert_eq!(
        leaders,
        1,
        "exactly one new leader\nahead:\n{}\nbehind:\n{}",
        ahead.logs(),
        behind.logs()
    );
    ahead.terminate().await;
    behind.terminate().await;
}
