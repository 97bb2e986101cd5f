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

pub mod abort;
pub mod codepipeline;
mod context;
mod error;
mod function;
mod handlers;
pub mod job_worker;
pub mod jobs;
pub mod lease;
pub mod notify;
pub mod origin;
pub mod pipeline;
pub mod pipeline_stopped;
mod runtime;
pub mod token;
pub mod trigger;
pub mod webhook;

pub use context::Context;
pub use error::FunctionError;
pub use function::{handle, Function};
pub use handlers::{
    hooks_event, BoxFuture, Handler, HOOKS, LEASE, NOTIFY, PACK, PIPELINE, PROMOTE, PROVISION, PRUNE, TRIGGER,
};
pub use porter_core::phase::Phase;
pub use runtime::{answer, init_logs, run, DEADLINE_MARGIN};
