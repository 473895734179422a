//! Alibaba Cloud credentials as values: an AccessKey pair with an optional STS token, the
//! standard environment variable names, reading a Kubernetes Secret's data, and the errors of
//! obtaining credentials. Where they come from at run time (environment, RRSA) is
//! [`super::provider`]; the STS exchange is [`super::rrsa`].
//!
//! Pure, and a leaf below the signer: it knows nothing of signing. Secrets are held in
//! [`secrecy::SecretString`] and every `Debug` here redacts them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use super::endpoint::EndpointError;
use super::redact::{REDACTED, Redactor};

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

impl CredentialsError {
    /// Whether a human must act (a role or OIDC provider STS refuses, an invalid or missing
    /// token file, a configuration mistake) rather than wait: throttling, a server error or a
    /// lost connection to STS pass by themselves.
    pub fn needs_human(&self) -> bool {
        match self {
            CredentialsError::Sts {
                http_status, code, ..
            } => {
                let transient = code == "Throttling"
                    || code.starts_with("Throttling.")
                    || code == "ServiceUnavailable"
                    || code == "InternalError"
                    || *http_status == 429
                    || *http_status >= 500;
                !transient
            }
            CredentialsError::StsTransport(_) => false,
            CredentialsError::NotConfigured
            | CredentialsError::Incomplete(_)
            | CredentialsError::SecretKeyMissing { .. }
            | CredentialsError::SecretValueInvalid { .. }
            | CredentialsError::TokenFile { .. }
            | CredentialsError::StsEndpoint(_) => true,
        }
    }

    /// The error with every form of `redactor`'s secrets removed from what a peer sent back.
    pub fn redacted(self, redactor: &Redactor) -> CredentialsError {
        match self {
            CredentialsError::Sts {
                http_status,
                code,
                message,
                request_id,
            } => CredentialsError::Sts {
                http_status,
                code: redactor.redact(&code),
                message: redactor.redact(&message),
                request_id,
            },
            CredentialsError::StsTransport(text) => {
                CredentialsError::StsTransport(redactor.redact(&text))
            }
            other => other,
        }
    }
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

    /// Removes the secret and the token, in every form, from what a request with these
    /// credentials produced (the request shown, the answer echoed).
    pub fn redactor(&self) -> Redactor {
        Redactor::new(
            [Some(self.access_key_secret()), self.security_token()]
                .into_iter()
                .flatten(),
        )
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

/// An environment for tests: `lookup` over fixed pairs.
#[cfg(test)]
pub(crate) fn test_lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let m: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
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
    fn only_passing_sts_troubles_wait_without_a_human() {
        let sts = |http_status: u16, code: &str| CredentialsError::Sts {
            http_status,
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
        };
        for passing in [
            sts(400, "Throttling.User"),
            sts(503, "ServiceUnavailable"),
            sts(500, "InternalError"),
            sts(502, "-"),
            sts(429, "-"),
            CredentialsError::StsTransport("connection refused".into()),
        ] {
            assert!(!passing.needs_human(), "{passing}");
        }
        for human in [
            sts(404, "EntityNotExist.Role"),
            sts(401, "AuthenticationFail.OIDCToken.Invalid"),
            sts(400, "InvalidParameter.OIDCToken"),
            sts(403, "NoPermission"),
            CredentialsError::TokenFile {
                path: "/var/run/token".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
            CredentialsError::Incomplete("x".into()),
        ] {
            assert!(human.needs_human(), "{human}");
        }
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
}
