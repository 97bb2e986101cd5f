//! The pack phase as a Lambda: Step Functions states and direct invokes.

// One thread: a Lambda sandbox serves one event at a time, and the regions
// a phase works on concurrently are futures, not threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    porter_lambda::run(porter_lambda::PACK, "pack").await
}
