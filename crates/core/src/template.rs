//! The CloudFormation template of one release in one region.
//!
//! One stack per release per region: a security group, a launch template
//! whose UserData fetches the payload, checks its sha256, starts it and
//! signals CloudFormation once the service answers its health check, and an
//! Auto Scaling group that waits for those signals. The config's
//! `stack_definition_path` template is merged over the result.

use serde_json::{json, Value};

use crate::config::model::{
    Config, EgressRule, Environment, HookRun, Region, Secret, SecretStore, Topology, EC2_BOOTSTRAP,
};
use crate::image::ImageRef;
use crate::release::Release;

/// The SSM parameter that names the current Amazon Linux 2023 image, so the
/// template needs no per-region AMI table.
const IMAGE_PARAMETER: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

/// What provision learns from the account before rendering.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    /// Security groups of the ELBs that will send traffic to the instances.
    pub elb_security_groups: Vec<String>,
    /// The desired capacity of the fleet that serves the region now (its
    /// Auto Scaling groups'), if one does: a fleet scaled out under load is
    /// replaced at its size, never below the config's `instance_count`.
    pub live_capacity: Option<u32>,
}

/// What the service finds in its environment besides its secrets, as
/// porter named them: who it is, where it runs (the SDKs read AWS_REGION).
pub const SERVICE_VARIABLES: &[&str] = &[
    "PORTER_SERVICE_NAME",
    "PORTER_SERVICE_VERSION",
    "PORTER_ENVIRONMENT",
    "PORTER_REGION",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

/// How long a new instance may take to boot before its load balancer's
/// health counts (the group's HealthCheckGracePeriod): AWS's default.
pub const HEALTH_CHECK_GRACE_SECONDS: u32 = 300;

/// `security_group_egress:` as the security group's `SecurityGroupEgress`.
/// An empty list is no outbound traffic at all: CloudFormation keeps AWS's
/// allow-all rule unless a group names one, so it names one that matches
/// nothing (loopback, which never leaves the instance).
fn egress_rules(rules: &[EgressRule]) -> Value {
    if rules.is_empty() {
        return json!([{"IpProtocol": "-1", "CidrIp": "127.0.0.1/32", "Description": "no outbound traffic (security_group_egress: [])"}]);
    }
    Value::Array(
        rules
            .iter()
            .map(|r| {
                let mut rule = json!({"IpProtocol": r.ip_protocol, "FromPort": r.from_port, "ToPort": r.to_port});
                let key = if r.cidr_ip.contains(':') { "CidrIpv6" } else { "CidrIp" };
                rule[key] = json!(r.cidr_ip);
                rule
            })
            .collect(),
    )
}

/// Where the payload sits in the region's bucket.
#[derive(Debug, Clone)]
pub struct PayloadLocation {
    pub bucket: String,
    pub key: String,
    pub sha256: String,
}

pub fn render(
    config: &Config,
    env: &Environment,
    region: &Region,
    release: &Release,
    payload: &PayloadLocation,
    ctx: &RenderContext,
) -> Value {
    let inet_ports = region.inet_ports();

    let mut ingress = Vec::new();
    for port in &inet_ports {
        for sg in &ctx.elb_security_groups {
            ingress.push(json!({
                "IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                "SourceSecurityGroupId": sg,
                "Description": "traffic from the service's load balancer"
            }));
        }
    }
    let mut security_group = json!({
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": format!("{} {} {}", config.service_name, env.name, release.version),
            "SecurityGroupIngress": ingress,
        }
    });
    if let Some(vpc) = &region.vpc_id {
        security_group["Properties"]["VpcId"] = json!(vpc);
    }
    if let Some(rules) = &region.auto_scaling_group.security_group_egress {
        security_group["Properties"]["SecurityGroupEgress"] = egress_rules(rules);
    }

    let mut launch_data = json!({
        "ImageId": {"Ref": "ImageId"},
        "InstanceType": env.instance_type,
        "SecurityGroupIds": [{"Fn::GetAtt": ["InstanceSecurityGroup", "GroupId"]}],
        "IamInstanceProfile": {"Arn": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}},
        "MetadataOptions": {"HttpTokens": "required"},
        "UserData": {"Fn::Base64": {"Fn::Sub": user_data(config, region, release, payload)}},
    });
    if let Some(key) = &region.key_pair_name {
        launch_data["KeyName"] = json!(key);
    }

    // A release starts at the config's count, or at the live fleet's when
    // that scaled out above it (as porter copied the promoted stack's
    // desired capacity); never below `min_size`, and the ceiling is raised
    // to the start when the config's is lower.
    let asg = &region.auto_scaling_group;
    let min = asg.min_size.unwrap_or(region.instance_count);
    let desired = ctx
        .live_capacity
        .map_or(region.instance_count, |live| live.max(region.instance_count))
        .max(min);
    let max = asg.max_size.unwrap_or(desired).max(desired);
    // Behind a load balancer, an instance it finds unhealthy is replaced
    // (with EC2 checks only, a hung service would serve errors for good).
    let health_check_type = if region.elbs.is_empty() { "EC2" } else { "ELB" };
    let mut group_props = json!({
        "LaunchTemplate": {
            "LaunchTemplateId": {"Ref": "LaunchTemplate"},
            "Version": {"Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"]}
        },
        "MinSize": min.to_string(), "MaxSize": max.to_string(), "DesiredCapacity": desired.to_string(),
        "HealthCheckType": health_check_type,
        "HealthCheckGracePeriod": asg.health_check_grace_period.unwrap_or(HEALTH_CHECK_GRACE_SECONDS),
        "Tags": [
            {"Key": "Name", "Value": format!("{}-{}-{}", config.service_name, env.name, release.version), "PropagateAtLaunch": true},
            {"Key": "porter:service", "Value": config.service_name, "PropagateAtLaunch": true},
            {"Key": "porter:environment", "Value": env.name, "PropagateAtLaunch": true},
            {"Key": "porter:version", "Value": release.version, "PropagateAtLaunch": true},
        ]
    });
    let subnets: Vec<&String> = region.azs.iter().filter_map(|az| az.subnet_id.as_ref()).collect();
    if subnets.is_empty() {
        group_props["AvailabilityZones"] = json!(region.azs.iter().map(|az| &az.name).collect::<Vec<_>>());
    } else {
        group_props["VPCZoneIdentifier"] = json!(subnets);
    }

    let payload_arn = format!("arn:${{AWS::Partition}}:s3:::{}/{}", payload.bucket, payload.key);
    let mut instance_policy = vec![json!({
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": {"Fn::Sub": payload_arn}
    })];
    if let Some(key) = &region.sse_kms_key_id {
        instance_policy.push(json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key}));
    }
    instance_policy.extend(secret_statements(&region.secrets));
    if let Some((image, ecr)) = release
        .image
        .as_deref()
        .and_then(|i| ImageRef::parse(i).ok())
        .and_then(|i| i.ecr().map(|e| (i, e)))
    {
        // Pulling the release's image: the token has no resource in IAM,
        // the layers are read from its repository only.
        instance_policy.push(json!({"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}));
        instance_policy.push(json!({
            "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:ecr:{}:{}:repository/{}", ecr.region, ecr.account, image.repository)}
        }));
    }

    // Without subnets the group is placed by the zones the config lists;
    // naming them is the point (porter's `azs`), so cfn-lint's advice
    // against hard-coded zones is answered here rather than silenced globally.
    let group_metadata = if subnets.is_empty() {
        json!({"cfn-lint": {"config": {"ignore_checks": ["W3010"]}}, "porter": "zones from .porter/config azs"})
    } else {
        json!({})
    };

    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "porter: {} {} release {} in {}",
            config.service_name, env.name, release.version, region.name
        ),
        "Parameters": {
            // The image pack resolved for this region is pinned: the
            // release's version names it, so a patched image is a new
            // release. A release without one follows the public parameter.
            "ImageId": match release.images.get(&region.name) {
                Some(ami) => json!({
                    "Type": "AWS::EC2::Image::Id",
                    "Default": ami,
                    "Description": "The image the instances boot, as pack resolved it"
                }),
                None => json!({
                    "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
                    "Default": IMAGE_PARAMETER,
                    "Description": "The image the instances boot"
                }),
            }
        },
        "Resources": {
            "InstanceRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole"
                        }]
                    },
                    "Policies": [{
                        "PolicyName": "read-payload",
                        "PolicyDocument": {"Version": "2012-10-17", "Statement": instance_policy}
                    }]
                }
            },
            "InstanceProfile": {
                "Type": "AWS::IAM::InstanceProfile",
                "Properties": {"Roles": [{"Ref": "InstanceRole"}]}
            },
            "InstanceSecurityGroup": security_group,
            "LaunchTemplate": {
                "Type": "AWS::EC2::LaunchTemplate",
                "Properties": {"LaunchTemplateData": launch_data}
            },
            "AutoScalingGroup": {
                "Type": "AWS::AutoScaling::AutoScalingGroup",
                "CreationPolicy": {
                    // As long as the stack may take: a slow boot is given
                    // the time `stack_creation.timeout_minutes` allows.
                    "ResourceSignal": {"Count": region.instance_count, "Timeout": format!("PT{}M", env.stack_creation.timeout_minutes)}
                },
                "Metadata": group_metadata,
                "Properties": group_props
            }
        },
        "Outputs": {
            "AutoScalingGroup": {"Value": {"Ref": "AutoScalingGroup"}},
            "SecurityGroup": {"Value": {"Fn::GetAtt": ["InstanceSecurityGroup", "GroupId"]}}
        }
    });
    let mut template = match &region.stack_definition {
        Some(def) => crate::overlay::apply(template, &def.template, region.vpc_id.as_deref()),
        None => template,
    };
    confine_roles(&mut template, &config.service_name, &env.name);
    template
}

/// The path every IAM role and instance profile of a release stack lives
/// under; the deployment role may create and change roles only there.
pub const ROLE_PATH: &str = "/porter/";
/// The permissions boundary every role of a release stack carries: a
/// managed policy of this name under [`ROLE_PATH`], made by the infra in
/// each deployment account (`infra/template.yaml`, ReleaseRoleBoundary).
pub const BOUNDARY_POLICY: &str = "porter-release-boundary";

/// Puts every role (the generated one and any a `stack_definition_path`
/// overlay adds or changes) under [`ROLE_PATH`] with the boundary, over
/// whatever the overlay said: a repository cannot write itself a role
/// that escapes the boundary. (IAM refuses such a role too: the deployment
/// role may only create roles that carry it.)
///
/// Each role is also tagged with the release's service and environment,
/// over any `porter:` tag the overlay set: sessions of the role carry them
/// as principal tags, which the boundary compares with the secrets and
/// parameters it lets the role read (its own service's and environment's).
fn confine_roles(template: &mut Value, service: &str, environment: &str) {
    let Some(resources) = template.get_mut("Resources").and_then(Value::as_object_mut) else {
        return;
    };
    for resource in resources.values_mut() {
        let kind = resource
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !matches!(kind.as_str(), "AWS::IAM::Role" | "AWS::IAM::InstanceProfile") {
            continue;
        }
        let Some(obj) = resource.as_object_mut() else { continue };
        let props = obj.entry("Properties").or_insert_with(|| json!({}));
        if !props.is_object() {
            *props = json!({});
        }
        let props = props.as_object_mut().expect("made an object above");
        props.insert("Path".into(), json!(ROLE_PATH));
        if kind == "AWS::IAM::Role" {
            props.insert(
                "PermissionsBoundary".into(),
                json!({"Fn::Sub": format!("arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:policy{ROLE_PATH}{BOUNDARY_POLICY}")}),
            );
            let mut tags: Vec<Value> = props
                .get("Tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| {
                    !t.get("Key")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.starts_with("porter:"))
                })
                .cloned()
                .collect();
            tags.push(json!({"Key": "porter:service", "Value": service}));
            tags.push(json!({"Key": "porter:environment", "Value": environment}));
            props.insert("Tags".into(), Value::Array(tags));
        }
    }
}

/// The statements that let an instance read exactly the release's secrets:
/// one per store, each resource one reference. (Values encrypted with the
/// stores' default keys need no KMS statement: those keys trust the
/// services; a region's own `sse_kms_key_id` is granted above.)
fn secret_statements(secrets: &[Secret]) -> Vec<Value> {
    let arns = |store: SecretStore| -> Vec<Value> {
        secrets
            .iter()
            .filter(|s| s.store == store)
            .map(|s| json!({"Fn::Sub": secret_arn(s)}))
            .collect()
    };
    let mut out = Vec::new();
    let managed = arns(SecretStore::SecretsManager);
    if !managed.is_empty() {
        out.push(json!({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": managed}));
    }
    let parameters = arns(SecretStore::Ssm);
    if !parameters.is_empty() {
        out.push(json!({"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": parameters}));
    }
    out
}

/// The ARN of one reference, as an `Fn::Sub` string in the stack's own
/// account and region. Secrets Manager adds six random characters to a
/// secret's ARN; `-??????` matches exactly those.
pub fn secret_arn(secret: &Secret) -> String {
    match secret.store {
        SecretStore::SecretsManager => format!(
            "arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:{}-??????",
            secret.name
        ),
        SecretStore::Ssm => format!(
            "arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter/{}",
            secret.name.trim_start_matches('/')
        ),
    }
}

/// The boot lines that read each secret into a variable of the boot
/// script's own (`porter_secret_N`), never exported: the boot's tools and
/// its `ec2_bootstrap` hooks never see a secret, and no secret's name can
/// change how they run. The value goes from the store into that variable
/// only: never an argument, a file or a line of output. A failure names
/// the variable and the reference, and the store's own error (which holds
/// no value).
fn secret_lines(secrets: &[Secret]) -> String {
    let mut out = String::new();
    for (i, s) in secrets.iter().enumerate() {
        let read = match s.store {
            SecretStore::SecretsManager => format!(
                "aws secretsmanager get-secret-value --secret-id {} --query SecretString --output text --region ${{AWS::Region}}",
                s.name
            ),
            SecretStore::Ssm => format!(
                "aws ssm get-parameter --name {} --with-decryption --query Parameter.Value --output text --region ${{AWS::Region}}",
                s.name
            ),
        };
        out.push_str(&format!(
            "porter_secret_{i}=$({read} 2>/tmp/porter-secret.err) || fail \"cannot read secret {var} ({store}:{name}): $(tr '\\n' ' ' < /tmp/porter-secret.err | cut -c1-200)\"\n",
            var = s.variable,
            store = s.store.prefix(),
            name = s.name,
        ));
    }
    out
}

/// How the service's process (or the container's client) is started with
/// its secrets: in a subshell that exports each under the service's name
/// for it and then becomes the process, so the secrets live in that
/// process's environment alone.
fn with_secrets(secrets: &[Secret], command: &str) -> String {
    if secrets.is_empty() {
        return command.to_owned();
    }
    let exports = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}=\"${{!porter_secret_{i}}}\"", s.variable))
        .collect::<Vec<_>>()
        .join(" ");
    format!("(export {exports}; exec {command})")
}

/// Forgets the secrets once the service has them.
fn forget_secrets(secrets: &[Secret]) -> String {
    if secrets.is_empty() {
        return String::new();
    }
    let names = (0..secrets.len())
        .map(|i| format!("porter_secret_{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("unset {names}\n")
}

/// The boot script, as an `Fn::Sub` string: `${AWS::StackName}` and
/// `${AWS::Region}` are filled in by CloudFormation; `${!X}` stays `${X}`.
/// The most UserData EC2 takes: 16 KB of the script as written, before
/// the launch template base64-encodes it.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// The boot script's size once CloudFormation's `Fn::Sub` has filled in
/// the pseudo parameters it uses (`${!X}` is written back as `${X}`).
/// Unknown account ids and partitions count at their longest.
pub fn user_data_bytes(script: &str, stack_name: &str, region: &str) -> usize {
    script
        .replace("${AWS::StackName}", stack_name)
        .replace("${AWS::Region}", region)
        .replace("${AWS::AccountId}", "123456789012")
        .replace("${AWS::Partition}", "aws-us-gov")
        .replace("${!", "${")
        .len()
}

/// The boot script of a rendered template, if it has one.
pub fn boot_script(template: &Value) -> Option<&str> {
    template
        .pointer("/Resources/LaunchTemplate/Properties/LaunchTemplateData/UserData/Fn::Base64/Fn::Sub")?
        .as_str()
}

/// Refuses a rendered template whose boot script EC2 would refuse.
pub fn check_user_data(template: &Value, stack_name: &str, region: &str) -> Result<(), String> {
    let Some(script) = boot_script(template) else {
        return Ok(());
    };
    let bytes = user_data_bytes(script, stack_name, region);
    if bytes > USER_DATA_LIMIT {
        return Err(user_data_too_large(bytes, region, "is"));
    }
    Ok(())
}

fn user_data_too_large(bytes: usize, region: &str, verb: &str) -> String {
    format!(
        "the instances' UserData (the boot script) in {region} {verb} {bytes} bytes, over EC2's limit of {USER_DATA_LIMIT} bytes (16 KB): shorten the ec2_bootstrap hooks, secrets or containers, or move commands into the payload"
    )
}

/// The most the boot script of `region` can be once packed, from the
/// config alone: what pack adds (version, payload key, a container image
/// reference from the build) counted at its longest. `porter validate`
/// refuses a config over the limit here, before anything is built.
pub fn user_data_upper_bound(config: &Config, env: &Environment, region: &Region) -> Result<usize, String> {
    let nowhere = || crate::release::S3Object {
        bucket: String::new(),
        key: String::new(),
    };
    let widest = |image: Option<String>| {
        let mut release = Release {
            service: config.service_name.clone(),
            environment: env.name.clone(),
            version: "f".repeat(crate::release::VERSION_LEN),
            revision: "f".repeat(40),
            sha256: "f".repeat(64),
            config_sha256: "f".repeat(64),
            image,
            images: Default::default(),
            rollout: Default::default(),
            steps: crate::release::Steps::none(),
            payload: crate::release::S3Object {
                bucket: "b".repeat(63),
                key: "k".repeat(256),
            },
            manifest: nowhere(),
            config: nowhere(),
            record: nowhere(),
            regions: Vec::new(),
        };
        release.regions.push(region.name.clone());
        let payload = PayloadLocation {
            bucket: "b".repeat(63),
            key: "k".repeat(256),
            sha256: "f".repeat(64),
        };
        let stack = stack_name(&config.service_name, &env.name, &release.version);
        user_data_bytes(&user_data(config, region, &release, &payload), &stack, &region.name)
    };
    let ecr = format!(
        "123456789012.dkr.ecr.{}.amazonaws.com/{}:{}",
        region.name,
        "r".repeat(200),
        "t".repeat(128)
    );
    let bytes = widest(None).max(widest(Some(ecr)));
    if bytes > USER_DATA_LIMIT {
        return Err(user_data_too_large(bytes, &region.name, "can be"));
    }
    Ok(bytes)
}

/// `s` as one shell word: single-quoted, each `'` closed, escaped and
/// reopened.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as literal text inside an `Fn::Sub` string: `${` written `${!`,
/// which CloudFormation turns back into `${` without substituting.
pub fn sub_literal(s: &str) -> String {
    s.replace("${", "${!")
}

fn user_data(config: &Config, region: &Region, release: &Release, payload: &PayloadLocation) -> String {
    let mut checks = String::new();
    for c in region.containers.iter().filter(|c| c.topology == Topology::Inet) {
        let port = c.inet_port.unwrap_or(8080);
        let curl_method = if c.health_check.method == "HEAD" { "-I" } else { "" };
        // validate holds the path to plain URL characters; quoted and kept
        // out of Fn::Sub all the same, so nothing in it is ever shell or
        // a substitution.
        checks.push_str(&format!(
            "wait_healthy {curl_method:?} {}\n",
            sub_literal(&shell_quote(&format!("http://127.0.0.1:{port}{}", c.health_check.path)))
        ));
    }
    let image = release.image.as_deref().map(ImageRef::parse);
    let start = match image {
        // pack refused anything else; a record changed since is refused
        // here rather than written into a shell script.
        // (The text itself stays out of the script.)
        Some(Err(_)) => {
            "echo 'porter: the release image is not a container image reference; pack it again' >&2; false".to_owned()
        }
        Some(Ok(image)) => {
            // Amazon Linux 2023 installs docker stopped; an ECR image needs
            // a login (the instance role may pull from its repository only).
            let login = image
                .ecr()
                .map(|ecr| {
                    format!(
                        "aws ecr get-login-password --region {} | docker login --username AWS --password-stdin {}\n",
                        ecr.region, image.registry
                    )
                })
                .unwrap_or_default();
            let run = format!(
                "docker run -d --restart=always --read-only --name {svc} {ports}{env} {image}",
                svc = release.service,
                // `-e NAME` hands the container the boot's own value: it
                // is never written on a command line.
                env = SERVICE_VARIABLES
                    .iter()
                    .copied()
                    .chain(region.secrets.iter().map(|s| s.variable.as_str()))
                    .map(|name| format!(" -e {name}"))
                    .collect::<String>(),
                ports = region
                    .containers
                    .iter()
                    .filter_map(|c| c.inet_port.map(|p| format!("-p {p}:{p}")))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            // The client reads the secrets from its own environment and
            // hands them to the container; `DOCKER_*` names, which would
            // steer the client, are refused at validate.
            format!(
                "systemctl enable --now docker\n{login}docker pull {image}\n{}",
                with_secrets(&region.secrets, &run)
            )
        }
        // Its own session, so it outlives this script; its pid, so the
        // health wait sees it die.
        None => format!(
            "cd /srv/{svc}\n{} > /var/log/{svc}.log 2>&1 < /dev/null &\nservice_pid=$!\ncd /",
            with_secrets(&region.secrets, "setsid ./start"),
            svc = release.service
        ),
    };
    format!(
        r#"#!/bin/bash
# porter: fetch release {version}, check it, start it, and tell CloudFormation
# once it is healthy (3 consecutive good answers, as porter's host daemon did).
# A failure signals its reason (with the end of the service's log), so the
# stack fails saying why instead of waiting out its timeout.
set -euo pipefail
service_pid=""
signal() {{ /opt/aws/bin/cfn-signal -e "$1" --reason "$2" --stack ${{AWS::StackName}} --resource AutoScalingGroup --region ${{AWS::Region}}; }}
log_tail() {{ tail -n 5 "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-300; }}
fail() {{ trap - ERR; echo "porter: $1" >&2; signal 1 "$1" || true; exit 1; }}
trap 'fail "boot failed at line $LINENO: $BASH_COMMAND"' ERR
wait_healthy() {{
  local ok=0 bad=0 code
  for _ in $(seq 1 450); do
    if [ -n "$service_pid" ] && ! kill -0 "$service_pid" 2>/dev/null; then
      fail "{svc} exited before it was healthy; its log: $(log_tail /var/log/{svc}.log)"
    fi
    code=$(curl -s $1 -o /dev/null -w '%{{http_code}}' --max-time 2 "$2" || true)
    if [ "$code" = 200 ]; then ok=$((ok+1)); bad=0; else ok=0; fi
    if [ "$code" != 200 ] && [ "$code" != 000 ]; then bad=$((bad+1)); fi
    [ "$ok" -ge 3 ] && return 0
    [ "$bad" -ge 10 ] && fail "$2 answered HTTP $code 10 times in a row; {svc}'s log: $(log_tail /var/log/{svc}.log)"
    sleep 2
  done
  fail "$2 did not answer 200 within 15 minutes; {svc}'s log: $(log_tail /var/log/{svc}.log)"
}}
dnf install -y -q aws-cfn-bootstrap docker >/dev/null 2>&1 || true
aws s3 cp "s3://{bucket}/{key}" /tmp/payload.tar --region ${{AWS::Region}}
echo "{sha}  /tmp/payload.tar" | sha256sum -c -
mkdir -p /srv/{svc}
tar -xf /tmp/payload.tar -C /srv/{svc}
export PORTER_SERVICE_NAME={svc} PORTER_SERVICE_VERSION={version} PORTER_ENVIRONMENT={environment} PORTER_REGION=${{AWS::Region}} AWS_REGION=${{AWS::Region}} AWS_DEFAULT_REGION=${{AWS::Region}}
{secrets}{bootstrap}{start}
{forget}{checks}signal 0 "healthy"
"#,
        version = release.version,
        environment = release.environment,
        bucket = payload.bucket,
        key = payload.key,
        sha = payload.sha256,
        svc = release.service,
        secrets = secret_lines(&region.secrets),
        forget = forget_secrets(&region.secrets),
        bootstrap = bootstrap_lines(config, release),
    )
}

/// The `ec2_bootstrap` hooks, one after the other, in the payload's folder
/// before the service starts. What the repository wrote goes in base64
/// (no quoting to get wrong, nothing CloudFormation substitutes); a
/// failing hook fails the boot naming it, with the end of its output. A
/// `dockerfile:` hook needs Docker, which Amazon Linux has once the
/// script installs it; where there is none it is skipped, saying so.
fn bootstrap_lines(config: &Config, release: &Release) -> String {
    let b64 = |s: &str| aws_smithy_types::base64::encode(s);
    let Some(hooks) = config.hooks.get(EC2_BOOTSTRAP) else {
        return String::new();
    };
    let mut out = String::new();
    for (i, hook) in hooks.iter().enumerate() {
        if !hook.run_condition.runs(false) {
            continue;
        }
        let label = format!("ec2_bootstrap[{i}]");
        let mut env = format!(
            "PORTER_SERVICE={svc} PORTER_ENVIRONMENT={envname} PORTER_VERSION={version} PORTER_REGION=${{AWS::Region}} PORTER_STACK=${{AWS::StackName}} PORTER_HOOK=ec2_bootstrap",
            svc = release.service,
            envname = release.environment,
            version = release.version
        );
        for (name, value) in &hook.environment {
            // Only values written in the config: a deploy's variables stay
            // with the deploy.
            if let Some(v) = value {
                env.push_str(&format!(" {name}=\"$(echo {} | base64 -d)\"", b64(v)));
            }
        }
        let log = format!("/var/log/porter-{label}.log");
        let failed = format!("fail \"{label} failed; its output ends: $(log_tail {log})\"");
        let svc = &release.service;
        match &hook.run {
            HookRun::Command(cmd) => out.push_str(&format!(
                "echo {cmd} | base64 -d > /tmp/porter-hook.sh\nif ! (cd /srv/{svc} && env {env} bash /tmp/porter-hook.sh) > {log} 2>&1; then {failed}; fi\n",
                cmd = b64(cmd),
            )),
            HookRun::Dockerfile(file) => out.push_str(&format!(
                "if command -v docker >/dev/null 2>&1; then\n  systemctl enable --now docker >/dev/null 2>&1 || true\n  if ! (docker build -t porter-bootstrap -f \"/srv/{svc}/$(echo {f} | base64 -d)\" /srv/{svc} && docker run --rm -v /srv/{svc}:/repo_root porter-bootstrap) > {log} 2>&1; then {failed}; fi\nelse\n  echo 'porter: {label} builds a Dockerfile and this instance has no Docker engine: skipped' >&2\nfi\n",
                f = b64(file),
            )),
        }
    }
    out
}

/// Stack names must be unique per region and stable per release, so a
/// re-run finds the stack it already created.
pub use crate::limits::MAX_STACK_NAME;

/// `validate` refuses names that would not fit, so the cut never reaches
/// the version; it stays as a last guard.
pub fn stack_name(service: &str, environment: &str, version: &str) -> String {
    let name = format!("{service}-{environment}-{version}");
    name.chars().take(MAX_STACK_NAME).collect()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod render_tests;
