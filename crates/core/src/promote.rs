//! promote: blue/green cutover at the load balancers, per region: classic
//! ELBs and target groups of ALBs and NLBs alike (see [`crate::balancer`]).
//!
//! The new stack's Auto Scaling groups are attached to every ELB and target
//! group of the region (so instances Auto Scaling replaces later serve
//! too); once all their instances serve (InService at an ELB, healthy in a
//! target group) the previous release's groups are detached, anything else
//! registered comes out (a target group drains it), and each load balancer
//! is tagged with the promoted stack (and the one it replaced, the
//! rollback target prune keeps). If the new instances never become
//! healthy, they come out again and the old release keeps serving.
//! Promoting an older stack is the rollback.

use std::collections::BTreeMap;

use aws_sdk_cloudformation::types::StackStatus;
use serde::{Deserialize, Serialize};

use crate::aws::{self, Aws, RegionClients};
use crate::balancer;
use crate::config::Region;
use crate::phase::{backoff, PhaseError, PhaseResult, Step};
use crate::pins;
use crate::plan;
use crate::target::{each_region, now_epoch, Deployment, Target};

/// The ELB tag that names the promoted stack, read by prune and by
/// instances that reboot (as porter's host daemon did).
pub const PROMOTED_TAG: &str = "porter:promoted-stack";
/// The ELB tag that names the stack the promoted one replaced: the
/// rollback target, which prune keeps.
pub const PREVIOUS_TAG: &str = "porter:previous-stack";
/// The names of those stacks, for people reading the tags.
pub const PROMOTED_NAME_TAG: &str = "porter:promoted-stack-name";
pub const PREVIOUS_NAME_TAG: &str = "porter:previous-stack-name";
/// The rollback target before the last cutover: what an undo of that
/// cutover makes the rollback target again.
pub const EARLIER_TAG: &str = "porter:earlier-stack";
/// The deploy (state machine execution) whose cutover made the promoted
/// stack serve: an undo puts back only what its own deploy changed.
pub const PROMOTED_BY_TAG: &str = "porter:promoted-by";
pub const EARLIER_NAME_TAG: &str = "porter:earlier-stack-name";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromoteInput {
    #[serde(flatten)]
    pub target: Target,
    /// Promote this stack instead of the release's own: the rollback.
    #[serde(default)]
    pub stack_name: Option<String>,
    /// How long new instances may take to become InService (default 600).
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    /// Put back, in each region, what the release replaced: the
    /// all-or-nothing rollback of a rollout that failed after a cutover.
    /// A region the release never reached is left as it is; one it reached
    /// only in part has the release's instances taken out.
    #[serde(default)]
    pub undo: bool,
    /// Only the rollout's canaries: that many of the release's instances
    /// (`rollout.canary_instances`) are registered, one by one, beside the
    /// serving fleet; the ELB tags and the serving release stay as they
    /// are until the full cutover that follows.
    #[serde(default)]
    pub canary: bool,
    /// The deploy this promote is part of (the state machine passes its
    /// execution id): a cutover records it on the ELB, and an undo puts a
    /// region back only if this deploy cut it over. A release deployed
    /// again while it serves, then failed, leaves the region as it was.
    #[serde(default)]
    pub execution: Option<String>,
    #[serde(default)]
    pub state: Option<PromoteState>,
}

pub type PromoteState = BTreeMap<String, Cutover>;

impl PromoteInput {
    /// A plain cutover of `target` (no canary, no undo, no deploy to
    /// record), or with `stack_name` the rollback to that stack: what a
    /// CodePipeline promote action runs.
    pub fn cutover(target: Target, stack_name: Option<String>, state: Option<PromoteState>) -> PromoteInput {
        PromoteInput {
            target,
            stack_name,
            timeout_seconds: None,
            undo: false,
            canary: false,
            execution: None,
            state,
        }
    }
}

/// One region's cutover in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cutover {
    pub stack_id: String,
    pub stack_name: String,
    /// The stack's Auto Scaling groups, attached to every ELB of the region
    /// so that instances Auto Scaling replaces later are registered too.
    #[serde(default)]
    pub groups: Vec<String>,
    pub instances: Vec<String>,
    pub started_at: i64,
    pub checks: u32,
    /// This cutover undoes a release's: the rollback target it had before
    /// that release becomes the rollback target again.
    #[serde(default)]
    pub undo: bool,
    /// `instances` are canaries, registered one by one; `groups` is empty.
    #[serde(default)]
    pub canary: bool,
    #[serde(default)]
    pub done: Option<RegionPromoted>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionPromoted {
    pub stack_id: String,
    pub stack_name: String,
    pub elbs: Vec<ElbState>,
    /// Instances taken out: the previous release.
    pub deregistered: Vec<String>,
    /// The stack was serving already (the same release deployed again, as
    /// a weekly build with nothing new does): nothing changed.
    #[serde(default)]
    pub already_live: bool,
    /// Canaries that serve beside the previous release (a canary step's
    /// answer; the full cutover's has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElbState {
    pub name: String,
    pub dns_name: Option<String>,
    pub in_service: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promoted {
    pub regions: BTreeMap<String, RegionPromoted>,
}

pub async fn run(aws: &Aws, input: PromoteInput) -> PhaseResult<PromoteState, Promoted> {
    let dep = Deployment::load(aws, &input.target).await?;
    // An undo runs for a deploy that may have lost its lease (an abort's
    // clean-up, a failed deploy's Catch): it only ever puts back.
    if let (Some(execution), false) = (input.execution.as_deref(), input.undo) {
        crate::lease::check_fence(aws, &dep.release.service, &dep.release.environment, execution).await?;
    }
    let regions = dep.pinned_regions(aws, &input.target).await?;
    let previous = input.state.clone().unwrap_or_default();
    // A blackout stops a release, never the undo of one.
    if previous.is_empty() && !input.undo {
        dep.check_blackout()?;
    }
    let timeout = input.timeout_seconds.unwrap_or(600);
    let stack_name = input.stack_name.clone().unwrap_or_else(|| dep.stack_name());
    let (dep, previous, stack_name, undo, canary) = (&dep, &previous, &stack_name, input.undo, input.canary);
    let execution = input.execution.as_deref();
    let results = each_region(regions, |region| async move {
        if let Some(c) = previous.get(&region.name) {
            if c.done.is_some() {
                return Ok(c.clone());
            }
        }
        let clients = dep.clients(aws, region, "promote").await?;
        let (cutover, read_now) = match previous.get(&region.name) {
            Some(c) => (c.clone(), None),
            None if undo => match undo_begin(dep, &clients, region, execution).await? {
                Undo::PutBack(stack) => {
                    let (c, read_now) = begin(dep, &clients, region, &stack).await?;
                    (Cutover { undo: true, ..c }, Some(read_now))
                }
                Undo::Untouched(c) => return Ok(*c),
            },
            None if canary => match begin_canary(dep, &clients, region, stack_name).await? {
                Canary::Started(c) => (c, None),
                Canary::None(c) => return Ok(c),
            },
            None => {
                let (c, read_now) = begin(dep, &clients, region, stack_name).await?;
                (c, Some(read_now))
            }
        };
        advance(&clients, region, cutover, read_now, timeout, execution).await
    })
    .await?;

    let total = results.len();
    let finished = results.values().filter(|c| c.done.is_some()).count();
    if finished == total {
        let regions = results
            .into_iter()
            .filter_map(|(r, c)| c.done.map(|d| (r, d)))
            .collect();
        return Ok(Step::Done {
            output: Promoted { regions },
        });
    }
    let waiting: Vec<String> = results
        .iter()
        .filter(|(_, c)| c.done.is_none())
        .map(|(r, c)| format!("{r} ({} instances)", c.instances.len()))
        .collect();
    let wait = results
        .values()
        .filter(|c| c.done.is_none())
        .map(|c| backoff(c.checks.saturating_sub(1)))
        .min()
        .unwrap_or(5);
    Ok(Step::Pending {
        progress: format!(
            "{stack_name}: {finished}/{total} regions cut over; waiting for the new instances to serve in {}",
            waiting.join(", ")
        ),
        percent: (10 + 80 * finished / total.max(1)) as u8,
        state: results,
        wait_seconds: wait,
    })
}

enum Undo {
    /// The release serves here: promote the stack it replaced.
    PutBack(String),
    /// It never got to serve here; anything of it that reached the load
    /// balancers was taken out.
    Untouched(Box<Cutover>),
}

/// An undo that leaves `stack` serving; `taken_out` is what of the
/// release it took out of the load balancers.
fn untouched(stack_id: String, stack_name: String, taken_out: Vec<String>) -> Undo {
    Undo::Untouched(Box::new(Cutover {
        stack_id: stack_id.clone(),
        stack_name: stack_name.clone(),
        groups: Vec::new(),
        instances: Vec::new(),
        started_at: now_epoch(),
        checks: 0,
        undo: true,
        canary: false,
        done: Some(RegionPromoted {
            stack_id,
            stack_name,
            elbs: Vec::new(),
            deregistered: taken_out,
            already_live: true,
            canaries: Vec::new(),
        }),
    }))
}

/// Where the release stands in a region, for an undo.
async fn undo_begin(
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
    execution: Option<&str>,
) -> Result<Undo, PhaseError> {
    let ours = dep.stack_name();
    let mut live = String::new();
    let mut live_id = String::new();
    let mut replaced = None;
    let mut cut_over_by_us = true;
    for elb in &region.elbs {
        let tags = balancer::tags(clients, elb).await?;
        if let Some(execution) = execution {
            cut_over_by_us &= tags.get(PROMOTED_BY_TAG).map(String::as_str) == Some(execution);
        }
        if let Some(name) = tags.get(PROMOTED_NAME_TAG) {
            live = name.clone();
        }
        if let Some(id) = tags.get(PROMOTED_TAG) {
            live_id = id.clone();
        }
        if live == ours {
            replaced = tags.get(PREVIOUS_NAME_TAG).filter(|p| !p.is_empty()).cloned();
        }
    }
    if live == ours && !cut_over_by_us {
        // It served before this deploy began: this deploy changed nothing
        // here to put back.
        return Ok(untouched(live_id, live, Vec::new()));
    }
    if live == ours {
        return match replaced {
            Some(stack) => Ok(Undo::PutBack(stack)),
            None => Err(PhaseError::PromoteFailed {
                region: region.name.clone(),
                reason: format!("{ours} serves and no release served before it: there is nothing to put back"),
            }),
        };
    }
    // Not cut over here, perhaps in part: its groups come off the load
    // balancers and its instances out of them, with any canary of it that
    // died (Auto Scaling no longer lists it; the ELB still does): whatever
    // is registered beside the serving release's own instances.
    let groups = stack_groups(clients, &ours).await.unwrap_or_default();
    let mut instances = group_instances(clients, &groups).await?;
    if let Some(serving) = serving_instances(clients, &live_id).await {
        for elb in &region.elbs {
            instances.extend(
                balancer::registered(clients, elb)
                    .await?
                    .into_iter()
                    .filter(|i| !serving.contains(i)),
            );
        }
        instances.sort();
        instances.dedup();
    }
    let taken_out = take_out(clients, region, &groups, &instances).await?;
    Ok(untouched(String::new(), live, taken_out))
}

/// The instances of the stack that serves (by its ELB tag), or `None` when
/// they cannot be told: then nothing but the release's own is taken out.
async fn serving_instances(clients: &RegionClients, stack_id: &str) -> Option<Vec<String>> {
    if stack_id.is_empty() {
        // Nothing served before this release: all it registered goes.
        return Some(Vec::new());
    }
    stack_instances(clients, stack_id).await.ok().filter(|i| !i.is_empty())
}

/// Takes a release out of the region's ELBs: its groups detached (so
/// Auto Scaling registers no replacement) and those of its instances still
/// registered deregistered. The instances taken out.
async fn take_out(
    clients: &RegionClients,
    region: &Region,
    groups: &[String],
    instances: &[String],
) -> Result<Vec<String>, PhaseError> {
    balancer::set_attached(clients, &region.elbs, groups, false).await?;
    let mut taken_out = Vec::new();
    for elb in &region.elbs {
        let theirs: Vec<String> = balancer::registered(clients, elb)
            .await?
            .into_iter()
            .filter(|i| instances.contains(i))
            .collect();
        balancer::deregister(clients, elb, &theirs, "the release's instances").await?;
        taken_out.extend(theirs);
    }
    Ok(taken_out)
}

/// The stack to promote in a region, checked: this service's, in this
/// environment, complete, with running instances.
struct Found {
    stack_id: String,
    groups: Vec<String>,
    instances: Vec<String>,
    read_now: ReadNow,
}

/// What the call that begins a cutover has just read, so that a cutover
/// which completes in the same call does not read it again: each region of
/// every release would pay two more calls for answers a moment old.
struct ReadNow {
    /// Each ELB's tags (in the order of `region.elbs`), read when its owner
    /// was checked: what served until now.
    elb_tags: Vec<BTreeMap<String, String>>,
}

async fn find(
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
    stack_name: &str,
) -> Result<Found, PhaseError> {
    let (service, environment) = (&dep.release.service, &dep.release.environment);
    let mut elb_tags = Vec::new();
    for elb in &region.elbs {
        elb_tags.push(balancer::check_owner(clients, elb, service, environment).await?);
    }
    let cfn = &clients.cloudformation;
    let out = cfn.describe_stacks().stack_name(stack_name).send().await.map_err(|e| {
        match aws::classify(&format!("describe stack {stack_name}"), e) {
            PhaseError::Aws(m) if m.contains("does not exist") => PhaseError::Invalid(format!(
                "{m}: there is no stack {stack_name} in {}; provision it first (or name an existing stack to roll back to)",
                region.name
            )),
            other => other,
        }
    })?;
    let stack = out
        .stacks()
        .iter()
        .find(|s| s.stack_status() != Some(&StackStatus::DeleteComplete))
        .ok_or_else(|| {
            PhaseError::Invalid(format!(
                "stack {stack_name} in {} was deleted; it cannot be promoted",
                region.name
            ))
        })?;
    // A rollback names its stack: it must be this service's, in this
    // environment, as its tags say (provision sets them).
    let tag = |k: &str| stack.tags().iter().find(|t| t.key() == Some(k)).and_then(|t| t.value());
    pins::owned(tag, "stack", stack_name, service, environment, &region.name)?;
    let status = stack.stack_status().map(|s| s.as_str()).unwrap_or("?");
    if !matches!(status, "CREATE_COMPLETE" | "UPDATE_COMPLETE") {
        return Err(PhaseError::Invalid(format!(
            "stack {stack_name} in {} is {status}; only a complete stack can be promoted",
            region.name
        )));
    }
    let stack_id = stack.stack_id().unwrap_or(stack_name).to_owned();
    let groups = stack_groups(clients, &stack_id).await?;
    let instances = group_instances(clients, &groups).await?;
    if instances.is_empty() && !region.elbs.is_empty() {
        return Err(PhaseError::PromoteFailed {
            region: region.name.clone(),
            reason: format!("stack {stack_name} has no running instances to promote"),
        });
    }
    Ok(Found {
        stack_id,
        groups,
        instances,
        read_now: ReadNow { elb_tags },
    })
}

/// Finds the stack and its groups, and attaches them to every ELB.
async fn begin(
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
    stack_name: &str,
) -> Result<(Cutover, ReadNow), PhaseError> {
    let Found {
        stack_id,
        groups,
        instances,
        read_now,
    } = find(dep, clients, region, stack_name).await?;
    // Attaching (rather than registering instances one by one) is what
    // makes a replacement instance serve: Auto Scaling registers every
    // instance it launches into the group with the group's ELBs.
    balancer::set_attached(clients, &region.elbs, &groups, true).await?;
    let cutover = Cutover {
        stack_id,
        stack_name: stack_name.to_owned(),
        groups,
        instances,
        started_at: now_epoch(),
        checks: 0,
        undo: false,
        canary: false,
        done: None,
    };
    Ok((cutover, read_now))
}

enum Canary {
    Started(Cutover),
    /// No canary here: none asked for, or the release serves already.
    None(Cutover),
}

/// Registers the region's canaries: the first `rollout.canary_instances`
/// of the release's instances, one at a time into every ELB, beside the
/// fleet that serves. Its groups stay detached, so a canary Auto Scaling
/// replaces is not registered: the gate then finds one canary fewer
/// InService and fails, as it should.
async fn begin_canary(
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
    stack_name: &str,
) -> Result<Canary, PhaseError> {
    let wanted = dep.release.rollout.canary_in(&region.name) as usize;
    let found = find(dep, clients, region, stack_name).await?;
    let live = !region.elbs.is_empty()
        && found
            .read_now
            .elb_tags
            .iter()
            .all(|tags| tags.get(PROMOTED_TAG) == Some(&found.stack_id));
    let canaries: Vec<String> = found.instances.iter().take(wanted).cloned().collect();
    let mut cutover = Cutover {
        stack_id: found.stack_id.clone(),
        stack_name: stack_name.to_owned(),
        groups: Vec::new(),
        instances: canaries.clone(),
        started_at: now_epoch(),
        checks: 0,
        undo: false,
        canary: true,
        done: None,
    };
    if canaries.is_empty() || region.elbs.is_empty() || live {
        cutover.done = Some(RegionPromoted {
            stack_id: found.stack_id,
            stack_name: stack_name.to_owned(),
            elbs: Vec::new(),
            deregistered: Vec::new(),
            already_live: live,
            canaries: Vec::new(),
        });
        return Ok(Canary::None(cutover));
    }
    for elb in &region.elbs {
        for id in &canaries {
            balancer::register(clients, elb, std::slice::from_ref(id)).await?;
        }
    }
    tracing::info!(region = %region.name, stack = %stack_name, canaries = ?canaries, "canaries registered");
    Ok(Canary::Started(cutover))
}

/// Checks health; cuts over when every new instance is InService, backs
/// out when the time is up. `read_now`: what this call read as it began
/// the cutover (none when it resumes one).
async fn advance(
    clients: &RegionClients,
    region: &Region,
    mut c: Cutover,
    read_now: Option<ReadNow>,
    timeout: i64,
    execution: Option<&str>,
) -> Result<Cutover, PhaseError> {
    c.checks += 1;
    if !c.groups.is_empty() && read_now.is_none() {
        // Auto Scaling may have replaced an instance since the last check
        // (a call that has just found the groups' instances has them).
        c.instances = group_instances(clients, &c.groups).await?;
    }
    let mut unhealthy = Vec::new();
    for elb in &region.elbs {
        for h in balancer::health(clients, elb, &c.instances).await? {
            if !h.serving {
                unhealthy.push(h.describe(elb));
            }
        }
    }
    if unhealthy.is_empty() && c.canary {
        c.done = Some(RegionPromoted {
            stack_id: c.stack_id.clone(),
            stack_name: c.stack_name.clone(),
            elbs: region
                .elbs
                .iter()
                .map(|e| ElbState {
                    name: e.name.clone(),
                    dns_name: None,
                    in_service: c.instances.clone(),
                })
                .collect(),
            deregistered: Vec::new(),
            already_live: false,
            canaries: c.instances.clone(),
        });
        return Ok(c);
    }
    if unhealthy.is_empty() {
        c.done = Some(finish(clients, region, &c, read_now, execution).await?);
        return Ok(c);
    }
    if now_epoch() - c.started_at >= timeout {
        // Back out: the new instances leave, the old ones never left.
        take_out(clients, region, &c.groups, &c.instances).await?;
        return Err(PhaseError::PromoteFailed {
            region: region.name.clone(),
            reason: format!(
                "the {} of {} were not InService after {timeout}s: {}; they were taken out again and the previous release keeps serving",
                if c.canary { "canary instances" } else { "instances" },
                c.stack_name,
                unhealthy.join("; ")
            ),
        });
    }
    Ok(c)
}

async fn finish(
    clients: &RegionClients,
    region: &Region,
    c: &Cutover,
    read_now: Option<ReadNow>,
    execution: Option<&str>,
) -> Result<RegionPromoted, PhaseError> {
    let mut elbs = Vec::new();
    // Each ELB's tags as they were: what served until now.
    let before = match read_now {
        Some(read) => read.elb_tags,
        None => {
            let mut before = Vec::new();
            for elb in &region.elbs {
                before.push(balancer::tags(clients, elb).await?);
            }
            before
        }
    };
    // The release that served until now: its groups are detached, which
    // takes its instances out and keeps replacements of them out too.
    let already_live = !before.is_empty() && before.iter().all(|t| t.get(PROMOTED_TAG) == Some(&c.stack_id));
    let mut previous: Vec<&String> = before
        .iter()
        .filter_map(|tags| tags.get(PROMOTED_TAG))
        .filter(|id| **id != c.stack_id)
        .collect();
    previous.sort();
    previous.dedup();
    let mut deregistered = Vec::new();
    for id in previous {
        // A stack deleted since (by hand) has no groups left to detach.
        let Ok(groups) = stack_groups(clients, id).await else {
            continue;
        };
        let live = describe_groups(clients, &groups).await?;
        deregistered.extend(live_instances(&live));
        let names: Vec<String> = live
            .iter()
            .filter_map(|g| g.auto_scaling_group_name().map(str::to_owned))
            .collect();
        balancer::set_attached(clients, &region.elbs, &names, false).await?;
    }
    for (elb, before) in region.elbs.iter().zip(&before) {
        let (registered, dns_name) = balancer::described(clients, elb).await?;
        let plan = plan::cutover(&registered, &c.instances);
        balancer::deregister(clients, elb, &plan.deregister, "the previous instances").await?;
        deregistered.extend(plan.deregister);
        // What was live becomes the rollback target (a re-run that finds
        // this stack already promoted keeps the target it had).
        let mut tags = vec![
            (PROMOTED_TAG, c.stack_id.as_str()),
            (PROMOTED_NAME_TAG, c.stack_name.as_str()),
        ];
        let get = |k: &str| before.get(k).map_or("", String::as_str);
        if c.undo {
            // The release undone goes; what was the rollback target before
            // it is again.
            tags.extend([
                (PREVIOUS_TAG, get(EARLIER_TAG)),
                (PREVIOUS_NAME_TAG, get(EARLIER_NAME_TAG)),
                (EARLIER_TAG, ""),
                (EARLIER_NAME_TAG, ""),
            ]);
        } else if let Some(old) = before.get(PROMOTED_TAG).filter(|old| **old != c.stack_id) {
            tags.extend([
                (PREVIOUS_TAG, old.as_str()),
                (PREVIOUS_NAME_TAG, get(PROMOTED_NAME_TAG)),
                (EARLIER_TAG, get(PREVIOUS_TAG)),
                (EARLIER_NAME_TAG, get(PREVIOUS_NAME_TAG)),
            ]);
        }
        // Who cut over: only a cutover that changed what serves says so (a
        // release deployed again while it serves keeps the deploy that
        // made it serve).
        let cut_over = before.get(PROMOTED_TAG) != Some(&c.stack_id) || c.undo;
        if let Some(execution) = execution.filter(|_| cut_over) {
            tags.push((PROMOTED_BY_TAG, execution));
        }
        balancer::add_tags(clients, elb, &tags).await?;
        elbs.push(ElbState {
            name: elb.name.clone(),
            dns_name,
            in_service: c.instances.clone(),
        });
    }
    deregistered.sort();
    deregistered.dedup();
    tracing::info!(region = %region.name, stack = %c.stack_name, "promoted");
    Ok(RegionPromoted {
        stack_id: c.stack_id.clone(),
        stack_name: c.stack_name.clone(),
        elbs,
        already_live: already_live && deregistered.is_empty(),
        deregistered,
        canaries: Vec::new(),
    })
}

/// The running instances of every Auto Scaling group in the stack.
pub async fn stack_instances(clients: &RegionClients, stack_id: &str) -> Result<Vec<String>, PhaseError> {
    let groups = stack_groups(clients, stack_id).await?;
    group_instances(clients, &groups).await
}

/// The names of the stack's Auto Scaling groups.
pub async fn stack_groups(clients: &RegionClients, stack_id: &str) -> Result<Vec<String>, PhaseError> {
    let resources = clients
        .cloudformation
        .describe_stack_resources()
        .stack_name(stack_id)
        .send()
        .await
        .map_err(aws::err(format!("list the resources of {stack_id}")))?;
    Ok(resources
        .stack_resources()
        .iter()
        .filter(|r| r.resource_type() == Some("AWS::AutoScaling::AutoScalingGroup"))
        .filter_map(|r| r.physical_resource_id().map(str::to_owned))
        .collect())
}

pub(crate) async fn describe_groups(
    clients: &RegionClients,
    groups: &[String],
) -> Result<Vec<aws_sdk_autoscaling::types::AutoScalingGroup>, PhaseError> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let out = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .set_auto_scaling_group_names(Some(groups.to_vec()))
        .send()
        .await
        .map_err(aws::err("describe the stack's Auto Scaling groups"))?;
    Ok(out.auto_scaling_groups().to_vec())
}

/// The instances of `groups` that are not on their way out.
pub async fn group_instances(clients: &RegionClients, groups: &[String]) -> Result<Vec<String>, PhaseError> {
    Ok(live_instances(&describe_groups(clients, groups).await?))
}

/// The instances of described groups that are not on their way out, sorted.
fn live_instances(groups: &[aws_sdk_autoscaling::types::AutoScalingGroup]) -> Vec<String> {
    let mut ids: Vec<String> = groups
        .iter()
        .flat_map(|g| g.instances())
        .filter(|i| !matches!(i.lifecycle_state().map(|s| s.as_str()), Some(s) if s.starts_with("Terminat")))
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// What an undo takes out when the serving stack cannot be read, which the
/// local stack cannot make happen: only the release's own instances.
#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
    use aws_sdk_autoscaling::types::{AutoScalingGroup, Instance, LifecycleState};
    use aws_sdk_cloudformation::operation::describe_stack_resources::{
        DescribeStackResourcesError, DescribeStackResourcesOutput,
    };
    use aws_sdk_cloudformation::types::StackResource;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    const STACK: &str = "arn:aws:cloudformation:us-east-1:1:stack/web-prod-v1/1";

    fn group_of(states: &[(&str, LifecycleState)]) -> DescribeAutoScalingGroupsOutput {
        let mut group = AutoScalingGroup::builder()
            .auto_scaling_group_name("web-prod-v1-asg")
            .min_size(0)
            .max_size(2)
            .desired_capacity(2)
            .default_cooldown(300)
            .health_check_type("ELB")
            .availability_zones("us-east-1a")
            .created_time(aws_smithy_types::DateTime::from_secs(0));
        for (id, state) in states {
            let instance = Instance::builder()
                .instance_id(*id)
                .availability_zone("us-east-1a")
                .lifecycle_state(state.clone())
                .health_status("Healthy")
                .protected_from_scale_in(false)
                .build();
            group = group.instances(instance);
        }
        DescribeAutoScalingGroupsOutput::builder()
            .auto_scaling_groups(group.build())
            .build()
    }

    /// A serving stack whose resources cannot be read is not guessed at.
    #[tokio::test]
    async fn an_unreadable_serving_stack_takes_nothing_out() {
        let throttled = mock!(aws_sdk_cloudformation::Client::describe_stack_resources)
            .then_error(|| DescribeStackResourcesError::generic(aws::error_code("Throttling")));
        let mut clients = RegionClients::unconfigured("us-east-1");
        clients.cloudformation = mock_client!(aws_sdk_cloudformation, RuleMode::Sequential, [&throttled]);
        assert_eq!(serving_instances(&clients, STACK).await, None);
        assert_eq!(
            serving_instances(&clients, "").await,
            Some(Vec::new()),
            "nothing served before"
        );
    }

    /// Instances on their way out are not the stack's; a stack with none
    /// left serves nothing that can be told apart.
    #[tokio::test]
    async fn terminating_instances_are_not_the_stacks() {
        let resources = || {
            mock!(aws_sdk_cloudformation::Client::describe_stack_resources).then_output(|| {
                DescribeStackResourcesOutput::builder()
                    .stack_resources(
                        StackResource::builder()
                            .logical_resource_id("Group")
                            .physical_resource_id("web-prod-v1-asg")
                            .resource_type("AWS::AutoScaling::AutoScalingGroup")
                            .timestamp(aws_smithy_types::DateTime::from_secs(0))
                            .resource_status(aws_sdk_cloudformation::types::ResourceStatus::CreateComplete)
                            .build(),
                    )
                    .build()
            })
        };
        let (first, second) = (resources(), resources());
        let mixed = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            group_of(&[
                ("i-2", LifecycleState::InService),
                ("i-1", LifecycleState::Pending),
                ("i-3", LifecycleState::Terminating),
                ("i-4", LifecycleState::TerminatingWait),
            ])
        });
        let leaving = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
            .then_output(|| group_of(&[("i-5", LifecycleState::Terminated)]));
        let mut clients = RegionClients::unconfigured("us-east-1");
        clients.cloudformation = mock_client!(aws_sdk_cloudformation, RuleMode::Sequential, [&first, &second]);
        clients.autoscaling = mock_client!(aws_sdk_autoscaling, RuleMode::Sequential, [&mixed, &leaving]);
        assert_eq!(stack_instances(&clients, STACK).await.unwrap(), ["i-1", "i-2"]);
        assert_eq!(serving_instances(&clients, STACK).await, None);
    }
}
