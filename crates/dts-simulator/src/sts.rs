//! The simulated STS `AssumeRoleWithOIDC` (RRSA): anonymous, parameters from query ∪ form body,
//! but the OIDC token only ever in the form body.
//!
//! Owns: validating an `AssumeRoleWithOIDC` request, issuing temporary credentials and registering
//! them with the simulated DTS gateway so that calls signed with them verify. No I/O.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::state::Shared;
use crate::verify::{self, KeyRecord, ParsedRequest, Rejection};

/// The STS action.
pub const ACTION: &str = "AssumeRoleWithOIDC";
/// The STS API version.
pub const VERSION: &str = "2015-04-01";

const DEFAULT_DURATION_SECS: u64 = 3600;
/// Clock skew allowed on an OIDC token's `exp`, `nbf` and `iat`.
const TOKEN_LEEWAY_SECS: i64 = 60;
const MIN_DURATION_SECS: u64 = 900;
const MAX_DURATION_SECS: u64 = 43200;

fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes(n)
        .into_iter()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

fn valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'_' | b'-'))
}

fn missing(name: &str) -> Rejection {
    Rejection::new(
        400,
        &format!("Missing{name}"),
        format!(
            "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
        ),
    )
}

/// Validates an anonymous `AssumeRoleWithOIDC` and issues credentials; returns the answer body.
pub(crate) fn assume_role_with_oidc(
    shared: &Arc<Shared>,
    parsed: &ParsedRequest,
    now: jiff::Timestamp,
) -> Result<serde_json::Value, Rejection> {
    let p = &parsed.params;
    // The security property first: a token in the URL ends up in access logs and proxies.
    if parsed.query.iter().any(|(k, _)| k == "OIDCToken") {
        return Err(Rejection::new(
            400,
            "InvalidParameter.OIDCToken",
            "The OIDCToken must be sent in the form body of a POST request, never in the URL query.",
        ));
    }
    if p.contains_key("AccessKeyId") || p.contains_key("Signature") {
        return Err(Rejection::new(
            400,
            "InvalidParameter",
            "AssumeRoleWithOIDC is an anonymous API: send it without AccessKeyId or Signature.",
        ));
    }
    match p.get("Version") {
        None => return Err(missing("Version")),
        Some(v) if v != VERSION => {
            return Err(Rejection::new(
                400,
                "InvalidVersion",
                format!("Specified parameter Version is not valid: {v:?}; STS is {VERSION}."),
            ));
        }
        Some(_) => {}
    }
    for name in ["RoleArn", "OIDCProviderArn", "OIDCToken", "RoleSessionName"] {
        if p.get(name).is_none_or(|v| v.is_empty()) {
            return Err(missing(name));
        }
    }
    let session = &p["RoleSessionName"];
    if !valid_session_name(session) {
        return Err(Rejection::new(
            400,
            "InvalidParameter.RoleSessionName",
            "The parameter RoleSessionName must be 2 to 64 characters of [A-Za-z0-9.@_-].",
        ));
    }
    let duration = match p.get("DurationSeconds") {
        None => DEFAULT_DURATION_SECS,
        Some(d) => match d.parse::<u64>() {
            Ok(d) if (MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&d) => d,
            _ => {
                return Err(Rejection::new(
                    400,
                    "InvalidParameter.DurationSeconds",
                    format!(
                        "The parameter DurationSeconds must be an integer from {MIN_DURATION_SECS} to {MAX_DURATION_SECS}."
                    ),
                ));
            }
        },
    };
    if let Some(ts) = p.get("Timestamp") {
        let parsed_ts = verify::parse_timestamp(ts).ok_or_else(|| {
            Rejection::new(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        })?;
        if now.duration_since(parsed_ts).unsigned_abs() > shared.max_skew {
            return Err(Rejection::new(
                400,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            ));
        }
    }
    if !shared.oidc_token_valid(&p["OIDCToken"]) {
        return Err(Rejection::new(
            401,
            "AuthenticationFail.OIDCToken.Invalid",
            "The OIDCToken is invalid.",
        ));
    }
    let claims = match shared.oidc_provider() {
        Some(provider) => Some(
            provider
                .verify(&p["OIDCToken"], now.as_second(), TOKEN_LEEWAY_SECS)
                .map_err(|e| Rejection::new(401, e.code(), e.to_string()))?,
        ),
        None => None,
    };

    let validity = shared
        .sts_validity()
        .unwrap_or(Duration::from_secs(duration));
    let expires_at = now
        .checked_add(jiff::SignedDuration::try_from(validity).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX);
    let access_key_id = format!("STS.{}", random_alnum(24));
    let secret = random_alnum(40);
    // Real tokens are long base64: `+`, `/` and `=` exercise the client's percent-encoding.
    let token = format!(
        "CAIS{}",
        base64::engine::general_purpose::STANDARD.encode(random_bytes(190))
    );
    shared.add_key(
        &access_key_id,
        KeyRecord {
            secret: secret.clone(),
            security_token: Some(token.clone()),
            expires_at: Some(expires_at),
        },
    );
    let role_arn = &p["RoleArn"];
    let role_name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let assumed_role_id = format!("3{}:{session}", random_digits(17));
    Ok(serde_json::json!({
        "RequestId": "",
        "AssumedRoleUser": {
            "AssumedRoleId": assumed_role_id,
            "Arn": format!("acs:ram::1234567890123456:assumed-role/{role_name}/{session}"),
        },
        "OIDCTokenInfo": match &claims {
            Some(c) => serde_json::json!({
                "Issuer": c.iss.clone().unwrap_or_default(),
                "Subject": c.sub.clone().unwrap_or_default(),
                "ClientIds": c.aud.join(","),
            }),
            None => serde_json::json!({
                "Issuer": "https://oidc-ack.simulator.local",
                "Subject": "system:serviceaccount:simulated",
                "ClientIds": "sts.aliyuncs.com",
            }),
        },
        "Credentials": {
            "AccessKeyId": access_key_id,
            "AccessKeySecret": secret,
            "SecurityToken": token,
            "Expiration": verify::format_timestamp(expires_at),
        },
    }))
}

fn random_digits(n: usize) -> String {
    random_bytes(n)
        .into_iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names() {
        assert!(valid_session_name("dts-operator@ns.x_1"));
        assert!(!valid_session_name("a"));
        assert!(!valid_session_name("has space"));
        assert!(!valid_session_name(&"a".repeat(65)));
    }
}
