//! The record of every request the simulator received — what tests assert on.
//!
//! Owns: [`RecordedCall`] and its JSON form (`GET /_simulator/calls`, camelCase fields). Pure data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::verify::Style;

/// One request, as received and as answered.
///
/// Headers, query and body are kept verbatim (including any security token or OIDC token the
/// client sent) so tests can assert on the wire form; the simulator never logs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCall {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Arrival time (server clock, including any configured offset).
    #[serde(with = "timestamp_serde")]
    pub received_at: jiff::Timestamp,
    /// HTTP method.
    pub method: String,
    /// Path (normally `/`).
    pub path: String,
    /// The query string as sent, without `?`.
    pub raw_query: String,
    /// Headers (lower-case names, values as received).
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// Detected signing style.
    pub style: Style,
    /// AccessKeyId the request claimed.
    pub access_key_id: Option<String>,
    /// Action (parameter or `x-acs-action`).
    pub action: Option<String>,
    /// API version (parameter or `x-acs-version`).
    pub version: Option<String>,
    /// `DtsJobId` parameter.
    pub dts_job_id: Option<String>,
    /// `RegionId` parameter.
    pub region_id: Option<String>,
    /// Decoded operation parameters (query ∪ form body, minus the common protocol parameters).
    /// For STS calls: every decoded parameter, including `OIDCToken`.
    pub params: BTreeMap<String, String>,
    /// The `Host` the request carried (for V3 it is signed).
    pub host: Option<String>,
    /// Signature nonce as sent.
    pub nonce: Option<String>,
    /// Timestamp as sent.
    pub timestamp: Option<String>,
    /// Whether a security token accompanied the call.
    pub has_security_token: bool,
    /// STS only: the OIDC token received (from the form body, or the query if misplaced).
    pub oidc_token: Option<String>,
    /// `ok`, the error `Code`/`ErrCode` answered, `raw`, `dropped`, or `pending` while held.
    pub outcome: String,
    /// HTTP status answered (0 when the connection was dropped or while pending).
    pub http_status: u16,
    /// The request passed verification and reached the scripted ResetDtsJob: the reset may have
    /// happened.
    pub executed: bool,
    /// Refused by the server-side limit ([`crate::RateLimit`]): answered `Throttling.User`,
    /// never executed. Scripted throttling answers are executed calls and leave this `false`.
    #[serde(default)]
    pub throttled: bool,
    /// `RequestId` answered, if any.
    pub request_id: Option<String>,
}

mod timestamp_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(ts)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<jiff::Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
