//! The installation deploys run through: what `infra/template.yaml` made,
//! found from its stack's outputs (or, on the local stack, its names).

use anyhow::{anyhow, Result};

use crate::one_line;

/// The stack name `make deploy` gives the installation (infra/samconfig.toml).
pub const DEFAULT_STACK: &str = "porter-serverless";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub state_machine_arn: String,
    pub artifact_bucket: String,
    pub lease_table: String,
    /// The KMS key the artifact bucket requires of uploads.
    pub artifact_key: Option<String>,
}

impl Installation {
    /// Reads the outputs of the installation's stack.
    pub async fn from_stack(cfn: &aws_sdk_cloudformation::Client, stack: &str) -> Result<Installation> {
        let out = cfn.describe_stacks().stack_name(stack).send().await.map_err(|e| {
            one_line(&format!("read the outputs of the porter stack {stack}"), e)
                .context("name the stack `make deploy` created with --stack, or deploy it first")
        })?;
        let s = out
            .stacks()
            .first()
            .ok_or_else(|| anyhow!("there is no stack {stack}; name the porter stack with --stack"))?;
        let output = |key: &str| {
            s.outputs()
                .iter()
                .find(|o| o.output_key() == Some(key))
                .and_then(|o| o.output_value())
                .map(str::to_owned)
                .ok_or_else(|| {
                    anyhow!(
                        "stack {stack} has no output {key}: it is not a porter installation, or one from before {key} existed (deploy infra/template.yaml again)"
                    )
                })
        };
        Ok(Installation {
            state_machine_arn: output("StateMachineArn")?,
            artifact_bucket: output("ArtifactBucketName")?,
            lease_table: output("LeaseTableName")?,
            artifact_key: output("ArtifactKeyArn").ok(),
        })
    }
}
