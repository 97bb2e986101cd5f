//! prune: delete the service's old stacks in each region, oldest first,
//! keeping the newest N unpromoted ones. The promoted stack (from the ELB's
//! tag), the stack it replaced (the rollback target, also from a tag), the
//! release's own stack and any stack still in progress are never touched.

use std::collections::BTreeMap;

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
    #[serde(default)]
    pub state: Option<PruneState>,
}

pub type PruneState = BTreeMap<String, Deleting>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleting {
    /// Stack ids whose deletion was asked for, oldest first.
    pub stacks: Vec<String>,
    pub names: Vec<String>,
    pub kept: Vec<String>,
    /// Of `kept`, the stacks a rollback would go back to.
    #[serde(default)]
    pub rollback: Vec<String>,
    pub checks: u32,
    #[serde(default)]
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionPruned {
    pub deleted: Vec<String>,
    pub kept: Vec<String>,
    /// Of `kept`, the stacks a rollback would go back to.
    #[serde(default)]
    pub rollback: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pruned {
    pub regions: BTreeMap<String, RegionPruned>,
}

pub async fn run(aws: &Aws, input: PruneInput) -> PhaseResult<PruneState, Pruned> {
    let dep = Deployment::load(aws, &input.target).await?;
    let regions = dep.pinned_regions(aws, &input.target).await?;
    let previous = input.state.clone().unwrap_or_default();
    if previous.is_empty() {
        dep.check_blackout()?;
    }
    let (dep, previous, keep) = (&dep, &previous, input.keep as usize);
    let results = each_region(regions, |region| async move {
        if let Some(d) = previous.get(&region.name) {
            if d.done {
                return Ok(d.clone());
            }
        }
        let clients = dep.clients(aws, region, "prune").await?;
        let deleting = match previous.get(&region.name) {
            Some(d) => d.clone(),
            None => begin(dep, &clients, region, keep).await?,
        };
        check(&clients, region, deleting).await
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
    let deleting: usize = results.values().filter(|d| !d.done).map(|d| d.stacks.len()).sum();
    Ok(Step::Pending {
        progress: format!("deleting {deleting} old stacks; {finished}/{total} regions done"),
        percent: (10 + 80 * finished / total.max(1)) as u8,
        state: results,
        wait_seconds: wait,
    })
}

async fn begin(
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
    keep: usize,
) -> Result<Deleting, PhaseError> {
    let mut protected = vec![dep.stack_name()];
    let mut rollback = Vec::new();
    for elb in &region.elbs {
        let mut tags = crate::pins::elb_tags(clients, &elb.name).await?;
        protected.extend(tags.remove(PROMOTED_TAG));
        rollback.extend(tags.remove(PREVIOUS_TAG));
    }
    let stacks = service_stacks(clients, &dep.release.service, &dep.release.environment).await?;
    let plan = plan::prune(&stacks, &protected, &rollback, keep);
    for s in &plan.delete {
        clients
            .cloudformation
            .delete_stack()
            .stack_name(&s.stack_id)
            .send()
            .await
            .map_err(aws::err(format!("delete stack {}", s.stack_name)))?;
        tracing::info!(region = %region.name, stack = %s.stack_name, "deleting");
    }
    Ok(Deleting {
        stacks: plan.delete.iter().map(|s| s.stack_id.clone()).collect(),
        names: plan.delete.iter().map(|s| s.stack_name.clone()).collect(),
        kept: plan.keep.iter().map(|(s, _)| s.stack_name.clone()).collect(),
        rollback: plan
            .keep
            .iter()
            .filter(|(_, why)| *why == plan::ROLLBACK_TARGET)
            .map(|(s, _)| s.stack_name.clone())
            .collect(),
        checks: 0,
        done: false,
    })
}

async fn check(clients: &RegionClients, region: &Region, mut d: Deleting) -> Result<Deleting, PhaseError> {
    d.checks += 1;
    let mut remaining = 0;
    for id in &d.stacks {
        let out = clients
            .cloudformation
            .describe_stacks()
            .stack_name(id)
            .send()
            .await
            .map_err(aws::err(format!("describe stack {id}")))?;
        let Some(stack) = out.stacks().first() else {
            continue;
        };
        match stack.stack_status().map(|s| s.as_str()).unwrap_or("") {
            "DELETE_COMPLETE" => {}
            "DELETE_FAILED" => {
                return Err(PhaseError::PruneFailed {
                    region: region.name.clone(),
                    reason: format!(
                        "stack {} could not be deleted: {}; delete what holds it, then run prune again",
                        stack.stack_name().unwrap_or(id),
                        stack.stack_status_reason().unwrap_or("no reason given")
                    ),
                })
            }
            _ => remaining += 1,
        }
    }
    d.done = remaining == 0;
    Ok(d)
}

/// The stack id the ELB's tag names as promoted.
pub async fn promoted_stack(clients: &RegionClients, elb: &str) -> Result<Option<String>, PhaseError> {
    Ok(crate::pins::elb_tags(clients, elb).await?.remove(PROMOTED_TAG))
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
                stack_id: s.stack_id().unwrap_or_default().to_string(),
                stack_name: s.stack_name().unwrap_or_default().to_string(),
                status: s.stack_status().map(|x| x.as_str().to_string()).unwrap_or_default(),
                created,
            });
        }
    }
    Ok(stacks)
}
