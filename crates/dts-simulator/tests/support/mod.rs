//! Test-only helpers: a raw HTTP/1.1 client (so tests control every byte on the wire and can see a
//! dropped connection) and a tiny signer written independently of `dts_simulator::verify`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

/// RFC 3986 unreserved characters stay literal.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

pub fn now_ts() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn join(pairs: &BTreeMap<String, String>) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------------------------------------
// The raw HTTP client.

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A request; `headers` are sent as given (add `host` to override the default `Host`).
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Req {
        Req {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn body(mut self, b: &str) -> Req {
        self.body = b.as_bytes().to_vec();
        self
    }
}

/// Sends `req` on a fresh connection (`Connection: close`) and reads the whole answer.
/// `Ok(None)`: the server closed the connection without answering.
pub async fn send_raw(addr: SocketAddr, req: &Req) -> std::io::Result<Option<Resp>> {
    let stream = TcpStream::connect(addr).await?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    if !req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    write_all(&stream, head.as_bytes()).await?;
    write_all(&stream, &req.body).await?;
    let buf = read_to_end(&stream).await?;
    if buf.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("complete head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Some(Resp {
        status,
        headers,
        body: body.to_owned(),
    }))
}

// The workspace's tokio has no `io-util` feature; these two loops stand in for
// `AsyncWriteExt::write_all` and `AsyncReadExt::read_to_end`.
async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_to_end(stream: &TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // A reset after the server dropped the connection: whatever arrived is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Waits (up to 10 s) until `cond` holds.
pub async fn eventually(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`send_raw`] but expects an answer, within 10 s.
pub async fn send(addr: SocketAddr, req: &Req) -> Resp {
    tokio::time::timeout(Duration::from_secs(10), send_raw(addr, req))
        .await
        .expect("answer within 10 s")
        .expect("I/O")
        .expect("an answer, not a dropped connection")
}

// ---------------------------------------------------------------------------------------------
// The independent signer.

pub struct Creds {
    pub id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl Creds {
    pub fn new(id: &str, secret: &str) -> Creds {
        Creds {
            id: id.into(),
            secret: secret.into(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Creds {
        self.token = Some(token.into());
        self
    }
}

/// Where V1 parameters go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Everything in the query.
    Query,
    /// Common parameters in the query, operation parameters in a form body.
    Form,
}

/// Operation parameters for a ResetDtsJob.
pub fn op(job: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("DtsJobId".into(), job.into()),
        ("RegionId".into(), "cn-hangzhou".into()),
        ("SynchronizationDirection".into(), "Forward".into()),
    ])
}

pub struct V1 {
    pub method: String,
    pub common: BTreeMap<String, String>,
    pub op: BTreeMap<String, String>,
    pub place: Place,
}

impl V1 {
    /// A ResetDtsJob with fresh nonce and timestamp, `Format=JSON`.
    pub fn reset(method: &str, creds: &Creds, op: BTreeMap<String, String>, place: Place) -> V1 {
        let mut common = BTreeMap::from([
            ("Action".to_owned(), "ResetDtsJob".to_owned()),
            ("Version".into(), "2020-01-01".into()),
            ("Format".into(), "JSON".into()),
            ("AccessKeyId".into(), creds.id.clone()),
            ("SignatureMethod".into(), "HMAC-SHA1".into()),
            ("SignatureVersion".into(), "1.0".into()),
            ("SignatureNonce".into(), nonce()),
            ("Timestamp".into(), now_ts()),
        ]);
        if let Some(t) = &creds.token {
            common.insert("SecurityToken".into(), t.clone());
        }
        V1 {
            method: method.into(),
            common,
            op,
            place,
        }
    }

    pub fn set(mut self, k: &str, v: &str) -> V1 {
        self.common.insert(k.into(), v.into());
        self
    }

    pub fn unset(mut self, k: &str) -> V1 {
        self.common.remove(k);
        self
    }

    /// The signed request.
    pub fn build(&self, secret: &str) -> Req {
        let mut all = self.common.clone();
        all.extend(self.op.clone());
        let sts = format!("{}&%2F&{}", self.method, enc(&join(&all)));
        let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
        mac.update(sts.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        match self.place {
            Place::Query => {
                all.insert("Signature".into(), sig);
                Req::new(&self.method, &format!("/?{}", join(&all)))
            }
            Place::Form => {
                let mut q = self.common.clone();
                q.insert("Signature".into(), sig);
                // Spaces as `+` in the form body: the server must decode them back.
                let body = join(&self.op).replace("%20", "+");
                Req::new(&self.method, &format!("/?{}", join(&q)))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(&body)
            }
        }
    }
}

pub struct V3 {
    pub method: String,
    pub host: String,
    pub action: String,
    pub version: String,
    pub date: String,
    pub nonce: String,
    pub query: BTreeMap<String, String>,
    pub body: Option<String>,
    pub extra_headers: Vec<(String, String)>,
    /// Headers sent but left out of SignedHeaders (to test the gateway's refusal).
    pub unsigned_headers: Vec<(String, String)>,
    /// Override the x-acs-content-sha256 header.
    pub content_sha256: Option<String>,
}

impl V3 {
    pub fn reset(addr: SocketAddr, op: BTreeMap<String, String>) -> V3 {
        V3 {
            method: "POST".into(),
            host: addr.to_string(),
            action: "ResetDtsJob".into(),
            version: "2020-01-01".into(),
            date: now_ts(),
            nonce: nonce(),
            query: op,
            body: None,
            extra_headers: Vec::new(),
            unsigned_headers: Vec::new(),
            content_sha256: None,
        }
    }

    pub fn build(&self, creds: &Creds) -> Req {
        let body = self.body.clone().unwrap_or_default();
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        let mut signed: BTreeMap<String, String> = BTreeMap::from([
            ("host".into(), self.host.clone()),
            ("x-acs-action".into(), self.action.clone()),
            ("x-acs-version".into(), self.version.clone()),
            ("x-acs-date".into(), self.date.clone()),
            ("x-acs-signature-nonce".into(), self.nonce.clone()),
            (
                "x-acs-content-sha256".into(),
                self.content_sha256.clone().unwrap_or_else(|| hash.clone()),
            ),
        ]);
        if let Some(t) = &creds.token {
            signed.insert("x-acs-security-token".into(), t.clone());
        }
        if self.body.is_some() {
            signed.insert(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            );
        }
        for (k, v) in &self.extra_headers {
            signed.insert(k.to_ascii_lowercase(), v.clone());
        }
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let names = signed.keys().cloned().collect::<Vec<_>>().join(";");
        let canonical = format!(
            "{}\n/\n{}\n{}\n{}\n{}",
            self.method,
            join(&self.query),
            canonical_headers,
            names,
            signed["x-acs-content-sha256"]
        );
        let sts = format!(
            "ACS3-HMAC-SHA256\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(creds.secret.as_bytes()).unwrap();
        mac.update(sts.as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        let target = if self.query.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{}", join(&self.query))
        };
        let mut req = Req::new(&self.method, &target).body(&body);
        for (k, v) in signed
            .iter()
            .chain(self.unsigned_headers.iter().map(|(k, v)| (k, v)))
        {
            req = req.header(k, v);
        }
        req.header(
            "Authorization",
            &format!(
                "ACS3-HMAC-SHA256 Credential={},SignedHeaders={names},Signature={sig}",
                creds.id
            ),
        )
    }
}
