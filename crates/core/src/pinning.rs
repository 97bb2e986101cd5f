//! Whether a deploy's reach is checked against the environment pins an
//! administrator wrote (see `pins`). A leaf: `aws` and `pins` both use it.

/// The SSM path under which each environment's pin lives.
pub const DEFAULT_PATH: &str = "/porter/environments/";

/// Whether, and against what, a deploy's reach is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Nothing is checked: the CLI acting with its user's own credentials,
    /// and the tests that drive a phase directly. Asked for by name
    /// ([`crate::aws::Aws::unpinned`]), never a default.
    Off,
    /// Every environment must be pinned under `path`; when `service` is
    /// set, only that service deploys.
    Pinned { path: String, service: Option<String> },
}

/// Pinned under [`DEFAULT_PATH`]: a caller that forgets to choose is
/// checked, not trusted.
impl Default for Pinning {
    fn default() -> Pinning {
        Pinning::Pinned {
            path: DEFAULT_PATH.into(),
            service: None,
        }
    }
}

impl Pinning {
    /// What the functions use: `PORTER_ENVIRONMENTS_PATH` (default
    /// [`DEFAULT_PATH`]) and `PORTER_SERVICE`. A function is always pinned.
    pub fn from_env() -> Pinning {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Pinning::Pinned {
            path: var("PORTER_ENVIRONMENTS_PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            service: var("PORTER_SERVICE"),
        }
    }
}
