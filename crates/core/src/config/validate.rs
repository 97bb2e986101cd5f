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
    ("auto_scaling_group", "the generated Auto Scaling group is used as is"),
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

pattern!(service_name_re, r"^[a-zA-Z][-a-zA-Z0-9]*$");
pattern!(porter_version_re, r"^v\d+\.\d+\.\d+$");
pattern!(env_name_re, r"^[0-9a-zA-Z]+$");
pattern!(region_re, r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$");
pattern!(role_arn_re, r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$");
pattern!(vpc_re, r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$");
pattern!(subnet_re, r"^subnet-[0-9a-f]{8}([0-9a-f]{9})?$");
pattern!(
    kms_key_arn_re,
    r"^arn:aws[a-z-]*:kms:[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d:\d{12}:key/(mrk-)?[0-9a-f-]{32,36}$"
);
pattern!(bucket_re, r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$");
pattern!(elb_re, r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?$");
pattern!(instance_type_re, r"^[a-z][a-z0-9-]*\.[a-z0-9]+$");
pattern!(variable_re, r"^[A-Za-z_][A-Za-z0-9_]{0,127}$");
pattern!(hook_name_re, r"^[a-z][a-z0-9_]{0,63}$");
pattern!(secretsmanager_name_re, r"^[A-Za-z0-9/_+=.@-]{1,512}$");
pattern!(ssm_name_re, r"^[A-Za-z0-9/_.-]{1,2048}$");

struct Checker<'a> {
    repo_root: &'a Path,
    diagnostics: Vec<Diagnostic>,
    warned: HashSet<&'static str>,
    /// The service and environment being checked, when their names are
    /// valid: secrets must live under names made of them.
    service: Option<String>,
    environment: Option<String>,
}

impl Checker<'_> {
    fn report(&mut self, severity: Severity, node: &Node, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            severity,
            line: node.mark.line,
            col: node.mark.col,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn error(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        self.report(Severity::Error, node, path, message);
    }

    /// The mapping's entries, or an error naming what was found instead.
    fn mapping<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                self.error(
                    node,
                    path,
                    format!("expected {what} (a mapping of keys), found {}", node.kind()),
                );
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.error(
                    node,
                    path,
                    format!(
                        "expected a list of {what} (lines starting with `- `), found {}",
                        node.kind()
                    ),
                );
                None
            }
        }
    }

    /// Checks keys against the known set: porter keys this product does not
    /// act on get one warning each; unknown keys are errors with the list of
    /// known ones, since a typo would otherwise be silently ignored.
    fn keys(&mut self, entries: &[(Node, Node)], path: &str, known: &[&str], allow_underscore: bool) {
        self.check_keys(entries, path, known, allow_underscore, true);
    }

    /// [`Checker::keys`] where a key porter does not act on elsewhere has
    /// a meaning of its own (a hook's `dockerfile`).
    fn keys_acted_on(&mut self, entries: &[(Node, Node)], path: &str, known: &[&str]) {
        self.check_keys(entries, path, known, false, false);
    }

    fn check_keys(&mut self, entries: &[(Node, Node)], path: &str, known: &[&str], allow_underscore: bool, warn: bool) {
        let mut seen = HashSet::new();
        for (k, _) in entries {
            let Some(key) = k.as_str() else {
                self.error(k, path, "keys must be plain names");
                continue;
            };
            let shown = clip_key(key);
            let key_path = join(path, &shown);
            if !seen.insert(key.to_owned()) {
                self.error(k, &key_path, format!("`{shown}` is set twice; keep one"));
                continue;
            }
            if allow_underscore && key.starts_with('_') {
                continue; // anchor holders such as `_container_base_inet`
            }
            if !known.contains(&key) {
                let message = match closest(key, known) {
                    Some(near) => format!(
                        "unknown key `{shown}`; did you mean `{near}`? (expected one of: {})",
                        known.join(", ")
                    ),
                    None => format!("unknown key `{shown}`; expected one of: {}", known.join(", ")),
                };
                self.error(k, &key_path, message);
                continue;
            }
            if let Some((name, why)) = NOT_ACTED_ON.iter().find(|(n, _)| warn && *n == key) {
                if self.warned.insert(name) {
                    self.report(
                        Severity::Warning,
                        k,
                        &key_path,
                        format!("accepted but not acted on: {why}"),
                    );
                }
            }
        }
    }

    fn string<'n>(&mut self, parent: &'n Node, key: &str, path: &str, required: bool) -> Option<(String, &'n Node)> {
        let key_path = join(path, key);
        match parent.get(key) {
            None => {
                if required {
                    self.error(parent, &key_path, format!("`{key}` is required here"));
                }
                None
            }
            Some(node) if node.is_null() => {
                if required {
                    self.error(node, &key_path, format!("`{key}` is empty; give it a value"));
                }
                None
            }
            Some(node) => match node.as_str() {
                Some(s) => Some((s.to_owned(), node)),
                None => {
                    self.error(
                        node,
                        &key_path,
                        format!("expected a single value, found {}", node.kind()),
                    );
                    None
                }
            },
        }
    }

    fn count(&mut self, parent: &Node, key: &str, path: &str) -> Option<u32> {
        let (text, node) = self.string(parent, key, path, false)?;
        match text.parse::<u32>() {
            Ok(n) if (1..=MOST_INSTANCES).contains(&n) => Some(n),
            _ => {
                self.error(
                    node,
                    &join(path, key),
                    format!("expected a whole number from 1 to {MOST_INSTANCES}, found `{text}`"),
                );
                None
            }
        }
    }

    fn stack_definition(&mut self, parent: &Node, path: &str) -> Option<StackDefinition> {
        let (rel, node) = self.string(parent, "stack_definition_path", path, false)?;
        let key_path = join(path, "stack_definition_path");
        // The overlay is repository content merged into a stack that runs
        // with deployment rights: it may only come from inside the repository.
        let escapes = Path::new(&rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
        if escapes {
            self.error(
                node,
                &key_path,
                format!("`{rel}` leaves the repository; give a path inside it, relative to its root, without `..`"),
            );
            return None;
        }
        let file = self.repo_root.join(&rel);
        if let (Ok(real), Ok(root)) = (std::fs::canonicalize(&file), std::fs::canonicalize(self.repo_root)) {
            if !real.starts_with(&root) {
                self.error(
                    node,
                    &key_path,
                    format!(
                        "`{rel}` is a link to a file outside the repository; put the template itself in the repository"
                    ),
                );
                return None;
            }
        }
        const MAX_TEMPLATE: u64 = 1024 * 1024;
        if std::fs::metadata(&file).is_ok_and(|m| m.len() > MAX_TEMPLATE) {
            self.error(
                node,
                &key_path,
                format!("`{rel}` is larger than 1 MiB, CloudFormation's own limit for a template"),
            );
            return None;
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                self.report(
                    Severity::Incomplete,
                    node,
                    &key_path,
                    format!(
                        "cannot read `{}` ({e}); the path is relative to the repository root",
                        file.display()
                    ),
                );
                return None;
            }
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(template) if template.is_object() => {
                let refused = crate::overlay::problems(&template);
                for p in &refused {
                    self.error(node, &key_path, format!("`{rel}` at {}: {}", p.path, p.why));
                }
                for e in crate::overlay::externals(&template) {
                    self.report(
                        Severity::Warning,
                        node,
                        &key_path,
                        format!(
                            "`{rel}` at {} names `{}`, outside the stack: pack refuses it unless the installation allows it (AllowedExternalReferences)",
                            e.path, e.value
                        ),
                    );
                }
                refused.is_empty().then_some(StackDefinition { path: rel, template })
            }
            Ok(_) => {
                self.error(
                    node,
                    &key_path,
                    format!("`{rel}` must hold a JSON object (a CloudFormation template)"),
                );
                None
            }
            Err(e) => {
                self.error(
                    node,
                    &key_path,
                    format!(
                        "`{rel}` is not valid JSON: line {} column {}: {e}",
                        e.line(),
                        e.column()
                    ),
                );
                None
            }
        }
    }
}

/// The longest key a finding shows whole; past it, its start and its length.
const MAX_KEY_SHOWN: usize = 64;

/// `key` as a finding shows it: clipped, so a 100 KB key is not repeated
/// into every message and path.
fn clip_key(key: &str) -> String {
    if key.chars().count() <= MAX_KEY_SHOWN {
        return key.to_owned();
    }
    let start: String = key.chars().take(MAX_KEY_SHOWN).collect();
    format!("{start}... ({} bytes)", key.len())
}

/// The known key a typo most likely meant: at most two edits away (a swap
/// of neighbours counting as one), and never for very short keys.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    // Lengths more than two apart are more than two edits apart: a long
    // key (a config of any shape may hold one, repeated) costs nothing.
    let len = key.chars().count();
    if !(3..=MAX_KEY_SHOWN).contains(&len) {
        return None;
    }
    known
        .iter()
        .filter(|k| k.chars().count().abs_diff(len) <= 2)
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The `name` of a mapping when it is a plain value, with its node.
fn given_name(node: &Node) -> Option<(&str, &Node)> {
    let name = node.get("name")?;
    match name.as_str() {
        Some(s) if !name.is_null() => Some((s, name)),
        _ => None,
    }
}

/// Whether the mapping sets `key` to something (an invalid something
/// included: that gets its own error).
fn has_value(node: &Node, key: &str) -> bool {
    node.get(key).is_some_and(|v| !v.is_null())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

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

    let service_name = c.string(root, "service_name", "", true).and_then(|(name, node)| {
        if service_name_re().is_match(&name) {
            Some(name)
        } else {
            c.error(
                node,
                "service_name",
                format!("`{name}` must start with a letter and hold only letters, digits and `-`"),
            );
            None
        }
    });
    c.service = service_name.clone();
    // porter itself refuses a porter_version that is not vMAJOR.MINOR.PATCH
    // ("Invalid porter_version"); so does this product. It is recorded,
    // not used: nothing here downloads porter.
    let porter_version = c.string(root, "porter_version", "", false).and_then(|(v, node)| {
        if porter_version_re().is_match(&v) {
            Some(v)
        } else {
            c.error(
                node,
                "porter_version",
                format!("`{v}` is not a porter release like v5.3.0 (porter refuses this form too)"),
            );
            None
        }
    });

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

fn check_environment(c: &mut Checker<'_>, env: &Node, path: &str) -> Option<Environment> {
    let entries = c.mapping(env, path, "an environment")?;
    c.keys(entries, path, ENV_KEYS, false);
    let name = c.string(env, "name", path, true).and_then(|(name, node)| {
        if env_name_re().is_match(&name) {
            Some(name)
        } else {
            c.error(
                node,
                &join(path, "name"),
                format!("`{name}` must hold only letters and digits"),
            );
            None
        }
    });
    c.environment = name.clone();
    let role_arn = check_role(c, env, path);
    let stack_definition = c.stack_definition(env, path);
    let secrets = check_secrets(c, env, path);
    let instance_count = c.count(env, "instance_count", path).unwrap_or(1);
    let instance_type = match c.string(env, "instance_type", path, false) {
        Some((t, node)) if !instance_type_re().is_match(&t) => {
            c.error(
                node,
                &join(path, "instance_type"),
                format!("`{t}` is not an EC2 instance type like m5.large"),
            );
            None
        }
        Some((t, _)) => Some(t),
        None => Some("m3.medium".to_owned()),
    };
    let blackout_windows = check_blackouts(c, env, path);

    let mut regions = Vec::new();
    let regions_path = join(path, "regions");
    match env.get("regions") {
        None => c.error(
            env,
            &regions_path,
            "`regions` is required: a list with at least one region",
        ),
        Some(node) => {
            if let Some(items) = c.list(node, &regions_path, "regions") {
                if items.is_empty() {
                    c.error(node, &regions_path, "needs at least one region");
                }
                let mut names = HashSet::new();
                for (i, region) in items.iter().enumerate() {
                    let rpath = format!("{regions_path}[{i}]");
                    if let Some((name, node)) = given_name(region) {
                        if !names.insert(name) {
                            c.error(
                                node,
                                &join(&rpath, "name"),
                                format!("region `{name}` is listed twice in this environment"),
                            );
                        }
                    }
                    let inherited = Inherited {
                        role_arn: role_arn.as_deref(),
                        role_arn_given: has_value(env, "role_arn"),
                        stack_definition: stack_definition.as_ref(),
                        instance_count,
                        secrets: secrets.as_deref(),
                    };
                    if let Some(r) = check_region(c, region, &rpath, &inherited) {
                        regions.push(r);
                    }
                }
            }
        }
    }
    let rollout = check_rollout(c, env, path, &regions);
    secrets?;
    Some(Environment {
        name: name?,
        instance_type: instance_type?,
        blackout_windows: blackout_windows?,
        regions,
        rollout: rollout?,
    })
}

/// `rollout:`: every region of the environment in exactly one wave (when
/// waves are given), a bake of at most a day, alarm names CloudWatch takes.
fn check_rollout(c: &mut Checker<'_>, env: &Node, path: &str, regions: &[Region]) -> Option<Rollout> {
    let rpath = join(path, "rollout");
    let Some(node) = env.get("rollout").filter(|n| !n.is_null()) else {
        return Some(Rollout::default());
    };
    let entries = c.mapping(node, &rpath, "a rollout")?;
    c.keys(
        entries,
        &rpath,
        &["waves", "bake_seconds", "alarms", "canary_instances"],
        false,
    );
    let mut ok = true;
    let mut waves = Vec::new();
    if let Some(wnode) = node.get("waves").filter(|n| !n.is_null()) {
        let wpath = join(&rpath, "waves");
        let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        let mut placed: HashSet<String> = HashSet::new();
        for (i, wave) in c
            .list(wnode, &wpath, "waves, each a list of regions")?
            .iter()
            .enumerate()
        {
            let ipath = format!("{wpath}[{i}]");
            let Some(items) = c.list(wave, &ipath, "regions") else {
                ok = false;
                continue;
            };
            if items.is_empty() {
                c.error(wave, &ipath, "a wave needs at least one region");
                ok = false;
            }
            let mut names = Vec::new();
            for (j, item) in items.iter().enumerate() {
                let jpath = format!("{ipath}[{j}]");
                let Some(name) = item.as_str() else {
                    c.error(item, &jpath, format!("expected a region name, found {}", item.kind()));
                    ok = false;
                    continue;
                };
                if !known.contains(&name) {
                    c.error(
                        item,
                        &jpath,
                        format!(
                            "`{name}` is not a region of this environment (its regions: {})",
                            known.join(", ")
                        ),
                    );
                    ok = false;
                } else if !placed.insert(name.to_owned()) {
                    c.error(item, &jpath, format!("region `{name}` is in two waves; keep it in one"));
                    ok = false;
                }
                names.push(name.to_owned());
            }
            waves.push(names);
        }
        let missing: Vec<&str> = known.iter().copied().filter(|r| !placed.contains(*r)).collect();
        if ok && !missing.is_empty() {
            c.error(
                wnode,
                &wpath,
                format!("every region must be in a wave; {} is in none", missing.join(", ")),
            );
            ok = false;
        }
    }
    let bake_seconds = match c.string(node, "bake_seconds", &rpath, false) {
        None => 0,
        Some((text, n)) => match text.parse::<u32>() {
            Ok(s) if s <= MAX_BAKE_SECONDS => s,
            _ => {
                c.error(
                    n,
                    &join(&rpath, "bake_seconds"),
                    format!("expected a whole number of seconds from 0 to {MAX_BAKE_SECONDS}, found `{text}`"),
                );
                ok = false;
                0
            }
        },
    };
    let own = check_canary_and_alarms(c, node, &rpath)?;
    let canary_instances = own.canary_instances.unwrap_or_default();
    // A region with a canary of its own is checked with that region.
    for r in regions.iter().filter(|r| r.rollout.canary_instances.is_none()) {
        if canary_instances > r.instance_count {
            c.error(
                node.get("canary_instances").unwrap_or(node),
                &join(&rpath, "canary_instances"),
                format!(
                    "{canary_instances} canaries, but {} launches {} instance(s); ask for at most {}, or set the region's own",
                    r.name, r.instance_count, r.instance_count
                ),
            );
            ok = false;
        }
    }
    ok.then_some(Rollout {
        waves,
        bake_seconds,
        alarms: own.alarms.unwrap_or_default(),
        canary_instances,
        ..Rollout::default()
    })
}

/// `canary_instances` and `alarms`, which an environment's rollout and a
/// region's both take. `None` when either is wrong (each is reported).
fn check_canary_and_alarms(c: &mut Checker<'_>, node: &Node, rpath: &str) -> Option<RegionRollout> {
    let mut ok = true;
    let canary_instances =
        c.string(node, "canary_instances", rpath, false)
            .and_then(|(text, n)| match text.parse::<u32>() {
                Ok(k) if k <= 100 => Some(k),
                _ => {
                    c.error(
                        n,
                        &join(rpath, "canary_instances"),
                        format!("expected a whole number of instances from 0 to 100, found `{text}`"),
                    );
                    ok = false;
                    None
                }
            });
    let mut alarms = None;
    if let Some(anode) = node.get("alarms").filter(|n| !n.is_null()) {
        let apath = join(rpath, "alarms");
        let mut names = Vec::new();
        for (i, item) in c.list(anode, &apath, "CloudWatch alarm names")?.iter().enumerate() {
            match item.as_str() {
                Some(a) if is_alarm_name(a) => names.push(a.to_owned()),
                _ => {
                    c.error(
                        item,
                        &format!("{apath}[{i}]"),
                        "expected a CloudWatch alarm name (1 to 255 characters)",
                    );
                    ok = false;
                }
            }
        }
        alarms = Some(names);
    }
    ok.then_some(RegionRollout {
        canary_instances,
        alarms,
    })
}

/// A region's `rollout:`: its own canary and alarms.
fn check_region_rollout(c: &mut Checker<'_>, region: &Node, path: &str, instance_count: u32) -> Option<RegionRollout> {
    let rpath = join(path, "rollout");
    let Some(node) = region.get("rollout").filter(|n| !n.is_null()) else {
        return Some(RegionRollout::default());
    };
    let entries = c.mapping(node, &rpath, "a region's rollout")?;
    let mut spanning = false;
    for (k, _) in entries {
        if let Some(key) = k.as_str().filter(|k| matches!(*k, "waves" | "bake_seconds")) {
            c.error(
                k,
                &join(&rpath, key),
                format!("`{key}` spans regions: set it in the environment's rollout; a region sets only canary_instances and alarms"),
            );
            spanning = true;
        }
    }
    c.keys(
        entries,
        &rpath,
        &["canary_instances", "alarms", "waves", "bake_seconds"],
        false,
    );
    let own = check_canary_and_alarms(c, node, &rpath)?;
    if let Some(n) = own.canary_instances.filter(|n| *n > instance_count) {
        c.error(
            node.get("canary_instances").unwrap_or(node),
            &join(&rpath, "canary_instances"),
            format!(
                "{n} canaries, but this region launches {instance_count} instance(s); ask for at most {instance_count}"
            ),
        );
        return None;
    }
    (!spanning).then_some(own)
}

fn check_role(c: &mut Checker<'_>, parent: &Node, path: &str) -> Option<String> {
    let (arn, node) = c.string(parent, "role_arn", path, false)?;
    if role_arn_re().is_match(&arn) {
        Some(arn)
    } else {
        c.error(
            node,
            &join(path, "role_arn"),
            format!("`{arn}` is not an IAM role ARN like arn:aws:iam::123456789012:role/porter-deployment"),
        );
        None
    }
}

fn check_blackouts(c: &mut Checker<'_>, env: &Node, path: &str) -> Option<Vec<BlackoutWindow>> {
    let bpath = join(path, "blackout_windows");
    let Some(node) = env.get("blackout_windows") else {
        return Some(Vec::new());
    };
    let items = c.list(node, &bpath, "windows with start_time and end_time")?;
    let mut windows = Vec::new();
    let mut ok = true;
    for (i, w) in items.iter().enumerate() {
        let wpath = format!("{bpath}[{i}]");
        let Some(entries) = c.mapping(w, &wpath, "a window") else {
            ok = false;
            continue;
        };
        c.keys(entries, &wpath, &["start_time", "end_time"], false);
        let mut parse = |key: &str| {
            let (text, node) = c.string(w, key, &wpath, true)?;
            match chrono::DateTime::parse_from_rfc3339(&text) {
                Ok(t) => Some((text, t, node)),
                Err(e) => {
                    c.error(
                        node,
                        &join(&wpath, key),
                        format!("`{text}` is not an RFC3339 time like 2026-12-24T00:00:00Z ({e})"),
                    );
                    None
                }
            }
        };
        let start = parse("start_time");
        let end = parse("end_time");
        match (start, end) {
            (Some((s, st, _)), Some((e, et, enode))) => {
                if st > et {
                    c.error(
                        enode,
                        &join(&wpath, "end_time"),
                        format!("ends ({e}) before it starts ({s})"),
                    );
                    ok = false;
                } else {
                    windows.push(BlackoutWindow {
                        start_time: s,
                        end_time: e,
                    });
                }
            }
            _ => ok = false,
        }
    }
    ok.then_some(windows)
}

struct Inherited<'a> {
    /// The environment's `role_arn` when it is valid.
    role_arn: Option<&'a str>,
    /// Whether the environment writes one at all (a malformed one is
    /// reported there, not again on each region).
    role_arn_given: bool,
    stack_definition: Option<&'a StackDefinition>,
    instance_count: u32,
    /// The environment's `secrets:` when they are valid.
    secrets: Option<&'a [Secret]>,
}

fn check_region(c: &mut Checker<'_>, region: &Node, path: &str, inherited: &Inherited<'_>) -> Option<Region> {
    let entries = c.mapping(region, path, "a region")?;
    c.keys(entries, path, REGION_KEYS, false);

    let name = c.string(region, "name", path, true).and_then(|(name, node)| {
        if !region_re().is_match(&name) {
            c.error(
                node,
                &join(path, "name"),
                format!("`{name}` is not an AWS region name like us-west-2"),
            );
            None
        } else if !regions::is_known(&name) {
            c.error(
                node,
                &join(path, "name"),
                format!(
                    "`{name}` is not an AWS region; did you mean `{}`? (A region newer than this release: add it to {})",
                    regions::nearest(&name, edit_distance),
                    regions::EXTRA_VAR
                ),
            );
            None
        } else {
            Some(name)
        }
    });
    let own_role = check_role(c, region, path);
    let role_arn = match (own_role, inherited.role_arn) {
        (Some(r), _) => Some(r),
        (None, Some(r)) => Some(r.to_owned()),
        (None, None) => {
            if !has_value(region, "role_arn") && !inherited.role_arn_given {
                c.error(
                    region,
                    &join(path, "role_arn"),
                    "no `role_arn` for this region: set one here or on its environment",
                );
            }
            None
        }
    };
    let vpc_id = c.string(region, "vpc_id", path, false).map(|(v, node)| {
        if !vpc_re().is_match(&v) {
            c.report(
                Severity::Incomplete,
                node,
                &join(path, "vpc_id"),
                format!("`{v}` is not a VPC id like vpc-0a1b2c3d"),
            );
        }
        v
    });
    let azs = check_azs(c, region, path, name.as_deref(), vpc_id.is_some());
    let s3_bucket = c.string(region, "s3_bucket", path, true).map(|(b, node)| {
        if !bucket_re().is_match(&b) || b.contains("..") {
            c.report(
                Severity::Incomplete,
                node,
                &join(path, "s3_bucket"),
                format!("`{b}` is not a valid S3 bucket name (3-63 lowercase letters, digits, `.` and `-`)"),
            );
        }
        b
    });
    // The key goes into the instance role's `kms:Decrypt` statement and the
    // uploads' headers: a key ARN only (IAM matches keys by their ARN, and a
    // `*` would grant every key).
    let sse_kms_key_id = c
        .string(region, "sse_kms_key_id", path, false)
        .and_then(|(k, node)| {
            if kms_key_arn_re().is_match(&k) {
                Some(k)
            } else {
                c.error(
                    node,
                    &join(path, "sse_kms_key_id"),
                    format!(
                        "`{}` is not a KMS key ARN like arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                        k.chars().take(128).collect::<String>()
                    ),
                );
                None
            }
        });
    let elbs = check_elbs(c, region, path);
    let instance_count = c
        .count(region, "instance_count", path)
        .unwrap_or(inherited.instance_count);
    let key_pair_name = c.string(region, "key_pair_name", path, false).map(|(k, _)| k);
    let containers = check_containers(c, region, path);
    let stack_definition = c
        .stack_definition(region, path)
        .or_else(|| inherited.stack_definition.cloned());
    let rollout = check_region_rollout(c, region, path, instance_count);
    // The region's own replace the environment's of the same variable.
    let secrets = check_secrets(c, region, path).map(|own| {
        let mut all: Vec<Secret> = inherited
            .secrets
            .unwrap_or_default()
            .iter()
            .filter(|s| !own.iter().any(|o| o.variable == s.variable))
            .cloned()
            .collect();
        all.extend(own);
        all
    });

    Some(Region {
        name: name?,
        role_arn: role_arn?,
        vpc_id,
        azs: azs?,
        s3_bucket: s3_bucket?,
        sse_kms_key_id,
        elbs: elbs?,
        instance_count,
        key_pair_name,
        containers: containers?,
        stack_definition,
        rollout: rollout?,
        secrets: secrets?,
    })
}

/// The longest hook command: a script belongs in the repository.
const MAX_HOOK_COMMAND: usize = 4096;

/// `hooks:`: each hook name to a list of hooks, each with either porter's
/// `dockerfile:` or this product's `command:`.
fn check_hooks(c: &mut Checker<'_>, root: &Node) -> Option<BTreeMap<String, Vec<Hook>>> {
    let Some(node) = root.get("hooks").filter(|n| !n.is_null()) else {
        return Some(BTreeMap::new());
    };
    let entries = c.mapping(node, "hooks", "hooks by name (pre_provision: [...], ...)")?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in entries {
        let Some(name) = k.as_str() else {
            c.error(k, "hooks", "hook names must be plain names");
            ok = false;
            continue;
        };
        let path = join("hooks", name);
        if !hook_name_re().is_match(name) {
            c.error(
                k,
                &path,
                format!("`{name}` is not a hook name (lowercase letters, digits and `_`, like pre_provision)"),
            );
            ok = false;
            continue;
        }
        if !DEPLOY_HOOKS.contains(&name) && name != EC2_BOOTSTRAP {
            let near = closest(name, DEPLOY_HOOKS)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            c.report(
                Severity::Warning,
                k,
                &path,
                format!("`{name}` is a hook of the service's own{near}: a deploy runs only pre_/post_ of pack, provision, promote and prune, and ec2_bootstrap"),
            );
        }
        if v.is_null() {
            continue;
        }
        let Some(items) = c.list(v, &path, "hooks") else {
            ok = false;
            continue;
        };
        let mut hooks = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match check_hook(c, item, &format!("{path}[{i}]"), name) {
                Some(h) => hooks.push(h),
                None => ok = false,
            }
        }
        out.insert(name.to_owned(), hooks);
    }
    ok.then_some(out)
}

fn check_hook(c: &mut Checker<'_>, node: &Node, path: &str, name: &str) -> Option<Hook> {
    let entries = c.mapping(node, path, "a hook")?;
    c.keys_acted_on(
        entries,
        path,
        &[
            "dockerfile",
            "command",
            "repo",
            "ref",
            "environment",
            "concurrent",
            "run_condition",
        ],
    );
    let mut ok = true;
    let dockerfile = c.string(node, "dockerfile", path, false);
    let command = c.string(node, "command", path, false);
    let repo = c.string(node, "repo", path, false).map(|(r, _)| r);
    let git_ref = c.string(node, "ref", path, false);
    if let (Some((_, n)), None) = (&git_ref, &repo) {
        c.error(
            n,
            &join(path, "ref"),
            "`ref` names a revision of `repo`; give the repo too",
        );
        ok = false;
    }
    let run = match (dockerfile, command) {
        (Some((_, n)), Some(_)) => {
            c.error(
                n,
                &join(path, "dockerfile"),
                "give `dockerfile:` or `command:`, not both",
            );
            None
        }
        (Some((file, n)), None) => {
            let escapes = std::path::Path::new(&file)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
            if escapes || file.is_empty() {
                c.error(
                    n,
                    &join(path, "dockerfile"),
                    format!("`{file}` must be a path inside the repository, relative to its root, without `..`"),
                );
                None
            } else {
                Some(HookRun::Dockerfile(file))
            }
        }
        (None, Some((cmd, n))) => {
            if cmd.trim().is_empty() || cmd.len() > MAX_HOOK_COMMAND {
                c.error(n, &join(path, "command"), format!("a command is 1 to {MAX_HOOK_COMMAND} characters; put a longer one in a script in the repository"));
                None
            } else {
                Some(HookRun::Command(cmd))
            }
        }
        // A plugin without one builds its repository's own Dockerfile.
        (None, None) if repo.is_some() => Some(HookRun::Dockerfile("Dockerfile".into())),
        (None, None) => {
            c.error(node, path, "a hook needs `dockerfile:` (porter's: built and run in Docker) or `command:` (run in the repository root)");
            None
        }
    };
    let concurrent = match c.string(node, "concurrent", path, false) {
        None => false,
        Some((t, _)) if ["true", "yes"].contains(&t.as_str()) => true,
        Some((t, _)) if ["false", "no"].contains(&t.as_str()) => false,
        Some((t, n)) => {
            c.error(
                n,
                &join(path, "concurrent"),
                format!("expected true or false, found `{t}`"),
            );
            ok = false;
            false
        }
    };
    let run_condition = match c.string(node, "run_condition", path, false) {
        None => RunCondition::Pass,
        Some((t, n)) => match t.as_str() {
            "pass" => RunCondition::Pass,
            "fail" => {
                if name.starts_with("pre_") || name == EC2_BOOTSTRAP {
                    c.report(
                        Severity::Warning,
                        n,
                        &join(path, "run_condition"),
                        format!("this hook never runs: {name} runs before anything it could follow has failed"),
                    );
                }
                RunCondition::Fail
            }
            "always" => RunCondition::Always,
            _ => {
                c.error(
                    n,
                    &join(path, "run_condition"),
                    format!("`{t}` is not a run condition; expected pass, fail or always"),
                );
                ok = false;
                RunCondition::Pass
            }
        },
    };
    let mut environment = BTreeMap::new();
    if let Some(env) = node.get("environment").filter(|n| !n.is_null()) {
        let epath = join(path, "environment");
        match c.mapping(
            env,
            &epath,
            "variables (`NAME: value`, or `NAME:` to pass the deploy's own)",
        ) {
            None => ok = false,
            Some(vars) => {
                for (k, v) in vars {
                    let Some(var) = k.as_str().filter(|v| variable_re().is_match(v)) else {
                        c.error(
                            k,
                            &epath,
                            "expected an environment variable name (a letter or `_`, then letters, digits and `_`)",
                        );
                        ok = false;
                        continue;
                    };
                    if var.starts_with("PORTER_") {
                        c.error(
                            k,
                            &join(&epath, var),
                            format!("`{var}`: PORTER_ variables are the release's facts, which porter sets"),
                        );
                        ok = false;
                        continue;
                    }
                    let value = if v.is_null() {
                        None
                    } else {
                        v.as_str().map(str::to_owned)
                    };
                    if !v.is_null() && value.is_none() {
                        c.error(
                            v,
                            &join(&epath, var),
                            format!("expected a single value, found {}", v.kind()),
                        );
                        ok = false;
                        continue;
                    }
                    environment.insert(var.to_owned(), value);
                }
            }
        }
    }
    let run = run?;
    ok.then_some(Hook {
        run,
        repo,
        git_ref: git_ref.map(|(r, _)| r),
        environment,
        concurrent,
        run_condition,
    })
}

/// `slack:`: porter's webhook keys, each `secretsmanager:NAME` of a secret
/// under the service's `porter/SERVICE/notifications/`. A URL in clear is a
/// credential anyone who reads the repository can post with: it is not
/// used, and each one gets a warning saying where to put it.
fn check_slack(c: &mut Checker<'_>, root: &Node) -> Option<BTreeMap<String, String>> {
    let Some(node) = root.get("slack").filter(|n| !n.is_null()) else {
        return Some(BTreeMap::new());
    };
    let entries = c.mapping(node, "slack", "webhooks, each `KEY: secretsmanager:NAME`")?;
    c.keys(entries, "slack", SLACK_KEYS, false);
    let prefix = c.service.as_deref().map(webhook_prefix);
    let mut out = BTreeMap::new();
    let mut ok = true;
    let mut in_clear = Vec::new();
    for (k, v) in entries {
        let Some(key) = k.as_str().filter(|k| SLACK_KEYS.contains(k)) else {
            continue; // reported by `keys`
        };
        let path = join("slack", key);
        if v.is_null() {
            continue;
        }
        let Some(value) = v.as_str() else {
            c.error(v, &path, format!("expected `secretsmanager:NAME`, found {}", v.kind()));
            ok = false;
            continue;
        };
        let store_as = prefix.clone().unwrap_or_else(|| "porter/SERVICE/notifications/".into());
        if value.starts_with("https://") || value.starts_with("http://") {
            in_clear.push((key, v));
            continue;
        }
        match value.strip_prefix("secretsmanager:") {
            Some(name)
                if secretsmanager_name_re().is_match(name)
                    && prefix
                        .as_deref()
                        .is_none_or(|p| name.starts_with(p) && name.len() > p.len()) =>
            {
                out.insert(key.to_owned(), name.to_owned());
            }
            Some(name) => {
                c.error(
                    v,
                    &path,
                    format!("`{name}` is not a secret under `{store_as}`, the only place the notify function may read webhook URLs from"),
                );
                ok = false;
            }
            None => {
                c.error(
                    v,
                    &path,
                    format!("expected `secretsmanager:{store_as}NAME`: the secret that holds the webhook URL"),
                );
                ok = false;
            }
        }
    }
    // One warning for every URL in clear; the URLs themselves are never
    // repeated: each is the credential.
    if let Some((first, node)) = in_clear.first() {
        let keys: Vec<&str> = in_clear.iter().map(|(k, _)| *k).collect();
        let store_as = prefix.unwrap_or_else(|| "porter/SERVICE/notifications/".into());
        c.report(
            Severity::Warning,
            node,
            &join("slack", first),
            format!(
                "{} {} written in clear, so not used: anyone who can read the repository can post with a webhook URL. Store each in Secrets Manager as `{store_as}NAME` and write `secretsmanager:{store_as}NAME`",
                keys.join(", "),
                if keys.len() == 1 { "is a webhook URL" } else { "are webhook URLs" }
            ),
        );
    }
    ok.then_some(out)
}

/// Variables a secret may not set: the boot script exports each secret
/// before it reads the next and starts the service, so these would change
/// how the boot itself runs (its PATH, its shell, its AWS credentials).
fn reserved_variable(name: &str) -> bool {
    // A secret is exported in the boot script before the tools it runs
    // (the AWS CLI, curl, docker, the service's own start): a name any of
    // them reads, or one of the script's own variables, would change how
    // the instance boots.
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "IFS",
        "SHELL",
        "ENV",
        "CDPATH",
        "GLOBIGNORE",
        "SHELLOPTS",
        "PS4",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SERVICE_PID",
        "VALUE",
        "OK",
        "BAD",
        "CODE",
    ];
    const PREFIXES: &[&str] = &[
        "AWS_", "LD_", "BASH", "PYTHON", "PERL", "RUBY", "NODE_", "JAVA_", "DOCKER_", "CURL_", "GIT_", "PORTER_",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&upper.as_str())
        || PREFIXES.iter().any(|p| upper.starts_with(p))
        // http_proxy, HTTPS_PROXY, no_proxy, ALL_PROXY ...
        || upper.ends_with("_PROXY")
}

/// `secrets:` of an environment or a region: a mapping of environment
/// variable to `secretsmanager:NAME` or `ssm:NAME`, each name under the
/// service's and environment's own prefix. `Some(empty)` when absent,
/// `None` when any entry is wrong (each is reported).
fn check_secrets(c: &mut Checker<'_>, parent: &Node, path: &str) -> Option<Vec<Secret>> {
    let spath = join(path, "secrets");
    let Some(node) = parent.get("secrets").filter(|n| !n.is_null()) else {
        return Some(Vec::new());
    };
    let entries = c.mapping(
        node,
        &spath,
        "secrets, each `VARIABLE: secretsmanager:NAME` or `VARIABLE: ssm:NAME`",
    )?;
    let mut secrets = Vec::new();
    let mut ok = true;
    let mut seen = HashSet::new();
    for (k, v) in entries {
        let Some(variable) = k.as_str() else {
            c.error(k, &spath, "keys must be plain environment variable names");
            ok = false;
            continue;
        };
        let vpath = join(&spath, variable);
        if !seen.insert(variable.to_owned()) {
            c.error(k, &vpath, format!("`{variable}` is set twice; keep one"));
            ok = false;
            continue;
        }
        if !variable_re().is_match(variable) {
            c.error(
                k,
                &vpath,
                format!("`{variable}` is not an environment variable name (a letter or `_`, then letters, digits and `_`, at most 128)"),
            );
            ok = false;
            continue;
        }
        if reserved_variable(variable) {
            c.error(
                k,
                &vpath,
                format!("`{variable}` would change how the instance boots (PATH, the shell, proxies, AWS_*, LD_*, PYTHON*, DOCKER_*, PORTER_*, the boot script's own names); give the service another name for it"),
            );
            ok = false;
            continue;
        }
        let Some(reference) = v.as_str().filter(|_| !v.is_null()) else {
            c.error(
                v,
                &vpath,
                format!("expected `secretsmanager:NAME` or `ssm:NAME`, found {}", v.kind()),
            );
            ok = false;
            continue;
        };
        let parsed = match reference.split_once(':') {
            Some(("secretsmanager", name)) if secretsmanager_name_re().is_match(name) => {
                Some((SecretStore::SecretsManager, name))
            }
            Some(("ssm", name)) if ssm_name_re().is_match(name) && !name.contains("//") => {
                Some((SecretStore::Ssm, name))
            }
            Some(("secretsmanager", _)) => {
                c.error(v, &vpath, "a Secrets Manager secret name is 1 to 512 letters, digits and `/_+=.@-` (a name, not an ARN: the secret is read in the deploy's own account and region)");
                None
            }
            Some(("ssm", _)) => {
                c.error(v, &vpath, "an SSM parameter name is 1 to 2048 letters, digits and `/_.-` (a name, not an ARN: the parameter is read in the deploy's own account and region)");
                None
            }
            _ => {
                c.error(
                    v,
                    &vpath,
                    "expected `secretsmanager:NAME` or `ssm:NAME`: a reference to where the value lives, never the value itself",
                );
                None
            }
        };
        let Some((store, name)) = parsed else {
            ok = false;
            continue;
        };
        if let (Some(service), Some(environment)) = (&c.service, &c.environment) {
            let prefix = Secret::required_prefix(store, service, environment);
            if !name.starts_with(&prefix) || name.len() == prefix.len() {
                c.error(
                    v,
                    &vpath,
                    format!(
                        "`{name}` is not under `{prefix}`: a service's instances may read only their own environment's secrets (the release boundary allows nothing outside porter/); store it as `{prefix}...`"
                    ),
                );
                ok = false;
                continue;
            }
        }
        secrets.push(Secret {
            variable: variable.to_owned(),
            store,
            name: name.to_owned(),
        });
    }
    ok.then_some(secrets)
}

fn check_azs(
    c: &mut Checker<'_>,
    region: &Node,
    path: &str,
    region_name: Option<&str>,
    has_vpc: bool,
) -> Option<Vec<AvailabilityZone>> {
    let apath = join(path, "azs");
    let Some(node) = region.get("azs") else {
        c.error(
            region,
            &apath,
            "`azs` is required: a list like `- {name: us-west-2a, subnet_id: subnet-0a1b2c3d}`",
        );
        return None;
    };
    let items = c.list(node, &apath, "availability zones")?;
    if items.is_empty() {
        c.error(node, &apath, "needs at least one availability zone");
        return None;
    }
    let mut azs = Vec::new();
    let mut names = HashSet::new();
    let mut ok = true;
    for (i, az) in items.iter().enumerate() {
        let zpath = format!("{apath}[{i}]");
        let Some(entries) = c.mapping(az, &zpath, "an availability zone") else {
            ok = false;
            continue;
        };
        c.keys(entries, &zpath, &["name", "subnet_id"], false);
        let name = c.string(az, "name", &zpath, true);
        if let (Some((n, nnode)), Some(r)) = (&name, region_name) {
            let suffix = n.strip_prefix(r);
            if !suffix.is_some_and(|s| s.len() == 1 && s.chars().all(|ch| ch.is_ascii_lowercase())) {
                c.error(
                    nnode,
                    &join(&zpath, "name"),
                    format!("`{n}` is not an availability zone of {r} (like {r}a)"),
                );
                ok = false;
            }
            if !names.insert(n.clone()) {
                c.error(nnode, &join(&zpath, "name"), format!("`{n}` is listed twice"));
                ok = false;
            }
        }
        let subnet_id = c.string(az, "subnet_id", &zpath, false).map(|(s, node)| {
            if !subnet_re().is_match(&s) {
                c.report(
                    Severity::Incomplete,
                    node,
                    &join(&zpath, "subnet_id"),
                    format!("`{s}` is not a subnet id like subnet-0a1b2c3d"),
                );
            }
            s
        });
        if !has_vpc && has_value(az, "subnet_id") {
            // The stack's security group goes where vpc_id says, the
            // instances where their subnets are: without it the group is
            // made in the default VPC and cannot be given to them.
            c.error(
                az,
                &join(&zpath, "subnet_id"),
                "a subnet needs the region's `vpc_id` (the subnet's VPC), or the instances' security group is made in the default VPC",
            );
            ok = false;
        }
        if has_vpc && !has_value(az, "subnet_id") {
            c.error(
                az,
                &join(&zpath, "subnet_id"),
                "the region sets `vpc_id`, so every availability zone needs a `subnet_id`",
            );
            ok = false;
        }
        match name {
            Some((name, _)) => azs.push(AvailabilityZone { name, subnet_id }),
            None => ok = false,
        }
    }
    ok.then_some(azs)
}

fn check_elbs(c: &mut Checker<'_>, region: &Node, path: &str) -> Option<Vec<Elb>> {
    let classic = check_balancers(c, region, path, BalancerKind::Classic);
    let groups = check_balancers(c, region, path, BalancerKind::TargetGroup);
    let (classic, groups) = (classic?, groups?);
    if classic == Declared::Unset && groups == Declared::Unset {
        c.report(
            Severity::Warning,
            region,
            &join(path, "elb"),
            "no `elb` or `target_group` set: promote does nothing in this region (write `elb: none` to say so)",
        );
    }
    let mut all = classic.into_vec();
    all.extend(groups.into_vec());
    Some(all)
}

/// A region's load balancers of one kind, as its config declares them.
#[derive(Debug, PartialEq)]
enum Declared {
    /// Neither key is set (a warning: promote does nothing there).
    Unset,
    /// Listed, or `none` (an empty list, said on purpose).
    Listed(Vec<Elb>),
}

impl Declared {
    fn into_vec(self) -> Vec<Elb> {
        match self {
            Declared::Unset => Vec::new(),
            Declared::Listed(elbs) => elbs,
        }
    }
}

/// One kind's keys of a region: `elb`/`elbs` or `target_group`/
/// `target_groups`. `None` when invalid.
fn check_balancers(c: &mut Checker<'_>, region: &Node, path: &str, kind: BalancerKind) -> Option<Declared> {
    let (one, many) = match kind {
        BalancerKind::Classic => ("elb", "elbs"),
        BalancerKind::TargetGroup => ("target_group", "target_groups"),
    };
    let noun = kind.noun();
    let single = c.string(region, one, path, false);
    let list = region.get(many);
    if let (Some((_, node)), Some(_)) = (&single, list) {
        c.error(
            node,
            &join(path, one),
            format!("set either `{one}` or `{many}`, not both"),
        );
        return None;
    }
    let check_name = |c: &mut Checker<'_>, name: &str, node: &Node, p: &str| -> bool {
        if elb_re().is_match(name) {
            true
        } else {
            c.error(
                node,
                p,
                format!(
                    "`{name}` is not a {noun} name (1-32 letters, digits and `-`, not starting or ending with `-`)"
                ),
            );
            false
        }
    };
    let make = |name: String, tag: Option<String>| Elb { name, tag, kind };
    if let Some((name, node)) = single {
        if name.eq_ignore_ascii_case("none") {
            return Some(Declared::Listed(Vec::new()));
        }
        return check_name(c, &name, node, &join(path, one)).then(|| Declared::Listed(vec![make(name, None)]));
    }
    let Some(node) = list else {
        return Some(Declared::Unset);
    };
    let epath = join(path, many);
    let items = c.list(node, &epath, &format!("{noun}s with name and tag"))?;
    let mut elbs = Vec::new();
    let mut names = HashSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{epath}[{i}]");
        let Some(entries) = c.mapping(item, &ipath, &format!("a {noun}")) else {
            ok = false;
            continue;
        };
        c.keys(entries, &ipath, &["name", "tag"], false);
        let tag = c.string(item, "tag", &ipath, false).map(|(t, _)| t);
        match c.string(item, "name", &ipath, true) {
            Some((name, nnode)) => {
                if !check_name(c, &name, nnode, &join(&ipath, "name")) {
                    ok = false;
                } else if !names.insert(name.clone()) {
                    c.error(nnode, &join(&ipath, "name"), format!("`{name}` is listed twice"));
                    ok = false;
                } else {
                    elbs.push(make(name, tag));
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(Declared::Listed(elbs))
}

fn check_containers(c: &mut Checker<'_>, region: &Node, path: &str) -> Option<Vec<Container>> {
    let cpath = join(path, "containers");
    let Some(node) = region.get("containers") else {
        return Some(vec![Container {
            name: "primary".into(),
            topology: Topology::Inet,
            inet_port: None,
            health_check: HealthCheck::default(),
        }]);
    };
    let items = c.list(node, &cpath, "containers")?;
    let mut containers = Vec::new();
    let mut names = HashSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{cpath}[{i}]");
        let Some(entries) = c.mapping(item, &ipath, "a container") else {
            ok = false;
            continue;
        };
        c.keys(entries, &ipath, CONTAINER_KEYS, false);
        let name = c.string(item, "name", &ipath, true);
        if let Some((n, nnode)) = &name {
            if !names.insert(n.clone()) {
                c.error(
                    nnode,
                    &join(&ipath, "name"),
                    format!("container `{n}` is defined twice in this region"),
                );
                ok = false;
            }
        }
        let topology = match c.string(item, "topology", &ipath, false) {
            None => Some(Topology::Inet),
            Some((t, _)) if t == "inet" => Some(Topology::Inet),
            Some((t, _)) if t == "worker" => Some(Topology::Worker),
            Some((t, tnode)) => {
                c.error(
                    tnode,
                    &join(&ipath, "topology"),
                    format!("`{t}` is not a topology; expected `inet` or `worker`"),
                );
                None
            }
        };
        let inet_port = match c.string(item, "inet_port", &ipath, false) {
            None => Some(None),
            Some((p, pnode)) => match p.parse::<u16>() {
                Ok(port) if port > 0 => Some(Some(port)),
                _ => {
                    c.error(
                        pnode,
                        &join(&ipath, "inet_port"),
                        format!("`{p}` is not a port number from 1 to 65535"),
                    );
                    None
                }
            },
        };
        let health_check = match item.get("health_check") {
            None => Some(HealthCheck::default()),
            Some(h) => {
                let hpath = join(&ipath, "health_check");
                match c.mapping(h, &hpath, "a health check with method and path") {
                    None => None,
                    Some(entries) => {
                        c.keys(entries, &hpath, &["method", "path"], false);
                        let method = c.string(h, "method", &hpath, true).and_then(|(m, mnode)| {
                            if ["GET", "HEAD"].contains(&m.as_str()) {
                                Some(m)
                            } else {
                                c.error(
                                    mnode,
                                    &join(&hpath, "method"),
                                    format!("`{m}` is not supported; use GET or HEAD"),
                                );
                                None
                            }
                        });
                        let hc_path = c.string(h, "path", &hpath, true).and_then(|(p, pnode)| {
                            match health_check_path_problem(&p) {
                                None => Some(p),
                                Some(why) => {
                                    c.error(pnode, &join(&hpath, "path"), why);
                                    None
                                }
                            }
                        });
                        Some(HealthCheck {
                            method: method?,
                            path: hc_path?,
                        })
                    }
                }
            }
        };
        match (name, topology, inet_port, health_check) {
            (Some((name, _)), Some(topology), Some(inet_port), Some(health_check)) => containers.push(Container {
                name,
                topology,
                inet_port,
                health_check,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(containers)
}

/// Why a health check path cannot be used, if it cannot. The path reaches
/// the boot script (quoted) and CloudFormation's `Fn::Sub`, so it is held
/// to a plain URL path and query: no spaces, quotes, `$`, backticks or
/// control characters, whatever the quoting does with them.
pub(crate) fn health_check_path_problem(p: &str) -> Option<String> {
    const MAX: usize = 512;
    let shown: String = p.chars().take(64).flat_map(char::escape_default).collect();
    if !p.starts_with('/') {
        return Some(format!("`{shown}` must start with `/`"));
    }
    if p.len() > MAX {
        return Some(format!(
            "is {} bytes long; a health check path may have at most {MAX}",
            p.len()
        ));
    }
    let allowed = |ch: char| ch.is_ascii_alphanumeric() || "/-._~%?=&+,:@".contains(ch);
    p.chars().find(|&ch| !allowed(ch)).map(|bad| {
        format!(
            "`{shown}` holds `{}`; a health check path may hold letters, digits and `/-._~%?=&+,:@` only",
            bad.escape_default()
        )
    })
}
