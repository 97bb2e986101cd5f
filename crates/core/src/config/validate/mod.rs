//! The rules of `.porter/config`, applied to a positioned YAML tree.
//!
//! Every rule reports and moves on, so one run lists every problem. Rules
//! follow porter's config reference; where porter's own sample configs carry
//! placeholders (`vpc-TODO`, `s3_bucket: TODO`) the finding is
//! [`Severity::Incomplete`] rather than an error, so those files validate.

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;

use super::*;
use crate::regions;
use crate::yaml::{Node, Value};

/// Keys porter has that this product accepts but does not act on (yet).
/// Each one present gets exactly one warning.
const NOT_ACTED_ON: &[(&str, &str)] = &[
    ("haproxy", "instances are served by the ELB directly"),
    ("hot_swap", "every release gets a new stack (blue/green)"),
    ("autowire_security_groups", "the generated security group is used as is"),
    ("ssl_cert_arn", "no per-stack ELB is provisioned"),
    ("hosted_zone_name", "no per-stack DNS record is created"),
    ("dockerfile", "the build stage builds the image"),
    ("dockerfile_build", "the build stage builds the image"),
    ("uid", "the payload runs as the service user"),
    ("read_only", "the payload runs as the service user"),
    (
        "src_env_file",
        "porter sealed an env file's values into the stack; here `secrets:` names them (Secrets Manager or SSM) and each instance reads them at boot",
    ),
    (
        "secrets_exec_name",
        "porter ran this command on its build box and sealed its output into the stack; here `secrets:` names the values (Secrets Manager or SSM) and each instance reads them at boot",
    ),
    (
        "secrets_exec_args",
        "porter ran `secrets_exec_name` with these on its build box; here `secrets:` names the values and each instance reads them at boot",
    ),
    ("pids_limit", "not enforced on the host"),
];

/// The most instances a region may run. Promote registers, deregisters
/// and reads the health of a region's instances in one call each, and
/// `make bench` measures it with 200; beyond this a typo (an extra zero)
/// is likelier than a fleet.
const MOST_INSTANCES: u32 = 500;

const ROOT_KEYS: &[&str] = &["service_name", "porter_version", "environments", "hooks", "slack"];
const ENV_KEYS: &[&str] = &[
    "name",
    "role_arn",
    "stack_definition_path",
    "instance_count",
    "instance_type",
    "blackout_windows",
    "regions",
    "rollout",
    "secrets",
    "hot_swap",
    "haproxy",
    "autowire_security_groups",
    "stack_creation",
];
const REGION_KEYS: &[&str] = &[
    "name",
    "vpc_id",
    "azs",
    "role_arn",
    "s3_bucket",
    "sse_kms_key_id",
    "elb",
    "elbs",
    "target_group",
    "target_groups",
    "ssl_cert_arn",
    "hosted_zone_name",
    "instance_count",
    "key_pair_name",
    "auto_scaling_group",
    "stack_definition_path",
    "containers",
    "rollout",
    "secrets",
    "secrets_exec_name",
    "secrets_exec_args",
];
const CONTAINER_KEYS: &[&str] = &[
    "name",
    "topology",
    "inet_port",
    "dockerfile",
    "dockerfile_build",
    "uid",
    "read_only",
    "health_check",
    "src_env_file",
    "pids_limit",
];

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("pattern compiles"))
}

macro_rules! pattern {
    ($name:ident, $re:expr) => {
        fn $name() -> &'static Regex {
            static CELL: OnceLock<Regex> = OnceLock::new();
            re(&CELL, $re)
        }
    };
}

// The patterns the sections share; each section declares its own.
pattern!(service_name_re, r"^[a-zA-Z][-a-zA-Z0-9]*$");
pattern!(porter_version_re, r"^v\d+\.\d+\.\d+$");
pattern!(variable_re, r"^[A-Za-z_][A-Za-z0-9_]{0,127}$");
pattern!(secretsmanager_name_re, r"^[A-Za-z0-9/_+=.@-]{1,512}$");

// After `pattern!`, which the sections use.
mod checker;
mod environment;
mod hooks;
mod region;
mod secrets;

use checker::*;
use environment::*;
use hooks::*;
use region::*;
use secrets::*;

pub(super) fn validate(root: &Node, repo_root: &Path) -> (Option<Config>, Vec<Diagnostic>) {
    let mut c = Checker {
        repo_root,
        diagnostics: Vec::new(),
        warned: HashSet::new(),
        service: None,
        environment: None,
    };
    let config = check_root(&mut c, root);
    if let Some(config) = &config {
        check_user_data(&mut c, root, config);
    }
    let mut diagnostics = c.diagnostics;
    diagnostics.sort_by_key(|d| (d.line, d.col));
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    (config.filter(|_| !has_errors), diagnostics)
}

/// Each region's boot script, at the most pack can make it, against EC2's
/// UserData limit: found here rather than when a stack fails.
fn check_user_data(c: &mut Checker<'_>, root: &Node, config: &Config) {
    for (i, env) in config.environments.iter().enumerate() {
        for (j, region) in env.regions.iter().enumerate() {
            if let Err(why) = crate::template::user_data_upper_bound(config, env, region) {
                let node = root
                    .get("environments")
                    .and_then(|e| nth(e, i))
                    .and_then(|e| e.get("regions"))
                    .and_then(|r| nth(r, j))
                    .unwrap_or(root);
                c.error(node, &format!("environments[{i}].regions[{j}]"), why);
            }
        }
    }
}

fn nth(node: &Node, i: usize) -> Option<&Node> {
    match &node.value {
        Value::Seq(items) => items.get(i),
        _ => None,
    }
}

fn check_root(c: &mut Checker<'_>, root: &Node) -> Option<Config> {
    let entries = c.mapping(root, "", "the config")?;
    c.keys(entries, "", ROOT_KEYS, true);

    let service_name = c.matching(
        root,
        "service_name",
        "",
        true,
        service_name_re(),
        "must start with a letter and hold only letters, digits and `-`",
    );
    c.service = service_name.clone();
    // porter itself refuses a porter_version that is not vMAJOR.MINOR.PATCH
    // ("Invalid porter_version"); so does this product. It is recorded,
    // not used: nothing here downloads porter.
    let porter_version = c.matching(
        root,
        "porter_version",
        "",
        false,
        porter_version_re(),
        "is not a porter release like v5.3.0 (porter refuses this form too)",
    );

    let mut environments = Vec::new();
    match root.get("environments") {
        None => c.error(
            root,
            "environments",
            "`environments` is required: a list with at least one environment",
        ),
        Some(node) => {
            if let Some(items) = c.list(node, "environments", "environments") {
                if items.is_empty() {
                    c.error(node, "environments", "needs at least one environment");
                }
                let mut names = HashSet::new();
                for (i, env) in items.iter().enumerate() {
                    let path = format!("environments[{i}]");
                    // Checked on the name alone, so that a duplicate is
                    // found even when that environment has other problems.
                    if let Some((name, node)) = given_name(env) {
                        // The stack name, SERVICE-ENV-VERSION, is at most
                        // 128 characters; the version must survive in full.
                        if let Some(service) = &service_name {
                            let len = service.len() + name.len() + 2 + crate::limits::VERSION_LEN;
                            if len > crate::limits::MAX_STACK_NAME {
                                c.error(
                                    node,
                                    &join(&path, "name"),
                                    format!(
                                        "stack names here would be {len} characters ({service}-{name}-VERSION) and CloudFormation allows {}: shorten service_name or the environment's name",
                                        crate::limits::MAX_STACK_NAME
                                    ),
                                );
                            }
                        }
                        if !names.insert(name) {
                            c.error(
                                node,
                                &join(&path, "name"),
                                format!("environment `{name}` is defined twice; environment names must be unique"),
                            );
                        }
                    }
                    if let Some(e) = check_environment(c, env, &path) {
                        environments.push(e);
                    }
                }
            }
        }
    }
    let slack = check_slack(c, root);
    let hooks = check_hooks(c, root);
    Some(Config {
        slack: slack?,
        hooks: hooks?,
        service_name: service_name?,
        porter_version,
        environments,
    })
}
