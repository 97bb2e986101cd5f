//! Aborting a deploy: the promote function's undo of everything one
//! execution cut over, for an execution that will not finish.
//!
//! Two events bring it here, and both are handled alike:
//! - `{"abort": {"execution": ARN}}`, from `porter abort` (which invokes the
//!   function): a running execution is stopped first;
//! - Step Functions' "Execution Status Change" of an execution that was
//!   aborted (from the console, `StopExecution`, a pipeline's "Stop and
//!   abandon") or timed out, from an EventBridge rule in the infra: such an
//!   execution runs no Catch, so nothing else would put its regions back.
//!
//! The undo is promote's own (`undo: true` with the execution): in each
//! region it puts back the release the execution replaced, only where the
//! load balancers' `porter:promoted-by` names it, and takes out whatever of
//! its release (canaries, a cutover half done) is registered elsewhere. Then
//! the execution's deploy lease is given back. Nothing is undone when
//! another deploy holds the lease by then (the pipeline function gives a
//! stopped pipeline's lease back at once): that deploy owns the regions.
//! Then the stacks the release made are deleted, where none serves
//! ([`porter_core::prune::delete_release_stacks`]), unless the abort asked
//! to keep them: `{"abort": {"execution": ARN, "keep_stacks": true}}`, or a
//! stop whose error is [`execution::ABORTED_KEEP_STACKS`] (`porter abort --keep-stacks` in AWS,
//! where the rule's event carries nothing but the status), to debug them.

use std::time::Duration;

use porter_core::execution::{self, Progress};
use porter_core::phase::{PhaseError, Step};
use porter_core::promote::{self, PromoteInput};
use porter_core::release::ReleaseRef;
use porter_core::target::Target;
use serde_json::{json, Value};

use crate::{Context, FunctionError};

/// The statuses after which an execution runs no Catch of its own.
const ENDED_UNCAUGHT: &[&str] = &["ABORTED", "TIMED_OUT"];

/// How long one invocation drives the undo: well inside the phase
/// functions' 300 s. A longer undo (instances slow to answer) says so; an
/// abort asked again resumes it, since each region's undo sees what is done.
const UNDO_BUDGET: Duration = Duration::from_secs(240);

/// The longest wait between two calls of the undo.
const UNDO_WAIT_CAP: u64 = 10;

/// Step Functions' own event for an execution's status.
pub fn is_execution_status(event: &Value) -> bool {
    event["source"] == "aws.states" && event["detail-type"] == "Step Functions Execution Status Change"
}

/// `porter abort`'s request.
pub fn is_request(event: &Value) -> bool {
    event.get("abort").is_some_and(Value::is_object)
}

fn bad(detail: String) -> FunctionError {
    FunctionError::BadEvent { phase: "abort", detail }
}

pub async fn handle(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    let asked_to_keep = event["abort"]["keep_stacks"].as_bool().unwrap_or(false);
    let (arn, from_rule) = if is_execution_status(&event) {
        let status = event["detail"]["status"].as_str().unwrap_or_default();
        if !ENDED_UNCAUGHT.contains(&status) {
            return Ok(json!({"ignored": format!(
                "an execution that is {}; only an aborted or timed-out one is undone here (a failed one ran its own Catch)",
                porter_core::aws::clip(status, 40)
            )}));
        }
        (
            event["detail"]["executionArn"].as_str().unwrap_or_default().to_owned(),
            true,
        )
    } else {
        (
            event["abort"]["execution"].as_str().unwrap_or_default().to_owned(),
            false,
        )
    };
    let machine = ctx
        .state_machine_arn
        .as_deref()
        .ok_or_else(|| PhaseError::Invalid("STATE_MACHINE_ARN is not set on the promote function".into()))?;
    // Only executions of this installation's own state machine: the ARN
    // comes from an event or a caller.
    let ours = format!("{}:", machine.replacen(":stateMachine:", ":execution:", 1));
    let name = arn.strip_prefix(&ours).unwrap_or_default();
    if name.is_empty() || name.len() > 80 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
        return Err(bad(format!(
            "abort names an execution of this installation's state machine ({ours}NAME), not `{}`",
            porter_core::aws::clip(&arn, 200)
        )));
    }
    let described = ctx.describe_execution(&arn).await?;
    let status = described.status().as_str().to_owned();
    let mut stopped = false;
    match status.as_str() {
        "RUNNING" if !from_rule => {
            ctx.sfn()
                .stop_execution()
                .execution_arn(&arn)
                .error(if asked_to_keep {
                    execution::ABORTED_KEEP_STACKS
                } else {
                    execution::ABORTED
                })
                .cause("porter abort: the deploy was stopped and what it cut over put back")
                .send()
                .await
                .map_err(porter_core::aws::err(format!("stop execution {arn}")))?;
            stopped = true;
        }
        "RUNNING" => {
            return Err(bad(format!(
                "the event says {arn} ended, and Step Functions says it runs; nothing was undone"
            )))
        }
        "SUCCEEDED" => {
            return Err(PhaseError::Invalid(format!(
                "{arn} succeeded: there is no deploy to abort; `porter rollback` goes back to the release before"
            ))
            .into())
        }
        "FAILED" if !from_rule => {
            return Err(PhaseError::Invalid(format!(
            "{arn} failed and ran its own clean-up (its regions were put back and its lease given); nothing to abort"
        ))
            .into())
        }
        _ => {}
    }
    // What it deployed: pack's output, in its history (none when it ended
    // before pack: then it cut nothing over and took no lease). Read once:
    // how it was stopped is in the same events.
    let events = porter_core::history::events(ctx.sfn(), &arn).await?;
    // Its hooks' builds in CodeBuild go on after a stop: they stop first,
    // so a smoke test does not run on while the regions are put back.
    let hooks_stopped = porter_core::hooks::stop_left_running(&ctx.aws, &events).await;
    if !hooks_stopped.is_empty() {
        tracing::warn!(execution = %arn, builds = ?hooks_stopped, "aborted: its hook builds stopped");
    }
    let Some(release) = events
        .iter()
        .flat_map(porter_core::history::exited)
        .find_map(|p| match p {
            Progress::Packed(r) => Some(r),
            _ => None,
        })
    else {
        return Ok(json!({
            "execution": arn,
            "stopped": stopped,
            "hooks_stopped": hooks_stopped,
            "status": status,
            "undone": {},
            "lease_given": false,
            "note": "it ended before pack: nothing was cut over and no lease was taken",
        }));
    };
    let (service, environment) = (release.service.clone(), release.environment.clone());
    // Another deploy that took the lease since (the pipeline function
    // gives a stopped pipeline's lease back at once) owns the environment
    // now and cuts over every region itself: an undo would race it.
    if let Some(table) = ctx.lease_table.as_deref() {
        let ddb = aws_sdk_dynamodb::Client::new(ctx.aws.sdk_config());
        let key = porter_core::lease::lease_key(&service, &environment);
        if let Some(holder) = porter_core::lease::read(&ddb, table, &key).await? {
            if holder.execution != arn {
                return Ok(json!({
                    "execution": arn,
                    "service": service,
                    "environment": environment,
                    "stopped": stopped,
                    "hooks_stopped": hooks_stopped,
                    "status": status,
                    "undone": {},
                    "lease_given": false,
                    "note": format!("{} holds the lease now and deploys every region itself: nothing was undone", holder.execution),
                }));
            }
        }
    }
    let keep_stacks = asked_to_keep || stopped_to_keep_stacks(described.error(), &events);
    let target = Target {
        release: ReleaseRef::Inline(release),
        region: None,
        regions: Vec::new(),
    };
    let (undone, served_in) = undo(ctx, &arn, &target).await?;
    // Once every region serves what it served before, never while the
    // release may still be registered somewhere.
    // A deletion that cannot be asked for is said, and left to the next
    // deploy's prune: the lease is given back whatever happens here.
    let stacks = if keep_stacks {
        json!("kept, as asked")
    } else {
        // Where the release served, its instances drain before their
        // stacks go.
        match porter_core::prune::delete_release_stacks(&ctx.aws, &target, &served_in).await {
            Ok(each) => json!(each),
            Err(e) => json!(format!("not deleted ({e}); the next deploy's prune deletes them")),
        }
    };
    // Given back last: until then no other deploy acts on the environment.
    // The release is known: no second read of the history for it.
    let lease_given = crate::pipeline_stopped::give_back_lease(ctx, &arn, &service, &environment)
        .await?
        .is_some();
    tracing::warn!(execution = %arn, service = %service, environment = %environment, "aborted: regions put back");
    Ok(json!({
        "execution": arn,
        "service": service,
        "environment": environment,
        "stopped": stopped,
        "hooks_stopped": hooks_stopped,
        "status": if stopped { "ABORTED".to_owned() } else { status },
        "undone": undone,
        "lease_given": lease_given,
        "stacks": stacks,
    }))
}

/// Whether the execution was stopped with [`execution::ABORTED_KEEP_STACKS`]:
/// the error DescribeExecution gives, else its history's ExecutionAborted
/// event's, which records what StopExecution was called with.
fn stopped_to_keep_stacks(described: Option<&str>, events: &[aws_sdk_sfn::types::HistoryEvent]) -> bool {
    described == Some(execution::ABORTED_KEEP_STACKS)
        || events.iter().any(|e| {
            e.execution_aborted_event_details().and_then(|d| d.error()) == Some(execution::ABORTED_KEEP_STACKS)
        })
}

/// Drives promote's undo to its end, within [`UNDO_BUDGET`]: per region,
/// what serves there now, and the regions where the aborted release's
/// instances served until then.
async fn undo(ctx: &Context, arn: &str, target: &Target) -> Result<(Value, Vec<String>), FunctionError> {
    let started = tokio::time::Instant::now();
    let mut state = None;
    loop {
        let input = PromoteInput {
            target: target.clone(),
            stack_name: None,
            timeout_seconds: None,
            undo: true,
            canary: false,
            execution: Some(arn.to_owned()),
            state: state.take(),
        };
        match promote::run(&ctx.aws, input).await? {
            Step::Done { output } => {
                // Where the release's instances served (a cutover, or
                // canaries) until the undo took them out.
                let served_in = output
                    .regions
                    .iter()
                    .filter(|(_, r)| !r.already_live || !r.deregistered.is_empty())
                    .map(|(region, _)| region.clone())
                    .collect();
                let regions: serde_json::Map<String, Value> = output
                    .regions
                    .into_iter()
                    .map(|(region, r)| {
                        let what = if r.already_live {
                            format!("{} serves, as before this deploy", r.stack_name)
                        } else {
                            format!("{} serves again", r.stack_name)
                        };
                        (region, json!(what))
                    })
                    .collect();
                return Ok((Value::Object(regions), served_in));
            }
            Step::Pending {
                state: s,
                wait_seconds,
                progress,
                ..
            } => {
                let wait = Duration::from_secs(u64::from(wait_seconds).clamp(1, UNDO_WAIT_CAP));
                if started.elapsed() + wait > UNDO_BUDGET {
                    return Err(PhaseError::PromoteFailed {
                        region: "(several)".into(),
                        reason: format!(
                            "the undo of {arn} was still going after {} s ({progress}); abort again to resume it",
                            UNDO_BUDGET.as_secs()
                        ),
                    }
                    .into());
                }
                state = Some(s);
                tokio::time::sleep(wait).await;
            }
        }
    }
}
