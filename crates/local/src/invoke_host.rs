//! The Lambda Invoke API over the real phase handlers, in-process.
//!
//! moto's Step Functions interpreter calls Lambda at
//! `http://localhost:$MOTO_PORT`; pointing `MOTO_PORT` here makes the exact
//! state machine run against the same code the Lambdas ship. Handler errors
//! answer 200 with `X-Amz-Function-Error: Unhandled`, as Lambda does.

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

pub fn router(aws: Aws) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .with_state(aws)
}

async fn invoke(
    State(aws): State<Aws>,
    Path(function): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(phase) = phase_of(&function) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"Type": "User", "message": format!("Function not found: {function}")})),
        )
            .into_response();
    };
    let event: Value =
        if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"Type": "User", "message": format!("the payload is not JSON: {e}")}),
                    ),
                )
                    .into_response(),
            }
        };
    match Box::pin(handle(&aws, phase, event)).await {
        Ok(out) => Json(out).into_response(),
        Err(e) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                "X-Amz-Function-Error",
                HeaderValue::from_static("Unhandled"),
            );
            let body = json!({"errorType": e.error_type(), "errorMessage": e.to_string()});
            (StatusCode::OK, headers, Json(body)).into_response()
        }
    }
}

/// Serves until the task is dropped.
pub async fn serve(aws: Aws, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(aws)).await
}
