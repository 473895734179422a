//! Test fixtures for the effectful controller code: a mocked API server (tower-test) that hands
//! each request to the test, which asserts it and answers; a scripted DTS; resources and a
//! [`Context`] wired to both.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::joblease::JobLeases;
use super::resolve::DefaultCredentialsScope;
use super::{Context, ControllerConfig};
use crate::aliyun::client::{DescribeCall, DtsApi, ReadOutcome, ResetCall};
use crate::aliyun::dts::DtsAnswer;
use crate::aliyun::endpoint::{Endpoint, EndpointAllowlist};
use crate::aliyun::error::AttemptOutcome;
use crate::crd::{DtsJobReset, DtsJobResetSpec, DtsJobResetStatus};
use crate::metrics::Metrics;
use crate::ratelimit::TokenBucket;
use crate::retry::Backoff;

/// The namespace of every fixture resource.
pub const NS: &str = "ns";
/// The namespace of the job Leases.
pub const LEASE_NS: &str = "ops";
/// The identity of the fixture controller.
pub const ME: &str = "me-0001";

/// One request the code under test made.
#[derive(Debug)]
pub struct Seen {
    /// HTTP method.
    pub method: Method,
    /// Path without query.
    pub path: String,
    /// Query string (empty when none).
    pub query: String,
    /// JSON body (`Null` when empty).
    pub body: Value,
}

/// The mocked API server: the test takes each request in turn and answers it.
pub struct ApiServer {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
}

/// A client talking to a fresh [`ApiServer`].
pub fn api_server() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, NS), ApiServer { handle })
}

impl ApiServer {
    /// Waits (bounded) for the next request and answers it with `status` and `body`.
    pub async fn answer(&mut self, status: u16, body: Value) -> Seen {
        self.answer_with(|_| (status, body)).await
    }

    /// Waits (bounded) for the next request and answers with what `respond` makes of it.
    pub async fn answer_with(&mut self, respond: impl FnOnce(&Seen) -> (u16, Value)) -> Seen {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(60), self.handle.next_request())
                .await
                .expect("a request within 60 s")
                .expect("the client is still there");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let seen = Seen {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON request body")
            },
        };
        let (status, reply) = respond(&seen);
        send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
        seen
    }

    /// Answers the next request by storing its body: echoed with `resourceVersion` = `rv`.
    pub async fn store(&mut self, rv: &str) -> Seen {
        self.answer_with(|seen| {
            let mut stored = seen.body.clone();
            stored["metadata"]["resourceVersion"] = json!(rv);
            (200, stored)
        })
        .await
    }

    /// Asserts the client made no further request and has gone away.
    pub async fn finished(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
            .await
            .expect("the client goes away");
        assert!(
            next.is_none(),
            "unexpected request: {:?}",
            next.map(|(r, _)| (r.method().clone(), r.uri().clone()))
        );
    }
}

/// A Kubernetes `Status` failure body.
pub fn failure(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "code": code, "message": format!("{reason} (from the test)")})
}

/// The path of a fixture resource's status subresource.
pub fn status_path(name: &str) -> String {
    format!("/apis/dtsops.io/v1alpha1/namespaces/{NS}/dtsjobresets/{name}/status")
}

/// The name of the job Lease of (region, job).
pub fn job_lease_name(region: &str, job: &str) -> String {
    super::joblease::lease_name(&(region.to_string(), job.to_string()))
}

/// The path events are created at.
pub const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

/// A resource for `job` in [`NS`] using the Secret `creds`, at resourceVersion `rv`.
pub fn resource(name: &str, job: &str, rv: &str, status: Option<DtsJobResetStatus>) -> DtsJobReset {
    let spec: DtsJobResetSpec = serde_json::from_value(json!({
        "dtsJobId": job,
        "regionId": "cn-hangzhou",
        "credentials": {"secretRef": {"name": "creds"}}
    }))
    .unwrap();
    let mut o = DtsJobReset::new(name, spec);
    o.metadata.namespace = Some(NS.into());
    o.metadata.uid = Some(format!("uid-{name}"));
    o.metadata.resource_version = Some(rv.into());
    o.metadata.generation = Some(1);
    o.status = status;
    o
}

/// The `creds` Secret as the API server returns it.
pub fn secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "creds", "namespace": NS},
           "data": {"accessKeyId": "QUtJRA==", "accessKeySecret": "c2VjcmV0"}})
}

/// A DTS that answers from a script and counts the calls it received.
#[derive(Default)]
pub struct ScriptedDts {
    answers: Mutex<VecDeque<AttemptOutcome>>,
    calls: AtomicUsize,
    reads: Mutex<VecDeque<ReadOutcome>>,
    read_calls: AtomicUsize,
}

impl ScriptedDts {
    /// Answers these resets, and these reads, in order.
    pub fn answering_reads(
        answers: impl IntoIterator<Item = AttemptOutcome>,
        reads: impl IntoIterator<Item = ReadOutcome>,
    ) -> Arc<ScriptedDts> {
        Arc::new(ScriptedDts {
            answers: Mutex::new(answers.into_iter().collect()),
            reads: Mutex::new(reads.into_iter().collect()),
            ..Default::default()
        })
    }

    /// Reads received so far.
    pub fn read_calls(&self) -> usize {
        self.read_calls.load(Ordering::SeqCst)
    }

    /// Calls received so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl DtsApi for ScriptedDts {
    fn reset_dts_job<'a>(&'a self, _call: &'a ResetCall) -> BoxFuture<'a, AttemptOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .expect("more calls than scripted");
        Box::pin(async move { next })
    }

    fn describe_dts_job_detail<'a>(
        &'a self,
        _call: &'a DescribeCall,
    ) -> BoxFuture<'a, ReadOutcome> {
        self.read_calls.fetch_add(1, Ordering::SeqCst);
        let next = self
            .reads
            .lock()
            .unwrap()
            .pop_front()
            .expect("more reads than scripted");
        Box::pin(async move { next })
    }
}

/// A successful answer with `request_id`.
pub fn success(request_id: &str) -> AttemptOutcome {
    AttemptOutcome::Answered {
        http_status: 200,
        answer: DtsAnswer {
            request_id: Some(request_id.into()),
            success: Some(true),
            http_status_code: Some(200),
            ..Default::default()
        },
        retry_after: None,
    }
}

/// A successful read of a job in `status`, configured unless NotConfigured.
pub fn job_read(status: &str) -> ReadOutcome {
    ReadOutcome {
        outcome: success("rid-read"),
        job: Some(crate::aliyun::dts::JobDetail {
            dts_job_id: Some("j".into()),
            status: Some(status.into()),
            configured: !status.eq_ignore_ascii_case("NotConfigured"),
            request_id: Some("rid-read".into()),
            ..Default::default()
        }),
    }
}

/// A controller context on `client` and `dts`: no rate limit, no default credentials.
pub fn context(client: Client, dts: Arc<dyn DtsApi>) -> Context {
    Context {
        client: client.clone(),
        watch_client: client.clone(),
        config: ControllerConfig {
            default_region: "cn-hangzhou".into(),
            dts_endpoint: Some(Endpoint::parse("http://127.0.0.1:1").unwrap()),
            allowlist: EndpointAllowlist::default(),
            default_scope: DefaultCredentialsScope::Namespaces(Vec::new()),
            backoff: Backoff::default(),
            attempt_timeout: Duration::from_secs(10),
            identity: ME.into(),
            max_clock_skew: Duration::from_secs(30),
            verify: Default::default(),
            selector: Default::default(),
        },
        dts,
        default_credentials: None,
        recorder: super::events::Publisher::new(
            client.clone(),
            Reporter {
                controller: "dts-operator".into(),
                instance: Some(ME.into()),
            },
        ),
        metrics: Arc::new(Metrics::new()),
        bucket: TokenBucket::new(0.0, 1),
        read_bucket: TokenBucket::new(0.0, 1),
        sends: Semaphore::new(8),
        reservations: Default::default(),
        store: OnceLock::new(),
        stopping: AtomicBool::new(false),
        leader: OnceLock::new(),
        job_leases: Some(JobLeases::new(
            client,
            LEASE_NS,
            ME,
            Duration::from_secs(25),
        )),
        claims: Default::default(),
        unsent: Default::default(),
    }
}
