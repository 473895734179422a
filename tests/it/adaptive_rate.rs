//! The adaptive rate toward DTS end to end: the real operator against a simulator with a
//! server-side limit far below `--dts-qps`. Logical assertions only: every request ends with
//! exactly one executed call, every other call was a throttled one, and the permitted rate the
//! operator publishes fell below `--dts-qps`. How fast, and how many throttled answers, is the
//! benchmark's business (`examples/bench_adaptive.rs`).

use std::time::Duration;

use dts_simulator::{RateLimit, Simulator};

use crate::support::operator::*;

const N: usize = 30;

/// `dts_operator_dts_rate_limit` as the operator's /metrics shows it now.
async fn permitted_rate(op: &Operator) -> f64 {
    let text = op.wait_metrics(&["dts_operator_dts_rate_limit "], T).await;
    text.lines()
        .find_map(|l| l.strip_prefix("dts_operator_dts_rate_limit "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dts_operator_dts_rate_limit sample:\n{text}"))
}

const T: Duration = Duration::from_secs(30);

fn operator(ns: &str, sim: &Simulator) -> OperatorOptions {
    OperatorOptions::new(ns, &sim.url())
        .set("--dts-qps", "50")
        .set("--dts-burst", "10")
        // No reads before the claims: the reset bucket alone paces the calls.
        .set("--verify-window", "0")
}

#[tokio::test]
async fn a_server_limit_lowers_the_rate_and_every_request_ends_with_one_call() {
    let (client, ns) = setup("adaptive").await;
    create_default_secret(&client, &ns).await;
    let sim = Simulator::start().await;
    sim.add_access_key(AK_ID, AK_SECRET);
    sim.set_rate_limit(Some(RateLimit {
        rate: 5.0,
        burst: 2,
    }));
    let op = Operator::start(operator(&ns, &sim)).await;
    assert_eq!(permitted_rate(&op).await, 50.0, "starts at --dts-qps");
    for i in 0..N {
        let mut s = spec(&format!("job-{i}"));
        // Throttled calls are retried; the point here is the limiter, not RetriesExhausted.
        s.backoff_limit = Some(30);
        create(&client, &ns, &format!("r{i}"), s).await;
    }
    for i in 0..N {
        let o = wait_phase(
            &client,
            &ns,
            &format!("r{i}"),
            "Succeeded",
            Duration::from_secs(180),
        )
        .await;
        assert!(o.status.unwrap().attempts.unwrap_or(0) >= 1);
    }
    for i in 0..N {
        let job = format!("job-{i}");
        assert_eq!(sim.executed_calls(&job).len(), 1, "{job}");
    }
    let throttled = sim.throttled_calls().len();
    assert!(
        throttled > 0,
        "the server-side limit never answered Throttling.User"
    );
    // Every other ResetDtsJob call was refused by the limit, never executed.
    assert_eq!(sim.reset_calls().len(), N + throttled);
    let rate = permitted_rate(&op).await;
    assert!(rate < 50.0, "the permitted rate stayed at {rate}");
    assert!(rate > 0.0, "{rate}");
    op.terminate().await;
}

#[tokio::test]
async fn not_adaptive_keeps_the_rate_and_unlimited_reads_zero() {
    let (_client, ns) = setup("fixedrate").await;
    let sim = Simulator::start().await;
    let fixed = Operator::start(operator(&ns, &sim).set("--dts-adaptive-rate", "false")).await;
    assert_eq!(permitted_rate(&fixed).await, 50.0);
    fixed.terminate().await;
    let unlimited = Operator::start(operator(&ns, &sim).set("--dts-qps", "0")).await;
    assert_eq!(permitted_rate(&unlimited).await, 0.0);
    unlimited.terminate().await;
}
