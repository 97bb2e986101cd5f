//! What a function reads from the environment the infra gives it.

/// A setting a function cannot start with: its init fails naming the
/// variable, so the stack's configuration is what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A variable every function of this kind needs.
    #[error("{name} is not set: {why}")]
    Missing { name: &'static str, why: &'static str },
    /// A variable that is set, to a value that cannot be used.
    #[error("{name} `{value}` {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
}

impl SettingsError {
    /// The variable to fix.
    pub fn variable(&self) -> &'static str {
        match self {
            SettingsError::Missing { name, .. } | SettingsError::Invalid { name, .. } => name,
        }
    }
}
