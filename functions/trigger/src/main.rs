//! EventBridge: CodeCommit branch events and the weekly schedule start,
//! create and delete pipelines.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    porter_lambda::run(porter_lambda::Function::Trigger).await
}
