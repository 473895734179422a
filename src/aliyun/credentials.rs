//! Alibaba Cloud credentials: static AccessKeys (with an optional STS token), the standard
//! environment variables, RRSA (OIDC → STS `AssumeRoleWithOIDC`), and a Kubernetes Secret's data.
//!
//! Secrets are held in [`secrecy::SecretString`] and every `Debug` here redacts them. The RRSA
//! provider is the only part that touches the network (one unsigned STS call per refresh); the
//! rest is pure.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::endpoint::{Endpoint, EndpointError};
use super::signer::{REDACTED, format_timestamp, pct};

/// Standard environment variable names of the official SDKs' default chain.
pub mod env {
    /// AccessKey ID.
    pub const ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
    /// AccessKey secret.
    pub const ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
    /// STS security token.
    pub const SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
    /// RRSA: the RAM role to assume.
    pub const ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
    /// RRSA: the cluster's OIDC provider.
    pub const OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
    /// RRSA: the projected service-account token file.
    pub const OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
    /// RRSA: session name (optional).
    pub const ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
    /// STS endpoint override: a host (https) or a URL under the loopback rule.
    pub const STS_ENDPOINT: &str = "ALIBABA_CLOUD_STS_ENDPOINT";
    /// STS region, for `sts.<region>.aliyuncs.com`.
    pub const STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
    /// With a region: use `sts-vpc.<region>.aliyuncs.com`.
    pub const VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";
}

/// Errors while obtaining credentials. None of them carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Nothing in the chain was configured.
    #[error(
        "no Alibaba Cloud credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or RRSA (ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE)"
    )]
    NotConfigured,
    /// Only part of a pair / triple is set.
    #[error("incomplete credentials: {0}")]
    Incomplete(String),
    /// A Secret lacks a key.
    #[error("Secret has no {wanted} (expected key {primary:?} or {alternative:?})")]
    SecretKeyMissing {
        /// Human name of the value.
        wanted: &'static str,
        /// The product's key name.
        primary: &'static str,
        /// The SDK-style key name.
        alternative: &'static str,
    },
    /// A Secret value that is not UTF-8 or is empty.
    #[error("Secret key {key:?} is empty or not valid UTF-8 text")]
    SecretValueInvalid {
        /// The key.
        key: String,
    },
    /// The OIDC token file could not be read.
    #[error("cannot read the OIDC token file {path}: {source}")]
    TokenFile {
        /// Path of the file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The STS endpoint is invalid.
    #[error("invalid STS endpoint: {0}")]
    StsEndpoint(#[from] EndpointError),
    /// STS refused `AssumeRoleWithOIDC`.
    #[error(
        "STS AssumeRoleWithOIDC failed: HTTP {http_status} {code}: {message} (RequestId {request_id})"
    )]
    Sts {
        /// HTTP status.
        http_status: u16,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
        /// Request ID, `-` when absent.
        request_id: String,
    },
    /// STS could not be reached or its answer could not be read.
    #[error("STS AssumeRoleWithOIDC: {0}")]
    StsTransport(String),
}

/// An AccessKey pair with an optional STS token. `Debug` redacts the secret and the token.
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    access_key_secret: SecretString,
    security_token: Option<SecretString>,
}

impl Credentials {
    /// A static AccessKey pair, optionally with an STS token (empty token = none).
    pub fn new(
        access_key_id: impl Into<String>,
        access_key_secret: impl Into<String>,
        security_token: Option<String>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            access_key_secret: SecretString::from(access_key_secret.into()),
            security_token: security_token
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
        }
    }

    /// The AccessKey ID (not a secret; it names the key).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The AccessKey secret: only the signer should call this.
    pub fn access_key_secret(&self) -> &str {
        self.access_key_secret.expose_secret()
    }

    /// The STS token, if any: only the signer should call this.
    pub fn security_token(&self) -> Option<&str> {
        self.security_token.as_ref().map(|t| t.expose_secret())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &REDACTED)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| REDACTED),
            )
            .finish()
    }
}

/// Key names accepted in a Secret: the product's and the SDK-style environment names.
pub mod secret_keys {
    /// AccessKey ID.
    pub const ACCESS_KEY_ID: (&str, &str) = ("accessKeyId", "ALIBABA_CLOUD_ACCESS_KEY_ID");
    /// AccessKey secret.
    pub const ACCESS_KEY_SECRET: (&str, &str) =
        ("accessKeySecret", "ALIBABA_CLOUD_ACCESS_KEY_SECRET");
    /// STS token.
    pub const SECURITY_TOKEN: (&str, &str) = ("securityToken", "ALIBABA_CLOUD_SECURITY_TOKEN");
}

/// Reads credentials from a Kubernetes Secret's `data` (decoded bytes). Keys `accessKeyId`,
/// `accessKeySecret`, optional `securityToken`, or their `ALIBABA_CLOUD_*` spellings. Values are
/// trimmed (a trailing newline from `echo` is common).
pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Credentials, CredentialsError> {
    fn pick(
        data: &BTreeMap<String, Vec<u8>>,
        (primary, alternative): (&'static str, &'static str),
    ) -> Result<Option<String>, CredentialsError> {
        let Some((key, raw)) = data
            .get_key_value(primary)
            .or_else(|| data.get_key_value(alternative))
        else {
            return Ok(None);
        };
        match std::str::from_utf8(raw) {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            _ => Err(CredentialsError::SecretValueInvalid { key: key.clone() }),
        }
    }
    let id = pick(data, secret_keys::ACCESS_KEY_ID)?.ok_or(CredentialsError::SecretKeyMissing {
        wanted: "AccessKey ID",
        primary: secret_keys::ACCESS_KEY_ID.0,
        alternative: secret_keys::ACCESS_KEY_ID.1,
    })?;
    let secret =
        pick(data, secret_keys::ACCESS_KEY_SECRET)?.ok_or(CredentialsError::SecretKeyMissing {
            wanted: "AccessKey secret",
            primary: secret_keys::ACCESS_KEY_SECRET.0,
            alternative: secret_keys::ACCESS_KEY_SECRET.1,
        })?;
    let token = match pick(data, secret_keys::SECURITY_TOKEN) {
        Ok(t) => t,
        // An empty optional token is the same as none.
        Err(CredentialsError::SecretValueInvalid { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok(Credentials::new(id, secret, token))
}

/// Where credentials come from, with caching and refresh where that applies.
#[derive(Clone, Debug)]
pub enum CredentialsProvider {
    /// Fixed credentials (environment, Secret, flags).
    Static(Credentials),
    /// RRSA: exchanged with STS, cached until shortly before expiry.
    Rrsa(Arc<RrsaProvider>),
}

impl CredentialsProvider {
    /// Current credentials (for RRSA: cached, or freshly fetched when near expiry).
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        match self {
            CredentialsProvider::Static(c) => Ok(c.clone()),
            CredentialsProvider::Rrsa(p) => p.get().await,
        }
    }

    /// Forgets cached credentials so the next [`get`](Self::get) fetches new ones
    /// (after `InvalidSecurityToken.Expired`).
    pub async fn invalidate(&self) {
        if let CredentialsProvider::Rrsa(p) = self {
            p.invalidate().await;
        }
    }

    /// A short name for logs and metrics (`static`, `rrsa`).
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialsProvider::Static(_) => "static",
            CredentialsProvider::Rrsa(_) => "rrsa",
        }
    }

    /// The standard chain, in the official SDKs' order: environment AccessKey, then RRSA.
    /// `Ok(None)` when neither is configured. `lookup` reads a variable (injectable for tests).
    pub fn from_env_with(
        lookup: &dyn Fn(&str) -> Option<String>,
        http: reqwest::Client,
    ) -> Result<Option<CredentialsProvider>, CredentialsError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        match (get(env::ACCESS_KEY_ID), get(env::ACCESS_KEY_SECRET)) {
            (Some(id), Some(secret)) => {
                return Ok(Some(CredentialsProvider::Static(Credentials::new(
                    id.trim(),
                    secret.trim(),
                    get(env::SECURITY_TOKEN).map(|t| t.trim().to_string()),
                ))));
            }
            (Some(_), None) => {
                return Err(CredentialsError::Incomplete(format!(
                    "{} is set but {} is not",
                    env::ACCESS_KEY_ID,
                    env::ACCESS_KEY_SECRET
                )));
            }
            (None, Some(_)) => {
                return Err(CredentialsError::Incomplete(format!(
                    "{} is set but {} is not",
                    env::ACCESS_KEY_SECRET,
                    env::ACCESS_KEY_ID
                )));
            }
            (None, None) => {}
        }
        let rrsa = [
            get(env::ROLE_ARN),
            get(env::OIDC_PROVIDER_ARN),
            get(env::OIDC_TOKEN_FILE),
        ];
        match rrsa {
            [Some(role_arn), Some(provider_arn), Some(token_file)] => {
                let sts = sts_endpoint_from(&get)?;
                let session_name = get(env::ROLE_SESSION_NAME).unwrap_or_else(|| {
                    format!("dts-operator-{}", jiff::Timestamp::now().as_second())
                });
                Ok(Some(CredentialsProvider::Rrsa(Arc::new(
                    RrsaProvider::new(
                        RrsaConfig {
                            role_arn,
                            oidc_provider_arn: provider_arn,
                            token_file: PathBuf::from(token_file),
                            session_name,
                            sts_endpoint: sts,
                            duration: Duration::from_secs(3600),
                            timeout: Duration::from_secs(10),
                        },
                        http,
                    ),
                ))))
            }
            [None, None, None] => Ok(None),
            _ => Err(CredentialsError::Incomplete(format!(
                "RRSA needs all of {}, {} and {}",
                env::ROLE_ARN,
                env::OIDC_PROVIDER_ARN,
                env::OIDC_TOKEN_FILE
            ))),
        }
    }

    /// Whether the chain in `lookup` will talk https (RRSA to an https STS endpoint). A static
    /// AccessKey needs no network at all.
    pub fn chain_needs_tls(lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if get(env::ACCESS_KEY_ID).is_some() {
            return false;
        }
        if get(env::ROLE_ARN).is_none() {
            return false;
        }
        sts_endpoint_from(&get)
            .map(|e| e.scheme() == super::endpoint::Scheme::Https)
            .unwrap_or(true)
    }

    /// [`from_env_with`](Self::from_env_with) on the process environment.
    pub fn from_env(
        http: reqwest::Client,
    ) -> Result<Option<CredentialsProvider>, CredentialsError> {
        Self::from_env_with(&|k| std::env::var(k).ok(), http)
    }
}

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
            super::signer::canonical_query(&query)
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
            .map_err(|e| CredentialsError::StsTransport(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CredentialsError::StsTransport(e.without_url().to_string()))?;
        parse_sts_answer(status, &bytes, now)
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

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn debug_redacts_secret_and_token() {
        let c = Credentials::new("AKID", "very-secret", Some("tok-en".into()));
        let s = format!("{c:?}");
        assert!(s.contains("AKID"));
        assert!(!s.contains("very-secret"), "{s}");
        assert!(!s.contains("tok-en"), "{s}");
        assert!(s.contains(REDACTED));
    }

    #[test]
    fn secret_data_accepts_both_spellings() {
        let a = from_secret_data(&data(&[
            ("accessKeyId", "id1"),
            ("accessKeySecret", "s1\n"),
        ]))
        .unwrap();
        assert_eq!(a.access_key_id(), "id1");
        assert_eq!(a.access_key_secret(), "s1");
        assert_eq!(a.security_token(), None);
        let b = from_secret_data(&data(&[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "id2"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s2"),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", "t2"),
        ]))
        .unwrap();
        assert_eq!(b.access_key_id(), "id2");
        assert_eq!(b.security_token(), Some("t2"));
    }

    #[test]
    fn secret_data_names_what_is_missing_without_values() {
        let e = from_secret_data(&data(&[("accessKeyId", "id1")])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("accessKeySecret"), "{msg}");
        let e = from_secret_data(&data(&[("accessKeySecret", "zzz")])).unwrap_err();
        assert!(e.to_string().contains("accessKeyId"));
        assert!(!e.to_string().contains("zzz"));
        let e =
            from_secret_data(&data(&[("accessKeyId", " "), ("accessKeySecret", "x")])).unwrap_err();
        assert!(matches!(e, CredentialsError::SecretValueInvalid { .. }));
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn http() -> reqwest::Client {
        crate::install_crypto_provider();
        reqwest::Client::new()
    }

    #[test]
    fn env_chain_order_and_errors() {
        let p = CredentialsProvider::from_env_with(
            &lookup(&[
                (env::ACCESS_KEY_ID, "id"),
                (env::ACCESS_KEY_SECRET, "s"),
                (env::ROLE_ARN, "acs:ram::1:role/r"),
                (env::OIDC_PROVIDER_ARN, "p"),
                (env::OIDC_TOKEN_FILE, "/t"),
            ]),
            http(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.kind(), "static", "environment AccessKey comes first");
        let p = CredentialsProvider::from_env_with(
            &lookup(&[
                (env::ROLE_ARN, "acs:ram::1:role/r"),
                (env::OIDC_PROVIDER_ARN, "p"),
                (env::OIDC_TOKEN_FILE, "/t"),
            ]),
            http(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.kind(), "rrsa");
        assert!(
            CredentialsProvider::from_env_with(&lookup(&[]), http())
                .unwrap()
                .is_none()
        );
        assert!(
            CredentialsProvider::from_env_with(&lookup(&[(env::ACCESS_KEY_ID, "id")]), http())
                .is_err()
        );
        assert!(
            CredentialsProvider::from_env_with(&lookup(&[(env::ROLE_ARN, "r")]), http()).is_err()
        );
    }

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
