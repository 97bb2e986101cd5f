//! The whole deploy as one CodePipeline action: starts the deploy state
//! machine and reports its progress and result to the job.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    porter_lambda::run(porter_lambda::Function::Pipeline).await
}
