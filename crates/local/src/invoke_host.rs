//! The Lambda Invoke API over the real phase handlers, in-process.
//!
//! moto's Step Functions interpreter calls Lambda at
//! `http://localhost:$MOTO_PORT`; pointing `MOTO_PORT` here makes the exact
//! state machine run against the same code the Lambdas ship. Handler errors
//! answer 200 with `X-Amz-Function-Error: Unhandled`, as Lambda does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use porter_lambda::{Context, Function, Phase};

use crate::front::Front;
use crate::job_sim::{self, JobResult, Jobs};
use serde_json::{json, Value};

/// `arn:aws:lambda:r:acct:function:porter-provision` or `porter-provision`
/// or `provision` → the function.
pub fn function_of(name: &str) -> Option<Function> {
    let name = name.rsplit(':').next().unwrap_or(name);
    let name = name.strip_prefix("porter-").unwrap_or(name);
    Function::from_name(name)
}

/// Failures to inject, to see the state machine's Retry work: the next
/// `count` calls of a phase answer a `Retryable` error instead of running.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<HashMap<&'static str, u32>>>);

impl Faults {
    pub fn fail_next(&self, phase: Phase, count: u32) {
        self.0.lock().expect("faults lock").insert(phase.name(), count);
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
    /// Each function's context, by its name: its own credentials.
    contexts: Arc<HashMap<&'static str, Context>>,
    faults: Faults,
    jobs: Jobs,
    front: Front,
}

/// The Lambda Invoke API, CodePipeline's job API (the rest of CodePipeline
/// forwarded to moto), the recorded job results, the load balancers'
/// listing, and every other AWS call through the [`Front`].
pub fn router(contexts: HashMap<&'static str, Context>, faults: Faults, jobs: Jobs, front: Front) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route("/", post(aws_api))
        .route("/porter-local/load-balancers", get(load_balancers))
        .route("/porter-local/jobs/{id}", get(job_results))
        .route(
            "/porter-local/jobs/{id}/pipeline-execution",
            post(job_pipeline_execution),
        )
        .route("/porter-local/jobs/{id}/made", post(job_made))
        .route("/porter-local/jobs/{id}/next", get(job_next))
        .route("/porter-local/custom-jobs", post(queue_custom_job))
        .fallback(other_aws_api)
        .with_state(Host {
            contexts: Arc::new(contexts),
            faults,
            jobs,
            front,
        })
        // Payloads go to S3 through here.
        .layer(axum::extract::DefaultBodyLimit::max(512 * 1024 * 1024))
}

async fn load_balancers(State(host): State<Host>) -> Json<Value> {
    let instances = match host.front.fleet().mode() {
        crate::instances::Mode::Running => "running".to_owned(),
        crate::instances::Mode::Bookkeeping(why) => why.clone(),
    };
    Json(json!({"instances": instances, "load_balancers": host.front.balancers().list()}))
}

async fn other_aws_api(
    State(host): State<Host>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    host.front.handle(method, uri, headers, body).await
}

async fn job_next(State(host): State<Host>, Path(id): Path<String>) -> Json<Option<String>> {
    Json(host.jobs.next_job(&id))
}

async fn queue_custom_job(State(host): State<Host>, Json(req): Json<job_sim::CustomJobRequest>) -> Json<String> {
    Json(host.jobs.queue(&req))
}

/// `POST /`: CodePipeline (JSON, by its target) to the job simulator,
/// once the caller's role allows it; every Query-protocol service to the
/// front.
async fn aws_api(State(host): State<Host>, uri: Uri, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let codepipeline = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("CodePipeline_"));
    if codepipeline {
        if let Some(refused) = host.front.refused(&Method::POST, &uri, &headers, &body) {
            return refused;
        }
        job_sim::api(&host.jobs, host.front.moto(), headers, body).await
    } else {
        host.front.handle(Method::POST, uri, headers, body).await
    }
}

async fn job_made(State(host): State<Host>, Path(id): Path<String>, Json(made): Json<job_sim::MadeJob>) -> StatusCode {
    host.jobs.made(&id, &made);
    StatusCode::NO_CONTENT
}

async fn job_pipeline_execution(
    State(host): State<Host>,
    Path(id): Path<String>,
    Json(execution): Json<job_sim::PipelineExecution>,
) -> StatusCode {
    host.jobs.register(&execution, &id);
    StatusCode::NO_CONTENT
}

async fn job_results(State(host): State<Host>, Path(id): Path<String>) -> Json<Vec<JobResult>> {
    Json(host.jobs.results(&id))
}

fn unhandled(error_type: &str, message: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("X-Amz-Function-Error", HeaderValue::from_static("Unhandled"));
    let body = json!({"errorType": error_type, "errorMessage": message});
    (StatusCode::OK, headers, Json(body)).into_response()
}

fn client_error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"Type": "User", "message": message}))).into_response()
}

async fn invoke(State(host): State<Host>, Path(function): Path<String>, body: axum::body::Bytes) -> Response {
    let Some(target) = function_of(&function) else {
        return client_error(StatusCode::NOT_FOUND, format!("Function not found: {function}"));
    };
    let Some(ctx) = host.contexts.get(target.name()) else {
        return client_error(StatusCode::NOT_FOUND, format!("Function not found: {function}"));
    };
    let event: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return client_error(StatusCode::BAD_REQUEST, format!("the payload is not JSON: {e}")),
        }
    };
    if let Function::Phase(phase) = target {
        if host.faults.take(phase) {
            return unhandled("Retryable", format!("injected fault: {} throttled", phase.name()));
        }
    }
    // As in Lambda: the functions' 300 s timeout, and the guard that
    // answers for a handler that panics or runs out of time.
    let timeout = match target {
        Function::Phase(_) | Function::Hooks => PHASE_TIMEOUT,
        _ => OTHER_TIMEOUT,
    };
    let deadline = tokio::time::Instant::now() + timeout - porter_lambda::DEADLINE_MARGIN;
    match Box::pin(porter_lambda::answer(
        ctx,
        target.handler(),
        target.name(),
        event,
        Some(deadline),
    ))
    .await
    {
        Ok(out) => Json(out).into_response(),
        Err(e) => unhandled(e.error_type(), e.to_string()),
    }
}

/// The functions' timeouts in the infra: the phases, and the rest.
const PHASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
const OTHER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves until the task is dropped.
pub async fn serve(app: Router, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app).await
}
