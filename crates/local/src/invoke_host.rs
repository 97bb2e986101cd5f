//! The Lambda Invoke API over the real phase handlers, in-process.
//!
//! moto's Step Functions interpreter calls Lambda at
//! `http://localhost:$MOTO_PORT`; pointing `MOTO_PORT` here makes the exact
//! state machine run against the same code the Lambdas ship. Handler errors
//! answer 200 with `X-Amz-Function-Error: Unhandled`, as Lambda does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use porter_core::aws::Aws;
use porter_lambda::{handle, Phase};
use serde_json::{json, Value};

/// `arn:aws:lambda:r:acct:function:porter-provision` or `porter-provision`
/// or `provision` → the phase.
pub fn phase_of(function: &str) -> Option<Phase> {
    let name = function.rsplit(':').next().unwrap_or(function);
    let name = name.strip_prefix("porter-").unwrap_or(name);
    Phase::from_name(name)
}

/// Failures to inject, to see the state machine's Retry work: the next
/// `count` calls of a phase answer a `Retryable` error instead of running.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<HashMap<&'static str, u32>>>);

impl Faults {
    pub fn fail_next(&self, phase: Phase, count: u32) {
        self.0
            .lock()
            .expect("faults lock")
            .insert(phase.name(), count);
    }

    fn take(&self, phase: Phase) -> bool {
        let mut map = self.0.lock().expect("faults lock");
        match map.get_mut(phase.name()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

#[derive(Clone)]
struct Host {
    aws: Aws,
    faults: Faults,
}

pub fn router(aws: Aws, faults: Faults) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .with_state(Host { aws, faults })
}

fn unhandled(error_type: &str, message: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "X-Amz-Function-Error",
        HeaderValue::from_static("Unhandled"),
    );
    let body = json!({"errorType": error_type, "errorMessage": message});
    (StatusCode::OK, headers, Json(body)).into_response()
}

fn client_error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"Type": "User", "message": message}))).into_response()
}

async fn invoke(
    State(host): State<Host>,
    Path(function): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(phase) = phase_of(&function) else {
        return client_error(
            StatusCode::NOT_FOUND,
            format!("Function not found: {function}"),
        );
    };
    let event: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return client_error(
                    StatusCode::BAD_REQUEST,
                    format!("the payload is not JSON: {e}"),
                )
            }
        }
    };
    if host.faults.take(phase) {
        return unhandled(
            "Retryable",
            format!("injected fault: {} throttled", phase.name()),
        );
    }
    match Box::pin(handle(&host.aws, phase, event)).await {
        Ok(out) => Json(out).into_response(),
        Err(e) => unhandled(e.error_type(), e.to_string()),
    }
}

/// Serves until the task is dropped.
pub async fn serve(
    aws: Aws,
    faults: Faults,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    axum::serve(listener, router(aws, faults)).await
}
