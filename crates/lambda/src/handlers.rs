//! Each function's handler: the glue from an event to its core phase.

use std::future::Future;
use std::pin::Pin;

use porter_core::aws::Aws;
use porter_core::phase::{Phase, PhaseError, Step};
use porter_core::{pack, promote, provision, prune};
use serde_json::Value;

use crate::{abort, codepipeline, job_worker, jobs, lease, notify, pipeline, pipeline_stopped, trigger};
use crate::{Context, FunctionError};

fn parse<T: serde::de::DeserializeOwned>(phase: Phase, event: Value) -> Result<T, FunctionError> {
    serde_json::from_value(event).map_err(|e| FunctionError::BadEvent {
        phase: phase.name(),
        detail: e.to_string(),
    })
}

fn to_value<S: serde::Serialize, O: serde::Serialize>(step: Step<S, O>) -> Value {
    serde_json::to_value(step).expect("steps serialize")
}

/// The future a [`Handler`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One function's whole answer to an invocation. Each `main` passes its own
/// to [`run`], so a bootstrap links only its own handler and the SDK
/// clients that handler calls: nothing dispatches on a name at run time.
pub type Handler = for<'a> fn(&'a Context, Value) -> BoxFuture<'a, Result<Value, FunctionError>>;

/// The pack phase: a Step Functions state or a CodePipeline job.
pub const PACK: Handler = |ctx, event| Box::pin(pack(ctx, event));
/// The provision phase: a Step Functions state or a CodePipeline job.
pub const PROVISION: Handler = |ctx, event| Box::pin(provision(ctx, event));
/// The promote phase: a Step Functions state or a CodePipeline job; and
/// the abort of a deploy (`porter abort`, or an EventBridge rule on the
/// state machine's aborted and timed-out executions).
pub const PROMOTE: Handler = |ctx, event| Box::pin(promote(ctx, event));
/// The prune phase: a Step Functions state or a CodePipeline job.
pub const PRUNE: Handler = |ctx, event| Box::pin(prune(ctx, event));
/// The deploy action of a pipeline (an invoke action's job, or the custom
/// action's jobs it polls for when woken), and the clean-up when a
/// pipeline execution ends early (its EventBridge state change).
pub const PIPELINE: Handler = |ctx, event| {
    Box::pin(async move {
        if pipeline_stopped::is_state_change(&event) {
            pipeline_stopped::handle(ctx, event).await
        } else if job_worker::is_wake_up(&event) {
            job_worker::handle(ctx, event).await
        } else {
            pipeline::handle(ctx, event).await
        }
    })
};
/// Branch and schedule events that start pipelines.
pub const TRIGGER: Handler = |ctx, event| Box::pin(trigger::handle(ctx, event));
/// The deploy lease: one deploy per service and environment at a time.
pub const LEASE: Handler = |ctx, event| Box::pin(lease::handle(ctx, event));
/// Deploy notices: the SNS topic and the service's Slack webhooks.
pub const NOTIFY: Handler = |ctx, event| Box::pin(notify::handle(ctx, event));
/// The service's hooks between the phases.
pub const HOOKS: Handler = |ctx, event| Box::pin(hooks(ctx, event));

async fn pack(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    if codepipeline::is_job(&event) {
        return jobs::handle(ctx, Phase::Pack, event, jobs::PACK).await;
    }
    log_step(Phase::Pack, &event);
    let mut input: pack::PackInput = parse(Phase::Pack, event)?;
    // Payloads go to the artifact bucket only: without one, pack would
    // assume a deployment role to write to the region's bucket, and only
    // the regional phases may assume deployment roles.
    if let Some(own) = &ctx.artifact_bucket {
        match &input.artifact_bucket {
            Some(named) if named != own => {
                return Err(PhaseError::Invalid(format!(
                    "pack writes payloads to its artifact bucket {own}, and the input names {named}; leave artifact_bucket out"
                ))
                .into())
            }
            _ => input.artifact_bucket = Some(own.clone()),
        }
    }
    input.image_parameter = ctx.image_parameter.clone();
    input.allowed_references = ctx.allowed_references.clone();
    if let (pack::Source::Path(folder), false) = (&input.source, ctx.local_sources) {
        return Err(PhaseError::Invalid(format!(
            "pack takes its source from S3 (a pipeline's source artifact) or a release's version; `source.path` ({}) names a folder on the function's own machine, which is not a source",
            porter_core::aws::clip(&folder.display().to_string(), 200)
        ))
        .into());
    }
    let packed = Box::pin(pack::run(&ctx.aws, &input)).await?;
    Ok(to_value(Step::<(), _>::Done { output: packed.release }))
}

/// A hooks step of the state machine: `state` is the last call's, when
/// it resumes.
async fn hooks(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    let (input, state) = hooks_event(event)?;
    if matches!(input.source, pack::Source::Path(_)) && !ctx.local_sources {
        return Err(PhaseError::Invalid(
            "hooks take the deploy's source from S3; a folder on the function's own machine is not a source".into(),
        )
        .into());
    }
    let runner = ctx.hooks.as_ref().ok_or_else(|| {
        PhaseError::Invalid("HOOKS_PROJECT is not set: the hooks function needs the infra's hooks project".into())
    })?;
    let step = porter_core::hooks::run(&ctx.aws, runner, &input, state).await?;
    Ok(to_value(step))
}

/// What a hooks step hands the function: its input, the state it left
/// pending (when it resumes), and after a failure the execution's whole
/// state (`after_failure`), whose phase names the `post_` hooks due.
pub fn hooks_event(
    mut event: Value,
) -> Result<(porter_core::hooks::HooksInput, Option<porter_core::hooks::HooksState>), FunctionError> {
    let bad = |e: serde_json::Error| FunctionError::BadEvent {
        phase: "hooks",
        detail: e.to_string(),
    };
    let Some(fields) = event.as_object_mut() else {
        return Err(FunctionError::BadEvent {
            phase: "hooks",
            detail: "expected an object".into(),
        });
    };
    let state = match fields.remove("state") {
        None | Some(Value::Null) => None,
        Some(s) => Some(serde_json::from_value(s).map_err(bad)?),
    };
    if let Some(after) = fields.remove("after_failure") {
        let points: Vec<String> = porter_core::execution::phase_reached(&after)
            .filter(|p| Phase::from_name(p).is_some())
            .map(|p| format!("post_{p}"))
            .into_iter()
            .collect();
        fields.insert("points".into(), serde_json::json!(points));
        fields.insert("failed".into(), Value::Bool(true));
    }
    Ok((serde_json::from_value(event).map_err(bad)?, state))
}

async fn provision(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    regional(ctx, Phase::Provision, event, jobs::PROVISION, provision::run).await
}

async fn promote(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    // An abort is promote's undo, for an execution that will not finish
    // (stopped by `porter abort`, from the console, or timed out).
    if abort::is_request(&event) || abort::is_execution_status(&event) {
        return abort::handle(ctx, event).await;
    }
    // The rollout's alarm gate is part of promote: it reads alarms through
    // the same deployment role, in the regions promote just cut over.
    if let Some(gate) = event.get("gate") {
        let input: porter_core::gate::GateInput =
            serde_json::from_value(gate.clone()).map_err(|e| FunctionError::BadEvent {
                phase: "promote",
                detail: format!("`gate`: {e}"),
            })?;
        let gated = porter_core::gate::run(&ctx.aws, input).await?;
        return Ok(to_value(Step::<(), _>::Done { output: gated }));
    }
    regional(ctx, Phase::Promote, event, jobs::PROMOTE, promote::run).await
}

async fn prune(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    regional(ctx, Phase::Prune, event, jobs::PRUNE, prune::run).await
}

/// Provision, promote or prune: a CodePipeline job goes to `job`, anything
/// else is the phase's input for `run`.
async fn regional<'a, I, S, O, Fut>(
    ctx: &'a Context,
    phase: Phase,
    event: Value,
    job: jobs::JobRun,
    run: impl FnOnce(&'a Aws, I) -> Fut,
) -> Result<Value, FunctionError>
where
    I: serde::de::DeserializeOwned,
    S: serde::Serialize,
    O: serde::Serialize,
    Fut: Future<Output = Result<Step<S, O>, PhaseError>>,
{
    if codepipeline::is_job(&event) {
        return jobs::handle(ctx, phase, event, job).await;
    }
    log_step(phase, &event);
    Ok(to_value(Box::pin(run(&ctx.aws, parse(phase, event)?)).await?))
}

/// A phase run for a Step Functions state (or any direct invoke).
fn log_step(phase: Phase, event: &Value) {
    tracing::info!(
        phase = phase.name(),
        resuming = event.get("state").is_some_and(|s| !s.is_null()),
        "invoked"
    );
}
