//! The Lambda runtime around a handler: logs, the deadline, and an answer
//! even when the handler cannot give one.

use lambda_runtime::{service_fn, LambdaEvent};
use porter_core::phase::PhaseError;
use serde_json::Value;

use crate::handlers::Handler;
use crate::{codepipeline, Context, FunctionError};

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
        .map(str::to_owned);
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
