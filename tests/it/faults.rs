//! The fault tools themselves (`support/faults.rs`), proven against the real things they stand
//! between: toxiproxy in front of the real kube-apiserver, libfaketime under real processes
//! (the operator binary among them), and kube-apiserver's own API Priority and Fairness. The
//! scenarios built on them live with the behaviour they test.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::Client;

use crate::support::cluster::cluster;
use crate::support::faults::*;
use crate::support::operator::*;

/// A kube client through `kubeconfig`, without kube's retry layer (it would retry 429s and
/// hide them) and with bounded connection and read times.
async fn client_without_retries(kubeconfig: &std::path::Path) -> Client {
    let mut config = config_from(kubeconfig).await;
    config.default_retry = false;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(5));
    Client::try_from(config).expect("kube client")
}

/// One GET (`/version`) through `client`, bounded by `bound`: `None` when the bound passed,
/// else the outcome and how long it took.
async fn timed_get(client: &Client, bound: Duration) -> Option<(Result<(), String>, Duration)> {
    let start = Instant::now();
    match tokio::time::timeout(bound, client.apiserver_version()).await {
        Ok(outcome) => Some((
            outcome.map(|_| ()).map_err(|e| e.to_string()),
            start.elapsed(),
        )),
        Err(_) => None,
    }
}

async fn get_ok(client: &Client, what: &str) -> Duration {
    match timed_get(client, Duration::from_secs(10)).await {
        Some((Ok(()), took)) => took,
        other => panic!("{what}: GET /version through the proxy: {other:?}"),
    }
}

#[tokio::test]
async fn latency_on_the_apiserver_proxy_delays_every_answer_by_at_least_the_latency() {
    let proxy = toxiproxy().await.apiserver_proxy("it-latency").await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_without_retries(&kubeconfig_through(&proxy, dir.path()).await).await;
    // Connected (TLS to the real server, through the proxy) before the toxic: toxics act on
    // live connections too, as a slow network would.
    get_ok(&client, "before the toxic").await;

    let latency = Duration::from_millis(1000);
    let toxic = proxy
        .latency(Stream::Downstream, latency.as_millis() as u64, 0)
        .await;
    for i in 0..2 {
        let took = get_ok(&client, "with latency").await;
        assert!(
            took >= latency,
            "GET {i} took {took:?} with a {latency:?} latency toxic"
        );
    }
    proxy.remove(&toxic).await;
    let took = get_ok(&client, "after removal").await;
    assert!(
        took < latency,
        "GET took {took:?} after the latency toxic was removed"
    );
}

#[tokio::test]
async fn a_black_hole_holds_a_request_until_the_client_gives_up_and_removing_it_lets_the_next_through()
 {
    let proxy = toxiproxy().await.apiserver_proxy("it-blackhole").await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_without_retries(&kubeconfig_through(&proxy, dir.path()).await).await;
    get_ok(&client, "before the black hole").await;

    let hole = proxy.black_hole(Stream::Upstream).await;
    let bound = Duration::from_secs(2);
    let start = Instant::now();
    let outcome = timed_get(&client, bound).await;
    assert!(
        outcome.is_none(),
        "a request into the black hole ended after {:?}: {outcome:?}",
        start.elapsed()
    );
    // A new connection is swallowed the same way (the TLS handshake never completes).
    let fresh = client_without_retries(&kubeconfig_through(&proxy, dir.path()).await).await;
    assert!(timed_get(&fresh, bound).await.is_none());

    proxy.remove(&hole).await;
    // The same client: its connection that lost a request is dropped with the request, and
    // the next one is a new connection.
    get_ok(&client, "after the black hole was removed").await;
    get_ok(&fresh, "after the black hole was removed (second client)").await;
}

#[tokio::test]
async fn disable_refuses_connections_and_enable_restores_them() {
    let proxy = toxiproxy().await.apiserver_proxy("it-partition").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_through(&proxy, dir.path()).await;
    let client = client_without_retries(&kubeconfig).await;
    get_ok(&client, "before the partition").await;

    proxy.disable().await;
    let refused =
        std::net::TcpStream::connect_timeout(&proxy.listen_addr(), Duration::from_secs(2));
    assert_eq!(
        refused.as_ref().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "connecting to a disabled proxy: {refused:?}"
    );
    match timed_get(&client, Duration::from_secs(10)).await {
        Some((Err(_), _)) => {}
        other => panic!("GET through a disabled proxy: {other:?}"),
    }

    proxy.enable().await;
    std::net::TcpStream::connect_timeout(&proxy.listen_addr(), Duration::from_secs(2))
        .expect("the proxy listens again on the same address");
    let fresh = client_without_retries(&kubeconfig).await;
    get_ok(&fresh, "after enable").await;
}

#[tokio::test]
async fn reset_peer_breaks_a_request_with_a_connection_error_not_a_timeout() {
    let proxy = toxiproxy().await.apiserver_proxy("it-reset").await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_without_retries(&kubeconfig_through(&proxy, dir.path()).await).await;
    get_ok(&client, "before the reset toxic").await;

    let reset = proxy.reset_peer(Stream::Upstream, 0).await;
    match timed_get(&client, Duration::from_secs(4)).await {
        Some((Err(e), _)) => eprintln!("reset_peer: {e}"),
        other => panic!("GET through reset_peer: {other:?}"),
    }
    proxy.remove(&reset).await;
    let fresh = client_without_retries(&kubeconfig_through(&proxy, dir.path()).await).await;
    get_ok(&fresh, "after removal").await;
}

#[tokio::test]
async fn a_token_kubeconfig_goes_through_the_proxy_with_its_own_credentials() {
    let (_admin, ns) = setup("faults-token").await;
    wait_listable(&format!(
        "/apis/dtsops.io/v1alpha1/namespaces/{ns}/dtsjobresets"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_kubeconfig = operator_service_account(dir.path(), &ns, "op").await;
    let proxy = toxiproxy().await.apiserver_proxy("it-token").await;
    let through = kubeconfig_file_through(&proxy, &token_kubeconfig, dir.path());
    let client = client_without_retries(&through).await;
    let api: kube::Api<dts_operator::crd::DtsJobReset> = kube::Api::namespaced(client, &ns);
    api.list(&Default::default())
        .await
        .expect("the operator's account may list its resources, through the proxy");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(api.into_client(), &ns);
    let err = secrets
        .list(&Default::default())
        .await
        .expect_err("the operator's account may not list Secrets");
    assert!(crate::support::cluster::is_forbidden(&err), "{err}");
    // A partition cuts it off: the requests did go through the proxy.
    proxy.disable().await;
    let cut = client_without_retries(&through).await;
    let version = cut.apiserver_version().await;
    assert!(version.is_err(), "through a disabled proxy: {version:?}");
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `date +%s` from a shell under faketime, and from that shell's own child.
async fn dates_under(offset: &str) -> (i64, i64) {
    let out = faketime_command(offset, "sh")
        .args(["-c", "date +%s; sh -c 'date +%s'"])
        .output()
        .await
        .expect("sh runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text
        .lines()
        .map(|l| l.trim().parse::<i64>().expect("seconds"));
    (lines.next().unwrap(), lines.next().unwrap())
}

#[tokio::test]
async fn faketime_shifts_the_wall_clock_of_a_child_and_its_children_but_not_ours() {
    for (offset, shift) in [("+15s", 15), ("-15s", -15), ("+2m", 120)] {
        let before = now_s();
        let (child, grandchild) = dates_under(offset).await;
        let after = now_s();
        for (who, seen) in [("child", child), ("grandchild", grandchild)] {
            assert!(
                (before + shift - 1..=after + shift + 1).contains(&seen),
                "{offset}: the {who} saw {seen}, the host {before}..{after}"
            );
        }
    }
    let out = tokio::process::Command::new("date")
        .arg("+%s")
        .output()
        .await
        .unwrap();
    let plain: i64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (plain - now_s()).abs() <= 1,
        "without faketime: {plain} vs {}",
        now_s()
    );
}

#[test]
#[should_panic(expected = "faketime offset")]
fn a_faketime_offset_without_a_sign_is_refused() {
    // Without a sign libfaketime reads an absolute date: never what a skew test means.
    faketime_env("15s");
}

#[tokio::test]
async fn an_operator_under_faketime_stamps_its_status_with_its_own_shifted_clock() {
    let (client, ns) = setup("faketime-op").await;
    create_default_secret(&client, &ns).await;
    let sim = dts_simulator::Simulator::start().await;
    sim.add_access_key(AK_ID, AK_SECRET);
    // Ready, a claim, a call and its record: tokio's timers and the HTTP clients work under
    // the preloaded library.
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url()).faketime("+15s")).await;
    create(&client, &ns, "r", spec("job-faketime")).await;
    let done = wait_phase(&client, &ns, "r", "Succeeded", Duration::from_secs(30)).await;
    assert_eq!(sim.executed_calls("job-faketime").len(), 1);
    // creationTimestamp is the API server's (real) clock, lastAttemptTime the operator's.
    let created = done.metadata.creation_timestamp.clone().unwrap().0;
    let st = done.status.clone().unwrap();
    let attempted = st.last_attempt_time.clone().unwrap().0;
    let ahead = attempted.as_second() - created.as_second();
    eprintln!("faketime +15s: lastAttemptTime {attempted}, creationTimestamp {created}");
    assert!(
        (13..=25).contains(&ahead),
        "lastAttemptTime {attempted} is {ahead} s after creationTimestamp {created}"
    );
    op.terminate().await;
}

#[tokio::test]
async fn apf_throttles_one_service_account_with_real_429s_and_not_the_admin() {
    let (_admin, ns) = setup("faults-apf").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = operator_service_account(dir.path(), &ns, "throttled").await;
    let throttle = throttle_service_account(&ns, "throttled", ApfOptions::default()).await;

    let sa = client_without_retries(&kubeconfig).await;
    let path = format!("/apis/dtsops.io/v1alpha1/namespaces/{ns}/dtsjobresets");
    wait_listable(&path).await;
    // One seat: a 429 needs two requests in the server at once, which a fast local LIST does not
    // always give on a busy machine. A few bursts, then the verdict.
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers = burst(&sa, &path, 100).await;
        if answers.iter().any(|a| a.status == 429) {
            break;
        }
    }
    let counts = status_counts(&answers);
    eprintln!("throttled account, 100 at once: {counts:?}");
    let rejected: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(
        !rejected.is_empty(),
        "no 429 for 100 concurrent requests: {counts:?}"
    );
    for a in &rejected {
        assert_eq!(
            a.priority_level_uid.as_deref(),
            Some(throttle.priority_level_uid()),
            "a 429 from another priority level: {a:?}"
        );
        assert!(a.retry_after.is_some(), "a 429 without Retry-After: {a:?}");
    }
    assert!(
        answers.iter().all(|a| a.status == 200 || a.status == 429),
        "{counts:?}"
    );

    let mut config = cluster().await.config();
    config.default_retry = false;
    let admin_raw = Client::try_from(config).unwrap();
    let admin_counts = status_counts(&burst(&admin_raw, &path, 100).await);
    eprintln!("admin, 100 at once: {admin_counts:?}");
    assert_eq!(admin_counts.get(&200), Some(&100), "{admin_counts:?}");

    throttle.remove().await;
    let after = status_counts(&burst(&sa, &path, 100).await);
    eprintln!("the account after removal, 100 at once: {after:?}");
    assert_eq!(after.get(&200), Some(&100), "{after:?}");
}
