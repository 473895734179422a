//! RRSA (RAM Roles for Service Accounts): the pod's projected OIDC token exchanged with STS
//! `AssumeRoleWithOIDC` for temporary credentials, cached until shortly before they expire. The
//! STS endpoint's precedence lives here too.
//!
//! The only part of credentials that touches the network: one unsigned STS call per refresh, with
//! the token in the form body, never in a URL.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::client::error_chain;
use super::credentials::{Credentials, CredentialsError, env};
use super::encoding::{canonical_query, format_timestamp, pct};
use super::endpoint::Endpoint;
use super::redact::Redactor;

/// STS endpoint: `ALIBABA_CLOUD_STS_ENDPOINT` > `ALIBABA_CLOUD_STS_REGION`
/// (+ `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`) > `sts.aliyuncs.com`.
pub fn sts_endpoint_from(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Endpoint, CredentialsError> {
    if let Some(explicit) = get(env::STS_ENDPOINT) {
        return Ok(Endpoint::parse(&explicit)?);
    }
    if let Some(region) = get(env::STS_REGION) {
        let vpc = get(env::VPC_ENDPOINT_ENABLED)
            .map(|v| v.trim().eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        let prefix = if vpc { "sts-vpc" } else { "sts" };
        return Ok(Endpoint::parse(&format!(
            "https://{prefix}.{}.aliyuncs.com",
            region.trim()
        ))?);
    }
    Ok(Endpoint::https("sts.aliyuncs.com"))
}

/// RRSA settings.
#[derive(Clone, Debug)]
pub struct RrsaConfig {
    /// `RoleArn`.
    pub role_arn: String,
    /// `OIDCProviderArn`.
    pub oidc_provider_arn: String,
    /// Projected token; re-read at every refresh because it rotates.
    pub token_file: PathBuf,
    /// `RoleSessionName`.
    pub session_name: String,
    /// Where to send `AssumeRoleWithOIDC`.
    pub sts_endpoint: Endpoint,
    /// `DurationSeconds` asked for.
    pub duration: Duration,
    /// Timeout of the STS call.
    pub timeout: Duration,
}

struct Cached {
    creds: Credentials,
    refresh_at: jiff::Timestamp,
}

/// Exchanges the pod's OIDC token for STS credentials and caches them until a margin before
/// expiry (a quarter of their lifetime, between 3 and 15 minutes, and never more than half).
pub struct RrsaProvider {
    config: RrsaConfig,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl fmt::Debug for RrsaProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RrsaProvider")
            .field("role_arn", &self.config.role_arn)
            .field("oidc_provider_arn", &self.config.oidc_provider_arn)
            .field("token_file", &self.config.token_file)
            .field("sts_endpoint", &self.config.sts_endpoint.base_url())
            .finish_non_exhaustive()
    }
}

/// The STS API version of `AssumeRoleWithOIDC`.
pub const STS_VERSION: &str = "2015-04-01";

impl RrsaProvider {
    /// A provider with an empty cache.
    pub fn new(config: RrsaConfig, http: reqwest::Client) -> RrsaProvider {
        RrsaProvider {
            config,
            http,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Cached credentials, or new ones from STS when the cache is empty or near expiry.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && jiff::Timestamp::now() < c.refresh_at
        {
            return Ok(c.creds.clone());
        }
        let fresh = self.fetch().await?;
        let creds = fresh.creds.clone();
        *cache = Some(fresh);
        Ok(creds)
    }

    /// Drops the cache.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<Cached, CredentialsError> {
        let token = tokio::fs::read_to_string(&self.config.token_file)
            .await
            .map_err(|source| CredentialsError::TokenFile {
                path: self.config.token_file.clone(),
                source,
            })?;
        let token = token.trim();
        let now = jiff::Timestamp::now();
        // Common parameters in the query; the role and, above all, the token in the form body,
        // so the token never appears in a URL (proxies and servers log URLs).
        let mut query = BTreeMap::new();
        query.insert("Action".to_string(), "AssumeRoleWithOIDC".to_string());
        query.insert("Version".to_string(), STS_VERSION.to_string());
        query.insert("Format".to_string(), "JSON".to_string());
        query.insert("Timestamp".to_string(), format_timestamp(now));
        let mut form = BTreeMap::new();
        form.insert("RoleArn".to_string(), self.config.role_arn.clone());
        form.insert(
            "OIDCProviderArn".to_string(),
            self.config.oidc_provider_arn.clone(),
        );
        form.insert("OIDCToken".to_string(), token.to_string());
        form.insert(
            "RoleSessionName".to_string(),
            self.config.session_name.clone(),
        );
        form.insert(
            "DurationSeconds".to_string(),
            self.config.duration.as_secs().to_string(),
        );
        let url = format!(
            "{}/?{}",
            self.config.sts_endpoint.base_url(),
            canonical_query(&query)
        );
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .timeout(self.config.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| CredentialsError::StsTransport(error_chain(&e.without_url())))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CredentialsError::StsTransport(error_chain(&e.without_url())))?;
        // STS may echo what it refused; the OIDC token is a secret in every form.
        parse_sts_answer(status, &bytes, now).map_err(|e| e.redacted(&Redactor::new([token])))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsAnswer {
    request_id: Option<String>,
    code: Option<String>,
    message: Option<String>,
    credentials: Option<StsCredentials>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
}

fn parse_sts_answer(
    status: u16,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<Cached, CredentialsError> {
    let answer: StsAnswer = serde_json::from_slice(body).map_err(|_| {
        CredentialsError::StsTransport(format!(
            "HTTP {status}: the answer is not the expected JSON ({} bytes)",
            body.len()
        ))
    })?;
    let request_id = answer.request_id.clone().unwrap_or_else(|| "-".into());
    match answer.credentials {
        Some(c) if (200..300).contains(&status) => {
            let expiration: jiff::Timestamp = c.expiration.parse().map_err(|_| {
                CredentialsError::StsTransport(format!(
                    "unparseable Expiration {:?} (RequestId {request_id})",
                    c.expiration
                ))
            })?;
            let lifetime = expiration.duration_since(now);
            let lifetime = Duration::try_from(lifetime).unwrap_or(Duration::ZERO);
            let margin = (lifetime / 4)
                .clamp(Duration::from_secs(180), Duration::from_secs(900))
                .min(lifetime / 2);
            let refresh_at = expiration
                .checked_sub(jiff::SignedDuration::try_from(margin).unwrap_or_default())
                .unwrap_or(now);
            Ok(Cached {
                creds: Credentials::new(
                    c.access_key_id,
                    c.access_key_secret,
                    Some(c.security_token),
                ),
                refresh_at,
            })
        }
        _ => Err(CredentialsError::Sts {
            http_status: status,
            code: answer.code.unwrap_or_else(|| "-".into()),
            message: answer.message.unwrap_or_default(),
            request_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliyun::credentials::test_lookup as lookup;

    #[test]
    fn sts_endpoint_precedence() {
        let e = sts_endpoint_from(&lookup(&[
            (env::STS_ENDPOINT, "sts.example.com"),
            (env::STS_REGION, "cn-beijing"),
        ]))
        .unwrap();
        assert_eq!(e.base_url(), "https://sts.example.com");
        let e = sts_endpoint_from(&lookup(&[(env::STS_ENDPOINT, "http://127.0.0.1:9")])).unwrap();
        assert_eq!(e.base_url(), "http://127.0.0.1:9");
        assert!(
            sts_endpoint_from(&lookup(&[(env::STS_ENDPOINT, "http://sts.example.com")])).is_err()
        );
        let e = sts_endpoint_from(&lookup(&[(env::STS_REGION, "cn-beijing")])).unwrap();
        assert_eq!(e.base_url(), "https://sts.cn-beijing.aliyuncs.com");
        let e = sts_endpoint_from(&lookup(&[
            (env::STS_REGION, "cn-beijing"),
            (env::VPC_ENDPOINT_ENABLED, "true"),
        ]))
        .unwrap();
        assert_eq!(e.base_url(), "https://sts-vpc.cn-beijing.aliyuncs.com");
        assert_eq!(
            sts_endpoint_from(&lookup(&[])).unwrap().base_url(),
            "https://sts.aliyuncs.com"
        );
    }

    #[test]
    fn sts_answer_parsing_and_refresh_margin() {
        let now: jiff::Timestamp = "2024-01-01T12:00:00Z".parse().unwrap();
        let ok = br#"{"RequestId":"r","Credentials":{"AccessKeyId":"STS.a","AccessKeySecret":"b","SecurityToken":"c","Expiration":"2024-01-01T13:00:00Z"}}"#;
        let c = parse_sts_answer(200, ok, now).unwrap();
        assert_eq!(c.creds.access_key_id(), "STS.a");
        assert_eq!(c.creds.security_token(), Some("c"));
        // One hour of lifetime: refreshed 15 minutes early.
        assert_eq!(c.refresh_at, "2024-01-01T12:45:00Z".parse().unwrap());
        let short = br#"{"Credentials":{"AccessKeyId":"a","AccessKeySecret":"b","SecurityToken":"c","Expiration":"2024-01-01T12:04:00Z"}}"#;
        let c = parse_sts_answer(200, short, now).unwrap();
        assert_eq!(c.refresh_at, "2024-01-01T12:02:00Z".parse().unwrap());
        let err = br#"{"RequestId":"r2","Code":"AuthenticationFail.NoPermission","Message":"no"}"#;
        match parse_sts_answer(403, err, now) {
            Err(CredentialsError::Sts {
                code, request_id, ..
            }) => {
                assert_eq!(code, "AuthenticationFail.NoPermission");
                assert_eq!(request_id, "r2");
            }
            Ok(_) => panic!("must fail"),
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(matches!(
            parse_sts_answer(502, b"<html>", now),
            Err(CredentialsError::StsTransport(_))
        ));
    }
}
