//! `stack_definition_path` overlays, by allow-list.
//!
//! An overlay is repository content merged into a stack that CloudFormation
//! creates with deployment rights, so a branch's overlay is checked before
//! anything is built from it. It may do what porter's own overlays do:
//! add security groups and put the instances in them by `Ref`, override
//! the machine image, tune instance and scaling properties and tags, add
//! rules to the stack's own security groups, and give the instance role
//! policies (the release boundary still bounds them). Everything else is
//! refused with the overlay's JSON path and why:
//!
//! - load-balancer or target-group membership (only promote attaches, and
//!   only to load balancers of this service and environment);
//! - instance profiles and roles other than the stack's own, trust policies,
//!   IMDSv1, the boot script;
//! - rules on security groups outside the stack;
//! - nested stacks, custom resources, macros (`Transform`), any
//!   `AWS::CloudFormation::*` and any resource type not listed here.
//!
//! References to existing resources outside the stack (a shared security
//! group, a KMS key for the volumes) are allowed only where the
//! installation lists them ([`check_external`]); the repository cannot.
//!
//! porter's overlays name its launch configuration
//! (`AutoScalingLaunchConfiguration`); this product renders a launch
//! template, so [`apply`] maps those properties onto it.

use serde_json::{json, Map, Value};

/// porter's logical id for the launch configuration it rendered.
pub const LEGACY_LAUNCH_CONFIGURATION: &str = "AutoScalingLaunchConfiguration";

/// The resource types an overlay may add, beside the stack's own.
/// Each is one the deployment role may create and delete (its handlers'
/// permissions are checked in `make test`); alarms and target-tracking
/// scaling policies are not, since writing alarms would let a release
/// change the ones the rollout's gate reads.
pub const ADDABLE_TYPES: &[&str] = &[
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::SecurityGroupIngress",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::AutoScaling::ScheduledAction",
];

/// Top-level sections an overlay may hold.
const SECTIONS: &[&str] = &[
    "AWSTemplateFormatVersion",
    "Description",
    "Metadata",
    "Resources",
    "Outputs",
    "Conditions",
    "Mappings",
];

/// Resource attributes an overlay may set.
const ATTRIBUTES: &[&str] = &["Type", "Properties", "DependsOn", "Metadata", "Condition"];

/// One thing an overlay may not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the overlay, as a JSON path (`Resources.X.Properties.Y`).
    pub path: String,
    pub why: String,
}

/// A literal reference to something outside the stack: allowed only when
/// the installation lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub path: String,
    pub value: String,
}

/// The stack's own resources, by logical id, and what an overlay may set
/// on each (`LaunchTemplateData` for the launch template).
fn own_properties(id: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match id {
        "AutoScalingGroup" => (
            "AWS::AutoScaling::AutoScalingGroup",
            &[
                "MinSize",
                "MaxSize",
                "DesiredCapacity",
                "Cooldown",
                "HealthCheckType",
                "HealthCheckGracePeriod",
                "DefaultInstanceWarmup",
                "MaxInstanceLifetime",
                "CapacityRebalance",
                "NewInstancesProtectedFromScaleIn",
                "TerminationPolicies",
                "MetricsCollection",
                "Tags",
            ],
        ),
        "LaunchTemplate" => ("AWS::EC2::LaunchTemplate", &["LaunchTemplateData"]),
        "InstanceSecurityGroup" => (
            "AWS::EC2::SecurityGroup",
            &[
                "GroupDescription",
                "SecurityGroupIngress",
                "SecurityGroupEgress",
                "Tags",
            ],
        ),
        "InstanceRole" => ("AWS::IAM::Role", &["Policies", "ManagedPolicyArns", "Tags"]),
        "InstanceProfile" => ("AWS::IAM::InstanceProfile", &[]),
        LEGACY_LAUNCH_CONFIGURATION => (
            "AWS::AutoScaling::LaunchConfiguration",
            &[
                "ImageId",
                "InstanceType",
                "SecurityGroups",
                "KeyName",
                "BlockDeviceMappings",
                "InstanceMonitoring",
                "EbsOptimized",
                "PlacementTenancy",
                "MetadataOptions",
            ],
        ),
        _ => return None,
    })
}

/// What the launch template's data may take from an overlay.
const LAUNCH_TEMPLATE_DATA: &[&str] = &[
    "ImageId",
    "InstanceType",
    "SecurityGroupIds",
    "KeyName",
    "BlockDeviceMappings",
    "Monitoring",
    "EbsOptimized",
    "CreditSpecification",
    "Placement",
    "MetadataOptions",
    "TagSpecifications",
];

/// What each type an overlay adds may set.
fn addable_properties(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::EC2::SecurityGroup" => &[
            "GroupDescription",
            "SecurityGroupIngress",
            "SecurityGroupEgress",
            "Tags",
            "VpcId",
        ],
        "AWS::EC2::SecurityGroupIngress" | "AWS::EC2::SecurityGroupEgress" => &[
            "GroupId",
            "IpProtocol",
            "FromPort",
            "ToPort",
            "CidrIp",
            "CidrIpv6",
            "SourceSecurityGroupId",
            "DestinationSecurityGroupId",
            "SourcePrefixListId",
            "DestinationPrefixListId",
            "Description",
        ],
        "AWS::AutoScaling::ScheduledAction" => &[
            "AutoScalingGroupName",
            "DesiredCapacity",
            "MinSize",
            "MaxSize",
            "Recurrence",
            "StartTime",
            "EndTime",
            "TimeZone",
        ],
        _ => &[],
    }
}

/// Why a property of the stack's own resources is not the overlay's, for
/// the ones someone is likely to try.
fn why_not(property: &str) -> &'static str {
    match property {
        "LoadBalancerNames" | "TargetGroupARNs" | "TrafficSources" => {
            "load-balancer membership is promote's alone: it attaches only to load balancers tagged for this service and environment"
        }
        "IamInstanceProfile" | "AssumeRolePolicyDocument" | "Roles" | "RoleName" | "Path" | "PermissionsBoundary" => {
            "the instances run as the stack's own role, on porter's path and boundary"
        }
        "UserData" => "the boot script is porter's: it checks and starts the release; use ec2_bootstrap hooks",
        "VpcId" | "VPCZoneIdentifier" | "AvailabilityZones" | "SubnetId" | "NetworkInterfaces" => {
            "placement comes from the config's vpc_id and azs, which the environment pins check"
        }
        "LaunchTemplate" | "LaunchConfigurationName" | "MixedInstancesPolicy" | "InstanceId" => {
            "the group launches the stack's own launch template"
        }
        _ => "it is not one an overlay may set",
    }
}

/// Everything `overlay` may not do; empty when it may be merged.
pub fn problems(overlay: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(top) = overlay.as_object() else {
        out.push(problem("", "an overlay is a JSON object (a CloudFormation template)"));
        return out;
    };
    for (section, value) in top {
        if !SECTIONS.contains(&section.as_str()) {
            let why = match section.as_str() {
                "Transform" => "macros (Transform) run code the deploy does not check",
                "Parameters" => "the stack's parameters are porter's",
                _ => "not a section an overlay may hold",
            };
            out.push(problem(section, why));
            continue;
        }
        if section == "Resources" {
            match value.as_object() {
                Some(resources) => {
                    for (id, r) in resources {
                        resource(&mut out, resources, id, r);
                    }
                }
                None => out.push(problem("Resources", "expected an object of resources")),
            }
        }
    }
    if let Some(policies) = overlay.pointer("/Resources/InstanceRole/Properties/Policies") {
        role_policies(&mut out, policies, "Resources.InstanceRole.Properties.Policies");
    }
    if let Some(outputs) = top.get("Outputs").and_then(Value::as_object) {
        for (name, output) in outputs {
            if output.get("Export").is_some() {
                out.push(problem(
                    &format!("Outputs.{name}.Export"),
                    "export names are the account's and region's, not the stack's: an export could take another stack's name or feed its importers",
                ));
            }
        }
    }
    forbidden(&mut out, overlay, "", "");
    out
}

/// What the instance role's added policies may grant: named actions on
/// named resources. The release boundary caps them in IAM as well; this
/// says so at `validate`, with the statement's path:
///
/// - no secrets or parameters (`secrets:` grants exactly the ones named,
///   under the service's and environment's own prefix);
/// - no `*` or `service:*` action, no `NotAction` or `NotResource`;
/// - S3 only on named buckets, never on `*`.
fn role_policies(out: &mut Vec<Problem>, policies: &Value, path: &str) {
    let Some(policies) = policies.as_array() else {
        out.push(problem(path, "expected a list of policies"));
        return;
    };
    for (i, policy) in policies.iter().enumerate() {
        let at = format!("{path}[{i}].PolicyDocument.Statement");
        let statements = match policy.pointer("/PolicyDocument/Statement") {
            Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => {
                out.push(problem(
                    &format!("{path}[{i}]"),
                    "a policy needs PolicyDocument.Statement",
                ));
                continue;
            }
        };
        for (j, st) in statements.into_iter().enumerate() {
            let at = format!("{at}[{j}]");
            if st.get("Effect").and_then(Value::as_str) == Some("Deny") {
                continue;
            }
            for key in ["NotAction", "NotResource"] {
                if st.get(key).is_some() {
                    out.push(problem(
                        &format!("{at}.{key}"),
                        "an instance role's statement names its actions and resources (Action, Resource)",
                    ));
                }
            }
            // Each action or resource as text: a literal, or an `Fn::Sub`'s
            // template with the partition filled in; anything else cannot
            // be read here and counts as `*`.
            let one = |x: &Value| -> String {
                let sub = x
                    .get("Fn::Sub")
                    .and_then(|t| t.as_str().or_else(|| t.get(0).and_then(Value::as_str)));
                match (x.as_str(), sub) {
                    (Some(s), _) => s.to_owned(),
                    (None, Some(t)) => t.replace("${AWS::Partition}", "aws"),
                    _ => "*".to_owned(),
                }
            };
            let strings = |v: Option<&Value>| -> Vec<String> {
                match v {
                    Some(Value::Array(items)) => items.iter().map(one).collect(),
                    Some(x) => vec![one(x)],
                    None => Vec::new(),
                }
            };
            let actions = strings(st.get("Action"));
            let resources = strings(st.get("Resource"));
            for action in &actions {
                let lower = action.to_ascii_lowercase();
                let (service, name) = lower.split_once(':').unwrap_or((lower.as_str(), ""));
                if action == "*" || name.starts_with('*') {
                    out.push(problem(
                        &format!("{at}.Action"),
                        &format!("`{action}` grants every action of its service; name the actions the service needs"),
                    ));
                } else if matches!(service, "secretsmanager" | "ssm" | "sts" | "iam") {
                    out.push(problem(
                        &format!("{at}.Action"),
                        &format!("`{action}`: secrets and parameters are named under `secrets:` in .porter/config (the instance role then reads exactly those); roles and sessions are porter's"),
                    ));
                } else if service == "s3"
                    && resources
                        .iter()
                        .any(|r| r == "*" || r.starts_with("arn:aws:s3:::*") || r.starts_with("arn:*"))
                {
                    out.push(problem(
                        &format!("{at}.Resource"),
                        &format!("`{action}` on every bucket; name the service's own buckets"),
                    ));
                }
            }
        }
    }
}

/// `ours` and `theirs` as one list, an item of each `key` once: the
/// overlay's where `theirs_win`, the stack's own otherwise.
fn add_by_key(ours: &[Value], theirs: Vec<Value>, key: &str, theirs_win: bool) -> Vec<Value> {
    let key_of = |v: &Value| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let in_list = |list: &[Value], v: &Value| key_of(v).is_some() && list.iter().any(|o| key_of(o) == key_of(v));
    if theirs_win {
        let mut all: Vec<Value> = ours.iter().filter(|v| !in_list(&theirs, v)).cloned().collect();
        all.extend(theirs);
        all
    } else {
        let mut all = ours.to_vec();
        all.extend(theirs.into_iter().filter(|v| !in_list(ours, v)));
        all
    }
}

/// A public parameter of AWS's own (the latest machine image): the one
/// dynamic reference an overlay may make.
const PUBLIC_PARAMETER: &str = "{{resolve:ssm:/aws/service/";

/// What no overlay may write anywhere in it: macros (`Fn::Transform`) and
/// other stacks' values (`Fn::ImportValue`), dynamic references
/// (CloudFormation reads the secret or parameter with the deployment
/// role's rights, and a failed create can echo it in a stack event), and
/// tags under `porter:` or `aws:` (promote, prune and IAM read `porter:*`
/// as who owns a resource; `aws:*` are AWS's own).
fn forbidden(out: &mut Vec<Problem>, v: &Value, path: &str, key: &str) {
    match v {
        Value::String(s) if s.contains("{{resolve:") => {
            let public = s.starts_with(PUBLIC_PARAMETER) && s.ends_with("}}") && s.matches("{{").count() == 1;
            if !public {
                out.push(problem(
                    path,
                    "dynamic references ({{resolve:...}}) would be read with the deployment role's rights; only AWS's public parameters ({{resolve:ssm:/aws/service/...}}) may be named",
                ));
            }
        }
        Value::Object(o) => {
            // An item of a `Tags` list ({Key, Value}), or a `Tags` map
            // (some types take tags as one object).
            if key == "Tags" {
                let keys: Vec<&str> = match o.get("Key").and_then(Value::as_str) {
                    Some(k) => vec![k],
                    None => o.keys().map(String::as_str).collect(),
                };
                for k in keys {
                    let lower = k.to_ascii_lowercase();
                    if lower.starts_with("porter:") || lower.starts_with("aws:") {
                        out.push(problem(
                            path,
                            "tags under porter: say which service, environment and release a resource is (promote, prune and IAM trust them) and are set by porter alone; aws: tags are AWS's",
                        ));
                    }
                }
            }
            for (k, child) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match k.as_str() {
                    "Fn::Transform" => {
                        out.push(problem(&p, "macros (Fn::Transform) run code the deploy does not check"))
                    }
                    "Fn::ImportValue" => {
                        out.push(problem(&p, "values of other stacks are not the release's to import"))
                    }
                    _ => {}
                }
                forbidden(out, child, &p, k);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                // A tag list's items are checked as tags.
                forbidden(out, child, &format!("{path}[{i}]"), key);
            }
        }
        _ => {}
    }
}

fn problem(path: &str, why: &str) -> Problem {
    Problem {
        path: path.to_owned(),
        why: why.to_owned(),
    }
}

fn resource(out: &mut Vec<Problem>, all: &Map<String, Value>, id: &str, r: &Value) {
    let at = format!("Resources.{id}");
    let Some(obj) = r.as_object() else {
        out.push(problem(&at, "expected an object"));
        return;
    };
    for attr in obj.keys() {
        if !ATTRIBUTES.contains(&attr.as_str()) {
            out.push(problem(
                &format!("{at}.{attr}"),
                "resource attributes other than Type, Properties, DependsOn, Metadata and Condition are porter's",
            ));
        }
    }
    let kind = obj.get("Type").and_then(Value::as_str);
    let props = obj.get("Properties").and_then(Value::as_object);
    if obj.get("Properties").is_some_and(|p| !p.is_object()) {
        out.push(problem(&format!("{at}.Properties"), "expected an object"));
    }
    // The properties the resource may set, and whose checks they get: the
    // stack's own resource's, or those of a type the overlay adds.
    let (allowed, added) = match own_properties(id) {
        Some((own_kind, allowed)) => {
            if let Some(k) = kind.filter(|k| *k != own_kind) {
                out.push(problem(
                    &format!("{at}.Type"),
                    &format!("{id} is the stack's own {own_kind}; it cannot become a {k}"),
                ));
            }
            (allowed, None)
        }
        None => {
            let Some(kind) = kind else {
                out.push(problem(
                    &format!("{at}.Type"),
                    "a resource the overlay adds needs its Type",
                ));
                return;
            };
            if !ADDABLE_TYPES.contains(&kind) {
                let why = if kind.starts_with("AWS::CloudFormation::") || kind.starts_with("Custom::") {
                    "nested stacks, custom resources and other AWS::CloudFormation resources run what the deploy does not check"
                } else if kind.starts_with("AWS::IAM::") {
                    "the stack's only role is its own InstanceRole; give it policies there"
                } else if kind.starts_with("AWS::ElasticLoadBalancing") {
                    "load balancers and their membership are the environment's, not the release's"
                } else {
                    "not a resource type an overlay may add (see docs/config.md, Overlays)"
                };
                out.push(problem(&format!("{at}.Type"), &format!("`{kind}`: {why}")));
                return;
            }
            (addable_properties(kind), Some(kind))
        }
    };
    for (name, value) in props.into_iter().flatten() {
        let path = format!("{at}.Properties.{name}");
        if !allowed.contains(&name.as_str()) {
            out.push(problem(&path, why_not(name)));
            continue;
        }
        match added {
            Some(kind) => added_property(out, all, kind, name, value, &path),
            None => own_property(out, all, id, name, value, &path),
        }
    }
}

fn own_property(out: &mut Vec<Problem>, all: &Map<String, Value>, id: &str, name: &str, value: &Value, path: &str) {
    match (id, name) {
        ("LaunchTemplate", "LaunchTemplateData") => {
            let Some(data) = value.as_object() else {
                out.push(problem(path, "expected an object"));
                return;
            };
            for (k, v) in data {
                let p = format!("{path}.{k}");
                if !LAUNCH_TEMPLATE_DATA.contains(&k.as_str()) {
                    out.push(problem(&p, why_not(k)));
                } else {
                    instance_property(out, all, k, v, &p);
                }
            }
        }
        (LEGACY_LAUNCH_CONFIGURATION, "SecurityGroups") => instance_property(out, all, "SecurityGroupIds", value, path),
        (LEGACY_LAUNCH_CONFIGURATION, "MetadataOptions") => instance_property(out, all, name, value, path),
        _ => {}
    }
}

/// A launch template (or launch configuration) property that names other
/// resources or the metadata service.
fn instance_property(out: &mut Vec<Problem>, all: &Map<String, Value>, name: &str, value: &Value, path: &str) {
    match name {
        "SecurityGroupIds" => match value.as_array() {
            Some(groups) => {
                for (i, g) in groups.iter().enumerate() {
                    own_security_group(out, all, g, &format!("{path}[{i}]"));
                }
            }
            None => out.push(problem(path, "expected a list of security groups")),
        },
        "MetadataOptions" if value.get("HttpTokens").and_then(Value::as_str) != Some("required") => {
            out.push(problem(
                &format!("{path}.HttpTokens"),
                "instances use IMDSv2 only (HttpTokens: required): IMDSv1 lets a request forgery read the role's credentials",
            ));
        }
        _ => {}
    }
}

fn added_property(out: &mut Vec<Problem>, all: &Map<String, Value>, kind: &str, name: &str, value: &Value, path: &str) {
    match (kind, name) {
        ("AWS::EC2::SecurityGroupIngress" | "AWS::EC2::SecurityGroupEgress", "GroupId")
            if !refers_to_own_group(all, value) =>
        {
            out.push(problem(
                path,
                "a rule the overlay adds must be on a security group of this stack (a Ref or GetAtt GroupId of one)",
            ));
        }
        ("AWS::AutoScaling::ScheduledAction", "AutoScalingGroupName")
            if value != &json!({"Ref": "AutoScalingGroup"}) =>
        {
            out.push(problem(
                path,
                "scaling acts on the stack's own group only: {\"Ref\": \"AutoScalingGroup\"}",
            ));
        }
        ("AWS::EC2::SecurityGroup", "VpcId") if !value.is_string() => {
            out.push(problem(path, "expected the config's vpc_id"));
        }
        _ => {}
    }
}

/// A security group the instances join: one of the stack's (by Ref or
/// GetAtt), or a literal the installation must list.
fn own_security_group(out: &mut Vec<Problem>, all: &Map<String, Value>, g: &Value, path: &str) {
    if g.is_string() {
        // A literal id: checked against the installation's list at pack.
        return;
    }
    if !refers_to_own_group(all, g) {
        out.push(problem(
            path,
            "a security group of this stack by Ref or GetAtt GroupId, or an id the installation allows",
        ));
    }
}

fn refers_to_own_group(all: &Map<String, Value>, v: &Value) -> bool {
    let target = match v {
        Value::Object(o) if o.len() == 1 => match (o.get("Ref"), o.get("Fn::GetAtt")) {
            (Some(Value::String(id)), _) => Some(id.as_str()),
            (_, Some(Value::Array(a))) if a.get(1).and_then(Value::as_str) == Some("GroupId") => {
                a.first().and_then(Value::as_str)
            }
            (_, Some(Value::String(s))) => s.strip_suffix(".GroupId"),
            _ => None,
        },
        _ => None,
    };
    target.is_some_and(|id| {
        id == "InstanceSecurityGroup"
            || all.get(id).and_then(|r| r.get("Type")).and_then(Value::as_str) == Some("AWS::EC2::SecurityGroup")
    })
}

/// The literal references to existing resources outside the stack: the
/// security groups the instances join and the volumes' KMS keys. Each
/// must be on the installation's list.
pub fn externals(overlay: &Value) -> Vec<External> {
    let mut out = Vec::new();
    let Some(resources) = overlay.get("Resources").and_then(Value::as_object) else {
        return out;
    };
    let mut literal = |path: String, v: &Value| {
        if let Some(s) = v.as_str() {
            out.push(External {
                path,
                value: s.to_owned(),
            });
        }
    };
    for (id, r) in resources {
        let props = format!("Resources.{id}.Properties");
        let Some(p) = r.get("Properties") else { continue };
        let groups = p
            .pointer("/LaunchTemplateData/SecurityGroupIds")
            .map(|g| (format!("{props}.LaunchTemplateData.SecurityGroupIds"), g))
            .or_else(|| p.get("SecurityGroups").map(|g| (format!("{props}.SecurityGroups"), g)));
        if let Some((path, Value::Array(items))) = groups {
            for (i, g) in items.iter().enumerate() {
                literal(format!("{path}[{i}]"), g);
            }
        }
        let devices = p
            .pointer("/LaunchTemplateData/BlockDeviceMappings")
            .map(|d| (format!("{props}.LaunchTemplateData.BlockDeviceMappings"), d))
            .or_else(|| {
                p.get("BlockDeviceMappings")
                    .map(|d| (format!("{props}.BlockDeviceMappings"), d))
            });
        if let Some((path, Value::Array(items))) = devices {
            for (i, d) in items.iter().enumerate() {
                if let Some(k) = d.pointer("/Ebs/KmsKeyId") {
                    literal(format!("{path}[{i}].Ebs.KmsKeyId"), k);
                }
            }
        }
    }
    out
}

/// The overlay's external references that the installation does not list.
pub fn check_external(overlay: &Value, allowed: &[String]) -> Vec<External> {
    externals(overlay)
        .into_iter()
        .filter(|e| !allowed.iter().any(|a| a == &e.value))
        .collect()
}

/// `overlay` as this product's template reads it: porter's launch
/// configuration mapped onto the launch template, security groups added to
/// the instances' own rather than replacing them, and added security
/// groups in the region's VPC.
pub fn apply(base: Value, overlay: &Value, vpc_id: Option<&str>) -> Value {
    let mut overlay = overlay.clone();
    let own_groups = base
        .pointer("/Resources/LaunchTemplate/Properties/LaunchTemplateData/SecurityGroupIds")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(resources) = overlay.get_mut("Resources").and_then(Value::as_object_mut) {
        if let Some(lc) = resources.remove(LEGACY_LAUNCH_CONFIGURATION) {
            let data = launch_template_data(lc.get("Properties").unwrap_or(&Value::Null));
            let lt = resources
                .entry("LaunchTemplate")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|o| o.entry("Properties").or_insert_with(|| json!({})));
            if let Some(Value::Object(props)) = lt {
                let existing = props.entry("LaunchTemplateData").or_insert_with(|| json!({}));
                if let (Value::Object(existing), Value::Object(mapped)) = (existing, data) {
                    for (k, v) in mapped {
                        existing.entry(k).or_insert(v);
                    }
                }
            }
        }
        if let Some(groups) = resources
            .get_mut("LaunchTemplate")
            .and_then(|lt| lt.pointer_mut("/Properties/LaunchTemplateData/SecurityGroupIds"))
            .and_then(Value::as_array_mut)
        {
            let mut all = own_groups;
            for g in groups.drain(..) {
                // A launch template takes group ids. `Ref` of a group is
                // its id only in a VPC (porter's launch configurations took
                // names too): the stack's own groups by their GroupId.
                let g = match g.get("Ref").and_then(Value::as_str) {
                    Some(id) if g.as_object().is_some_and(|o| o.len() == 1) => {
                        json!({"Fn::GetAtt": [id, "GroupId"]})
                    }
                    _ => g,
                };
                if !all.contains(&g) {
                    all.push(g);
                }
            }
            *groups = all;
        }
        if let Some(vpc) = vpc_id {
            for r in resources.values_mut() {
                if r.get("Type").and_then(Value::as_str) == Some("AWS::EC2::SecurityGroup") {
                    if let Some(props) = r.get_mut("Properties").and_then(Value::as_object_mut) {
                        props.entry("VpcId").or_insert_with(|| json!(vpc));
                    }
                }
            }
        }
    }
    // Tags and the instance role's policies add to the stack's own: a
    // list in the overlay would otherwise replace porter's (its ownership
    // tags, the policy that reads the payload). A tag of the overlay's
    // replaces one of the same key (`Name`); porter's policies keep their
    // names.
    if let (Some(resources), Some(own)) = (
        overlay.get_mut("Resources").and_then(Value::as_object_mut),
        base.get("Resources").and_then(Value::as_object),
    ) {
        for (id, r) in resources.iter_mut() {
            for (list, key, theirs_win) in [
                ("/Properties/Tags", "Key", true),
                ("/Properties/Policies", "PolicyName", false),
            ] {
                let theirs = r.pointer_mut(list).and_then(Value::as_array_mut);
                let ours = own.get(id).and_then(|o| o.pointer(list)).and_then(Value::as_array);
                if let (Some(theirs), Some(ours)) = (theirs, ours) {
                    *theirs = add_by_key(ours, std::mem::take(theirs), key, theirs_win);
                }
            }
        }
    }
    let mut template = merge(base, overlay);
    // An overlay's own machine image (porter's CIS images) leaves the
    // stack's image parameter unread: it goes, as CloudFormation's linter
    // asks of a parameter nothing reads.
    let image = template.pointer("/Resources/LaunchTemplate/Properties/LaunchTemplateData/ImageId");
    if image.is_some_and(|i| i != &json!({"Ref": "ImageId"})) {
        if let Some(parameters) = template.get_mut("Parameters").and_then(Value::as_object_mut) {
            parameters.remove("ImageId");
        }
    }
    template
}

/// A launch configuration's properties as launch template data.
fn launch_template_data(lc: &Value) -> Value {
    let mut data = Map::new();
    let Some(lc) = lc.as_object() else {
        return Value::Object(data);
    };
    for (k, v) in lc {
        match k.as_str() {
            "ImageId" | "InstanceType" | "KeyName" | "EbsOptimized" | "MetadataOptions" => {
                data.insert(k.clone(), v.clone());
            }
            "SecurityGroups" => {
                data.insert("SecurityGroupIds".into(), v.clone());
            }
            "InstanceMonitoring" => {
                data.insert("Monitoring".into(), json!({"Enabled": v}));
            }
            "PlacementTenancy" => {
                data.insert("Placement".into(), json!({"Tenancy": v}));
            }
            "BlockDeviceMappings" => {
                let mapped: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        let mut d = d.clone();
                        // A launch configuration says NoDevice: true; a
                        // launch template, NoDevice: "".
                        if let Some(o) = d.as_object_mut() {
                            if o.get("NoDevice").is_some_and(|n| n == &json!(true)) {
                                o.insert("NoDevice".into(), json!(""));
                            }
                        }
                        d
                    })
                    .collect();
                data.insert("BlockDeviceMappings".into(), Value::Array(mapped));
            }
            _ => {}
        }
    }
    Value::Object(data)
}

/// Merges `overlay` over `base`: objects merge key by key, anything else
/// in the overlay replaces what the base had. This is how a service's
/// `stack_definition_path` adds resources or changes generated properties.
pub fn merge(base: Value, overlay: Value) -> Value {
    match (base, overlay) {
        (Value::Object(mut b), Value::Object(o)) => {
            for (k, v) in o {
                let merged = match b.remove(&k) {
                    Some(existing) => merge(existing, v),
                    None => v,
                };
                b.insert(k, merged);
            }
            Value::Object(b)
        }
        (_, overlay) => overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/overlays")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn paths(overlay: &Value) -> Vec<String> {
        problems(overlay).into_iter().map(|p| p.path).collect()
    }

    /// An overlay's tags and instance-role policies add to the stack's
    /// own: porter's ownership tags and its payload policy stay.
    #[test]
    fn tags_and_policies_add_to_the_stacks_own() {
        let base = json!({"Resources": {
            "AutoScalingGroup": {"Properties": {"Tags": [
                {"Key": "Name", "Value": "web-prod-1"}, {"Key": "porter:service", "Value": "web"}
            ]}},
            "InstanceRole": {"Properties": {"Policies": [{"PolicyName": "porter-release", "PolicyDocument": {}}]}}
        }});
        let overlay = json!({"Resources": {
            "AutoScalingGroup": {"Properties": {"Tags": [
                {"Key": "Name", "Value": "web"}, {"Key": "CostCenter", "Value": "42"}
            ]}},
            "InstanceRole": {"Properties": {"Policies": [
                {"PolicyName": "porter-release", "PolicyDocument": {"Statement": []}},
                {"PolicyName": "queue", "PolicyDocument": {}}
            ]}}
        }});
        let t = apply(base, &overlay, None);
        assert_eq!(
            t["Resources"]["AutoScalingGroup"]["Properties"]["Tags"],
            json!([{"Key": "porter:service", "Value": "web"}, {"Key": "Name", "Value": "web"}, {"Key": "CostCenter", "Value": "42"}])
        );
        assert_eq!(
            t["Resources"]["InstanceRole"]["Properties"]["Policies"],
            json!([{"PolicyName": "porter-release", "PolicyDocument": {}}, {"PolicyName": "queue", "PolicyDocument": {}}])
        );
    }

    #[test]
    fn porters_own_overlays_pass_and_take_effect() {
        for name in ["porter-sample-project.json", "porter-cis-ami.json", "porter-vpc.json"] {
            let overlay = fixture(name);
            assert_eq!(problems(&overlay), [], "{name}");
            assert_eq!(externals(&overlay), [], "{name}");
            let base = json!({"Parameters": {"ImageId": {"Type": "String"}}, "Resources": {
                "LaunchTemplate": {"Type": "AWS::EC2::LaunchTemplate", "Properties": {"LaunchTemplateData": {
                    "ImageId": {"Ref": "ImageId"},
                    "SecurityGroupIds": [{"Fn::GetAtt": ["InstanceSecurityGroup", "GroupId"]}]}}}}});
            let t = apply(base, &overlay, Some("vpc-1"));
            let data = &t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"];
            assert_eq!(
                data["SecurityGroupIds"],
                json!([{"Fn::GetAtt": ["InstanceSecurityGroup", "GroupId"]}, {"Fn::GetAtt": ["SSHSecurityGroup", "GroupId"]}]),
                "{name}"
            );
            assert!(t["Resources"].get(LEGACY_LAUNCH_CONFIGURATION).is_none(), "{name}");
            assert_eq!(t["Resources"]["SSHSecurityGroup"]["Properties"]["VpcId"], "vpc-1");
            if name == "porter-cis-ami.json" {
                assert_eq!(data["ImageId"], "ami-6442af04");
                assert!(
                    t["Parameters"].get("ImageId").is_none(),
                    "the unread image parameter goes"
                );
            } else {
                assert!(t["Parameters"].get("ImageId").is_some(), "{name}");
            }
        }
    }

    #[test]
    fn what_an_overlay_may_not_do_is_refused_where_it_is_written() {
        let refused = [
            (
                json!({"Resources": {"AutoScalingGroup": {"Properties": {"LoadBalancerNames": ["prod"]}}}}),
                "Resources.AutoScalingGroup.Properties.LoadBalancerNames",
            ),
            (
                json!({"Resources": {"AutoScalingGroup": {"Properties": {"TargetGroupARNs": ["arn"]}}}}),
                "Resources.AutoScalingGroup.Properties.TargetGroupARNs",
            ),
            (
                json!({"Resources": {"LaunchTemplate": {"Properties": {"LaunchTemplateData": {"IamInstanceProfile": {"Arn": "x"}}}}}}),
                "Resources.LaunchTemplate.Properties.LaunchTemplateData.IamInstanceProfile",
            ),
            (
                json!({"Resources": {"LaunchTemplate": {"Properties": {"LaunchTemplateData": {"MetadataOptions": {"HttpTokens": "optional"}}}}}}),
                "Resources.LaunchTemplate.Properties.LaunchTemplateData.MetadataOptions.HttpTokens",
            ),
            (
                json!({"Resources": {"AutoScalingLaunchConfiguration": {"Properties": {"IamInstanceProfile": "other"}}}}),
                "Resources.AutoScalingLaunchConfiguration.Properties.IamInstanceProfile",
            ),
            (
                json!({"Resources": {"Rule": {"Type": "AWS::EC2::SecurityGroupIngress",
                "Properties": {"GroupId": "sg-0123456789abcdef0", "IpProtocol": "-1", "CidrIp": "0.0.0.0/0"}}}}),
                "Resources.Rule.Properties.GroupId",
            ),
            (
                json!({"Resources": {"InstanceRole": {"Properties": {"AssumeRolePolicyDocument": {}}}}}),
                "Resources.InstanceRole.Properties.AssumeRolePolicyDocument",
            ),
            (
                json!({"Resources": {"Nested": {"Type": "AWS::CloudFormation::Stack", "Properties": {"TemplateURL": "x"}}}}),
                "Resources.Nested.Type",
            ),
            (
                json!({"Resources": {"C": {"Type": "Custom::Thing", "Properties": {"ServiceToken": "arn"}}}}),
                "Resources.C.Type",
            ),
            (json!({"Transform": "AWS::Serverless-2016-10-31"}), "Transform"),
            (
                json!({"Resources": {"InstanceSecurityGroup": {"Properties": {"GroupDescription": {"Fn::ImportValue": "x"}}}}}),
                "Resources.InstanceSecurityGroup.Properties.GroupDescription.Fn::ImportValue",
            ),
            (
                json!({"Resources": {"InstanceRole": {"Type": "AWS::Lambda::Function"}}}),
                "Resources.InstanceRole.Type",
            ),
            (
                json!({"Resources": {"P": {"Type": "AWS::IAM::Policy", "Properties": {}}}}),
                "Resources.P.Type",
            ),
            (
                json!({"Resources": {"AutoScalingGroup": {"DeletionPolicy": "Retain"}}}),
                "Resources.AutoScalingGroup.DeletionPolicy",
            ),
            (
                json!({"Resources": {"S": {"Type": "AWS::AutoScaling::ScheduledAction",
                "Properties": {"AutoScalingGroupName": "someone-elses"}}}}),
                "Resources.S.Properties.AutoScalingGroupName",
            ),
            (
                json!({"Resources": {"A": {"Type": "AWS::CloudWatch::Alarm", "Properties": {}}}}),
                "Resources.A.Type",
            ),
        ];
        for (overlay, path) in refused {
            assert!(
                paths(&overlay).contains(&path.to_owned()),
                "{path}: {:?}",
                problems(&overlay)
            );
        }
    }

    #[test]
    fn literal_references_outside_the_stack_need_the_installations_list() {
        let key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let overlay = json!({"Resources": {
            "LaunchTemplate": {"Properties": {"LaunchTemplateData": {
                "SecurityGroupIds": ["sg-shared"],
                "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"Encrypted": true, "KmsKeyId": key}}]}}}}});
        assert_eq!(problems(&overlay), []);
        let outside: Vec<String> = check_external(&overlay, &[]).into_iter().map(|e| e.value).collect();
        assert_eq!(outside, ["sg-shared", key]);
        assert_eq!(check_external(&overlay, &["sg-shared".into(), key.into()]), []);
    }
}
