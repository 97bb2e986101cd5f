//! Deploy notices: the state machine tells this function when a deploy
//! starts, passes provision and promote, succeeds or fails, and it tells
//! the SNS topic and the service's Slack webhooks.

// One thread: a Lambda sandbox serves one event at a time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    porter_lambda::run(porter_lambda::NOTIFY, "notify").await
}
