//! Prometheus metrics, registered in one place with their public names
//! (`dts_operator_*`). Labels are bounded: outcome and code come from fixed sets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::crd::Phase;

/// Labels of `dts_operator_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
    /// The error's stable category (`crate::controller::Error::category`); empty for `ok`.
    pub category: &'static str,
}

/// Labels of `dts_operator_dts_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// API action (`ResetDtsJob`).
    pub action: &'static str,
    /// `succeeded` | `failed` | `retryable` | `unknown`.
    pub outcome: &'static str,
    /// Known ErrCode/Code, `other`, or empty for success.
    pub code: String,
}

/// `action` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// API action.
    pub action: &'static str,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Retry reason (`Throttled`, `ServiceUnavailable`, `ConnectionFailed`, `CredentialsExpired`).
    pub reason: &'static str,
}

/// `result` label of `dts_operator_verifications_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerificationLabels {
    /// `verified`, `no_effect` or `unavailable`.
    pub result: &'static str,
}

/// `phase` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Phase name.
    pub phase: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    /// `dts_operator_reconciles_total{result,category}`.
    pub reconciles: Family<ResultLabels, Counter>,
    /// `dts_operator_dts_requests_total{action,outcome,code}`.
    pub dts_requests: Family<RequestLabels, Counter>,
    /// `dts_operator_dts_request_duration_seconds{action}`.
    pub dts_request_duration: Family<ActionLabels, Histogram, fn() -> Histogram>,
    /// `dts_operator_retries_total{reason}`.
    pub retries: Family<ReasonLabels, Counter>,
    /// `dts_operator_resources{phase}`.
    pub resources: Family<PhaseLabels, Gauge>,
    /// `dts_operator_leader`.
    pub leader: Gauge,
    /// `dts_operator_verifications_total{result}`.
    pub verifications: Family<VerificationLabels, Counter>,
    /// `dts_operator_dts_rate_limit`: ResetDtsJob calls per second the limiter permits now.
    pub dts_rate_limit: crate::ratelimit::RateGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers everything under the `dts_operator` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dts_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result and error category",
            reconciles.clone(),
        );
        let dts_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "dts_requests",
            "DTS API calls by action, outcome and error code",
            dts_requests.clone(),
        );
        let dts_request_duration =
            Family::<ActionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "dts_request_duration",
            "Duration of DTS API calls",
            Unit::Seconds,
            dts_request_duration.clone(),
        );
        let retries = Family::<ReasonLabels, Counter>::default();
        registry.register("retries", "Retries scheduled by reason", retries.clone());
        let resources = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "resources",
            "DtsJobReset resources by phase",
            resources.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "Whether this replica acts: 1 on the leader (or the only replica), else 0",
            leader.clone(),
        );
        let verifications = Family::<VerificationLabels, Counter>::default();
        registry.register(
            "verifications",
            "Uncertain outcomes concluded by reading the job, by result",
            verifications.clone(),
        );
        let dts_rate_limit = crate::ratelimit::RateGauge::default();
        registry.register(
            "dts_rate_limit",
            "ResetDtsJob calls per second the client-side limiter permits now (lowered by throttling when --dts-adaptive-rate; 0: unlimited)",
            dts_rate_limit.clone(),
        );
        for p in Phase::ALL {
            resources
                .get_or_create(&PhaseLabels { phase: p.as_str() })
                .set(0);
        }
        for result in ["verified", "no_effect", "unavailable"] {
            let _ = verifications.get_or_create(&VerificationLabels { result });
        }
        Metrics {
            registry,
            reconciles,
            dts_requests,
            dts_request_duration,
            retries,
            resources,
            leader,
            verifications,
            dts_rate_limit,
        }
    }

    /// Sets the per-phase gauge from counts (phases absent from `counts` are 0).
    pub fn set_phase_counts(&self, counts: &[(Phase, i64)]) {
        for p in Phase::ALL {
            let n = counts
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, n)| *n)
                .sum();
            self.resources
                .get_or_create(&PhaseLabels { phase: p.as_str() })
                .set(n);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_names() {
        let m = Metrics::new();
        m.reconciles
            .get_or_create(&ResultLabels {
                result: "ok",
                category: "",
            })
            .inc();
        m.reconciles
            .get_or_create(&ResultLabels {
                result: "error",
                category: "conflict",
            })
            .inc();
        m.dts_requests
            .get_or_create(&RequestLabels {
                action: "ResetDtsJob",
                outcome: "succeeded",
                code: String::new(),
            })
            .inc();
        m.dts_request_duration
            .get_or_create(&ActionLabels {
                action: "ResetDtsJob",
            })
            .observe(0.2);
        m.retries
            .get_or_create(&ReasonLabels {
                reason: "Throttled",
            })
            .inc();
        m.leader.set(1);
        m.dts_rate_limit.set(12.5);
        m.set_phase_counts(&[(Phase::Succeeded, 2)]);
        let text = m.encode();
        for needle in [
            "dts_operator_reconciles_total{result=\"ok\",category=\"\"} 1",
            "dts_operator_reconciles_total{result=\"error\",category=\"conflict\"} 1",
            "dts_operator_dts_requests_total{action=\"ResetDtsJob\",outcome=\"succeeded\",code=\"\"} 1",
            "dts_operator_dts_request_duration_seconds_bucket{",
            "dts_operator_retries_total{reason=\"Throttled\"} 1",
            "dts_operator_resources{phase=\"Succeeded\"} 2",
            "dts_operator_resources{phase=\"Pending\"} 0",
            "dts_operator_leader 1",
            "# TYPE dts_operator_dts_rate_limit gauge",
            "dts_operator_dts_rate_limit 12.5",
            "dts_operator_verifications_total{result=\"no_effect\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
    }
}
