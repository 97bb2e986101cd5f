//! The functions this project ships, by name, and the handler of each.

use porter_core::phase::Phase;
use serde_json::Value;

use crate::handlers::{self, Handler};
use crate::{Context, FunctionError};

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
    pub(crate) fn uses_step_functions(self) -> bool {
        matches!(self, Function::Pipeline | Function::Lease)
    }

    /// Whether this function calls CodePipeline: each phase (as a job's
    /// action), the pipeline's action and the trigger. The lease, notices
    /// and hooks never do, so they do not make its client.
    pub(crate) fn uses_codepipeline(self) -> bool {
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

    /// Every function, in the order the infra lists them.
    pub const ALL: [Function; 9] = [
        Function::Phase(Phase::Pack),
        Function::Phase(Phase::Provision),
        Function::Phase(Phase::Promote),
        Function::Phase(Phase::Prune),
        Function::Pipeline,
        Function::Trigger,
        Function::Lease,
        Function::Notify,
        Function::Hooks,
    ];

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

impl Function {
    /// The handler of a function chosen by name at run time (the local
    /// stack's Invoke host serves them all; a shipped bootstrap does not).
    pub fn handler(self) -> Handler {
        match self {
            Function::Phase(Phase::Pack) => handlers::PACK,
            Function::Phase(Phase::Provision) => handlers::PROVISION,
            Function::Phase(Phase::Promote) => handlers::PROMOTE,
            Function::Phase(Phase::Prune) => handlers::PRUNE,
            Function::Pipeline => handlers::PIPELINE,
            Function::Trigger => handlers::TRIGGER,
            Function::Lease => handlers::LEASE,
            Function::Notify => handlers::NOTIFY,
            Function::Hooks => handlers::HOOKS,
        }
    }
}

/// Answers one invocation of `function`.
pub async fn handle(ctx: &Context, function: Function, event: Value) -> Result<Value, FunctionError> {
    (function.handler())(ctx, event).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One list: each function has its crate under `functions/`, which
    /// the Makefile, the bench and the infra checks read.
    #[test]
    fn every_function_has_its_crate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions");
        let mut crates: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        crates.sort();
        let mut names: Vec<String> = Function::ALL.iter().map(|f| f.name().to_owned()).collect();
        names.sort();
        assert_eq!(crates, names);
        for f in Function::ALL {
            assert_eq!(Function::from_name(f.name()), Some(f));
        }
        assert_eq!(Function::from_name("deploy"), None);
    }
}
