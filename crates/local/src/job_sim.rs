//! The CodePipeline job API that moto lacks, and the invoke-action loop.
//!
//! The host answers PutJobSuccessResult and PutJobFailureResult (the
//! JSON 1.1 protocol, `X-Amz-Target: CodePipeline_20150709.*`) and records
//! them per job, refusing a second result for a job as CodePipeline does
//! (`InvalidJobStateException`); it answers ListActionExecutions for the
//! jobs a driver ran as part of a pipeline execution; every other
//! CodePipeline call goes on to moto. The driver
//! plays CodePipeline's part: invoke the function with a job, read the
//! result it reported, and invoke again with the continuation token, with
//! a fresh job id each time, until success or failure. A job the function
//! never reported on is a failure of the function, said so plainly.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use porter_core::release::S3Object;
use serde_json::{json, Value};

/// What a function reported for a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum JobResult {
    Success {
        continuation_token: Option<String>,
        summary: Option<String>,
        percent: Option<i64>,
        external_id: Option<String>,
        output_variables: HashMap<String, String>,
    },
    Failure {
        message: String,
        external_id: Option<String>,
    },
}

/// The results reported so far, by job id, and the jobs of each pipeline
/// execution.
#[derive(Clone, Default)]
pub struct Jobs(Arc<Mutex<Recorded>>);

#[derive(Default)]
struct Recorded {
    results: HashMap<String, Vec<JobResult>>,
    /// (pipeline, pipeline execution id) → (action name, job id), in order.
    executions: HashMap<(String, String), Vec<(String, String)>>,
}

impl Jobs {
    pub fn results(&self, job: &str) -> Vec<JobResult> {
        self.0
            .lock()
            .expect("jobs lock")
            .results
            .get(job)
            .cloned()
            .unwrap_or_default()
    }

    /// Records a result; false when the job already has its final one.
    fn record(&self, job: String, result: JobResult) -> bool {
        let mut r = self.0.lock().expect("jobs lock");
        let results = r.results.entry(job).or_default();
        let answered = results.last().is_some_and(|last| {
            !matches!(
                last,
                JobResult::Success {
                    continuation_token: Some(_),
                    ..
                }
            )
        });
        if answered {
            return false;
        }
        results.push(result);
        true
    }

    /// Notes that `job` runs `action` in a pipeline execution.
    pub fn register(&self, execution: &PipelineExecution, job: &str) {
        self.0
            .lock()
            .expect("jobs lock")
            .executions
            .entry((execution.pipeline.clone(), execution.id.clone()))
            .or_default()
            .push((execution.action.clone(), job.to_string()));
    }

    /// ListActionExecutions for one pipeline execution, as CodePipeline
    /// answers it: newest first, each with its status and the external
    /// execution id the function reported.
    fn action_executions(&self, pipeline: &str, execution: &str) -> Value {
        let r = self.0.lock().expect("jobs lock");
        let jobs = r
            .executions
            .get(&(pipeline.to_string(), execution.to_string()))
            .cloned()
            .unwrap_or_default();
        let details: Vec<Value> = jobs
            .iter()
            .rev()
            .map(|(action, job)| {
                let last = r.results.get(job).and_then(|v| v.last());
                let (status, external) = match last {
                    None => ("InProgress", None),
                    Some(JobResult::Success {
                        continuation_token: Some(_),
                        external_id,
                        ..
                    }) => ("InProgress", external_id.clone()),
                    Some(JobResult::Success { external_id, .. }) => ("Succeeded", external_id.clone()),
                    Some(JobResult::Failure { external_id, .. }) => ("Failed", external_id.clone()),
                };
                json!({"pipelineExecutionId": execution, "actionExecutionId": job, "actionName": action,
                       "status": status, "output": {"executionResult": {"externalExecutionId": external}}})
            })
            .collect();
        json!({ "actionExecutionDetails": details })
    }
}

/// The pipeline execution an action's jobs belong to (what CodePipeline's
/// ListActionExecutions reports them under).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PipelineExecution {
    pub pipeline: String,
    pub id: String,
    pub action: String,
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"__type": kind, "message": message}))).into_response()
}

/// Answers one CodePipeline API call.
pub async fn api(jobs: &Jobs, moto_endpoint: &str, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let op = target.rsplit('.').next().unwrap_or_default();
    if !["PutJobSuccessResult", "PutJobFailureResult", "ListActionExecutions"].contains(&op) {
        return forward(moto_endpoint, headers, body).await;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "the request body is not JSON",
        );
    };
    if op == "ListActionExecutions" {
        let (Some(pipeline), Some(execution)) = (
            req["pipelineName"].as_str(),
            req["filter"]["pipelineExecutionId"].as_str(),
        ) else {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "pipelineName and filter.pipelineExecutionId are required here",
            );
        };
        return (StatusCode::OK, Json(jobs.action_executions(pipeline, execution))).into_response();
    }
    let Some(job) = req["jobId"].as_str().map(str::to_string) else {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "jobId is required");
    };
    if op == "PutJobSuccessResult" {
        let token = req["continuationToken"].as_str().map(str::to_string);
        let variables: HashMap<String, String> = req["outputVariables"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        // CodePipeline's own rules, so the functions are held to them here.
        if let Some(t) = &token {
            if t.is_empty() || t.len() > 2048 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "continuationToken must be 1 to 2048 characters",
                );
            }
            if !variables.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "outputVariables cannot be set with a continuationToken",
                );
            }
        }
        let d = &req["executionDetails"];
        if d["summary"].as_str().is_some_and(|s| s.len() > 2048) {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "executionDetails.summary is over 2048 characters",
            );
        }
        let recorded = jobs.record(
            job,
            JobResult::Success {
                continuation_token: token,
                summary: d["summary"].as_str().map(str::to_string),
                percent: d["percentComplete"].as_i64(),
                external_id: d["externalExecutionId"].as_str().map(str::to_string),
                output_variables: variables,
            },
        );
        if !recorded {
            return already_answered();
        }
    } else {
        let f = &req["failureDetails"];
        let Some(message) = f["message"].as_str() else {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "failureDetails.message is required",
            );
        };
        let recorded = jobs.record(
            job,
            JobResult::Failure {
                message: message.to_string(),
                external_id: f["externalExecutionId"].as_str().map(str::to_string),
            },
        );
        if !recorded {
            return already_answered();
        }
    }
    (StatusCode::OK, Json(json!({}))).into_response()
}

fn already_answered() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "InvalidJobStateException",
        "the job already has a result",
    )
}

async fn forward(moto_endpoint: &str, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = reqwest::Client::new().post(format!("{moto_endpoint}/")).body(body);
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            req = req.header(k.as_str(), v.as_bytes());
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = resp.headers().get("content-type").cloned();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut r = (status, bytes).into_response();
            if let Some(ct) = ct {
                if let Ok(v) = axum::http::HeaderValue::from_bytes(ct.as_bytes()) {
                    r.headers_mut().insert("content-type", v);
                }
            }
            r
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
            &format!("moto did not answer: {e}"),
        ),
    }
}

/// One invoke action, as CodePipeline configures it.
pub struct Action {
    pub function: String,
    pub user_parameters: String,
    pub input: Option<S3Object>,
    pub revision: Option<String>,
    /// Between a continuation and the next call (CodePipeline waits too).
    pub wait: Duration,
    pub max_calls: usize,
    /// The pipeline execution the jobs belong to, if the driver plays one.
    pub pipeline_execution: Option<PipelineExecution>,
}

/// How the action ended.
#[derive(Debug, Clone)]
pub struct ActionEnd {
    pub succeeded: bool,
    pub calls: usize,
    pub message: String,
    pub variables: HashMap<String, String>,
    /// The first continuation token: for `pipeline`, the execution ARN.
    pub first_token: Option<String>,
    /// The external execution id of the first continuation (for
    /// `pipeline`, the state machine execution it started).
    pub first_external_id: Option<String>,
}

fn job_id(n: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // UUID-shaped, from the clock's fast-moving low digits and the call.
    let h = format!("{:032x}", nanos.reverse_bits());
    format!("{}-{}-4{}-8{}-{:012x}", &h[..8], &h[8..12], &h[13..16], &h[17..20], n)
}

/// The job event CodePipeline sends (credentials are the local stack's).
pub fn job_event(id: &str, action: &Action, token: Option<&str>) -> Value {
    let inputs: Vec<Value> = action
        .input
        .iter()
        .map(|i| {
            json!({"name": "SourceArtifact", "revision": action.revision,
                   "location": {"type": "S3", "s3Location": {"bucketName": i.bucket, "objectKey": i.key}}})
        })
        .collect();
    let mut data = json!({
        "actionConfiguration": {"configuration": {"FunctionName": action.function, "UserParameters": action.user_parameters}},
        "inputArtifacts": inputs,
        "outputArtifacts": [],
        "artifactCredentials": {"accessKeyId": "testing", "secretAccessKey": "testing", "sessionToken": "testing"},
    });
    if let Some(t) = token {
        data["continuationToken"] = json!(t);
    }
    json!({"CodePipeline.job": {"id": id, "accountId": crate::names::ACCOUNT, "data": data}})
}

/// Runs the action to its end through the Lambda host at `host`.
pub async fn run_action(host: &str, action: &Action, out: &mut dyn Write) -> Result<ActionEnd> {
    let client = reqwest::Client::new();
    let mut token: Option<String> = None;
    let mut first_token = None;
    let mut first_external_id = None;
    for call in 1..=action.max_calls {
        let id = job_id(call);
        if let Some(p) = &action.pipeline_execution {
            client
                .post(format!("{host}/porter-local/jobs/{id}/pipeline-execution"))
                .json(p)
                .send()
                .await?
                .error_for_status()?;
        }
        let event = job_event(&id, action, token.as_deref());
        // Lambda retries an invocation that errors (twice, for async
        // invokes); a function that never reports leaves the job hanging.
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let resp = client
                .post(format!("{host}/2015-03-31/functions/{}/invocations", action.function))
                .json(&event)
                .send()
                .await?;
            let errored = resp.headers().contains_key("x-amz-function-error");
            let body = resp.text().await.unwrap_or_default();
            let reported: Vec<JobResult> = client
                .get(format!("{host}/porter-local/jobs/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if let Some(r) = reported.into_iter().last() {
                break r;
            }
            if attempts >= 3 {
                bail!(
                    "job {id} was left hanging: the function reported no result after {attempts} invocations (last answer: {})",
                    if errored { body } else { "no error".into() }
                );
            }
            writeln!(
                out,
                "  call {call}: the function errored without reporting ({body}); Lambda retries"
            )?;
        };
        match result {
            JobResult::Failure { message, .. } => {
                writeln!(out, "  call {call}: job {id} FAILED: {message}")?;
                return Ok(ActionEnd {
                    succeeded: false,
                    calls: call,
                    message,
                    variables: HashMap::new(),
                    first_token,
                    first_external_id,
                });
            }
            JobResult::Success {
                continuation_token: Some(t),
                summary,
                percent,
                external_id,
                ..
            } => {
                if first_external_id.is_none() {
                    first_external_id = external_id;
                }
                writeln!(
                    out,
                    "  call {call}: in progress ({}%): {}",
                    percent.unwrap_or(0),
                    summary.unwrap_or_default()
                )?;
                first_token.get_or_insert(t.clone());
                token = Some(t);
                tokio::time::sleep(action.wait).await;
            }
            JobResult::Success {
                continuation_token: None,
                summary,
                output_variables,
                ..
            } => {
                let mut vars: Vec<_> = output_variables.iter().collect();
                vars.sort();
                writeln!(out, "  call {call}: succeeded: {}", summary.clone().unwrap_or_default())?;
                for (k, v) in vars {
                    writeln!(out, "    {k} = {v}")?;
                }
                return Ok(ActionEnd {
                    succeeded: true,
                    calls: call,
                    message: summary.unwrap_or_default(),
                    variables: output_variables,
                    first_token,
                    first_external_id,
                });
            }
        }
    }
    bail!("the action was still in progress after {} calls", action.max_calls)
}
