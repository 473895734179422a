//! Every known-answer vector of `tests/signature-vectors.json` (produced by the official Alibaba
//! Cloud SDKs) against the signer: the primitives, and whole requests built by `sign_v1` /
//! `sign_v3` with the vectors' time and nonce.

use std::collections::BTreeMap;

use dts_operator::aliyun::credentials::Credentials;
use dts_operator::aliyun::encoding::{canonical_query, pct};
use dts_operator::aliyun::endpoint::Endpoint;
use dts_operator::aliyun::signer::{
    RpcRequest, SigningContext, sha256_hex, sign_v1, sign_v3, v1_signature, v1_string_to_sign,
    v3_authorization, v3_canonical_request, v3_signature, v3_string_to_sign,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signature-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors file")).expect("JSON")
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
        .collect()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} missing"))
}

#[test]
fn the_committed_vectors_match_the_shared_reference() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/signature-vectors.json"
    );
    if let Ok(text) = std::fs::read_to_string(shared) {
        let theirs: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            theirs,
            vectors(),
            "tests/signature-vectors.json drifted from ../shared"
        );
    }
}

#[test]
fn v1_vectors() {
    let all = vectors();
    let cases = all["v1"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let name = s(case, "name");
        let params = str_map(&case["params"]);
        let sts = v1_string_to_sign(s(case, "http_method"), &params);
        assert_eq!(sts, s(case, "string_to_sign"), "{name}: string to sign");
        let sig = v1_signature(s(case, "access_key_secret"), &sts);
        assert_eq!(sig, s(case, "signature"), "{name}: signature");
        assert_eq!(
            pct(&sig),
            s(case, "signature_urlencoded"),
            "{name}: encoded"
        );
    }
}

#[test]
fn published_examples_are_among_the_vectors() {
    let all = vectors();
    let v1 = &all["v1"][0];
    assert_eq!(s(v1, "signature"), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    let v3 = &all["v3"][0];
    assert!(
        s(v3, "authorization").ends_with(
            "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        )
    );
}

#[test]
fn v3_vectors() {
    let all = vectors();
    let cases = all["v3"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = s(case, "name");
        let headers = str_map(&case["headers_signed"]);
        let canonical = v3_canonical_request(
            s(case, "http_method"),
            s(case, "pathname"),
            &str_map(&case["query"]),
            &headers,
            s(case, "x_acs_content_sha256"),
        );
        assert_eq!(canonical, s(case, "canonical_request"), "{name}: canonical");
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            s(case, "hashed_canonical_request"),
            "{name}: hash"
        );
        let sts = v3_string_to_sign(&canonical);
        assert_eq!(sts, s(case, "string_to_sign"), "{name}: string to sign");
        let sig = v3_signature(s(case, "access_key_secret"), &sts);
        let auth = v3_authorization(s(case, "access_key_id"), &headers, &sig);
        assert_eq!(auth, s(case, "authorization"), "{name}: authorization");
    }
}

#[test]
fn form_body_vector_hashes_its_body() {
    // The vector's note gives the body; its hash must be the signed x-acs-content-sha256.
    let all = vectors();
    let case = &all["v3"][3];
    let body =
        "DtsJobId=l3m1213ye7l%2A%2A%2A%2A&RegionId=cn-hangzhou&SynchronizationDirection=Forward";
    assert_eq!(sha256_hex(body.as_bytes()), s(case, "x_acs_content_sha256"));
    let params: BTreeMap<String, String> = [
        ("DtsJobId", "l3m1213ye7l****"),
        ("RegionId", "cn-hangzhou"),
        ("SynchronizationDirection", "Forward"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(canonical_query(&params), body);
}

fn fixed_context(all: &Value) -> SigningContext {
    SigningContext {
        timestamp: s(&all["common"], "Timestamp").parse().unwrap(),
        nonce: s(&all["common"], "SignatureNonce").to_string(),
    }
}

fn rpc(params: &[(&str, &str)]) -> RpcRequest {
    RpcRequest {
        action: "ResetDtsJob".into(),
        version: "2020-01-01".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

const DTS_PARAMS: &[(&str, &str)] = &[
    ("DtsJobId", "l3m1213ye7l****"),
    ("RegionId", "cn-hangzhou"),
    ("SynchronizationDirection", "Forward"),
];

#[test]
fn sign_v1_builds_the_vector_requests() {
    let all = vectors();
    let endpoint = Endpoint::parse("dts.aliyuncs.com").unwrap();
    let ctx = fixed_context(&all);

    let plain = sign_v1(
        &rpc(DTS_PARAMS),
        &Credentials::new("testid", "testsecret", None),
        &endpoint,
        &ctx,
    );
    let case = &all["v1"][2];
    assert_eq!(s(case, "name"), "dts_ResetDtsJob_POST");
    assert_eq!(plain.method, s(case, "http_method"));
    assert_eq!(plain.string_to_sign, s(case, "string_to_sign"));
    let expected_query = format!(
        "{}&Signature={}",
        canonical_query(&str_map(&case["params"])),
        s(case, "signature_urlencoded")
    );
    assert_eq!(
        plain.url,
        format!("https://dts.aliyuncs.com/?{expected_query}")
    );

    let mut escaping = DTS_PARAMS.to_vec();
    escaping.push(("DtsInstanceId", "dts a*b~c/d+e=f&g 中文"));
    escaping.push(("ResourceGroupId", "rg-acfm!'()"));
    let with_token = sign_v1(
        &rpc(&escaping),
        &Credentials::new(
            "testid",
            "testsecret",
            Some("CAIS+sts/token=with~odd*chars".into()),
        ),
        &endpoint,
        &ctx,
    );
    let case = &all["v1"][4];
    assert_eq!(s(case, "name"), "dts_ResetDtsJob_POST_sts_and_escaping");
    assert_eq!(with_token.string_to_sign, s(case, "string_to_sign"));
    assert!(
        with_token
            .url
            .ends_with(&format!("&Signature={}", s(case, "signature_urlencoded"))),
        "{}",
        with_token.url
    );
    // The wire carries the canonical encoding: %20, never +.
    assert!(
        with_token
            .url
            .contains("DtsInstanceId=dts%20a%2Ab~c%2Fd%2Be%3Df%26g%20%E4%B8%AD%E6%96%87")
    );
    assert!(!with_token.url.contains('+'));
}

#[test]
fn sign_v3_builds_the_vector_requests() {
    let all = vectors();
    let endpoint = Endpoint::parse("dts.aliyuncs.com").unwrap();
    let ctx = fixed_context(&all);
    let signed = sign_v3(
        &rpc(DTS_PARAMS),
        &Credentials::new("testid", "testsecret", None),
        &endpoint,
        &ctx,
    );
    let case = &all["v3"][1];
    assert_eq!(s(case, "name"), "dts_ResetDtsJob_query");
    assert_eq!(signed.string_to_sign, s(case, "string_to_sign"));
    let auth = signed
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .unwrap();
    assert_eq!(auth, s(case, "authorization"));
    let wire = &all["sdk_wire_requests"][0]["request"];
    assert_eq!(
        signed.url,
        s(wire, "url"),
        "same URL as the SDK puts on the wire"
    );

    let mut escaping = DTS_PARAMS.to_vec();
    escaping.push(("DtsInstanceId", "dts a*b~c/d+e=f&g 中文"));
    escaping.push(("ResourceGroupId", "rg-acfm!'()"));
    let signed = sign_v3(
        &rpc(&escaping),
        &Credentials::new(
            "testid",
            "testsecret",
            Some("CAIS+sts/token=with~odd*chars".into()),
        ),
        &endpoint,
        &ctx,
    );
    let case = &all["v3"][2];
    assert_eq!(s(case, "name"), "dts_ResetDtsJob_query_sts_and_escaping");
    let auth = signed
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .unwrap();
    assert_eq!(auth, s(case, "authorization"));
}

/// The whole requests the DTS SDK builds: our primitives re-derive the SDK's signatures from
/// what it put on the wire (V3: every header it signed; V1: every query parameter).
#[test]
fn sdk_wire_requests_verify_with_our_primitives() {
    let all = vectors();
    let secret = s(&all["common"], "AccessKeySecret");
    let wires = all["sdk_wire_requests"].as_array().unwrap();
    assert_eq!(wires.len(), 4);
    for wire in wires {
        let name = s(wire, "name");
        let req = &wire["request"];
        let headers = req["headers"].as_object().unwrap();
        if let Some(auth) = headers.get("Authorization").and_then(Value::as_str) {
            let signed_names: Vec<&str> = auth
                .split("SignedHeaders=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .split(';')
                .collect();
            let signed: BTreeMap<String, String> = signed_names
                .iter()
                .map(|n| {
                    let v = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(n))
                        .map(|(_, v)| v.as_str().unwrap().to_string())
                        .unwrap_or_else(|| panic!("{name}: signed header {n} not sent"));
                    (n.to_string(), v)
                })
                .collect();
            let canonical = v3_canonical_request(
                s(req, "method"),
                s(req, "pathname"),
                &str_map(&req["query"]),
                &signed,
                headers["x-acs-content-sha256"].as_str().unwrap(),
            );
            assert_eq!(canonical, s(wire, "canonical_request"), "{name}");
            let sts = v3_string_to_sign(&canonical);
            assert_eq!(sts, s(wire, "string_to_sign"), "{name}");
            let id = auth
                .split("Credential=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            assert_eq!(
                v3_authorization(id, &signed, &v3_signature(secret, &sts)),
                auth,
                "{name}"
            );
        } else {
            let mut params = str_map(&req["query"]);
            let signature = params.remove("Signature").unwrap();
            let sts = v1_string_to_sign(s(req, "method"), &params);
            assert_eq!(sts, s(wire, "string_to_sign"), "{name}");
            assert_eq!(v1_signature(secret, &sts), signature, "{name}");
            assert!(
                s(req, "url").ends_with(&format!("Signature={}", pct(&signature))),
                "{name}: the SDK sends the signature percent-encoded"
            );
        }
        assert_eq!(wire["parsed_response"]["Success"], true);
    }
}
