//! Jobs verified before anything runs.
//!
//! A `CodePipeline.job` event is a claim anyone who may invoke a function
//! can make. So each job is read back from CodePipeline (`GetJobDetails`:
//! its pipeline, stage, action and execution, and the configuration and
//! input artifact CodePipeline holds for it), the event must agree with
//! it, and the pipeline's declaration (`GetPipeline`) must let that stage
//! deploy what the job asks ([`porter_core::job_origin`]). A job
//! CodePipeline does not know is refused without a result (there is no job
//! to report on); any other refusal fails the job, saying why.
//!
//! AWS documents `GetJobDetails` for custom actions; it answers for the
//! jobs of invoke actions in the same account as well, with their
//! pipeline context, and the functions' roles may call it for no other
//! purpose. (The other proof, an in-progress action execution of one of
//! the installation's pipelines whose configuration and input artifact are
//! the job's, costs a listing of every candidate pipeline's executions on
//! each call: kept in mind, not needed.)

use aws_sdk_codepipeline::types::{ActionCategory, JobData, PipelineDeclaration};
use porter_core::aws;
use porter_core::job_origin::{Action, Origin, Stage};
use porter_core::phase::PhaseError;
use porter_core::release::S3Object;
use serde_json::Value;

use crate::codepipeline::Job;
use crate::{Context, FunctionError};

/// Why a job was not worked.
#[derive(Debug)]
pub enum Refused {
    /// CodePipeline does not know the job: nothing to report on.
    Unknown(PhaseError),
    /// CodePipeline's job, which may not do what it asks: fail it.
    Denied(PhaseError),
}

/// What is wrong with `job` before it is worked, if anything: `problem`
/// (from reading its event), or why it may not run. A job CodePipeline
/// does not know is an error: there is no job to fail.
pub async fn checked(ctx: &Context, job: &mut Job, problem: Option<String>) -> Result<Option<String>, FunctionError> {
    if problem.is_some() {
        return Ok(problem);
    }
    match verify(ctx, job).await {
        Ok(origin) => {
            job.origin = origin;
            Ok(None)
        }
        Err(Refused::Unknown(e)) => Err(e.into()),
        Err(Refused::Denied(e)) => Ok(Some(e.to_string())),
    }
}

/// Reads `job` back from CodePipeline and checks it against the
/// installation's rules; its origin when it may run.
pub async fn verify(ctx: &Context, job: &Job) -> Result<Option<Origin>, Refused> {
    if ctx.unverified_jobs {
        return Ok(None);
    }
    let denied = |m: String| Refused::Denied(PhaseError::Invalid(m));
    let Some(rules) = &ctx.job_rules else {
        return Err(denied(
            "this function has no pipeline rules (PIPELINE_NAME, APPROVED_ENVIRONMENTS): it works no CodePipeline job; deploy it with infra/template.yaml".into(),
        ));
    };
    let details = match ctx.codepipeline().get_job_details().job_id(&job.id).send().await {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_job_not_found_exception() || se.is_validation_exception()) =>
        {
            return Err(Refused::Unknown(PhaseError::Invalid(format!(
                "job {} is not one CodePipeline made in this account: nothing was done",
                aws::clip(&job.id, 64)
            ))))
        }
        Err(e) => return Err(Refused::Denied(aws::classify("read the job back from CodePipeline", e))),
    };
    let Some(data) = details.job_details().and_then(|d| d.data()) else {
        return Err(denied(format!("CodePipeline holds no data for job {}", job.id)));
    };
    agrees(job, data).map_err(denied)?;
    let origin = origin_of(data).ok_or_else(|| denied(format!("CodePipeline names no pipeline for job {}", job.id)))?;
    if let Some(why) = rules.foreign(&origin.pipeline) {
        return Err(denied(format!("job {}: {why}; nothing was done", job.id)));
    }
    let declared = ctx
        .codepipeline()
        .get_pipeline()
        .name(&origin.pipeline)
        .send()
        .await
        .map_err(|e| Refused::Denied(aws::classify(&format!("read pipeline {}", origin.pipeline), e)))?;
    let Some(pipeline) = declared.pipeline() else {
        return Err(denied(format!("pipeline {} came back empty", origin.pipeline)));
    };
    let environment = job.environment().map_err(Refused::Denied)?;
    rules
        .check(
            &origin,
            &stages_of(pipeline),
            &environment,
            &artifact_stores(pipeline),
            job.input.as_ref(),
        )
        .map_err(|why| denied(format!("job {}: {why}; nothing was done", job.id)))?;
    Ok(Some(origin))
}

/// The event must say what CodePipeline holds: the same UserParameters
/// (an invoke action's) and the same input artifact.
fn agrees(job: &Job, data: &JobData) -> Result<(), String> {
    let configuration = data.action_configuration().and_then(|c| c.configuration());
    let invoke = data
        .action_type_id()
        .is_some_and(|t| t.category() == &ActionCategory::Invoke);
    if invoke {
        let held = configuration
            .and_then(|c| c.get("UserParameters"))
            .map(String::as_str)
            .unwrap_or_default();
        if held.trim() != job.user_parameters.trim() {
            return Err(format!(
                "job {}'s UserParameters are not the ones its action holds in CodePipeline; nothing was done",
                job.id
            ));
        }
    }
    let held_input = data.input_artifacts().first().and_then(|a| {
        let s3 = a.location()?.s3_location()?;
        Some(S3Object {
            bucket: s3.bucket_name().to_owned(),
            key: s3.object_key().to_owned(),
        })
    });
    if held_input != job.input {
        return Err(format!(
            "job {}'s input artifact is not the one CodePipeline holds for it; nothing was done",
            job.id
        ));
    }
    Ok(())
}

fn origin_of(data: &JobData) -> Option<Origin> {
    let p = data.pipeline_context()?;
    Some(Origin {
        pipeline: p.pipeline_name()?.to_owned(),
        stage: p.stage()?.name()?.to_owned(),
        action: p.action()?.name()?.to_owned(),
        execution: p.pipeline_execution_id()?.to_owned(),
    })
}

/// A declaration's stages: which hold a manual approval, and the
/// environment each action deploys (an invoke action's UserParameters
/// `environment`, the custom action's `Environment`).
pub fn stages_of(pipeline: &PipelineDeclaration) -> Vec<Stage> {
    pipeline
        .stages()
        .iter()
        .map(|s| Stage {
            name: s.name().to_owned(),
            approval: s.actions().iter().any(|a| {
                a.action_type_id()
                    .is_some_and(|t| t.category() == &ActionCategory::Approval && t.provider() == "Manual")
            }),
            actions: s
                .actions()
                .iter()
                .map(|a| Action {
                    name: a.name().to_owned(),
                    environment: a.configuration().and_then(|c| {
                        c.get("Environment").cloned().or_else(|| {
                            let params: Value = serde_json::from_str(c.get("UserParameters")?).ok()?;
                            params.get("environment")?.as_str().map(str::to_owned)
                        })
                    }),
                })
                .collect(),
        })
        .collect()
}

/// The pipeline's artifact stores: one, or one per region for a pipeline
/// with actions in several.
fn artifact_stores(pipeline: &PipelineDeclaration) -> Vec<&str> {
    let mut stores: Vec<&str> = pipeline.artifact_store().map(|s| s.location()).into_iter().collect();
    if let Some(by_region) = pipeline.artifact_stores() {
        stores.extend(by_region.values().map(|s| s.location()));
    }
    stores
}
