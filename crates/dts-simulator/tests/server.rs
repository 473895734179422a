//! In-process tests of the simulator over real loopback HTTP, with requests signed by the
//! independent test signer in `support/`.

mod support;

use std::time::Duration;

use dts_simulator::{Answer, SimConfig, Simulator, Style};
use support::{Creds, Place, Req, V1, V3, op, send, send_raw};

async fn sim() -> (Simulator, Creds) {
    let sim = Simulator::start().await;
    sim.add_access_key("testid", "testsecret");
    (sim, Creds::new("testid", "testsecret"))
}

#[tokio::test]
async fn v1_get_and_post_in_query_and_form_body_are_accepted() {
    let (sim, creds) = sim().await;
    let cases = [
        ("GET", Place::Query),
        ("POST", Place::Query),
        ("POST", Place::Form),
    ];
    for (method, place) in cases {
        let mut params = op("job-v1");
        params.insert("DtsInstanceId".into(), "dts a*b~c/d+e=f&g 中文".into());
        let req = V1::reset(method, &creds, params, place).build(&creds.secret);
        let resp = send(sim.addr(), &req).await;
        assert_eq!(resp.status, 200, "{method} {}: {}", req.target, resp.body);
        let body = resp.json();
        assert_eq!(body["Success"], true);
        assert_eq!(body["HttpStatusCode"], 200);
        assert_eq!(
            resp.header("x-acs-request-id"),
            body["RequestId"].as_str(),
            "request id header"
        );
    }
    let calls = sim.executed_calls("job-v1");
    assert_eq!(calls.len(), 3);
    for c in &calls {
        assert_eq!(c.style, Style::V1);
        assert_eq!(c.outcome, "ok");
        assert_eq!(c.http_status, 200);
        assert_eq!(c.access_key_id.as_deref(), Some("testid"));
        assert_eq!(c.action.as_deref(), Some("ResetDtsJob"));
        assert_eq!(c.region_id.as_deref(), Some("cn-hangzhou"));
        assert_eq!(
            c.params.keys().collect::<Vec<_>>(),
            [
                "DtsInstanceId",
                "DtsJobId",
                "RegionId",
                "SynchronizationDirection"
            ]
        );
        assert_eq!(c.params["DtsInstanceId"], "dts a*b~c/d+e=f&g 中文");
    }
    assert_eq!(calls[0].method, "GET");
    assert!(calls[2].body.contains("DtsJobId=job-v1"));
    assert!(calls[2].body.contains('+'), "form body used + for spaces");
}

#[tokio::test]
async fn v3_query_form_body_and_sts_token_are_accepted() {
    let (sim, creds) = sim().await;
    let req = V3::reset(sim.addr(), op("job-v3")).build(&creds);
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["Success"], true);

    // Operation parameters in a form body.
    let mut v3 = V3::reset(sim.addr(), Default::default());
    v3.body = Some("DtsJobId=job-v3&RegionId=cn-hangzhou".into());
    let resp = send(sim.addr(), &v3.build(&creds)).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    // STS key: token required, signed as x-acs-security-token.
    sim.add_sts_key("STS.k", "stssecret", "CAIS+tok/en=");
    let sts = Creds::new("STS.k", "stssecret").with_token("CAIS+tok/en=");
    let mut v3 = V3::reset(sim.addr(), op("job-v3"));
    v3.extra_headers
        .push(("x-acs-accesskey-id".into(), "STS.k".into()));
    let resp = send(sim.addr(), &v3.build(&sts)).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    let calls = sim.executed_calls("job-v3");
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.style == Style::V3));
    assert_eq!(calls[0].host.as_deref(), Some(&*sim.addr().to_string()));
    assert!(calls[2].has_security_token);
    assert_eq!(calls[1].params["DtsJobId"], "job-v3");
}

#[tokio::test]
async fn wrong_secret_is_signature_does_not_match() {
    let (sim, creds) = sim().await;
    let req = V1::reset("POST", &creds, op("j"), Place::Query).build("not-the-secret");
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.status, 400);
    let body = resp.json();
    assert_eq!(body["Code"], "SignatureDoesNotMatch");
    let msg = body["Message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3Dtestid"
        ),
        "{msg}"
    );
    for key in ["RequestId", "HostId", "Code", "Message", "Recommend"] {
        assert!(body.get(key).is_some(), "{key} in {body}");
    }

    let wrong = Creds::new("testid", "nope");
    let resp = send(sim.addr(), &V3::reset(sim.addr(), op("j")).build(&wrong)).await;
    assert_eq!(resp.status, 400);
    let body = resp.json();
    assert_eq!(body["Code"], "SignatureDoesNotMatch");
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains("server string to sign is:ACS3-HMAC-SHA256\n")
    );

    // A V3 signer that signs the host without the port is caught.
    let mut v3 = V3::reset(sim.addr(), op("j"));
    v3.host = "127.0.0.1".into();
    let mut req = v3.build(&creds);
    req.headers.retain(|(k, _)| k != "host");
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.json()["Code"], "SignatureDoesNotMatch");

    assert!(sim.executed_calls("j").is_empty());
    assert!(sim.calls().iter().all(|c| !c.executed));
    assert_eq!(sim.calls()[0].outcome, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn replayed_nonce_is_refused() {
    let (sim, creds) = sim().await;
    let req = V1::reset("POST", &creds, op("j"), Place::Query).build(&creds.secret);
    assert_eq!(send(sim.addr(), &req).await.status, 200);
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["Code"], "SignatureNonceUsed");

    let req = V3::reset(sim.addr(), op("j")).build(&creds);
    assert_eq!(send(sim.addr(), &req).await.status, 200);
    assert_eq!(
        send(sim.addr(), &req).await.json()["Code"],
        "SignatureNonceUsed"
    );
    assert_eq!(sim.executed_calls("j").len(), 2);
}

#[tokio::test]
async fn timestamps_expired_and_malformed() {
    let (sim, creds) = sim().await;
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(16))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .set("Timestamp", &old)
        .build(&creds.secret);
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["Code"], "InvalidTimeStamp.Expired");

    let mut v3 = V3::reset(sim.addr(), op("j"));
    v3.date = old;
    assert_eq!(
        send(sim.addr(), &v3.build(&creds)).await.json()["Code"],
        "InvalidTimeStamp.Expired"
    );

    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .set("Timestamp", "2024-01-01T12:00:00.000Z")
        .build(&creds.secret);
    assert_eq!(
        send(sim.addr(), &req).await.json()["Code"],
        "InvalidTimeStamp.Format"
    );

    // Within 15 minutes is fine; the simulator's clock can be shifted.
    sim.set_clock_offset(jiff::SignedDuration::from_mins(14));
    let req = V1::reset("GET", &creds, op("j"), Place::Query).build(&creds.secret);
    assert_eq!(send(sim.addr(), &req).await.status, 200);
    sim.set_clock_offset(jiff::SignedDuration::from_mins(-16));
    let req = V1::reset("GET", &creds, op("j"), Place::Query).build(&creds.secret);
    assert_eq!(
        send(sim.addr(), &req).await.json()["Code"],
        "InvalidTimeStamp.Expired"
    );
}

#[tokio::test]
async fn gateway_refusals_in_order() {
    let (sim, creds) = sim().await;
    // Unknown key.
    let other = Creds::new("who", "x");
    let resp = send(
        sim.addr(),
        &V1::reset("GET", &other, op("j"), Place::Query).build("x"),
    )
    .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["Code"], "InvalidAccessKeyId.NotFound");

    // Missing signature parameters.
    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .unset("SignatureNonce")
        .build(&creds.secret);
    assert_eq!(
        send(sim.addr(), &req).await.json()["Code"],
        "MissingSignatureNonce"
    );
    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .set("SignatureMethod", "HMAC-SHA256")
        .build(&creds.secret);
    assert_eq!(send(sim.addr(), &req).await.status, 400);

    // No signature at all.
    let resp = send(
        sim.addr(),
        &Req::new("GET", "/?Action=ResetDtsJob&DtsJobId=j"),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["Code"], "MissingParameter");
    let resp = send(
        sim.addr(),
        &Req::new("GET", "/?Action=ResetDtsJob").header("Authorization", "Bearer x"),
    )
    .await;
    assert_eq!(resp.json()["Code"], "IncompleteSignature");

    // Wrong action / version / missing job.
    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .set("Action", "DescribeDtsJobs")
        .build(&creds.secret);
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["Code"], "InvalidAction.NotFound");
    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .set("Version", "2016-08-01")
        .build(&creds.secret);
    assert_eq!(
        send(sim.addr(), &req).await.json()["Code"],
        "InvalidVersion"
    );
    let mut params = op("j");
    params.remove("DtsJobId");
    let req = V1::reset("GET", &creds, params, Place::Query).build(&creds.secret);
    assert_eq!(
        send(sim.addr(), &req).await.json()["Code"],
        "MissingDtsJobId"
    );

    // V3: an x-acs-* header left unsigned; a body hash that lies.
    let mut v3 = V3::reset(sim.addr(), op("j"));
    v3.unsigned_headers
        .push(("x-acs-credentials-provider".into(), "static_ak".into()));
    assert_eq!(
        send(sim.addr(), &v3.build(&creds)).await.json()["Code"],
        "IncompleteSignature"
    );
    let mut v3 = V3::reset(sim.addr(), op("j"));
    v3.body = Some("DtsJobId=j".into());
    v3.content_sha256 = Some(support::nonce());
    assert_eq!(
        send(sim.addr(), &v3.build(&creds)).await.json()["Code"],
        "SignatureDoesNotMatch"
    );

    // V3: a space sent as `+` in the query (form style) is refused; `%20` is fine.
    let mut params = op("j");
    params.insert("DtsInstanceId".into(), "a b".into());
    let req = V3::reset(sim.addr(), params.clone()).build(&creds);
    let mut plus = Req::new(&req.method, &req.target.replace("%20", "+"));
    plus.headers = req.headers.clone();
    let resp = send(sim.addr(), &plus).await;
    assert_eq!(resp.json()["Code"], "SignatureDoesNotMatch");
    assert!(resp.json()["Message"].as_str().unwrap().contains("raw '+'"));
    let req = V3::reset(sim.addr(), params).build(&creds);
    assert_eq!(send(sim.addr(), &req).await.status, 200);
    // V1 signs decoded values: `+` for a space on the wire verifies.
    let mut params = op("j2");
    params.insert("DtsInstanceId".into(), "a b".into());
    let req = V1::reset("GET", &creds, params, Place::Query).build(&creds.secret);
    let plus = Req::new("GET", &req.target.replace("%20", "+"));
    assert_eq!(send(sim.addr(), &plus).await.status, 200);

    assert_eq!(sim.executed_calls("j").len(), 1);
}

#[tokio::test]
async fn security_tokens() {
    let (sim, _) = sim().await;
    sim.add_sts_key("STS.a", "s", "tok-a");
    let with = Creds::new("STS.a", "s").with_token("tok-a");
    let without = Creds::new("STS.a", "s");
    let wrong = Creds::new("STS.a", "s").with_token("tok-b");

    let req = V1::reset("POST", &without, op("j"), Place::Query).build("s");
    assert_eq!(
        send(sim.addr(), &req).await.json()["Code"],
        "MissingSecurityToken"
    );
    let req = V1::reset("POST", &wrong, op("j"), Place::Query).build("s");
    assert_eq!(
        send(sim.addr(), &req).await.json()["Code"],
        "InvalidSecurityToken.MismatchWithAccessKey"
    );
    let req = V1::reset("POST", &with, op("j"), Place::Query).build("s");
    assert_eq!(send(sim.addr(), &req).await.status, 200);

    sim.expire_token("tok-a");
    let req = V1::reset("POST", &with, op("j"), Place::Query).build("s");
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["Code"], "InvalidSecurityToken.Expired");
    assert_eq!(
        resp.json()["Message"],
        "Specified SecurityToken is expired."
    );
    let resp = send(sim.addr(), &V3::reset(sim.addr(), op("j")).build(&with)).await;
    assert_eq!(resp.status, 403);
    assert_eq!(sim.executed_calls("j").len(), 1);
}

#[tokio::test]
async fn scripted_answers_in_order_then_default() {
    let (sim, creds) = sim().await;
    sim.script(
        "job",
        [
            Answer::throttling().with_retry_after_ms(1500),
            Answer::service_unavailable().with_retry_after_secs(3),
            Answer::dts_error(
                "InvalidParameter",
                "The Value of Input Parameter %s is not valid.",
                Some("DtsJobId"),
            ),
            Answer::internal_error(),
            Answer::raw(
                502,
                "text/html",
                "<html><body>502 Bad Gateway</body></html>",
            ),
        ],
    );
    sim.script("job", [Answer::Success]);
    assert_eq!(sim.pending_answers("job"), 6);
    sim.set_default_answer(Answer::DtsError {
        http_status: 403,
        err_code: "Forbidden.InstanceNotFound".into(),
        err_message: "not found".into(),
        dynamic_message: None,
        dynamic_code: Some("403".into()),
    });

    let mut resps = Vec::new();
    for _ in 0..7 {
        let req = V1::reset("POST", &creds, op("job"), Place::Query).build(&creds.secret);
        resps.push(send(sim.addr(), &req).await);
    }
    assert_eq!(resps[0].status, 400);
    assert_eq!(resps[0].json()["Code"], "Throttling.User");
    assert_eq!(
        resps[0].json()["Message"],
        "Request was denied due to user flow control."
    );
    assert_eq!(resps[0].header("x-acs-retry-after"), Some("1500"));
    assert_eq!(resps[1].status, 503);
    assert_eq!(resps[1].header("retry-after"), Some("3"));
    assert_eq!(resps[2].status, 200);
    let b = resps[2].json();
    assert_eq!(b["Success"], false);
    assert_eq!(b["ErrCode"], "InvalidParameter");
    assert_eq!(b["DynamicMessage"], "DtsJobId");
    assert_eq!(resps[3].status, 500);
    assert_eq!(resps[3].json()["Code"], "InternalError");
    assert_eq!(resps[4].status, 502);
    assert_eq!(resps[4].header("content-type"), Some("text/html"));
    assert!(resps[4].body.starts_with("<html>"));
    assert_eq!(resps[5].json()["Success"], true);
    assert_eq!(resps[6].status, 403);
    assert_eq!(resps[6].json()["DynamicCode"], "403");

    let outcomes: Vec<String> = sim
        .executed_calls("job")
        .into_iter()
        .map(|c| c.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            "Throttling.User",
            "ServiceUnavailable",
            "InvalidParameter",
            "InternalError",
            "raw",
            "ok",
            "Forbidden.InstanceNotFound"
        ]
    );
    // Queues are per job.
    let req = V1::reset("POST", &creds, op("other"), Place::Query).build(&creds.secret);
    assert_eq!(send(sim.addr(), &req).await.status, 403);
}

#[tokio::test]
async fn xml_when_v1_has_no_format() {
    let (sim, creds) = sim().await;
    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .unset("Format")
        .build(&creds.secret);
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-type").unwrap().contains("xml"));
    assert!(resp.body.contains("<ResetDtsJobResponse><RequestId>"));
    assert!(
        resp.body
            .contains("<Success>true</Success></ResetDtsJobResponse>")
    );

    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .set("Format", "XML")
        .build("wrong");
    let resp = send(sim.addr(), &req).await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("<Error><RequestId>"));
    assert!(resp.body.contains("<Code>SignatureDoesNotMatch</Code>"));
    assert!(resp.body.contains("&amp;"), "escaped string to sign");

    sim.script(
        "j",
        [Answer::dts_error(
            "InvalidParameter",
            "The Value of Input Parameter %s is not valid.",
            Some("DtsJobId"),
        )],
    );
    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .unset("Format")
        .build(&creds.secret);
    let resp = send(sim.addr(), &req).await;
    assert!(
        resp.body
            .contains("<Success>false</Success><ErrCode>InvalidParameter</ErrCode>")
    );
    assert!(
        resp.body
            .contains("<DynamicMessage>DtsJobId</DynamicMessage>")
    );

    // Format=json (lower-case, as tea-openapi sends it) is JSON.
    let req = V1::reset("GET", &creds, op("j"), Place::Query)
        .set("Format", "json")
        .build(&creds.secret);
    assert_eq!(send(sim.addr(), &req).await.json()["Success"], true);
}

fn sts_body(token: &str) -> String {
    let params = std::collections::BTreeMap::from([
        ("Action".to_owned(), "AssumeRoleWithOIDC".to_owned()),
        ("Version".into(), "2015-04-01".into()),
        ("Format".into(), "JSON".into()),
        ("Timestamp".into(), support::now_ts()),
        ("RoleArn".into(), "acs:ram::123:role/dts-operator".into()),
        (
            "OIDCProviderArn".into(),
            "acs:ram::123:oidc-provider/ack-rrsa".into(),
        ),
        ("RoleSessionName".into(), "dts-operator".into()),
        ("DurationSeconds".into(), "3600".into()),
        ("OIDCToken".into(), token.into()),
    ]);
    support::join(&params)
}

#[tokio::test]
async fn sts_oidc_flow() {
    let sim = Simulator::start().await;

    // The token in the URL is refused.
    let resp = send(
        sim.addr(),
        &Req::new("POST", &format!("/?{}", sts_body("eyJ.token.sig"))),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["Code"], "InvalidParameter.OIDCToken");

    // In the form body it works.
    let post = |body: String| {
        Req::new("POST", "/")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(&body)
    };
    let resp = send(sim.addr(), &post(sts_body("eyJ.token.sig"))).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let body = resp.json();
    let creds = &body["Credentials"];
    let id = creds["AccessKeyId"].as_str().unwrap();
    let secret = creds["AccessKeySecret"].as_str().unwrap();
    let token = creds["SecurityToken"].as_str().unwrap();
    assert!(id.starts_with("STS."));
    let exp = creds["Expiration"].as_str().unwrap();
    let exp_ts = dts_simulator::verify::parse_timestamp(exp).expect("RFC 3339 Z");
    let left = exp_ts.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((3500..=3600).contains(&left), "{left}");
    assert!(body["AssumedRoleUser"]["Arn"].as_str().is_some());
    assert_eq!(
        Some(body["RequestId"].as_str().unwrap()),
        resp.header("x-acs-request-id")
    );

    let sts_calls = sim.sts_calls();
    assert_eq!(sts_calls.len(), 2);
    assert_eq!(sts_calls[0].outcome, "InvalidParameter.OIDCToken");
    assert_eq!(sts_calls[1].outcome, "ok");
    assert_eq!(sts_calls[1].oidc_token.as_deref(), Some("eyJ.token.sig"));
    assert!(!sts_calls[1].raw_query.contains("OIDCToken"));
    assert_eq!(sts_calls[1].params["RoleSessionName"], "dts-operator");

    // The issued key works, with its token, for V1 and V3 alike.
    let issued = Creds::new(id, secret).with_token(token);
    let req = V1::reset("POST", &issued, op("j"), Place::Query).build(secret);
    assert_eq!(send(sim.addr(), &req).await.status, 200);
    let resp = send(sim.addr(), &V3::reset(sim.addr(), op("j")).build(&issued)).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resp = send(
        sim.addr(),
        &V3::reset(sim.addr(), op("j")).build(&Creds::new(id, secret)),
    )
    .await;
    assert_eq!(resp.json()["Code"], "MissingSecurityToken");

    // Issued credentials expire.
    sim.set_sts_validity(0);
    let resp = send(sim.addr(), &post(sts_body("eyJ.token.sig"))).await;
    let c = &resp.json()["Credentials"];
    let issued = Creds::new(
        c["AccessKeyId"].as_str().unwrap(),
        c["AccessKeySecret"].as_str().unwrap(),
    )
    .with_token(c["SecurityToken"].as_str().unwrap());
    let resp = send(sim.addr(), &V3::reset(sim.addr(), op("j")).build(&issued)).await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["Code"], "InvalidSecurityToken.Expired");

    // Only registered OIDC tokens once any is registered; malformed requests refused.
    sim.add_valid_oidc_token("good");
    let resp = send(sim.addr(), &post(sts_body("bad"))).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["Code"], "AuthenticationFail.OIDCToken.Invalid");
    assert_eq!(send(sim.addr(), &post(sts_body("good"))).await.status, 200);
    let resp = send(
        sim.addr(),
        &post(sts_body("good").replace("RoleSessionName=dts-operator", "RoleSessionName=x")),
    )
    .await;
    assert_eq!(resp.json()["Code"], "InvalidParameter.RoleSessionName");
    let resp = send(
        sim.addr(),
        &post(sts_body("good").replace("DurationSeconds=3600", "DurationSeconds=60")),
    )
    .await;
    assert_eq!(resp.json()["Code"], "InvalidParameter.DurationSeconds");
    let resp = send(
        sim.addr(),
        &post(sts_body("good").replace("Format=JSON&", "")),
    )
    .await;
    assert!(
        resp.body.contains("<AssumeRoleWithOIDCResponse>"),
        "{}",
        resp.body
    );
    let resp = send(
        sim.addr(),
        &post(format!(
            "{}&AccessKeyId=testid&Signature=x",
            sts_body("good")
        )),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(sim.executed_calls("j").len(), 2);
}

#[tokio::test]
async fn gates_hold_until_opened_and_count_in_flight() {
    let (sim, creds) = sim().await;
    sim.script(
        "gated",
        [
            Answer::gate("g", Answer::Success),
            Answer::gate("g", Answer::internal_error()),
        ],
    );
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let req = V1::reset("POST", &creds, op("gated"), Place::Query).build(&creds.secret);
        let addr = sim.addr();
        tasks.push(tokio::spawn(async move { send(addr, &req).await }));
    }
    tokio::time::timeout(Duration::from_secs(10), sim.wait_for_gate_waiters("g", 2))
        .await
        .expect("two requests held");
    assert_eq!(sim.gate_waiters("g"), 2);
    let held = sim.executed_calls("gated");
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|c| c.outcome == "pending" && c.executed));
    assert_eq!(sim.in_flight("cn-hangzhou", "gated"), 2);
    assert_eq!(sim.max_in_flight("cn-hangzhou", "gated"), 2);

    sim.open_gate("g");
    let mut statuses: Vec<u16> = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 500]);
    assert_eq!(sim.in_flight("cn-hangzhou", "gated"), 0);
    assert_eq!(sim.gate_waiters("g"), 0);

    // Sequential calls never overlap; an open gate lets later requests through.
    sim.script("seq", [Answer::gate("g", Answer::Success), Answer::Success]);
    for _ in 0..2 {
        let req = V1::reset("POST", &creds, op("seq"), Place::Query).build(&creds.secret);
        assert_eq!(send(sim.addr(), &req).await.status, 200);
    }
    assert_eq!(sim.max_in_flight("cn-hangzhou", "seq"), 1);
    assert_eq!(sim.max_in_flight("cn-beijing", "seq"), 0);
}

#[tokio::test]
async fn drop_hang_and_client_timeouts() {
    let (sim, creds) = sim().await;
    sim.script(
        "j",
        [Answer::Drop, Answer::hang(Duration::from_millis(1500))],
    );

    let req = V1::reset("POST", &creds, op("j"), Place::Query).build(&creds.secret);
    let got = send_raw(sim.addr(), &req).await.expect("I/O");
    assert!(
        got.is_none(),
        "connection closed without an answer: {got:?}"
    );
    let calls = sim.executed_calls("j");
    assert_eq!(calls[0].outcome, "dropped");
    assert_eq!(calls[0].http_status, 0);

    // The client gives up before the answer; the call still counts as executed and completes.
    let req = V1::reset("POST", &creds, op("j"), Place::Query).build(&creds.secret);
    let r = tokio::time::timeout(Duration::from_millis(500), send_raw(sim.addr(), &req)).await;
    assert!(r.is_err(), "client timed out: {r:?}");
    assert_eq!(sim.executed_calls("j").len(), 2);
    assert_eq!(sim.executed_calls("j")[1].outcome, "pending");
    assert_eq!(sim.in_flight("cn-hangzhou", "j"), 1);
    support::eventually(|| sim.executed_calls("j")[1].outcome != "pending").await;
    let calls = sim.executed_calls("j");
    assert_eq!(calls[1].outcome, "ok");
    assert_eq!(calls[1].http_status, 200);
    assert_eq!(sim.in_flight("cn-hangzhou", "j"), 0);

    // A hang shorter than the client's patience answers success.
    sim.script("h", [Answer::Hang { millis: 50 }]);
    let req = V1::reset("POST", &creds, op("h"), Place::Query).build(&creds.secret);
    assert_eq!(send(sim.addr(), &req).await.json()["Success"], true);
}

#[tokio::test]
async fn admin_endpoints() {
    let sim = Simulator::start().await;
    let addr = sim.addr();
    let resp = send(addr, &Req::new("GET", "/_simulator/healthz")).await;
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok"));

    let resp = send(
        addr,
        &Req::new("POST", "/_simulator/keys")
            .body(r#"{"accessKeyId":"ak","accessKeySecret":"sk"}"#),
    )
    .await;
    assert_eq!(resp.status, 204);
    let resp = send(
        addr,
        &Req::new("POST", "/_simulator/script").body(
            r#"{"dtsJobId":"job","answers":[{"kind":"gateway_error","http_status":400,"code":"Throttling.User","message":"m"},{"kind":"gate","name":"adm"}]}"#,
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["queued"], 2);
    let resp = send(addr, &Req::new("POST", "/_simulator/script").body("{")).await;
    assert_eq!(resp.status, 400);

    let creds = Creds::new("ak", "sk");
    let req = V1::reset("POST", &creds, op("job"), Place::Query).build("sk");
    assert_eq!(send(addr, &req).await.json()["Code"], "Throttling.User");

    let req = V1::reset("POST", &creds, op("job"), Place::Query).build("sk");
    let held = tokio::spawn(async move { send(addr, &req).await });
    tokio::time::timeout(Duration::from_secs(10), sim.wait_for_gate_waiters("adm", 1))
        .await
        .unwrap();
    let resp = send(addr, &Req::new("GET", "/_simulator/gates/adm")).await;
    assert_eq!(resp.json()["waiters"], 1);
    let resp = send(addr, &Req::new("POST", "/_simulator/gates/adm/open")).await;
    assert_eq!(resp.status, 204);
    assert_eq!(held.await.unwrap().status, 200);

    let resp = send(addr, &Req::new("GET", "/_simulator/calls")).await;
    let calls = resp.json();
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 2, "admin calls are not recorded");
    assert_eq!(calls[0]["dtsJobId"], "job");
    assert_eq!(calls[0]["outcome"], "Throttling.User");
    assert_eq!(calls[0]["style"], "V1");
    assert_eq!(calls[1]["executed"], true);
    let back: Vec<dts_simulator::RecordedCall> = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(back, sim.calls());

    let resp = send(
        addr,
        &Req::new(
            "GET",
            "/_simulator/in-flight?regionId=cn-hangzhou&dtsJobId=job",
        ),
    )
    .await;
    assert_eq!(resp.json()["max"], 1);
    assert_eq!(resp.json()["current"], 0);
}

#[tokio::test]
async fn shutdown_releases_held_requests_and_stops_listening() {
    let (sim, creds) = sim().await;
    sim.script("j", [Answer::gate("never", Answer::Success)]);
    let addr = sim.addr();
    let req = V1::reset("POST", &creds, op("j"), Place::Query).build(&creds.secret);
    let held = tokio::spawn(async move { send_raw(addr, &req).await });
    tokio::time::timeout(
        Duration::from_secs(10),
        sim.wait_for_gate_waiters("never", 1),
    )
    .await
    .unwrap();
    let observer = sim.clone();
    tokio::time::timeout(Duration::from_secs(15), sim.shutdown())
        .await
        .expect("shutdown completes");
    let got = held.await.unwrap().expect("I/O");
    assert!(got.is_none(), "held request dropped unanswered");
    assert_eq!(observer.executed_calls("j")[0].outcome, "dropped");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn refuses_non_loopback_bind() {
    let config = SimConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..SimConfig::default()
    };
    assert!(matches!(
        Simulator::try_start_with(config).await,
        Err(dts_simulator::StartError::NotLoopback(_))
    ));
}

#[tokio::test]
async fn rate_limit_throttles_per_key_and_action_without_executing() {
    let sim = Simulator::start_with(SimConfig {
        // A refill so slow that no token comes back during the test.
        rate_limit: Some(dts_simulator::RateLimit {
            rate: 0.001,
            burst: 2,
        }),
        ..SimConfig::default()
    })
    .await;
    sim.add_access_key("k1", "s1");
    sim.add_access_key("k2", "s2");
    let (k1, k2) = (Creds::new("k1", "s1"), Creds::new("k2", "s2"));
    let reset = |c: &Creds| V1::reset("POST", c, op("job"), Place::Query).build(&c.secret);

    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let resp = send(sim.addr(), &reset(&k1)).await;
        statuses.push(resp.status);
        last = Some(resp);
    }
    assert_eq!(statuses, [200, 200, 400, 400]);
    let last = last.unwrap();
    assert_eq!(last.json()["Code"], "Throttling.User");
    assert_eq!(
        last.json()["Message"],
        "Request was denied due to user flow control."
    );
    assert!(last.json()["RequestId"].is_string());
    assert_eq!(last.header("x-acs-retry-after"), None);
    // Another key has a bucket of its own; so has another action of the same key.
    assert_eq!(send(sim.addr(), &reset(&k2)).await.status, 200);
    let describe = V1::reset("POST", &k1, op("job"), Place::Query)
        .set("Action", "DescribeDtsJobDetail")
        .build("s1");
    assert_eq!(send(sim.addr(), &describe).await.status, 200);
    // A bad signature is refused as such, before flow control.
    let forged = V1::reset("POST", &k1, op("job"), Place::Query).build("wrong");
    assert_eq!(
        send(sim.addr(), &forged).await.json()["Code"],
        "SignatureDoesNotMatch"
    );

    assert_eq!(
        sim.executed_calls("job").len(),
        3,
        "throttled calls never execute"
    );
    let throttled = sim.throttled_calls();
    assert_eq!(throttled.len(), 2);
    assert!(throttled.iter().all(|c| !c.executed
        && c.outcome == "Throttling.User"
        && c.http_status == 400
        && c.access_key_id.as_deref() == Some("k1")));
    // The record tells limit refusals from scripted throttling answers.
    sim.set_rate_limit(None);
    sim.script("job", [Answer::throttling()]);
    assert_eq!(send(sim.addr(), &reset(&k1)).await.status, 400);
    assert_eq!(sim.throttled_calls().len(), 2);
    assert_eq!(sim.executed_calls("job").len(), 4);
}

#[tokio::test]
async fn rate_limit_set_at_run_time_and_over_http() {
    let (sim, creds) = sim().await;
    let reset = || V1::reset("POST", &creds, op("j"), Place::Query).build(&creds.secret);
    for _ in 0..3 {
        assert_eq!(
            send(sim.addr(), &reset()).await.status,
            200,
            "no limit by default"
        );
    }
    let resp = send(
        sim.addr(),
        &Req::new("POST", "/_simulator/rate-limit").body(r#"{"rate":0.001,"burst":1}"#),
    )
    .await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    assert_eq!(send(sim.addr(), &reset()).await.status, 200);
    assert_eq!(send(sim.addr(), &reset()).await.status, 400);
    let resp = send(sim.addr(), &Req::new("GET", "/_simulator/calls")).await;
    let calls = resp.json();
    assert_eq!(calls.as_array().unwrap().last().unwrap()["throttled"], true);
    for bad in [r#"{"rate":0}"#, r#"{"rate":1,"burst":0}"#, "{"] {
        let resp = send(
            sim.addr(),
            &Req::new("POST", "/_simulator/rate-limit").body(bad),
        )
        .await;
        assert_eq!(resp.status, 400, "{bad}");
    }
    let lifted = send(
        sim.addr(),
        &Req::new("POST", "/_simulator/rate-limit").body("null"),
    )
    .await;
    assert_eq!(lifted.status, 204);
    assert_eq!(send(sim.addr(), &reset()).await.status, 200);
    // Throttled: 1 of 6 ResetDtsJob calls; executed: the other 5.
    assert_eq!(sim.throttled_calls().len(), 1);
    assert_eq!(sim.executed_calls("j").len(), 5);
}
