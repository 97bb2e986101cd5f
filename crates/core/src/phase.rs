//! The phase contract: the four phases' names, a resumable step and the
//! errors a step can end in.

use serde::{Deserialize, Serialize};

/// The four lifecycle phases, one Lambda each. The one list of their
/// names: the functions, the execution reader and the hooks' `post_`
/// points all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Pack,
    Provision,
    Promote,
    Prune,
}

impl Phase {
    /// Every phase, in the order a deploy runs them.
    pub const ALL: [Phase; 4] = [Phase::Pack, Phase::Provision, Phase::Promote, Phase::Prune];
    /// The phases that act in each region of an environment, in order.
    pub const REGIONAL: [Phase; 3] = [Phase::Provision, Phase::Promote, Phase::Prune];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Pack => "pack",
            Phase::Provision => "provision",
            Phase::Promote => "promote",
            Phase::Prune => "prune",
        }
    }

    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One call of a phase: finished, or a state to resume from after a wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Step<S, O> {
    Done {
        output: O,
    },
    Pending {
        state: S,
        wait_seconds: u32,
        /// One line for a person: what is still going on.
        progress: String,
        /// 0-100, for CodePipeline's executionDetails.
        percent: u8,
    },
}

/// Why a phase stopped. The kind decides whether a retry can help, and
/// names the Lambda `errorType` that the state machine's Retry/Catch match.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PhaseError {
    /// The input, the config or the artifact is wrong; retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// The rollout's alarm gate stopped the release: an alarm fired.
    #[error("alarm gate in {region}: {reason}")]
    GateFailed { region: String, reason: String },
    /// A blackout window of the environment is active.
    #[error("{0}")]
    Blackout(String),
    /// A CloudFormation stack failed to create.
    #[error("stack {stack} in {region} failed: {reason}")]
    StackFailed {
        region: String,
        stack: String,
        reason: String,
    },
    /// New instances never became healthy in the load balancer.
    #[error("promote in {region} failed: {reason}")]
    PromoteFailed { region: String, reason: String },
    /// A stack could not be deleted.
    #[error("prune in {region} failed: {reason}")]
    PruneFailed { region: String, reason: String },
    /// A hook of the service failed: its name and the end of its output.
    #[error("hook {hook} failed: {reason}")]
    HookFailed { hook: String, reason: String },
    /// AWS refused the call for lack of permission.
    #[error("{0}")]
    AccessDenied(String),
    /// Another deploy of the same service and environment holds the lease.
    #[error("{0}")]
    LeaseHeld(String),
    /// Throttling, a 5xx, a timeout or a dropped connection: retry.
    #[error("{0}")]
    Retryable(String),
    /// Any other answer from AWS.
    #[error("{0}")]
    Aws(String),
}

/// A config that cannot give what a phase asks of it is the input's fault:
/// retrying cannot help.
impl From<crate::config::ConfigError> for PhaseError {
    fn from(e: crate::config::ConfigError) -> PhaseError {
        PhaseError::Invalid(e.to_string())
    }
}

impl PhaseError {
    /// The stable name the state machine's Retry/Catch match on.
    pub fn error_type(&self) -> &'static str {
        match self {
            PhaseError::Invalid(_) => "Invalid",
            PhaseError::Blackout(_) => "Blackout",
            PhaseError::StackFailed { .. } => "StackFailed",
            PhaseError::PromoteFailed { .. } => "PromoteFailed",
            PhaseError::GateFailed { .. } => "GateFailed",
            PhaseError::PruneFailed { .. } => "PruneFailed",
            PhaseError::HookFailed { .. } => "HookFailed",
            PhaseError::AccessDenied(_) => "AccessDenied",
            PhaseError::LeaseHeld(_) => "LeaseHeld",
            PhaseError::Retryable(_) => "Retryable",
            PhaseError::Aws(_) => "AwsError",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, PhaseError::Retryable(_))
    }

    /// The same error with the region it happened in, for messages that
    /// would otherwise not say where.
    pub fn in_region(self, region: &str) -> PhaseError {
        let prefix = |m: String| {
            if m.contains(region) {
                m
            } else {
                format!("{region}: {m}")
            }
        };
        match self {
            PhaseError::Invalid(m) => PhaseError::Invalid(prefix(m)),
            PhaseError::AccessDenied(m) => PhaseError::AccessDenied(prefix(m)),
            PhaseError::Retryable(m) => PhaseError::Retryable(prefix(m)),
            PhaseError::Aws(m) => PhaseError::Aws(prefix(m)),
            other => other,
        }
    }
}

pub type PhaseResult<S, O> = Result<Step<S, O>, PhaseError>;

/// Waits grow with each check, from a first check at once: 5, 10, 20, 30,
/// 30... seconds. Fast stacks finish in few transitions; slow ones do not
/// cost a state transition every 5 seconds.
pub fn backoff(checks_so_far: u32) -> u32 {
    match checks_so_far {
        0 => 5,
        1 => 10,
        2 => 20,
        _ => 30,
    }
}

/// How soon a stack's end (complete or failed) is acted on once
/// CloudFormation reports it: provision reads its stacks at least this
/// often, whatever they or the stacks before them took.
pub const NOTICE_SECONDS: u32 = 10;

/// The wait before a stack is checked again: 5 s after the first check (a
/// quick stack or a quick failure), then a steady [`NOTICE_SECONDS`].
///
/// A schedule shaped by the stack's age or by the stack before it costs
/// fewer transitions but notices a stack late by up to minutes; a steady
/// poll costs three transitions per wait: a 10-minute stack adds about
/// 180, under a cent of Step Functions per deploy (`make bench` prints
/// it), and the deploy's history stays well inside its budget
/// ([`crate::limits::OTHER_EVENTS`]: a 20-minute stack's checks are about
/// 1,100 events).
pub fn stack_wait(checks_so_far: u32) -> u32 {
    backoff(checks_so_far).min(NOTICE_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ages at which a stack taking `seconds` is checked after the first.
    fn checks_until(seconds: u64) -> Vec<u64> {
        let mut age = 0u64;
        let mut checks = Vec::new();
        while age < seconds {
            age += stack_wait(checks.len() as u32) as u64;
            checks.push(age);
        }
        checks
    }

    /// A stack's end is seen within NOTICE_SECONDS, however long it took.
    #[test]
    fn a_stack_is_noticed_within_ten_seconds_whatever_it_took() {
        assert_eq!(checks_until(30), vec![5, 15, 25, 35]);
        for seconds in [1u64, 25, 60, 600, 3600] {
            let seen = *checks_until(seconds).last().unwrap();
            assert!(seen - seconds <= u64::from(NOTICE_SECONDS), "{seconds}: seen at {seen}");
        }
    }

    #[test]
    fn waits_grow_then_level_off() {
        let waits: Vec<u32> = (0..6).map(backoff).collect();
        assert_eq!(waits, vec![5, 10, 20, 30, 30, 30]);
    }

    #[test]
    fn pending_serializes_with_status_tag() {
        let step: Step<u32, ()> = Step::Pending {
            state: 3,
            wait_seconds: 5,
            progress: "x".into(),
            percent: 10,
        };
        let v = serde_json::to_value(&step).unwrap();
        assert_eq!(v["status"], "pending");
        assert_eq!(v["wait_seconds"], 5);
    }
}
