//! OIDC token verification for the simulated STS `AssumeRoleWithOIDC`, as the real STS does it
//! against the OIDC provider a RAM role trusts: the token is a JWT signed with RS256 by one of the
//! provider's keys (a JWKS, e.g. a Kubernetes API server's `/openid/v1/jwks`), its audience names
//! the configured client ID (`sts.aliyuncs.com` on ACK), and it is within its validity.
//!
//! Owns: parsing the JWKS, checking one token. Pure: no I/O, the clock is passed in.

use base64::Engine as _;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde::Deserialize;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The OIDC identity provider the simulated STS trusts.
#[derive(Clone, Debug)]
pub struct OidcProvider {
    /// The client ID (`aud`) a token must carry; ACK's RRSA uses `sts.aliyuncs.com`.
    pub audience: String,
    /// When set, the token's `iss` must be exactly this.
    pub issuer: Option<String>,
    keys: Vec<Jwk>,
}

/// Why a JWKS cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid JWKS: {0}")]
pub struct JwksError(String);

#[derive(Clone, Debug)]
struct Jwk {
    kid: Option<String>,
    n: Vec<u8>,
    e: Vec<u8>,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<JwkDoc>,
}

#[derive(Deserialize)]
struct JwkDoc {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl OidcProvider {
    /// A provider for `audience`, trusting the RSA signing keys of `jwks` (JSON, `{"keys":[..]}`).
    pub fn new(audience: &str, issuer: Option<&str>, jwks: &str) -> Result<Self, JwksError> {
        let doc: JwksDoc = serde_json::from_str(jwks).map_err(|e| JwksError(e.to_string()))?;
        let mut keys = Vec::new();
        for k in doc.keys {
            let usable = k.kty == "RSA"
                && k.alg.as_deref().is_none_or(|a| a == "RS256")
                && k.use_.as_deref().is_none_or(|u| u == "sig");
            if !usable {
                continue;
            }
            let decode = |v: Option<String>, what: &str| {
                let v = v.ok_or_else(|| JwksError(format!("an RSA key has no {what}")))?;
                B64URL
                    .decode(v.trim_end_matches('='))
                    .map_err(|e| JwksError(format!("key {what}: {e}")))
            };
            keys.push(Jwk {
                kid: k.kid,
                n: decode(k.n, "n")?,
                e: decode(k.e, "e")?,
            });
        }
        if keys.is_empty() {
            return Err(JwksError("no RS256 signing key".into()));
        }
        if audience.is_empty() {
            return Err(JwksError("the audience is empty".into()));
        }
        Ok(OidcProvider {
            audience: audience.to_owned(),
            issuer: issuer.map(str::to_owned),
            keys,
        })
    }

    /// Checks `token` at `now` (seconds since the epoch), allowing `leeway_secs` of clock skew.
    /// Returns the verified claims.
    pub fn verify(&self, token: &str, now: i64, leeway_secs: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not a JWS compact serialization"));
        };
        let header: Header = decode_json(h).ok_or(TokenError::Malformed("header"))?;
        if header.alg != "RS256" {
            return Err(TokenError::Malformed("alg is not RS256"));
        }
        let signature = B64URL
            .decode(s)
            .map_err(|_| TokenError::Malformed("signature encoding"))?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let verified = self
            .keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .any(|k| {
                RsaPublicKeyComponents { n: &k.n, e: &k.e }
                    .verify(&RSA_PKCS1_2048_8192_SHA256, signed, &signature)
                    .is_ok()
            });
        if !verified {
            return Err(TokenError::Signature);
        }
        let claims: Claims = decode_json(p).ok_or(TokenError::Malformed("claims"))?;
        if let Some(want) = &self.issuer
            && claims.iss.as_deref() != Some(want.as_str())
        {
            return Err(TokenError::Issuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(TokenError::Audience);
        }
        match claims.exp {
            Some(exp) if exp + leeway_secs > now => {}
            Some(_) => return Err(TokenError::Expired),
            None => return Err(TokenError::Malformed("no exp")),
        }
        if claims.nbf.is_some_and(|nbf| nbf - leeway_secs > now)
            || claims.iat.is_some_and(|iat| iat - leeway_secs > now)
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.sub.as_deref().is_none_or(str::is_empty) {
            return Err(TokenError::Malformed("no sub"));
        }
        Ok(claims)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// The claims the simulated STS looks at.
#[derive(Clone, Debug, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: Option<String>,
    /// Subject (for Kubernetes: `system:serviceaccount:<ns>:<name>`).
    pub sub: Option<String>,
    /// Audiences (a JSON string or array).
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: Option<i64>,
    /// Not before.
    pub nbf: Option<i64>,
    /// Issued at.
    pub iat: Option<i64>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = B64URL.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed RS256 JWT with the required claims.
    #[error("the OIDC token is malformed ({0})")]
    Malformed(&'static str),
    /// No trusted key verifies the signature.
    #[error("the OIDC token's signature does not verify with the OIDC provider's keys")]
    Signature,
    /// `iss` is not the provider.
    #[error("the OIDC token's issuer is not the OIDC provider's")]
    Issuer,
    /// `aud` does not name the configured client ID.
    #[error("the OIDC token's audience does not include the OIDC provider's client ID")]
    Audience,
    /// Past `exp`.
    #[error("the OIDC token has expired")]
    Expired,
    /// Before `nbf` / `iat`.
    #[error("the OIDC token is not valid yet")]
    NotYetValid,
}

impl TokenError {
    /// The STS error code for it.
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Expired => "AuthenticationFail.OIDCToken.Expired",
            _ => "AuthenticationFail.OIDCToken.Invalid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

    // A 2048-bit RSA key made once with `openssl genpkey -algorithm RSA | openssl pkcs8 -topk8
    // -nocrypt -outform DER | base64`:
    // a fixed test key, so the test needs no key generation of its own.
    fn key() -> RsaKeyPair {
        let b64: String = include_str!("../tests/data/oidc-test-key.pk8.b64")
            .split_whitespace()
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        RsaKeyPair::from_pkcs8(&der).unwrap()
    }

    fn jwks(k: &RsaKeyPair, kid: &str) -> String {
        let public: RsaPublicKeyComponents<Vec<u8>> = k.public().into();
        let n = B64URL.encode(&public.n);
        let e = B64URL.encode(&public.e);
        serde_json::json!({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": e}]})
            .to_string()
    }

    fn sign(k: &RsaKeyPair, kid: &str, claims: serde_json::Value) -> String {
        let h = B64URL.encode(serde_json::json!({"alg": "RS256", "kid": kid}).to_string());
        let p = B64URL.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let mut sig = vec![0; k.public().modulus_len()];
        k.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{input}.{}", B64URL.encode(sig))
    }

    fn claims(aud: serde_json::Value, iat: i64, exp: i64) -> serde_json::Value {
        serde_json::json!({"iss": "https://issuer.test", "sub": "system:serviceaccount:ns:sa",
                           "aud": aud, "iat": iat, "nbf": iat, "exp": exp})
    }

    #[test]
    fn accepts_a_signed_token_for_the_audience_and_refuses_the_rest() {
        let k = key();
        let p = OidcProvider::new(
            "sts.aliyuncs.com",
            Some("https://issuer.test"),
            &jwks(&k, "k1"),
        )
        .unwrap();
        let now = 1_800_000_000;
        let good = sign(
            &k,
            "k1",
            claims(serde_json::json!(["sts.aliyuncs.com"]), now - 10, now + 600),
        );
        let c = p.verify(&good, now, 0).unwrap();
        assert_eq!(c.sub.as_deref(), Some("system:serviceaccount:ns:sa"));
        assert_eq!(c.iat, Some(now - 10));
        // A string audience is an audience too.
        let one = sign(
            &k,
            "k1",
            claims(serde_json::json!("sts.aliyuncs.com"), now, now + 600),
        );
        assert!(p.verify(&one, now, 0).is_ok());

        let other_aud = sign(
            &k,
            "k1",
            claims(
                serde_json::json!(["https://kubernetes.default.svc"]),
                now,
                now + 600,
            ),
        );
        assert_eq!(
            p.verify(&other_aud, now, 0).unwrap_err(),
            TokenError::Audience
        );
        let expired = sign(
            &k,
            "k1",
            claims(
                serde_json::json!(["sts.aliyuncs.com"]),
                now - 700,
                now - 100,
            ),
        );
        assert_eq!(p.verify(&expired, now, 0).unwrap_err(), TokenError::Expired);
        assert_eq!(p.verify(&expired, now, 200).map(|_| ()), Ok(()));
        let future = sign(
            &k,
            "k1",
            claims(
                serde_json::json!(["sts.aliyuncs.com"]),
                now + 100,
                now + 700,
            ),
        );
        assert_eq!(
            p.verify(&future, now, 0).unwrap_err(),
            TokenError::NotYetValid
        );

        let mut tampered = good.clone();
        let mid = good.find('.').unwrap() + 3;
        tampered.replace_range(
            mid..mid + 1,
            if &good[mid..mid + 1] == "A" { "B" } else { "A" },
        );
        assert!(matches!(
            p.verify(&tampered, now, 0).unwrap_err(),
            TokenError::Signature | TokenError::Malformed(_)
        ));
        assert_eq!(
            p.verify("a.b", now, 0).unwrap_err(),
            TokenError::Malformed("not a JWS compact serialization")
        );

        let wrong_issuer =
            OidcProvider::new("sts.aliyuncs.com", Some("https://other"), &jwks(&k, "k1")).unwrap();
        assert_eq!(
            wrong_issuer.verify(&good, now, 0).unwrap_err(),
            TokenError::Issuer
        );
        assert_eq!(
            TokenError::Expired.code(),
            "AuthenticationFail.OIDCToken.Expired"
        );
        assert_eq!(
            TokenError::Audience.code(),
            "AuthenticationFail.OIDCToken.Invalid"
        );
    }

    #[test]
    fn refuses_a_jwks_without_signing_keys() {
        assert!(OidcProvider::new("a", None, r#"{"keys":[{"kty":"EC","crv":"P-256"}]}"#).is_err());
        assert!(OidcProvider::new("a", None, "not json").is_err());
    }
}
