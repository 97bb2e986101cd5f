//! The promote phase as a Lambda: Step Functions states and direct invokes.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    porter_lambda::run(porter_lambda::Function::Phase(porter_lambda::Phase::Promote)).await
}
