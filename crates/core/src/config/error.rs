//! What a loaded config answers when asked for what it does not hold.

use std::path::PathBuf;

/// A config asked for an environment, a region or a rollout it cannot give.
/// Each message names the config's key and what the config does have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the config has no environment `{name}`; it has: {}", known.join(", "))]
    NoEnvironment { name: String, known: Vec<String> },
    #[error("environment `{environment}` has no region `{name}`; it has: {}", known.join(", "))]
    NoRegion {
        environment: String,
        name: String,
        known: Vec<String>,
    },
    /// A rollout (the environment's, with a deploy's override) that cannot
    /// run: `key` is the rollout's key at fault, as the config spells it.
    #[error("rollout.{key}: {problem}")]
    Rollout { key: &'static str, problem: String },
    /// Errors, or findings that leave the config incomplete, each printed
    /// with its file and line.
    #[error("{} cannot be deployed:\n{}", file.display(), findings.join("\n"))]
    NotDeployable { file: PathBuf, findings: Vec<String> },
}
