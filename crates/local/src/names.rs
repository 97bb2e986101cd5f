//! The local stack's fixed names: its account and region, and what the
//! bootstrap and the deploy state machine create there. A leaf: every
//! other module may use these, and this uses none of them.

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";
/// The pipeline's artifact bucket on the local stack.
pub const ARTIFACT_BUCKET: &str = "porter-local-artifacts";
/// The deploy lease table on the local stack.
pub const LEASE_TABLE: &str = "porter-leases";
/// The SSM parameter that names the machine image in each region of the
/// local stack (moto refuses writes under `/aws/service/`); the bootstrap
/// writes it, and a test changes it to play a patched image's release.
pub const MACHINE_IMAGE_PARAMETER: &str = "/porter/local/machine-image";
/// The image the bootstrap names there at first.
pub const FIRST_MACHINE_IMAGE: &str = "ami-0a1b2c3d4e5f60718";
/// The topic deploy notices go to on the local stack.
pub const NOTIFICATION_TOPIC: &str = "porter-notifications";
/// Where the notify function may post webhooks on the local stack:
/// Slack, and receivers on loopback (a test's).
pub const WEBHOOK_HOSTS: &str = "hooks.slack.com, 127.0.0.1";
/// The deploy state machine's name.
pub const STATE_MACHINE: &str = "porter-deploy";

/// Function ARNs as the local state machine names them.
pub fn function_arn(phase: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:porter-{phase}")
}

pub fn notification_topic_arn() -> String {
    format!("arn:aws:sns:{REGION}:{ACCOUNT}:{NOTIFICATION_TOPIC}")
}

pub fn state_machine_arn() -> String {
    format!("arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STATE_MACHINE}")
}
