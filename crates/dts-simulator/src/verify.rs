//! Pure request verification: the Alibaba Cloud RPC signature algorithms (V1 `HMAC-SHA1` and V3
//! `ACS3-HMAC-SHA256`) as the gateway recomputes them, and the gateway's checks on a whole request
//! (required parameters, timestamp skew, access key, signature, nonce, security token).
//!
//! Owns: percent-encoding, parameter decoding, string-to-sign construction, signature
//! computation, and [`authenticate`], which decides whether a parsed request would be accepted.
//! It never touches the network or a clock: the current time is passed in, and the stateful parts
//! (which keys exist, which nonces were seen) come through the [`KeyStore`] trait.
//!
//! This is written from the public documentation and the SDKs' known-answer vectors, independently
//! of the operator's signer, so that a bug in the signer shows up as a rejected request.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The V3 algorithm name, first word of the `Authorization` header and of the string to sign.
pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Lower-hex SHA-256 of the empty body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Percent-encodes `s` the way Alibaba Cloud signs: UTF-8 bytes, the RFC 3986 unreserved set
/// (`A-Z a-z 0-9 - _ . ~`) literal, every other byte `%XY` with upper-case hex.
pub fn pct(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
    out
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, `%XY` a byte;
/// malformed escapes stay literal; invalid UTF-8 is replaced (as a servlet container would).
pub fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Splits a query string or form body into decoded `(name, value)` pairs, in wire order.
/// A component without `=` is a name with an empty value; empty components are skipped.
pub fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(part), String::new()),
        })
        .collect()
}

/// V1 string to sign: `METHOD&%2F&pct(k1=v1&k2=v2...)` over every parameter except `Signature`,
/// sorted by name, with the names and values `pct`-encoded before joining.
pub fn v1_string_to_sign<'a, I>(method: &str, params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, _)| *k != "Signature")
        .collect();
    pairs.sort();
    let canonical = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        pct("/"),
        pct(&canonical)
    )
}

/// V1 signature: `base64(HMAC-SHA1(key = secret + "&", string_to_sign))`.
pub fn v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let key = format!("{access_key_secret}&");
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// V3 canonical query string: decoded parameters re-encoded with [`pct`], sorted, `k=` for an
/// empty value, joined by `&`.
pub fn v3_canonical_query<'a, I>(query: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(String, String)> =
        query.into_iter().map(|(k, v)| (pct(k), pct(v))).collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// V3 canonical request:
///
/// ```text
/// METHOD \n PATH \n canonical query \n name:trimmed-value\n (each signed header, sorted) \n
/// signed;header;names \n body-sha256
/// ```
///
/// `signed_headers` holds the signed headers' names (any case) and values as received.
pub fn v3_canonical_request<'a, Q, H>(
    method: &str,
    path: &str,
    query: Q,
    signed_headers: H,
    body_sha256: &str,
) -> String
where
    Q: IntoIterator<Item = (&'a str, &'a str)>,
    H: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut headers: Vec<(String, String)> = signed_headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_names = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        v3_canonical_query(query),
        canonical_headers,
        signed_names,
        body_sha256
    )
}

/// V3 string to sign: `"ACS3-HMAC-SHA256\n" + hex(SHA-256(canonical request))`.
pub fn v3_string_to_sign(canonical_request: &str) -> String {
    format!(
        "{V3_ALGORITHM}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// V3 signature: `hex(HMAC-SHA256(key = secret, string_to_sign))` (no `&` appended).
pub fn v3_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Lower-hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The parts of a V3 `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    /// `Credential=` — the AccessKeyId.
    pub access_key_id: String,
    /// `SignedHeaders=` split on `;`, as sent.
    pub signed_headers: Vec<String>,
    /// `Signature=` — lower-hex.
    pub signature: String,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("access_key_id", &self.access_key_id)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &"<redacted>")
            .finish()
    }
}

/// Parses `ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`; the error says what is
/// wrong, for the `IncompleteSignature` message.
pub fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let rest = value
        .strip_prefix(V3_ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| format!("the Authorization header must start with \"{V3_ALGORITHM} \""))?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("malformed Authorization component {part:?}"))?;
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => return Err(format!("unknown Authorization component {other:?}")),
        };
        if slot.replace(v.trim().to_owned()).is_some() {
            return Err(format!("duplicate Authorization component {k:?}"));
        }
    }
    let access_key_id = credential
        .filter(|c| !c.is_empty())
        .ok_or("the Authorization header has no Credential")?;
    let signed = signed
        .filter(|s| !s.is_empty())
        .ok_or("the Authorization header has no SignedHeaders")?;
    let signature = signature
        .filter(|s| !s.is_empty())
        .ok_or("the Authorization header has no Signature")?;
    Ok(Authorization {
        access_key_id,
        signed_headers: signed.split(';').map(str::to_owned).collect(),
        signature,
    })
}

/// Parses a timestamp in exactly the gateway's format, `yyyy-MM-ddTHH:mm:ssZ` (UTC).
pub fn parse_timestamp(s: &str) -> Option<jiff::Timestamp> {
    let b = s.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let shape_ok = b.len() == 20
        && digits.iter().all(|&i| b[i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape_ok {
        return None;
    }
    s.parse().ok()
}

/// Formats a timestamp the gateway's way, `yyyy-MM-ddTHH:mm:ssZ`.
pub fn format_timestamp(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// How a request is signed (or that it is an anonymous STS call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Style {
    /// `Signature` parameter, HMAC-SHA1.
    V1,
    /// `Authorization: ACS3-HMAC-SHA256 ...`.
    V3,
    /// Anonymous STS `AssumeRoleWithOIDC`.
    StsOidc,
    /// None of the above.
    Unknown,
}

/// The answer format the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Format=JSON` (any case) or V3.
    Json,
    /// `Format=XML`, or V1/STS without `Format` (the RPC default).
    Xml,
}

/// A request as received, before any decision.
#[derive(Debug, Clone)]
pub struct WireRequest {
    /// HTTP method as sent.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The raw query string (without `?`), as sent.
    pub raw_query: String,
    /// Headers, names lower-case, values as received.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl WireRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` joined by `,`.
    fn header_joined(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// What the gateway reads from a request before deciding anything; filled as far as possible even
/// for requests that will be refused, so they can be recorded.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    /// The request itself.
    pub wire: WireRequest,
    /// Detected signing style.
    pub style: Style,
    /// Decoded query parameters, in wire order.
    pub query: Vec<(String, String)>,
    /// Decoded form-body parameters (only for `application/x-www-form-urlencoded`), in wire order.
    pub form: Vec<(String, String)>,
    /// Query ∪ form (a form value wins over a query value of the same name).
    pub params: BTreeMap<String, String>,
    /// AccessKeyId (V1 parameter or V3 `Credential`).
    pub access_key_id: Option<String>,
    /// Action (V1/STS parameter or V3 `x-acs-action`).
    pub action: Option<String>,
    /// Version (V1/STS parameter or V3 `x-acs-version`).
    pub version: Option<String>,
    /// Timestamp as sent (V1 `Timestamp` or V3 `x-acs-date`).
    pub timestamp: Option<String>,
    /// Nonce as sent (V1 `SignatureNonce` or V3 `x-acs-signature-nonce`).
    pub nonce: Option<String>,
    /// Security token (V1 `SecurityToken` or V3 `x-acs-security-token`).
    pub security_token: Option<String>,
    /// `Host` header, or the URI authority.
    pub host: Option<String>,
    /// Requested answer format.
    pub format: Format,
}

/// Parameter names that are protocol plumbing rather than operation parameters.
pub const COMMON_PARAMS: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "Timestamp",
    "SecurityToken",
    "Signature",
];

impl ParsedRequest {
    /// Reads a request. `authority` is the URI authority (HTTP/2), used when there is no `Host`.
    pub fn parse(wire: WireRequest, authority: Option<&str>) -> ParsedRequest {
        let query = parse_urlencoded(&wire.raw_query);
        let is_form = wire.header("content-type").is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        let form = if is_form {
            parse_urlencoded(&String::from_utf8_lossy(&wire.body))
        } else {
            Vec::new()
        };
        let mut params = BTreeMap::new();
        for (k, v) in query.iter().chain(form.iter()) {
            params.insert(k.clone(), v.clone());
        }
        let authorization = wire.header("authorization").map(str::to_owned);
        let has_signature = params.contains_key("Signature");
        let header_action = wire.header("x-acs-action").map(str::to_owned);
        let param_action = params.get("Action").cloned();
        let style = match authorization.as_deref() {
            Some(a) if a.trim_start().starts_with(V3_ALGORITHM) => Style::V3,
            Some(_) => Style::Unknown,
            None if has_signature => Style::V1,
            None if param_action.as_deref() == Some("AssumeRoleWithOIDC")
                || header_action.as_deref() == Some("AssumeRoleWithOIDC") =>
            {
                Style::StsOidc
            }
            None => Style::Unknown,
        };
        let host = wire
            .header_joined("host")
            .or_else(|| authority.map(str::to_owned));
        let mut parsed = ParsedRequest {
            style,
            query,
            form,
            access_key_id: None,
            action: None,
            version: None,
            timestamp: None,
            nonce: None,
            security_token: None,
            host,
            format: Format::Json,
            params,
            wire,
        };
        match style {
            Style::V3 => {
                parsed.access_key_id = authorization
                    .as_deref()
                    .and_then(|a| parse_authorization(a.trim()).ok())
                    .map(|a| a.access_key_id);
                parsed.action = header_action;
                parsed.version = parsed.wire.header("x-acs-version").map(str::to_owned);
                parsed.timestamp = parsed.wire.header("x-acs-date").map(str::to_owned);
                parsed.nonce = parsed
                    .wire
                    .header("x-acs-signature-nonce")
                    .map(str::to_owned);
                parsed.security_token = parsed
                    .wire
                    .header("x-acs-security-token")
                    .map(str::to_owned);
                parsed.format = match parsed.params.get("Format") {
                    Some(f) if f.eq_ignore_ascii_case("xml") => Format::Xml,
                    _ => Format::Json,
                };
            }
            Style::V1 | Style::StsOidc | Style::Unknown => {
                let p = &parsed.params;
                parsed.access_key_id = p.get("AccessKeyId").cloned();
                parsed.action = param_action.or(header_action);
                parsed.version = p.get("Version").cloned();
                parsed.timestamp = p.get("Timestamp").cloned();
                parsed.nonce = p.get("SignatureNonce").cloned();
                parsed.security_token = p.get("SecurityToken").cloned();
                parsed.format = match p.get("Format") {
                    Some(f) if f.eq_ignore_ascii_case("json") => Format::Json,
                    Some(_) => Format::Xml,
                    // Gateway errors for requests whose style is unknown are JSON; V1 and STS
                    // default to XML like the real RPC gateway.
                    None if style == Style::Unknown => Format::Json,
                    None => Format::Xml,
                };
            }
        }
        parsed
    }

    /// The operation parameters: everything decoded except the common protocol parameters.
    pub fn operation_params(&self) -> BTreeMap<String, String> {
        self.params
            .iter()
            .filter(|(k, _)| !COMMON_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A refusal, in the gateway's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub http_status: u16,
    /// Error `Code`.
    pub code: String,
    /// Error `Message`.
    pub message: String,
}

impl Rejection {
    /// A refusal with this status, code and message.
    pub fn new(http_status: u16, code: &str, message: impl Into<String>) -> Rejection {
        Rejection {
            http_status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn missing(code: &str, name: &str) -> Rejection {
        Rejection::new(
            400,
            code,
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    fn incomplete(detail: &str) -> Rejection {
        Rejection::new(
            400,
            "IncompleteSignature",
            format!("The request signature does not conform to Aliyun standards. {detail}"),
        )
    }

    fn signature_mismatch(server_string_to_sign: &str) -> Rejection {
        Rejection::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{server_string_to_sign}"
            ),
        )
    }
}

/// What the gateway knows about an access key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The AccessKeySecret.
    pub secret: String,
    /// For STS keys: the security token that must accompany every call.
    pub security_token: Option<String>,
    /// For STS keys: when the credentials stop working.
    pub expires_at: Option<jiff::Timestamp>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The gateway's state that verification consults.
pub trait KeyStore {
    /// The key record for an AccessKeyId, if the key exists.
    fn lookup(&self, access_key_id: &str) -> Option<KeyRecord>;
    /// Records the nonce for this key; false if it was already used.
    fn use_nonce(&self, access_key_id: &str, nonce: &str) -> bool;
    /// Whether this token was explicitly marked expired.
    fn token_expired(&self, token: &str) -> bool;
}

/// Verification settings.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// The gateway's current time.
    pub now: jiff::Timestamp,
    /// Largest accepted distance between the request's timestamp and `now`;
    /// `None` disables the check (for replaying recorded vectors).
    pub max_skew: Option<Duration>,
}

/// What a verified request proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The key that signed it.
    pub access_key_id: String,
    /// Whether the key is an STS key (a security token accompanied the call).
    pub with_security_token: bool,
}

/// Runs the gateway's authentication on a signed (V1 or V3) request, in the gateway's order:
/// request shape and required parameters, timestamp format and skew, access key, signature,
/// nonce (only recorded once the signature is good), security token.
pub fn authenticate(
    req: &ParsedRequest,
    keys: &dyn KeyStore,
    opts: VerifyOptions,
) -> Result<Authenticated, Rejection> {
    let (access_key_id, secret_check): Prepared = match req.style {
        Style::V1 => v1_prepare(req)?,
        Style::V3 => v3_prepare(req)?,
        Style::StsOidc | Style::Unknown => {
            return Err(match req.wire.header("authorization") {
                Some(_) => Rejection::incomplete(&format!(
                    "The Authorization header must use {V3_ALGORITHM}."
                )),
                None => Rejection::missing("MissingParameter", "Signature"),
            });
        }
    };

    let timestamp = req.timestamp.as_deref().unwrap_or_default();
    let ts = parse_timestamp(timestamp).ok_or_else(|| {
        Rejection::new(
            400,
            "InvalidTimeStamp.Format",
            format!(
                "Specified time stamp or date value is not well formatted: {timestamp:?}; expected yyyy-MM-ddTHH:mm:ssZ (UTC)."
            ),
        )
    })?;
    if let Some(max_skew) = opts.max_skew {
        let skew = opts.now.duration_since(ts).unsigned_abs();
        if skew > max_skew {
            return Err(Rejection::new(
                400,
                "InvalidTimeStamp.Expired",
                format!(
                    "Specified time stamp or date value is expired. The request timestamp {timestamp} is more than {} seconds from the server time {}.",
                    max_skew.as_secs(),
                    format_timestamp(opts.now)
                ),
            ));
        }
    }

    let key = keys.lookup(&access_key_id).ok_or_else(|| {
        Rejection::new(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    })?;

    secret_check(&key.secret)?;

    let nonce = req.nonce.as_deref().unwrap_or_default();
    if !keys.use_nonce(&access_key_id, nonce) {
        return Err(Rejection::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }

    let sent = req.security_token.as_deref();
    let expired = |t: &str| {
        keys.token_expired(t)
            || (key.security_token.as_deref() == Some(t)
                && key.expires_at.is_some_and(|e| e <= opts.now))
    };
    match (key.security_token.as_deref(), sent) {
        (_, Some(t)) if expired(t) => Err(Rejection::new(
            403,
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
        )),
        (Some(_), None) => Err(Rejection::new(
            400,
            "MissingSecurityToken",
            "The input parameter \"SecurityToken\" that is mandatory for an STS AccessKey is not supplied.",
        )),
        (Some(expected), Some(t)) if expected != t => Err(Rejection::new(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )),
        (None, Some(_)) => Err(Rejection::new(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )),
        _ => Ok(Authenticated {
            access_key_id,
            with_security_token: sent.is_some(),
        }),
    }
}

type Prepared = (String, Box<dyn Fn(&str) -> Result<(), Rejection>>);

fn v1_prepare(req: &ParsedRequest) -> Result<Prepared, Rejection> {
    let p = &req.params;
    for name in [
        "AccessKeyId",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Action",
        "Version",
    ] {
        if p.get(name).is_none_or(|v| v.is_empty()) {
            return Err(Rejection::missing(&format!("Missing{name}"), name));
        }
    }
    if p["SignatureMethod"] != "HMAC-SHA1" {
        return Err(Rejection::new(
            400,
            "InvalidSignatureMethod",
            format!(
                "Specified signature method {:?} is not supported; use HMAC-SHA1.",
                p["SignatureMethod"]
            ),
        ));
    }
    if p["SignatureVersion"] != "1.0" {
        return Err(Rejection::new(
            400,
            "InvalidSignatureVersion",
            format!(
                "Specified signature version {:?} is not supported; use 1.0.",
                p["SignatureVersion"]
            ),
        ));
    }
    let string_to_sign = v1_string_to_sign(
        &req.wire.method,
        p.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let sent = p.get("Signature").cloned().unwrap_or_default();
    let check = move |secret: &str| {
        if v1_signature(secret, &string_to_sign) == sent {
            Ok(())
        } else {
            Err(Rejection::signature_mismatch(&string_to_sign))
        }
    };
    Ok((p["AccessKeyId"].clone(), Box::new(check)))
}

fn v3_prepare(req: &ParsedRequest) -> Result<Prepared, Rejection> {
    let wire = &req.wire;
    let auth = parse_authorization(wire.header("authorization").unwrap_or_default().trim())
        .map_err(|e| Rejection::incomplete(&e))?;
    for name in [
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ] {
        if wire.header(name).is_none_or(|v| v.trim().is_empty()) {
            return Err(Rejection::missing("MissingParameter", name));
        }
    }
    if req.host.is_none() {
        return Err(Rejection::missing("MissingParameter", "host"));
    }
    let signed: Vec<String> = auth
        .signed_headers
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if signed.iter().any(|h| h.is_empty()) {
        return Err(Rejection::incomplete("SignedHeaders has an empty name."));
    }
    let mut must_sign = vec!["host".to_owned()];
    for (name, _) in &wire.headers {
        let name = name.to_ascii_lowercase();
        if (name.starts_with("x-acs-") || name == "content-type") && !must_sign.contains(&name) {
            must_sign.push(name);
        }
    }
    if let Some(unsigned) = must_sign.iter().find(|h| !signed.contains(h)) {
        return Err(Rejection::incomplete(&format!(
            "The header {unsigned:?} is present but not in SignedHeaders (host, content-type and every x-acs-* header must be signed)."
        )));
    }
    let mut signed_values = Vec::with_capacity(signed.len());
    for name in &signed {
        let value = if name == "host" {
            req.host.clone()
        } else {
            wire.header_joined(name)
        };
        let value = value.ok_or_else(|| {
            Rejection::incomplete(&format!(
                "The signed header {name:?} is not present in the request."
            ))
        })?;
        signed_values.push((name.clone(), value));
    }
    if let Some(id) = wire.header("x-acs-accesskey-id")
        && id != auth.access_key_id
    {
        return Err(Rejection::incomplete(
            "x-acs-accesskey-id differs from the Authorization Credential.",
        ));
    }
    // A raw `+` in the query means a space to a form decoder and a plus to an RFC 3986 one, so
    // the canonical query a gateway rebuilds from it depends on the gateway. The canonical
    // encoding never contains a raw `+` (`%20` / `%2B`): refuse it rather than guess, so a client
    // that would only work with one kind of gateway is caught here.
    if wire.raw_query.contains('+') {
        return Err(Rejection::new(
            400,
            "SignatureDoesNotMatch",
            "The query string contains a raw '+', which is ambiguous (space or plus); send the canonical encoding (%20 for a space, %2B for a plus).",
        ));
    }
    let body_hash = sha256_hex(&wire.body);
    let sent_hash = wire.header("x-acs-content-sha256").unwrap_or_default();
    if sent_hash != body_hash {
        return Err(Rejection::new(
            400,
            "SignatureDoesNotMatch",
            "The x-acs-content-sha256 header is not the lower-hex SHA-256 of the request body.",
        ));
    }
    let canonical = v3_canonical_request(
        &wire.method,
        &wire.path,
        req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        signed_values.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &body_hash,
    );
    let string_to_sign = v3_string_to_sign(&canonical);
    let sent = auth.signature.clone();
    let check = move |secret: &str| {
        if v3_signature(secret, &string_to_sign) == sent {
            Ok(())
        } else {
            Err(Rejection::signature_mismatch(&string_to_sign))
        }
    };
    Ok((auth.access_key_id, Box::new(check)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_matches_rfc3986_unreserved() {
        assert_eq!(pct("a b*c~d/e+f=g&h"), "a%20b%2Ac~d%2Fe%2Bf%3Dg%26h");
        assert_eq!(pct("中"), "%E4%B8%AD");
        assert_eq!(pct("AZaz09-_.~"), "AZaz09-_.~");
    }

    #[test]
    fn form_decoding_treats_plus_as_space() {
        assert_eq!(form_decode("a+b%2Bc%20d"), "a b+c d");
        assert_eq!(
            parse_urlencoded("a=1&&b&c=%E4%B8%AD"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "中".into())
            ]
        );
    }

    #[test]
    fn timestamp_format_is_strict() {
        assert!(parse_timestamp("2024-01-01T12:00:00Z").is_some());
        for bad in [
            "2024-01-01T12:00:00.000Z",
            "2024-01-01 12:00:00Z",
            "2024-01-01T12:00:00+00:00",
            "2024-13-01T12:00:00Z",
            "",
        ] {
            assert!(parse_timestamp(bad).is_none(), "{bad}");
        }
        let ts = parse_timestamp("2024-01-01T12:00:00Z").unwrap();
        assert_eq!(format_timestamp(ts), "2024-01-01T12:00:00Z");
    }

    #[test]
    fn authorization_parsing() {
        let a = parse_authorization(
            "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=host;x-acs-date,Signature=ab",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "id");
        assert_eq!(a.signed_headers, ["host", "x-acs-date"]);
        assert_eq!(a.signature, "ab");
        assert!(format!("{a:?}").contains("redacted"));
        assert!(parse_authorization("ACS3-HMAC-SHA256 Credential=id,Signature=ab").is_err());
        assert!(parse_authorization("HMAC Credential=id").is_err());
    }
}
