//! `lease`: the deploy state machine's front door to the lease protocol
//! ([`porter_core::lease`]): take (or wait for) the lease, give it back.

use porter_core::lease::{
    give, lease_key, next_ask, take, waited_since, Holder, Request, Taken, DEFAULT_SECONDS, LONGEST_WAIT_SECONDS,
};
use porter_core::phase::{PhaseError, Step};
use serde_json::Value;

use crate::{Context, FunctionError};

pub async fn handle(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    let request: Request = serde_json::from_value(event).map_err(|e| FunctionError::BadEvent {
        phase: "lease",
        detail: e.to_string(),
    })?;
    let table = ctx.lease_table.as_deref().ok_or_else(|| {
        PhaseError::Invalid("LEASE_TABLE is not set: the lease function needs the infra's lease table".into())
    })?;
    let ddb = aws_sdk_dynamodb::Client::new(ctx.aws.sdk_config());
    let now = chrono::Utc::now().timestamp();
    let output = match request {
        Request::Take {
            service,
            environment,
            release,
            execution,
            lease_seconds,
            wait,
            started,
        } => {
            let waited = waited_since(started.as_deref(), now);
            let holder = Holder {
                execution,
                release,
                since: now,
                expires: now + lease_seconds.unwrap_or(DEFAULT_SECONDS).min(7 * 24 * 3600) as i64,
            };
            match take(&ddb, ctx.sfn(), table, &lease_key(&service, &environment), holder).await {
                Ok(taken) => serde_json::to_value(Step::<(), _>::Done { output: taken }),
                // Asked to wait: the state machine asks again after a while.
                Err(PhaseError::LeaseHeld(m)) if wait && waited >= LONGEST_WAIT_SECONDS => {
                    return Err(PhaseError::LeaseHeld(format!(
                        "waited {} hours for the deploy lease, the most a deploy waits: {m}",
                        waited / 3600
                    ))
                    .into())
                }
                Err(PhaseError::LeaseHeld(m)) if wait => serde_json::to_value(Step::<(), Taken>::Pending {
                    state: (),
                    wait_seconds: next_ask(waited),
                    progress: format!("waiting for the deploy lease: {m}"),
                    percent: 0,
                }),
                Err(e) => return Err(e.into()),
            }
        }
        Request::Give {
            service,
            environment,
            execution,
        } => {
            let given = give(&ddb, table, &lease_key(&service, &environment), &execution).await?;
            serde_json::to_value(Step::<(), _>::Done { output: given })
        }
    };
    Ok(output.expect("lease answers serialize"))
}
