//! https serving (a CA and server certificate made with Debian's `openssl`, as a user of a
//! private gateway would) and STS's check of OIDC tokens against a provider's keys, both over
//! the wire.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use dts_simulator::{OidcProvider, SimConfig, Simulator, StartError, TlsIdentity};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents};
use support::{Req, send};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate it signed for `san` (e.g. `IP:127.0.0.1`).
fn pki(san: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("dts-sim-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=dts-simulator test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=dts-simulator",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
        ),
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    Pki { dir }
}

fn client_config(ca: Option<&Path>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One HTTP/1.1 request over TLS (`Connection: close`); the raw answer, or the TLS error.
async fn https(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &str,
) -> Result<String, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    tls.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    // A server may end without close_notify; what arrived is what counts.
    let _ = tls.read_to_end(&mut out).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn serves_https_with_the_given_identity() {
    let pki = pki("IP:127.0.0.1");
    let identity = TlsIdentity::from_files(&pki.path("server.crt"), &pki.path("server.key"))
        .expect("a valid identity");
    assert_eq!(
        format!("{identity:?}"),
        "TlsIdentity { .. }",
        "never the key"
    );
    let sim = Simulator::start_with(SimConfig {
        tls: Some(identity),
        ..SimConfig::default()
    })
    .await;
    assert!(sim.url().starts_with("https://127.0.0.1:"), "{}", sim.url());

    let get = "GET /_simulator/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let answer = https(sim.addr(), client_config(Some(&pki.path("ca.crt"))), get)
        .await
        .expect("a client trusting the CA completes the handshake");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    // A client that does not trust the CA is refused at the handshake, and the server keeps
    // serving the others.
    let err = https(sim.addr(), client_config(None), get)
        .await
        .expect_err("no trust, no connection");
    assert!(err.to_string().contains("certificate"), "{err}");
    // Plain http to the TLS port gets no HTTP answer (a TLS alert at most).
    let mut tcp = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    tcp.write_all(get.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    assert!(
        !String::from_utf8_lossy(&out).contains("HTTP/1.1"),
        "plain http must not be served on the TLS port"
    );
    let answer = https(sim.addr(), client_config(Some(&pki.path("ca.crt"))), get)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn beyond_loopback_only_with_tls_and_never_on_every_interface() {
    let pki = pki("IP:127.0.0.1");
    let identity =
        TlsIdentity::from_files(&pki.path("server.crt"), &pki.path("server.key")).unwrap();
    // 192.0.2.1 (TEST-NET-1) is not on this machine: the checks come before any bind.
    let plain = SimConfig {
        bind: "192.0.2.1:0".parse().unwrap(),
        allow_non_loopback: true,
        ..SimConfig::default()
    };
    assert!(matches!(
        Simulator::try_start_with(plain).await,
        Err(StartError::PlainBeyondLoopback(_))
    ));
    let not_allowed = SimConfig {
        bind: "192.0.2.1:0".parse().unwrap(),
        tls: Some(identity.clone()),
        ..SimConfig::default()
    };
    assert!(matches!(
        Simulator::try_start_with(not_allowed).await,
        Err(StartError::NotLoopback(_))
    ));
    let everywhere = SimConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        tls: Some(identity),
        allow_non_loopback: true,
        ..SimConfig::default()
    };
    assert!(matches!(
        Simulator::try_start_with(everywhere).await,
        Err(StartError::NotLoopback(_))
    ));
    assert!(TlsIdentity::from_pem(b"", b"").is_err());
    assert!(
        TlsIdentity::from_pem(
            &std::fs::read(pki.path("server.crt")).unwrap(),
            &std::fs::read(pki.path("ca.key")).unwrap()
        )
        .is_err(),
        "a key that does not match the certificate"
    );
}

fn test_key() -> RsaKeyPair {
    let b64: String = include_str!("data/oidc-test-key.pk8.b64")
        .split_whitespace()
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    RsaKeyPair::from_pkcs8(&der).unwrap()
}

fn jwt(key: &RsaKeyPair, claims: serde_json::Value) -> String {
    let h = B64URL.encode(serde_json::json!({"alg": "RS256", "kid": "k"}).to_string());
    let p = B64URL.encode(claims.to_string());
    let input = format!("{h}.{p}");
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", B64URL.encode(sig))
}

fn sts_form(token: &str) -> String {
    let params = std::collections::BTreeMap::from([
        ("Action".to_owned(), "AssumeRoleWithOIDC".to_owned()),
        ("Version".into(), "2015-04-01".into()),
        ("Format".into(), "JSON".into()),
        ("RoleArn".into(), "acs:ram::123:role/dts-operator".into()),
        (
            "OIDCProviderArn".into(),
            "acs:ram::123:oidc-provider/ack-rrsa".into(),
        ),
        ("RoleSessionName".into(), "dts-operator".into()),
        ("OIDCToken".into(), token.into()),
    ]);
    support::join(&params)
}

#[tokio::test]
async fn sts_accepts_only_tokens_the_oidc_provider_signed_for_its_audience() {
    let key = test_key();
    let public: RsaPublicKeyComponents<Vec<u8>> = key.public().into();
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k",
        "n": B64URL.encode(&public.n), "e": B64URL.encode(&public.e)}]})
    .to_string();
    let provider =
        OidcProvider::new("sts.aliyuncs.com", Some("https://issuer.test"), &jwks).unwrap();
    let sim = Simulator::start_with(SimConfig {
        oidc: Some(provider),
        ..SimConfig::default()
    })
    .await;
    let now = jiff::Timestamp::now().as_second();
    let claims = |aud: &str, exp: i64| {
        serde_json::json!({"iss": "https://issuer.test", "sub": "system:serviceaccount:ops:dts-operator",
                           "aud": [aud], "iat": now - 5, "exp": exp})
    };
    let post = |token: &str| {
        Req::new("POST", "/")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(&sts_form(token))
    };

    let good = jwt(&key, claims("sts.aliyuncs.com", now + 600));
    let resp = send(sim.addr(), &post(&good)).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let body = resp.json();
    assert_eq!(
        body["OIDCTokenInfo"]["Subject"],
        "system:serviceaccount:ops:dts-operator"
    );
    assert_eq!(body["OIDCTokenInfo"]["ClientIds"], "sts.aliyuncs.com");
    assert!(
        body["Credentials"]["AccessKeyId"]
            .as_str()
            .unwrap()
            .starts_with("STS.")
    );

    for (token, code) in [
        (
            jwt(&key, claims("https://kubernetes.default.svc", now + 600)),
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (
            jwt(&key, claims("sts.aliyuncs.com", now - 120)),
            "AuthenticationFail.OIDCToken.Expired",
        ),
        (
            "eyJ.not-a-token.sig".to_owned(),
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (
            format!("{}x", &good[..good.len() - 1]),
            "AuthenticationFail.OIDCToken.Invalid",
        ),
    ] {
        let resp = send(sim.addr(), &post(&token)).await;
        assert_eq!(resp.status, 401, "{}", resp.body);
        assert_eq!(resp.json()["Code"], code, "{}", resp.body);
    }
    let outcomes: Vec<String> = sim.sts_calls().into_iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes[0], "ok");
    assert_eq!(outcomes.len(), 5);
}
