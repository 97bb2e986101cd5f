//! The deploy lease: the state machine takes it before a deploy changes
//! anything and gives it back on every end, so two deploys of one service
//! and environment never run at once.

// One thread: a Lambda sandbox serves one event at a time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    porter_lambda::run(porter_lambda::LEASE, "lease").await
}
