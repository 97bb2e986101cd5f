//! A pipeline execution that is stopped, superseded or fails while the
//! deploy it started still runs: the `pipeline` function takes
//! CodePipeline's "Pipeline Execution State Change" events (an EventBridge
//! rule in the infra) and stops the deploy executions that execution's
//! actions reported, then gives back the deploy lease each held.
//!
//! An aborted execution runs no Catch, so this is its clean-up. What it
//! left half done (a region cut over, another not) is finished by the next
//! deploy, which takes the lease and promotes its own release everywhere;
//! prune then deletes the stopped release's stacks.

use porter_core::aws;
use porter_core::execution::Progress;
use porter_core::phase::PhaseError;
use serde::Deserialize;
use serde_json::{json, Value};

use porter_core::lease;

use crate::{Context, FunctionError};

/// The state changes after which nothing of the pipeline execution may go on.
const ENDED: &[&str] = &["STOPPED", "SUPERSEDED", "FAILED"];

/// What GetPipelineExecution says of an execution that may go on no more.
const CONFIRMED: &[&str] = &["Stopped", "Stopping", "Superseded", "Failed"];

/// The execution's status as CodePipeline has it.
async fn confirmed_status(ctx: &Context, d: &Detail) -> Result<String, FunctionError> {
    let out = ctx
        .codepipeline()
        .get_pipeline_execution()
        .pipeline_name(&d.pipeline)
        .pipeline_execution_id(&d.execution_id)
        .send()
        .await
        .map_err(aws::err(format!(
            "confirm pipeline {} execution {} with CodePipeline",
            d.pipeline, d.execution_id
        )))?;
    Ok(out
        .pipeline_execution()
        .and_then(|e| e.status())
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default())
}

pub fn is_state_change(event: &Value) -> bool {
    event["source"] == "aws.codepipeline" && event["detail-type"] == "CodePipeline Pipeline Execution State Change"
}

#[derive(Deserialize)]
struct Detail {
    pipeline: String,
    #[serde(rename = "execution-id")]
    execution_id: String,
    state: String,
}

fn bad(detail: String) -> FunctionError {
    FunctionError::BadEvent {
        phase: "pipeline",
        detail,
    }
}

pub async fn handle(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    let d: Detail = serde_json::from_value(event["detail"].clone()).map_err(|e| {
        bad(format!(
            "a pipeline state change needs detail.pipeline, execution-id and state: {e}"
        ))
    })?;
    let name_ok = |s: &str, n: usize| {
        !s.is_empty() && s.len() <= n && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    };
    if !name_ok(&d.pipeline, 100) || !name_ok(&d.execution_id, 64) {
        return Err(bad(format!(
            "detail.pipeline and detail.execution-id must be CodePipeline names, not `{}` and `{}`",
            aws::clip(&d.pipeline, 100),
            aws::clip(&d.execution_id, 64)
        )));
    }
    if !ENDED.contains(&d.state.as_str()) {
        return Ok(json!({"ignored": format!(
            "pipeline {} execution {} is {}; only a stopped, superseded or failed one stops its deploys",
            d.pipeline, d.execution_id, aws::clip(&d.state, 40)
        )}));
    }
    // The event is only a claim: CodePipeline says whether the execution
    // really ended before anything of it is stopped.
    let status = confirmed_status(ctx, &d).await?;
    if !CONFIRMED.contains(&status.as_str()) {
        return Ok(json!({"ignored": format!(
            "the event says pipeline {} execution {} is {}, but CodePipeline says it is {status}; nothing was stopped",
            d.pipeline, d.execution_id, aws::clip(&d.state, 40)
        )}));
    }
    let machine = ctx
        .state_machine_arn
        .as_deref()
        .ok_or_else(|| PhaseError::Invalid("STATE_MACHINE_ARN is not set on the pipeline function".into()))?;
    let ours = format!("{}:", machine.replacen(":stateMachine:", ":execution:", 1));
    let mut stopped = Vec::new();
    let mut given = Vec::new();
    for arn in reported_executions(ctx, &d).await? {
        // Only executions of this function's own state machine.
        if !arn.starts_with(&ours) {
            continue;
        }
        let status = ctx.describe_execution(&arn).await?;
        if status.status() != &aws_sdk_sfn::types::ExecutionStatus::Running {
            continue;
        }
        ctx.sfn()
            .stop_execution()
            .execution_arn(&arn)
            .error("PipelineExecutionEnded")
            .cause(format!(
                "pipeline {} execution {} was {}: its deploy does not go on",
                d.pipeline, d.execution_id, d.state
            ))
            .send()
            .await
            .map_err(aws::err(format!("stop execution {arn}")))?;
        tracing::warn!(execution = %arn, pipeline = %d.pipeline, state = %d.state, "stopped the deploy of an ended pipeline execution");
        if let Some(key) = give_back(ctx, &arn).await? {
            given.push(key);
        }
        stopped.push(arn);
    }
    Ok(json!({
        "pipeline": d.pipeline,
        "execution": d.execution_id,
        "state": d.state,
        "stopped": stopped,
        "leases_given": given,
    }))
}

/// The external execution ids the pipeline execution's actions reported.
async fn reported_executions(ctx: &Context, d: &Detail) -> Result<Vec<String>, PhaseError> {
    let filter = aws_sdk_codepipeline::types::ActionExecutionFilter::builder()
        .pipeline_execution_id(&d.execution_id)
        .build();
    let mut pages = ctx
        .codepipeline()
        .list_action_executions()
        .pipeline_name(&d.pipeline)
        .filter(filter)
        .into_paginator()
        .send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws::err(format!(
            "list the actions of pipeline {} execution {}",
            d.pipeline, d.execution_id
        )))?;
        for a in page.action_execution_details() {
            if let Some(id) = a
                .output()
                .and_then(|o| o.execution_result())
                .and_then(|r| r.external_execution_id())
            {
                if !arns.iter().any(|x| x == id) {
                    arns.push(id.to_owned());
                }
            }
        }
    }
    Ok(arns)
}

/// Gives back the lease `arn` holds, if it took one (it does so after
/// pack, whose output names the service and environment).
async fn give_back(ctx: &Context, arn: &str) -> Result<Option<String>, PhaseError> {
    for p in porter_core::history::progress(ctx.sfn(), arn).await? {
        if let Progress::Packed(r) = p {
            return give_back_lease(ctx, arn, &r.service, &r.environment).await;
        }
    }
    Ok(None)
}

/// Gives back the deploy lease of `service` in `environment` if `arn`
/// holds it: the key given back, or `None`.
pub(crate) async fn give_back_lease(
    ctx: &Context,
    arn: &str,
    service: &str,
    environment: &str,
) -> Result<Option<String>, PhaseError> {
    let Some(table) = ctx.lease_table.as_deref() else {
        return Ok(None);
    };
    let ddb = aws_sdk_dynamodb::Client::new(ctx.aws.sdk_config());
    let key = lease::lease_key(service, environment);
    let g = lease::give(&ddb, table, &key, arn).await?;
    Ok(g.given.then_some(key))
}
