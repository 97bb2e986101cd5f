//! Deploys in any account, through its deploy state machine: start one and
//! follow it, find what a rollback goes back to, and read what is deployed
//! where (`porter status`) and what was deployed before (`porter history`).
//! The local stack is one such account; a real one is found from the
//! outputs of the stack `infra/template.yaml` made.

pub mod account;
pub mod follow;
pub mod history;
pub mod status;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// An SDK error as one line: the call, AWS's code and message.
pub fn one_line<E>(what: &str, err: SdkError<E, Response>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    anyhow::anyhow!(porter_core::aws::describe(what, &err))
}

/// One execution as Step Functions describes it, or why not in one line.
pub(crate) async fn describe_execution(
    sfn: &aws_sdk_sfn::Client,
    arn: &str,
) -> anyhow::Result<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput> {
    sfn.describe_execution()
        .execution_arn(arn)
        .send()
        .await
        .map_err(|e| one_line(&format!("describe execution {arn}"), e))
}
