//! The reads of a job: its state just before a claim (`status.jobBefore`), and the checks of an
//! uncertain outcome against it, every `--verify-interval` for up to `--verify-window`
//! ([`check`]). Reads go through their own token bucket, so they never slow resets, and never
//! send `ResetDtsJob`. The decision is [`super::verify`]'s; this module does the I/O around it.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::resolve::{ResolvedCredentials, endpoint_for_resource, resolve_credentials};
use super::status::{self, write_status};
use super::verify::{self, JobRead};
use super::{Context, Error, events};
use crate::aliyun::client::{DescribeCall, ReadOutcome};
use crate::aliyun::dts::{DESCRIBE_ACTION, DescribeDtsJobDetailParams, ResetDtsJobParams};
use crate::aliyun::endpoint::Endpoint;
use crate::aliyun::error::{classify, metric_code};
use crate::aliyun::signer::SigningContext;
use crate::crd::{
    DtsJobReset, DtsJobResetStatus, JobSnapshot, RequestRecord, VerificationState, event_reason,
};
use crate::metrics::{ActionLabels, RequestLabels, VerificationLabels};

/// One read of the job `request` names, through the read bucket, counted in the metrics.
pub async fn read_job(
    ctx: &Context,
    request: &RequestRecord,
    endpoint: Endpoint,
    credentials: &ResolvedCredentials,
    signature_version: crate::aliyun::signer::SignatureVersion,
) -> ReadOutcome {
    ctx.read_bucket.acquire().await;
    let call = DescribeCall {
        endpoint,
        params: DescribeDtsJobDetailParams::from(&ResetDtsJobParams::from(request)),
        credentials: credentials.credentials.clone(),
        signature_version,
        context: SigningContext::fresh(),
    };
    let started = std::time::Instant::now();
    let read = ctx.dts.describe_dts_job_detail(&call).await;
    ctx.metrics
        .dts_request_duration
        .get_or_create(&ActionLabels {
            action: DESCRIBE_ACTION,
        })
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .dts_requests
        .get_or_create(&RequestLabels {
            action: DESCRIBE_ACTION,
            outcome: classify(&read.outcome).metric_outcome(),
            code: metric_code(&read.outcome),
        })
        .inc();
    read
}

/// The job just before a claim, for verification: `None` when verification is off or the read
/// failed — which never blocks the reset.
pub async fn pre_image(
    ctx: &Context,
    obj: &DtsJobReset,
    request: &RequestRecord,
    endpoint: &Endpoint,
    credentials: &ResolvedCredentials,
) -> Option<JobSnapshot> {
    if !ctx.config.verify.enabled() {
        return None;
    }
    let read = read_job(
        ctx,
        request,
        endpoint.clone(),
        credentials,
        obj.spec.signature_version.unwrap_or_default(),
    )
    .await;
    match JobRead::from_outcome(&read) {
        JobRead::Job(job) => Some(verify::snapshot(&job, Timestamp::now())),
        other => {
            tracing::info!(read = ?other, "the job could not be read before the claim; verification will be unavailable for this attempt");
            None
        }
    }
}

/// Counts a verification that began Unavailable (nothing to compare with).
pub fn count_begun(ctx: &Context, s: &DtsJobResetStatus) {
    if s.verification.as_ref().map(|v| v.state) == Some(VerificationState::Unavailable) {
        ctx.metrics
            .verifications
            .get_or_create(&VerificationLabels {
                result: "unavailable",
            })
            .inc();
    }
}

/// One check of an uncertain outcome: read the job, conclude or keep verifying, write status,
/// and publish what was concluded.
pub async fn check(
    ctx: &Context,
    api: &Api<DtsJobReset>,
    obj: &DtsJobReset,
    st: &DtsJobResetStatus,
) -> Result<Action, Error> {
    let Some(v) = st.verification.clone() else {
        return Ok(Action::await_change());
    };
    let read = match (st.request.as_ref(), read_inputs(ctx, obj, st).await) {
        (Some(request), Ok((endpoint, credentials))) => JobRead::from_outcome(
            &read_job(
                ctx,
                request,
                endpoint,
                &credentials,
                obj.spec.signature_version.unwrap_or_default(),
            )
            .await,
        ),
        (None, _) => JobRead::NoAnswer("no request recorded".into()),
        (_, Err(why)) => JobRead::NoAnswer(why),
    };
    let now = Timestamp::now();
    let since = st
        .completion_time
        .as_ref()
        .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
        .unwrap_or(Duration::ZERO);
    let policy = ctx.config.verify;
    let next = verify::next(&v, st.job_before.as_ref(), &read, since, &policy, now);
    let state = next.state;
    let s = status::verified(st, next, obj.meta().generation, now);
    let stored = write_status(api, obj, s).await?;
    let (result, event) = match state {
        VerificationState::Verifying => return Ok(Action::requeue(policy.interval)),
        VerificationState::Verified => ("verified", event_reason::RESET_VERIFIED),
        VerificationState::NoEffectObserved => ("no_effect", event_reason::OUTCOME_UNKNOWN),
        VerificationState::Unavailable => ("unavailable", event_reason::OUTCOME_UNKNOWN),
    };
    ctx.metrics
        .verifications
        .get_or_create(&VerificationLabels { result })
        .inc();
    let st = stored.status.clone().unwrap_or_default();
    let (type_, condition) = if state == VerificationState::Verified {
        (EventType::Normal, crate::crd::condition::READY)
    } else {
        (EventType::Warning, crate::crd::condition::STALLED)
    };
    let note = events::condition_message(&st, condition).unwrap_or_default();
    events::publish(&ctx.recorder, &stored, type_, event, note).await;
    Ok(Action::await_change())
}

/// The endpoint and credentials of a read, or why there are none now.
async fn read_inputs(
    ctx: &Context,
    obj: &DtsJobReset,
    st: &DtsJobResetStatus,
) -> Result<(Endpoint, ResolvedCredentials), String> {
    let region = st
        .request
        .as_ref()
        .map(|r| r.region_id.clone())
        .unwrap_or_default();
    let endpoint = endpoint_for_resource(
        obj,
        &region,
        ctx.config.dts_endpoint.as_ref(),
        &ctx.config.allowlist,
    )?;
    let ns = obj.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let credentials = resolve_credentials(
        &secrets,
        obj,
        &ns,
        ctx.default_credentials.as_ref(),
        &ctx.config.default_scope,
    )
    .await
    .map_err(|p| p.message())?;
    Ok((endpoint, credentials))
}

#[cfg(test)]
mod tests {
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::controller::fixtures::*;
    use crate::crd::{Phase, Verification};

    fn verifying(job_status: Option<&str>) -> DtsJobResetStatus {
        let now = Timestamp::now();
        let request = crate::crd::RequestIdentity {
            dts_job_id: "j".into(),
            ..Default::default()
        }
        .resolve("cn-hangzhou");
        DtsJobResetStatus {
            phase: Some(Phase::Unknown),
            request: Some(request),
            attempts: Some(1),
            completion_time: Some(Time(now)),
            job_before: Some(JobSnapshot {
                status: Some("Synchronizing".into()),
                configured: Some(true),
                ..Default::default()
            }),
            verification: Some(Verification {
                state: VerificationState::Verifying,
                reason: None,
                checks: Some(1),
                last_check_time: None,
                job_status: job_status.map(str::to_string),
            }),
            ..Default::default()
        }
    }

    /// One check: the Secret, one read (never a reset), one conditional status write — here the
    /// second NotConfigured read in a row: Succeeded by ResetVerified, and its Normal event.
    #[tokio::test]
    async fn a_second_not_configured_read_verifies_and_sends_nothing() {
        let (client, mut apiserver) = api_server();
        let dts = ScriptedDts::answering_reads([], [job_read("NotConfigured")]);
        let ctx = context(client.clone(), dts.clone());
        let st = verifying(Some("NotConfigured"));
        let obj = resource("r", "j", "70", Some(st.clone()));
        let run = tokio::spawn(async move {
            let api: Api<DtsJobReset> = Api::namespaced(client, NS);
            check(&ctx, &api, &obj, &st).await
        });
        let get = apiserver.answer(200, secret()).await;
        assert_eq!(get.path, "/api/v1/namespaces/ns/secrets/creds");
        let write = apiserver.store("71").await;
        assert_eq!(
            (write.method, write.path.as_str()),
            (Method::PUT, status_path("r").as_str())
        );
        assert_eq!(write.body["metadata"]["resourceVersion"], "70");
        assert_eq!(write.body["status"]["phase"], "Succeeded");
        assert_eq!(write.body["status"]["verification"]["state"], "Verified");
        assert_eq!(write.body["status"]["verification"]["checks"], 2);
        let ready = write.body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(
            (ready["status"].clone(), ready["reason"].clone()),
            (json!("True"), json!("ResetVerified"))
        );
        let event = apiserver.answer(201, json!({})).await;
        assert_eq!(event.body["reason"], "ResetVerified");
        assert_eq!(event.body["type"], "Normal");
        assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
        assert_eq!(
            (dts.calls(), dts.read_calls()),
            (0, 1),
            "a check reads, never resets"
        );
        apiserver.finished().await;
    }

    /// A first NotConfigured read is not proof yet: still Verifying, no event, read again after
    /// the interval.
    #[tokio::test]
    async fn one_read_is_not_enough() {
        let (client, mut apiserver) = api_server();
        let dts = ScriptedDts::answering_reads([], [job_read("NotConfigured")]);
        let ctx = context(client.clone(), dts.clone());
        let st = verifying(Some("Synchronizing"));
        let obj = resource("r", "j", "70", Some(st.clone()));
        let run = tokio::spawn(async move {
            let api: Api<DtsJobReset> = Api::namespaced(client, NS);
            check(&ctx, &api, &obj, &st).await
        });
        apiserver.answer(200, secret()).await;
        let write = apiserver.store("71").await;
        assert_eq!(write.body["status"]["phase"], "Unknown");
        assert_eq!(write.body["status"]["verification"]["state"], "Verifying");
        assert_eq!(
            write.body["status"]["verification"]["jobStatus"],
            "NotConfigured"
        );
        assert_eq!(
            run.await.unwrap().unwrap(),
            Action::requeue(std::time::Duration::from_secs(10))
        );
        apiserver.finished().await;
    }
}
