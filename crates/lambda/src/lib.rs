//! The Lambda front door of the phases.
//!
//! Every phase function is `main` + [`run`]: it builds the AWS config once,
//! then answers each invocation with the same core phase the CLI uses. A
//! Step Functions state passes the phase input (with the previous `state`
//! when resuming) and gets the [`porter_core::phase::Step`] back; errors
//! carry the phase error's kind as the Lambda `errorType`, which the state
//! machine's Retry/Catch match.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use porter_core::aws::Aws;
use porter_core::phase::{PhaseError, Step};
use porter_core::{pack, promote, provision, prune};
use serde_json::Value;

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

/// What a phase Lambda answers with when it fails.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The event is not a phase input.
    #[error("the {phase} function cannot read its input: {detail}. Expected the JSON shape documented in events/{phase}*.json")]
    BadEvent { phase: &'static str, detail: String },
    /// The phase itself failed.
    #[error(transparent)]
    Phase(#[from] PhaseError),
}

impl FunctionError {
    pub fn error_type(&self) -> &'static str {
        match self {
            FunctionError::BadEvent { .. } => "Invalid",
            FunctionError::Phase(e) => e.error_type(),
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

/// Runs one phase for a Step Functions state (or any direct invoke).
pub async fn handle(aws: &Aws, phase: Phase, event: Value) -> Result<Value, FunctionError> {
    tracing::info!(
        phase = phase.name(),
        resuming = event.get("state").is_some_and(|s| !s.is_null()),
        "invoked"
    );
    let out = match phase {
        Phase::Pack => {
            let input: pack::PackInput = parse(phase, event)?;
            let packed = Box::pin(pack::run(aws, &input)).await?;
            to_value(Step::<(), _>::Done {
                output: packed.release,
            })
        }
        Phase::Provision => to_value(Box::pin(provision::run(aws, parse(phase, event)?)).await?),
        Phase::Promote => to_value(Box::pin(promote::run(aws, parse(phase, event)?)).await?),
        Phase::Prune => to_value(Box::pin(prune::run(aws, parse(phase, event)?)).await?),
    };
    Ok(out)
}

/// Sets up JSON logs (CloudWatch reads them as fields) without the
/// runtime's own noise; never logs whole events, which may hold credentials.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .without_time()
        .try_init();
}

/// The whole `main` of a phase function.
pub async fn run(phase: Phase) -> Result<(), lambda_runtime::Error> {
    init_logs();
    let aws = Aws::from_env().await;
    let aws = &aws;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Boxed: the phase futures are deep enough to overflow the
        // compiler's layout depth when inlined into the runtime's.
        Box::pin(handle(aws, phase, event.payload)).await
    }))
    .await
}
