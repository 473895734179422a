//! The simulated DTS jobs: a status and a configuration each. A `ResetDtsJob` that executes
//! moves the job to `NotConfigured` and clears its configuration — at once, or after a scripted
//! delay, as a real asynchronous reset might — and `DescribeDtsJobDetail` shows the state.
//!
//! A job nobody registered exists as `Synchronizing` and configured, so tests that never think
//! about jobs see a plausible one. Pure data; the clock is passed in.

use std::time::Duration;

/// A job's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// `Status`, e.g. `Synchronizing`, `NotConfigured`.
    pub status: String,
    /// Whether it has a source, destination and objects.
    pub configured: bool,
    /// `DtsJobName`.
    pub name: String,
    /// `DtsInstanceID`.
    pub instance_id: String,
    /// `CreateTime`.
    pub create_time: jiff::Timestamp,
    /// A reset in progress: the job shows `NotConfigured` from this time on.
    pub reset_at: Option<jiff::Timestamp>,
}

impl Job {
    /// A running, configured job.
    pub fn synchronizing(id: &str, now: jiff::Timestamp) -> Job {
        Job {
            status: "Synchronizing".to_owned(),
            configured: true,
            name: format!("sim-{id}"),
            instance_id: format!("dts{id}"),
            create_time: now,
            reset_at: None,
        }
    }

    /// The job as seen at `now`: a reset whose time has come has taken effect.
    pub fn settle(&mut self, now: jiff::Timestamp) {
        if let Some(at) = self.reset_at
            && at <= now
        {
            self.status = "NotConfigured".to_owned();
            self.configured = false;
            self.reset_at = None;
        }
    }

    /// What an executed reset does: NotConfigured and unconfigured after `delay`.
    pub fn reset(&mut self, now: jiff::Timestamp, delay: Duration) {
        let delay = jiff::SignedDuration::try_from(delay).unwrap_or_default();
        self.reset_at = Some(now.checked_add(delay).unwrap_or(now));
        self.settle(now);
    }

    /// The answer body of `DescribeDtsJobDetail` for job `id`.
    pub fn describe_body(&self, id: &str, request_id: &str) -> serde_json::Value {
        let (db_object, endpoint) = if self.configured {
            (
                r#"[{"DBName":"orders","AllTable":true}]"#.to_owned(),
                serde_json::json!({"InstanceType": "RDS", "EngineName": "MySQL", "Region": "cn-hangzhou", "InstanceID": "rm-sim"}),
            )
        } else {
            (String::new(), serde_json::json!({}))
        };
        serde_json::json!({
            "RequestId": request_id,
            "HttpStatusCode": 200,
            "Success": true,
            "DtsJobId": id,
            "DtsInstanceID": self.instance_id,
            "DtsJobName": self.name,
            "Status": self.status,
            "CreateTime": self.create_time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "DbObject": db_object,
            "SourceEndpoint": endpoint,
            "DestinationEndpoint": endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_clears_the_configuration_now_or_after_its_delay() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut j = Job::synchronizing("j", t0);
        j.reset(t0, Duration::ZERO);
        assert_eq!((j.status.as_str(), j.configured), ("NotConfigured", false));
        let mut j = Job::synchronizing("j", t0);
        j.reset(t0, Duration::from_secs(20));
        assert_eq!(j.status, "Synchronizing");
        j.settle(t0 + jiff::SignedDuration::from_secs(19));
        assert!(j.configured);
        j.settle(t0 + jiff::SignedDuration::from_secs(20));
        assert_eq!(j.status, "NotConfigured");
        let body = j.describe_body("j", "r");
        assert_eq!(body["DbObject"], "");
        assert_eq!(body["Status"], "NotConfigured");
    }
}
