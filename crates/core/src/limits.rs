//! How long the names porter makes may be. A leaf: `validate` checks a
//! config against these before `release` and `template` make the names.

/// Hex digits in a release version.
pub const VERSION_LEN: usize = 12;

/// CloudFormation's limit on a stack name.
pub const MAX_STACK_NAME: usize = 128;
