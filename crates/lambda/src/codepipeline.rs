//! The CodePipeline invoke-action contract, shared by the phase functions
//! and the `pipeline` function.
//!
//! A job must end in PutJobSuccessResult or PutJobFailureResult, or the
//! action hangs until it times out. So every outcome, the function's own
//! errors included, is reported; only a failure to report is returned as an
//! error, which makes Lambda retry the invocation.

use std::collections::{BTreeMap, HashMap};

use aws_lambda_events::event::codepipeline_job::{CodePipelineJob, CodePipelineJobEvent};
use aws_sdk_codepipeline::config::http::HttpResponse;
use aws_sdk_codepipeline::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_codepipeline::types::{ExecutionDetails, FailureDetails, FailureType};
use porter_core::aws;
use porter_core::pack::{PackInput, Source};
use porter_core::phase::PhaseError;
use porter_core::release::{Provenance, S3Object};
use porter_core::store;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::token::{self, Binding};
use crate::{Context, FunctionError};

/// CodePipeline's limit on a continuation token.
pub const TOKEN_LIMIT: usize = 2048;
const SUMMARY_LIMIT: usize = 2048;
const MESSAGE_LIMIT: usize = 5000;

/// One job, read from its event.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub params: Map<String, Value>,
    /// UserParameters as the event gave them, to compare with what
    /// CodePipeline holds for the job.
    pub user_parameters: String,
    /// Where CodePipeline says the job comes from, once verified.
    pub origin: Option<porter_core::job_origin::Origin>,
    pub continuation: Option<String>,
    pub input: Option<S3Object>,
    pub revision: Option<String>,
    /// The job's own credentials for its input artifacts.
    pub artifact_s3: aws_sdk_s3::Client,
}

/// How a job ends this time.
#[derive(Debug)]
pub enum Outcome {
    /// More to do: CodePipeline calls again with this token.
    Continue {
        token: String,
        summary: String,
        percent: u8,
    },
    Succeeded {
        summary: String,
        variables: HashMap<String, String>,
    },
    Failed {
        message: String,
    },
}

pub fn is_job(event: &Value) -> bool {
    event.get("CodePipeline.job").is_some()
}

/// Reads the event. Without a job id nothing can be reported, so that is
/// the one case returned as an error; every later problem becomes a failed
/// job (see [`Job::params_error`]).
pub fn parse(ctx: &Context, event: Value) -> Result<(Job, Option<String>), FunctionError> {
    let id = event
        .pointer("/CodePipeline.job/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| FunctionError::BadEvent {
            phase: "codepipeline",
            detail: "the CodePipeline.job has no id, so no result can be reported".into(),
        })?;
    let typed: Result<CodePipelineJobEvent, _> = serde_json::from_value(event);
    let job: CodePipelineJob = match typed {
        Ok(e) => e.code_pipeline_job,
        Err(e) => {
            let empty = empty_job(ctx, id);
            return Ok((empty, Some(format!("the job event is malformed: {e}"))));
        }
    };
    let data = &job.data;
    let creds = &data.artifact_credentials;
    let artifact_s3 = match (&creds.access_key_id, &creds.secret_access_key) {
        (Some(ak), Some(sk)) => {
            let c = aws_credential_types::Credentials::new(
                ak,
                sk,
                creds.session_token.clone(),
                None,
                "codepipeline-artifact-credentials",
            );
            let mut b = aws_sdk_s3::config::Builder::from(ctx.aws.sdk_config()).credentials_provider(c);
            if ctx.aws.sdk_config().endpoint_url().is_some() {
                b = b.force_path_style(true);
            }
            aws_sdk_s3::Client::from_conf(b.build())
        }
        _ => ctx.aws.s3(),
    };
    let input = data.input_artifacts.first();
    let mut problem = None;
    let raw = data
        .action_configuration
        .configuration
        .user_parameters
        .clone()
        .unwrap_or_default();
    let params = if raw.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                problem = Some(format!(
                    "UserParameters must be a JSON object such as {{\"environment\": \"staging\"}}; got `{}`",
                    raw.chars().take(200).collect::<String>()
                ));
                Map::new()
            }
        }
    };
    Ok((
        Job {
            id,
            params,
            user_parameters: raw,
            origin: None,
            continuation: data.continuation_token.clone().filter(|t| !t.is_empty()),
            input: input.and_then(|a| {
                Some(S3Object {
                    bucket: a.location.s3_location.bucket_name.clone()?,
                    key: a.location.s3_location.object_key.clone()?,
                })
            }),
            revision: input.and_then(|a| a.revision.clone()),
            artifact_s3,
        },
        problem,
    ))
}

fn empty_job(ctx: &Context, id: String) -> Job {
    Job {
        id,
        params: Map::new(),
        user_parameters: String::new(),
        origin: None,
        continuation: None,
        input: None,
        revision: None,
        artifact_s3: ctx.aws.s3(),
    }
}

impl Job {
    /// What pack makes of this job: its source artifact, provenance and
    /// parameters. Payloads go to `artifact_bucket` (the function's own),
    /// else beside the source artifact.
    pub fn pack_input(&self, artifact_bucket: Option<&str>) -> Result<PackInput, PhaseError> {
        let environment = self.environment()?;
        let source = self
            .input
            .clone()
            .ok_or_else(|| PhaseError::Invalid("the action needs the source artifact as its input artifact".into()))?;
        Ok(PackInput {
            environment,
            artifact_bucket: Some(artifact_bucket.map_or_else(|| source.bucket.clone(), str::to_owned)),
            source: Source::S3 {
                bucket: source.bucket,
                key: source.key,
            },
            provenance: Provenance {
                repository: self.string_param("repository")?,
                branch: self.string_param("branch")?,
                commit: self.revision.clone(),
            },
            image: self.image_param()?,
            sse_kms_key_id: self.string_param("sse_kms_key_id")?,
            variables: self.variables_param()?,
            image_parameter: None,
            allowed_references: Vec::new(),
            rollout: self.rollout_param()?,
            longest_bake_seconds: None,
        })
    }

    /// The `environment` parameter every action must name.
    pub fn environment(&self) -> Result<String, PhaseError> {
        match self.params.get("environment") {
            Some(Value::String(e)) if !e.is_empty() => Ok(e.clone()),
            _ => Err(PhaseError::Invalid(
                "UserParameters must name the environment to deploy, e.g. {\"environment\": \"staging\"}".into(),
            )),
        }
    }

    pub fn string_param(&self, name: &str) -> Result<Option<String>, PhaseError> {
        match self.params.get(name) {
            None | Some(Value::Null) => Ok(None),
            // An unset pipeline variable arrives as "" (an image when the
            // build made none): the same as not given.
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(PhaseError::Invalid(format!(
                "UserParameters `{name}` must be a string, not {other}"
            ))),
        }
    }

    /// `image`: the build's image, or `none` (what the build exports when
    /// it made none: CodePipeline may not resolve an empty variable).
    pub fn image_param(&self) -> Result<Option<String>, PhaseError> {
        Ok(self.string_param("image")?.filter(|i| i != "none"))
    }

    /// What a continuation token of `function` for this job is bound to.
    pub fn binding(&self, function: &str) -> Result<Binding, PhaseError> {
        Ok(Binding {
            function: function.to_owned(),
            environment: self.environment()?,
            release: self.string_param("release")?,
            origin: self.origin_binding(),
        })
    }

    /// The pipeline execution and action a token of this job is good for:
    /// a token from another execution, or another action, is refused.
    pub fn origin_binding(&self) -> Option<String> {
        self.origin
            .as_ref()
            .map(|o| format!("{}/{}/{}/{}", o.pipeline, o.execution, o.stage, o.action))
    }

    /// `variables`: what `${VAR}` in the service's config expands to, an
    /// object of strings. Values may be secrets: no message repeats one.
    /// `rollout`: this deploy's waves, bake and alarms over the
    /// environment's; checked against the environment by pack.
    pub fn rollout_param(&self) -> Result<Option<porter_core::config::RolloutOverride>, PhaseError> {
        match self.params.get("rollout") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                PhaseError::Invalid(format!(
                    "UserParameters `rollout` must be an object with `waves` (lists of regions), `bake_seconds` and `alarms` (names): {e}"
                ))
            }),
        }
    }

    pub fn variables_param(&self) -> Result<BTreeMap<String, String>, PhaseError> {
        const MAX_VARIABLES: usize = 100;
        const MAX_VALUE: usize = 4096;
        let entries = match self.params.get("variables") {
            None | Some(Value::Null) => return Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(PhaseError::Invalid(
                    "UserParameters `variables` must be an object of names to strings, e.g. {\"variables\": {\"BUCKET\": \"my-bucket\"}}".into(),
                ))
            }
        };
        if entries.len() > MAX_VARIABLES {
            return Err(PhaseError::Invalid(format!(
                "UserParameters `variables` has {} names; at most {MAX_VARIABLES} are taken",
                entries.len()
            )));
        }
        entries
            .iter()
            .map(|(name, value)| match value {
                Value::String(v) if v.len() <= MAX_VALUE => Ok((name.clone(), v.clone())),
                Value::String(_) => Err(PhaseError::Invalid(format!(
                    "UserParameters `variables.{name}` is longer than {MAX_VALUE} bytes"
                ))),
                _ => Err(PhaseError::Invalid(format!(
                    "UserParameters `variables.{name}` must be a string"
                ))),
            })
            .collect()
    }

    pub fn u32_param(&self, name: &str) -> Result<Option<u32>, PhaseError> {
        match self.params.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                v.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| {
                    PhaseError::Invalid(format!("UserParameters `{name}` must be a whole number, not {v}"))
                })
            }
        }
    }

    pub fn bool_param(&self, name: &str) -> Result<Option<bool>, PhaseError> {
        match self.params.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(PhaseError::Invalid(format!(
                "UserParameters `{name}` must be true or false, not {v}"
            ))),
        }
    }
}

/// Turns state into a sealed token (see [`token`]): the state inline when
/// it fits, else stored in the artifact bucket under the continuation
/// prefix, with the token pointing at it and holding its sha256.
pub async fn token_for(ctx: &Context, job: &Job, binding: &Binding, state: &Value) -> Result<String, PhaseError> {
    let key = token::key(ctx).await?;
    let inline = serde_json::to_string(state).expect("state serializes");
    let sealed = token::seal(&key, binding, &inline);
    if sealed.len() <= TOKEN_LIMIT {
        return Ok(sealed);
    }
    let obj = S3Object {
        bucket: continuation_bucket(ctx)?.to_owned(),
        key: format!("{CONTINUATIONS}{}.json", job.id),
    };
    let sha256 = hex::encode(Sha256::digest(inline.as_bytes()));
    ctx.aws
        .s3()
        .put_object()
        .bucket(&obj.bucket)
        .key(&obj.key)
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .body(inline.into_bytes().into())
        .send()
        .await
        .map_err(aws::err(format!("store the continuation state at {}", obj.url())))?;
    Ok(token::seal(&key, binding, &format!("{} {sha256}", obj.url())))
}

/// Where continuation state too large for a token is kept.
const CONTINUATIONS: &str = "porter-continuations/";

fn continuation_bucket(ctx: &Context) -> Result<&str, PhaseError> {
    ctx.artifact_bucket.as_deref().ok_or_else(|| {
        PhaseError::Invalid(
            "ARTIFACT_BUCKET is not set, so there is nowhere to keep continuation state; deploy the function with infra/template.yaml".into(),
        )
    })
}

/// Reads a sealed token back into state, if it was issued for `binding`.
/// A pointer is followed only into the continuation prefix of the
/// artifact bucket, and only to the state it was sealed with.
pub async fn state_from(ctx: &Context, binding: &Binding, token: &str) -> Result<Value, PhaseError> {
    let key = token::key(ctx).await?;
    let value = token::open(&key, binding, token)?;
    if value.starts_with("s3://") {
        let stale = || {
            PhaseError::Invalid("the continuation state the token points at is not the one it was sealed with; retry the pipeline action to start over".to_owned())
        };
        let (url, sha256) = value.split_once(' ').ok_or_else(stale)?;
        let obj = S3Object::parse_url(url).ok_or_else(stale)?;
        if obj.bucket != continuation_bucket(ctx)? || !obj.key.starts_with(CONTINUATIONS) || obj.key.contains("..") {
            return Err(stale());
        }
        let bytes = store::read_bytes(&ctx.aws.s3(), &obj).await?;
        if hex::encode(Sha256::digest(&bytes)) != sha256 {
            return Err(stale());
        }
        return store::parse_json(&obj, &bytes);
    }
    serde_json::from_str(&value)
        .map_err(|e| PhaseError::Invalid(format!("the continuation token's state is not one porter wrote: {e}")))
}

/// Why a result did not reach CodePipeline.
enum Unsent {
    /// The job already has its result.
    Answered,
    Failed(PhaseError),
}

/// A result CodePipeline did not take: `InvalidJobStateException` says the
/// job already has one (or CodePipeline gave up on it).
fn unsent<E>(what: &'static str) -> impl FnOnce(SdkError<E, HttpResponse>) -> Unsent
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| match e.as_service_error().and_then(ProvideErrorMetadata::code) {
        Some("InvalidJobStateException") => Unsent::Answered,
        _ => Unsent::Failed(aws::classify(what, e)),
    }
}

/// Reports the outcome. The only error this returns is a failure to report.
/// `external` is what CodePipeline shows as the execution id (and fills
/// into the action's link); the job id when there is nothing better.
pub async fn report(
    ctx: &Context,
    job: &Job,
    outcome: Outcome,
    external: Option<&str>,
) -> Result<Value, FunctionError> {
    let cp = ctx.codepipeline();
    let external = aws::clip(external.unwrap_or(&job.id), 1500);
    let (kind, sent) = match outcome {
        Outcome::Continue {
            token,
            summary,
            percent,
        } => {
            let details = ExecutionDetails::builder()
                .summary(aws::clip(&summary, SUMMARY_LIMIT))
                .external_execution_id(&external)
                .percent_complete(i32::from(percent.min(100)))
                .build();
            let r = cp
                .put_job_success_result()
                .job_id(&job.id)
                .continuation_token(token)
                .execution_details(details)
                .send()
                .await
                .map(|_| ());
            ("continue", r.map_err(unsent("report progress to CodePipeline")))
        }
        Outcome::Succeeded { summary, variables } => {
            let details = ExecutionDetails::builder()
                .summary(aws::clip(&summary, SUMMARY_LIMIT))
                .external_execution_id(&external)
                .percent_complete(100)
                .build();
            let r = cp
                .put_job_success_result()
                .job_id(&job.id)
                .execution_details(details)
                .set_output_variables(Some(variables))
                .send()
                .await
                .map(|_| ());
            ("success", r.map_err(unsent("report success to CodePipeline")))
        }
        Outcome::Failed { message } => {
            let details = FailureDetails::builder()
                .r#type(FailureType::JobFailed)
                .message(aws::clip(&message, MESSAGE_LIMIT))
                .external_execution_id(&external)
                .build()
                .expect("type and message are set");
            let r = cp
                .put_job_failure_result()
                .job_id(&job.id)
                .failure_details(details)
                .send()
                .await
                .map(|_| ());
            ("failure", r.map_err(unsent("report failure to CodePipeline")))
        }
    };
    match sent {
        Ok(()) => {
            tracing::info!(job = %job.id, result = kind, "reported to CodePipeline");
            Ok(serde_json::json!({"job": job.id, "reported": kind}))
        }
        // Lambda retried an invocation whose job was answered (or
        // CodePipeline gave up on the job): the result stands, and failing
        // here would only make Lambda run it once more.
        Err(Unsent::Answered) => {
            tracing::warn!(job = %job.id, result = kind, "the job already has a result; this one is dropped");
            Ok(serde_json::json!({"job": job.id, "reported": "already answered"}))
        }
        Err(Unsent::Failed(e)) => {
            tracing::error!(job = %job.id, error = %e, "could not report to CodePipeline; failing so Lambda retries");
            Err(FunctionError::Report(e.to_string()))
        }
    }
}

/// A transient AWS error while a job goes on (throttling, a 5xx, a timeout)
/// does not fail the job: the answer is the same continuation token, and
/// the next call picks up where this one could not. Every phase resumes
/// safely from a state it already handed out.
pub fn same_token(job: &Job, what: &str, e: &PhaseError) -> Option<Outcome> {
    let token = job.continuation.clone().filter(|_| e.is_retryable())?;
    tracing::warn!(job = %job.id, error = %e, "transient error while continuing; same token again");
    Some(Outcome::Continue {
        token,
        summary: format!("{what}: AWS did not answer this time ({e}); checking again"),
        percent: 10,
    })
}

/// Reports a failure with what to do about it.
pub fn failure(e: &PhaseError) -> Outcome {
    Outcome::Failed {
        message: failure_message(e),
    }
}

/// A failure's kind, message and what to do about it, as a job failure says it.
pub fn failure_message(e: &PhaseError) -> String {
    let advice = match e {
        PhaseError::Retryable(_) => " (a transient AWS error: retry the stage)",
        PhaseError::AccessDenied(_) => " (grant the permission, then retry the stage)",
        _ => "",
    };
    format!("{}: {e}{advice}", e.error_type())
}

/// What CodePipeline is told, and what a refusal of it means: faults the
/// local stack's job simulator does not make (a result CodePipeline
/// refuses, throttling of the result itself).
#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_codepipeline::operation::put_job_failure_result::PutJobFailureResultError;
    use aws_sdk_codepipeline::operation::put_job_success_result::{
        PutJobSuccessResultError, PutJobSuccessResultOutput,
    };
    use aws_sdk_codepipeline::types::error::InvalidJobStateException;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    fn context(cp: aws_sdk_codepipeline::Client) -> Context {
        let conf = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        Context::new(aws::Aws::unpinned(conf)).with_codepipeline(cp)
    }

    fn job(ctx: &Context) -> Job {
        empty_job(ctx, "11111111-2222-4333-8444-555555555555".into())
    }

    /// Progress carries the token, a summary cut to CodePipeline's limit
    /// and a percentage of at most 100.
    #[tokio::test]
    async fn progress_carries_the_token() {
        let sent = mock!(aws_sdk_codepipeline::Client::put_job_success_result)
            .match_requests(|r| {
                let d = r.execution_details().expect("details");
                r.continuation_token() == Some("tok")
                    && d.summary().is_some_and(|s| s.chars().count() <= SUMMARY_LIMIT)
                    && d.percent_complete() == Some(100)
                    && d.external_execution_id() == Some("arn:exec")
            })
            .then_output(|| PutJobSuccessResultOutput::builder().build());
        let ctx = context(mock_client!(aws_sdk_codepipeline, RuleMode::Sequential, [&sent]));
        let outcome = Outcome::Continue {
            token: "tok".into(),
            summary: "x".repeat(5000),
            percent: 250,
        };
        let answer = report(&ctx, &job(&ctx), outcome, Some("arn:exec")).await.unwrap();
        assert_eq!(answer["reported"], "continue");
        assert_eq!(sent.num_calls(), 1);
    }

    /// A job that already has its result (Lambda ran the invocation again)
    /// keeps it: the answer is not an error, so Lambda stops retrying.
    #[tokio::test]
    async fn an_answered_job_keeps_its_result() {
        let refused = mock!(aws_sdk_codepipeline::Client::put_job_failure_result).then_error(|| {
            PutJobFailureResultError::InvalidJobStateException(
                InvalidJobStateException::builder()
                    .message("already failed")
                    .meta(
                        aws_sdk_codepipeline::error::ErrorMetadata::builder()
                            .code("InvalidJobStateException")
                            .build(),
                    )
                    .build(),
            )
        });
        let ctx = context(mock_client!(aws_sdk_codepipeline, RuleMode::Sequential, [&refused]));
        let failed = Outcome::Failed {
            message: "Invalid: no".into(),
        };
        let answer = report(&ctx, &job(&ctx), failed, None).await.unwrap();
        assert_eq!(answer["reported"], "already answered");
    }

    /// A result CodePipeline could not take (throttled) fails the
    /// invocation, so Lambda retries it and the job is not left hanging.
    #[tokio::test]
    async fn an_untaken_result_fails_so_lambda_retries() {
        let throttled = mock!(aws_sdk_codepipeline::Client::put_job_success_result).then_error(|| {
            PutJobSuccessResultError::generic(
                aws_sdk_codepipeline::error::ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let ctx = context(mock_client!(aws_sdk_codepipeline, RuleMode::Sequential, [&throttled]));
        let done = Outcome::Succeeded {
            summary: "deployed".into(),
            variables: HashMap::new(),
        };
        let err = report(&ctx, &job(&ctx), done, None).await.unwrap_err();
        assert!(
            matches!(&err, FunctionError::Report(m) if m.contains("report success to CodePipeline")),
            "{err}"
        );
    }

    /// A failure names its kind and what to do, and only a transient error
    /// on a job that goes on is answered with the same token.
    #[test]
    fn failures_say_what_to_do() {
        let denied = PhaseError::AccessDenied("s3:GetObject on b/k".into());
        assert_eq!(
            failure_message(&denied),
            "AccessDenied: s3:GetObject on b/k (grant the permission, then retry the stage)"
        );
        let ctx = context(mock_client!(
            aws_sdk_codepipeline,
            RuleMode::Sequential,
            Vec::<&Rule>::new()
        ));
        let mut going = job(&ctx);
        assert!(same_token(&going, "the deploy", &PhaseError::Retryable("throttled".into())).is_none());
        going.continuation = Some("tok".into());
        match same_token(&going, "the deploy", &PhaseError::Retryable("throttled".into())) {
            Some(Outcome::Continue { token, .. }) => assert_eq!(token, "tok"),
            other => panic!("{other:?}"),
        }
        assert!(same_token(&going, "the deploy", &denied).is_none());
    }
}
