//! A phase as a CodePipeline action: UserParameters in, continuation
//! tokens while it works, output variables at the end.

use std::collections::HashMap;
use std::future::Future;

use porter_core::aws::Aws;
use porter_core::pack::{self, Source};
use porter_core::phase::{PhaseError, Step};
use porter_core::release::{Release, ReleaseRef, S3Object};
use porter_core::target::Target;
use porter_core::{promote, provision, prune, store};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::codepipeline::{self, failure, Job, Outcome};
use crate::{BoxFuture, Context, FunctionError, Phase};

/// One phase's work on a job: what [`handle`] runs between reading the job
/// and reporting it. A function pointer, so each bootstrap links only its own.
pub type JobRun = for<'a> fn(&'a Context, &'a Job) -> BoxFuture<'a, Result<Outcome, PhaseError>>;

pub const PACK: JobRun = |ctx, job| Box::pin(pack_job(ctx, job));
pub const PROVISION: JobRun = |ctx, job| Box::pin(provision_job(ctx, job));
pub const PROMOTE: JobRun = |ctx, job| Box::pin(promote_job(ctx, job));
pub const PRUNE: JobRun = |ctx, job| Box::pin(prune_job(ctx, job));

pub async fn handle(ctx: &Context, phase: Phase, event: Value, run: JobRun) -> Result<Value, FunctionError> {
    let (mut job, problem) = codepipeline::parse(ctx, event)?;
    tracing::info!(job = %job.id, phase = phase.name(), continuing = job.continuation.is_some(), "CodePipeline job");
    let problem = crate::origin::checked(ctx, &mut job, problem).await?;
    let outcome = match problem {
        Some(p) => failure(&PhaseError::Invalid(p)),
        None => match run(ctx, &job).await {
            Ok(o) => o,
            Err(e) => match codepipeline::same_token(&job, phase.name(), &e) {
                Some(again) => again,
                None => failure(&e),
            },
        },
    };
    codepipeline::report(ctx, &job, outcome, None).await
}

/// What provision, promote and prune act on: the release that
/// UserParameters name, and the state from the continuation token.
async fn deploy_target(ctx: &Context, phase: Phase, job: &Job) -> Result<(Target, Option<Value>), PhaseError> {
    let environment = job.environment()?;
    // The token first: it is untrusted, and cheap to refuse.
    let state = match &job.continuation {
        Some(t) => Some(codepipeline::state_from(ctx, &job.binding(phase.name())?, t).await?),
        None => None,
    };
    let release_url = job.string_param("release")?.ok_or_else(|| {
        PhaseError::Invalid(
            "UserParameters needs `release`: the pack action's output variable, e.g. {\"environment\": \"staging\", \"release\": \"#{PackVariables.release}\"}".into(),
        )
    })?;
    let obj = S3Object::parse_url(&release_url).ok_or_else(|| {
        PhaseError::Invalid(format!(
            "UserParameters `release` must be s3://bucket/key of a release record, not `{release_url}`"
        ))
    })?;
    let release: Release = store::read_json(&ctx.aws.s3(), &obj).await?;
    if release.environment != environment {
        return Err(PhaseError::Invalid(format!(
            "the release was packed for environment `{}`, but this action deploys `{environment}`: pack for `{environment}` first",
            release.environment
        )));
    }
    let regions = match job.params.get("regions") {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value::<Vec<String>>(v.clone()).map_err(|_| {
            PhaseError::Invalid(format!(
                "UserParameters `regions` must be a list of region names, not {v}"
            ))
        })?,
    };
    let target = Target {
        release: ReleaseRef::Inline(Box::new(release)),
        region: None,
        regions,
    };
    Ok((target, state))
}

async fn provision_job(ctx: &Context, job: &Job) -> Result<Outcome, PhaseError> {
    let input = |target, state| {
        Ok(provision::ProvisionInput {
            target,
            execution: Some(job.id.clone()),
            state,
        })
    };
    regional_job(ctx, job, Phase::Provision, input, provision::run, |o| {
        let vars = o
            .stacks
            .iter()
            .map(|(r, s)| (format!("stack_{r}"), s.stack_name.clone()))
            .collect();
        (format!("provisioned {} region(s)", o.stacks.len()), vars)
    })
    .await
}

async fn promote_job(ctx: &Context, job: &Job) -> Result<Outcome, PhaseError> {
    let input = |target, state| {
        Ok(promote::PromoteInput::cutover(
            target,
            job.string_param("stack_name")?,
            state,
        ))
    };
    regional_job(ctx, job, Phase::Promote, input, promote::run, |o| {
        let mut vars = HashMap::new();
        for (r, p) in &o.regions {
            vars.insert(format!("stack_{r}"), p.stack_name.clone());
            if let Some(dns) = p.elbs.iter().find_map(|e| e.dns_name.clone()) {
                vars.insert(format!("elb_dns_{r}"), dns);
            }
        }
        (format!("promoted in {} region(s)", o.regions.len()), vars)
    })
    .await
}

async fn prune_job(ctx: &Context, job: &Job) -> Result<Outcome, PhaseError> {
    let input = |target, state| {
        Ok(prune::PruneInput {
            target,
            keep: job.u32_param("keep")?.unwrap_or(0),
            // A pipeline action holds no lease: nothing to fence on.
            execution: None,
            state,
        })
    };
    regional_job(ctx, job, Phase::Prune, input, prune::run, |o| {
        let vars = o
            .regions
            .iter()
            .map(|(r, p)| (format!("deleted_{r}"), deleted(p)))
            .collect();
        let n: usize = o.regions.values().map(|p| p.deleted_count()).sum();
        (format!("pruned {n} stack(s)"), vars)
    })
    .await
}

/// What prune deleted in a region, as an output variable: `none`, the
/// stacks, or the stacks named and how many more.
fn deleted(p: &prune::RegionPruned) -> String {
    if p.deleted.is_empty() {
        "none".into()
    } else if p.deleted_more == 0 {
        p.deleted.join(",")
    } else {
        format!("{},+{}", p.deleted.join(","), p.deleted_more)
    }
}

/// A regional phase as a CodePipeline action: the release and regions the
/// job names (and the state its token carries), the phase's input made of
/// them and its own UserParameters, one call of the phase, and what its
/// end says.
async fn regional_job<'a, I, S, O, Fut>(
    ctx: &'a Context,
    job: &'a Job,
    phase: Phase,
    input: impl FnOnce(Target, Option<S>) -> Result<I, PhaseError>,
    run: impl FnOnce(&'a Aws, I) -> Fut,
    done: impl FnOnce(&O) -> (String, HashMap<String, String>),
) -> Result<Outcome, PhaseError>
where
    S: DeserializeOwned + Serialize,
    Fut: Future<Output = Result<Step<S, O>, PhaseError>>,
{
    let (target, state) = deploy_target(ctx, phase, job).await?;
    let step = Box::pin(run(&ctx.aws, input(target, typed(state)?)?)).await?;
    finish(ctx, job, phase, step, done).await
}

fn typed<S: DeserializeOwned>(state: Option<Value>) -> Result<Option<S>, PhaseError> {
    state
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| PhaseError::Invalid(format!("the continuation token does not belong to this phase: {e}")))
        })
        .transpose()
}

async fn finish<S: Serialize, O>(
    ctx: &Context,
    job: &Job,
    phase: Phase,
    step: Step<S, O>,
    done: impl FnOnce(&O) -> (String, HashMap<String, String>),
) -> Result<Outcome, PhaseError> {
    match step {
        Step::Pending {
            state,
            progress,
            percent,
            ..
        } => Ok(Outcome::Continue {
            token: codepipeline::token_for(
                ctx,
                job,
                &job.binding(phase.name())?,
                &serde_json::to_value(&state).expect("state serializes"),
            )
            .await?,
            summary: progress,
            percent,
        }),
        Step::Done { output } => {
            let (summary, variables) = done(&output);
            Ok(Outcome::Succeeded { summary, variables })
        }
    }
}

async fn pack_job(ctx: &Context, job: &Job) -> Result<Outcome, PhaseError> {
    let mut input = job.pack_input(ctx.artifact_bucket.as_deref())?;
    input.image_parameter = ctx.image_parameter.clone();
    input.allowed_references = ctx.allowed_references.clone();
    let Source::S3 { bucket, key } = &input.source else {
        return Err(PhaseError::Invalid("a job's source is its S3 input artifact".into()));
    };
    let dir = tempfile::tempdir().map_err(|e| PhaseError::Retryable(format!("no scratch space: {e}")))?;
    pack::fetch_zip(&job.artifact_s3, bucket, key, dir.path()).await?;
    let packed = pack::pack(&ctx.aws, &input, dir.path()).await?;
    let r = &packed.release;
    let variables = HashMap::from([
        ("release".to_owned(), r.record.url()),
        ("version".to_owned(), r.version.clone()),
        ("revision".to_owned(), r.revision.clone()),
        ("sha256".to_owned(), r.sha256.clone()),
    ]);
    Ok(Outcome::Succeeded {
        summary: format!(
            "packed {} release {} ({} new object(s))",
            r.service,
            r.version,
            packed.uploaded.len()
        ),
        variables,
    })
}
