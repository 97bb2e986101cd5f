//! Creates what a real account would already hold before a first deploy —
//! a VPC with a subnet per availability zone, the load balancers the config
//! names (tagged as the service's: a classic ELB for each `elb`, an ALB
//! with a listener forwarding to each `target_group`), the buckets, and the environment's pin
//! (the regions and role an administrator allows it) — as porter's
//! `bootstrap` commands did. Idempotent: an existing bootstrap stack or
//! bucket is left as it is.

use std::collections::BTreeMap;

use anyhow::Result;
use porter_core::aws::Aws;
use porter_core::config::{BalancerKind, Environment, Region, Topology};
use porter_core::pins;
use porter_ops::one_line;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What bootstrap made in one region.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub elbs: Vec<String>,
}

pub fn stack_name(service: &str, env: &str) -> String {
    format!("porter-bootstrap-{service}-{env}")
}

pub async fn environment(aws: &Aws, service: &str, env: &Environment) -> Result<BTreeMap<String, Bootstrapped>> {
    // The regions at once, as a deploy acts on them: one after the other,
    // an 8-region deploy spent most of a second here before it started.
    let made = futures::future::try_join_all(env.regions.iter().map(|r| region(aws, service, env, r))).await?;
    pin(aws, env).await?;
    Ok(env.regions.iter().map(|r| r.name.clone()).zip(made).collect())
}

/// [`environment`], unless this local stack made it already for the
/// environment's regions exactly as the config has them now: a deploy
/// then starts at once, where every deploy would otherwise check and tag
/// again, in each region, what the first one made (in an 8-region deploy,
/// some 40 calls and most of a second before the execution starts). The
/// environment's pin is written each time, as before: tests and people
/// change it between deploys. A mark in the local stack's SSM records what
/// was made, so a reset local stack (which forgets the mark with the rest)
/// or a changed config bootstraps again.
pub async fn environment_once(aws: &Aws, service: &str, env: &Environment) -> Result<()> {
    let mark = format!("/porter-local/bootstrapped/{service}/{}", env.name);
    let made_for = hex::encode(Sha256::digest(serde_json::to_vec(&(service, &env.name, &env.regions))?));
    let ssm = aws.ssm();
    let marked = ssm
        .get_parameter()
        .name(&mark)
        .send()
        .await
        .ok()
        .and_then(|out| out.parameter().and_then(|p| p.value()).map(str::to_owned));
    if marked.as_deref() == Some(made_for.as_str()) {
        return pin(aws, env).await;
    }
    environment(aws, service, env).await?;
    // Without the mark the next deploy only bootstraps again.
    let _ = ssm
        .put_parameter()
        .name(&mark)
        .value(made_for)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await;
    Ok(())
}

/// Adds the environment's regions, with their roles, to its pin under
/// [`pins::DEFAULT_PATH`] (what an administrator does in a real account).
pub async fn pin(aws: &Aws, env: &Environment) -> Result<()> {
    let name = pins::parameter_name(pins::DEFAULT_PATH, &env.name);
    let ssm = aws.ssm();
    let mut regions = serde_json::Map::new();
    if let Ok(out) = ssm.get_parameter().name(&name).send().await {
        if let Some(Value::Object(old)) = out
            .parameter()
            .and_then(|p| p.value())
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
            .and_then(|v| v.get("regions").cloned())
        {
            regions = old;
        }
    }
    for region in &env.regions {
        regions.insert(region.name.clone(), json!({"role_arn": region.role_arn}));
    }
    ssm.put_parameter()
        .name(&name)
        .value(json!({"regions": regions}).to_string())
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| one_line(&format!("pinning environment {} ({name})", env.name), e))?;
    Ok(())
}

pub async fn region(aws: &Aws, service: &str, env: &Environment, region: &Region) -> Result<Bootstrapped> {
    let clients = aws
        .region(&region.name, &region.role_arn, "porter-bootstrap", &[])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure_bucket(&clients.s3, &region.s3_bucket, &region.name).await?;
    machine_image(aws, &region.name).await?;

    let name = stack_name(service, &env.name);
    let cfn = &clients.cloudformation;
    let exists = cfn.describe_stacks().stack_name(&name).send().await.is_ok_and(|o| {
        o.stacks()
            .iter()
            .any(|s| s.stack_status().is_some_and(|st| st.as_str() != "DELETE_COMPLETE"))
    });
    if !exists {
        cfn.create_stack()
            .stack_name(&name)
            .template_body(template(region).to_string())
            .send()
            .await
            .map_err(|e| one_line(&format!("creating {name} in {}", region.name), e))?;
    }
    let resources = cfn
        .describe_stack_resources()
        .stack_name(&name)
        .send()
        .await
        .map_err(|e| one_line(&format!("reading {name} in {}", region.name), e))?;
    let of_type = |t: &str| -> Vec<String> {
        resources
            .stack_resources()
            .iter()
            .filter(|r| r.resource_type() == Some(t))
            .filter_map(|r| r.physical_resource_id().map(str::to_owned))
            .collect()
    };
    let elbs = of_type("AWS::ElasticLoadBalancing::LoadBalancer");
    for elb in &elbs {
        let tag = |k: &str, v: &str| {
            aws_sdk_elasticloadbalancing::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .expect("key is set")
        };
        clients
            .elb
            .add_tags()
            .load_balancer_names(elb)
            .tags(tag(pins::SERVICE_TAG, service))
            .tags(tag(pins::ENVIRONMENT_TAG, &env.name))
            .send()
            .await
            .map_err(|e| one_line(&format!("tagging load balancer {elb} in {}", region.name), e))?;
        // Connection draining, through the API: moto's CloudFormation
        // ignores the property. A cutover's old instances finish their
        // requests and take no new ones.
        let draining = aws_sdk_elasticloadbalancing::types::ConnectionDraining::builder()
            .enabled(true)
            .timeout(DEREGISTRATION_DELAY_SECONDS as i32)
            .build();
        clients
            .elb
            .modify_load_balancer_attributes()
            .load_balancer_name(elb)
            .load_balancer_attributes(
                aws_sdk_elasticloadbalancing::types::LoadBalancerAttributes::builder()
                    .connection_draining(draining)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                one_line(
                    &format!("turning on connection draining of {elb} in {}", region.name),
                    e,
                )
            })?;
    }
    let vpc_id = of_type("AWS::EC2::VPC").into_iter().next().unwrap_or_default();
    let subnets = of_type("AWS::EC2::Subnet");
    let alb_groups = of_type("AWS::EC2::SecurityGroup");
    target_groups(&clients, service, &env.name, region, &vpc_id, &subnets, &alb_groups).await?;
    Ok(Bootstrapped { vpc_id, subnets, elbs })
}

/// How long an instance taken out of a bootstrapped load balancer drains
/// (a target group's deregistration delay, a classic ELB's connection
/// draining timeout): a few seconds, so a deploy on the local stack waits
/// little, where AWS's default is 300 s. Set through the API: moto's
/// CloudFormation ignores both.
pub const DEREGISTRATION_DELAY_SECONDS: u32 = 5;

/// For each target group the region names, an Application Load Balancer of
/// the same name whose HTTP listener on port 80 forwards to it, as a team's
/// account would have them before its first deploy: the group health-checks
/// the service's port and path, and is tagged as the service's. Made
/// through the elbv2 API, not the bootstrap stack: moto's CloudFormation
/// names target groups by their logical id and ignores their attributes.
/// Idempotent: a target group that exists is left as it is.
async fn target_groups(
    clients: &porter_core::aws::RegionClients,
    service: &str,
    environment: &str,
    region: &Region,
    vpc_id: &str,
    subnets: &[String],
    security_groups: &[String],
) -> Result<()> {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, Matcher, ProtocolEnum, Tag, TargetGroupAttribute, TargetTypeEnum,
    };
    let elbv2 = &clients.elbv2;
    let (port, health) = service_port(region);
    for tg in region.elbs.iter().filter(|e| e.kind == BalancerKind::TargetGroup) {
        let name = &tg.name;
        let context = |what: &str| format!("{what} {name} in {}", region.name);
        if elbv2.describe_target_groups().names(name).send().await.is_ok() {
            continue;
        }
        let alb = elbv2
            .create_load_balancer()
            .name(name)
            .set_subnets(Some(subnets.to_vec()))
            .set_security_groups(Some(security_groups.to_vec()))
            .send()
            .await
            .map_err(|e| one_line(&context("creating the load balancer"), e))?;
        let alb_arn = first_arn(alb.load_balancers(), |l| l.load_balancer_arn());
        let group = elbv2
            .create_target_group()
            .name(name)
            .protocol(ProtocolEnum::Http)
            .port(i32::from(port))
            .vpc_id(vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_path(&health)
            // The quickest checks AWS allows: healthy two checks (10 s)
            // after the service first answers.
            .health_check_interval_seconds(5)
            .health_check_timeout_seconds(2)
            .healthy_threshold_count(2)
            .unhealthy_threshold_count(2)
            .matcher(Matcher::builder().http_code("200").build())
            .tags(Tag::builder().key(pins::SERVICE_TAG).value(service).build())
            .tags(Tag::builder().key(pins::ENVIRONMENT_TAG).value(environment).build())
            .send()
            .await
            .map_err(|e| one_line(&context("creating the target group"), e))?;
        let tg_arn = first_arn(group.target_groups(), |g| g.target_group_arn());
        elbv2
            .modify_target_group_attributes()
            .target_group_arn(&tg_arn)
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(DEREGISTRATION_DELAY_SECONDS.to_string())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| one_line(&context("setting the deregistration delay of target group"), e))?;
        elbv2
            .create_listener()
            .load_balancer_arn(&alb_arn)
            .protocol(ProtocolEnum::Http)
            .port(80)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(&tg_arn)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| one_line(&context("creating the listener of load balancer"), e))?;
    }
    Ok(())
}

/// The port and health check path of the service's internet-facing
/// container, which its load balancers check.
/// The ARN of the first of what a Create call made (empty if none).
fn first_arn<T>(made: &[T], arn: impl Fn(&T) -> Option<&str>) -> String {
    made.first().and_then(arn).unwrap_or_default().to_owned()
}

fn service_port(region: &Region) -> (u16, String) {
    let inet = region.containers.iter().find(|c| c.topology == Topology::Inet);
    let port = inet.and_then(|c| c.inet_port).unwrap_or(8080);
    let health = inet
        .map(|c| c.health_check.path.clone())
        .unwrap_or_else(|| "/health".into());
    (port, health)
}

/// Names the machine image in the region, unless it is named already (a
/// test may have moved it on to a newer one).
async fn machine_image(aws: &Aws, region: &str) -> Result<()> {
    let out = aws
        .ssm_in(region)
        .put_parameter()
        .name(crate::names::MACHINE_IMAGE_PARAMETER)
        .value(crate::names::FIRST_MACHINE_IMAGE)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(false)
        .send()
        .await;
    match out {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|se| se.is_parameter_already_exists()) => Ok(()),
        Err(e) => Err(one_line(&format!("naming the machine image in {region}"), e)),
    }
}

pub(crate) async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str, region: &str) -> Result<()> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    let mut create = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    create
        .send()
        .await
        .map_err(|e| one_line(&format!("creating bucket {bucket}"), e))?;
    Ok(())
}

fn template(region: &Region) -> Value {
    let mut resources = serde_json::Map::new();
    resources.insert(
        "Vpc".into(),
        json!({"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.20.0.0/16", "EnableDnsHostnames": true}}),
    );
    let mut subnet_refs = Vec::new();
    for (i, az) in region.azs.iter().enumerate() {
        let id = format!("Subnet{i}");
        resources.insert(
            id.clone(),
            json!({"Type": "AWS::EC2::Subnet", "Properties": {
                "VpcId": {"Ref": "Vpc"},
                "CidrBlock": format!("10.20.{i}.0/24"),
                "AvailabilityZone": az.name
            }}),
        );
        subnet_refs.push(json!({"Ref": id}));
    }
    let (port, health) = service_port(region);
    if region.elbs.iter().any(|e| e.kind == BalancerKind::TargetGroup) {
        // The ALBs' own group, which the instances let in.
        resources.insert(
            "AlbSecurityGroup".into(),
            json!({"Type": "AWS::EC2::SecurityGroup", "Properties": {
                "GroupDescription": "porter local bootstrap: the ALBs in front of the service's target groups",
                "VpcId": {"Ref": "Vpc"}
            }}),
        );
    }
    for (i, elb) in region.elbs.iter().filter(|e| e.kind.is_classic()).enumerate() {
        resources.insert(
            format!("LoadBalancer{i}"),
            json!({"Type": "AWS::ElasticLoadBalancing::LoadBalancer", "Properties": {
                "LoadBalancerName": elb.name,
                "Subnets": subnet_refs,
                "Listeners": [{"LoadBalancerPort": "80", "InstancePort": port.to_string(), "Protocol": "HTTP"}],
                "HealthCheck": {
                    "Target": format!("HTTP:{port}{health}"),
                    // The quickest checks AWS allows: an instance is
                    // InService two checks (5 s) after it first answers.
                    "HealthyThreshold": "2", "UnhealthyThreshold": "2",
                    "Interval": "5", "Timeout": "2"
                }
            }}),
        );
    }
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "porter local bootstrap: network and load balancers",
        "Resources": resources
    })
}
