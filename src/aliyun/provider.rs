//! Where the controller's and the `reset` command's own credentials come from: the official
//! SDKs' default chain — environment AccessKey first, then RRSA — with caching and refresh where
//! that applies. No network here; the RRSA provider it builds talks to STS when asked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::credentials::{Credentials, CredentialsError, env};
use super::rrsa::{RrsaConfig, RrsaProvider, sts_endpoint_from};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliyun::credentials::test_lookup as lookup;

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
}
