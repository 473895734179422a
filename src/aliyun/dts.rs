//! The DTS actions the product speaks — `ResetDtsJob` (destructive) and `DescribeDtsJobDetail`
//! (read-only) — as typed parameters ([`Action`]), and their answers: the envelope every answer
//! has, parsed into one typed result from either the DTS body or the gateway's error body, in
//! JSON or XML ([`parse_answer`]), and a job's state from a Describe answer ([`JobDetail`]).
//!
//! Pure: building the request and parsing an answer never touch the network. An answer that is
//! not one of the two known shapes is reported as unparseable, never guessed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::signer::RpcRequest;

/// The reset action's name.
pub const ACTION: &str = "ResetDtsJob";
/// The read action's name.
pub const DESCRIBE_ACTION: &str = "DescribeDtsJobDetail";
/// The DTS API version.
pub const VERSION: &str = "2020-01-01";

/// One DTS action's parameters: its name, and how they go into an RPC request.
pub trait Action: Clone + std::fmt::Debug + Send + Sync {
    /// The `Action` parameter.
    const NAME: &'static str;
    /// The RPC request, absent parameters left out.
    fn to_rpc(&self) -> RpcRequest;
}

fn rpc(action: &str, params: &[(&str, Option<&String>)]) -> RpcRequest {
    RpcRequest {
        action: action.to_string(),
        version: VERSION.to_string(),
        params: params
            .iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.clone())))
            .collect(),
    }
}

/// The synchronization direction (SynchronizationDirection): `Forward` or `Reverse`. Optional;
/// only two-way synchronization tasks have a reverse direction.
// One type for the concept: the call parameter, `--direction` and
// `spec.synchronizationDirection` (hence the clap, serde and schema derives; the doc is the CRD's).
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
pub enum SynchronizationDirection {
    /// From the source to the destination.
    #[value(name = "Forward")]
    Forward,
    /// From the destination back to the source (two-way synchronization).
    #[value(name = "Reverse")]
    Reverse,
}

impl SynchronizationDirection {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronizationDirection::Forward => "Forward",
            SynchronizationDirection::Reverse => "Reverse",
        }
    }
}

/// Parameters of one `ResetDtsJob` call (the "call parameters" of a request).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ResetDtsJobParams {
    /// `DtsJobId` (required).
    pub dts_job_id: String,
    /// `DtsInstanceId`.
    pub dts_instance_id: Option<String>,
    /// `SynchronizationDirection`, in the API's spelling (`Forward` | `Reverse`).
    pub synchronization_direction: Option<String>,
    /// `RegionId`.
    pub region_id: Option<String>,
}

/// The RPC request of `action` for the job `p` names; `instance_key` is how the action spells
/// the instance parameter.
fn job_rpc(action: &str, p: &ResetDtsJobParams, instance_key: &str) -> RpcRequest {
    rpc(
        action,
        &[
            ("DtsJobId", Some(&p.dts_job_id)),
            (instance_key, p.dts_instance_id.as_ref()),
            (
                "SynchronizationDirection",
                p.synchronization_direction.as_ref(),
            ),
            ("RegionId", p.region_id.as_ref()),
        ],
    )
}

impl Action for ResetDtsJobParams {
    const NAME: &'static str = ACTION;

    fn to_rpc(&self) -> RpcRequest {
        job_rpc(ACTION, self, "DtsInstanceId")
    }
}

/// Parameters of `DescribeDtsJobDetail`: the same job a reset names, read — note the capital
/// `ID` of `DtsInstanceID` in this action.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct DescribeDtsJobDetailParams(pub ResetDtsJobParams);

impl From<&ResetDtsJobParams> for DescribeDtsJobDetailParams {
    /// The read of the job a reset names.
    fn from(p: &ResetDtsJobParams) -> Self {
        DescribeDtsJobDetailParams(p.clone())
    }
}

impl Action for DescribeDtsJobDetailParams {
    const NAME: &'static str = DESCRIBE_ACTION;

    fn to_rpc(&self) -> RpcRequest {
        job_rpc(DESCRIBE_ACTION, &self.0, "DtsInstanceID")
    }
}

/// The status a reset leaves a job in.
pub const NOT_CONFIGURED: &str = "NotConfigured";

/// A job as `DescribeDtsJobDetail` shows it. Absent fields are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    /// `DtsJobId`.
    pub dts_job_id: Option<String>,
    /// `DtsInstanceID`.
    pub dts_instance_id: Option<String>,
    /// `DtsJobName`.
    pub job_name: Option<String>,
    /// `Status`, as sent (the API's spelling varies in case).
    pub status: Option<String>,
    /// `CreateTime`.
    pub create_time: Option<String>,
    /// Whether the job still has a source, destination or object configuration.
    pub configured: bool,
    /// `RequestId` of the answer.
    pub request_id: Option<String>,
}

impl JobDetail {
    /// Whether the job is in `NotConfigured` (compared case-insensitively, as the API's
    /// spelling varies).
    pub fn is_not_configured(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(NOT_CONFIGURED))
    }

    /// The job from a `DescribeDtsJobDetail` JSON body, if the body is a JSON object.
    pub fn from_body(body: &[u8]) -> Option<JobDetail> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let o = v.as_object()?;
        let text = |k: &str| o.get(k).and_then(value_text).filter(|s| !s.is_empty());
        let has_text = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => {
                let t = s.trim();
                !t.is_empty() && t != "[]" && t != "{}" && t != "null"
            }
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(serde_json::Value::Object(m)) => m.values().any(has_value),
            _ => false,
        };
        fn has_value(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::String(s) => !s.trim().is_empty(),
                serde_json::Value::Number(_) => true,
                serde_json::Value::Array(a) => !a.is_empty(),
                serde_json::Value::Object(m) => m.values().any(has_value),
                _ => false,
            }
        }
        let configured = has_text(o.get("DbObject"))
            || has_text(o.get("SourceEndpoint"))
            || has_text(o.get("DestinationEndpoint"));
        Some(JobDetail {
            dts_job_id: text("DtsJobId"),
            dts_instance_id: text("DtsInstanceID").or_else(|| text("DtsInstanceId")),
            job_name: text("DtsJobName"),
            status: text("Status"),
            create_time: text("CreateTime"),
            configured,
            request_id: text("RequestId"),
        })
    }
}

/// Checks a job ID the way the resource's schema does: 1..=64 characters, no whitespace.
pub fn validate_job_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.chars().count() > 64 {
        return Err("DtsJobId must be 1 to 64 characters".to_string());
    }
    if id.chars().any(char::is_whitespace) {
        return Err("DtsJobId must not contain whitespace".to_string());
    }
    Ok(())
}

/// One answer, from the DTS body or the gateway error body. Every field is what the service
/// said; absent ones are `None`. Serialized (camelCase, absent = `null`) as the `reset`
/// command's output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtsAnswer {
    /// `RequestId`.
    pub request_id: Option<String>,
    /// `Success`.
    pub success: Option<bool>,
    /// `HttpStatusCode` from the body, else the HTTP status of the response.
    pub http_status_code: Option<i64>,
    /// `ErrCode` (DTS body) or `Code` (gateway body).
    pub err_code: Option<String>,
    /// `ErrMessage` or `Message`, as returned (may hold `%s`).
    pub err_message: Option<String>,
    /// `DynamicMessage`: fills `%s` in `ErrMessage`.
    pub dynamic_message: Option<String>,
    /// `DynamicCode` (deprecated by DTS).
    pub dynamic_code: Option<String>,
}

impl DtsAnswer {
    /// `ErrMessage` with `%s` filled from `DynamicMessage` (kept as is when there is none).
    pub fn rendered_message(&self) -> Option<String> {
        let msg = self.err_message.as_deref()?;
        Some(render_message(msg, self.dynamic_message.as_deref()))
    }
}

/// Replaces each `%s` in `template` with `dynamic` (when given and non-empty).
pub fn render_message(template: &str, dynamic: Option<&str>) -> String {
    match dynamic {
        Some(d) if !d.is_empty() && template.contains("%s") => template.replace("%s", d),
        _ => template.to_string(),
    }
}

/// Why a body was not accepted as an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unparseable answer: {reason} (HTTP {http_status}, {len} bytes{ctype})", ctype = content_type.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
pub struct UnparseableAnswer {
    /// HTTP status of the response.
    pub http_status: u16,
    /// Its content type.
    pub content_type: Option<String>,
    /// Body length.
    pub len: usize,
    /// What was wrong.
    pub reason: String,
    /// The start of the body, printable characters only, for diagnostics.
    pub excerpt: String,
}

/// Accepts `"x"`, `1`, `true` as text.
fn value_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn value_bool(v: &serde_json::Value) -> Option<bool> {
    match v {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn value_int(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Builds an answer from a flat field map (JSON object or XML children). `None` when the map has
/// none of the fields that identify either shape.
fn from_fields(
    http_status: u16,
    get: &dyn Fn(&str) -> Option<serde_json::Value>,
) -> Option<DtsAnswer> {
    let text = |k: &str| get(k).as_ref().and_then(value_text);
    let answer = DtsAnswer {
        request_id: text("RequestId"),
        http_status_code: get("HttpStatusCode")
            .as_ref()
            .and_then(value_int)
            .or(Some(i64::from(http_status))),
        success: get("Success").as_ref().and_then(value_bool),
        err_code: text("ErrCode").or_else(|| text("Code")),
        err_message: text("ErrMessage").or_else(|| text("Message")),
        dynamic_message: text("DynamicMessage"),
        dynamic_code: text("DynamicCode"),
    };
    let recognised =
        answer.request_id.is_some() || answer.success.is_some() || answer.err_code.is_some();
    recognised.then_some(answer)
}

/// Parses a response body into an answer. JSON (`{...}`) and XML (`<ResetDtsJobResponse>` or
/// `<Error>`) are accepted whatever the content type says; anything else is unparseable.
pub fn parse_answer(
    http_status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<DtsAnswer, UnparseableAnswer> {
    let fail = |reason: &str| UnparseableAnswer {
        http_status,
        content_type: content_type.map(str::to_string),
        len: body.len(),
        reason: reason.to_string(),
        excerpt: excerpt(body),
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(fail("not UTF-8"));
    };
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(fail("empty body"));
    }
    if trimmed.starts_with("{") {
        let value: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|e| fail(&format!("invalid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| fail("JSON is not an object"))?;
        return from_fields(http_status, &|k| obj.get(k).cloned())
            .ok_or_else(|| fail("JSON has none of RequestId, Success, ErrCode, Code"));
    }
    if trimmed.starts_with("<") {
        let fields = parse_xml_fields(trimmed).map_err(|e| fail(&e))?;
        return from_fields(http_status, &|k| {
            fields.get(k).map(|v| serde_json::Value::String(v.clone()))
        })
        .ok_or_else(|| fail("XML has none of RequestId, Success, ErrCode, Code"));
    }
    Err(fail("neither JSON nor XML"))
}

/// Reads the direct children of the root element of `<ResetDtsJobResponse>` or `<Error>` as
/// text fields. Any other root (an HTML error page, say) is refused.
fn parse_xml_fields(text: &str) -> Result<BTreeMap<String, String>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut fields = BTreeMap::new();
    let mut saw_root = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name().as_ref().to_string();
                depth += 1;
                if depth == 1 {
                    if name != "ResetDtsJobResponse" && name != "Error" {
                        return Err(format!("unexpected XML root <{name}>"));
                    }
                    saw_root = true;
                } else if depth == 2 {
                    current = Some(name);
                }
            }
            Ok(Event::Empty(e)) => {
                if depth == 1 {
                    let name = e.local_name().as_ref().to_string();
                    fields.entry(name).or_insert_with(String::new);
                } else if depth == 0 {
                    return Err("empty XML root".to_string());
                }
            }
            // Text arrives in pieces (entities split it): each piece is appended to the field
            // being read.
            Ok(Event::Text(t)) => append(&mut fields, depth, &current, &t.xml10_content()),
            Ok(Event::CData(t)) => append(&mut fields, depth, &current, &t.xml10_content()),
            Ok(Event::GeneralRef(r)) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let entity = r.xml10_content();
                        quick_xml::escape::resolve_predefined_entity(&entity)
                            .map(str::to_string)
                            .ok_or_else(|| format!("unknown XML entity &{entity};"))?
                    }
                    Err(e) => return Err(format!("invalid XML character reference: {e}")),
                };
                append(&mut fields, depth, &current, &resolved);
            }
            Ok(Event::End(_)) => {
                if depth == 2
                    && let Some(name) = current.take()
                {
                    fields.entry(name).or_insert_with(String::new);
                }
                depth = depth.saturating_sub(1);
            }
            Ok(Event::Eof) => break,
            Ok(Event::DocType(_)) => return Err("an HTML/XML document type, not an answer".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("invalid XML: {e}")),
        }
    }
    if !saw_root || depth != 0 {
        return Err("incomplete XML".to_string());
    }
    // Text is kept whole while reading (entities split it into pieces); only the ends are
    // insignificant.
    Ok(fields
        .into_iter()
        .map(|(k, v)| (k, v.trim().to_string()))
        .collect())
}

/// Appends a piece of text to the field being read, if a field (depth 2) is being read.
fn append(
    fields: &mut BTreeMap<String, String>,
    depth: usize,
    current: &Option<String>,
    piece: &str,
) {
    if depth == 2
        && let Some(name) = current
    {
        fields.entry(name.clone()).or_default().push_str(piece);
    }
}

/// The first 200 bytes of a body, control characters replaced, for diagnostics.
pub fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_to_rpc_leave_out_absent_ones() {
        let p = ResetDtsJobParams {
            dts_job_id: "j".into(),
            region_id: Some("cn-hangzhou".into()),
            ..Default::default()
        };
        let r = p.to_rpc();
        assert_eq!(r.action, "ResetDtsJob");
        let d = DescribeDtsJobDetailParams::from(&ResetDtsJobParams {
            dts_instance_id: Some("dtsi".into()),
            ..p.clone()
        })
        .to_rpc();
        assert_eq!(d.action, "DescribeDtsJobDetail");
        assert_eq!(
            d.params.keys().collect::<Vec<_>>(),
            vec!["DtsInstanceID", "DtsJobId", "RegionId"],
            "capital ID in this action"
        );
        assert_eq!(r.version, "2020-01-01");
        assert_eq!(
            r.params.keys().collect::<Vec<_>>(),
            vec!["DtsJobId", "RegionId"]
        );
    }

    #[test]
    fn job_detail_from_the_answer() {
        let configured = br#"{"RequestId":"r","Success":true,"HttpStatusCode":200,"DtsJobId":"j","DtsInstanceID":"i","DtsJobName":"orders","Status":"synchronizing","CreateTime":"2026-01-01T00:00:00Z","DbObject":"[{\"DBName\":\"orders\"}]","SourceEndpoint":{"InstanceType":"RDS","EngineName":"MySQL"},"DestinationEndpoint":{"InstanceType":"RDS"}}"#;
        let d = JobDetail::from_body(configured).unwrap();
        assert_eq!(d.status.as_deref(), Some("synchronizing"));
        assert_eq!(d.dts_instance_id.as_deref(), Some("i"));
        assert_eq!(d.job_name.as_deref(), Some("orders"));
        assert!(d.configured);
        assert!(!d.is_not_configured());
        let reset = br#"{"RequestId":"r","Success":true,"DtsJobId":"j","Status":"NotConfigured","DbObject":"","SourceEndpoint":{},"DestinationEndpoint":{"InstanceType":""}}"#;
        let d = JobDetail::from_body(reset).unwrap();
        assert!(!d.configured);
        assert!(d.is_not_configured());
        assert!(JobDetail::from_body(b"<xml/>").is_none());
        let lower = JobDetail {
            status: Some("notconfigured".into()),
            ..Default::default()
        };
        assert!(lower.is_not_configured(), "case-insensitive");
    }

    #[test]
    fn job_id_validation() {
        assert!(validate_job_id("l3m1213ye7l****").is_ok());
        assert!(validate_job_id("").is_err());
        assert!(validate_job_id("a b").is_err());
        assert!(validate_job_id(&"x".repeat(65)).is_err());
        assert!(validate_job_id(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn json_success_from_the_api_reference() {
        let a = parse_answer(
            200,
            Some("application/json"),
            br#"{ "RequestId" : "01B6F25-21E7-4484-99D5-3EF2625C****", "HttpStatusCode" : 200, "Success" : true }"#,
        )
        .unwrap();
        assert_eq!(
            a.request_id.as_deref(),
            Some("01B6F25-21E7-4484-99D5-3EF2625C****")
        );
        assert_eq!(a.http_status_code, Some(200));
        assert_eq!(a.success, Some(true));
        assert_eq!(a.err_code, None);
    }

    #[test]
    fn xml_success_from_the_api_reference() {
        let a = parse_answer(
            200,
            Some("application/xml"),
            b"<ResetDtsJobResponse>\n<RequestId>01B6F25-21E7-4484-99D5-3EF2625C****</RequestId>\n<HttpStatusCode>200</HttpStatusCode>\n<Success>true</Success>\n</ResetDtsJobResponse>",
        )
        .unwrap();
        assert_eq!(a.success, Some(true));
        assert_eq!(a.http_status_code, Some(200));
        assert_eq!(
            a.request_id.as_deref(),
            Some("01B6F25-21E7-4484-99D5-3EF2625C****")
        );
    }

    #[test]
    fn dts_error_body_with_template() {
        let a = parse_answer(
            400,
            None,
            br#"{"RequestId":"r","HttpStatusCode":400,"Success":false,"ErrCode":"InvalidParameter","ErrMessage":"The Value of Input Parameter %s is not valid.","DynamicMessage":"DtsJobId","DynamicCode":"403"}"#,
        )
        .unwrap();
        assert_eq!(a.err_code.as_deref(), Some("InvalidParameter"));
        assert_eq!(a.dynamic_code.as_deref(), Some("403"));
        assert_eq!(
            a.err_message.as_deref(),
            Some("The Value of Input Parameter %s is not valid.")
        );
        assert_eq!(
            a.rendered_message().as_deref(),
            Some("The Value of Input Parameter DtsJobId is not valid.")
        );
    }

    #[test]
    fn gateway_error_json_and_xml() {
        let a = parse_answer(
            400,
            Some("application/json"),
            br#"{"RequestId":"r","HostId":"dts.aliyuncs.com","Code":"Throttling.User","Message":"Request was denied due to user flow control.","Recommend":"https://x"}"#,
        )
        .unwrap();
        assert_eq!(a.err_code.as_deref(), Some("Throttling.User"));
        assert_eq!(a.http_status_code, Some(400));
        assert_eq!(a.success, None);
        let x = parse_answer(
            404,
            Some("text/xml"),
            b"<?xml version='1.0' encoding='UTF-8'?><Error><RequestId>r</RequestId><HostId>h</HostId><Code>InvalidAccessKeyId.NotFound</Code><Message>Specified access key &amp; &#x41; is not found.</Message></Error>",
        )
        .unwrap();
        assert_eq!(x.err_code.as_deref(), Some("InvalidAccessKeyId.NotFound"));
        assert_eq!(x.http_status_code, Some(404));
        assert_eq!(
            x.err_message.as_deref(),
            Some("Specified access key & A is not found.")
        );
    }

    #[test]
    fn string_typed_fields_are_accepted() {
        let a = parse_answer(
            200,
            None,
            br#"{"RequestId":"r","HttpStatusCode":"200","Success":"true"}"#,
        )
        .unwrap();
        assert_eq!(a.success, Some(true));
        assert_eq!(a.http_status_code, Some(200));
    }

    #[test]
    fn garbage_is_unparseable_never_guessed() {
        for body in [
            &b""[..],
            b"garbage",
            b"{not json",
            b"[1,2]",
            b"{}",
            b"{\"foo\":1}",
            b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
            b"<html><body>502</body></html>",
            b"<ResetDtsJobResponse><RequestId>r",
            b"\xff\xfe",
        ] {
            let e = parse_answer(200, Some("text/html"), body).unwrap_err();
            assert_eq!(e.http_status, 200);
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn render_message_variants() {
        assert_eq!(render_message("a %s b", Some("X")), "a X b");
        assert_eq!(render_message("a %s b", None), "a %s b");
        assert_eq!(render_message("a %s b", Some("")), "a %s b");
        assert_eq!(render_message("plain", Some("X")), "plain");
    }
}
