//! The service's hooks between the phases: started as CodeBuild builds
//! and awaited, one resumable step at a time.

// One thread: a Lambda sandbox serves one event at a time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    porter_lambda::run(porter_lambda::HOOKS, "hooks").await
}
