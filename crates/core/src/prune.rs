//! prune: delete the service's old stacks in each region, oldest first,
//! keeping the newest N unpromoted ones. The promoted stack (from the ELB's
//! tag), the stack it replaced (the rollback target, also from a tag), the
//! release's own stack and any stack still in progress are never touched.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::aws::{self, Aws, RegionClients};
use crate::config::Region;
use crate::phase::{backoff, PhaseError, PhaseResult, Step};
use crate::plan::{self, StackSummary};
use crate::promote::{PREVIOUS_TAG, PROMOTED_TAG};
use crate::target::{each_region, Deployment, Target};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneInput {
    #[serde(flatten)]
    pub target: Target,
    /// How many unpromoted stacks to keep besides the live one and its
    /// rollback target (default 0).
    #[serde(default)]
    pub keep: u32,
    /// The deploy this prune is part of (the state machine passes its
    /// execution ARN): it deletes nothing once that execution no longer
    /// holds the deploy lease (the fence, as provision's and promote's).
    #[serde(default)]
    pub execution: Option<String>,
    #[serde(default)]
    pub state: Option<PruneState>,
}

pub type PruneState = BTreeMap<String, Deleting>;

/// DeleteStack calls one invocation makes in a region at most. A prune of a
/// thousand old stacks spreads over ten invocations, each well inside the
/// function's timeout, and no step carries the thousand ids in its state
/// (a Step Functions payload holds 256 KB).
pub const DELETES_PER_STEP: usize = 100;

/// DeleteStack calls in flight at once in a region: quick, and gentle on
/// CloudFormation's request rate (the SDK retries a throttled call).
const DELETES_AT_ONCE: usize = 4;

/// How many deleted stacks a region's result names; the rest are counted.
pub const NAMES_LISTED: usize = 20;

/// Names, then how many more were not named: "a, b and 998 more".
pub fn named_and_counted(names: &[String], more: usize) -> String {
    let names = names.join(", ");
    match more {
        0 => names,
        n => format!("{names} and {n} more"),
    }
}

/// A region's prune between steps: counts and a few names, never the list
/// of every stack (each step lists the service's stacks again).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deleting {
    /// How many stacks this prune has asked CloudFormation to delete.
    #[serde(default)]
    pub asked: usize,
    /// The first [`NAMES_LISTED`] of them, oldest first.
    pub names: Vec<String>,
    pub kept: Vec<String>,
    /// Of `kept`, the stacks a rollback would go back to.
    #[serde(default)]
    pub rollback: Vec<String>,
    /// Stacks found DELETE_FAILED and asked once more: a second failure
    /// fails the prune, naming the stack and CloudFormation's reason.
    #[serde(default)]
    pub retried: Vec<String>,
    /// Stacks whose instances a target group still drains: deleted once
    /// they have drained, not before (deleting cuts their connections).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<String>,
    pub checks: u32,
    #[serde(default)]
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionPruned {
    /// The first [`NAMES_LISTED`] stacks deleted, oldest first.
    pub deleted: Vec<String>,
    /// How many more were deleted than `deleted` names.
    #[serde(default)]
    pub deleted_more: usize,
    pub kept: Vec<String>,
    /// Of `kept`, the stacks a rollback would go back to.
    #[serde(default)]
    pub rollback: Vec<String>,
}

impl RegionPruned {
    /// Every stack deleted, named or counted.
    pub fn deleted_count(&self) -> usize {
        self.deleted.len() + self.deleted_more
    }

    /// "a, b and 998 more".
    pub fn deleted_line(&self) -> String {
        named_and_counted(&self.deleted, self.deleted_more)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pruned {
    pub regions: BTreeMap<String, RegionPruned>,
}

pub async fn run(aws: &Aws, input: PruneInput) -> PhaseResult<PruneState, Pruned> {
    let dep = Deployment::load(aws, &input.target).await?;
    if let Some(execution) = input.execution.as_deref() {
        crate::lease::check_fence(aws, &dep.release.service, &dep.release.environment, execution).await?;
    }
    let regions = dep.pinned_regions(aws, &input.target).await?;
    let previous = input.state.clone().unwrap_or_default();
    if previous.is_empty() {
        dep.check_blackout()?;
    }
    let (dep, previous, keep) = (&dep, &previous, input.keep as usize);
    let results = each_region(regions, |region| async move {
        let deleting = match previous.get(&region.name) {
            Some(d) if d.done => return Ok(d.clone()),
            Some(d) => d.clone(),
            None => Deleting::default(),
        };
        let clients = dep.clients(aws, region, "prune").await?;
        step(dep, &clients, region, keep, deleting).await
    })
    .await?;

    let total = results.len();
    let finished = results.values().filter(|d| d.done).count();
    if finished == total {
        let regions = results
            .into_iter()
            .map(|(r, d)| {
                (
                    r,
                    RegionPruned {
                        deleted_more: d.asked - d.names.len(),
                        deleted: d.names,
                        kept: d.kept,
                        rollback: d.rollback,
                    },
                )
            })
            .collect();
        return Ok(Step::Done {
            output: Pruned { regions },
        });
    }
    let wait = results
        .values()
        .filter(|d| !d.done)
        .map(|d| backoff(d.checks.saturating_sub(1)))
        .min()
        .unwrap_or(5);
    let asked: usize = results.values().map(|d| d.asked).sum();
    let draining: Vec<&String> = results.values().flat_map(|d| &d.draining).collect();
    let draining = if draining.is_empty() {
        String::new()
    } else {
        format!(
            "; waiting for the targets of {} to drain",
            draining.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )
    };
    Ok(Step::Pending {
        progress: format!("deleting {asked} old stacks; {finished}/{total} regions done{draining}"),
        percent: (10 + 80 * finished / total.max(1)) as u8,
        state: results,
        wait_seconds: wait,
    })
}

/// Deletes the stacks a release made, in every region it reached, that do
/// not serve: what an abort does once its regions are put back. A stack a
/// load balancer names as promoted or as the rollback target (the release
/// served before this deploy, say) is kept. CloudFormation deletes them;
/// this does not wait (a deletion that fails is the next prune's to ask
/// again). Per region, what became of the release's stack.
pub async fn delete_release_stacks(
    aws: &Aws,
    target: &Target,
    served_in: &[String],
) -> Result<BTreeMap<String, String>, PhaseError> {
    let dep = Deployment::load(aws, target).await?;
    let regions = dep.pinned_regions(aws, target).await?;
    let dep = &dep;
    each_region(regions, |region| async move {
        let clients = dep.clients(aws, region, "prune").await?;
        let name = dep.stack_name();
        let mut serving = Vec::new();
        for elb in &region.elbs {
            let mut tags = crate::balancer::tags(&clients, elb).await?;
            serving.extend(tags.remove(PROMOTED_TAG));
            serving.extend(tags.remove(PREVIOUS_TAG));
        }
        let stacks = service_stacks(&clients, &dep.release.service, &dep.release.environment).await?;
        let Some(stack) = stacks.iter().find(|s| s.stack_name == name) else {
            return Ok(format!("{name}: none was made"));
        };
        if serving.contains(&stack.stack_id) || serving.contains(&stack.stack_name) {
            return Ok(format!("{name}: kept, it serves or is the rollback target"));
        }
        if stack.status.starts_with("DELETE_") && stack.status != "DELETE_FAILED" {
            return Ok(format!("{name}: already being deleted"));
        }
        // The release's instances served here until the undo took them
        // out: deleting the stack terminates them, so first they finish
        // what they are answering, as long as the load balancers drain.
        let mut drained = 0;
        if served_in.contains(&region.name) {
            for elb in &region.elbs {
                drained = drained.max(crate::balancer::drain_seconds(&clients, elb).await?);
            }
            drained = drained.min(MOST_DRAIN_WAIT_SECONDS);
            tokio::time::sleep(std::time::Duration::from_secs(u64::from(drained))).await;
        }
        delete(&clients, &region.name, stack).await?;
        Ok(match drained {
            0 => format!("{name}: deleting"),
            n => format!("{name}: deleting, after {n} s for its in-flight requests to drain"),
        })
    })
    .await
}

/// The longest an abort waits for the aborted release's instances to drain
/// before it deletes their stacks: inside the function's five minutes,
/// with the undo before it. A longer drain is cut short (the requests
/// still in flight then are lost, as when AWS's drain ends).
pub const MOST_DRAIN_WAIT_SECONDS: u32 = 120;

/// One step in a region: list the service's stacks, ask for the deletion
/// of up to [`DELETES_PER_STEP`] more of the old ones (oldest first), and
/// be done when none is left to ask for and none is still being deleted.
async fn step(
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
    keep: usize,
    mut d: Deleting,
) -> Result<Deleting, PhaseError> {
    d.checks += 1;
    let mut protected = vec![dep.stack_name()];
    let mut rollback = Vec::new();
    let mut draining = Vec::new();
    for elb in &region.elbs {
        let mut tags = crate::balancer::tags(clients, elb).await?;
        protected.extend(tags.remove(PROMOTED_TAG));
        rollback.extend(tags.remove(PREVIOUS_TAG));
        if !elb.kind.is_classic() {
            draining.extend(
                crate::balancer::health(clients, elb, &[])
                    .await?
                    .into_iter()
                    .filter(|h| h.state == "draining")
                    .map(|h| h.instance),
            );
        }
    }
    let stacks = service_stacks(clients, &dep.release.service, &dep.release.environment).await?;
    // A stack CloudFormation is deleting is waited for, not planned.
    let (being_deleted, settled): (Vec<_>, Vec<_>) = stacks.into_iter().partition(|s| s.status == "DELETE_IN_PROGRESS");
    let plan = plan::prune(&settled, &protected, &rollback, keep);
    d.kept = plan.keep.iter().map(|(s, _)| s.stack_name.clone()).collect();
    d.rollback = plan
        .keep
        .iter()
        .filter(|(_, why)| *why == plan::ROLLBACK_TARGET)
        .map(|(s, _)| s.stack_name.clone())
        .collect();
    if let Some(failed) = plan
        .delete
        .iter()
        .find(|s| s.status == "DELETE_FAILED" && d.retried.contains(&s.stack_id))
    {
        return Err(PhaseError::PruneFailed {
            region: region.name.clone(),
            reason: format!(
                "stack {} could not be deleted: {}; delete what holds it, then run prune again",
                failed.stack_name,
                failure_reason(clients, &failed.stack_id).await
            ),
        });
    }
    // A stack left DELETE_FAILED before this prune began is asked again
    // in its first step; one found later is one this prune asked for.
    let mut old = plan.delete;
    old.sort_by_key(|s| s.status != "DELETE_FAILED");
    let mut batch: Vec<_> = old.into_iter().take(DELETES_PER_STEP).collect();
    // A target group drains a stack's instances for its deregistration
    // delay after the cutover took them out: that stack waits.
    d.draining.clear();
    if !draining.is_empty() {
        let mut ready = Vec::new();
        for s in batch {
            let instances = crate::promote::stack_instances(clients, &s.stack_id)
                .await
                .unwrap_or_default();
            if instances.iter().any(|i| draining.contains(i)) {
                d.draining.push(s.stack_name.clone());
            } else {
                ready.push(s);
            }
        }
        batch = ready;
    }
    let deletes: Vec<_> = batch.iter().map(|s| delete(clients, &region.name, s)).collect();
    let asked: Vec<_> = futures::stream::iter(deletes).buffered(DELETES_AT_ONCE).collect().await;
    for (s, result) in batch.iter().zip(asked) {
        result?;
        if s.status == "DELETE_FAILED" {
            d.retried.push(s.stack_id.clone());
            if d.checks > 1 {
                continue; // counted when this prune first asked for it
            }
        }
        d.asked += 1;
        if d.names.len() < NAMES_LISTED {
            d.names.push(s.stack_name.clone());
        }
    }
    d.done = batch.is_empty() && being_deleted.is_empty() && d.draining.is_empty();
    Ok(d)
}

async fn delete(clients: &RegionClients, region: &str, stack: &StackSummary) -> Result<(), PhaseError> {
    clients
        .cloudformation
        .delete_stack()
        .stack_name(&stack.stack_id)
        .send()
        .await
        .map_err(aws::err(format!("delete stack {}", stack.stack_name)))?;
    tracing::info!(region, stack = %stack.stack_name, "deleting");
    Ok(())
}

/// CloudFormation's reason for a failed deletion, for the error message.
async fn failure_reason(clients: &RegionClients, stack_id: &str) -> String {
    match clients
        .cloudformation
        .describe_stacks()
        .stack_name(stack_id)
        .send()
        .await
    {
        Ok(out) => out
            .stacks()
            .first()
            .and_then(|s| s.stack_status_reason())
            .unwrap_or("no reason given")
            .to_owned(),
        Err(e) => format!("its reason could not be read ({})", aws::describe("describe stack", &e)),
    }
}

/// The stack id the load balancer's tag names as promoted.
pub async fn promoted_stack(clients: &RegionClients, lb: &crate::config::Elb) -> Result<Option<String>, PhaseError> {
    Ok(crate::balancer::tags(clients, lb).await?.remove(PROMOTED_TAG))
}

/// Every live stack porter made for this service and environment.
pub async fn service_stacks(
    clients: &RegionClients,
    service: &str,
    environment: &str,
) -> Result<Vec<StackSummary>, PhaseError> {
    let mut stacks = Vec::new();
    let mut pages = clients.cloudformation.describe_stacks().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws::err("list stacks"))?;
        for s in page.stacks() {
            let tag = |k: &str| s.tags().iter().find(|t| t.key() == Some(k)).and_then(|t| t.value());
            if tag("porter:service") != Some(service) || tag("porter:environment") != Some(environment) {
                continue;
            }
            let created = s
                .creation_time()
                .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                .unwrap_or_default();
            stacks.push(StackSummary {
                stack_id: s.stack_id().unwrap_or_default().to_owned(),
                stack_name: s.stack_name().unwrap_or_default().to_owned(),
                status: s.stack_status().map(|x| x.as_str().to_owned()).unwrap_or_default(),
                created,
            });
        }
    }
    Ok(stacks)
}

/// A stack that will not delete, which the local stack cannot make: moto
/// deletes whatever it is asked to.
#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput;
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::types::{Stack, StackStatus, Tag};
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    const OLD: &str = "arn:aws:cloudformation:us-east-1:1:stack/web-prod-old/1";

    fn deployment() -> (Deployment, Region) {
        let text = "service_name: web\nenvironments:\n- name: prod\n  role_arn: arn:aws:iam::123456789012:role/d\n  regions:\n  - name: us-east-1\n    azs: [{name: us-east-1a}]\n    s3_bucket: web-bucket\n    elb: none\n";
        let config = crate::config::load_str(text, std::path::Path::new("c"), std::path::Path::new("."), &|_| None)
            .deployable()
            .unwrap();
        let region = config.environments[0].regions[0].clone();
        let release = crate::release::Release::sample("web-bucket");
        (Deployment { release, config }, region)
    }

    /// The stack left DELETE_FAILED.
    fn old_stack() -> aws_sdk_cloudformation::types::builders::StackBuilder {
        Stack::builder()
            .stack_id(OLD)
            .stack_name("web-prod-old")
            .stack_status(StackStatus::DeleteFailed)
            .creation_time(aws_smithy_types::DateTime::from_secs(0))
    }

    /// The service's stacks: that one.
    fn listed() -> Rule {
        mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .match_requests(|r| r.stack_name().is_none())
            .then_output(|| {
                let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
                let stack = old_stack()
                    .tags(tag("porter:service", "web"))
                    .tags(tag("porter:environment", "prod"));
                DescribeStacksOutput::builder().stacks(stack.build()).build()
            })
    }

    /// Asked once more, then failed with CloudFormation's own reason and
    /// what to do, naming the stack.
    #[tokio::test]
    async fn a_stack_that_will_not_delete_fails_the_prune() {
        let (dep, region) = deployment();
        let (first, again) = (listed(), listed());
        let deleted = mock!(aws_sdk_cloudformation::Client::delete_stack)
            .match_requests(|r| r.stack_name() == Some(OLD))
            .then_output(|| DeleteStackOutput::builder().build());
        let reason = mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .match_requests(|r| r.stack_name() == Some(OLD))
            .then_output(|| {
                let stack = old_stack().stack_status_reason("sg-1 has a dependent object");
                DescribeStacksOutput::builder().stacks(stack.build()).build()
            });
        let mut clients = RegionClients::unconfigured("us-east-1");
        clients.cloudformation = mock_client!(
            aws_sdk_cloudformation,
            RuleMode::Sequential,
            [&first, &deleted, &again, &reason]
        );
        let d = step(&dep, &clients, &region, 0, Deleting::default()).await.unwrap();
        assert_eq!(
            (d.asked, d.retried.as_slice(), d.done),
            (1, [OLD.to_owned()].as_slice(), false)
        );
        let err = step(&dep, &clients, &region, 0, d).await.unwrap_err();
        assert_eq!(err.error_type(), "PruneFailed");
        assert!(
            err.to_string()
                .contains("stack web-prod-old could not be deleted: sg-1 has a dependent object; delete what holds it"),
            "{err}"
        );
        assert_eq!(deleted.num_calls(), 1, "asked once more, not twice");
    }
}
