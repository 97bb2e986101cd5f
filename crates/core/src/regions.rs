//! The AWS regions a config may name. A region's shape is not enough: a
//! typo like `us-west-3` would pass a pattern and reach CreateStack.

use std::sync::OnceLock;

/// Every AWS region this release knows: the commercial partition, GovCloud,
/// China and the European Sovereign Cloud.
pub const KNOWN: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eusc-de-east-1",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// The variable that admits regions newer than [`KNOWN`]: a comma-separated
/// list, read from the CLI's shell or from a function's own environment
/// (set by whoever deploys the infra, never by a service repository).
pub const EXTRA_VAR: &str = "PORTER_EXTRA_REGIONS";

fn extra() -> &'static [String] {
    static EXTRA: OnceLock<Vec<String>> = OnceLock::new();
    EXTRA.get_or_init(|| {
        std::env::var(EXTRA_VAR)
            .unwrap_or_default()
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect()
    })
}

/// True for a region AWS has (or one admitted by [`EXTRA_VAR`]).
pub fn is_known(name: &str) -> bool {
    KNOWN.contains(&name) || extra().iter().any(|r| r == name)
}

/// The known region nearest to `name` by edit distance.
pub fn nearest(name: &str, distance: impl Fn(&str, &str) -> usize) -> &'static str {
    KNOWN
        .iter()
        .min_by_key(|k| distance(name, k))
        .copied()
        .unwrap_or("us-east-1")
}
