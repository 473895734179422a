//! The operator end to end: the real `dts-operator run` process, the real kube-apiserver + etcd,
//! and the signature-checking DTS simulator. Every test counts the calls the simulator saw.

use std::time::Duration;

use dts_operator::crd::DtsJobReset;
use dts_simulator::{Answer, Simulator};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};

use crate::support::operator::*;

const T: Duration = Duration::from_secs(30);

/// Waits (bounded) until one request is held at the simulator's gate `name`.
async fn wait_gate(sim: &Simulator, name: &str, op: &Operator) {
    tokio::time::timeout(T, sim.wait_for_gate_waiters(name, 1))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no call reached gate {name} within {T:?}; calls: {:?}\noperator log:\n{}",
                sim.calls(),
                op.logs()
            )
        });
}

async fn patch_merge(client: &kube::Client, ns: &str, name: &str, v: serde_json::Value) {
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::default(), &Patch::Merge(v))
        .await
        .expect("patch");
}

#[tokio::test]
async fn happy_path_status_conditions_events_columns_metrics() {
    let (client, ns, sim) = setup_with_secret("happy").await;
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    let mut s = spec("job-happy");
    s.dts_instance_id = Some("dtsjobhappy".into());
    create(&client, &ns, "happy", s).await;
    let o = wait_phase(&client, &ns, "happy", "Succeeded", T).await;
    let st = o.status.clone().unwrap();
    assert_eq!(st.success, Some(true));
    assert_eq!(st.attempts, Some(1));
    assert_eq!(st.http_status_code, Some(200));
    assert!(st.request_id.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(st.err_code, None);
    assert_eq!(st.observed_generation, o.metadata.generation);
    let req = st.request.clone().unwrap();
    assert_eq!(req.dts_job_id, "job-happy");
    assert_eq!(req.region_id, "cn-hangzhou");
    assert_eq!(req.dts_instance_id.as_deref(), Some("dtsjobhappy"));
    assert!(
        st.start_time.is_some() && st.last_attempt_time.is_some() && st.completion_time.is_some()
    );
    assert_eq!(st.claimed_by, None);
    let ready = condition(&o, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "ResetSucceeded")
    );
    assert_eq!(ready.observed_generation, o.metadata.generation);
    assert_eq!(condition(&o, "Reconciling").unwrap().status, "False");
    assert_eq!(condition(&o, "Stalled").unwrap().status, "False");

    let calls = sim.executed_calls("job-happy");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].params.get("DtsInstanceId").map(String::as_str),
        Some("dtsjobhappy")
    );
    assert_eq!(calls[0].request_id, st.request_id);

    let evs = wait_event(&client, &ns, "happy", "ResetSucceeded", T).await;
    assert!(
        evs.iter()
            .any(|(t, r, _)| t == "Normal" && r == "ResetRequested"),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|(t, r, _)| t == "Normal" && r == "ResetSucceeded"),
        "{evs:?}"
    );

    let (ok, out, err) = kubectl(&["get", "dtsreset", "-n", &ns]).await;
    assert!(ok, "{err}");
    let header = out.lines().next().unwrap();
    for col in [
        "NAME",
        "JOB ID",
        "REGION",
        "PHASE",
        "SUCCESS",
        "REQUEST ID",
        "ATTEMPTS",
        "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing: {header}");
    }
    assert!(
        out.contains("job-happy") && out.contains("Succeeded") && out.contains("true"),
        "{out}"
    );
    let (ok, _, err) = kubectl(&[
        "wait",
        "--for=condition=Ready",
        "-n",
        &ns,
        "dtsjobreset/happy",
        "--timeout=10s",
    ])
    .await;
    assert!(ok, "kubectl wait: {err}");

    op.wait_metrics(
        &[
            "dts_operator_dts_requests_total{action=\"ResetDtsJob\",outcome=\"succeeded\",code=\"\"} 1",
            "dts_operator_resources{phase=\"Succeeded\"} 1",
            "dts_operator_leader 1",
            "dts_operator_reconciles_total{result=\"ok\",category=\"\"}",
            "dts_operator_dts_request_duration_seconds_count{action=\"ResetDtsJob\"} 1",
        ],
        T,
    )
    .await;
    assert_eq!(op.admin_get("/healthz").await.0, 200);
    // Nothing more is sent, whatever happens next.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.executed_calls("job-happy").len(), 1);
    assert_eq!(op.terminate().await, Some(0));
}

#[tokio::test]
async fn throttled_twice_then_success_and_service_unavailable() {
    let (client, ns, sim) = setup_with_secret("throttle").await;
    sim.script(
        "job-t",
        [Answer::throttling(), Answer::throttling(), Answer::Success],
    );
    sim.script("job-u", [Answer::service_unavailable(), Answer::Success]);
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "t", spec("job-t")).await;
    create(&client, &ns, "u", spec("job-u")).await;
    let t = wait_phase(&client, &ns, "t", "Succeeded", T).await;
    assert_eq!(t.status.as_ref().unwrap().attempts, Some(3));
    let u = wait_phase(&client, &ns, "u", "Succeeded", T).await;
    assert_eq!(u.status.as_ref().unwrap().attempts, Some(2));
    let calls = sim.executed_calls("job-t");
    assert_eq!(calls.len(), 3);
    // Backoff honoured between attempts (full jitter may be small, but never negative, and the
    // attempts are not all at once).
    assert!(calls[2].received_at > calls[0].received_at);
    assert_eq!(sim.executed_calls("job-u").len(), 2);
    wait_event(&client, &ns, "t", "ResetSucceeded", T).await;
    // Each retry is its own Event (the operator keeps no Events to patch into a series): one per
    // throttled answer, each observed once.
    let retrying: Vec<_> =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("t")
                    && e.reason.as_deref() == Some("ResetRetrying")
            })
            .collect();
    assert_eq!(retrying.len(), 2, "{retrying:?}");
    assert!(
        retrying
            .iter()
            .all(|e| e.series.is_none() && e.type_.as_deref() == Some("Warning")),
        "{retrying:?}"
    );
    op.wait_metrics(
        &[
            "dts_operator_retries_total{reason=\"Throttled\"} 2",
            "dts_operator_retries_total{reason=\"ServiceUnavailable\"} 1",
        ],
        T,
    )
    .await;
    op.terminate().await;
}

#[tokio::test]
async fn retry_after_hint_is_durable_in_status() {
    let (client, ns, sim) = setup_with_secret("hint").await;
    sim.script(
        "job-h",
        [
            Answer::throttling().with_retry_after_ms(3000),
            Answer::Success,
        ],
    );
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "h", spec("job-h")).await;
    let o = wait_phase(&client, &ns, "h", "Retrying", T).await;
    let st = o.status.unwrap();
    let next = st.next_attempt_time.unwrap().0;
    let last = st.last_attempt_time.unwrap().0;
    assert!(
        next.duration_since(last) >= jiff::SignedDuration::from_millis(2900),
        "{last} → {next}"
    );
    assert_eq!(
        condition(
            &wait_phase(&client, &ns, "h", "Retrying", T).await,
            "Reconciling"
        )
        .unwrap()
        .reason,
        "Throttled"
    );
    // An unrelated change does not skip the backoff.
    patch_merge(
        &client,
        &ns,
        "h",
        serde_json::json!({"metadata": {"labels": {"touched": "yes"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sim.executed_calls("job-h").len(), 1);
    wait_phase(&client, &ns, "h", "Succeeded", T).await;
    let calls = sim.executed_calls("job-h");
    assert_eq!(calls.len(), 2);
    let gap = calls[1].received_at.duration_since(calls[0].received_at);
    assert!(
        gap >= jiff::SignedDuration::from_millis(2900),
        "gap {gap:?}\n{}",
        op.logs()
    );
    op.terminate().await;
}

#[tokio::test]
async fn retries_exhausted_is_failed() {
    let (client, ns, sim) = setup_with_secret("exhaust").await;
    sim.script("job-x", (0..5).map(|_| Answer::throttling()));
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    let mut s = spec("job-x");
    s.backoff_limit = Some(2);
    create(&client, &ns, "x", s).await;
    let o = wait_phase(&client, &ns, "x", "Failed", T).await;
    let st = o.status.clone().unwrap();
    assert_eq!(st.attempts, Some(3));
    assert_eq!(st.err_code.as_deref(), Some("Throttling.User"));
    let stalled = condition(&o, "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "RetriesExhausted")
    );
    assert_eq!(sim.executed_calls("job-x").len(), 3);
    wait_event(&client, &ns, "x", "ResetFailed", T).await;
    op.terminate().await;
}

#[tokio::test]
async fn terminal_answers_fail_after_one_call() {
    let (client, ns, sim) = setup_with_secret("terminal").await;
    sim.script(
        "job-4xx",
        [Answer::DtsError {
            http_status: 400,
            err_code: "InvalidParameter".into(),
            err_message: "The Value of Input Parameter %s is not valid.".into(),
            dynamic_message: Some("DtsJobId".into()),
            dynamic_code: Some("403".into()),
        }],
    );
    sim.script(
        "job-200",
        [Answer::dts_error(
            "Forbidden.InstanceNotFound",
            "The job %s does not exist.",
            Some("job-200"),
        )],
    );
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "a", spec("job-4xx")).await;
    create(&client, &ns, "b", spec("job-200")).await;
    let a = wait_phase(&client, &ns, "a", "Failed", T).await;
    let st = a.status.clone().unwrap();
    assert_eq!(st.err_code.as_deref(), Some("InvalidParameter"));
    assert_eq!(
        st.err_message.as_deref(),
        Some("The Value of Input Parameter %s is not valid."),
        "as returned"
    );
    assert_eq!(st.dynamic_message.as_deref(), Some("DtsJobId"));
    assert_eq!(st.dynamic_code.as_deref(), Some("403"));
    assert_eq!(st.success, Some(false));
    let c = condition(&a, "Stalled").unwrap();
    assert_eq!(c.reason, "ResetFailed");
    assert!(
        c.message
            .contains("The Value of Input Parameter DtsJobId is not valid."),
        "{}",
        c.message
    );
    let b = wait_phase(&client, &ns, "b", "Failed", T).await;
    assert_eq!(b.status.as_ref().unwrap().http_status_code, Some(200));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.executed_calls("job-4xx").len(), 1);
    assert_eq!(sim.executed_calls("job-200").len(), 1);
    op.terminate().await;
}

#[tokio::test]
async fn unknown_outcomes_are_never_retried() {
    let (client, ns, sim) = setup_with_secret("unknown").await;
    sim.script("job-500", [Answer::internal_error(), Answer::Success]);
    sim.script(
        "job-hang",
        [Answer::hang(Duration::from_secs(6)), Answer::Success],
    );
    sim.script(
        "job-junk",
        [Answer::raw(200, "text/plain", "garbage"), Answer::Success],
    );
    // Verification off: this is about the outcome itself (tests/it/verification.rs proves more).
    let op =
        Operator::start(OperatorOptions::new(&ns, &sim.url()).set("--verify-window", "0")).await;
    for (name, job) in [("a", "job-500"), ("b", "job-hang"), ("c", "job-junk")] {
        create(&client, &ns, name, spec(job)).await;
    }
    for (name, job) in [("a", "job-500"), ("b", "job-hang"), ("c", "job-junk")] {
        let o = wait_phase(&client, &ns, name, "Unknown", T).await;
        let c = condition(&o, "Stalled").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "OutcomeUnknown"),
            "{name}"
        );
        assert!(
            c.message.contains("DTS console") && c.message.contains("dtsops.io/requested-at"),
            "{}",
            c.message
        );
        wait_event(&client, &ns, name, "OutcomeUnknown", T).await;
        assert_eq!(sim.executed_calls(job).len(), 1, "{job}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for job in ["job-500", "job-hang", "job-junk"] {
        assert_eq!(
            sim.executed_calls(job).len(),
            1,
            "{job} must not be retried"
        );
    }
    op.terminate().await;
}

#[tokio::test]
async fn expired_token_with_rotated_secret_refreshes_once() {
    let (client, ns) = setup("rotate").await;
    let sim = simulator().await;
    sim.add_sts_key("STS.old", "old-secret", "old-token");
    sim.add_sts_key("STS.new", "new-secret", "new-token");
    create_secret(
        &client,
        &ns,
        "creds",
        &[
            ("accessKeyId", "STS.old"),
            ("accessKeySecret", "old-secret"),
            ("securityToken", "old-token"),
        ],
    )
    .await;
    // The first call is held until the Secret has been rotated, then told its token expired.
    sim.script(
        "job-r",
        [
            Answer::gate(
                "rotate",
                Answer::gateway_error(
                    403,
                    "InvalidSecurityToken.Expired",
                    "Specified SecurityToken is expired.",
                ),
            ),
            Answer::Success,
        ],
    );
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "r", spec("job-r")).await;
    wait_gate(&sim, "rotate", &op).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"accessKeyId": "STS.new", "accessKeySecret": "new-secret", "securityToken": "new-token"}})),
        )
        .await
        .unwrap();
    sim.open_gate("rotate");
    let o = wait_for(&client, &ns, "r", T, |o| {
        phase(o) == "Succeeded" || phase(o) == "Failed"
    })
    .await;
    assert_eq!(phase(&o), "Succeeded", "{:?}", o.status);
    assert_eq!(o.status.as_ref().unwrap().attempts, Some(2));
    let calls = sim.executed_calls("job-r");
    assert_eq!(calls.len(), 2, "exactly one refresh");
    assert_eq!(calls[0].access_key_id.as_deref(), Some("STS.old"));
    assert_eq!(
        calls[1].access_key_id.as_deref(),
        Some("STS.new"),
        "the Secret is read fresh"
    );
    op.terminate().await;
}

#[tokio::test]
async fn expired_token_twice_is_failed() {
    let (client, ns) = setup("expired").await;
    let sim = simulator().await;
    sim.add_sts_key("STS.old", "old-secret", "old-token");
    sim.expire_token("old-token");
    create_secret(
        &client,
        &ns,
        "creds",
        &[
            ("accessKeyId", "STS.old"),
            ("accessKeySecret", "old-secret"),
            ("securityToken", "old-token"),
        ],
    )
    .await;
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "e", spec("job-e")).await;
    let o = wait_phase(&client, &ns, "e", "Failed", T).await;
    let st = o.status.clone().unwrap();
    assert_eq!(st.attempts, Some(2));
    assert_eq!(st.err_code.as_deref(), Some("InvalidSecurityToken.Expired"));
    assert_eq!(st.credentials_refreshed, Some(true));
    assert_eq!(condition(&o, "Stalled").unwrap().reason, "ResetFailed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.reset_calls().len(), 2);
    op.terminate().await;
}

#[tokio::test]
async fn secret_created_later_then_success() {
    let (client, ns) = setup("later").await;
    let sim = simulator().await;
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "w", spec("job-w")).await;
    let o = wait_for(&client, &ns, "w", T, |o| {
        condition(o, "Reconciling").is_some_and(|c| c.reason == "WaitingForSecret")
    })
    .await;
    assert_eq!(phase(&o), "Pending");
    assert_eq!(condition(&o, "Stalled").unwrap().status, "False");
    assert_eq!(sim.reset_calls().len(), 0);
    create_default_secret(&client, &ns).await;
    wait_phase(&client, &ns, "w", "Succeeded", T).await;
    assert_eq!(sim.executed_calls("job-w").len(), 1);
    op.terminate().await;
}

#[tokio::test]
async fn new_request_only_on_call_parameters_or_annotation() {
    let (client, ns, sim) = setup_with_secret("trigger").await;
    create_secret(
        &client,
        &ns,
        "creds2",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    )
    .await;
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "p", spec("job-p1")).await;
    wait_phase(&client, &ns, "p", "Succeeded", T).await;
    assert_eq!(sim.executed_calls("job-p1").len(), 1);

    // Tuning fields, credentials, labels, endpoint-like fields: no call.
    patch_merge(&client, &ns, "p", serde_json::json!({
        "metadata": {"labels": {"team": "data"}},
        "spec": {"backoffLimit": 3, "credentials": {"secretRef": {"name": "creds2"}}, "signatureVersion": "v1", "ttlSecondsAfterFinished": 3600}
    }))
    .await;
    let o = wait_for(&client, &ns, "p", T, |o| {
        o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
    })
    .await;
    assert_eq!(phase(&o), "Succeeded");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sim.reset_calls().len(),
        1,
        "no call for non-request changes"
    );

    // A call parameter: one new call.
    patch_merge(
        &client,
        &ns,
        "p",
        serde_json::json!({"spec": {"synchronizationDirection": "Reverse"}}),
    )
    .await;
    wait_for(&client, &ns, "p", T, |o| {
        phase(o) == "Succeeded"
            && o.status
                .as_ref()
                .and_then(|s| s.request.as_ref())
                .and_then(|r| r.synchronization_direction.as_deref())
                == Some("Reverse")
    })
    .await;
    assert_eq!(sim.executed_calls("job-p1").len(), 2);
    let last = sim.executed_calls("job-p1").pop().unwrap();
    assert_eq!(
        last.params
            .get("SynchronizationDirection")
            .map(String::as_str),
        Some("Reverse")
    );
    assert_eq!(
        last.style,
        dts_simulator::Style::V1,
        "signatureVersion is used for the next request"
    );

    // The annotation: one new call with the same parameters.
    patch_merge(&client, &ns, "p", serde_json::json!({"metadata": {"annotations": {"dtsops.io/requested-at": "2026-11-28T10:00:00Z"}}})).await;
    let o = wait_for(&client, &ns, "p", T, |o| {
        phase(o) == "Succeeded"
            && o.status
                .as_ref()
                .and_then(|s| s.last_handled_request.as_deref())
                == Some("2026-11-28T10:00:00Z")
    })
    .await;
    assert_eq!(o.status.as_ref().unwrap().attempts, Some(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.executed_calls("job-p1").len(), 3);
    op.terminate().await;
}

#[tokio::test]
async fn two_resources_for_one_job_never_overlap() {
    let (client, ns, sim) = setup_with_secret("overlap").await;
    sim.script(
        "job-o",
        [Answer::gate("first", Answer::Success), Answer::Success],
    );
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "one", spec("job-o")).await;
    wait_gate(&sim, "first", &op).await;
    create(&client, &ns, "two", spec("job-o")).await;
    let two = wait_for(&client, &ns, "two", T, |o| {
        condition(o, "Reconciling").is_some_and(|c| c.reason == "ConcurrentRequest")
    })
    .await;
    assert_eq!(phase(&two), "Pending");
    assert_eq!(sim.executed_calls("job-o").len(), 1);
    sim.open_gate("first");
    wait_phase(&client, &ns, "one", "Succeeded", T).await;
    wait_phase(&client, &ns, "two", "Succeeded", T).await;
    assert_eq!(sim.executed_calls("job-o").len(), 2);
    assert_eq!(sim.max_in_flight("cn-hangzhou", "job-o"), 1);
    op.terminate().await;
}

#[tokio::test]
async fn graceful_restart_while_in_flight_records_the_answer() {
    let (client, ns, sim) = setup_with_secret("graceful").await;
    sim.script("job-g", [Answer::gate("g", Answer::Success)]);
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "g", spec("job-g")).await;
    wait_gate(&sim, "g", &op).await;
    let running = wait_phase(&client, &ns, "g", "Running", T).await;
    assert!(running.status.as_ref().unwrap().claimed_by.is_some());
    // SIGTERM while the call is in flight; the answer arrives during the shutdown window.
    let opener = {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            sim.open_gate("g");
        })
    };
    let code = op.terminate().await;
    opener.await.unwrap();
    assert_eq!(code, Some(0));
    let o = wait_phase(&client, &ns, "g", "Succeeded", Duration::from_secs(5)).await;
    assert_eq!(o.status.as_ref().unwrap().attempts, Some(1));
    // A new controller finds the answer recorded and sends nothing.
    let op2 = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.executed_calls("job-g").len(), 1);
    op2.terminate().await;
}

#[tokio::test]
async fn abrupt_crash_while_in_flight_is_reported_unknown() {
    let (client, ns, sim) = setup_with_secret("crash").await;
    sim.script(
        "job-c",
        [Answer::gate("c", Answer::Success), Answer::Success],
    );
    // Verification off: this is about the claim itself (tests/it/verification.rs proves more).
    let opts = || OperatorOptions::new(&ns, &sim.url()).set("--verify-window", "0");
    let op = Operator::start(opts()).await;
    create(&client, &ns, "c", spec("job-c")).await;
    wait_gate(&sim, "c", &op).await;
    op.kill().await;
    sim.open_gate("c");
    // The claim stays; a new controller waits for its deadline, then reports Unknown.
    let op2 = Operator::start(opts()).await;
    let o = wait_phase(&client, &ns, "c", "Unknown", Duration::from_secs(40)).await;
    assert_eq!(condition(&o, "Stalled").unwrap().reason, "OutcomeUnknown");
    assert_eq!(o.status.as_ref().unwrap().attempts, Some(1));
    wait_event(&client, &ns, "c", "OutcomeUnknown", T).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.executed_calls("job-c").len(), 1, "never re-sent");
    op2.terminate().await;
}

#[tokio::test]
async fn restart_during_backoff_keeps_the_schedule_and_after_success_sends_nothing() {
    let (client, ns, sim) = setup_with_secret("backoff").await;
    sim.script(
        "job-b",
        [
            Answer::throttling().with_retry_after_ms(2500),
            Answer::Success,
        ],
    );
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    create(&client, &ns, "b", spec("job-b")).await;
    wait_phase(&client, &ns, "b", "Retrying", T).await;
    op.kill().await;
    let op2 = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    let o = wait_phase(&client, &ns, "b", "Succeeded", T).await;
    assert_eq!(o.status.as_ref().unwrap().attempts, Some(2));
    let calls = sim.executed_calls("job-b");
    assert_eq!(calls.len(), 2);
    assert!(
        calls[1].received_at.duration_since(calls[0].received_at)
            >= jiff::SignedDuration::from_millis(2400)
    );
    op2.kill().await;
    let op3 = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.executed_calls("job-b").len(), 2);
    op3.terminate().await;
}

#[tokio::test]
async fn two_controllers_without_leader_election_send_one_call() {
    let (client, ns, sim) = setup_with_secret("twoctl").await;
    sim.script("job-2", [Answer::hang(Duration::from_millis(500))]);
    let a = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    let b = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    for i in 0..5 {
        create(&client, &ns, &format!("r{i}"), spec(&format!("job-2-{i}"))).await;
    }
    create(&client, &ns, "main", spec("job-2")).await;
    wait_phase(&client, &ns, "main", "Succeeded", T).await;
    for i in 0..5 {
        wait_phase(&client, &ns, &format!("r{i}"), "Succeeded", T).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.executed_calls("job-2").len(), 1);
    for i in 0..5 {
        assert_eq!(sim.executed_calls(&format!("job-2-{i}")).len(), 1);
    }
    a.terminate().await;
    b.terminate().await;
}

fn leader_opts(ns: &str, url: &str) -> OperatorOptions {
    OperatorOptions::new(ns, url)
        .arg("--leader-elect")
        .arg("--leader-election-namespace")
        .arg(ns)
        .arg("--leader-election-lease-duration")
        .arg("4s")
}

#[tokio::test]
async fn leader_election_only_the_leader_acts_and_a_standby_takes_over() {
    let (client, ns, sim) = setup_with_secret("leader").await;
    let leader = Operator::start(leader_opts(&ns, &sim.url())).await;
    // Wait until the first one holds the lease before starting the standby.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns);
    for _ in 0..100 {
        if leases.get_opt("dts-operator").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let standby = Operator::start(leader_opts(&ns, &sim.url())).await;
    let (_, m) = standby.admin_get("/metrics").await;
    assert!(m.contains("dts_operator_leader 0"), "{m}");
    let (_, m) = leader.admin_get("/metrics").await;
    assert!(m.contains("dts_operator_leader 1"), "{m}");
    create(&client, &ns, "l1", spec("job-l1")).await;
    wait_phase(&client, &ns, "l1", "Succeeded", T).await;
    assert!(
        !standby.logs().contains("ResetDtsJob answered"),
        "the standby must not act"
    );
    // Crash the leader: the standby takes over after the lease expires.
    let killed_at = std::time::Instant::now();
    leader.kill().await;
    create(&client, &ns, "l2", spec("job-l2")).await;
    wait_phase(&client, &ns, "l2", "Succeeded", T).await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(15),
        "failover took {:?}",
        killed_at.elapsed()
    );
    let (_, m) = standby.admin_get("/metrics").await;
    assert!(m.contains("dts_operator_leader 1"), "{m}");
    assert_eq!(sim.executed_calls("job-l1").len(), 1);
    assert_eq!(sim.executed_calls("job-l2").len(), 1);
    assert_eq!(standby.terminate().await, Some(0));
}

#[tokio::test]
async fn ttl_deletes_finished_resources() {
    let (client, ns, sim) = setup_with_secret("ttl").await;
    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    let mut s = spec("job-ttl");
    s.ttl_seconds_after_finished = Some(1);
    create(&client, &ns, "ttl", s).await;
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    let start = std::time::Instant::now();
    while api.get_opt("ttl").await.unwrap().is_some() {
        assert!(start.elapsed() < T, "not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sim.executed_calls("job-ttl").len(), 1);
    op.terminate().await;
}

#[tokio::test]
async fn invalid_resources_are_refused_with_the_field_named() {
    let (client, ns) = setup("invalid").await;
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    let cases = [
        (serde_json::json!({}), "dtsJobId"),
        (serde_json::json!({"dtsJobId": ""}), "dtsJobId"),
        (serde_json::json!({"dtsJobId": "has space"}), "dtsJobId"),
        (serde_json::json!({"dtsJobId": "x".repeat(65)}), "dtsJobId"),
        (
            serde_json::json!({"dtsJobId": "j", "synchronizationDirection": "Sideways"}),
            "synchronizationDirection",
        ),
        (
            serde_json::json!({"dtsJobId": "j", "signatureVersion": "v2"}),
            "signatureVersion",
        ),
        (
            serde_json::json!({"dtsJobId": "j", "regionId": "Hangzhou"}),
            "regionId",
        ),
        (
            serde_json::json!({"dtsJobId": "j", "backoffLimit": -1}),
            "backoffLimit",
        ),
        (
            serde_json::json!({"dtsJobId": "j", "ttlSecondsAfterFinished": -5}),
            "ttlSecondsAfterFinished",
        ),
        (
            serde_json::json!({"dtsJobId": "j", "endpoint": "http://dts.aliyuncs.com"}),
            "endpoint",
        ),
        (
            serde_json::json!({"dtsJobId": "j", "endpoint": "https://dts.aliyuncs.com/path"}),
            "endpoint",
        ),
        (
            serde_json::json!({"dtsJobId": "j", "credentials": {"secretRef": {}}}),
            "name",
        ),
        (
            serde_json::json!({"dtsJobId": "j", "credentials": {"secretRef": {"name": "Bad_Name"}}}),
            "name",
        ),
    ];
    for (i, (spec, field)) in cases.into_iter().enumerate() {
        let obj = serde_json::json!({
            "apiVersion": "dtsops.io/v1alpha1",
            "kind": "DtsJobReset",
            "metadata": {"name": format!("bad-{i}")},
            "spec": spec,
        });
        let dynamic: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<DtsJobReset>(&()));
        let err = dynamic
            .create(
                &PostParams::default(),
                &serde_json::from_value(obj.clone()).unwrap(),
            )
            .await
            .expect_err(&format!("case {i} must be refused: {obj}"));
        let msg = err.to_string();
        assert!(
            msg.contains(field),
            "case {i}: message does not name {field}: {msg}"
        );
    }
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Strict field validation refuses a namespace in the Secret reference.
    let (ok, _, err) = kubectl_apply_strict(&ns, r#"{"apiVersion":"dtsops.io/v1alpha1","kind":"DtsJobReset","metadata":{"name":"other-ns"},"spec":{"dtsJobId":"j","credentials":{"secretRef":{"name":"creds","namespace":"kube-system"}}}}"#).await;
    assert!(!ok, "a Secret in another namespace cannot be named");
    assert!(err.contains("namespace"), "{err}");
}

async fn kubectl_apply_strict(ns: &str, json: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.json");
    std::fs::write(&f, json).unwrap();
    kubectl(&[
        "apply",
        "--validate=strict",
        "-n",
        ns,
        "-f",
        f.to_str().unwrap(),
    ])
    .await
}

#[tokio::test]
async fn default_credentials_only_for_allowed_namespaces() {
    let (client, ns) = setup("defaults").await;
    let c = crate::support::cluster::cluster().await;
    let other = c.fresh_namespace("defaults-other").await;
    let sim = simulator().await;
    let no_secret = |job: &str| {
        let mut s = spec(job);
        s.credentials = None;
        s
    };
    // One operator per namespace (an all-namespaces operator would act on other tests'
    // resources); both run in namespace `ns` as far as POD_NAMESPACE says.
    let with_defaults = |watch: &str| {
        OperatorOptions::new(watch, &sim.url())
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
            .env("POD_NAMESPACE", &ns)
    };
    let op = Operator::start(with_defaults(&ns)).await;
    let op_other = Operator::start(with_defaults(&other)).await;
    create(&client, &ns, "allowed", no_secret("job-allowed")).await;
    create(&client, &other, "refused", no_secret("job-refused")).await;
    wait_phase(&client, &ns, "allowed", "Succeeded", T).await;
    let o = wait_for(&client, &other, "refused", T, |o| {
        condition(o, "Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "CredentialsUnavailable")
    })
    .await;
    assert_eq!(phase(&o), "Pending");
    wait_event(&client, &other, "refused", "CredentialsUnavailable", T).await;
    assert_eq!(sim.executed_calls("job-allowed").len(), 1);
    assert_eq!(sim.executed_calls("job-refused").len(), 0);
    op.terminate().await;
    op_other.terminate().await;
}

#[tokio::test]
async fn secrets_never_reach_logs_events_status_or_metrics() {
    let (client, ns) = setup("secrets").await;
    let sim = simulator().await;
    let token = "CAIS+op/token=secret~value*1";
    sim.add_sts_key("STS.op", AK_SECRET, token);
    create_secret(
        &client,
        &ns,
        "creds",
        &[
            ("accessKeyId", "STS.op"),
            ("accessKeySecret", AK_SECRET),
            ("securityToken", token),
        ],
    )
    .await;
    sim.script("job-s1", [Answer::throttling(), Answer::Success]);
    sim.script("job-s2", [Answer::internal_error()]);
    // A SignatureDoesNotMatch that echoes the server's string to sign, as the gateway does: for
    // V1 it carries the token percent-encoded twice (and here every other form too).
    let forms = crate::support::every_form(token);
    let echoed = format!(
        "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3DSTS.op%26SecurityToken%3D{}%26Version%3D2020-01-01 (token {} / {} / {} / {})",
        forms[4], forms[0], forms[3], forms[1], forms[2]
    );
    sim.script(
        "job-s4",
        [Answer::gateway_error(400, "SignatureDoesNotMatch", &echoed)],
    );
    // Verification off: s2's Unknown is reported at once (verification reads are covered by
    // tests/it/verification.rs).
    let mut opts = OperatorOptions::new(&ns, &sim.url()).set("--verify-window", "0");
    opts.rust_log = "trace".to_string();
    let op = Operator::start(opts.arg("--log-format").arg("json")).await;
    let mut v1 = spec("job-s1");
    v1.signature_version = Some(dts_operator::crd::SignatureVersion::V1);
    create(&client, &ns, "s1", v1).await;
    create(&client, &ns, "s2", spec("job-s2")).await;
    create(&client, &ns, "s3", spec("job-s3")).await;
    let mut v1 = spec("job-s4");
    v1.signature_version = Some(dts_operator::crd::SignatureVersion::V1);
    create(&client, &ns, "s4", v1).await;
    let s4 = wait_phase(&client, &ns, "s4", "Failed", T).await;
    let s4 = s4.status.unwrap();
    assert_eq!(s4.err_code.as_deref(), Some("SignatureDoesNotMatch"));
    assert!(
        s4.err_message
            .as_deref()
            .unwrap_or_default()
            .contains("SecurityToken%3D[redacted]"),
        "the echo is kept, the token is not: {:?}",
        s4.err_message
    );
    wait_event(&client, &ns, "s4", "ResetFailed", T).await;
    wait_phase(&client, &ns, "s1", "Succeeded", T).await;
    wait_phase(&client, &ns, "s2", "Unknown", T).await;
    wait_phase(&client, &ns, "s3", "Succeeded", T).await;
    // Read what was published after the status changed, not a moment too early.
    wait_event(&client, &ns, "s1", "ResetSucceeded", T).await;
    wait_event(&client, &ns, "s2", "OutcomeUnknown", T).await;
    let metrics = op
        .wait_metrics(&["dts_operator_resources{phase=\"Succeeded\"} 2"], T)
        .await;
    let logs = op.logs();
    assert!(logs.lines().count() > 20, "trace logging is on");
    assert!(
        logs.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.trim_start().starts_with('{')),
        "json logs"
    );
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    let statuses =
        serde_json::to_string(&api.list(&Default::default()).await.unwrap().items).unwrap();
    let evs = format!("{:?}", events(&client, &ns, "s1").await)
        + &format!("{:?}", events(&client, &ns, "s2").await)
        + &format!("{:?}", events(&client, &ns, "s4").await);
    assert!(evs.contains("SignatureDoesNotMatch"), "{evs}");
    let enc_token = "CAIS%2Bop%2Ftoken";
    let mut secrets = crate::support::every_form(token);
    secrets.extend(crate::support::every_form(AK_SECRET));
    secrets.push(enc_token.to_string());
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("status", &statuses),
        ("events", &evs),
    ] {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret:?} leaked into {what}"
            );
        }
    }
    op.terminate().await;
}

/// A spec for `job` without regionId (the operator's `--default-region` applies).
fn spec_without_region(job: &str) -> dts_operator::crd::DtsJobResetSpec {
    let mut s = spec(job);
    s.region_id = None;
    s
}

/// `--default-region` is recorded, never compared: changing it, and changing it back, never
/// starts a new request for a finished resource.
#[tokio::test]
async fn changing_the_default_region_starts_no_new_request() {
    let (client, ns, sim) = setup_with_secret("defregion").await;
    let start = |region: &'static str| {
        Operator::start(
            OperatorOptions::new(&ns, &sim.url())
                .arg("--default-region")
                .arg(region),
        )
    };
    let op = start("cn-hangzhou").await;
    create(&client, &ns, "r", spec_without_region("job-defregion")).await;
    let done = wait_phase(&client, &ns, "r", "Succeeded", T).await;
    let request = done.status.as_ref().unwrap().request.clone().unwrap();
    assert_eq!(request.region_id, "cn-hangzhou");
    assert_eq!(request.region_defaulted, Some(true));
    let calls = sim.executed_calls("job-defregion");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].params.get("RegionId").map(String::as_str),
        Some("cn-hangzhou")
    );
    assert_eq!(op.terminate().await, Some(0));

    for region in ["cn-shanghai", "cn-hangzhou"] {
        let op = start(region).await;
        // The restarted operator has seen the resource and reconciled it.
        op.wait_metrics(
            &[
                "dts_operator_resources{phase=\"Succeeded\"} 1",
                "dts_operator_reconciles_total{result=\"ok\",category=\"\"}",
            ],
            T,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            sim.executed_calls("job-defregion").len(),
            1,
            "--default-region {region} must not send again\n{}",
            op.logs()
        );
        let now = wait_phase(&client, &ns, "r", "Succeeded", T).await;
        assert_eq!(now.status, done.status, "status untouched under {region}");
        assert_eq!(op.terminate().await, Some(0));
    }
}

/// Writes `status` onto `name` exactly as given (raw JSON, the shape an older release wrote).
async fn write_raw_status(client: &kube::Client, ns: &str, name: &str, status: serde_json::Value) {
    let dynamic: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<DtsJobReset>(&()));
    let mut obj = dynamic.get(name).await.unwrap();
    obj.data["status"] = status;
    dynamic
        .replace_status(name, &PostParams::default(), &obj)
        .await
        .expect("status written");
}

fn fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/status-0.1.0/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Upgrade safety: statuses in the shape release 0.1.0 wrote (the defaulted region in
/// `request.regionId`, nothing saying it was defaulted), under an operator with another
/// `--default-region`: a finished request stays finished with no call, a retrying one goes on to
/// the region it was resolved to, an abandoned claim is reported, never re-sent.
#[tokio::test]
async fn statuses_written_by_the_previous_release_start_no_new_request() {
    let (client, ns, sim) = setup_with_secret("upgrade").await;
    for (name, job) in [
        ("done", "job-legacy-done"),
        ("retrying", "job-legacy-retrying"),
        ("claimed", "job-legacy-claimed"),
    ] {
        create(&client, &ns, name, spec_without_region(job)).await;
        write_raw_status(
            &client,
            &ns,
            name,
            fixture(name.replace("done", "succeeded").as_str()),
        )
        .await;
    }
    let op = Operator::start(
        OperatorOptions::new(&ns, &sim.url())
            .arg("--default-region")
            .arg("cn-shanghai"),
    )
    .await;
    let retried = wait_phase(&client, &ns, "retrying", "Succeeded", T).await;
    let st = retried.status.unwrap();
    assert_eq!(st.attempts, Some(2), "the same request, its second attempt");
    assert_eq!(st.request.as_ref().unwrap().region_id, "cn-hangzhou");
    let calls = sim.executed_calls("job-legacy-retrying");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].params.get("RegionId").map(String::as_str),
        Some("cn-hangzhou"),
        "sent to the region the request was resolved to, not the new default"
    );
    let claimed = wait_phase(&client, &ns, "claimed", "Unknown", T).await;
    assert_eq!(
        condition(&claimed, "Stalled").map(|c| c.reason.as_str()),
        Some("OutcomeUnknown")
    );
    op.wait_metrics(&["dts_operator_resources{phase=\"Succeeded\"} 2"], T)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let done = wait_phase(&client, &ns, "done", "Succeeded", T).await;
    assert_eq!(
        done.status.as_ref().unwrap().request_id.as_deref(),
        Some("0A1B2C3D-LEGACY-DONE"),
        "the old answer stays"
    );
    for job in ["job-legacy-done", "job-legacy-claimed"] {
        assert_eq!(sim.executed_calls(job).len(), 0, "{job}\n{}", op.logs());
    }
    assert_eq!(op.terminate().await, Some(0));
}

/// An answer lands only on the object and the claim it answers: a resource deleted and
/// re-created with the same spec (GitOps prune, a restore) while its call is held gets the new
/// object's own request from a second operator, and the held answer, when it arrives, is not
/// recorded, not published, and logged at error with its RequestId.
#[tokio::test]
async fn an_answer_never_lands_on_a_re_created_object() {
    let (client, ns, sim) = setup_with_secret("recreate").await;
    sim.script(
        "job-rc",
        [Answer::gate("held", Answer::Success), Answer::Success],
    );
    let a =
        Operator::start(OperatorOptions::new(&ns, &sim.url()).set("--dts-timeout", "30s")).await;
    create(&client, &ns, "r", spec("job-rc")).await;
    wait_gate(&sim, "held", &a).await;

    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), &ns);
    api.delete("r", &Default::default()).await.unwrap();
    let start = std::time::Instant::now();
    while api.get_opt("r").await.unwrap().is_some() {
        assert!(start.elapsed() < T, "r not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recreated = create(&client, &ns, "r", spec("job-rc")).await;
    let b = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    // The held call still has the job: the new object waits, nothing is sent for it yet.
    wait_for(&client, &ns, "r", T, |o| {
        condition(o, "Reconciling").is_some_and(|c| c.reason == "ConcurrentRequest")
    })
    .await;
    assert_eq!(
        sim.executed_calls("job-rc").len(),
        1,
        "only the held call, nothing for the new object yet"
    );
    assert_eq!(sim.max_in_flight("cn-hangzhou", "job-rc"), 1);

    sim.open_gate("held");
    let start = std::time::Instant::now();
    while !a.logs().contains("could not be recorded") {
        assert!(start.elapsed() < T, "A never said so; log:\n{}", a.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = wait_phase(&client, &ns, "r", "Succeeded", T).await;
    assert_eq!(done.metadata.uid, recreated.metadata.uid);
    let b_request_id = done.status.as_ref().unwrap().request_id.clone().unwrap();
    let calls = sim.executed_calls("job-rc");
    assert_eq!(calls.len(), 2, "one call per object");
    assert_eq!(
        sim.max_in_flight("cn-hangzhou", "job-rc"),
        1,
        "never two at once"
    );
    let a_request_id = calls
        .iter()
        .filter_map(|c| c.request_id.clone())
        .find(|id| *id != b_request_id)
        .expect("the held call's RequestId");
    assert!(
        a.logs()
            .lines()
            .any(|l| l.contains("could not be recorded") && l.contains(&a_request_id)),
        "logged with its RequestId:\n{}",
        a.logs()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = api.get("r").await.unwrap();
    let st = now.status.unwrap();
    assert_eq!(st.request_id.as_deref(), Some(b_request_id.as_str()));
    assert_eq!(st.attempts, Some(1));
    // Published only for what landed: one ResetSucceeded, about the new object.
    let evs: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let succeeded: Vec<_> = evs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ResetSucceeded"))
        .collect();
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    assert_eq!(
        succeeded[0].regarding.as_ref().and_then(|r| r.uid.clone()),
        recreated.metadata.uid
    );
    // Two calls went out, one answer landed: only that one is counted, by whichever operator
    // recorded it.
    let succeeded_calls = |m: &str| -> u64 {
        m.lines()
            .find(|l| {
                l.starts_with(
                    "dts_operator_dts_requests_total{action=\"ResetDtsJob\",outcome=\"succeeded\"",
                )
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let (_, ma) = a.admin_get("/metrics").await;
    let (_, mb) = b.admin_get("/metrics").await;
    assert_eq!(
        succeeded_calls(&ma) + succeeded_calls(&mb),
        1,
        "A:\n{ma}\nB:\n{mb}"
    );
    a.terminate().await;
    b.terminate().await;
}

/// Waits until `name` is Pending with `Stalled=True` and reason CredentialsUnavailable.
async fn wait_credentials_stalled(client: &kube::Client, ns: &str, name: &str) -> DtsJobReset {
    wait_for(client, ns, name, T, |o| {
        phase(o) == "Pending"
            && condition(o, "Stalled")
                .is_some_and(|c| c.status == "True" && c.reason == "CredentialsUnavailable")
    })
    .await
}

/// A Secret the operator may not read (RBAC 403) needs a human: Pending, Stalled,
/// CredentialsUnavailable with the cause, a Warning event, nothing sent — and once RBAC allows
/// it, the periodic re-check recovers by itself.
#[tokio::test]
async fn a_secret_the_operator_may_not_read_stalls_until_rbac_allows_it() {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let (client, ns, sim) = setup_with_secret("rbac403").await;
    let c = crate::support::cluster::cluster().await;
    c.create_service_account(&ns, "limited").await;
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let mut role = Role {
        metadata: kube::api::ObjectMeta {
            name: Some("limited".into()),
            ..Default::default()
        },
        rules: Some(vec![
            rule(&["dtsops.io"], &["dtsjobresets"], &["get", "list", "watch"]),
            rule(&["dtsops.io"], &["dtsjobresets/status"], &["get", "update"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["create", "get", "update", "delete"],
            ),
        ]),
    };
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    roles.create(&PostParams::default(), &role).await.unwrap();
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("limited".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "limited".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "limited".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = OperatorOptions::new(&ns, &sim.url());
    opts.kubeconfig = Some(c.token_kubeconfig(dir.path(), &ns, "limited").await);
    let op = Operator::start(opts).await;

    create(&client, &ns, "r", spec("job-403")).await;
    let stalled = wait_credentials_stalled(&client, &ns, "r").await;
    let message = &condition(&stalled, "Stalled").unwrap().message;
    assert!(
        message.contains("may not read") && message.contains("creds"),
        "{message}"
    );
    assert_eq!(
        condition(&stalled, "Reconciling").map(|c| c.status.as_str()),
        Some("True")
    );
    let evs = wait_event(&client, &ns, "r", "CredentialsUnavailable", T).await;
    assert!(
        evs.iter()
            .any(|(t, r, _)| t == "Warning" && r == "CredentialsUnavailable"),
        "{evs:?}"
    );
    assert_eq!(sim.executed_calls("job-403").len(), 0);

    // The fix: RBAC now allows the Secret. Nothing else changes; the re-check finds it.
    role.rules
        .as_mut()
        .unwrap()
        .push(rule(&[""], &["secrets"], &["get"]));
    roles
        .replace("limited", &PostParams::default(), &{
            let mut current = roles.get("limited").await.unwrap();
            current.rules = role.rules.clone();
            current
        })
        .await
        .unwrap();
    wait_phase(&client, &ns, "r", "Succeeded", Duration::from_secs(60)).await;
    assert_eq!(sim.executed_calls("job-403").len(), 1);
    assert!(!op.logs().contains(AK_SECRET));
    op.terminate().await;
}

/// The operator's own RRSA credentials refused by STS need a human too (an OIDC token STS does
/// not accept): Pending, Stalled, CredentialsUnavailable with STS's code, a Warning event,
/// nothing sent to DTS, the token in no form in status or logs — and when the token is fixed,
/// the periodic re-check recovers by itself.
#[tokio::test]
async fn refused_rrsa_credentials_stall_until_fixed() {
    let (client, ns) = setup("rrsa-refused").await;
    let sim = simulator().await;
    sim.add_valid_oidc_token("the-valid-oidc-token");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let wrong = "wrong-oidc-token+value/1";
    std::fs::write(&token_file, wrong).unwrap();
    let opts = OperatorOptions::new(&ns, &sim.url())
        .arg("--default-credentials-namespaces")
        .arg(&ns)
        .env(
            "ALIBABA_CLOUD_ROLE_ARN",
            "acs:ram::123456789:role/dts-operator",
        )
        .env(
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "acs:ram::123456789:oidc-provider/ack-rrsa-c1",
        )
        .env(
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token_file.to_str().unwrap(),
        )
        .env("ALIBABA_CLOUD_STS_ENDPOINT", &sim.url());
    let op = Operator::start(opts).await;
    let mut s = spec("job-rrsa-refused");
    s.credentials = None;
    create(&client, &ns, "r", s).await;
    let stalled = wait_credentials_stalled(&client, &ns, "r").await;
    let message = condition(&stalled, "Stalled").unwrap().message.clone();
    assert!(message.contains("AssumeRoleWithOIDC"), "{message}");
    wait_event(&client, &ns, "r", "CredentialsUnavailable", T).await;
    assert_eq!(sim.executed_calls("job-rrsa-refused").len(), 0);
    assert!(!sim.sts_calls().is_empty());
    let status_text = serde_json::to_string(&stalled).unwrap();
    for form in crate::support::every_form(wrong) {
        assert!(!status_text.contains(&form), "token in status");
        assert!(!op.logs().contains(&form), "token in logs");
    }

    std::fs::write(&token_file, "the-valid-oidc-token").unwrap();
    wait_phase(&client, &ns, "r", "Succeeded", Duration::from_secs(60)).await;
    assert_eq!(sim.executed_calls("job-rrsa-refused").len(), 1);
    op.terminate().await;
}
