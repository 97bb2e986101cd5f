//! What a function answers with when it fails.

use lambda_runtime::Diagnostic;
use porter_core::phase::PhaseError;

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
            error_type: e.error_type().to_owned(),
            error_message: e.to_string(),
        }
    }
}
