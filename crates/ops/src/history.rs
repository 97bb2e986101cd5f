//! `porter history`: the deploy state machine's executions for one
//! environment, newest first, each read through the one typed reader
//! (`porter_core::execution`).

use anyhow::Result;
use porter_core::execution::{Intent, Progress, Report};

use crate::follow;
use crate::one_line;

/// At most this many executions are described to find an environment's
/// entries: an installation deploys one service to a few environments.
const SCAN: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub execution: String,
    pub started: String,
    /// RUNNING, SUCCEEDED, FAILED, ABORTED, TIMED_OUT.
    pub status: String,
    pub intent: Intent,
    /// The release deployed (or being deployed), once known.
    pub version: Option<String>,
    /// How it ended, in a line: the regions, or the error and cause.
    pub detail: String,
}

impl Entry {
    pub fn line(&self) -> String {
        let kind = match &self.intent {
            Intent::Deploy { .. } => "deploy",
            Intent::Rollback { .. } => "rollback",
        };
        format!(
            "{}  {:<9} {:<8} {:<12}  {}  ({})",
            self.started,
            self.status,
            kind,
            self.version.as_deref().unwrap_or("-"),
            self.detail,
            self.execution
        )
    }
}

/// The newest `limit` executions of `environment`, newest first.
pub async fn read(sfn: &aws_sdk_sfn::Client, machine: &str, environment: &str, limit: usize) -> Result<Vec<Entry>> {
    let mut listed = Vec::new();
    let mut pages = sfn
        .list_executions()
        .state_machine_arn(machine)
        .max_results(100)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| one_line(&format!("list the executions of {machine}"), e))?;
        listed.extend(page.executions().iter().cloned());
        if listed.len() >= SCAN {
            break;
        }
    }
    listed.sort_by_key(|e| std::cmp::Reverse(e.start_date().secs()));
    let mut entries = Vec::new();
    for item in listed.iter().take(SCAN) {
        let arn = item.execution_arn();
        let d = crate::describe_execution(sfn, arn).await?;
        let Some(intent) = d.input().and_then(Intent::read) else {
            continue;
        };
        if intent.environment() != environment {
            continue;
        }
        let status = d.status().as_str().to_owned();
        let (version, detail) = match status.as_str() {
            "SUCCEEDED" => match Report::parse(d.output().unwrap_or_default()) {
                Ok(r) => (
                    Some(r.release.version.clone()),
                    format!("{} region(s): {}", r.regions.len(), r.release.regions.join(", ")),
                ),
                Err(e) => (None, e),
            },
            "RUNNING" => {
                // Where it is: its phases' regions, and a bake's time left.
                let progress = running_progress(sfn, arn).await;
                let version = progress.iter().find_map(|p| match p {
                    Progress::Packed(r) => Some(r.version.clone()),
                    _ => None,
                });
                let (summary, _) = porter_core::execution::summary(&progress);
                (version, format!("running: {summary}"))
            }
            _ => (
                match &intent {
                    Intent::Rollback { version, .. } => Some(version.clone()),
                    Intent::Deploy { .. } => packed_version(sfn, arn).await,
                },
                porter_core::aws::clip(
                    &format!(
                        "{}: {}",
                        d.error().unwrap_or("no error"),
                        porter_core::execution::readable_cause(d.cause().unwrap_or("no cause given"))
                            .replace('\n', " ")
                    ),
                    200,
                ),
            ),
        };
        entries.push(Entry {
            execution: item.name().to_owned(),
            started: chrono::DateTime::from_timestamp(item.start_date().secs(), 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            status,
            intent,
            version,
            detail,
        });
        if entries.len() >= limit {
            break;
        }
    }
    Ok(entries)
}

/// The version pack made, from the execution's history (before it ends).
async fn packed_version(sfn: &aws_sdk_sfn::Client, arn: &str) -> Option<String> {
    running_progress(sfn, arn).await.into_iter().find_map(|p| match p {
        Progress::Packed(r) => Some(r.version),
        _ => None,
    })
}

/// What an execution's finished states say so far (nothing when its
/// history cannot be read).
async fn running_progress(sfn: &aws_sdk_sfn::Client, arn: &str) -> Vec<Progress> {
    match follow::history(sfn, arn).await {
        Ok(events) => events.iter().flat_map(follow::exited).collect(),
        Err(_) => Vec::new(),
    }
}
