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
