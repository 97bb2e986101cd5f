//! The floor for a Rust Lambda's cold start: `lambda_runtime` answering
//! every event with itself, no AWS client, built with the functions'
//! profile. `make bench` sets every function beside it.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
