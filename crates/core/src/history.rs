//! A deploy execution's history, read once for every front door: the
//! `pipeline` action's progress, `porter deploy`'s lines, `status` and
//! `history` all page it here and read it through [`crate::execution`].

use aws_sdk_sfn::types::HistoryEvent;

use crate::aws;
use crate::execution::Progress;
use crate::phase::PhaseError;

/// Every event of an execution, oldest first.
pub async fn events(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<Vec<HistoryEvent>, PhaseError> {
    let mut events = Vec::new();
    let mut pages = sfn
        .get_execution_history()
        .execution_arn(arn)
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws::err(format!("read the history of {arn}")))?;
        events.extend(page.events().iter().cloned());
    }
    Ok(events)
}

/// What the execution's finished states say so far.
pub async fn progress(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<Vec<Progress>, PhaseError> {
    Ok(events(sfn, arn).await?.iter().flat_map(exited).collect())
}

/// A history event's progress, if it is a state that finished: a line per
/// region a phase call finished.
pub fn exited(e: &HistoryEvent) -> Vec<Progress> {
    match e.state_exited_event_details() {
        Some(x) => Progress::read(x.name(), x.output().unwrap_or_default()),
        None => Vec::new(),
    }
}

/// A state was entered: one state transition.
pub fn entered(e: &HistoryEvent) -> bool {
    e.r#type().as_str().ends_with("StateEntered")
}

/// A Lambda invocation scheduled by a Task state (the `lambda:invoke`
/// integration), each retry included.
pub fn invoked(e: &HistoryEvent) -> bool {
    e.r#type().as_str() == "TaskScheduled"
        && e.task_scheduled_event_details()
            .is_some_and(|d| d.resource_type() == "lambda")
}

/// The hook builds an execution left running: those of its last hooks
/// step, when that step last said it was pending. A stopped execution
/// resumes no step to see them end, so an abort stops them.
pub fn running_hook_builds(events: &[HistoryEvent]) -> Vec<String> {
    let Some(last) = events
        .iter()
        .rev()
        .filter_map(HistoryEvent::state_exited_event_details)
        .find(|x| x.name().starts_with("Hooks"))
    else {
        return Vec::new();
    };
    let output: serde_json::Value = serde_json::from_str(last.output().unwrap_or_default()).unwrap_or_default();
    let result = &output["hooks"]["result"];
    if result["status"] != "pending" {
        return Vec::new();
    }
    result["state"]["builds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["build"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sfn::types::{HistoryEventType, StateExitedEventDetails};

    fn exited(id: i64, name: &str, output: serde_json::Value) -> HistoryEvent {
        HistoryEvent::builder()
            .id(id)
            .r#type(HistoryEventType::TaskStateExited)
            .timestamp(aws_smithy_types::DateTime::from_secs(id))
            .state_exited_event_details(
                StateExitedEventDetails::builder()
                    .name(name)
                    .output(output.to_string())
                    .build()
                    .expect("name is set"),
            )
            .build()
            .expect("id, type and timestamp are set")
    }

    /// Only the last hooks step's builds, and only while it was pending.
    #[test]
    fn running_hook_builds_are_the_last_pending_steps() {
        let pending = |build: &str| serde_json::json!({"hooks": {"result": {"status": "pending", "state": {"next": 1, "builds": [{"hook": "post_promote[0]", "build": build}]}}}});
        let done = serde_json::json!({"hooks": {"result": {"status": "done", "output": {"ran": ["post_pack[0]"]}}}});
        let events = vec![
            exited(1, "HooksAfterPack", pending("hooks:1")),
            exited(2, "HooksAfterPackResume", done.clone()),
            exited(3, "Provision", done.clone()),
        ];
        assert!(running_hook_builds(&events).is_empty());
        let mut events = events;
        events.push(exited(4, "HooksAfterPromote", pending("hooks:2")));
        events.push(exited(5, "HooksAfterPromotePending?", pending("hooks:2")));
        assert_eq!(running_hook_builds(&events), ["hooks:2"]);
        events.push(exited(6, "HooksAfterPromoteResume", done));
        assert!(running_hook_builds(&events).is_empty());
        assert!(running_hook_builds(&[]).is_empty());
    }
}
