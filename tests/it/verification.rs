//! Outcome verification end to end: the real operator, the real API server, and the simulator's
//! jobs (a reset that executes moves its job to NotConfigured). Every test counts the resets and
//! the reads the simulator saw: verification reads, and never sends a reset again.

use std::time::Duration;

use dts_operator::crd::{DtsJobReset, VerificationState};
use dts_simulator::{Answer, Job, Simulator};

use crate::support::operator::*;

const T: Duration = Duration::from_secs(30);

/// Fast verification for tests: a read every second for up to `window`.
fn opts(ns: &str, sim: &Simulator, window: &str) -> OperatorOptions {
    OperatorOptions::new(ns, &sim.url())
        .arg("--verify-interval")
        .arg("1s")
        .arg("--verify-window")
        .arg(window)
}

fn verification(o: &DtsJobReset) -> Option<VerificationState> {
    o.status.as_ref()?.verification.as_ref().map(|v| v.state)
}

fn reason(o: &DtsJobReset, condition_type: &str) -> String {
    condition(o, condition_type)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

async fn wait_verification(
    client: &kube::Client,
    ns: &str,
    name: &str,
    want: VerificationState,
    timeout: Duration,
) -> DtsJobReset {
    wait_for(client, ns, name, timeout, |o| verification(o) == Some(want)).await
}

/// A happy request costs exactly one reset and one read, and records the job from before.
#[tokio::test]
async fn a_happy_request_reads_the_job_once_before_its_claim() {
    let (client, ns, sim) = setup_with_secret("v-happy").await;
    let op = Operator::start(opts(&ns, &sim, "10s")).await;
    create(&client, &ns, "r", spec("job-vh")).await;
    let o = wait_phase(&client, &ns, "r", "Succeeded", T).await;
    let before = o.status.as_ref().unwrap().job_before.clone().unwrap();
    assert_eq!(before.status.as_deref(), Some("Synchronizing"));
    assert_eq!(before.configured, Some(true));
    assert!(before.observed_time.is_some());
    assert_eq!(reason(&o, "Ready"), "ResetSucceeded");
    assert_eq!(verification(&o), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.executed_calls("job-vh").len(), 1);
    assert_eq!(sim.read_calls("job-vh").len(), 1);
    assert_eq!(
        sim.job("job-vh").unwrap().status,
        "NotConfigured",
        "the simulated reset did its work"
    );
    op.terminate().await;
}

/// The reset executed but its answer was a 500, or the call hung past the timeout: the job went
/// to NotConfigured, so the operator proves it — Succeeded, ResetVerified, a Normal event — with
/// one reset in all.
#[tokio::test]
async fn an_executed_reset_whose_answer_was_lost_is_verified() {
    let (client, ns, sim) = setup_with_secret("v-exec").await;
    sim.script(
        "job-v500",
        [Answer::executed_then(Answer::internal_error())],
    );
    // The timeout is 2 s: the hang outlives it, the reset happened at its start.
    sim.script(
        "job-vhang",
        [Answer::executed_then(Answer::hang(Duration::from_secs(6)))],
    );
    let op = Operator::start(opts(&ns, &sim, "20s")).await;
    create(&client, &ns, "a", spec("job-v500")).await;
    create(&client, &ns, "b", spec("job-vhang")).await;
    for (name, job) in [("a", "job-v500"), ("b", "job-vhang")] {
        let o = wait_phase(&client, &ns, name, "Succeeded", T).await;
        assert_eq!(reason(&o, "Ready"), "ResetVerified", "{name}");
        let st = o.status.clone().unwrap();
        assert_eq!(verification(&o), Some(VerificationState::Verified));
        assert!(st.verification.as_ref().unwrap().checks.unwrap() >= 2);
        let msg = &condition(&o, "Ready").unwrap().message;
        assert!(msg.contains("Synchronizing to NotConfigured"), "{msg}");
        let evs = wait_event(&client, &ns, name, "ResetVerified", T).await;
        assert!(
            evs.iter()
                .any(|(t, r, _)| t == "Normal" && r == "ResetVerified")
        );
        assert_eq!(sim.executed_calls(job).len(), 1, "{job}: never re-sent");
        assert!(sim.read_calls(job).len() >= 3, "before, and two after");
    }
    op.wait_metrics(
        &["dts_operator_verifications_total{result=\"verified\"} 2"],
        T,
    )
    .await;
    op.terminate().await;
}

/// The reset did not execute and the answer was a 500: the job stays as it was for the whole
/// window — Unknown, NoEffectObserved, the evidence in the message — and nothing is sent again.
#[tokio::test]
async fn a_reset_that_did_not_run_is_no_effect_observed_never_resent() {
    let (client, ns, sim) = setup_with_secret("v-noeffect").await;
    sim.script(
        "job-vne",
        [Answer::not_executed_then(Answer::internal_error())],
    );
    let op = Operator::start(opts(&ns, &sim, "5s")).await;
    create(&client, &ns, "r", spec("job-vne")).await;
    let verifying = wait_verification(&client, &ns, "r", VerificationState::Verifying, T).await;
    assert_eq!(phase(&verifying), "Unknown");
    assert_eq!(reason(&verifying, "Reconciling"), "VerifyingOutcome");
    let o = wait_verification(&client, &ns, "r", VerificationState::NoEffectObserved, T).await;
    assert_eq!(phase(&o), "Unknown");
    let stalled = condition(&o, "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "OutcomeUnknown")
    );
    assert!(
        stalled.message.contains("still Synchronizing")
            && stalled.message.contains("dtsops.io/requested-at"),
        "{}",
        stalled.message
    );
    wait_event(&client, &ns, "r", "OutcomeUnknown", T).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.executed_calls("job-vne").len(), 1, "never re-sent");
    assert_eq!(sim.job("job-vne").unwrap().status, "Synchronizing");
    let reads = sim.read_calls("job-vne").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.read_calls("job-vne").len(),
        reads,
        "concluded: no more reads"
    );
    op.terminate().await;
}

/// What verification cannot decide is said so: reads denied (the reset itself unaffected), a
/// job already NotConfigured before the call.
#[tokio::test]
async fn unprovable_outcomes_say_why() {
    let (client, ns, sim) = setup_with_secret("v-unavail").await;
    let denied = || {
        Answer::gateway_error(
            403,
            "Forbidden.RAM",
            "User not authorized to operate on the specified resource.",
        )
    };
    sim.script_reads("job-denied", (0..20).map(|_| denied()));
    sim.script_reads("job-denied-ok", (0..20).map(|_| denied()));
    sim.script(
        "job-denied",
        [Answer::executed_then(Answer::internal_error())],
    );
    sim.set_job(
        "job-already",
        Some(Job {
            status: "NotConfigured".into(),
            configured: false,
            ..Job::synchronizing("job-already", jiff::Timestamp::now())
        }),
    );
    sim.script(
        "job-already",
        [Answer::executed_then(Answer::internal_error())],
    );
    let op = Operator::start(opts(&ns, &sim, "10s")).await;
    create(&client, &ns, "denied", spec("job-denied")).await;
    create(&client, &ns, "denied-ok", spec("job-denied-ok")).await;
    create(&client, &ns, "already", spec("job-already")).await;

    let ok = wait_phase(&client, &ns, "denied-ok", "Succeeded", T).await;
    assert_eq!(
        ok.status.unwrap().job_before,
        None,
        "a refused read never blocks the reset"
    );
    for (name, why) in [
        ("denied", "could not be read before the call"),
        ("already", "already NotConfigured before the call"),
    ] {
        let o = wait_verification(&client, &ns, name, VerificationState::Unavailable, T).await;
        assert_eq!(phase(&o), "Unknown", "{name}");
        let stalled = condition(&o, "Stalled").unwrap();
        assert_eq!(stalled.reason, "OutcomeUnknown", "{name}");
        assert!(
            stalled.message.contains("Verification unavailable") && stalled.message.contains(why),
            "{name}: {}",
            stalled.message
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for job in ["job-denied", "job-denied-ok", "job-already"] {
        assert_eq!(sim.executed_calls(job).len(), 1, "{job}");
    }
    op.wait_metrics(
        &["dts_operator_verifications_total{result=\"unavailable\"} 2"],
        T,
    )
    .await;
    op.terminate().await;
}

/// An asynchronous reset (NotConfigured shows 6 s after the call), and an operator restarted in
/// the middle of the window: verification is in status, so the next operator goes on and
/// proves it — one reset in all.
#[tokio::test]
async fn a_slow_reset_is_verified_across_a_restart() {
    let (client, ns, sim) = setup_with_secret("v-slow").await;
    sim.set_reset_delay(Duration::from_secs(6));
    sim.script(
        "job-vslow",
        [Answer::executed_then(Answer::internal_error())],
    );
    let op = Operator::start(opts(&ns, &sim, "40s")).await;
    create(&client, &ns, "r", spec("job-vslow")).await;
    wait_for(&client, &ns, "r", T, |o| {
        o.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.checks.unwrap_or(0) >= 2)
    })
    .await;
    assert_eq!(op.terminate().await, Some(0));
    let op = Operator::start(opts(&ns, &sim, "40s")).await;
    let o = wait_phase(&client, &ns, "r", "Succeeded", T).await;
    assert_eq!(reason(&o, "Ready"), "ResetVerified");
    assert_eq!(sim.executed_calls("job-vslow").len(), 1);
    op.terminate().await;
}

/// SIGKILL after the reset executed, before its answer was recorded: the next operator reports
/// the abandoned claim only after watching it, then verifies it from the job's state.
#[tokio::test]
async fn a_crash_after_the_reset_ran_is_verified_by_the_next_operator() {
    let (client, ns, sim) = setup_with_secret("v-crash").await;
    sim.script(
        "job-vcrash",
        [Answer::executed_then(Answer::gate(
            "crash",
            Answer::Success,
        ))],
    );
    let op = Operator::start(opts(&ns, &sim, "30s").set("--dts-timeout", "2s")).await;
    create(&client, &ns, "r", spec("job-vcrash")).await;
    tokio::time::timeout(T, sim.wait_for_gate_waiters("crash", 1))
        .await
        .expect("the call reaches the simulator");
    op.kill().await;
    sim.open_gate("crash");
    let op = Operator::start(opts(&ns, &sim, "30s")).await;
    let o = wait_phase(&client, &ns, "r", "Succeeded", Duration::from_secs(60)).await;
    assert_eq!(reason(&o, "Ready"), "ResetVerified");
    assert_eq!(
        sim.executed_calls("job-vcrash").len(),
        1,
        "one reset in all"
    );
    op.terminate().await;
}
