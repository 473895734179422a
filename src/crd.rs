//! The `DtsJobReset` custom resource (`dtsops.io/v1alpha1`): spec, status, and the public names
//! around it (annotation, field manager, phases, condition and event reasons).
//!
//! The `///` comments here become `kubectl explain` text; they are written for users. Validation
//! lives in the schema (types, enums, patterns, lengths) and in CEL rules, so the API server
//! refuses a bad resource and names the field.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aliyun::dts::ResetDtsJobParams;
pub use crate::aliyun::dts::SynchronizationDirection;
pub use crate::aliyun::signer::SignatureVersion;

/// Setting this annotation to a new value asks for a new reset with the same parameters.
pub const REQUESTED_AT_ANNOTATION: &str = "dtsops.io/requested-at";
/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "dts-operator";
/// The CRD's name.
pub const CRD_NAME: &str = "dtsjobresets.dtsops.io";

/// Reset a DTS data synchronization or change tracking task, once per request.
///
/// The operator calls Alibaba Cloud DTS `ResetDtsJob` for the job named in the spec and records
/// the answer in status. A request is the call parameters (dtsJobId, dtsInstanceId,
/// synchronizationDirection, regionId) plus the `dtsops.io/requested-at` annotation: change either
/// to ask for a new reset. ResetDtsJob is destructive (DTS deletes the task and recreates it
/// unconfigured), so the operator never sends it twice for one request.
// Several `printcolumn(type_ = "string")` entries look duplicated to clippy; they are columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "dtsops.io",
    version = "v1alpha1",
    kind = "DtsJobReset",
    plural = "dtsjobresets",
    singular = "dtsjobreset",
    shortname = "dtsreset",
    category = "dts",
    namespaced,
    status = "DtsJobResetStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "DtsJobReset resets an Alibaba Cloud DTS data synchronization or change tracking task (ResetDtsJob), at most once per request.",
    printcolumn(
        name = "Job ID",
        type_ = "string",
        json_path = ".spec.dtsJobId",
        description = "The DTS task (DtsJobId)"
    ),
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".status.request.regionId",
        description = "Region of the current request"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Retrying, Succeeded, Failed or Unknown"
    ),
    printcolumn(
        name = "Success",
        type_ = "boolean",
        json_path = ".status.success",
        description = "Success from the last answer"
    ),
    printcolumn(
        name = "Request ID",
        type_ = "string",
        json_path = ".status.requestId",
        description = "RequestId of the last answer"
    ),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts",
        description = "Calls sent for the current request"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DtsJobResetSpec {
    /// The ID of the data synchronization or change tracking task to reset (DtsJobId), e.g.
    /// `l3m1213ye7l****`. 1 to 64 characters, no whitespace.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^\S+$"))]
    pub dts_job_id: String,

    /// The ID of the DTS instance (DtsInstanceId), e.g. `dtsl3m1213ye7l****`. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^\S+$"))]
    pub dts_instance_id: Option<String>,

    /// The synchronization direction (SynchronizationDirection): `Forward` or `Reverse`.
    /// Optional; only two-way synchronization tasks have a reverse direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronization_direction: Option<SynchronizationDirection>,

    /// The region of the DTS instance (RegionId), e.g. `cn-hangzhou`. Optional; defaults to the
    /// operator's `--default-region`. Also selects the endpoint, as the official SDK does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 2, max = 64),
        regex(pattern = r"^[a-z]{2,}(-[a-z0-9]+)+$")
    )]
    pub region_id: Option<String>,

    /// The DTS endpoint, `https://host[:port]` (a bare host means https). Optional; the host must
    /// match the operator's `--endpoint-allowlist`. Plain `http://` is accepted only for
    /// localhost, 127.0.0.0/8 and [::1]. Changing it never causes a reset by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^(https?://)?[^/?#@ ]+/?$')").message("endpoint must be https://host[:port], a bare host, or http:// to a loopback address, without path, query or user info").reason(kube::core::Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("!self.startsWith('http://') || self.matches('^http://(localhost|127[.][0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}|\\\\[::1\\\\])(:[0-9]{1,5})?/?$')").message("plain http:// is only allowed for localhost, 127.0.0.0/8 and [::1]; use https://").reason(kube::core::Reason::FieldValueInvalid))]
    pub endpoint: Option<String>,

    /// Credentials to sign the call with. Optional; without it the operator's own credentials
    /// are used, if this namespace is allowed to use them (`--default-credentials-namespaces`).
    /// Changing it never causes a reset by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSource>,

    /// Signature version: `v3` (ACS3-HMAC-SHA256, the official SDKs' default) or `v1`
    /// (HMAC-SHA1). Optional, default `v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_version: Option<SignatureVersion>,

    /// Retries after the first attempt when DTS throttles or is unavailable (like a Job's
    /// backoffLimit). Optional, default 6. Errors that may have executed are never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: Option<i32>,

    /// Delete this resource that many seconds after it finished (Succeeded, Failed or
    /// Unknown), like a Job. Optional. Do not combine with GitOps prune/self-heal: the tool would
    /// re-create the resource and the job would be reset again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Where the call's credentials come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSource {
    /// A Secret in the same namespace as this resource, with keys `accessKeyId`,
    /// `accessKeySecret` and optionally `securityToken` (or `ALIBABA_CLOUD_ACCESS_KEY_ID`,
    /// `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, `ALIBABA_CLOUD_SECURITY_TOKEN`). Read at every attempt,
    /// so rotating it needs no restart.
    pub secret_ref: SecretReference,
}

/// A Secret in this resource's namespace (there is no way to name another namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Where the request is: Pending, Running, Retrying, Succeeded, Failed or Unknown.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Waiting to send (first attempt not yet claimed, or waiting for a Secret, a concurrent
    /// request, or permission to use credentials).
    Pending,
    /// An attempt is claimed and in flight.
    Running,
    /// Refused before execution (throttled, unavailable); the next attempt is scheduled at
    /// `nextAttemptTime`.
    Retrying,
    /// DTS reset the job.
    Succeeded,
    /// DTS refused the reset, or retries were exhausted.
    Failed,
    /// The call may or may not have executed. Never retried automatically: check the job in
    /// the DTS console, then set the `dtsops.io/requested-at` annotation to re-run if needed.
    Unknown,
}

impl Phase {
    /// The spelling in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Retrying => "Retrying",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }

    /// Every phase, for metrics.
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Running,
        Phase::Retrying,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Unknown,
    ];

    /// A finished request stays as it is until a new request.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Unknown)
    }
}

/// The request the status describes: what was (or is being) sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// DtsJobId sent.
    pub dts_job_id: String,
    /// DtsInstanceId sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dts_instance_id: Option<String>,
    /// SynchronizationDirection sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronization_direction: Option<String>,
    /// RegionId sent (after defaulting).
    pub region_id: String,
    /// True when regionId came from the operator's `--default-region` because the spec names
    /// none. Changing `--default-region` later never starts a new request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_defaulted: Option<bool>,
    /// The `dtsops.io/requested-at` annotation of this request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
}

/// What identifies a request: the call parameters as written in the spec (an absent regionId
/// stays absent) and the `dtsops.io/requested-at` annotation. A different identity is a new
/// request; nothing else is.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestIdentity {
    /// `spec.dtsJobId`.
    pub dts_job_id: String,
    /// `spec.dtsInstanceId` (an empty one counts as absent).
    pub dts_instance_id: Option<String>,
    /// `spec.synchronizationDirection`, in the API's spelling.
    pub synchronization_direction: Option<String>,
    /// `spec.regionId` as written (an empty one counts as absent).
    pub region_id: Option<String>,
    /// The annotation.
    pub requested_at: Option<String>,
}

impl RequestIdentity {
    /// The identity of `obj`'s request.
    pub fn of(obj: &DtsJobReset) -> RequestIdentity {
        use kube::ResourceExt;
        RequestIdentity {
            dts_job_id: obj.spec.dts_job_id.clone(),
            dts_instance_id: obj.spec.dts_instance_id.clone().filter(|s| !s.is_empty()),
            synchronization_direction: obj
                .spec
                .synchronization_direction
                .map(|d| d.as_str().to_string()),
            region_id: obj.spec.region_id.clone().filter(|r| !r.is_empty()),
            requested_at: obj.annotations().get(REQUESTED_AT_ANNOTATION).cloned(),
        }
    }

    /// The request to record and send for this identity, its region resolved now.
    pub fn resolve(&self, default_region: &str) -> RequestRecord {
        RequestRecord {
            dts_job_id: self.dts_job_id.clone(),
            dts_instance_id: self.dts_instance_id.clone(),
            synchronization_direction: self.synchronization_direction.clone(),
            region_id: self
                .region_id
                .clone()
                .unwrap_or_else(|| default_region.to_string()),
            region_defaulted: Some(self.region_id.is_none()),
            requested_at: self.requested_at.clone(),
        }
    }

    /// Whether `recorded` is this identity's request. The region is compared as written: a
    /// defaulted region matches an absent `spec.regionId`, whatever `--default-region` says now.
    /// A request recorded before the defaulting was recorded (no `regionDefaulted`) matches an
    /// absent `spec.regionId`, or the same one: an upgrade never starts a new request.
    pub fn matches(&self, recorded: &RequestRecord) -> bool {
        let region = match (self.region_id.as_deref(), recorded.region_defaulted) {
            (None, Some(true) | None) => true,
            (None, Some(false)) => false,
            (Some(_), Some(true)) => false,
            (Some(r), Some(false) | None) => r == recorded.region_id,
        };
        region
            && self.dts_job_id == recorded.dts_job_id
            && self.dts_instance_id == recorded.dts_instance_id
            && self.synchronization_direction == recorded.synchronization_direction
            && self.requested_at == recorded.requested_at
    }
}

impl From<&RequestRecord> for ResetDtsJobParams {
    /// The call a request sends: its parameters, with the region it was resolved to.
    fn from(r: &RequestRecord) -> Self {
        ResetDtsJobParams {
            dts_job_id: r.dts_job_id.clone(),
            dts_instance_id: r.dts_instance_id.clone(),
            synchronization_direction: r.synchronization_direction.clone(),
            region_id: Some(r.region_id.clone()),
        }
    }
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DtsJobResetStatus {
    /// Pending, Running, Retrying, Succeeded, Failed or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The current (or last) request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRecord>,
    /// The `dtsops.io/requested-at` value of the last request that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_request: Option<String>,
    /// Calls sent for the current request (a claim counts before the call goes out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// RequestId of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Success of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// HttpStatusCode of the last answer (from the body, else the HTTP status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status_code: Option<i64>,
    /// ErrCode (or the gateway's Code) of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err_code: Option<String>,
    /// ErrMessage of the last answer, as returned (may hold %s; conditions show it filled in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err_message: Option<String>,
    /// DynamicMessage of the last answer (fills %s in errMessage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_message: Option<String>,
    /// DynamicCode of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_code: Option<String>,
    /// When the current request started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the last attempt was claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// When the next attempt may be sent (backoff; durable across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// When the request finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Which controller instance holds the in-flight attempt (phase Running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// Until when the in-flight attempt may still be answered; a claim found after this time
    /// with no answer is reported as Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_deadline: Option<Time>,
    /// Whether this request already used its one credential refresh after
    /// InvalidSecurityToken.Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_refreshed: Option<bool>,
    /// The job as read (DescribeDtsJobDetail) just before the current request's last claim;
    /// absent if it could not be read. What verification compares with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_before: Option<JobSnapshot>,
    /// Only after an uncertain outcome: what the job's own state proved about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Ready, Reconciling and Stalled (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A DTS job's state as DescribeDtsJobDetail showed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSnapshot {
    /// Status (e.g. Synchronizing, NotConfigured; the API's case varies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// DtsJobName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// CreateTime, as DTS sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// Whether the job still had a source, destination or object configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured: Option<bool>,
    /// When it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_time: Option<Time>,
}

/// Where the verification of an uncertain outcome stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum VerificationState {
    /// The job is being read every `--verify-interval`.
    Verifying,
    /// The job's state proves the reset ran (it went to NotConfigured).
    Verified,
    /// The window passed with the job as before: the reset probably did not run.
    NoEffectObserved,
    /// Verification could not decide (no state from before, reads refused, the job was already
    /// NotConfigured, or not found).
    Unavailable,
}

/// What the job's own state proved about an uncertain outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Verifying, Verified, NoEffectObserved or Unavailable.
    pub state: VerificationState,
    /// Why it concluded so (or cannot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Reads made so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<i32>,
    /// When the job was last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// The job's status at the last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<String>,
}

/// Condition types.
pub mod condition {
    /// True when the reset succeeded.
    pub const READY: &str = "Ready";
    /// True while pending, running or retrying.
    pub const RECONCILING: &str = "Reconciling";
    /// True when a human is needed.
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons (stable, CamelCase).
pub mod reason {
    /// The reset succeeded.
    pub const RESET_SUCCEEDED: &str = "ResetSucceeded";
    /// Waiting to send.
    pub const PENDING: &str = "Pending";
    /// An attempt is in flight.
    pub const RUNNING: &str = "Running";
    /// DTS throttled the call; retrying.
    pub const THROTTLED: &str = "Throttled";
    /// DTS was unavailable (or the connection failed before sending); retrying.
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
    /// The named Secret does not exist yet.
    pub const WAITING_FOR_SECRET: &str = "WaitingForSecret";
    /// Another resource's call for the same job is in flight.
    pub const CONCURRENT_REQUEST: &str = "ConcurrentRequest";
    /// DTS refused the reset.
    pub const RESET_FAILED: &str = "ResetFailed";
    /// Every allowed attempt was refused.
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    /// The call may have executed.
    pub const OUTCOME_UNKNOWN: &str = "OutcomeUnknown";
    /// An uncertain outcome is being checked against the job's state.
    pub const VERIFYING_OUTCOME: &str = "VerifyingOutcome";
    /// The answer was lost, but the job's state proves the reset ran.
    pub const RESET_VERIFIED: &str = "ResetVerified";
    /// The spec cannot be acted on.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// No credentials this resource may use.
    pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
}

/// Event reasons.
pub mod event_reason {
    /// A reset was sent (Normal).
    pub const RESET_REQUESTED: &str = "ResetRequested";
    /// DTS reset the job (Normal).
    pub const RESET_SUCCEEDED: &str = "ResetSucceeded";
    /// Refused before execution, retrying (Warning).
    pub const RESET_RETRYING: &str = "ResetRetrying";
    /// Failed (Warning).
    pub const RESET_FAILED: &str = "ResetFailed";
    /// The call may have executed (Warning).
    pub const OUTCOME_UNKNOWN: &str = "OutcomeUnknown";
    /// The job's state proves an uncertain call reset it (Normal).
    pub const RESET_VERIFIED: &str = "ResetVerified";
    /// No credentials this resource may use (Warning).
    pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
}

/// The CustomResourceDefinition, with every description unwrapped: `kubectl explain` wraps text
/// to the terminal itself, so the source line breaks of the `///` comments would break lines
/// twice.
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(DtsJobReset::crd()).expect("the CRD serializes");
    unwrap_descriptions(&mut value);
    serde_json::from_value(value).expect("the CRD deserializes")
}

/// The CRD as YAML, exactly what `dts-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> String {
    serde_saphyr::to_string(&crd()).expect("the CRD serializes")
}

fn unwrap_descriptions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(text) if k == "description" => {
                        *text = unwrap_paragraphs(text);
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// One line per paragraph: lines of a paragraph are joined with a space; blank lines stay, and
/// so does the line break before a list item (`- `, `* `, `1. `).
pub fn unwrap_paragraphs(text: &str) -> String {
    fn is_item(line: &str) -> bool {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        line.starts_with("- ")
            || line.starts_with("* ")
            || (digits > 0 && line[digits..].starts_with(". "))
    }
    text.split("\n\n")
        .map(|paragraph| {
            let mut out = String::new();
            for line in paragraph.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !out.is_empty() {
                    out.push(if is_item(line) { '\n' } else { ' ' });
                }
                out.push_str(line);
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_are_unwrapped_lists_and_blank_lines_kept() {
        assert_eq!(
            unwrap_paragraphs("One\ntwo three.\n\nFour\n  five:\n- a\n  b\n- c\n1. d\n12. e"),
            "One two three.\n\nFour five:\n- a b\n- c\n1. d\n12. e"
        );
        assert_eq!(unwrap_paragraphs("single line"), "single line");
        assert_eq!(
            unwrap_paragraphs("3.5 is not an item\nhere"),
            "3.5 is not an item here"
        );
    }

    #[test]
    fn every_description_is_one_line_per_paragraph() {
        let crd = serde_json::to_value(crd()).unwrap();
        fn walk(v: &serde_json::Value, seen: &mut usize) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, c) in m {
                        if let (true, Some(text)) = (k == "description", c.as_str()) {
                            *seen += 1;
                            for para in text.split("\n\n") {
                                assert!(!para.contains('\n'), "wrapped paragraph: {para:?}");
                            }
                        } else {
                            walk(c, seen);
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|c| walk(c, seen)),
                _ => {}
            }
        }
        let mut seen = 0;
        walk(&crd, &mut seen);
        assert!(seen > 30, "descriptions checked: {seen}");
        // The spec's own description keeps its two paragraphs.
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["description"]
                .as_str()
                .unwrap()
                .matches("\n\n")
                .count(),
            1
        );
    }

    /// Statuses written by release 0.1.0 read into today's type unchanged.
    #[test]
    fn statuses_of_the_previous_release_parse() {
        for (name, text) in [
            (
                "succeeded",
                include_str!("../tests/fixtures/status-0.1.0/succeeded.json"),
            ),
            (
                "retrying",
                include_str!("../tests/fixtures/status-0.1.0/retrying.json"),
            ),
            (
                "claimed",
                include_str!("../tests/fixtures/status-0.1.0/claimed.json"),
            ),
        ] {
            let raw: serde_json::Value = serde_json::from_str(text).unwrap();
            let parsed: DtsJobResetStatus = serde_json::from_value(raw.clone()).unwrap();
            let request = parsed.request.as_ref().expect(name);
            assert_eq!(request.region_defaulted, None, "{name}");
            assert_eq!(
                serde_json::to_value(&parsed).unwrap(),
                raw,
                "{name} round-trips"
            );
        }
    }

    #[test]
    fn crd_names_and_columns() {
        let crd = crd();
        assert_eq!(crd.metadata.name.as_deref(), Some(CRD_NAME));
        let names = &crd.spec.names;
        assert_eq!(names.kind, "DtsJobReset");
        assert_eq!(names.plural, "dtsjobresets");
        assert_eq!(
            names.short_names.as_deref(),
            Some(&["dtsreset".to_string()][..])
        );
        assert_eq!(names.categories.as_deref(), Some(&["dts".to_string()][..]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Job ID",
                "Region",
                "Phase",
                "Success",
                "Request ID",
                "Attempts",
                "Age"
            ]
        );
    }

    #[test]
    fn schema_carries_validation() {
        let yaml = crd_yaml();
        for needle in [
            "maxLength: 64",
            "pattern: ^\\S+$",
            "- Forward",
            "- Reverse",
            "- v1",
            "- v3",
            "x-kubernetes-validations",
            "required:",
            "dtsJobId",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle:?}");
        }
    }
}
