//! `porter status`: what is deployed where, read from the account itself
//! (the load balancers' tags and health, the service's stacks, the deploy
//! lease) with the caller's own credentials, read only.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use porter_core::aws::Aws;
use porter_core::config::{BalancerKind, Elb, Environment};
use porter_core::lease::{self, when, Holder};
use porter_core::promote::{PREVIOUS_NAME_TAG, PROMOTED_NAME_TAG};

use crate::history::Entry;

#[derive(Debug, Clone, Default)]
pub struct Status {
    pub service: String,
    pub environment: String,
    pub regions: Vec<RegionStatus>,
    pub lease: Option<Holder>,
    /// The lease holder's progress, from its history: how far it has come
    /// (phases per region, a bake's time left) and its last step.
    pub running: Option<Running>,
    pub recent: Vec<Entry>,
}

/// Where a running deploy stands.
#[derive(Debug, Clone, Default)]
pub struct Running {
    pub summary: String,
    pub percent: u8,
    pub last: Option<String>,
}

impl Running {
    /// From a running execution's progress so far.
    pub fn of(progress: &[porter_core::execution::Progress]) -> Running {
        let (summary, percent) = porter_core::execution::summary(progress);
        Running {
            summary,
            percent,
            last: progress.last().map(porter_core::execution::Progress::line),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RegionStatus {
    pub region: String,
    /// The stack the load balancers' tag names as serving, and the one it
    /// replaced (the rollback target).
    pub promoted: Option<String>,
    pub previous: Option<String>,
    pub elbs: Vec<ElbHealth>,
    /// The service's stacks in the region: name, status.
    pub stacks: Vec<(String, String)>,
    /// What could not be read, in a line.
    pub problem: Option<String>,
    /// What serves, but not as well as it should (an ELB that does not
    /// drain connections).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ElbHealth {
    pub name: String,
    /// "ELB" or "target group".
    pub kind: &'static str,
    /// Instance id and its state (InService, OutOfService; healthy,
    /// initial, draining ...).
    pub instances: Vec<(String, String)>,
    /// How many of them take traffic (InService, healthy).
    pub serving: usize,
}

/// Reads every region of the environment, one after the other (they are
/// few); a region that cannot be read says why instead of failing the
/// whole status.
pub async fn read(aws: &Aws, service: &str, env: &Environment) -> Vec<RegionStatus> {
    let mut out = Vec::with_capacity(env.regions.len());
    for r in &env.regions {
        out.push(match region(aws, service, &env.name, &r.name, &r.elbs).await {
            Ok(s) => s,
            Err(e) => RegionStatus {
                region: r.name.clone(),
                problem: Some(format!("{e:#}")),
                ..Default::default()
            },
        });
    }
    out
}

async fn region(aws: &Aws, service: &str, environment: &str, region: &str, elbs: &[Elb]) -> Result<RegionStatus> {
    let clients = aws.own_region(region);
    let mut status = RegionStatus {
        region: region.to_owned(),
        ..Default::default()
    };
    for elb in elbs {
        let tags = porter_core::balancer::tags(&clients, elb)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let named = |k: &str| tags.get(k).filter(|v| !v.is_empty()).cloned();
        if status.promoted.is_none() {
            status.promoted = named(PROMOTED_NAME_TAG);
            status.previous = named(PREVIOUS_NAME_TAG);
        }
        let health = porter_core::balancer::health(&clients, elb, &[])
            .await
            .map_err(|e| anyhow!("read the health of {elb} in {region}: {e}"))?;
        // A load balancer that does not drain (one whose attributes cannot
        // be read is not flagged): a classic ELB without connection
        // draining, a target group with no deregistration delay.
        if porter_core::balancer::drain_seconds(&clients, elb)
            .await
            .is_ok_and(|s| s == 0)
        {
            let (what, fix) = match elb.kind {
                BalancerKind::Classic => (
                    "connections",
                    "turn connection draining on (ModifyLoadBalancerAttributes, ConnectionDraining)",
                ),
                BalancerKind::TargetGroup => (
                    "(its deregistration delay is 0)",
                    "set deregistration_delay.timeout_seconds (ModifyTargetGroupAttributes)",
                ),
            };
            status.warnings.push(format!(
                "{elb} does not drain {what}: a cutover cuts its in-flight requests; {fix}"
            ));
        }
        status.elbs.push(ElbHealth {
            name: elb.name.clone(),
            kind: match elb.kind {
                BalancerKind::Classic => "ELB",
                BalancerKind::TargetGroup => "target group",
            },
            serving: health.iter().filter(|h| h.serving).count(),
            instances: health.into_iter().map(|h| (h.instance, h.state)).collect(),
        });
    }
    let mut stacks = porter_core::prune::service_stacks(&clients, service, environment)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    stacks.sort_by_key(|s| std::cmp::Reverse(s.created));
    status.stacks = stacks
        .into_iter()
        .filter(|s| s.status != "DELETE_COMPLETE")
        .map(|s| (s.stack_name, s.status))
        .collect();
    Ok(status)
}

/// Who holds the deploy lease of the service and environment.
pub async fn lease_holder(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    service: &str,
    environment: &str,
) -> Result<Option<Holder>> {
    lease::read(ddb, table, &lease::lease_key(service, environment))
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// A release's version from its stack's name (`SERVICE-ENV-VERSION`).
pub fn version_of_stack<'a>(service: &str, environment: &str, stack: &'a str) -> Option<&'a str> {
    stack.strip_prefix(&porter_core::template::stack_name(service, environment, ""))
}

/// What `porter rollback` without `--to` goes back to: the release every
/// region's load balancer names as the one the live release replaced.
pub fn rollback_version(status: &Status) -> Result<String> {
    let mut found: Vec<(String, Option<&str>)> = Vec::new();
    for r in &status.regions {
        if let Some(p) = &r.problem {
            bail!("cannot read {}: {p}", r.region);
        }
        let version = r
            .previous
            .as_deref()
            .and_then(|s| version_of_stack(&status.service, &status.environment, s));
        found.push((r.region.clone(), version));
    }
    let versions: std::collections::BTreeSet<Option<&str>> = found.iter().map(|(_, v)| *v).collect();
    match versions.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(v)] => Ok(v.to_string()),
        [None] => bail!(
            "no region of {} has a release to roll back to (nothing was deployed before the live release); name one with --to VERSION (see `porter history`)",
            status.environment
        ),
        _ => {
            let each: Vec<String> = found
                .iter()
                .map(|(r, v)| format!("{r}: {}", v.unwrap_or("none")))
                .collect();
            bail!(
                "the regions of {} would roll back to different releases ({}); name one with --to VERSION",
                status.environment,
                each.join(", ")
            )
        }
    }
}

impl Status {
    /// The status as a person reads it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{} in {}", self.service, self.environment);
        let version = |stack: &Option<String>| {
            stack
                .as_deref()
                .map(|n| {
                    version_of_stack(&self.service, &self.environment, n)
                        .map(|v| format!("release {v} ({n})"))
                        .unwrap_or_else(|| n.to_owned())
                })
                .unwrap_or_else(|| "nothing".into())
        };
        for r in &self.regions {
            if let Some(p) = &r.problem {
                let _ = writeln!(s, "  {:<10} cannot be read: {p}", r.region);
                continue;
            }
            let _ = writeln!(s, "  {:<10} serving   {}", r.region, version(&r.promoted));
            for e in &r.elbs {
                let list: Vec<String> = e.instances.iter().map(|(i, st)| format!("{i} {st}")).collect();
                let _ = writeln!(
                    s,
                    "  {:<10} {} {}: {}/{} {}{}",
                    "",
                    e.kind,
                    e.name,
                    e.serving,
                    e.instances.len(),
                    if e.kind == "ELB" { "InService" } else { "healthy" },
                    if list.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", list.join(", "))
                    }
                );
            }
            for w in &r.warnings {
                let _ = writeln!(s, "  {:<10} warning   {w}", "");
            }
            let _ = writeln!(s, "  {:<10} rollback  {}", "", version(&r.previous));
            let others: Vec<String> = r
                .stacks
                .iter()
                .filter(|(n, _)| Some(n) != r.promoted.as_ref() && Some(n) != r.previous.as_ref())
                .map(|(n, st)| format!("{n} {st}"))
                .collect();
            if !others.is_empty() {
                let _ = writeln!(s, "  {:<10} also      {}", "", others.join(", "));
            }
        }
        match &self.lease {
            Some(h) => {
                let _ = writeln!(
                    s,
                    "deploy lease: held by {} (release {}) since {}, until {} at the latest",
                    h.execution,
                    h.release,
                    when(h.since),
                    when(h.expires)
                );
                if let Some(r) = &self.running {
                    let _ = writeln!(s, "  running: {} ({}%)", r.summary, r.percent);
                    if let Some(last) = &r.last {
                        let _ = writeln!(s, "  last step: {}", last.trim());
                    }
                }
            }
            None => {
                let _ = writeln!(s, "deploy lease: free");
            }
        }
        if !self.recent.is_empty() {
            let _ = writeln!(s, "last deploys:");
            for e in &self.recent {
                let _ = writeln!(s, "  {}", e.line());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str, previous: Option<&str>) -> RegionStatus {
        RegionStatus {
            region: name.into(),
            promoted: Some("web-prod-bbbbbbbbbbbb".into()),
            previous: previous.map(str::to_owned),
            ..Default::default()
        }
    }

    fn status(regions: Vec<RegionStatus>) -> Status {
        Status {
            service: "web".into(),
            environment: "prod".into(),
            regions,
            ..Default::default()
        }
    }

    /// A held lease shows where its deploy stands: the summary of its
    /// phases (and a bake's time left) and its last step.
    #[test]
    fn a_running_deploy_says_where_it_stands() {
        use porter_core::execution::Progress;
        let mut s = status(Vec::new());
        s.lease = Some(Holder {
            execution: "arn:aws:states:us-east-1:1:execution:porter-deploy:d1".into(),
            release: "aaaaaaaaaaaa".into(),
            since: 0,
            expires: 3600,
        });
        s.running = Some(Running::of(&[Progress::Waiting {
            phase: porter_core::phase::Phase::Provision,
            wait_seconds: 10,
            progress: "us-west-2: CREATE_IN_PROGRESS".into(),
        }]));
        let text = s.render();
        assert!(text.contains("  running: packing (5%)"), "{text}");
        assert!(
            text.contains("  last step: provision waiting 10s: us-west-2: CREATE_IN_PROGRESS"),
            "{text}"
        );
        s.lease = None;
        assert!(!s.render().contains("running:"), "no lease, no running deploy");
    }

    #[test]
    fn rollback_goes_to_the_release_every_region_replaced_and_refuses_when_they_differ() {
        let same = status(vec![
            region("us-east-1", Some("web-prod-aaaaaaaaaaaa")),
            region("eu-west-1", Some("web-prod-aaaaaaaaaaaa")),
        ]);
        assert_eq!(rollback_version(&same).unwrap(), "aaaaaaaaaaaa");
        let differ = status(vec![
            region("us-east-1", Some("web-prod-aaaaaaaaaaaa")),
            region("eu-west-1", None),
        ]);
        let e = rollback_version(&differ).unwrap_err().to_string();
        assert!(
            e.contains("us-east-1: aaaaaaaaaaaa, eu-west-1: none") && e.contains("--to"),
            "{e}"
        );
        let none = status(vec![region("us-east-1", None)]);
        assert!(rollback_version(&none)
            .unwrap_err()
            .to_string()
            .contains("nothing was deployed before"));
    }
}
