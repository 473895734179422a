//! Resolving what a resource's attempt needs before anything is claimed: the endpoint (override,
//! allowlisted `spec.endpoint`, or the SDK's region map) and the credentials (the resource's own
//! Secret, read fresh, or the controller's defaults where the namespace may use them).
//!
//! The endpoint part is pure; the credentials part reads one Secret with `get` (the operator is
//! never allowed to list or watch Secrets).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::aliyun::credentials::{Credentials, from_secret_data};
use crate::aliyun::endpoint::{Endpoint, EndpointAllowlist, dts_endpoint_for_region};
use crate::aliyun::provider::CredentialsProvider;
use crate::crd::DtsJobReset;

/// Which namespaces may use the controller's own credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultCredentialsScope {
    /// `*`.
    All,
    /// An explicit list (possibly empty).
    Namespaces(Vec<String>),
}

impl DefaultCredentialsScope {
    /// Parses `--default-credentials-namespaces` (comma list, spaces trimmed, or `*`).
    pub fn parse(list: &str) -> DefaultCredentialsScope {
        let items: Vec<String> = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if items.iter().any(|s| s == "*") {
            DefaultCredentialsScope::All
        } else {
            DefaultCredentialsScope::Namespaces(items)
        }
    }

    /// Whether resources in `namespace` may use the defaults.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            DefaultCredentialsScope::All => true,
            DefaultCredentialsScope::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// The endpoint of a resource's calls: `--dts-endpoint` > allowlisted `spec.endpoint` > the
/// region's official endpoint. An error is an invalid spec, reported to the user. (The `reset`
/// command has no override and no allowlist: `crate::reset::endpoint_from_flags`.)
pub fn endpoint_for_resource(
    obj: &DtsJobReset,
    region: &str,
    override_endpoint: Option<&Endpoint>,
    allowlist: &EndpointAllowlist,
) -> Result<Endpoint, String> {
    if let Some(e) = override_endpoint {
        return Ok(e.clone());
    }
    match obj
        .spec
        .endpoint
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        Some(raw) => {
            let e = Endpoint::parse(raw).map_err(|e| format!("spec.endpoint: {e}"))?;
            allowlist
                .check(&e)
                .map_err(|e| format!("spec.endpoint: {e}"))?;
            Ok(e)
        }
        None => Ok(dts_endpoint_for_region(region)),
    }
}

/// Why credentials are not available for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsProblem {
    /// The named Secret does not exist (yet): wait, nothing is wrong with the resource.
    SecretNotFound(String),
    /// The Secret exists but is unusable (missing key, empty value).
    SecretInvalid(String),
    /// No Secret named and the namespace may not use the controller's credentials.
    DefaultsNotPermitted(String),
    /// No Secret named and the controller has no credentials of its own.
    NoDefaults,
    /// The operator may not read the named Secret (RBAC): a human must grant it.
    Forbidden(String),
    /// The operator's own credentials need a human (STS refuses the role or the token, a
    /// missing token file).
    NeedsHuman(String),
    /// Reading the Secret or fetching STS credentials failed for a transient reason.
    Transient(String),
}

impl CredentialsProblem {
    /// A sentence for conditions and events (never holds a secret value).
    pub fn message(&self) -> String {
        match self {
            CredentialsProblem::SecretNotFound(name) => format!(
                "Waiting for Secret {name} (spec.credentials.secretRef) to exist in this namespace"
            ),
            CredentialsProblem::SecretInvalid(why) => format!("The credentials Secret is unusable: {why}"),
            CredentialsProblem::DefaultsNotPermitted(ns) => format!(
                "No spec.credentials.secretRef, and namespace {ns} may not use the operator's own credentials (--default-credentials-namespaces); name a Secret in this namespace"
            ),
            CredentialsProblem::NoDefaults => "No spec.credentials.secretRef, and the operator has no credentials of its own (environment or RRSA); name a Secret in this namespace".to_string(),
            CredentialsProblem::Forbidden(why) => format!(
                "The operator may not read the credentials Secret: {why}; grant it get on that Secret (RBAC), it is re-checked periodically"
            ),
            CredentialsProblem::NeedsHuman(why) => format!(
                "The operator's own credentials are refused: {why}; fix the RAM role, the OIDC provider or the token, it is re-checked periodically"
            ),
            CredentialsProblem::Transient(why) => format!("Could not obtain credentials: {why}"),
        }
    }
}

/// Credentials for one attempt, plus the provider to invalidate after
/// `InvalidSecurityToken.Expired` (only for the controller's RRSA credentials).
pub struct ResolvedCredentials {
    /// The credentials.
    pub credentials: Credentials,
    /// The provider they came from, when it caches.
    pub provider: Option<CredentialsProvider>,
}

/// Reads the resource's Secret (fresh, with `get`) or uses the defaults when permitted.
pub async fn resolve_credentials(
    secrets: &Api<Secret>,
    obj: &DtsJobReset,
    namespace: &str,
    defaults: Option<&CredentialsProvider>,
    scope: &DefaultCredentialsScope,
) -> Result<ResolvedCredentials, CredentialsProblem> {
    if let Some(src) = &obj.spec.credentials {
        let name = &src.secret_ref.name;
        let secret = match crate::kubeapi::bounded(secrets.get_opt(name)).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(CredentialsProblem::SecretNotFound(name.clone())),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(CredentialsProblem::Forbidden(format!(
                    "Secret {name}: {}",
                    s.message
                )));
            }
            Err(e) => return Err(CredentialsProblem::Transient(e.to_string())),
        };
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in secret.string_data.unwrap_or_default() {
            data.entry(k).or_insert_with(|| v.into_bytes());
        }
        let credentials = from_secret_data(&data)
            .map_err(|e| CredentialsProblem::SecretInvalid(format!("Secret {name}: {e}")))?;
        return Ok(ResolvedCredentials {
            credentials,
            provider: None,
        });
    }
    if !scope.allows(namespace) {
        return Err(CredentialsProblem::DefaultsNotPermitted(
            namespace.to_string(),
        ));
    }
    let Some(provider) = defaults else {
        return Err(CredentialsProblem::NoDefaults);
    };
    let credentials = provider.get().await.map_err(|e| {
        if e.needs_human() {
            CredentialsProblem::NeedsHuman(e.to_string())
        } else {
            CredentialsProblem::Transient(e.to_string())
        }
    })?;
    Ok(ResolvedCredentials {
        credentials,
        provider: Some(provider.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DtsJobResetSpec;

    #[test]
    fn scope_parsing() {
        let s = DefaultCredentialsScope::parse(" ops , dts-operator-system ,");
        assert!(s.allows("ops"));
        assert!(s.allows("dts-operator-system"));
        assert!(!s.allows("team-a"));
        assert!(DefaultCredentialsScope::parse("a, *").allows("anything"));
        assert!(!DefaultCredentialsScope::parse("").allows("default"));
    }

    fn obj(endpoint: Option<&str>) -> DtsJobReset {
        DtsJobReset::new(
            "r",
            DtsJobResetSpec {
                dts_job_id: "j".into(),
                endpoint: endpoint.map(str::to_string),
                ..Default::default()
            },
        )
    }

    #[test]
    fn endpoint_precedence_and_allowlist() {
        let allow = EndpointAllowlist::default();
        let over = Endpoint::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            endpoint_for_resource(
                &obj(Some("https://evil.com")),
                "cn-hangzhou",
                Some(&over),
                &allow
            )
            .unwrap(),
            over,
            "the admin override wins over spec.endpoint"
        );
        assert_eq!(
            endpoint_for_resource(&obj(None), "ap-northeast-1", None, &allow)
                .unwrap()
                .host(),
            "dts.ap-northeast-1.aliyuncs.com"
        );
        assert_eq!(
            endpoint_for_resource(
                &obj(Some("dts-vpc.cn-beijing.aliyuncs.com")),
                "cn-beijing",
                None,
                &allow
            )
            .unwrap()
            .base_url(),
            "https://dts-vpc.cn-beijing.aliyuncs.com"
        );
        let err =
            endpoint_for_resource(&obj(Some("https://evil.com")), "cn-hangzhou", None, &allow)
                .unwrap_err();
        assert!(err.contains("allowlist"), "{err}");
        let err = endpoint_for_resource(
            &obj(Some("http://10.0.0.1")),
            "cn-hangzhou",
            None,
            &EndpointAllowlist::parse("10.0.0.1"),
        )
        .unwrap_err();
        assert!(err.contains("http"), "{err}");
    }
}
