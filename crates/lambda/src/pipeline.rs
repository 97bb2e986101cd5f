//! `pipeline`: the whole deploy as one CodePipeline action.
//!
//! The first call starts the deploy state machine, named after the job id
//! so a re-delivered job finds its execution instead of starting another;
//! the token is the execution ARN. Each later call reads the execution and
//! reports progress, the outputs, or the failing state's error and cause.

use aws_sdk_sfn::types::ExecutionStatus;
use porter_core::aws;
use porter_core::execution::{self, Report};
use porter_core::pack::DeployInput;
use porter_core::phase::PhaseError;
use serde_json::Value;

use crate::codepipeline::{self, failure, Job, Outcome};
use crate::token::{self, Binding};
use crate::{Context, FunctionError};

pub async fn handle(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    let (job, problem) = codepipeline::parse(ctx, event)?;
    work(ctx, job, problem).await
}

/// Works one job one step and reports it: an invoke action's job, or a
/// custom action's the job worker polled; `problem` fails it at once.
pub async fn work(ctx: &Context, mut job: Job, problem: Option<String>) -> Result<Value, FunctionError> {
    tracing::info!(job = %job.id, continuing = job.continuation.is_some(), "pipeline job");
    let problem = crate::origin::checked(ctx, &mut job, problem).await?;
    let (outcome, external) = match problem {
        Some(p) => (failure(&PhaseError::Invalid(p)), None),
        None => match run(ctx, &job).await {
            Ok((o, arn)) => (o, Some(arn)),
            Err(Failed {
                error: e,
                execution: arn,
            }) => match codepipeline::same_token(&job, "the deploy", &e) {
                Some(again) => (again, arn),
                None => {
                    // The job fails: the execution it follows must not go on
                    // deploying with nobody watching.
                    let stopped = match &arn {
                        Some(arn) => stop(ctx, arn, &e).await,
                        None => String::new(),
                    };
                    let message = codepipeline::failure_message(&e) + &stopped;
                    (Outcome::Failed { message }, arn)
                }
            },
        },
    };
    codepipeline::report(ctx, &job, outcome, external.as_deref()).await
}

/// Stops the execution a failed job followed, if it still runs; what to
/// add to the job's failure message. Its lease goes to the next deploy
/// (an aborted execution gives nothing back itself).
async fn stop(ctx: &Context, arn: &str, why: &PhaseError) -> String {
    let out = ctx
        .sfn()
        .stop_execution()
        .execution_arn(arn)
        .error("PipelineJobFailed")
        .cause(
            format!("the CodePipeline job following it failed: {why}")
                .chars()
                .take(32_000)
                .collect::<String>(),
        )
        .send()
        .await;
    match out {
        Ok(_) => {
            tracing::warn!(execution = arn, "stopped the execution of a failed job");
            format!("; the deploy execution {arn} was stopped")
        }
        Err(e) => {
            let e = aws::classify(&format!("stop execution {arn}"), e);
            tracing::error!(execution = arn, error = %e, "could not stop the execution of a failed job");
            format!("; the deploy execution {arn} could not be stopped ({e}): stop it by hand")
        }
    }
}

/// The most a deploy run by a CodePipeline action may bake: the action
/// runs at most 24 hours, and the rest of a deploy (stacks of up to an
/// hour, cutovers of up to ten minutes per wave) needs the other four.
pub const LONGEST_BAKE_SECONDS: u32 = 20 * 3600;

/// Execution names allow letters, digits, `-` and `_`, at most 80.
pub fn execution_name(job_id: &str) -> String {
    job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(80)
        .collect()
}

/// A step of a job that failed, with the execution it followed when one
/// was known by then (a failed job stops it).
#[derive(Debug)]
struct Failed {
    error: PhaseError,
    execution: Option<String>,
}

impl From<PhaseError> for Failed {
    fn from(error: PhaseError) -> Failed {
        Failed { error, execution: None }
    }
}

/// The outcome and the execution followed.
async fn run(ctx: &Context, job: &Job) -> Result<(Outcome, String), Failed> {
    let binding = Binding {
        function: "pipeline".into(),
        environment: job.environment()?,
        release: None,
        origin: job.origin_binding(),
    };
    let key = token::key(ctx).await?;
    match &job.continuation {
        None => Ok(start(ctx, job, &key, &binding).await?),
        Some(t) => {
            let arn = token::open(&key, &binding, t)?;
            // Sealed here, so ours; and only ever an execution of this
            // function's own state machine.
            if let Some(machine) = &ctx.state_machine_arn {
                let executions = format!("{}:", machine.replacen(":stateMachine:", ":execution:", 1));
                if !arn.starts_with(&executions) {
                    return Err(PhaseError::Invalid(format!(
                        "the continuation token names execution {arn}, which is not one of {machine}; it is not followed"
                    ))
                    .into());
                }
            }
            match check(ctx, &arn, &key, &binding).await {
                Ok(o) => Ok((o, arn)),
                Err(error) => Err(Failed {
                    error,
                    execution: Some(arn),
                }),
            }
        }
    }
}

async fn start(ctx: &Context, job: &Job, key: &[u8], binding: &Binding) -> Result<(Outcome, String), PhaseError> {
    let machine = ctx.state_machine_arn.clone().ok_or_else(|| {
        PhaseError::Invalid(
            "STATE_MACHINE_ARN is not set on the pipeline function; deploy it with infra/template.yaml".into(),
        )
    })?;
    let mut pack = job.pack_input(ctx.artifact_bucket.as_deref())?;
    pack.longest_bake_seconds = Some(LONGEST_BAKE_SECONDS);
    let environment = pack.environment.clone();
    let input = DeployInput {
        pack,
        keep: job.u32_param("keep")?.unwrap_or(0),
        wait_for_lease: job.bool_param("wait_for_lease")?.unwrap_or(false),
    };
    let name = execution_name(&job.id);
    let arn = match ctx
        .sfn()
        .start_execution()
        .state_machine_arn(&machine)
        .name(&name)
        .input(serde_json::to_string(&input).expect("the input serializes"))
        .send()
        .await
    {
        Ok(out) => out.execution_arn().to_owned(),
        Err(e) if e.as_service_error().is_some_and(|se| se.is_execution_already_exists()) => {
            // A re-delivered job: the execution it started is the one to follow.
            tracing::info!(execution = %name, "execution already started for this job");
            format!("{}:{name}", machine.replacen(":stateMachine:", ":execution:", 1))
        }
        Err(e) => return Err(aws::classify("start the deploy state machine", e)),
    };
    Ok((
        Outcome::Continue {
            token: token::seal(key, binding, &arn),
            summary: format!("deploy of {environment} started: execution {name}"),
            percent: 5,
        },
        arn,
    ))
}

async fn check(ctx: &Context, arn: &str, key: &[u8], binding: &Binding) -> Result<Outcome, PhaseError> {
    if !arn.starts_with("arn:") {
        return Err(PhaseError::Invalid(format!(
            "the continuation token `{arn}` is not an execution ARN porter wrote"
        )));
    }
    let d = ctx.describe_execution(arn).await?;
    match d.status() {
        ExecutionStatus::Running | ExecutionStatus::PendingRedrive => {
            let events = porter_core::history::progress(ctx.sfn(), arn).await?;
            let (summary, percent) = execution::summary(&events);
            Ok(Outcome::Continue {
                token: token::seal(key, binding, arn),
                summary,
                percent,
            })
        }
        ExecutionStatus::Succeeded => {
            let report = Report::parse(d.output().unwrap_or_default())
                .map_err(|e| PhaseError::Invalid(format!("execution {arn} succeeded, but {e}")))?;
            Ok(Outcome::Succeeded {
                summary: report.summary(),
                variables: report.variables().into_iter().collect(),
            })
        }
        other => Ok(Outcome::Failed {
            message: format!(
                "the deploy execution {}: {}: {}",
                other.as_str(),
                d.error().unwrap_or("no error name"),
                execution::readable_cause(d.cause().unwrap_or("no cause given"))
            ),
        }),
    }
}
