//! The load balancers promote moves instances into, one interface for both
//! kinds a region may name: classic ELBs (`elb:`), by name, and target
//! groups of Application and Network Load Balancers (`target_group:`), by
//! name, resolved to their ARN on each use (a name is unique per region and
//! account; the ARN is what every elbv2 call takes).
//!
//! Each kind keeps the same tags (ownership, the promoted stack and its
//! rollback target), so prune, the gate, status and an undo read one or the
//! other alike.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancing::types::{Instance, Tag as ClassicTag};
use aws_sdk_elasticloadbalancingv2::types::{Tag as V2Tag, TargetDescription, TargetGroup};

use crate::aws::{self, RegionClients};
use crate::config::{BalancerKind, Elb, Region};
use crate::phase::PhaseError;
use crate::pins;

/// One instance's health at one load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceHealth {
    pub instance: String,
    /// InService (classic) or healthy (target group).
    pub serving: bool,
    /// The state as the API names it: InService, OutOfService, healthy,
    /// initial, unhealthy, draining, unused ...
    pub state: String,
    /// Why it is not serving, as the API says (reason code and description).
    pub reason: Option<String>,
}

impl InstanceHealth {
    /// `i-1 in target group web is unhealthy (Target.FailedHealthChecks: ...)`.
    pub fn describe(&self, lb: &Elb) -> String {
        format!(
            "{} in {lb} is {}{}",
            self.instance,
            self.state,
            self.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        )
    }
}

/// A target group as DescribeTargetGroups answers it, found by name (once
/// per [`RegionClients`]: see its `target_groups`).
async fn target_group(clients: &RegionClients, name: &str) -> Result<TargetGroup, PhaseError> {
    if let Some(known) = clients.target_groups.lock().expect("target groups lock").get(name) {
        return Ok(known.clone());
    }
    let out = clients
        .elbv2
        .describe_target_groups()
        .names(name)
        .send()
        .await
        .map_err(|e| match aws::classify(&format!("describe target group {name}"), e) {
            PhaseError::Aws(m) if m.contains("TargetGroupNotFound") => PhaseError::Invalid(format!(
                "{m}: there is no target group {name} in {}; create it (behind your ALB's or NLB's listener, tagged porter:service and porter:environment) or fix `target_group`/`target_groups` in .porter/config",
                clients.region
            )),
            other => other,
        })?;
    let group = out.target_groups().first().cloned().ok_or_else(|| {
        PhaseError::Invalid(format!(
            "there is no target group {name} in {}; create it or fix `target_group`/`target_groups` in .porter/config",
            clients.region
        ))
    })?;
    // Auto Scaling registers instances; a group of IP addresses, Lambda
    // functions or an ALB would take none of them.
    let kind = group.target_type().map(|t| t.as_str()).unwrap_or("instance");
    if kind != "instance" {
        return Err(PhaseError::Invalid(format!(
            "target group {name} in {} takes targets of type {kind}; porter registers instances (Auto Scaling groups register instance targets): use a target group of type instance",
            clients.region
        )));
    }
    clients
        .target_groups
        .lock()
        .expect("target groups lock")
        .insert(name.to_owned(), group.clone());
    Ok(group)
}

async fn arn(clients: &RegionClients, name: &str) -> Result<String, PhaseError> {
    let group = target_group(clients, name).await?;
    Ok(group.target_group_arn().unwrap_or_default().to_owned())
}

/// Refuses a target group the instances could not serve through: one
/// outside the VPC they go into (AWS refuses to register them: "not in the
/// target group's VPC"; checked when the region names its VPC), or one
/// that sends traffic to a port no container of the service listens on
/// (Auto Scaling registers instances on the group's port). Classic ELBs
/// name their instance port per listener and are not checked here.
pub async fn check_fits(clients: &RegionClients, lb: &Elb, region: &Region) -> Result<(), PhaseError> {
    if lb.kind.is_classic() {
        return Ok(());
    }
    let group = target_group(clients, &lb.name).await?;
    if let (Some(theirs), Some(ours)) = (group.vpc_id(), region.vpc_id.as_deref()) {
        if theirs != ours {
            return Err(PhaseError::Invalid(format!(
                "{lb} in {} is in {theirs}, and the instances go into {ours} (the region's vpc_id): AWS registers only instances of the target group's VPC; name a target group in {ours} or fix vpc_id in .porter/config",
                region.name
            )));
        }
    }
    let ports = region.inet_ports();
    if let Some(port) = group.port().and_then(|p| u16::try_from(p).ok()) {
        if !ports.is_empty() && !ports.contains(&port) {
            return Err(PhaseError::Invalid(format!(
                "{lb} in {} sends traffic to port {port}, and the service listens on {}: Auto Scaling registers instances on the target group's port; use a target group on the service's inet_port or change inet_port in .porter/config",
                region.name,
                ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(())
}

/// The load balancer's tags.
pub async fn tags(clients: &RegionClients, lb: &Elb) -> Result<BTreeMap<String, String>, PhaseError> {
    match lb.kind {
        BalancerKind::Classic => pins::elb_tags(clients, &lb.name).await,
        BalancerKind::TargetGroup => {
            let arn = arn(clients, &lb.name).await?;
            let out = clients
                .elbv2
                .describe_tags()
                .resource_arns(&arn)
                .send()
                .await
                .map_err(aws::err(format!("read the tags of {lb}")))?;
            Ok(out
                .tag_descriptions()
                .iter()
                .flat_map(|d| d.tags())
                .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                .collect())
        }
    }
}

/// Refuses a load balancer that is not tagged for this service and
/// environment (a config cannot borrow another service's); its tags when
/// it is the service's.
pub async fn check_owner(
    clients: &RegionClients,
    lb: &Elb,
    service: &str,
    environment: &str,
) -> Result<BTreeMap<String, String>, PhaseError> {
    let tags = tags(clients, lb).await?;
    pins::owned(
        |k| tags.get(k).map(String::as_str),
        lb.kind.noun(),
        &lb.name,
        service,
        environment,
        &clients.region,
    )?;
    Ok(tags)
}

/// Sets `tags` (key, value) on the load balancer.
pub async fn add_tags(clients: &RegionClients, lb: &Elb, tags: &[(&str, &str)]) -> Result<(), PhaseError> {
    match lb.kind {
        BalancerKind::Classic => {
            let tags = tags
                .iter()
                .map(|(k, v)| ClassicTag::builder().key(*k).value(*v).build().expect("key is set"))
                .collect();
            clients
                .elb
                .add_tags()
                .load_balancer_names(&lb.name)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(aws::err(format!("tag {lb} with the promoted stack")))?;
        }
        BalancerKind::TargetGroup => {
            let arn = arn(clients, &lb.name).await?;
            let tags = tags
                .iter()
                .map(|(k, v)| V2Tag::builder().key(*k).value(*v).build())
                .collect();
            clients
                .elbv2
                .add_tags()
                .resource_arns(arn)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(aws::err(format!("tag {lb} with the promoted stack")))?;
        }
    }
    Ok(())
}

/// The instances registered with the load balancer (a target group's
/// draining ones, already on their way out, are not), and the DNS name
/// clients reach it by.
pub async fn described(clients: &RegionClients, lb: &Elb) -> Result<(Vec<String>, Option<String>), PhaseError> {
    match lb.kind {
        BalancerKind::Classic => {
            let out = clients
                .elb
                .describe_load_balancers()
                .load_balancer_names(&lb.name)
                .send()
                .await
                .map_err(aws::err(format!("describe {lb}")))?;
            let descriptions = out.load_balancer_descriptions();
            let registered = descriptions
                .iter()
                .flat_map(|d| d.instances().iter().filter_map(|i| i.instance_id().map(str::to_owned)))
                .collect();
            let dns_name = descriptions.first().and_then(|d| d.dns_name().map(str::to_owned));
            Ok((registered, dns_name))
        }
        BalancerKind::TargetGroup => {
            let group = target_group(clients, &lb.name).await?;
            let arn = group.target_group_arn().unwrap_or_default();
            let registered = target_health(clients, lb, arn, &[])
                .await?
                .into_iter()
                .filter(|h| h.state != "draining")
                .map(|h| h.instance)
                .collect();
            let dns_name = match group.load_balancer_arns().first() {
                Some(lb_arn) => clients
                    .elbv2
                    .describe_load_balancers()
                    .load_balancer_arns(lb_arn)
                    .send()
                    .await
                    .map_err(aws::err(format!("describe the load balancer of {lb}")))?
                    .load_balancers()
                    .first()
                    .and_then(|l| l.dns_name().map(str::to_owned)),
                None => None,
            };
            Ok((registered, dns_name))
        }
    }
}

/// How long the load balancer lets a target taken out finish what it is
/// answering: a classic ELB's connection draining timeout (0 when it does
/// not drain), a target group's deregistration delay (AWS's default 300 s
/// when unset).
pub async fn drain_seconds(clients: &RegionClients, lb: &Elb) -> Result<u32, PhaseError> {
    match lb.kind {
        BalancerKind::Classic => Ok(clients
            .elb
            .describe_load_balancer_attributes()
            .load_balancer_name(&lb.name)
            .send()
            .await
            .map_err(aws::err(format!("describe the attributes of {lb}")))?
            .load_balancer_attributes()
            .and_then(|a| a.connection_draining())
            .filter(|c| c.enabled())
            .map_or(0, |c| u32::try_from(c.timeout().unwrap_or(300)).unwrap_or(0))),
        BalancerKind::TargetGroup => {
            let group = target_group(clients, &lb.name).await?;
            let out = clients
                .elbv2
                .describe_target_group_attributes()
                .target_group_arn(group.target_group_arn().unwrap_or_default())
                .send()
                .await
                .map_err(aws::err(format!("describe the attributes of {lb}")))?;
            Ok(out
                .attributes()
                .iter()
                .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
                .and_then(|a| a.value()?.parse().ok())
                .unwrap_or(300))
        }
    }
}

/// The instances registered with the load balancer.
pub async fn registered(clients: &RegionClients, lb: &Elb) -> Result<Vec<String>, PhaseError> {
    Ok(described(clients, lb).await?.0)
}

/// The health of `instances` at the load balancer; of every registered
/// instance (a target group's draining ones too) when `instances` is empty.
pub async fn health(
    clients: &RegionClients,
    lb: &Elb,
    instances: &[String],
) -> Result<Vec<InstanceHealth>, PhaseError> {
    match lb.kind {
        BalancerKind::Classic => {
            let out = clients
                .elb
                .describe_instance_health()
                .load_balancer_name(&lb.name)
                .set_instances((!instances.is_empty()).then(|| as_instances(instances)))
                .send()
                .await
                .map_err(aws::err(format!("read instance health in {lb}")))?;
            Ok(out
                .instance_states()
                .iter()
                .map(|s| {
                    let state = s.state().unwrap_or("Unknown").to_owned();
                    InstanceHealth {
                        instance: s.instance_id().unwrap_or("?").to_owned(),
                        serving: state == "InService",
                        reason: s.description().filter(|d| *d != "N/A").map(str::to_owned),
                        state,
                    }
                })
                .collect())
        }
        BalancerKind::TargetGroup => {
            let arn = arn(clients, &lb.name).await?;
            target_health(clients, lb, &arn, instances).await
        }
    }
}

async fn target_health(
    clients: &RegionClients,
    lb: &Elb,
    arn: &str,
    instances: &[String],
) -> Result<Vec<InstanceHealth>, PhaseError> {
    let out = clients
        .elbv2
        .describe_target_health()
        .target_group_arn(arn)
        .set_targets((!instances.is_empty()).then(|| as_targets(instances)))
        .send()
        .await
        .map_err(aws::err(format!("read target health in {lb}")))?;
    Ok(out
        .target_health_descriptions()
        .iter()
        .map(|d| {
            let health = d.target_health();
            let state = health
                .and_then(|h| h.state())
                .map_or("unknown", |s| s.as_str())
                .to_owned();
            let reason = health.and_then(|h| match (h.reason(), h.description()) {
                (Some(r), Some(d)) => Some(format!("{}: {d}", r.as_str())),
                (Some(r), None) => Some(r.as_str().to_owned()),
                (None, d) => d.map(str::to_owned),
            });
            InstanceHealth {
                instance: d.target().and_then(|t| t.id()).unwrap_or_default().to_owned(),
                serving: state == "healthy",
                state,
                reason,
            }
        })
        .collect())
}

/// Registers instances one by one (canaries) with the load balancer.
pub async fn register(clients: &RegionClients, lb: &Elb, instances: &[String]) -> Result<(), PhaseError> {
    match lb.kind {
        BalancerKind::Classic => {
            clients
                .elb
                .register_instances_with_load_balancer()
                .load_balancer_name(&lb.name)
                .set_instances(Some(as_instances(instances)))
                .send()
                .await
                .map_err(aws::err(format!("register {} with {lb}", instances.join(", "))))?;
        }
        BalancerKind::TargetGroup => {
            let arn = arn(clients, &lb.name).await?;
            clients
                .elbv2
                .register_targets()
                .target_group_arn(arn)
                .set_targets(Some(as_targets(instances)))
                .send()
                .await
                .map_err(aws::err(format!("register {} with {lb}", instances.join(", "))))?;
        }
    }
    Ok(())
}

/// Takes instances out of the load balancer (a target group drains them
/// for its deregistration delay; a classic ELB with connection draining
/// for its timeout).
pub async fn deregister(clients: &RegionClients, lb: &Elb, instances: &[String], why: &str) -> Result<(), PhaseError> {
    if instances.is_empty() {
        return Ok(());
    }
    match lb.kind {
        BalancerKind::Classic => {
            clients
                .elb
                .deregister_instances_from_load_balancer()
                .load_balancer_name(&lb.name)
                .set_instances(Some(as_instances(instances)))
                .send()
                .await
                .map_err(aws::err(format!("take {why} out of {lb}")))?;
        }
        BalancerKind::TargetGroup => {
            let arn = arn(clients, &lb.name).await?;
            clients
                .elbv2
                .deregister_targets()
                .target_group_arn(arn)
                .set_targets(Some(as_targets(instances)))
                .send()
                .await
                .map_err(aws::err(format!("take {why} out of {lb}")))?;
        }
    }
    Ok(())
}

/// Attaches `groups` to (or detaches them from) every load balancer of
/// `lbs`: classic ELBs by name, target groups by ARN. Attaching is what
/// makes an instance Auto Scaling launches later register itself.
pub async fn set_attached(
    clients: &RegionClients,
    lbs: &[Elb],
    groups: &[String],
    attach: bool,
) -> Result<(), PhaseError> {
    let classic: Vec<String> = lbs
        .iter()
        .filter(|l| l.kind.is_classic())
        .map(|l| l.name.clone())
        .collect();
    let mut target_groups = Vec::new();
    for lb in lbs.iter().filter(|l| !l.kind.is_classic()) {
        target_groups.push(arn(clients, &lb.name).await?);
    }
    let named = |what: &[Elb]| what.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ");
    for g in groups {
        let verb = if attach { "attach" } else { "detach" };
        let what = format!("{verb} {g} {} {}", if attach { "to" } else { "from" }, named(lbs));
        // The four calls differ in operation and list only; their builders
        // are distinct types.
        macro_rules! call {
            ($op:ident, $list:ident, $items:expr) => {
                clients
                    .autoscaling
                    .$op()
                    .auto_scaling_group_name(g)
                    .$list(Some($items.clone()))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws::err(what.clone()))?
            };
        }
        match (attach, classic.is_empty()) {
            (_, true) => {}
            (true, false) => call!(attach_load_balancers, set_load_balancer_names, classic),
            (false, false) => call!(detach_load_balancers, set_load_balancer_names, classic),
        }
        match (attach, target_groups.is_empty()) {
            (_, true) => {}
            (true, false) => call!(attach_load_balancer_target_groups, set_target_group_arns, target_groups),
            (false, false) => call!(detach_load_balancer_target_groups, set_target_group_arns, target_groups),
        }
    }
    Ok(())
}

/// The security groups of the load balancers in front of `lbs`, which the
/// instances let in: a classic ELB's own, and those of each ALB (or NLB
/// with security groups) a target group is behind.
pub async fn security_groups(clients: &RegionClients, lbs: &[Elb]) -> Result<Vec<String>, PhaseError> {
    let mut groups = Vec::new();
    let classic: Vec<String> = lbs
        .iter()
        .filter(|l| l.kind.is_classic())
        .map(|l| l.name.clone())
        .collect();
    if !classic.is_empty() {
        let out = clients
            .elb
            .describe_load_balancers()
            .set_load_balancer_names(Some(classic.clone()))
            .send()
            .await
            .map_err(|e| match aws::classify("describe the load balancers", e) {
                PhaseError::Aws(m) if m.contains("LoadBalancerNotFound") => PhaseError::Invalid(format!(
                    "{m}: create the load balancer(s) {} in {} or fix `elb`/`elbs` in .porter/config",
                    classic.join(", "),
                    clients.region
                )),
                other => other,
            })?;
        groups.extend(
            out.load_balancer_descriptions()
                .iter()
                .flat_map(|lb| lb.security_groups().iter().cloned()),
        );
    }
    for lb in lbs.iter().filter(|l| !l.kind.is_classic()) {
        let group = target_group(clients, &lb.name).await?;
        if group.load_balancer_arns().is_empty() {
            continue;
        }
        let out = clients
            .elbv2
            .describe_load_balancers()
            .set_load_balancer_arns(Some(group.load_balancer_arns().to_vec()))
            .send()
            .await
            .map_err(aws::err(format!("describe the load balancers of {lb}")))?;
        groups.extend(
            out.load_balancers()
                .iter()
                .flat_map(|l| l.security_groups().iter().cloned()),
        );
    }
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// The classic ELB API's form of a list of instance ids.
pub fn as_instances(ids: &[String]) -> Vec<Instance> {
    ids.iter()
        .map(|id| Instance::builder().instance_id(id).build())
        .collect()
}

/// The elbv2 API's form: instance targets on the group's own port.
fn as_targets(ids: &[String]) -> Vec<TargetDescription> {
    ids.iter()
        .map(|id| TargetDescription::builder().id(id).build())
        .collect()
}
