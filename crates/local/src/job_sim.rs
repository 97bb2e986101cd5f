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
//!
//! Custom action jobs are queued instead: the host answers PollForJobs
//! (jobs of the asked action type, each handed out with a fresh nonce),
//! AcknowledgeJob (a stale nonce is refused, `InvalidNonceException`) and
//! GetJobDetails, and queues a continued job again under a new id with its
//! token, as CodePipeline does. The custom driver wakes the worker as the
//! action's STARTED event and the schedule would.

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
#[derive(Debug, Clone, Default)]
pub struct Jobs(Arc<Mutex<Recorded>>);

#[derive(Debug, Default)]
struct Recorded {
    results: HashMap<String, Vec<JobResult>>,
    /// (pipeline, pipeline execution id) → (action name, job id), in order.
    executions: HashMap<(String, String), Vec<(String, String)>>,
    /// Each pipeline execution's status, as GetPipelineExecution says it:
    /// InProgress once registered, Stopped once StopPipelineExecution.
    statuses: HashMap<(String, String), String>,
    /// Custom action jobs, in the order queued.
    custom: Vec<CustomJob>,
    /// The invoke-action jobs the driver made: each one's `data`, with its
    /// pipeline context, as GetJobDetails answers it.
    made: HashMap<String, Value>,
    /// A continued custom job → the job queued with its token.
    next: HashMap<String, String>,
    nonces: u64,
}

/// A custom action's job in CodePipeline's queue.
#[derive(Debug, Clone)]
struct CustomJob {
    id: String,
    /// `actionTypeId`: category, owner, provider, version.
    action_type: Value,
    /// The job's `data` as PollForJobs hands it out.
    data: Value,
    /// The nonce of the last hand-out; `None` while queued.
    nonce: Option<String>,
    acknowledged: bool,
}

/// The local stack's pipeline: the one its driver plays, whose jobs it
/// makes and whose declaration it answers (GetPipeline) with the actions
/// it ran, as CodePipeline would.
pub const LOCAL_PIPELINE: &str = "porter-pipeline";
/// The environments the local pipeline deploys after its approval.
pub const APPROVED_ENVIRONMENTS: &[&str] = &["production"];

/// The stage of the local pipeline that deploys `environment`.
fn stage_for(environment: &str) -> &'static str {
    if APPROVED_ENVIRONMENTS.contains(&environment) {
        "Production"
    } else {
        "Deploy"
    }
}

/// The key prefix of the local pipeline's artifacts in the artifact
/// bucket (CodePipeline's: the first 20 characters of its name).
pub fn artifact_prefix() -> String {
    porter_core::job_origin::artifact_prefix(LOCAL_PIPELINE)
}

/// A pipeline execution of the local pipeline, new each time.
pub fn new_execution(action: &str) -> PipelineExecution {
    PipelineExecution {
        pipeline: LOCAL_PIPELINE.into(),
        id: job_id(0),
        action: action.into(),
    }
}

/// A custom action job to queue.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CustomJobRequest {
    pub action_type: Value,
    pub configuration: HashMap<String, String>,
    pub input: Option<S3Object>,
    pub revision: Option<String>,
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

    /// Queues a custom action job; its id.
    pub fn queue(&self, req: &CustomJobRequest) -> String {
        let mut r = self.0.lock().expect("jobs lock");
        let id = job_id(r.custom.len() + 1);
        let inputs = input_artifacts(req.input.as_ref(), req.revision.as_deref());
        let data = json!({
            "actionTypeId": req.action_type,
            "actionConfiguration": {"configuration": req.configuration},
            "inputArtifacts": inputs,
            "outputArtifacts": [],
            "artifactCredentials": {"accessKeyId": "testing", "secretAccessKey": "testing", "sessionToken": "testing"},
            "pipelineContext": {
                "pipelineName": LOCAL_PIPELINE,
                "stage": {"name": stage_for(req.configuration.get("Environment").map(String::as_str).unwrap_or_default())},
                "action": {"name": "Deploy"},
                "pipelineExecutionId": job_id(0),
            },
        });
        r.custom.push(CustomJob {
            id: id.clone(),
            action_type: req.action_type.clone(),
            data,
            nonce: None,
            acknowledged: false,
        });
        id
    }

    /// The job queued again after `job` reported a continuation.
    pub fn next_job(&self, job: &str) -> Option<String> {
        self.0.lock().expect("jobs lock").next.get(job).cloned()
    }

    /// PollForJobs: queued jobs of `action_type`, each handed out with a
    /// fresh nonce (a job handed out but never acknowledged is handed out
    /// again, as after CodePipeline's dispatch timeout).
    fn poll(&self, action_type: &Value, max: usize) -> Value {
        let mut r = self.0.lock().expect("jobs lock");
        let mut handed = Vec::new();
        let mut nonces = r.nonces;
        for job in r.custom.iter_mut() {
            if handed.len() >= max || job.acknowledged || &job.action_type != action_type {
                continue;
            }
            nonces += 1;
            let nonce = format!("{nonces}");
            job.nonce = Some(nonce.clone());
            handed.push(json!({"id": job.id, "data": job.data, "nonce": nonce, "accountId": crate::names::ACCOUNT}));
        }
        r.nonces = nonces;
        json!({"jobs": handed})
    }

    /// AcknowledgeJob: the job's status, or why not.
    fn acknowledge(&self, id: &str, nonce: &str) -> Response {
        let mut r = self.0.lock().expect("jobs lock");
        let Some(job) = r.custom.iter_mut().find(|j| j.id == id) else {
            return error(StatusCode::BAD_REQUEST, "JobNotFoundException", "no such job");
        };
        if job.nonce.as_deref() != Some(nonce) {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidNonceException",
                "the nonce is not the job's current one: another worker has it",
            );
        }
        job.acknowledged = true;
        (StatusCode::OK, Json(json!({"status": "InProgress"}))).into_response()
    }

    fn details(&self, id: &str) -> Option<Value> {
        let r = self.0.lock().expect("jobs lock");
        let data = r
            .custom
            .iter()
            .find(|j| j.id == id)
            .map(|j| &j.data)
            .or_else(|| r.made.get(id))?;
        Some(json!({"jobDetails": {"id": id, "data": data, "accountId": crate::names::ACCOUNT}}))
    }

    /// Notes that the driver made job `id` for `action` in `execution`:
    /// GetJobDetails answers for it from now on.
    pub fn made(&self, id: &str, action: &MadeJob) {
        let mut data = job_event(id, &action.as_action(), None)["CodePipeline.job"]["data"].clone();
        let environment = serde_json::from_str::<Value>(&action.user_parameters)
            .ok()
            .and_then(|p| p["environment"].as_str().map(str::to_owned))
            .unwrap_or_default();
        data["actionTypeId"] = json!({"category": "Invoke", "owner": "AWS", "provider": "Lambda", "version": "1"});
        data["pipelineContext"] = json!({
            "pipelineName": action.execution.pipeline,
            "stage": {"name": stage_for(&environment)},
            "action": {"name": action.execution.action},
            "pipelineExecutionId": action.execution.id,
        });
        self.0.lock().expect("jobs lock").made.insert(id.to_owned(), data);
    }

    /// GetPipeline of the local pipeline: its source, then a stage per
    /// kind of environment holding the actions its jobs ran, the
    /// production stage after a manual approval.
    fn local_pipeline(&self) -> Value {
        let r = self.0.lock().expect("jobs lock");
        let mut actions: HashMap<(String, String), Value> = HashMap::new();
        for data in r.made.values().chain(r.custom.iter().map(|j| &j.data)) {
            let context = &data["pipelineContext"];
            if context["pipelineName"] != LOCAL_PIPELINE {
                continue;
            }
            let stage = context["stage"]["name"].as_str().unwrap_or_default().to_owned();
            let name = context["action"]["name"].as_str().unwrap_or_default().to_owned();
            actions.insert(
                (stage, name.clone()),
                json!({"name": name, "actionTypeId": data["actionTypeId"],
                       "configuration": data["actionConfiguration"]["configuration"],
                       "inputArtifacts": [{"name": "SourceArtifact"}]}),
            );
        }
        let stage = |name: &str| {
            let mut of: Vec<&Value> = actions.iter().filter(|((s, _), _)| s == name).map(|(_, a)| a).collect();
            of.sort_by_key(|a| a["name"].as_str().unwrap_or_default().to_owned());
            json!({"name": name, "actions": of})
        };
        let source = json!({"name": "Source", "actions": [{"name": "Source",
            "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
            "configuration": {"S3Bucket": crate::names::ARTIFACT_BUCKET, "S3ObjectKey": "source.zip"},
            "outputArtifacts": [{"name": "SourceArtifact"}]}]});
        let approve = json!({"name": "Approve", "actions": [{"name": "Approve",
            "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"}}]});
        json!({"pipeline": {
            "name": LOCAL_PIPELINE,
            "roleArn": format!("arn:aws:iam::{}:role/porter-codepipeline", crate::names::ACCOUNT),
            "artifactStore": {"type": "S3", "location": crate::names::ARTIFACT_BUCKET},
            "stages": [source, stage("Deploy"), approve, stage("Production")],
            "version": 1,
        }})
    }

    /// A custom job that reported a continuation is queued again under a
    /// new id, with the token.
    fn continue_custom(&self, id: &str, token: &str) {
        let mut r = self.0.lock().expect("jobs lock");
        let Some(job) = r.custom.iter().find(|j| j.id == id).cloned() else {
            return;
        };
        let next = job_id(r.custom.len() + 1);
        let mut data = job.data.clone();
        data["continuationToken"] = json!(token);
        r.custom.push(CustomJob {
            id: next.clone(),
            action_type: job.action_type,
            data,
            nonce: None,
            acknowledged: false,
        });
        r.next.insert(id.to_owned(), next);
    }

    /// Notes that `job` runs `action` in a pipeline execution.
    pub fn register(&self, execution: &PipelineExecution, job: &str) {
        let mut r = self.0.lock().expect("jobs lock");
        let key = (execution.pipeline.clone(), execution.id.clone());
        r.statuses.entry(key.clone()).or_insert_with(|| "InProgress".into());
        r.executions
            .entry(key)
            .or_default()
            .push((execution.action.clone(), job.to_owned()));
    }

    /// GetPipelineExecution's status of an execution this simulator knows.
    fn execution_status(&self, pipeline: &str, execution: &str) -> Option<String> {
        let r = self.0.lock().expect("jobs lock");
        r.statuses.get(&(pipeline.to_owned(), execution.to_owned())).cloned()
    }

    /// StopPipelineExecution: false for an execution it does not know.
    fn stop_execution(&self, pipeline: &str, execution: &str) -> bool {
        let mut r = self.0.lock().expect("jobs lock");
        match r.statuses.get_mut(&(pipeline.to_owned(), execution.to_owned())) {
            Some(status) => {
                *status = "Stopped".into();
                true
            }
            None => false,
        }
    }

    /// ListActionExecutions for one pipeline execution, as CodePipeline
    /// answers it: newest first, each with its status and the external
    /// execution id the function reported.
    fn action_executions(&self, pipeline: &str, execution: &str) -> Value {
        let r = self.0.lock().expect("jobs lock");
        let jobs = r
            .executions
            .get(&(pipeline.to_owned(), execution.to_owned()))
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
        .to_owned();
    let op = target.rsplit('.').next().unwrap_or_default();
    const OURS: &[&str] = &[
        "PutJobSuccessResult",
        "PutJobFailureResult",
        "ListActionExecutions",
        "PollForJobs",
        "AcknowledgeJob",
        "GetJobDetails",
        "GetPipelineExecution",
        "StopPipelineExecution",
        "GetPipeline",
    ];
    if !OURS.contains(&op) {
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
    if op == "GetPipeline" {
        if req["name"] != LOCAL_PIPELINE {
            return forward(moto_endpoint, headers, body).await;
        }
        return (StatusCode::OK, Json(jobs.local_pipeline())).into_response();
    }
    if op == "GetPipelineExecution" || op == "StopPipelineExecution" {
        let (Some(pipeline), Some(execution)) = (req["pipelineName"].as_str(), req["pipelineExecutionId"].as_str())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "pipelineName and pipelineExecutionId are required",
            );
        };
        let not_found = || {
            error(
                StatusCode::BAD_REQUEST,
                "PipelineExecutionNotFoundException",
                &format!("pipeline execution {execution} of {pipeline} not found"),
            )
        };
        if op == "StopPipelineExecution" {
            return match jobs.stop_execution(pipeline, execution) {
                true => (StatusCode::OK, Json(json!({"pipelineExecutionId": execution}))).into_response(),
                false => not_found(),
            };
        }
        return match jobs.execution_status(pipeline, execution) {
            Some(status) => (
                StatusCode::OK,
                Json(json!({"pipelineExecution": {
                    "pipelineName": pipeline, "pipelineExecutionId": execution, "status": status}})),
            )
                .into_response(),
            None => not_found(),
        };
    }
    if op == "PollForJobs" {
        let max = req["maxBatchSize"].as_u64().unwrap_or(1).clamp(1, 100) as usize;
        return (StatusCode::OK, Json(jobs.poll(&req["actionTypeId"], max))).into_response();
    }
    let Some(job) = req["jobId"].as_str().map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "jobId is required");
    };
    if op == "AcknowledgeJob" {
        return jobs.acknowledge(&job, req["nonce"].as_str().unwrap_or_default());
    }
    if op == "GetJobDetails" {
        return match jobs.details(&job) {
            Some(v) => (StatusCode::OK, Json(v)).into_response(),
            None => error(StatusCode::BAD_REQUEST, "JobNotFoundException", "no such job"),
        };
    }
    if op == "PutJobSuccessResult" {
        let token = req["continuationToken"].as_str().map(str::to_owned);
        let variables: HashMap<String, String> = req["outputVariables"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
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
            job.clone(),
            JobResult::Success {
                continuation_token: token.clone(),
                summary: d["summary"].as_str().map(str::to_owned),
                percent: d["percentComplete"].as_i64(),
                external_id: d["externalExecutionId"].as_str().map(str::to_owned),
                output_variables: variables,
            },
        );
        if !recorded {
            return already_answered();
        }
        if let Some(t) = &token {
            jobs.continue_custom(&job, t);
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
                message: message.to_owned(),
                external_id: f["externalExecutionId"].as_str().map(str::to_owned),
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
#[derive(Debug, Clone)]
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

/// A job's input artifacts as CodePipeline lists them: the source
/// artifact in S3, with its revision.
fn input_artifacts(input: Option<&S3Object>, revision: Option<&str>) -> Vec<Value> {
    input
        .iter()
        .map(|i| {
            json!({"name": "SourceArtifact", "revision": revision,
                   "location": {"type": "S3", "s3Location": {"bucketName": i.bucket, "objectKey": i.key}}})
        })
        .collect()
}

/// The job event CodePipeline sends (credentials are the local stack's).
pub fn job_event(id: &str, action: &Action, token: Option<&str>) -> Value {
    let inputs = input_artifacts(action.input.as_ref(), action.revision.as_deref());
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

/// A job the driver makes, as it tells the host (GetJobDetails then
/// answers for it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MadeJob {
    pub function: String,
    pub user_parameters: String,
    pub input: Option<S3Object>,
    pub revision: Option<String>,
    pub execution: PipelineExecution,
}

impl MadeJob {
    /// The jobs of `action`, in its pipeline execution or a new one of the
    /// local pipeline.
    pub fn of(action: &Action) -> MadeJob {
        MadeJob {
            function: action.function.clone(),
            user_parameters: action.user_parameters.clone(),
            input: action.input.clone(),
            revision: action.revision.clone(),
            execution: action
                .pipeline_execution
                .clone()
                .unwrap_or_else(|| new_execution("Deploy")),
        }
    }

    fn as_action(&self) -> Action {
        Action {
            function: self.function.clone(),
            user_parameters: self.user_parameters.clone(),
            input: self.input.clone(),
            revision: self.revision.clone(),
            wait: Duration::ZERO,
            max_calls: 1,
            pipeline_execution: Some(self.execution.clone()),
        }
    }
}

/// Runs the action to its end through the Lambda host at `host`.
pub async fn run_action(host: &str, action: &Action, out: &mut dyn Write) -> Result<ActionEnd> {
    let client = reqwest::Client::new();
    let mut token: Option<String> = None;
    let mut seen = Seen::default();
    // Every job of the action belongs to one execution of its pipeline.
    let made = MadeJob::of(action);
    for call in 1..=action.max_calls {
        let id = job_id(call);
        client
            .post(format!("{host}/porter-local/jobs/{id}/made"))
            .json(&made)
            .send()
            .await?
            .error_for_status()?;
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
        let result = invoke_until_reported(&client, host, &action.function, &event, &id, &mut |attempts, errored, body| {
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
            Ok(())
        })
        .await?;
        match settle(call, &id, result, &mut seen, out)? {
            Settled::Ended(end) => return Ok(end),
            Settled::Continue(t) => {
                token = Some(t);
                tokio::time::sleep(action.wait).await;
            }
        }
    }
    bail!("the action was still in progress after {} calls", action.max_calls)
}

/// What the first continuation of an action said.
#[derive(Default)]
struct Seen {
    first_token: Option<String>,
    first_external_id: Option<String>,
}

enum Settled {
    Ended(ActionEnd),
    /// Go on with this token.
    Continue(String),
}

/// Prints one job's result and says whether the action ended.
fn settle(call: usize, id: &str, result: JobResult, seen: &mut Seen, out: &mut dyn Write) -> Result<Settled> {
    Ok(match result {
        JobResult::Failure { message, .. } => {
            writeln!(out, "  call {call}: job {id} FAILED: {message}")?;
            Settled::Ended(ActionEnd {
                succeeded: false,
                calls: call,
                message,
                variables: HashMap::new(),
                first_token: seen.first_token.take(),
                first_external_id: seen.first_external_id.take(),
            })
        }
        JobResult::Success {
            continuation_token: Some(t),
            summary,
            percent,
            external_id,
            ..
        } => {
            if seen.first_external_id.is_none() {
                seen.first_external_id = external_id;
            }
            writeln!(
                out,
                "  call {call}: in progress ({}%): {}",
                percent.unwrap_or(0),
                summary.unwrap_or_default()
            )?;
            seen.first_token.get_or_insert(t.clone());
            Settled::Continue(t)
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
            Settled::Ended(ActionEnd {
                succeeded: true,
                calls: call,
                message: summary.unwrap_or_default(),
                variables: output_variables,
                first_token: seen.first_token.take(),
                first_external_id: seen.first_external_id.take(),
            })
        }
    })
}

/// How the custom action's worker is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The action's STARTED event first, the schedule after.
    Event,
    /// Only the schedule: no event announced the job.
    Schedule,
}

/// The action type `job_worker` serves, as PollForJobs names it.
pub fn porter_action_type() -> Value {
    json!({"category": "Deploy", "owner": "Custom", "provider": porter_lambda::job_worker::PROVIDER,
           "version": porter_lambda::job_worker::VERSION})
}

/// The wake-ups CodePipeline and EventBridge send the worker.
pub fn wake_event(wake: Wake) -> Value {
    match wake {
        Wake::Event => json!({
            "version": "0", "source": "aws.codepipeline", "account": crate::names::ACCOUNT,
            "detail-type": "CodePipeline Action Execution State Change", "region": crate::names::REGION,
            "detail": {"pipeline": LOCAL_PIPELINE, "stage": "Deploy", "action": "Deploy", "state": "STARTED",
                       "type": porter_action_type()}
        }),
        Wake::Schedule => json!({
            "version": "0", "source": "aws.events", "account": crate::names::ACCOUNT,
            "detail-type": "Scheduled Event", "region": crate::names::REGION, "detail": {}
        }),
    }
}

/// Runs a custom action to its end: queues its job, then wakes the
/// `pipeline` function (the worker) until the job, or the job queued again
/// with its continuation token, has its final result.
pub async fn run_custom_action(
    host: &str,
    job: &CustomJobRequest,
    wake: Wake,
    wait: Duration,
    max_calls: usize,
    out: &mut dyn Write,
) -> Result<ActionEnd> {
    let client = reqwest::Client::new();
    let mut id: String = client
        .post(format!("{host}/porter-local/custom-jobs"))
        .json(job)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut seen = Seen::default();
    for call in 1..=max_calls {
        let event = wake_event(if call == 1 { wake } else { Wake::Schedule });
        let result = invoke_until_reported(&client, host, "porter-pipeline", &event, &id, &mut |attempts, _, body| {
            if attempts >= 3 {
                bail!("job {id} was left waiting: {attempts} wake-ups of the worker did not work it (last answer: {body})");
            }
            Ok(())
        })
        .await?;
        match settle(call, &id, result, &mut seen, out)? {
            Settled::Ended(end) => return Ok(end),
            Settled::Continue(_) => {
                id = client
                    .get(format!("{host}/porter-local/jobs/{id}/next"))
                    .send()
                    .await?
                    .json::<Option<String>>()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("job {id} continued but was not queued again"))?;
                tokio::time::sleep(wait).await;
            }
        }
    }
    bail!("the custom action was still in progress after {max_calls} wake-ups")
}
/// Invokes `function` with `event` until job `id` has a result, as Lambda
/// retries an invocation that reports nothing. After each invocation that
/// left no result, `unreported` hears the attempt's number, whether the
/// function errored and its answer, and ends the retries with an error.
async fn invoke_until_reported(
    client: &reqwest::Client,
    host: &str,
    function: &str,
    event: &Value,
    id: &str,
    unreported: &mut dyn FnMut(u32, bool, String) -> Result<()>,
) -> Result<JobResult> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let resp = client
            .post(format!("{host}/2015-03-31/functions/{function}/invocations"))
            .json(event)
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
            return Ok(r);
        }
        unreported(attempts, errored, body)?;
    }
}
