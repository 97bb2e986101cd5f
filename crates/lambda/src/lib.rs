//! The Lambda front doors.
//!
//! Every function is `main` + [`run`]: it builds its [`Context`] once, then
//! answers each invocation with the same core phase the CLI uses.
//!
//! - A Step Functions state passes the phase input (with the previous
//!   `state` when resuming) and gets the [`porter_core::phase::Step`] back;
//!   errors carry the phase error's kind as the Lambda `errorType`, which
//!   the state machine's Retry/Catch match.
//! - A `CodePipeline.job` event runs the phase as a pipeline action
//!   ([`jobs`]); `pipeline` runs the whole state machine as one ([`pipeline`]).
//! - `trigger` answers EventBridge branch and schedule events ([`trigger`]).

pub mod codepipeline;
pub mod job_worker;
pub mod jobs;
pub mod lease;
pub mod notify;
pub mod pipeline;
pub mod pipeline_stopped;
pub mod token;
pub mod trigger;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use porter_core::aws::Aws;
use porter_core::phase::{PhaseError, Step};
use porter_core::{pack, promote, provision, prune};
use serde_json::Value;

/// What a function needs, built once per cold start.
#[derive(Clone)]
pub struct Context {
    pub aws: Aws,
    /// CodePipeline: made at init by the functions that use it
    /// ([`Function::uses_codepipeline`]); at the local job simulator when
    /// one is given.
    codepipeline: std::sync::Arc<std::sync::OnceLock<aws_sdk_codepipeline::Client>>,
    codepipeline_endpoint: Option<String>,
    /// Step Functions: made at init by the functions that use it
    /// ([`Function::uses_step_functions`]), never by the phases.
    sfn: std::sync::Arc<std::sync::OnceLock<aws_sdk_sfn::Client>>,
    /// Where pack writes payloads in CodePipeline mode and where large
    /// continuation state goes (`ARTIFACT_BUCKET`).
    pub artifact_bucket: Option<String>,
    /// The deploy state machine the `pipeline` function runs.
    pub state_machine_arn: Option<String>,
    pub trigger: trigger::Settings,
    /// The deploy lease table (`LEASE_TABLE`), for the `lease` function.
    pub lease_table: Option<String>,
    /// The SSM parameter naming the machine image pack pins into each
    /// release (`PORTER_IMAGE_PARAMETER`).
    pub image_parameter: Option<String>,
    /// Where the `notify` function sends notices.
    pub notify: notify::Settings,
    /// Where the `hooks` function runs hooks: the CodeBuild project
    /// (`HOOKS_PROJECT`) in AWS, local processes on the local stack.
    pub hooks: Option<porter_core::hooks::Runner>,
    /// The key that seals continuation tokens, once read ([`token::key`]).
    pub token_key: std::sync::Arc<std::sync::OnceLock<Vec<u8>>>,
}

impl Context {
    /// Clients from `aws`; CodePipeline at `codepipeline_endpoint` when
    /// given (the local job simulator), else wherever `aws` points.
    pub fn new(aws: Aws, codepipeline_endpoint: Option<&str>) -> Context {
        Context {
            codepipeline: Default::default(),
            codepipeline_endpoint: codepipeline_endpoint.map(str::to_string),
            sfn: Default::default(),
            aws,
            artifact_bucket: None,
            state_machine_arn: None,
            trigger: trigger::Settings::default(),
            lease_table: None,
            image_parameter: None,
            notify: notify::Settings::default(),
            hooks: None,
            token_key: Default::default(),
        }
    }

    /// CodePipeline, made on first use by a function that did not make it
    /// at init.
    pub fn codepipeline(&self) -> &aws_sdk_codepipeline::Client {
        self.codepipeline.get_or_init(|| {
            let mut cp = aws_sdk_codepipeline::config::Builder::from(self.aws.sdk_config());
            if let Some(e) = &self.codepipeline_endpoint {
                cp = cp.endpoint_url(e);
            }
            aws_sdk_codepipeline::Client::from_conf(cp.build())
        })
    }

    /// The same context with `codepipeline` as its CodePipeline client.
    pub fn with_codepipeline(self, codepipeline: aws_sdk_codepipeline::Client) -> Context {
        let _ = self.codepipeline.set(codepipeline);
        self
    }

    /// Step Functions, made on first use by a function that did not make
    /// it at init.
    pub fn sfn(&self) -> &aws_sdk_sfn::Client {
        self.sfn.get_or_init(|| aws_sdk_sfn::Client::new(self.aws.sdk_config()))
    }

    /// The same context with `sfn` as its Step Functions client.
    pub fn with_sfn(self, sfn: aws_sdk_sfn::Client) -> Context {
        let _ = self.sfn.set(sfn);
        self
    }

    /// `function`'s context, from the environment the infra gives it, with
    /// the clients it calls made. Each function reads its own settings: the
    /// others keep their defaults, which cost nothing to make.
    pub fn from_env(function: &str) -> Result<Context, String> {
        let function = Function::from_name(function);
        // A function is always pinned: what a repository names is checked
        // against the environment pins before anything is touched.
        let aws = Aws::from_lambda_env(porter_core::aws::Roots::AmazonTrustServices)?
            .with_pinning(porter_core::pins::Pinning::from_env());
        let mut ctx = Context::new(aws, None);
        ctx.artifact_bucket = std::env::var("ARTIFACT_BUCKET").ok().filter(|s| !s.is_empty());
        ctx.state_machine_arn = std::env::var("STATE_MACHINE_ARN").ok().filter(|s| !s.is_empty());
        ctx.lease_table = std::env::var("LEASE_TABLE").ok().filter(|s| !s.is_empty());
        ctx.image_parameter = std::env::var("PORTER_IMAGE_PARAMETER").ok().filter(|s| !s.is_empty());
        if function == Some(Function::Trigger) {
            ctx.trigger = trigger::Settings::from_env()?;
        }
        ctx.notify = notify::Settings::from_env();
        ctx.hooks = std::env::var("HOOKS_PROJECT")
            .ok()
            .filter(|p| !p.is_empty())
            .map(|project| porter_core::hooks::Runner::CodeBuild { project });
        if function.is_some_and(Function::uses_step_functions) {
            ctx.sfn();
        }
        if function.is_some_and(Function::uses_codepipeline) {
            ctx.codepipeline();
        }
        Ok(ctx)
    }
}

/// Every function this project ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Phase(Phase),
    Pipeline,
    Trigger,
    Lease,
    Notify,
    Hooks,
}

impl Function {
    /// Whether this function calls Step Functions: its client is made at
    /// init there, and in no other function (each client costs a cold start
    /// time).
    fn uses_step_functions(self) -> bool {
        matches!(self, Function::Pipeline | Function::Lease)
    }

    /// Whether this function calls CodePipeline: each phase (as a job's
    /// action), the pipeline's action and the trigger. The lease, notices
    /// and hooks never do, so they do not make its client.
    fn uses_codepipeline(self) -> bool {
        matches!(self, Function::Phase(_) | Function::Pipeline | Function::Trigger)
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::Phase(p) => p.name(),
            Function::Pipeline => "pipeline",
            Function::Trigger => "trigger",
            Function::Lease => "lease",
            Function::Notify => "notify",
            Function::Hooks => "hooks",
        }
    }

    pub fn from_name(name: &str) -> Option<Function> {
        match name {
            "pipeline" => Some(Function::Pipeline),
            "trigger" => Some(Function::Trigger),
            "lease" => Some(Function::Lease),
            "notify" => Some(Function::Notify),
            "hooks" => Some(Function::Hooks),
            other => Phase::from_name(other).map(Function::Phase),
        }
    }
}

/// The four lifecycle phases, one Lambda each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pack,
    Provision,
    Promote,
    Prune,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pack => "pack",
            Phase::Provision => "provision",
            Phase::Promote => "promote",
            Phase::Prune => "prune",
        }
    }

    pub fn from_name(name: &str) -> Option<Phase> {
        [Phase::Pack, Phase::Provision, Phase::Promote, Phase::Prune]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// What a function answers with when it fails.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The event is not one this function takes.
    #[error("the {phase} function cannot read its event: {detail}. See events/ for the shapes it takes")]
    BadEvent { phase: &'static str, detail: String },
    /// The phase itself failed.
    #[error(transparent)]
    Phase(#[from] PhaseError),
    /// CodePipeline could not be told the job's result: Lambda retries.
    #[error("could not report the job result to CodePipeline: {0}")]
    Report(String),
    /// The handler panicked: a bug, reported rather than left unanswered.
    #[error(
        "the {function} function failed unexpectedly ({detail}); this is a bug in porter, nothing further was done"
    )]
    Crashed { function: &'static str, detail: String },
}

impl FunctionError {
    pub fn error_type(&self) -> &'static str {
        match self {
            FunctionError::BadEvent { .. } => "Invalid",
            FunctionError::Phase(e) => e.error_type(),
            FunctionError::Report(_) => "ReportFailed",
            FunctionError::Crashed { .. } => "Crashed",
        }
    }
}

impl From<FunctionError> for Diagnostic {
    fn from(e: FunctionError) -> Diagnostic {
        Diagnostic {
            error_type: e.error_type().to_string(),
            error_message: e.to_string(),
        }
    }
}

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
/// The promote phase: a Step Functions state or a CodePipeline job.
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

impl Function {
    /// The handler of a function chosen by name at run time (the local
    /// stack's Invoke host serves them all; a shipped bootstrap does not).
    pub fn handler(self) -> Handler {
        match self {
            Function::Phase(Phase::Pack) => PACK,
            Function::Phase(Phase::Provision) => PROVISION,
            Function::Phase(Phase::Promote) => PROMOTE,
            Function::Phase(Phase::Prune) => PRUNE,
            Function::Pipeline => PIPELINE,
            Function::Trigger => TRIGGER,
            Function::Lease => LEASE,
            Function::Notify => NOTIFY,
            Function::Hooks => HOOKS,
        }
    }
}

/// Answers one invocation of `function`.
pub async fn handle(ctx: &Context, function: Function, event: Value) -> Result<Value, FunctionError> {
    (function.handler())(ctx, event).await
}

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
    let packed = Box::pin(pack::run(&ctx.aws, &input)).await?;
    Ok(to_value(Step::<(), _>::Done { output: packed.release }))
}

/// A hooks step of the state machine: `state` is the last call's, when
/// it resumes.
async fn hooks(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    let (input, state) = hooks_event(event)?;
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
            .filter(|p| ["pack", "provision", "promote", "prune"].contains(p))
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

/// The level from Lambda's log settings (`AWS_LAMBDA_LOG_LEVEL`) or
/// `RUST_LOG`, as a plain level name; `info` otherwise. A level only, not
/// tracing's directive syntax: that parser is a regex engine, and costs
/// every function's cold start more than per-module filtering is worth.
fn log_level() -> tracing::Level {
    ["AWS_LAMBDA_LOG_LEVEL", "RUST_LOG"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(tracing::Level::INFO)
}

/// Sets up JSON logs (CloudWatch reads them as fields); never logs whole
/// events, which may hold credentials.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_max_level(log_level())
        .with_current_span(false)
        .without_time()
        .try_init();
}

/// How long before Lambda's own deadline a function stops and answers: time
/// to tell CodePipeline (or Step Functions) what happened.
pub const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers one invocation with `handler`, and answers even when the handler
/// cannot: a panic, or `deadline` coming before the handler is done. A
/// CodePipeline job then gets a failure result (a job is never left to time
/// out); a direct invocation gets `Crashed`, or `Retryable` when time ran
/// out (every phase resumes where it stopped, so a retry is safe).
pub async fn answer(
    ctx: &Context,
    handler: Handler,
    function: &'static str,
    event: Value,
    deadline: Option<tokio::time::Instant>,
) -> Result<Value, FunctionError> {
    use futures::FutureExt;
    // Only the job's id is kept: enough to report on, without a copy of
    // the event (and the artifact credentials in it).
    let job_id = event
        .pointer("/CodePipeline.job/id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let work = std::panic::AssertUnwindSafe(handler(ctx, event)).catch_unwind();
    let outcome = match deadline {
        Some(d) => tokio::time::timeout_at(d, work).await.map_err(|_| ()),
        None => Ok(work.await),
    };
    let failure = match outcome {
        Ok(Ok(answer)) => return answer,
        Ok(Err(panic)) => FunctionError::Crashed {
            function,
            detail: panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()),
        },
        Err(()) => FunctionError::Phase(PhaseError::Retryable(format!(
            "the {function} function ran out of time before it finished; what it did stands, and a retry resumes from there"
        ))),
    };
    tracing::error!(function, error = %failure, "the handler did not finish; answering for it");
    match job_id {
        Some(id) => {
            let (job, _) = codepipeline::parse(ctx, serde_json::json!({"CodePipeline.job": {"id": id}}))?;
            let message = match &failure {
                FunctionError::Phase(e) => format!("{}: {e} (retry the action)", e.error_type()),
                other => format!("{}: {other}", other.error_type()),
            };
            codepipeline::report(ctx, &job, codepipeline::Outcome::Failed { message }, None).await
        }
        None => Err(failure),
    }
}

/// The whole `main` of a function: `handler` answers every invocation.
pub async fn run(handler: Handler, function: &'static str) -> Result<(), lambda_runtime::Error> {
    init_logs();
    let ctx = Context::from_env(function).map_err(lambda_runtime::Error::from)?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Lambda's deadline is milliseconds since the epoch.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left = std::time::Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let deadline = (left > DEADLINE_MARGIN).then(|| tokio::time::Instant::now() + (left - DEADLINE_MARGIN));
        answer(ctx, handler, function, event.payload, deadline).await
    }))
    .await
}
