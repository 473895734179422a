//! Events (`events.k8s.io/v1`) and the outcome metrics of an answered attempt: what is published
//! after the status says it. Publishing never fails a reconcile: a lost event is logged.

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::aliyun::dts::ACTION;
use crate::aliyun::error::{AttemptOutcome, classify, metric_code};
use crate::crd::{DtsJobReset, DtsJobResetStatus, VerificationState, condition, event_reason};
use crate::metrics::{ActionLabels, Metrics, ReasonLabels, RequestLabels};
use crate::retry::{Final, NextStep};

/// Publishes events as this controller instance, each a new Event.
///
/// kube-runtime's `Recorder` keeps every Event it sent for six minutes, to patch a repeat (same
/// reason, note and object reference) into a series; that cache grows with the number of
/// requests finished in those minutes (about 2 KiB per Event, two Events per request). Our Events
/// never repeat that way: their object reference carries the `resourceVersion` of the status
/// they describe, which each status write changes. So every Event goes through a Recorder of its
/// own, created and dropped with it, and nothing is kept between Events.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
}

impl Publisher {
    /// Events reported as `reporter`, through `client`.
    pub fn new(client: Client, reporter: Reporter) -> Publisher {
        Publisher { client, reporter }
    }

    fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }
}

/// Publishes one event about `obj`.
pub async fn publish(
    publisher: &Publisher,
    obj: &DtsJobReset,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reset".to_string(),
        secondary: None,
    };
    let recorder = publisher.recorder();
    if let Err(e) = crate::kubeapi::bounded(recorder.publish(&ev, &obj.object_ref(&()))).await {
        tracing::warn!(error = %e, reason, "could not publish event");
    }
}

/// The message of condition `type_` in `status`, if set.
pub fn condition_message(status: &DtsJobResetStatus, type_: &str) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
}

/// Counts a call whose answer was recorded: `dts_operator_dts_requests_total` and its duration.
pub fn count_call(metrics: &Metrics, outcome: &AttemptOutcome, elapsed: std::time::Duration) {
    metrics
        .dts_request_duration
        .get_or_create(&ActionLabels { action: ACTION })
        .observe(elapsed.as_secs_f64());
    metrics
        .dts_requests
        .get_or_create(&RequestLabels {
            action: ACTION,
            outcome: classify(outcome).metric_outcome(),
            code: metric_code(outcome),
        })
        .inc();
}

/// The event for an answered attempt, as recorded in `obj`'s status (the message of the
/// condition the answer set), and the retry counter for a scheduled retry.
pub async fn publish_outcome(
    publisher: &Publisher,
    metrics: &Metrics,
    obj: &DtsJobReset,
    outcome: &AttemptOutcome,
    step: &NextStep,
) {
    let st = obj.status.clone().unwrap_or_default();
    let message = |t: &str| condition_message(&st, t).unwrap_or_else(|| outcome.describe());
    let (type_, reason, note) = match step {
        NextStep::Finish(Final::Succeeded) => (
            EventType::Normal,
            event_reason::RESET_SUCCEEDED,
            message(condition::READY),
        ),
        NextStep::Finish(Final::Failed | Final::RetriesExhausted) => (
            EventType::Warning,
            event_reason::RESET_FAILED,
            message(condition::STALLED),
        ),
        // While the job's state is being checked there is nothing to tell yet.
        NextStep::Finish(Final::Unknown)
            if st.verification.as_ref().map(|v| v.state) == Some(VerificationState::Verifying) =>
        {
            return;
        }
        NextStep::Finish(Final::Unknown) => (
            EventType::Warning,
            event_reason::OUTCOME_UNKNOWN,
            message(condition::STALLED),
        ),
        NextStep::RetryAfter { reason: r, .. } => {
            metrics
                .retries
                .get_or_create(&ReasonLabels { reason: r.as_str() })
                .inc();
            // One note for every retry of a request (status.attempts counts them): no attempt
            // number or time.
            (
                EventType::Warning,
                event_reason::RESET_RETRYING,
                format!(
                    "Refused before execution ({}); retrying with backoff, see status.nextAttemptTime",
                    outcome.describe()
                ),
            )
        }
        NextStep::RefreshCredentials => {
            metrics
                .retries
                .get_or_create(&ReasonLabels {
                    reason: "CredentialsExpired",
                })
                .inc();
            (
                EventType::Warning,
                event_reason::RESET_RETRYING,
                message(condition::RECONCILING),
            )
        }
    };
    publish(publisher, obj, type_, reason, note).await;
}
