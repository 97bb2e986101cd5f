//! The typed model of `.porter/config`: what loading makes of the file,
//! and what pack stores beside the payload. Below the loader, the
//! validator and the template renderer, which all read it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The whole service config, resolved: defaults filled in, `${VAR}`s
/// expanded, `stack_definition_path` files read. This is what pack stores
/// next to the payload so that later phases never need the source again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub service_name: String,
    pub porter_version: Option<String>,
    pub environments: Vec<Environment>,
    /// `slack:`: each of porter's webhook keys given as a reference, with
    /// the Secrets Manager secret that holds its URL. (A URL written in
    /// clear is not used: `validate` says why.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slack: BTreeMap<String, String>,
    /// `hooks:`, by hook name (`pre_provision`, `ec2_bootstrap`, a name of
    /// the service's own), each list in its order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, Vec<Hook>>,
}

/// The hooks a deploy runs itself, in the order it reaches them: each
/// phase's `pre_` before it changes anything, its `post_` after.
pub const DEPLOY_HOOKS: &[&str] = &[
    "pre_pack",
    "post_pack",
    "pre_provision",
    "post_provision",
    "pre_promote",
    "post_promote",
    "pre_prune",
    "post_prune",
];
/// The hook each instance runs at boot, before the service starts.
pub const EC2_BOOTSTRAP: &str = "ec2_bootstrap";

/// One of porter's hooks. Repository code, so untrusted: it runs apart
/// from the deploy (a CodeBuild build with a role of its own in AWS, an
/// unprivileged process on the local stack) and sees only the release's
/// facts and the variables it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub run: HookRun,
    /// A plugin: the hook's files come from this repository at `git_ref`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Variables the hook sees: a value, or (none given) the deploy's own
    /// variable of that name, as porter passed its own environment on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, Option<String>>,
    /// Runs at once with the concurrent hooks next to it in the list.
    #[serde(default)]
    pub concurrent: bool,
    #[serde(default)]
    pub run_condition: RunCondition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookRun {
    /// porter's form: a Dockerfile (relative to the repository root, or to
    /// the plugin's) built and run with the repository at `/repo_root`.
    Dockerfile(String),
    /// This product's extension: a shell command run in the repository
    /// root, needing no Docker engine.
    Command(String),
}

/// When a `post_` hook runs, by how its phase went (porter's
/// `run_condition`). A `pre_` hook's phase has not run: `pass` and
/// `always` run it, `fail` never does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunCondition {
    #[default]
    Pass,
    Fail,
    Always,
}

impl RunCondition {
    pub fn runs(self, phase_failed: bool) -> bool {
        match self {
            RunCondition::Pass => !phase_failed,
            RunCondition::Fail => phase_failed,
            RunCondition::Always => true,
        }
    }
}

/// The keys of `slack:`: porter's six, and `deploy_webhook_url` (an
/// extension) for every deploy's start, success, failure and rollback.
pub const SLACK_KEYS: &[&str] = &[
    "pack_success_webhook_url",
    "pack_failure_webhook_url",
    "provision_success_webhook_url",
    "provision_failure_webhook_url",
    "promote_success_webhook_url",
    "promote_failure_webhook_url",
    "deploy_webhook_url",
];

/// Where a service's webhook URLs must live in Secrets Manager: the
/// notify function may read nothing else.
pub fn webhook_prefix(service: &str) -> String {
    format!("porter/{service}/notifications/")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    pub instance_type: String,
    pub blackout_windows: Vec<BlackoutWindow>,
    pub regions: Vec<Region>,
    /// How a release reaches the regions (an extension of porter's format).
    #[serde(default)]
    pub rollout: Rollout,
    /// How long CloudFormation may take to create a release stack, and
    /// what it does with one that fails (`stack_creation:`).
    #[serde(default)]
    pub stack_creation: StackCreation,
}

/// `stack_creation:` of an environment: porter's `STACK_CREATION_TIMEOUT`
/// and `STACK_CREATION_ON_FAILURE`, in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackCreation {
    /// CloudFormation's `TimeoutInMinutes`: 15 to 60 (porter's bounds).
    pub timeout_minutes: u32,
    pub on_failure: StackOnFailure,
}

impl StackCreation {
    pub const MIN_TIMEOUT_MINUTES: u32 = 15;
    pub const MAX_TIMEOUT_MINUTES: u32 = 60;
}

impl Default for StackCreation {
    fn default() -> Self {
        StackCreation {
            timeout_minutes: 20,
            on_failure: StackOnFailure::Delete,
        }
    }
}

/// What CloudFormation does with a release stack that fails to create.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StackOnFailure {
    /// Deletes it (porter's default): nothing is left behind.
    #[default]
    Delete,
    /// Deletes what it made and keeps the stack, ROLLBACK_COMPLETE, with
    /// its events.
    Rollback,
    /// Keeps the stack and its resources, CREATE_FAILED, to debug the
    /// instances that would not boot.
    DoNothing,
}

impl StackOnFailure {
    /// As CloudFormation and the config write it.
    pub fn as_str(self) -> &'static str {
        match self {
            StackOnFailure::Delete => "DELETE",
            StackOnFailure::Rollback => "ROLLBACK",
            StackOnFailure::DoNothing => "DO_NOTHING",
        }
    }
}

/// `rollout:` of an environment: waves of regions cut over one after the
/// other, each watched for `bake_seconds` through its `alarms` before the
/// next; any failure after a cutover puts back every region touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Lists of regions; empty means one wave with every region (porter's
    /// behaviour).
    #[serde(default)]
    pub waves: Vec<Vec<String>>,
    /// How long each wave is watched after its cutover.
    #[serde(default)]
    pub bake_seconds: u32,
    /// CloudWatch alarm names watched in each region of a wave.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// New instances per region that serve beside the old fleet, and bake,
    /// before the full cutover of their wave; 0 is no canary.
    #[serde(default)]
    pub canary_instances: u32,
    /// What a region sets for itself (`rollout:` under the region): in the
    /// config, empty (regions keep theirs on [`Region`]); in a deploy's
    /// plan, every region whose canary or alarms differ from the above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regions: BTreeMap<String, RegionRollout>,
    /// Whether a wave is followed by a bake and its alarm gate: worked out
    /// by [`Environment::rollout_plan`], not written in the config.
    #[serde(default)]
    pub gated: bool,
    /// Whether a wave begins with canaries: worked out like `gated`.
    #[serde(default)]
    pub canary: bool,
}

/// A region's own part of the rollout: waves and the bake span regions,
/// so a region may set only its canary and the alarms read in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRollout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarms: Option<Vec<String>>,
}

impl Rollout {
    /// How many canaries `region` starts with.
    pub fn canary_in(&self, region: &str) -> u32 {
        self.regions
            .get(region)
            .and_then(|r| r.canary_instances)
            .unwrap_or(self.canary_instances)
    }

    /// How long the rollout bakes in all: each wave's bake, twice for a
    /// wave that starts with canaries.
    pub fn baking_seconds(&self) -> u64 {
        let per_wave = u64::from(self.bake_seconds) * if self.canary { 2 } else { 1 };
        per_wave * self.waves.len() as u64
    }

    /// How many bakes the rollout has: one per gated wave, two for a wave
    /// that starts with canaries.
    pub fn bakes(&self) -> u64 {
        if !self.gated && !self.canary {
            return 0;
        }
        self.waves.len().max(1) as u64 * if self.canary { 2 } else { 1 }
    }

    /// The alarms the gate reads in `region`.
    pub fn alarms_in(&self, region: &str) -> &[String] {
        self.regions
            .get(region)
            .and_then(|r| r.alarms.as_deref())
            .unwrap_or(&self.alarms)
    }
}

/// The longest bake a rollout may ask for: a day.
pub const MAX_BAKE_SECONDS: u32 = 86_400;

/// A deploy's own rollout, from the state machine input or UserParameters:
/// each field given replaces the environment's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutOverride {
    #[serde(default)]
    pub waves: Option<Vec<Vec<String>>>,
    #[serde(default)]
    pub bake_seconds: Option<u32>,
    #[serde(default)]
    pub alarms: Option<Vec<String>>,
    /// Replaces the environment's canary and every region's own.
    #[serde(default)]
    pub canary_instances: Option<u32>,
}

/// A name CloudWatch takes for an alarm.
pub fn is_alarm_name(a: &str) -> bool {
    !a.is_empty() && a.len() <= 255 && !a.chars().any(char::is_control)
}

fn rollout(key: &'static str, problem: String) -> ConfigError {
    ConfigError::Rollout { key, problem }
}

impl Environment {
    /// The rollout a deploy follows: the environment's, with a deploy's
    /// override applied, its waves spelled out (one wave with every region
    /// when none are given). The override is input, so it is checked as
    /// the config is.
    pub fn rollout_plan(&self, over: Option<&RolloutOverride>) -> Result<Rollout, ConfigError> {
        let mut r = self.rollout.clone();
        if let Some(o) = over {
            if let Some(w) = &o.waves {
                r.waves = w.clone();
            }
            if let Some(b) = o.bake_seconds {
                r.bake_seconds = b;
            }
            if let Some(a) = &o.alarms {
                r.alarms = a.clone();
            }
            if let Some(n) = o.canary_instances {
                r.canary_instances = n;
            }
        }
        // Each region's own canary and alarms, unless this deploy set them
        // for every region.
        let given = |f: fn(&RolloutOverride) -> bool| over.is_some_and(f);
        for region in &self.regions {
            let own = RegionRollout {
                canary_instances: region
                    .rollout
                    .canary_instances
                    .filter(|_| !given(|o| o.canary_instances.is_some())),
                alarms: region.rollout.alarms.clone().filter(|_| !given(|o| o.alarms.is_some())),
            };
            if own != RegionRollout::default() {
                r.regions.insert(region.name.clone(), own);
            }
        }
        let names: Vec<&str> = self.regions.iter().map(|x| x.name.as_str()).collect();
        if r.waves.is_empty() {
            r.waves = vec![names.iter().map(|n| n.to_string()).collect()];
        }
        let mut placed = std::collections::BTreeSet::new();
        for wave in &r.waves {
            if wave.is_empty() {
                return Err(rollout("waves", "a wave needs at least one region".into()));
            }
            for region in wave {
                if !names.contains(&region.as_str()) {
                    return Err(rollout(
                        "waves",
                        format!(
                            "`{}` is not a region of {} (its regions: {})",
                            region.chars().take(40).collect::<String>(),
                            self.name,
                            names.join(", ")
                        ),
                    ));
                }
                if !placed.insert(region.as_str()) {
                    return Err(rollout("waves", format!("region `{region}` is in two waves")));
                }
            }
        }
        let missing: Vec<&str> = names.iter().copied().filter(|n| !placed.contains(n)).collect();
        if !missing.is_empty() {
            return Err(rollout(
                "waves",
                format!("every region must be in a wave; {} is in none", missing.join(", ")),
            ));
        }
        if r.bake_seconds > MAX_BAKE_SECONDS {
            return Err(rollout(
                "bake_seconds",
                format!("at most {MAX_BAKE_SECONDS}, not {}", r.bake_seconds),
            ));
        }
        if let Some(bad) = r.alarms.iter().find(|a| !is_alarm_name(a)) {
            return Err(rollout(
                "alarms",
                format!(
                    "`{}` is not a CloudWatch alarm name",
                    bad.chars().take(60).collect::<String>()
                ),
            ));
        }
        for region in &self.regions {
            let n = r.canary_in(&region.name);
            if n > region.instance_count {
                return Err(rollout(
                    "canary_instances",
                    format!(
                        "{n} canaries in {}, which launches {} instance(s); ask for at most {}",
                        region.name, region.instance_count, region.instance_count
                    ),
                ));
            }
        }
        r.gated = r.bake_seconds > 0 || self.regions.iter().any(|x| !r.alarms_in(&x.name).is_empty());
        r.canary = self.regions.iter().any(|x| r.canary_in(&x.name) > 0);
        Ok(r)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlackoutWindow {
    pub start_time: String,
    pub end_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    /// The region's own `role_arn`, or else the environment's.
    pub role_arn: String,
    pub vpc_id: Option<String>,
    pub azs: Vec<AvailabilityZone>,
    pub s3_bucket: String,
    pub sse_kms_key_id: Option<String>,
    /// The load balancers promote moves instances into: the classic ELBs
    /// first, then the target groups. Empty for `elb: none` (or no load
    /// balancer at all): promote is then a no-op.
    pub elbs: Vec<Elb>,
    pub instance_count: u32,
    pub key_pair_name: Option<String>,
    pub containers: Vec<Container>,
    /// The most specific `stack_definition_path` (region over environment),
    /// read and parsed: merged over the generated template.
    pub stack_definition: Option<StackDefinition>,
    /// The region's own canary and alarms (`rollout:` under the region).
    #[serde(default)]
    pub rollout: RegionRollout,
    /// What the service gets in its environment at boot, by reference: the
    /// environment's `secrets:` with the region's own over them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// The group's size bounds, boot grace and the instances' outbound
    /// rules (porter's `auto_scaling_group:`).
    #[serde(default, skip_serializing_if = "AutoScalingGroup::is_unset")]
    pub auto_scaling_group: AutoScalingGroup,
}

/// `auto_scaling_group:` of a region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoScalingGroup {
    /// The group's floor (default `instance_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u32>,
    /// The group's ceiling (default: what the release starts at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u32>,
    /// Seconds a new instance may boot before its load balancer's health
    /// counts (default 300, AWS's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period: Option<u32>,
    /// The instances' outbound rules; unset, AWS's default (all outbound
    /// traffic); empty, none at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_egress: Option<Vec<EgressRule>>,
}

impl AutoScalingGroup {
    fn is_unset(&self) -> bool {
        *self == AutoScalingGroup::default()
    }
}

/// One outbound rule of the instances' security group, as porter wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    /// An IPv4 or IPv6 CIDR.
    pub cidr_ip: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `-1` (all) or a protocol number.
    pub ip_protocol: String,
    pub from_port: i32,
    pub to_port: i32,
}

/// One variable of the service's environment whose value lives in Secrets
/// Manager or SSM Parameter Store (`secrets:`, an extension of porter's
/// format). Only the reference is ever held here: the instance reads the
/// value at boot with a role that may read exactly its references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The environment variable the service sees.
    pub variable: String,
    pub store: SecretStore,
    /// The secret's name (Secrets Manager) or the parameter's (SSM).
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretStore {
    /// A Secrets Manager secret's SecretString.
    SecretsManager,
    /// An SSM parameter, SecureString or not, read with decryption.
    Ssm,
}

impl SecretStore {
    /// How the config writes it: `secretsmanager:NAME` or `ssm:NAME`.
    pub fn prefix(self) -> &'static str {
        match self {
            SecretStore::SecretsManager => "secretsmanager",
            SecretStore::Ssm => "ssm",
        }
    }
}

impl Secret {
    /// Where a service's secrets must live, so that a branch can name only
    /// its own service's and environment's (the release boundary lets
    /// instances read nothing outside `porter/`).
    pub fn required_prefix(store: SecretStore, service: &str, environment: &str) -> String {
        match store {
            SecretStore::SecretsManager => format!("porter/{service}/{environment}/"),
            SecretStore::Ssm => format!("/porter/{service}/{environment}/"),
        }
    }
}

impl fmt::Display for Secret {
    /// The reference as the config writes it: safe to print, it is a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.variable, self.store.prefix(), self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityZone {
    pub name: String,
    pub subnet_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Elb {
    pub name: String,
    pub tag: Option<String>,
    /// A classic ELB (`elb:`/`elbs:`) or a target group of an Application
    /// or Network Load Balancer (`target_group:`/`target_groups:`).
    #[serde(default, skip_serializing_if = "BalancerKind::is_classic")]
    pub kind: BalancerKind,
}

/// What kind of load balancer promote moves instances into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    #[default]
    Classic,
    /// An ALB's or NLB's target group of instances, by name.
    TargetGroup,
}

impl BalancerKind {
    pub fn is_classic(&self) -> bool {
        *self == BalancerKind::Classic
    }

    /// How messages name one: "load balancer" or "target group".
    pub fn noun(&self) -> &'static str {
        match self {
            BalancerKind::Classic => "load balancer",
            BalancerKind::TargetGroup => "target group",
        }
    }
}

impl Elb {
    pub fn classic(name: impl Into<String>) -> Elb {
        Elb {
            name: name.into(),
            tag: None,
            kind: BalancerKind::Classic,
        }
    }

    pub fn target_group(name: impl Into<String>) -> Elb {
        Elb {
            name: name.into(),
            tag: None,
            kind: BalancerKind::TargetGroup,
        }
    }
}

impl fmt::Display for Elb {
    /// `load balancer NAME` or `target group NAME`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.noun(), self.name)
    }
}

impl Region {
    /// The ports the service listens on: each `inet` container's
    /// `inet_port` (porter's default 8080). Workers listen on none.
    pub fn inet_ports(&self) -> Vec<u16> {
        self.containers
            .iter()
            .filter(|c| c.topology == Topology::Inet)
            .map(|c| c.inet_port.unwrap_or(8080))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub topology: Topology,
    pub inet_port: Option<u16>,
    pub health_check: HealthCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    Inet,
    Worker,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub method: String,
    pub path: String,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            method: "GET".into(),
            path: "/health".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackDefinition {
    /// As written in the config, relative to the repository root.
    pub path: String,
    pub template: serde_json::Value,
}

impl Config {
    pub fn environment(&self, name: &str) -> Result<&Environment, ConfigError> {
        self.environments
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ConfigError::NoEnvironment {
                name: name.to_owned(),
                known: self.environments.iter().map(|e| e.name.clone()).collect(),
            })
    }
}

impl Environment {
    pub fn region(&self, name: &str) -> Result<&Region, ConfigError> {
        self.regions
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ConfigError::NoRegion {
                environment: self.name.clone(),
                name: name.to_owned(),
                known: self.regions.iter().map(|r| r.name.clone()).collect(),
            })
    }
}
