//! The real DTS client and retry loop against the in-process simulator, which verifies V1/V3
//! signatures, timestamps and nonces like the gateway and scripts the answers. Every test asserts
//! how many calls the server saw, not only the result.

use std::time::Duration;

use dts_operator::aliyun::client::{ClientOptions, DtsClient, ResetCall};
use dts_operator::aliyun::credentials::Credentials;
use dts_operator::aliyun::dts::ResetDtsJobParams;
use dts_operator::aliyun::endpoint::Endpoint;
use dts_operator::aliyun::error::{AttemptOutcome, Class, TransportFailure, classify};
use dts_operator::aliyun::provider::CredentialsProvider;
use dts_operator::aliyun::rrsa::{RrsaConfig, RrsaProvider};
use dts_operator::aliyun::signer::{SignatureVersion, SigningContext};
use dts_operator::reset::attempts::{RunResult, run_attempts};
use dts_operator::retry::{Backoff, Final};
use dts_simulator::{Answer, Simulator, Style};

const ID: &str = "testid";
const SECRET: &str = "testsecret";

async fn sim() -> Simulator {
    let s = Simulator::start().await;
    s.add_access_key(ID, SECRET);
    s
}

fn client(timeout: Duration) -> DtsClient {
    DtsClient::new(&ClientOptions {
        timeout,
        ..ClientOptions::default()
    })
    .unwrap()
}

fn call(sim: &Simulator, job: &str, version: SignatureVersion, creds: Credentials) -> ResetCall {
    ResetCall {
        endpoint: Endpoint::parse(&sim.url()).unwrap(),
        params: ResetDtsJobParams {
            dts_job_id: job.into(),
            dts_instance_id: Some("dtsl3m1213ye7l****".into()),
            synchronization_direction: Some("Forward".into()),
            region_id: Some("cn-hangzhou".into()),
        },
        credentials: creds,
        signature_version: version,
        context: SigningContext::fresh(),
    }
}

/// Runs the retry loop with fast backoff (1 ms initial) so tests take milliseconds.
async fn run(
    sim: &Simulator,
    job: &str,
    version: SignatureVersion,
    provider: &CredentialsProvider,
    max_attempts: u32,
    timeout: Duration,
) -> RunResult {
    let c = client(timeout);
    let template = call(sim, job, version, Credentials::new("", "", None));
    run_attempts(
        &c,
        provider,
        &template,
        max_attempts,
        &Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(20),
        },
        &mut || 1.0,
        &mut SigningContext::fresh,
        &mut |_| {},
    )
    .await
    .unwrap()
}

/// [`run`] with the test's static key, 7 attempts and a 5 s timeout: the common case.
async fn run_static(sim: &Simulator, job: &str, version: SignatureVersion) -> RunResult {
    run(
        sim,
        job,
        version,
        &static_provider(),
        7,
        Duration::from_secs(5),
    )
    .await
}

fn static_provider() -> CredentialsProvider {
    CredentialsProvider::Static(Credentials::new(ID, SECRET, None))
}

#[tokio::test]
async fn success_with_both_signature_versions() {
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let sim = sim().await;
        let r = run_static(&sim, "job-ok", version).await;
        assert_eq!(r.result, Final::Succeeded, "{version:?}: {:?}", r.last);
        assert_eq!(r.attempts, 1);
        let calls = sim.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].outcome, "ok", "{version:?}");
        assert!(calls[0].executed);
        let want = match version {
            SignatureVersion::V1 => Style::V1,
            SignatureVersion::V3 => Style::V3,
        };
        assert_eq!(calls[0].style, want);
        assert_eq!(
            calls[0].params.get("DtsInstanceId").map(String::as_str),
            Some("dtsl3m1213ye7l****")
        );
        assert_eq!(
            calls[0]
                .params
                .get("SynchronizationDirection")
                .map(String::as_str),
            Some("Forward")
        );
        assert_eq!(calls[0].region_id.as_deref(), Some("cn-hangzhou"));
        let answer = r.last.as_ref().unwrap().answer().unwrap();
        assert_eq!(answer.success, Some(true));
        assert!(answer.request_id.is_some());
    }
}

#[tokio::test]
async fn awkward_characters_verify_on_the_wire() {
    let sim = sim().await;
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let c = client(Duration::from_secs(5));
        let mut call = call(
            &sim,
            "l3m1213ye7l****",
            version,
            Credentials::new(ID, SECRET, None),
        );
        call.params.dts_instance_id = Some("dts a*b~c/d+e=f&g 中文".into());
        let out = c.send(&call.signed()).await;
        assert_eq!(classify(&out), Class::Succeeded, "{version:?}: {out:?}");
    }
    let calls = sim.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(
        |c| c.params.get("DtsInstanceId").map(String::as_str) == Some("dts a*b~c/d+e=f&g 中文")
    ));
}

#[tokio::test]
async fn throttled_twice_then_success() {
    let sim = sim().await;
    sim.script(
        "job-t",
        [Answer::throttling(), Answer::throttling(), Answer::Success],
    );
    let r = run_static(&sim, "job-t", SignatureVersion::V3).await;
    assert_eq!(r.result, Final::Succeeded);
    assert_eq!(r.attempts, 3);
    let calls = sim.executed_calls("job-t");
    assert_eq!(calls.len(), 3);
    // A fresh nonce and timestamp per attempt (the simulator refuses a replayed nonce).
    let nonces: std::collections::BTreeSet<_> = calls.iter().map(|c| c.nonce.clone()).collect();
    assert_eq!(nonces.len(), 3);
}

#[tokio::test]
async fn service_unavailable_is_retried() {
    let sim = sim().await;
    sim.script("job-u", [Answer::service_unavailable(), Answer::Success]);
    let r = run_static(&sim, "job-u", SignatureVersion::V1).await;
    assert_eq!(r.result, Final::Succeeded);
    assert_eq!(sim.executed_calls("job-u").len(), 2);
}

#[tokio::test]
async fn retry_after_hint_is_a_floor() {
    let sim = sim().await;
    sim.script(
        "job-h",
        [
            Answer::throttling().with_retry_after_ms(400),
            Answer::Success,
        ],
    );
    let started = std::time::Instant::now();
    let r = run_static(&sim, "job-h", SignatureVersion::V3).await;
    assert_eq!(r.result, Final::Succeeded);
    let calls = sim.executed_calls("job-h");
    assert_eq!(calls.len(), 2);
    // The backoff maximum here is 20 ms; the hint of 400 ms wins.
    let gap = calls[1].received_at.duration_since(calls[0].received_at);
    assert!(gap >= jiff::SignedDuration::from_millis(380), "gap {gap:?}");
    assert!(started.elapsed() >= Duration::from_millis(380));
}

#[tokio::test]
async fn retries_exhausted_keeps_the_last_code() {
    let sim = sim().await;
    sim.script("job-x", (0..5).map(|_| Answer::throttling()));
    let r = run(
        &sim,
        "job-x",
        SignatureVersion::V3,
        &static_provider(),
        3,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.result, Final::RetriesExhausted);
    assert_eq!(r.attempts, 3);
    assert_eq!(sim.executed_calls("job-x").len(), 3);
    assert_eq!(
        r.last.unwrap().answer().unwrap().err_code.as_deref(),
        Some("Throttling.User")
    );
}

#[tokio::test]
async fn dts_error_4xx_with_template_is_terminal() {
    let sim = sim().await;
    sim.script(
        "job-4",
        [Answer::DtsError {
            http_status: 400,
            err_code: "InvalidParameter".into(),
            err_message: "The Value of Input Parameter %s is not valid.".into(),
            dynamic_message: Some("DtsJobId".into()),
            dynamic_code: Some("403".into()),
        }],
    );
    let r = run_static(&sim, "job-4", SignatureVersion::V3).await;
    assert_eq!(r.result, Final::Failed);
    assert_eq!(sim.executed_calls("job-4").len(), 1);
    let a = r.last.unwrap().answer().unwrap().clone();
    assert_eq!(
        a.err_message.as_deref(),
        Some("The Value of Input Parameter %s is not valid.")
    );
    assert_eq!(
        a.rendered_message().as_deref(),
        Some("The Value of Input Parameter DtsJobId is not valid.")
    );
    assert_eq!(a.dynamic_code.as_deref(), Some("403"));
    assert_eq!(a.http_status_code, Some(400));
}

#[tokio::test]
async fn http_200_success_false_is_terminal() {
    let sim = sim().await;
    sim.script(
        "job-f",
        [Answer::dts_error(
            "Forbidden.InstanceNotFound",
            "The job %s does not exist.",
            Some("job-f"),
        )],
    );
    let r = run_static(&sim, "job-f", SignatureVersion::V3).await;
    assert_eq!(r.result, Final::Failed);
    assert_eq!(sim.executed_calls("job-f").len(), 1);
    let out = r.last.unwrap();
    assert_eq!(out.http_status(), Some(200));
    assert_eq!(out.answer().unwrap().success, Some(false));
}

#[tokio::test]
async fn internal_error_is_unknown_and_not_retried() {
    let sim = sim().await;
    sim.script("job-500", [Answer::internal_error(), Answer::Success]);
    let r = run_static(&sim, "job-500", SignatureVersion::V3).await;
    assert_eq!(r.result, Final::Unknown);
    assert_eq!(sim.executed_calls("job-500").len(), 1);
}

#[tokio::test]
async fn html_502_and_garbage_200_are_unknown() {
    let sim = sim().await;
    sim.script(
        "job-502",
        [Answer::raw(
            502,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )],
    );
    sim.script(
        "job-garbage",
        [Answer::raw(200, "application/json", "}}garbage{{")],
    );
    for job in ["job-502", "job-garbage"] {
        let r = run_static(&sim, job, SignatureVersion::V3).await;
        assert_eq!(r.result, Final::Unknown, "{job}");
        assert!(
            matches!(r.last, Some(AttemptOutcome::Unparseable { .. })),
            "{job}"
        );
        assert_eq!(sim.executed_calls(job).len(), 1, "{job}");
    }
}

#[tokio::test]
async fn hang_past_the_timeout_is_unknown() {
    let sim = sim().await;
    sim.script(
        "job-hang",
        [Answer::hang(Duration::from_secs(3)), Answer::Success],
    );
    let r = run(
        &sim,
        "job-hang",
        SignatureVersion::V3,
        &static_provider(),
        7,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(r.result, Final::Unknown);
    assert!(matches!(
        r.last,
        Some(AttemptOutcome::Transport(TransportFailure::MaybeSent(_)))
    ));
    assert_eq!(sim.calls().len(), 1);
}

#[tokio::test]
async fn dropped_connection_is_unknown() {
    let sim = sim().await;
    sim.script("job-drop", [Answer::Drop, Answer::Success]);
    let r = run_static(&sim, "job-drop", SignatureVersion::V3).await;
    assert_eq!(r.result, Final::Unknown, "{:?}", r.last);
    assert_eq!(sim.calls().len(), 1);
}

#[tokio::test]
async fn connection_refused_is_retried_then_exhausted() {
    // A port nobody listens on: bind, learn the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client(Duration::from_secs(2));
    let mut template = ResetCall {
        endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        params: ResetDtsJobParams {
            dts_job_id: "j".into(),
            ..Default::default()
        },
        credentials: Credentials::new("", "", None),
        signature_version: SignatureVersion::V3,
        context: SigningContext::fresh(),
    };
    let out = c
        .send(&{
            template.credentials = Credentials::new(ID, SECRET, None);
            template.signed()
        })
        .await;
    assert!(
        matches!(out, AttemptOutcome::Transport(TransportFailure::NotSent(_))),
        "{out:?}"
    );
    let r = run_attempts(
        &c,
        &static_provider(),
        &template,
        3,
        &Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        &mut || 1.0,
        &mut SigningContext::fresh,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(r.result, Final::RetriesExhausted);
    assert_eq!(r.attempts, 3);
}

#[tokio::test]
async fn wrong_secret_is_refused_once() {
    let sim = sim().await;
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let provider = CredentialsProvider::Static(Credentials::new(ID, "not-the-secret", None));
        let r = run(
            &sim,
            "job-sig",
            version,
            &provider,
            7,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.result, Final::Failed);
        assert_eq!(
            r.last.unwrap().answer().unwrap().err_code.as_deref(),
            Some("SignatureDoesNotMatch")
        );
    }
    let calls = sim.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| !c.executed && c.outcome == "SignatureDoesNotMatch")
    );
}

#[tokio::test]
async fn unknown_access_key_is_terminal() {
    let sim = sim().await;
    let provider = CredentialsProvider::Static(Credentials::new("nobody", SECRET, None));
    let r = run(
        &sim,
        "job-ak",
        SignatureVersion::V3,
        &provider,
        7,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.result, Final::Failed);
    assert_eq!(
        r.last.unwrap().answer().unwrap().err_code.as_deref(),
        Some("InvalidAccessKeyId.NotFound")
    );
    assert_eq!(sim.calls().len(), 1);
}

#[tokio::test]
async fn sts_token_is_signed_and_accepted() {
    let sim = sim().await;
    sim.add_sts_key("STS.id", "sts-secret", "CAIS+sts/token=with~odd*chars");
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let provider = CredentialsProvider::Static(Credentials::new(
            "STS.id",
            "sts-secret",
            Some("CAIS+sts/token=with~odd*chars".into()),
        ));
        let r = run(
            &sim,
            "job-sts",
            version,
            &provider,
            7,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.result, Final::Succeeded, "{version:?}: {:?}", r.last);
    }
    let calls = sim.executed_calls("job-sts");
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.has_security_token));
}

#[tokio::test]
async fn expired_static_token_refreshes_once_then_fails() {
    let sim = sim().await;
    sim.add_sts_key("STS.old", "s", "tok-old");
    sim.expire_token("tok-old");
    let provider =
        CredentialsProvider::Static(Credentials::new("STS.old", "s", Some("tok-old".into())));
    let r = run(
        &sim,
        "job-exp",
        SignatureVersion::V3,
        &provider,
        7,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.result, Final::Failed);
    assert_eq!(r.attempts, 2, "one refresh, then the same error is final");
    assert_eq!(sim.calls().len(), 2);
    assert!(
        sim.calls()
            .iter()
            .all(|c| c.outcome == "InvalidSecurityToken.Expired")
    );
}

fn rrsa(sim: &Simulator, token_file: &std::path::Path) -> CredentialsProvider {
    dts_operator::install_crypto_provider();
    CredentialsProvider::Rrsa(std::sync::Arc::new(RrsaProvider::new(
        RrsaConfig {
            role_arn: "acs:ram::123456789:role/dts-operator".into(),
            oidc_provider_arn: "acs:ram::123456789:oidc-provider/ack-rrsa-c1".into(),
            token_file: token_file.to_path_buf(),
            session_name: "dts-operator-test".into(),
            sts_endpoint: Endpoint::parse(&sim.url()).unwrap(),
            duration: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        },
        client(Duration::from_secs(5)).http().clone(),
    )))
}

#[tokio::test]
async fn rrsa_via_sts_and_refresh_after_expiry() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "oidc-token-1\n").unwrap();
    sim.add_valid_oidc_token("oidc-token-1");
    sim.add_valid_oidc_token("oidc-token-2");
    let provider = rrsa(&sim, &token_file);

    let r = run(
        &sim,
        "job-rrsa",
        SignatureVersion::V3,
        &provider,
        7,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.result, Final::Succeeded, "{:?}", r.last);
    assert_eq!(sim.sts_calls().len(), 1);
    // Cached: a second request does not go to STS again.
    let r = run(
        &sim,
        "job-rrsa",
        SignatureVersion::V3,
        &provider,
        7,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.result, Final::Succeeded);
    assert_eq!(sim.sts_calls().len(), 1);

    // The token rotates on disk and the STS credentials expire: one refresh re-reads the file.
    std::fs::write(&token_file, "oidc-token-2").unwrap();
    let issued = sim.executed_calls("job-rrsa")[0]
        .access_key_id
        .clone()
        .unwrap();
    let token = sim
        .calls()
        .iter()
        .find(|c| c.access_key_id.as_deref() == Some(issued.as_str()))
        .map(|c| {
            c.headers
                .iter()
                .find(|(k, _)| k == "x-acs-security-token")
                .unwrap()
                .1
                .clone()
        })
        .unwrap();
    sim.expire_token(&token);
    let r = run(
        &sim,
        "job-rrsa",
        SignatureVersion::V3,
        &provider,
        7,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.result, Final::Succeeded, "{:?}", r.last);
    assert_eq!(r.attempts, 2);
    let sts = sim.sts_calls();
    assert_eq!(sts.len(), 2);
    assert_eq!(sts[0].oidc_token.as_deref(), Some("oidc-token-1"));
    assert_eq!(sts[1].oidc_token.as_deref(), Some("oidc-token-2"));
    // The OIDC token travels in the form body, never in the URL.
    assert!(sts.iter().all(|c| !c.raw_query.contains("OIDCToken")));
    assert!(sts.iter().all(|c| c.body.contains("OIDCToken=")));
    assert!(sts.iter().all(|c| c.method == "POST"));
}

#[tokio::test]
async fn rrsa_refused_by_sts_is_an_error_before_any_dts_call() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "not-valid").unwrap();
    sim.add_valid_oidc_token("the-valid-one");
    let provider = rrsa(&sim, &token_file);
    let c = client(Duration::from_secs(5));
    let template = call(
        &sim,
        "job-r",
        SignatureVersion::V3,
        Credentials::new("", "", None),
    );
    let err = run_attempts(
        &c,
        &provider,
        &template,
        3,
        &Backoff::default(),
        &mut || 0.0,
        &mut SigningContext::fresh,
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("AssumeRoleWithOIDC"), "{err}");
    assert!(
        !err.to_string().contains("not-valid"),
        "the token must not appear: {err}"
    );
    assert_eq!(sim.executed_calls("job-r").len(), 0);
    assert_eq!(sim.sts_calls().len(), 1);
}
