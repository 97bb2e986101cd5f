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
pub mod jobs;
pub mod pipeline;
pub mod trigger;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use porter_core::aws::Aws;
use porter_core::phase::{PhaseError, Step};
use porter_core::{pack, promote, provision, prune};
use serde_json::Value;

/// What a function needs, built once per cold start.
#[derive(Clone)]
pub struct Context {
    pub aws: Aws,
    pub codepipeline: aws_sdk_codepipeline::Client,
    pub sfn: aws_sdk_sfn::Client,
    /// Where pack writes payloads in CodePipeline mode and where large
    /// continuation state goes (`ARTIFACT_BUCKET`).
    pub artifact_bucket: Option<String>,
    /// The deploy state machine the `pipeline` function runs.
    pub state_machine_arn: Option<String>,
    pub trigger: trigger::Settings,
}

impl Context {
    /// Clients from `aws`; CodePipeline at `codepipeline_endpoint` when
    /// given (the local job simulator), else wherever `aws` points.
    pub fn new(aws: Aws, codepipeline_endpoint: Option<&str>) -> Context {
        let conf = aws.sdk_config();
        let mut cp = aws_sdk_codepipeline::config::Builder::from(conf);
        if let Some(e) = codepipeline_endpoint {
            cp = cp.endpoint_url(e);
        }
        Context {
            codepipeline: aws_sdk_codepipeline::Client::from_conf(cp.build()),
            sfn: aws_sdk_sfn::Client::new(conf),
            aws,
            artifact_bucket: None,
            state_machine_arn: None,
            trigger: trigger::Settings::default(),
        }
    }

    pub async fn from_env() -> Result<Context, String> {
        let mut ctx = Context::new(Aws::from_env().await, None);
        ctx.artifact_bucket = std::env::var("ARTIFACT_BUCKET").ok().filter(|s| !s.is_empty());
        ctx.state_machine_arn = std::env::var("STATE_MACHINE_ARN").ok().filter(|s| !s.is_empty());
        ctx.trigger = trigger::Settings::from_env()?;
        Ok(ctx)
    }
}

/// Every function this project ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Phase(Phase),
    Pipeline,
    Trigger,
}

impl Function {
    pub fn from_name(name: &str) -> Option<Function> {
        match name {
            "pipeline" => Some(Function::Pipeline),
            "trigger" => Some(Function::Trigger),
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
}

impl FunctionError {
    pub fn error_type(&self) -> &'static str {
        match self {
            FunctionError::BadEvent { .. } => "Invalid",
            FunctionError::Phase(e) => e.error_type(),
            FunctionError::Report(_) => "ReportFailed",
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

/// Answers one invocation of `function`.
pub async fn handle(ctx: &Context, function: Function, event: Value) -> Result<Value, FunctionError> {
    match function {
        Function::Pipeline => Box::pin(pipeline::handle(ctx, event)).await,
        Function::Trigger => Box::pin(trigger::handle(ctx, event)).await,
        Function::Phase(phase) if codepipeline::is_job(&event) => Box::pin(jobs::handle(ctx, phase, event)).await,
        Function::Phase(phase) => Box::pin(step(&ctx.aws, phase, event)).await,
    }
}

/// Runs one phase for a Step Functions state (or any direct invoke).
pub async fn step(aws: &Aws, phase: Phase, event: Value) -> Result<Value, FunctionError> {
    tracing::info!(
        phase = phase.name(),
        resuming = event.get("state").is_some_and(|s| !s.is_null()),
        "invoked"
    );
    let out = match phase {
        Phase::Pack => {
            let input: pack::PackInput = parse(phase, event)?;
            let packed = Box::pin(pack::run(aws, &input)).await?;
            to_value(Step::<(), _>::Done { output: packed.release })
        }
        Phase::Provision => to_value(Box::pin(provision::run(aws, parse(phase, event)?)).await?),
        Phase::Promote => to_value(Box::pin(promote::run(aws, parse(phase, event)?)).await?),
        Phase::Prune => to_value(Box::pin(prune::run(aws, parse(phase, event)?)).await?),
    };
    Ok(out)
}

/// Sets up JSON logs (CloudWatch reads them as fields); never logs whole
/// events, which may hold credentials.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_current_span(false)
        .without_time()
        .try_init();
}

/// The whole `main` of a function.
pub async fn run(function: Function) -> Result<(), lambda_runtime::Error> {
    init_logs();
    let ctx = Context::from_env().await.map_err(lambda_runtime::Error::from)?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Boxed: the phase futures are deep enough to overflow the
        // compiler's layout depth when inlined into the runtime's.
        Box::pin(handle(ctx, function, event.payload)).await
    }))
    .await
}
