//! Every known-answer vector in `signature-vectors.json` (produced by the official
//! SDKs) through the simulator's pure verification functions, and every recorded SDK wire request
//! through the full authentication with the clock pinned to the vector's time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use dts_simulator::verify::{
    self, KeyRecord, KeyStore, ParsedRequest, Style, VerifyOptions, WireRequest,
};
use serde_json::Value;

/// The vectors: `$DTS_SIGNATURE_VECTORS`, else the copy committed in the repository
/// (`tests/signature-vectors.json`, produced by the official SDKs).
fn vectors_path() -> PathBuf {
    if let Some(p) = std::env::var_os("DTS_SIGNATURE_VECTORS") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/signature-vectors.json")
}

fn vectors() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[derive(Default)]
struct Keys {
    keys: HashMap<String, KeyRecord>,
    nonces: Mutex<HashSet<(String, String)>>,
}

impl Keys {
    fn with(id: &str, secret: &str, token: Option<&str>) -> Keys {
        let mut k = Keys::default();
        k.keys.insert(
            id.to_owned(),
            KeyRecord {
                secret: secret.to_owned(),
                security_token: token.map(str::to_owned),
                expires_at: None,
            },
        );
        k
    }
}

impl KeyStore for Keys {
    fn lookup(&self, id: &str) -> Option<KeyRecord> {
        self.keys.get(id).cloned()
    }
    fn use_nonce(&self, id: &str, nonce: &str) -> bool {
        self.nonces
            .lock()
            .unwrap()
            .insert((id.to_owned(), nonce.to_owned()))
    }
    fn token_expired(&self, _: &str) -> bool {
        false
    }
}

fn at(ts: &str) -> VerifyOptions {
    VerifyOptions {
        now: verify::parse_timestamp(ts).expect("vector timestamp"),
        max_skew: Some(Duration::from_secs(15 * 60)),
    }
}

fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", verify::pct(k), verify::pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn v1_vectors() {
    let all = vectors();
    let list = all["v1"].as_array().expect("v1 array");
    assert!(!list.is_empty());
    for v in list {
        let name = s(v, "name");
        let params = str_map(&v["params"]);
        let method = s(v, "http_method");
        let sts =
            verify::v1_string_to_sign(method, params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(sts, s(v, "string_to_sign"), "{name}: string to sign");
        let secret = s(v, "access_key_secret");
        assert_eq!(
            format!("{secret}&"),
            s(v, "hmac_key"),
            "{name}: HMAC key is secret + &"
        );
        let sig = verify::v1_signature(secret, &sts);
        assert_eq!(sig, s(v, "signature"), "{name}: signature");
        assert_eq!(
            verify::pct(&sig),
            s(v, "signature_urlencoded"),
            "{name}: encoded signature"
        );

        // The same request on the wire, through the full gateway check. (The legacy `TimeStamp`
        // spelling is only a signing vector: the gateway requires `Timestamp`.)
        let Some(ts) = params.get("Timestamp") else {
            continue;
        };
        let mut wire_params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        wire_params.push(("Signature", sig.as_str()));
        let wire = WireRequest {
            method: method.to_owned(),
            path: "/".into(),
            raw_query: encode_pairs(wire_params),
            headers: vec![("host".into(), "dts.aliyuncs.com".into())],
            body: Vec::new(),
        };
        let parsed = ParsedRequest::parse(wire, None);
        assert_eq!(parsed.style, Style::V1, "{name}");
        let token = params.get("SecurityToken").map(String::as_str);
        let keys = Keys::with(&params["AccessKeyId"], secret, token);
        verify::authenticate(&parsed, &keys, at(ts))
            .unwrap_or_else(|r| panic!("{name}: rejected: {r:?}"));
        let wrong = Keys::with(&params["AccessKeyId"], "not-the-secret", token);
        let r = verify::authenticate(&parsed, &wrong, at(ts)).unwrap_err();
        assert_eq!(r.code, "SignatureDoesNotMatch", "{name}");
        assert!(r.message.ends_with(&sts), "{name}: {}", r.message);
    }
}

#[test]
fn v1_form_body_vector_on_the_wire() {
    let all = vectors();
    let v = all["v1"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| s(v, "name") == "dts_ResetDtsJob_POST_params_in_form_body")
        .expect("form-body vector");
    let params = str_map(&v["params"]);
    let body_keys = ["DtsJobId", "SynchronizationDirection"];
    let query = encode_pairs(
        params
            .iter()
            .filter(|(k, _)| !body_keys.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("Signature", s(v, "signature"))]),
    );
    let body = "DtsJobId=l3m1213ye7l%2A%2A%2A%2A&SynchronizationDirection=Forward";
    let wire = WireRequest {
        method: "POST".into(),
        path: "/".into(),
        raw_query: query,
        headers: vec![
            ("host".into(), "dts.aliyuncs.com".into()),
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ],
        body: body.as_bytes().to_vec(),
    };
    let parsed = ParsedRequest::parse(wire, None);
    assert_eq!(parsed.params["DtsJobId"], "l3m1213ye7l****");
    let keys = Keys::with("testid", "testsecret", None);
    verify::authenticate(&parsed, &keys, at("2024-01-01T12:00:00Z")).expect("accepted");
}

fn v3_wire(
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    authorization: &str,
    body: &[u8],
) -> WireRequest {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    h.push(("authorization".into(), authorization.to_owned()));
    WireRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        raw_query: encode_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        headers: h,
        body: body.to_vec(),
    }
}

#[test]
fn v3_vectors() {
    let all = vectors();
    let list = all["v3"].as_array().expect("v3 array");
    assert!(!list.is_empty());
    for v in list {
        let name = s(v, "name");
        let query = str_map(&v["query"]);
        let headers = str_map(&v["headers_signed"]);
        let method = s(v, "http_method");
        let path = s(v, "pathname");
        let canonical = verify::v3_canonical_request(
            method,
            path,
            query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            s(v, "x_acs_content_sha256"),
        );
        assert_eq!(canonical, s(v, "canonical_request"), "{name}: canonical");
        assert_eq!(
            verify::sha256_hex(canonical.as_bytes()),
            s(v, "hashed_canonical_request"),
            "{name}: hash"
        );
        let sts = verify::v3_string_to_sign(&canonical);
        assert_eq!(sts, s(v, "string_to_sign"), "{name}: string to sign");
        let secret = s(v, "access_key_secret");
        let sig = verify::v3_signature(secret, &sts);
        let auth = verify::parse_authorization(s(v, "authorization")).expect("parses");
        assert_eq!(auth.signature, sig, "{name}: signature");
        assert_eq!(auth.access_key_id, s(v, "access_key_id"), "{name}");
        let names: Vec<&str> = headers.keys().map(String::as_str).collect();
        assert_eq!(
            s(v, "authorization"),
            format!(
                "ACS3-HMAC-SHA256 Credential={},SignedHeaders={},Signature={sig}",
                s(v, "access_key_id"),
                names.join(";")
            ),
            "{name}: authorization"
        );

        // On the wire. The form-body vector's body is given in its note.
        let body: &[u8] = if name == "dts_ResetDtsJob_form_body" {
            b"DtsJobId=l3m1213ye7l%2A%2A%2A%2A&RegionId=cn-hangzhou&SynchronizationDirection=Forward"
        } else {
            b""
        };
        assert_eq!(
            verify::sha256_hex(body),
            s(v, "x_acs_content_sha256"),
            "{name}: body hash"
        );
        let wire = v3_wire(method, path, &query, &headers, s(v, "authorization"), body);
        let parsed = ParsedRequest::parse(wire, None);
        assert_eq!(parsed.style, Style::V3, "{name}");
        let token = headers.get("x-acs-security-token").map(String::as_str);
        let keys = Keys::with(s(v, "access_key_id"), secret, token);
        verify::authenticate(&parsed, &keys, at(&headers["x-acs-date"]))
            .unwrap_or_else(|r| panic!("{name}: rejected: {r:?}"));
        if name == "dts_ResetDtsJob_form_body" {
            assert_eq!(parsed.params["DtsJobId"], "l3m1213ye7l****");
        }
        let wrong = Keys::with(s(v, "access_key_id"), "wrong", token);
        let r = verify::authenticate(&parsed, &wrong, at(&headers["x-acs-date"])).unwrap_err();
        assert_eq!(r.code, "SignatureDoesNotMatch", "{name}");
        assert!(r.message.ends_with(&sts), "{name}: {}", r.message);
    }
}

/// Splits `https://host/path?query` into (host, path, raw query).
fn split_url(url: &str) -> (String, String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path_query) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    (authority.to_owned(), path.to_owned(), query.to_owned())
}

#[test]
fn sdk_wire_requests_are_accepted() {
    let all = vectors();
    let list = all["sdk_wire_requests"].as_array().expect("array");
    assert!(!list.is_empty());
    for v in list {
        let name = s(v, "name");
        let req = &v["request"];
        let (host, path, raw_query) = split_url(s(req, "url"));
        let headers = str_map(&req["headers"]);
        assert_eq!(headers["host"], host, "{name}");
        assert_eq!(path, s(req, "pathname"), "{name}");
        let body = match &req["body"] {
            Value::Null => Vec::new(),
            Value::String(b) => b.as_bytes().to_vec(),
            other => panic!("{name}: unexpected body {other}"),
        };
        let wire = WireRequest {
            method: s(req, "method").to_owned(),
            path,
            raw_query,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body,
        };
        let parsed = ParsedRequest::parse(wire, None);
        // The decoded query must be what the SDK meant to send.
        let expected_query = str_map(&req["query"]);
        let got_query: BTreeMap<String, String> = parsed.query.iter().cloned().collect();
        assert_eq!(got_query, expected_query, "{name}: decoded query");

        let token = v["config"]["security_token"].as_str();
        let keys = Keys::with("testid", "testsecret", token);
        let now = parsed.timestamp.clone().expect("timestamp");
        let ok = verify::authenticate(&parsed, &keys, at(&now))
            .unwrap_or_else(|r| panic!("{name}: rejected: {r:?}"));
        assert_eq!(ok.access_key_id, "testid");
        assert_eq!(ok.with_security_token, token.is_some(), "{name}");
        assert_eq!(parsed.action.as_deref(), Some("ResetDtsJob"), "{name}");
        assert_eq!(parsed.version.as_deref(), Some("2020-01-01"), "{name}");
        assert_eq!(
            parsed.params.get("DtsJobId").map(String::as_str),
            Some("l3m1213ye7l****"),
            "{name}"
        );
        // A replay of the same request is refused.
        let r = verify::authenticate(&parsed, &keys, at(&now)).unwrap_err();
        assert_eq!(r.code, "SignatureNonceUsed", "{name}");

        // The server's string to sign equals the SDK's.
        let fresh = Keys::with("testid", "wrong", token);
        let r = verify::authenticate(&parsed, &fresh, at(&now)).unwrap_err();
        assert_eq!(r.code, "SignatureDoesNotMatch", "{name}");
        assert!(
            r.message.ends_with(s(v, "string_to_sign")),
            "{name}: {}",
            r.message
        );
        if let Some(canonical) = v["canonical_request"].as_str() {
            let hash = verify::sha256_hex(canonical.as_bytes());
            assert!(r.message.ends_with(&hash), "{name}");
        }

        // Pinned clock matters: 16 minutes later the same request is too old.
        let later = verify::parse_timestamp(&now).unwrap() + jiff::SignedDuration::from_mins(16);
        let fresh = Keys::with("testid", "testsecret", token);
        let r = verify::authenticate(
            &parsed,
            &fresh,
            VerifyOptions {
                now: later,
                max_skew: Some(Duration::from_secs(900)),
            },
        )
        .unwrap_err();
        assert_eq!(r.code, "InvalidTimeStamp.Expired", "{name}");
    }
}
