//! Scripted answers and the exact bodies the gateway and DTS send.
//!
//! Owns: the [`Answer`] enum (what a scripted ResetDtsJob does), its JSON form for script files,
//! and rendering of the DTS answer body (`ResetDtsJobResponse`), the gateway error body (`Error`)
//! in JSON or XML. Pure: no I/O.

use serde::{Deserialize, Serialize};

use crate::verify::Format;

/// What the simulated ResetDtsJob does with one executed request. `Success` and `Hang` reset the
/// job (see [`crate::jobs`]); error answers, `Raw` and `Drop` do not unless wrapped in
/// [`Answer::Executed`]. For reads (`DescribeDtsJobDetail`), `Success` answers the job's state.
///
/// JSON form (script files, `POST /_simulator/script`): internally tagged by `kind`, fields in
/// snake_case (camelCase accepted too), e.g. `{"kind":"success"}`,
/// `{"kind":"gateway_error","http_status":400,"code":"Throttling.User","message":"..."}`,
/// `{"kind":"gate","name":"g1","then":{"kind":"success"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// HTTP 200, `{"RequestId":..,"HttpStatusCode":200,"Success":true}`.
    #[default]
    Success,
    /// A DTS business failure: `Success:false` with `ErrCode`, `ErrMessage`, … at `http_status`
    /// (default 200 — DTS often reports failures with HTTP 200).
    #[serde(alias = "dtsError")]
    DtsError {
        /// HTTP status of the answer.
        #[serde(default = "default_200", alias = "httpStatus")]
        http_status: u16,
        /// `ErrCode`.
        #[serde(alias = "errCode")]
        err_code: String,
        /// `ErrMessage` (may contain `%s`).
        #[serde(default, alias = "errMessage")]
        err_message: String,
        /// `DynamicMessage` (fills `%s`).
        #[serde(
            default,
            alias = "dynamicMessage",
            skip_serializing_if = "Option::is_none"
        )]
        dynamic_message: Option<String>,
        /// `DynamicCode`.
        #[serde(
            default,
            alias = "dynamicCode",
            skip_serializing_if = "Option::is_none"
        )]
        dynamic_code: Option<String>,
    },
    /// A gateway error body (`Code`, `Message`, …), optionally with retry hints:
    /// `x-acs-retry-after` (milliseconds) and `Retry-After` (seconds).
    #[serde(alias = "gatewayError")]
    GatewayError {
        /// HTTP status of the answer.
        #[serde(alias = "httpStatus")]
        http_status: u16,
        /// `Code`.
        code: String,
        /// `Message`.
        #[serde(default)]
        message: String,
        /// `x-acs-retry-after` header, milliseconds.
        #[serde(
            default,
            alias = "retryAfterMs",
            skip_serializing_if = "Option::is_none"
        )]
        retry_after_ms: Option<u64>,
        /// `Retry-After` header, seconds.
        #[serde(
            default,
            alias = "retryAfterSecs",
            skip_serializing_if = "Option::is_none"
        )]
        retry_after_secs: Option<u64>,
    },
    /// Exactly this status, content type and body (an HTML 502 page, garbage with 200, …).
    Raw {
        /// HTTP status of the answer.
        #[serde(alias = "httpStatus")]
        http_status: u16,
        /// `content-type` header.
        #[serde(default = "default_content_type", alias = "contentType")]
        content_type: String,
        /// Body, verbatim.
        #[serde(default)]
        body: String,
    },
    /// Wait `millis`, then answer success. The reset counts as executed.
    Hang {
        /// How long to wait.
        millis: u64,
    },
    /// Read the request, then close the connection without answering. Counts as executed.
    Drop,
    /// Hold the request until gate `name` is opened, then answer with `then` (default success).
    Gate {
        /// Gate name.
        name: String,
        /// Answer once the gate opens.
        #[serde(default = "default_then")]
        then: Box<Answer>,
    },
    /// Reset the job, then answer with `then` (a 500, a hang, a dropped connection: the reset
    /// happened, the answer says otherwise or nothing).
    Executed {
        /// The answer after the reset.
        then: Box<Answer>,
    },
    /// Answer with `then` without resetting the job, whatever `then` is.
    NotExecuted {
        /// The answer.
        then: Box<Answer>,
    },
}

fn default_200() -> u16 {
    200
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".to_owned()
}

fn default_then() -> Box<Answer> {
    Box::new(Answer::Success)
}

impl Answer {
    /// HTTP 400 `Throttling.User`, "Request was denied due to user flow control."
    pub fn throttling() -> Answer {
        Answer::gateway_error(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
        )
    }

    /// HTTP 503 `ServiceUnavailable`.
    pub fn service_unavailable() -> Answer {
        Answer::gateway_error(
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    }

    /// HTTP 500 `InternalError` (the reset may or may not have happened).
    pub fn internal_error() -> Answer {
        Answer::gateway_error(
            500,
            "InternalError",
            "The request processing has failed due to some unknown error, exception or failure.",
        )
    }

    /// Reset the job, then answer `then`.
    pub fn executed_then(then: Answer) -> Answer {
        Answer::Executed {
            then: Box::new(then),
        }
    }

    /// Answer `then` without resetting the job.
    pub fn not_executed_then(then: Answer) -> Answer {
        Answer::NotExecuted {
            then: Box::new(then),
        }
    }

    /// A gateway error without retry hints.
    pub fn gateway_error(http_status: u16, code: &str, message: &str) -> Answer {
        Answer::GatewayError {
            http_status,
            code: code.to_owned(),
            message: message.to_owned(),
            retry_after_ms: None,
            retry_after_secs: None,
        }
    }

    /// A DTS business error at HTTP 200 with `Success:false`.
    pub fn dts_error(err_code: &str, err_message: &str, dynamic_message: Option<&str>) -> Answer {
        Answer::DtsError {
            http_status: 200,
            err_code: err_code.to_owned(),
            err_message: err_message.to_owned(),
            dynamic_message: dynamic_message.map(str::to_owned),
            dynamic_code: None,
        }
    }

    /// A raw answer.
    pub fn raw(http_status: u16, content_type: &str, body: &str) -> Answer {
        Answer::Raw {
            http_status,
            content_type: content_type.to_owned(),
            body: body.to_owned(),
        }
    }

    /// Wait, then succeed.
    pub fn hang(duration: std::time::Duration) -> Answer {
        Answer::Hang {
            millis: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Hold at gate `name`, then answer `then`.
    pub fn gate(name: &str, then: Answer) -> Answer {
        Answer::Gate {
            name: name.to_owned(),
            then: Box::new(then),
        }
    }

    /// For a `GatewayError`: adds an `x-acs-retry-after` hint in milliseconds (no-op otherwise).
    pub fn with_retry_after_ms(mut self, ms: u64) -> Answer {
        if let Answer::GatewayError { retry_after_ms, .. } = &mut self {
            *retry_after_ms = Some(ms);
        }
        self
    }

    /// For a `GatewayError`: adds a `Retry-After` hint in seconds (no-op otherwise).
    pub fn with_retry_after_secs(mut self, secs: u64) -> Answer {
        if let Answer::GatewayError {
            retry_after_secs, ..
        } = &mut self
        {
            *retry_after_secs = Some(secs);
        }
        self
    }
}

/// A rendered HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Extra headers (besides `content-type`).
    pub headers: Vec<(String, String)>,
    /// `content-type`.
    pub content_type: String,
    /// Body.
    pub body: String,
}

const JSON_CT: &str = "application/json;charset=utf-8";
const XML_CT: &str = "text/xml;charset=utf-8";
const XML_DECL: &str = "<?xml version='1.0' encoding='UTF-8'?>";

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The `Recommend` link the gateway adds to errors.
pub fn recommend(code: &str, product: &str) -> String {
    format!("https://api.aliyun.com/troubleshoot?q={code}&product={product}")
}

/// The gateway error body `{"RequestId","HostId","Code","Message","Recommend"}` (or `<Error>`).
pub fn gateway_error(
    format: Format,
    status: u16,
    request_id: &str,
    host_id: &str,
    code: &str,
    message: &str,
    product: &str,
) -> HttpAnswer {
    let rec = recommend(code, product);
    let (content_type, body) = match format {
        Format::Json => (
            JSON_CT,
            serde_json::json!({
                "RequestId": request_id,
                "HostId": host_id,
                "Code": code,
                "Message": message,
                "Recommend": rec,
            })
            .to_string(),
        ),
        Format::Xml => (
            XML_CT,
            format!(
                "{XML_DECL}<Error><RequestId>{}</RequestId><HostId>{}</HostId><Code>{}</Code><Message>{}</Message><Recommend><![CDATA[{rec}]]></Recommend></Error>",
                xml_escape(request_id),
                xml_escape(host_id),
                xml_escape(code),
                xml_escape(message),
            ),
        ),
    };
    HttpAnswer {
        status,
        headers: vec![("x-acs-request-id".to_owned(), request_id.to_owned())],
        content_type: content_type.to_owned(),
        body,
    }
}

/// A DTS `ResetDtsJobResponse` body. `error` is `(ErrCode, ErrMessage, DynamicMessage,
/// DynamicCode)` for a failure, `None` for success.
pub fn dts_response(
    format: Format,
    status: u16,
    request_id: &str,
    error: Option<(&str, &str, Option<&str>, Option<&str>)>,
) -> HttpAnswer {
    let success = error.is_none();
    let (content_type, body) = match format {
        Format::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("RequestId".into(), request_id.into());
            obj.insert("HttpStatusCode".into(), status.into());
            obj.insert("Success".into(), success.into());
            if let Some((code, msg, dynamic_message, dynamic_code)) = error {
                obj.insert("ErrCode".into(), code.into());
                obj.insert("ErrMessage".into(), msg.into());
                if let Some(m) = dynamic_message {
                    obj.insert("DynamicMessage".into(), m.into());
                }
                if let Some(c) = dynamic_code {
                    obj.insert("DynamicCode".into(), c.into());
                }
            }
            (JSON_CT, serde_json::Value::Object(obj).to_string())
        }
        Format::Xml => {
            let mut body = format!(
                "{XML_DECL}<ResetDtsJobResponse><RequestId>{}</RequestId><HttpStatusCode>{status}</HttpStatusCode><Success>{success}</Success>",
                xml_escape(request_id)
            );
            if let Some((code, msg, dynamic_message, dynamic_code)) = error {
                body.push_str(&format!(
                    "<ErrCode>{}</ErrCode><ErrMessage>{}</ErrMessage>",
                    xml_escape(code),
                    xml_escape(msg)
                ));
                if let Some(m) = dynamic_message {
                    body.push_str(&format!(
                        "<DynamicMessage>{}</DynamicMessage>",
                        xml_escape(m)
                    ));
                }
                if let Some(c) = dynamic_code {
                    body.push_str(&format!("<DynamicCode>{}</DynamicCode>", xml_escape(c)));
                }
            }
            body.push_str("</ResetDtsJobResponse>");
            (XML_CT, body)
        }
    };
    HttpAnswer {
        status,
        headers: vec![("x-acs-request-id".to_owned(), request_id.to_owned())],
        content_type: content_type.to_owned(),
        body,
    }
}

/// A JSON or XML object body for other successful answers (STS): `root` is the XML element name.
pub fn object_response(
    format: Format,
    root: &str,
    request_id: &str,
    value: &serde_json::Value,
) -> HttpAnswer {
    fn to_xml(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push_str(&format!("<{k}>"));
                    to_xml(v, out);
                    out.push_str(&format!("</{k}>"));
                }
            }
            serde_json::Value::String(s) => out.push_str(&xml_escape(s)),
            other => out.push_str(&xml_escape(&other.to_string())),
        }
    }
    let (content_type, body) = match format {
        Format::Json => (JSON_CT, value.to_string()),
        Format::Xml => {
            let mut body = format!("{XML_DECL}<{root}>");
            to_xml(value, &mut body);
            body.push_str(&format!("</{root}>"));
            (XML_CT, body)
        }
    };
    HttpAnswer {
        status: 200,
        headers: vec![("x-acs-request-id".to_owned(), request_id.to_owned())],
        content_type: content_type.to_owned(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_deserialize_from_script_json() {
        let v: Vec<Answer> = serde_json::from_str(
            r#"[
              {"kind":"success"},
              {"kind":"dts_error","err_code":"InvalidParameter","err_message":"The Value of Input Parameter %s is not valid.","dynamic_message":"DtsJobId"},
              {"kind":"dtsError","httpStatus":403,"errCode":"Forbidden.RAM"},
              {"kind":"gateway_error","http_status":400,"code":"Throttling.User","message":"m","retry_after_ms":1500},
              {"kind":"raw","http_status":502,"content_type":"text/html","body":"<html>bad gateway</html>"},
              {"kind":"hang","millis":50},
              {"kind":"drop"},
              {"kind":"gate","name":"g"}
            ]"#,
        )
        .unwrap();
        assert_eq!(v[0], Answer::Success);
        assert_eq!(
            v[1],
            Answer::dts_error(
                "InvalidParameter",
                "The Value of Input Parameter %s is not valid.",
                Some("DtsJobId")
            )
        );
        assert!(matches!(
            v[2],
            Answer::DtsError {
                http_status: 403,
                ..
            }
        ));
        assert_eq!(
            v[3],
            Answer::gateway_error(400, "Throttling.User", "m").with_retry_after_ms(1500)
        );
        assert_eq!(v[6], Answer::Drop);
        assert_eq!(v[7], Answer::gate("g", Answer::Success));
        let round: Vec<Answer> = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(round, v);
        assert!(serde_json::from_str::<Answer>(r#"{"kind":"nope"}"#).is_err());
    }

    #[test]
    fn readme_script_example_parses() {
        let readme = include_str!("../README.md");
        let json = readme
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a json block in README.md");
        let script: std::collections::BTreeMap<String, Vec<Answer>> =
            serde_json::from_str(json).expect("README script parses");
        assert_eq!(script["l3m1213ye7l****"].len(), 8);
    }

    #[test]
    fn xml_bodies_escape() {
        let a = gateway_error(Format::Xml, 400, "R", "h", "C", "a&b<c>", "Dts");
        assert!(a.body.contains("<Message>a&amp;b&lt;c&gt;</Message>"));
        let d = dts_response(Format::Xml, 200, "R", None);
        assert!(d.body.ends_with(
            "<ResetDtsJobResponse><RequestId>R</RequestId><HttpStatusCode>200</HttpStatusCode><Success>true</Success></ResetDtsJobResponse>"
        ));
    }
}
