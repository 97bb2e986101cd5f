//! The deploy lease: one deploy per service and environment at a time.
//!
//! The deploy state machine takes the lease right after pack (which only
//! writes to the artifact bucket) and before anything in a region changes,
//! and gives it back on every end it reaches: success, and each failure
//! path. The lease is one DynamoDB item per `SERVICE/ENVIRONMENT`, written
//! with a condition, so two deploys that meet cannot both hold it:
//!
//! - taken when there is none, or when it is this execution's own (a retry);
//! - taken over when the execution holding it has ended (an aborted
//!   execution runs no Catch, so it cannot give the lease back itself): the
//!   next deploy sees that through DescribeExecution and takes the lease
//!   with a condition on the old holder, so two takers still cannot both win.
//!   Its expiry alone never frees it: an execution that still runs (a bake
//!   of many hours) still holds its lease, whatever the expiry said;
//! - otherwise refused at once (`LeaseHeld`), naming the holder's
//!   execution, release and since when. Nothing has changed by then.
//!
//! The `lease` function is this protocol's front door; `porter status`
//! reads the holder through [`read`].

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::aws;
use crate::phase::PhaseError;

/// How long a lease lasts unless given back or taken over: longer than any
/// deploy (the state machine's own waits are bounded well inside it).
pub const DEFAULT_SECONDS: u64 = 6 * 3600;
/// How often a deploy that waits for the lease asks again at first.
pub const WAIT_SECONDS: u32 = 15;
/// The longest a deploy waits between two asks.
pub const LONGEST_ASK_SECONDS: u32 = 600;
/// The longest a deploy waits for the lease in all: past it, it fails
/// with `LeaseHeld` (a pipeline runs again; an execution that waited on
/// would come near its history's limit, [`crate::limits::LEASE_WAIT_EVENTS`]).
pub const LONGEST_WAIT_SECONDS: i64 = 24 * 3600;

/// How long to wait before asking again, `waited` seconds after the deploy
/// started: 15 s at first, then a sixteenth of the time waited so far, at
/// most ten minutes; a day's wait asks about 200 times.
pub fn next_ask(waited: i64) -> u32 {
    u32::try_from((waited / 16).max(0))
        .unwrap_or(u32::MAX)
        .clamp(WAIT_SECONDS, LONGEST_ASK_SECONDS)
}

/// Seconds since `started` (the execution's start, as Step Functions
/// writes it: RFC 3339) at `now`; 0 when it cannot be read.
pub fn waited_since(started: Option<&str>, now: i64) -> i64 {
    started
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map_or(0, |t| (now - t.timestamp()).max(0))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Take {
        service: String,
        environment: String,
        /// The release being deployed, shown to whoever is refused.
        release: String,
        /// This deploy's execution ARN (`$$.Execution.Id`).
        execution: String,
        #[serde(default)]
        lease_seconds: Option<u64>,
        /// Wait while another deploy holds it, instead of failing.
        #[serde(default)]
        wait: bool,
        /// When the execution started (`$$.Execution.StartTime`): how long
        /// it has waited shapes its next wait and ends it after a day.
        #[serde(default)]
        started: Option<String>,
    },
    Give {
        service: String,
        environment: String,
        execution: String,
    },
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub execution: String,
    pub release: String,
    /// Seconds since the epoch.
    pub since: i64,
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taken {
    pub lease: String,
    pub holder: Holder,
    /// The ended execution whose lease this one took over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_over: Option<Holder>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Given {
    pub lease: String,
    /// False when the lease was no longer this execution's (it expired and
    /// another deploy took it): nothing was given back.
    pub given: bool,
}

pub fn lease_key(service: &str, environment: &str) -> String {
    format!("{service}/{environment}")
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// Takes the lease for `holder`, or says who has it.
pub async fn take(
    ddb: &aws_sdk_dynamodb::Client,
    sfn: &aws_sdk_sfn::Client,
    table: &str,
    key: &str,
    holder: Holder,
) -> Result<Taken, PhaseError> {
    let put = |condition: &str, old: Option<&str>| {
        let mut req = ddb
            .put_item()
            .table_name(table)
            .item("lease", s(key))
            .item("execution", s(&holder.execution))
            .item("release", s(&holder.release))
            .item("since", n(holder.since))
            .item("expires", n(holder.expires))
            .condition_expression(condition.to_owned());
        req = match old {
            Some(old) => req.expression_attribute_values(":old", s(old)),
            None => req
                .expression_attribute_values(":me", s(&holder.execution))
                .expression_attribute_names("#k", "lease"),
        };
        req.send()
    };
    // A few rounds: between a refused write and the read of the holder, the
    // holder can give the lease back or be taken over by a third deploy.
    for _ in 0..3 {
        // Never taken on expiry alone: an execution that still runs past its
        // lease's expiry (a long bake) still holds it, or two deploys would
        // act at once. Whether the holder runs decides, below.
        match put("attribute_not_exists(#k) OR execution = :me", None).await {
            Ok(_) => {
                return Ok(Taken {
                    lease: key.to_owned(),
                    holder,
                    took_over: None,
                })
            }
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {}
            Err(e) => return Err(aws::classify(&format!("take the deploy lease {key}"), e)),
        }
        let Some(current) = read(ddb, table, key).await? else {
            continue;
        };
        if is_running(sfn, &current.execution).await? {
            return Err(held(key, &current));
        }
        // The holder ended without giving the lease back (aborted, or its
        // clean-up failed): take it over, provided nobody else just did.
        match put("execution = :old", Some(&current.execution)).await {
            Ok(_) => {
                tracing::warn!(lease = key, ended = %current.execution, "took over the lease of an ended execution");
                return Ok(Taken {
                    lease: key.to_owned(),
                    holder,
                    took_over: Some(current),
                });
            }
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {}
            Err(e) => return Err(aws::classify(&format!("take over the deploy lease {key}"), e)),
        }
    }
    match read(ddb, table, key).await? {
        Some(current) => Err(held(key, &current)),
        None => Err(PhaseError::Retryable(format!(
            "the deploy lease {key} changed hands three times while this deploy tried to take it; retry"
        ))),
    }
}

/// A lease time (seconds since the epoch) as a person reads it.
pub fn when(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

fn held(key: &str, h: &Holder) -> PhaseError {
    PhaseError::LeaseHeld(format!(
        "another deploy of {key} is running: execution {} (release {}) holds the deploy lease since {}, until {} at the latest. Nothing was changed; deploy again when it has finished, or stop that execution first",
        h.execution,
        h.release,
        when(h.since),
        when(h.expires)
    ))
}

/// Who holds the lease `key`, if anyone (`porter status` shows it).
pub async fn read(ddb: &aws_sdk_dynamodb::Client, table: &str, key: &str) -> Result<Option<Holder>, PhaseError> {
    let out = ddb
        .get_item()
        .table_name(table)
        .key("lease", s(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(aws::err(format!("read the deploy lease {key}")))?;
    let Some(item) = out.item() else {
        return Ok(None);
    };
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    Ok(Some(Holder {
        execution: text("execution"),
        release: text("release"),
        since: num("since"),
        expires: num("expires"),
    }))
}

/// Whether the execution holding a lease still runs. One that does not
/// exist (any more, or not in this account) does not.
async fn is_running(sfn: &aws_sdk_sfn::Client, execution: &str) -> Result<bool, PhaseError> {
    match sfn.describe_execution().execution_arn(execution).send().await {
        Ok(out) => Ok(out.status() == &aws_sdk_sfn::types::ExecutionStatus::Running),
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_execution_does_not_exist() || se.is_invalid_arn()) =>
        {
            Ok(false)
        }
        Err(e) => Err(aws::classify(&format!("see whether {execution} still runs"), e)),
    }
}

/// Gives the lease back if `execution` still holds it.
pub async fn give(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    execution: &str,
) -> Result<Given, PhaseError> {
    let out = ddb
        .delete_item()
        .table_name(table)
        .key("lease", s(key))
        .condition_expression("execution = :me")
        .expression_attribute_values(":me", s(execution))
        .send()
        .await;
    match out {
        Ok(_) => Ok(Given {
            lease: key.to_owned(),
            given: true,
        }),
        Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
            tracing::warn!(lease = key, execution, "the lease was no longer this execution's");
            Ok(Given {
                lease: key.to_owned(),
                given: false,
            })
        }
        Err(e) => Err(aws::classify(&format!("give back the deploy lease {key}"), e)),
    }
}

/// The fence: refuses a phase of `execution` when the deploy lease of
/// the service and environment is no longer its own (an abort gave it
/// back, or a later deploy took it over after it expired), so a deploy
/// that lost its lease does nothing more. Only a state machine execution
/// holds a lease: a phase run as a CodePipeline action (its job id) is not
/// fenced, nor a caller without a lease table (the CLI, tests of a phase
/// alone: see [`Aws::with_fence`](crate::aws::Aws::with_fence)).
pub async fn check_fence(aws: &aws::Aws, service: &str, environment: &str, execution: &str) -> Result<(), PhaseError> {
    let Some(table) = aws.fence() else {
        return Ok(());
    };
    if !(execution.starts_with("arn:") && execution.contains(":execution:")) {
        return Ok(());
    }
    let ddb = aws_sdk_dynamodb::Client::new(aws.sdk_config());
    let key = lease_key(service, environment);
    match read(&ddb, table, &key).await? {
        Some(holder) if holder.execution == execution => Ok(()),
        Some(holder) => Err(PhaseError::Invalid(format!(
            "{execution} no longer holds the deploy lease of {key} ({} does): it does nothing more",
            holder.execution
        ))),
        None => Err(PhaseError::Invalid(format!(
            "{execution} no longer holds the deploy lease of {key} (it was given back: the deploy was aborted): it does nothing more"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day's wait for the lease asks about 200 times: inside its share
    /// of the execution's history.
    #[test]
    fn the_wait_for_a_lease_grows_and_stays_inside_the_history() {
        assert_eq!(next_ask(0), WAIT_SECONDS);
        assert_eq!(next_ask(16 * 60), 60);
        assert_eq!(next_ask(20 * 3600), LONGEST_ASK_SECONDS);
        let (mut waited, mut asks) = (0i64, 0u64);
        while waited < LONGEST_WAIT_SECONDS {
            waited += i64::from(next_ask(waited));
            asks += 1;
        }
        assert!(
            asks * crate::limits::EVENTS_PER_LEASE_ASK <= crate::limits::LEASE_WAIT_EVENTS,
            "{asks} asks"
        );
        assert_eq!(waited_since(Some("2026-12-05T10:00:00.000Z"), 1_796_464_800 + 90), 90);
        assert_eq!(waited_since(Some("not a time"), 5), 0);
        assert_eq!(waited_since(None, 5), 0);
    }

    use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
    use aws_sdk_sfn::types::ExecutionStatus;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    // Races between deploys that the local stack cannot time: two writes
    // that land between this deploy's write and its read.

    const KEY: &str = "web/prod";

    fn me() -> Holder {
        Holder {
            execution: "arn:aws:states:r:1:execution:porter-deploy:me".into(),
            release: "v2".into(),
            since: 100,
            expires: 200,
        }
    }

    fn refused_put() -> Rule {
        mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .meta(aws::error_code("ConditionalCheckFailedException"))
                    .build(),
            )
        })
    }

    fn holder_is(execution: &'static str) -> Rule {
        mock!(aws_sdk_dynamodb::Client::get_item).then_output(move || {
            GetItemOutput::builder()
                .item("lease", s(KEY))
                .item("execution", s(execution))
                .item("release", s("v1"))
                .item("since", n(1))
                .item("expires", n(2))
                .build()
        })
    }

    fn status(status: ExecutionStatus) -> Rule {
        mock!(aws_sdk_sfn::Client::describe_execution).then_output(move || {
            DescribeExecutionOutput::builder()
                .execution_arn("arn")
                .state_machine_arn("machine")
                .status(status.clone())
                .start_date(aws_smithy_types::DateTime::from_secs(0))
                .build()
                .expect("required fields set")
        })
    }

    /// The holder ended, but a third deploy took its lease over first: the
    /// take-over write is refused, and the lease is held by that deploy.
    #[tokio::test]
    async fn a_lost_take_over_names_the_winner() {
        let (first, second, third) = (refused_put(), refused_put(), refused_put());
        let (ended, winner) = (holder_is("ended"), holder_is("winner"));
        let ddb = mock_client!(
            aws_sdk_dynamodb,
            RuleMode::Sequential,
            [&first, &ended, &second, &third, &winner]
        );
        let (done, running) = (status(ExecutionStatus::Succeeded), status(ExecutionStatus::Running));
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::Sequential, [&done, &running]);
        let err = take(&ddb, &sfn, "leases", KEY, me()).await.unwrap_err();
        assert_eq!(err.error_type(), "LeaseHeld");
        assert!(err.to_string().contains("execution winner (release v1)"), "{err}");
        assert_eq!((first.num_calls(), second.num_calls(), third.num_calls()), (1, 1, 1));
    }

    /// A holder that gave the lease back between the refused write and the
    /// read: the next round takes it, with nobody taken over.
    #[tokio::test]
    async fn a_lease_given_back_meanwhile_is_taken() {
        let refused = refused_put();
        let gone = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
        let taken = mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| PutItemOutput::builder().build());
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&refused, &gone, &taken]);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::Sequential, Vec::<&Rule>::new());
        let got = take(&ddb, &sfn, "leases", KEY, me()).await.unwrap();
        assert_eq!((got.holder, got.took_over), (me(), None));
    }

    /// A lease that changes hands every round, three times over, is not
    /// fought for longer: the phase retries later.
    #[tokio::test]
    async fn a_lease_changing_hands_is_retried() {
        let mut rules = Vec::new();
        for _ in 0..3 {
            rules.extend([refused_put(), holder_is("ended"), refused_put()]);
        }
        rules.push(mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build()));
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, &rules);
        let ended: Vec<Rule> = (0..3).map(|_| status(ExecutionStatus::Aborted)).collect();
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::Sequential, &ended);
        let err = take(&ddb, &sfn, "leases", KEY, me()).await.unwrap_err();
        assert_eq!(err.error_type(), "Retryable");
        assert!(err.to_string().contains("changed hands three times"), "{err}");
    }

    /// Giving back a lease another deploy holds now changes nothing; a
    /// throttled give-back is retried, never taken as given.
    #[tokio::test]
    async fn a_lease_given_back_only_by_its_holder() {
        let not_mine = mock!(aws_sdk_dynamodb::Client::delete_item).then_error(|| {
            DeleteItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .meta(aws::error_code("ConditionalCheckFailedException"))
                    .build(),
            )
        });
        let throttled = mock!(aws_sdk_dynamodb::Client::delete_item)
            .then_error(|| DeleteItemError::generic(aws::error_code("ThrottlingException")));
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&not_mine, &throttled]);
        let given = give(&ddb, "leases", KEY, "me").await.unwrap();
        assert!(!given.given);
        let err = give(&ddb, "leases", KEY, "me").await.unwrap_err();
        assert_eq!(err.error_type(), "Retryable", "{err}");
    }
}
