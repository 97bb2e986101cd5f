//! IAM on the local stack: a function's call that its role in
//! `infra/template.yaml` does not allow is refused as AWS refuses it, and
//! a deployment session is held to the deployment role.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::result::{CreateUnhandledError, SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use porter_core::aws::Aws;
use porter_local::callers::access_key;
use porter_local::moto;
use porter_local::stack::{LocalStack, ARTIFACT_BUCKET, LEASE_TABLE, REGION};

/// The service's refusal of a call that must have failed: its error code
/// and message.
fn refusal<T, E, R>(result: Result<T, SdkError<E, R>>) -> (String, String)
where
    T: std::fmt::Debug,
    E: ProvideErrorMetadata + CreateUnhandledError + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let err = result.expect_err("refused").into_service_error();
    (
        err.code().unwrap_or_default().to_owned(),
        err.message().unwrap_or_default().to_owned(),
    )
}

const DEPLOYMENT_ROLE: &str = "arn:aws:iam::123456789012:role/porter-deployment";

/// The AWS a function of the local stack calls with.
async fn as_function(local: &LocalStack, function: &str) -> Aws {
    Aws::unpinned(moto::sdk_config_as(&local.endpoint(), REGION, &access_key(function)).await)
}

/// A call outside a function's role is refused in the service's own shape
/// (S3's XML, DynamoDB's JSON, STS's Query), and a deployment session is
/// held to the deployment role.
#[tokio::test]
async fn call_outside_a_role_is_refused_as_aws_does() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    // An administrator's calls are not checked.
    let admin = Aws::unpinned(moto::sdk_config(&local.endpoint(), REGION).await);
    admin.s3().create_bucket().bucket(ARTIFACT_BUCKET).send().await.unwrap();
    admin
        .s3()
        .put_object()
        .bucket(ARTIFACT_BUCKET)
        .key("elsewhere/by-admin")
        .send()
        .await
        .unwrap();

    // pack writes releases, and nothing else of the artifact bucket (S3).
    let pack = as_function(&local, "pack").await;
    pack.s3()
        .put_object()
        .bucket(ARTIFACT_BUCKET)
        .key("porter-deployment/x")
        .send()
        .await
        .unwrap();
    let (code, message) = refusal(
        pack.s3()
            .put_object()
            .bucket(ARTIFACT_BUCKET)
            .key("elsewhere/x")
            .send()
            .await,
    );
    assert_eq!(code, "AccessDenied", "{message}");
    assert_eq!(
        message,
        "User: arn:aws:sts::123456789012:assumed-role/porter-pack/porter-pack is not authorized to perform: s3:PutObject on resource: arn:aws:s3:::porter-local-artifacts/elsewhere/x because no identity-based policy allows the s3:PutObject action"
    );

    // ... has no right on the lease table (a JSON service) ...
    let (code, message) = refusal(
        aws_sdk_dynamodb::Client::new(pack.sdk_config())
            .get_item()
            .table_name(LEASE_TABLE)
            .key("lease", AttributeValue::S("web/staging".into()))
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException", "{message}");
    assert!(
        message.contains(
            "porter-pack is not authorized to perform: dynamodb:GetItem on resource: arn:aws:dynamodb:us-east-1:123456789012:table/porter-leases"
        ),
        "{message}"
    );

    // ... and never assumes the deployment role (STS, a Query service).
    let tags = [("porter:service", "web"), ("porter:environment", "staging")];
    let refused = match pack
        .region("us-west-2", DEPLOYMENT_ROLE, "porter-pack-web", &tags)
        .await
    {
        Ok(_) => panic!("pack may not assume the deployment role"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("AccessDenied")
            && refused.contains("porter-pack is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/porter-deployment"),
        "{refused}"
    );

    // provision may; its session is held to the deployment role: it reads
    // stacks, and resizes no group.
    let provision = as_function(&local, "provision").await;
    let clients = provision
        .region("us-west-2", DEPLOYMENT_ROLE, "porter-provision-web", &tags)
        .await
        .unwrap();
    clients.cloudformation.describe_stacks().send().await.unwrap();
    let (code, message) = refusal(
        clients
            .autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name("web-staging")
            .desired_capacity(1)
            .send()
            .await,
    );
    assert_eq!(code, "AccessDenied", "{message}");
    assert_eq!(
        message,
        "User: arn:aws:sts::123456789012:assumed-role/porter-deployment/porter-provision-web is not authorized to perform: autoscaling:SetDesiredCapacity on resource: arn:aws:autoscaling:us-west-2:123456789012:autoScalingGroup:*:autoScalingGroupName/web-staging because no identity-based policy allows the autoscaling:SetDesiredCapacity action"
    );
    local.stop().await;
}
