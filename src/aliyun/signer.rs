//! Request signing for Alibaba Cloud RPC APIs: V1 (`HMAC-SHA1`, the API reference's) and V3
//! (`ACS3-HMAC-SHA256`, the official SDKs' default).
//!
//! Everything here is a pure function of (request, credentials, time, nonce): no clock, no
//! randomness, no network. The caller passes the timestamp and nonce, so the known-answer vectors
//! produced by the official SDKs (`tests/signature-vectors.json`) pin every byte.
//!
//! What goes on the wire is the canonical encoding itself (`%20`, never `+`), so the gateway's
//! re-encoding of what it received matches what was signed.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Digest as _;

use super::credentials::Credentials;
use super::encoding::{canonical_query, format_timestamp, pct};
use super::endpoint::Endpoint;
use super::redact::{REDACTED, redact_url};

/// `SignatureMethod` of V1.
pub const V1_SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// `SignatureVersion` of V1.
pub const V1_SIGNATURE_VERSION: &str = "1.0";
/// The V3 algorithm name, first token of `Authorization` and first line of the string to sign.
pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// Lower-hex SHA-256 of the empty body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Signature version: `v3` (ACS3-HMAC-SHA256, the official SDKs' default) or `v1` (HMAC-SHA1).
/// Optional, default `v3`.
// One type for the concept: the signer's choice, `--signature-version` and
// `spec.signatureVersion` (hence the clap, serde and schema derives; the doc is the CRD's).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
pub enum SignatureVersion {
    /// HMAC-SHA1, parameters in the query (the API reference's form).
    #[serde(rename = "v1")]
    #[value(name = "v1")]
    V1,
    /// ACS3-HMAC-SHA256 (the official SDKs' default).
    #[serde(rename = "v3")]
    #[value(name = "v3")]
    #[default]
    V3,
}

impl SignatureVersion {
    /// The spelling used in flags and in the resource (`v1`, `v3`).
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureVersion::V1 => "v1",
            SignatureVersion::V3 => "v3",
        }
    }
}

/// V1 `StringToSign = METHOD & pct("/") & pct(canonical query)`; `params` must not hold
/// `Signature`.
pub fn v1_string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    format!("{}&{}&{}", method, pct("/"), pct(&canonical_query(params)))
}

/// V1 signature: `base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))`.
pub fn v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let key = format!("{access_key_secret}&");
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Lower-hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// V3 canonical request. `headers` are the signed headers with lower-case names (a `BTreeMap`,
/// so already sorted); values are trimmed here.
pub fn v3_canonical_request(
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    body_sha256: &str,
) -> String {
    let mut canonical_headers = String::new();
    for (name, value) in headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value.trim());
        canonical_headers.push('\n');
    }
    let signed_headers = signed_header_names(headers);
    format!(
        "{method}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{body_sha256}",
        canonical_query(query)
    )
}

/// `SignedHeaders`: the signed header names, sorted, joined by `;`.
fn signed_header_names(headers: &BTreeMap<String, String>) -> String {
    headers
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(";")
}

/// V3 `StringToSign = "ACS3-HMAC-SHA256\n" + hex(SHA256(canonical request))`.
pub fn v3_string_to_sign(canonical_request: &str) -> String {
    format!(
        "{V3_ALGORITHM}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// V3 signature: `hex(HMAC-SHA256(AccessKeySecret, StringToSign))` (no `&` on the key).
pub fn v3_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `Authorization` header value of V3.
pub fn v3_authorization(
    access_key_id: &str,
    headers: &BTreeMap<String, String>,
    signature: &str,
) -> String {
    let signed_headers = signed_header_names(headers);
    format!(
        "{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// An RPC call before signing: action, version and the operation's own parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcRequest {
    /// e.g. `ResetDtsJob`.
    pub action: String,
    /// e.g. `2020-01-01`.
    pub version: String,
    /// Operation parameters (`DtsJobId`, `RegionId`, …); absent ones are simply not in the map.
    pub params: BTreeMap<String, String>,
}

/// What makes one attempt unique: its time and nonce. A fresh one per attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningContext {
    /// UTC time of signing, rendered `yyyy-MM-ddTHH:mm:ssZ`.
    pub timestamp: jiff::Timestamp,
    /// `SignatureNonce` / `x-acs-signature-nonce`.
    pub nonce: String,
}

impl SigningContext {
    /// A context for now with a random UUID nonce: the one impure helper, kept separate.
    pub fn fresh() -> Self {
        SigningContext {
            timestamp: jiff::Timestamp::now(),
            nonce: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The timestamp in the format both signature versions use.
    pub fn timestamp_str(&self) -> String {
        format_timestamp(self.timestamp)
    }
}

/// A signed request, ready for the transport. The URL's query is the canonical encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Always `POST` here, as the SDKs send RPC calls.
    pub method: &'static str,
    /// Full URL including the canonical query string.
    pub url: String,
    /// Headers to send, in order (names lower-case). `host` is included and must be sent as is.
    pub headers: Vec<(String, String)>,
    /// Always empty for ResetDtsJob (parameters travel in the query).
    pub body: Vec<u8>,
    /// The string that was signed, kept for diagnostics (it holds no secret).
    pub string_to_sign: String,
}

impl SignedRequest {
    /// The request as it may be shown to a human: the security token is replaced by
    /// `[redacted]`, in the URL (V1) and in headers (V3). The signature stays: it is not a
    /// secret and is what one needs to debug `SignatureDoesNotMatch`.
    pub fn redacted(&self) -> SignedRequest {
        let mut out = self.clone();
        out.url = redact_url(&self.url);
        for (name, value) in &mut out.headers {
            if name.eq_ignore_ascii_case("x-acs-security-token") {
                *value = REDACTED.to_string();
            }
        }
        out
    }
}

impl std::fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.redacted();
        f.debug_struct("SignedRequest")
            .field("method", &r.method)
            .field("url", &r.url)
            .field("headers", &r.headers)
            .field("body_len", &r.body.len())
            .finish()
    }
}

/// Signs `req` with V1 for `endpoint`: every parameter (common ones included) goes into the
/// query, then `Signature`. `Format=JSON` is asked for (the default would be XML).
pub fn sign_v1(
    req: &RpcRequest,
    creds: &Credentials,
    endpoint: &Endpoint,
    ctx: &SigningContext,
) -> SignedRequest {
    let mut params = req.params.clone();
    params.insert("Action".into(), req.action.clone());
    params.insert("Version".into(), req.version.clone());
    params.insert("Format".into(), "JSON".into());
    params.insert("AccessKeyId".into(), creds.access_key_id().to_string());
    params.insert("SignatureMethod".into(), V1_SIGNATURE_METHOD.into());
    params.insert("SignatureVersion".into(), V1_SIGNATURE_VERSION.into());
    params.insert("SignatureNonce".into(), ctx.nonce.clone());
    params.insert("Timestamp".into(), ctx.timestamp_str());
    if let Some(token) = creds.security_token() {
        params.insert("SecurityToken".into(), token.to_string());
    }
    let string_to_sign = v1_string_to_sign("POST", &params);
    let signature = v1_signature(creds.access_key_secret(), &string_to_sign);
    let query = format!("{}&Signature={}", canonical_query(&params), pct(&signature));
    let headers = vec![
        ("host".to_string(), endpoint.host_header()),
        ("accept".to_string(), "application/json".to_string()),
    ];
    SignedRequest {
        method: "POST",
        url: format!("{}/?{query}", endpoint.base_url()),
        headers,
        body: Vec::new(),
        string_to_sign,
    }
}

/// Signs `req` with V3 for `endpoint`: operation parameters in the query, an empty body, and the
/// `host`, `x-acs-*` headers signed (as the Go SDK and the documentation do).
pub fn sign_v3(
    req: &RpcRequest,
    creds: &Credentials,
    endpoint: &Endpoint,
    ctx: &SigningContext,
) -> SignedRequest {
    let mut signed = BTreeMap::new();
    signed.insert("host".to_string(), endpoint.host_header());
    signed.insert("x-acs-action".to_string(), req.action.clone());
    signed.insert("x-acs-version".to_string(), req.version.clone());
    signed.insert("x-acs-date".to_string(), ctx.timestamp_str());
    signed.insert("x-acs-signature-nonce".to_string(), ctx.nonce.clone());
    signed.insert(
        "x-acs-content-sha256".to_string(),
        EMPTY_BODY_SHA256.to_string(),
    );
    if let Some(token) = creds.security_token() {
        signed.insert("x-acs-security-token".to_string(), token.to_string());
    }
    let canonical = v3_canonical_request("POST", "/", &req.params, &signed, EMPTY_BODY_SHA256);
    let string_to_sign = v3_string_to_sign(&canonical);
    let signature = v3_signature(creds.access_key_secret(), &string_to_sign);
    let authorization = v3_authorization(creds.access_key_id(), &signed, &signature);
    let query = canonical_query(&req.params);
    let url = if query.is_empty() {
        format!("{}/", endpoint.base_url())
    } else {
        format!("{}/?{query}", endpoint.base_url())
    };
    let mut headers: Vec<(String, String)> = signed.into_iter().collect();
    headers.push(("accept".to_string(), "application/json".to_string()));
    headers.push(("authorization".to_string(), authorization));
    SignedRequest {
        method: "POST",
        url,
        headers,
        body: Vec::new(),
        string_to_sign,
    }
}

/// Signs with the chosen version.
pub fn sign(
    version: SignatureVersion,
    req: &RpcRequest,
    creds: &Credentials,
    endpoint: &Endpoint,
    ctx: &SigningContext,
) -> SignedRequest {
    match version {
        SignatureVersion::V1 => sign_v1(req, creds, endpoint, ctx),
        SignatureVersion::V3 => sign_v3(req, creds, endpoint, ctx),
    }
}
