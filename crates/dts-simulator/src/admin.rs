//! Admin endpoints under `/_simulator/`, for driving the simulator from another process (the demo
//! script, curl). They mirror the Rust API of [`crate::Simulator`]; they are never recorded as
//! calls and are not part of the simulated Alibaba Cloud API.
//!
//! | method | path | body / answer |
//! |---|---|---|
//! | GET | `/_simulator/healthz` | `ok` |
//! | GET | `/_simulator/calls[?action=A]` | JSON array of [`crate::RecordedCall`] (only action `A`) |
//! | DELETE | `/_simulator/calls` | forget recorded calls |
//! | POST | `/_simulator/script` | `{"dtsJobId":"..","answers":[Answer,..]}` (appended to the queue) |
//! | POST | `/_simulator/default-answer` | one `Answer` |
//! | POST | `/_simulator/gates/{name}/open` | — |
//! | POST | `/_simulator/gates/{name}/close` | — |
//! | GET | `/_simulator/gates/{name}` | `{"name":..,"waiters":n}` |
//! | POST | `/_simulator/keys` | `{"accessKeyId","accessKeySecret","securityToken"?}` |
//! | POST | `/_simulator/tokens/expire` | `{"securityToken":".."}` |
//! | POST | `/_simulator/oidc-tokens` | `{"token":".."}` (from then on only listed tokens are valid) |
//! | GET | `/_simulator/in-flight?regionId=..&dtsJobId=..` | `{"current":n,"max":n}` |
//! | POST | `/_simulator/rate-limit` | `{"rate":10,"burst":10}` (burst optional), or `null` to lift it |

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::answer::Answer;
use crate::flow::RateLimit;
use crate::state::Shared;
use crate::verify::KeyRecord;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_simulator/healthz", get(|| async { "ok" }))
        .route("/_simulator/calls", get(calls).delete(clear_calls))
        .route("/_simulator/script", post(script))
        .route("/_simulator/default-answer", post(default_answer))
        .route("/_simulator/gates/{name}", get(gate))
        .route("/_simulator/gates/{name}/open", post(open_gate))
        .route("/_simulator/gates/{name}/close", post(close_gate))
        .route("/_simulator/keys", post(keys))
        .route("/_simulator/tokens/expire", post(expire_token))
        .route("/_simulator/oidc-tokens", post(oidc_token))
        .route("/_simulator/in-flight", get(in_flight))
        .route("/_simulator/rate-limit", post(rate_limit))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}\n")))
}

async fn calls(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let calls: Vec<_> = s
        .calls()
        .into_iter()
        .filter(|c| {
            q.get("action")
                .is_none_or(|a| c.action.as_deref() == Some(a))
        })
        .collect();
    axum::Json(calls).into_response()
}

async fn clear_calls(State(s): State<Arc<Shared>>) -> StatusCode {
    s.clear_calls();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScriptBody {
    dts_job_id: String,
    answers: Vec<Answer>,
}

async fn script(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<ScriptBody>(&body) {
        Ok(b) => {
            s.script(&b.dts_job_id, b.answers);
            axum::Json(serde_json::json!({
                "dtsJobId": b.dts_job_id,
                "queued": s.pending_answers(&b.dts_job_id),
            }))
            .into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn default_answer(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<Answer>(&body) {
        Ok(a) => {
            s.set_default_answer(a);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn gate(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let waiters = s.gate_waiters(&name);
    axum::Json(serde_json::json!({ "name": name, "waiters": waiters })).into_response()
}

async fn open_gate(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> StatusCode {
    s.open_gate(&name);
    StatusCode::NO_CONTENT
}

async fn close_gate(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> StatusCode {
    s.close_gate(&name);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyBody {
    access_key_id: String,
    access_key_secret: String,
    #[serde(default)]
    security_token: Option<String>,
}

async fn keys(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<KeyBody>(&body) {
        Ok(k) => {
            s.add_key(
                &k.access_key_id,
                KeyRecord {
                    secret: k.access_key_secret,
                    security_token: k.security_token,
                    expires_at: None,
                },
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    security_token: String,
}

async fn expire_token(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<TokenBody>(&body) {
        Ok(t) => {
            s.expire_token(&t.security_token);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct OidcBody {
    token: String,
}

async fn oidc_token(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<OidcBody>(&body) {
        Ok(t) => {
            s.add_valid_oidc_token(&t.token);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn in_flight(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let region = q.get("regionId").map_or("", String::as_str);
    let job = q.get("dtsJobId").map_or("", String::as_str);
    axum::Json(serde_json::json!({
        "current": s.in_flight(region, job),
        "max": s.max_in_flight(region, job),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct RateLimitBody {
    rate: f64,
    #[serde(default)]
    burst: Option<u32>,
}

async fn rate_limit(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<Option<RateLimitBody>>(&body) {
        Ok(None) => {
            s.set_rate_limit(None);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Some(b)) if b.rate.is_finite() && b.rate > 0.0 && b.burst != Some(0) => {
            let mut limit = RateLimit::per_second(b.rate);
            if let Some(burst) = b.burst {
                limit.burst = burst;
            }
            s.set_rate_limit(Some(limit));
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Some(_)) => (
            StatusCode::BAD_REQUEST,
            "rate must be more than 0 and burst at least 1\n".to_string(),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}
