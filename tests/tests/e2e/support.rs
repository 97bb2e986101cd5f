//! What the end-to-end tests ask the local stack's AWS: its clients, an
//! execution's history, the deploy lease, what each load balancer serves.

use porter_local::stack::{LocalStack, REGION};

/// The SDK config of the local stack's moto, in its home region.
pub(crate) async fn sdk(local: &LocalStack) -> aws_config::SdkConfig {
    sdk_in(local, REGION).await
}

/// The SDK config of the local stack's moto, in `region`.
pub(crate) async fn sdk_in(local: &LocalStack, region: &str) -> aws_config::SdkConfig {
    porter_local::moto::sdk_config(&local.moto.endpoint(), region).await
}

/// The (first thousand) events of execution `arn`.
pub(crate) async fn history(sfn: &aws_sdk_sfn::Client, arn: &str) -> Vec<aws_sdk_sfn::types::HistoryEvent> {
    sfn.get_execution_history()
        .execution_arn(arn)
        .max_results(1000)
        .send()
        .await
        .unwrap()
        .events()
        .to_vec()
}

/// How many times an execution's history shows it entered `state`.
pub(crate) fn entries(events: &[aws_sdk_sfn::types::HistoryEvent], state: &str) -> usize {
    events
        .iter()
        .filter(|e| e.state_entered_event_details().is_some_and(|d| d.name() == state))
        .count()
}

/// Whether an execution's history shows it entered `state`.
pub(crate) fn entered(events: &[aws_sdk_sfn::types::HistoryEvent], state: &str) -> bool {
    entries(events, state) > 0
}

/// A CloudWatch client in `region` of the local stack.
pub(crate) async fn cloudwatch(local: &LocalStack, region: &str) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&sdk_in(local, region).await)
}

/// Sets alarm `name` in `region` to `state`, saying `reason`.
pub(crate) async fn set_alarm(
    local: &LocalStack,
    region: &str,
    name: &str,
    state: aws_sdk_cloudwatch::types::StateValue,
    reason: &str,
) {
    cloudwatch(local, region)
        .await
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason(reason)
        .send()
        .await
        .unwrap();
}

/// The lease item of `service` in staging, if any: (execution, release).
pub(crate) async fn lease(local: &LocalStack, service: &str) -> Option<(String, String)> {
    let out = aws_sdk_dynamodb::Client::new(&sdk(local).await)
        .get_item()
        .table_name(porter_local::stack::LEASE_TABLE)
        .key(
            "lease",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{service}/staging")),
        )
        .send()
        .await
        .unwrap();
    let item = out.item()?;
    let text = |k: &str| item[k].as_s().unwrap().clone();
    Some((text("execution"), text("release")))
}

/// The clients of the deployment role in `region`, as the phases make them.
pub(crate) async fn deployment_clients(
    aws: &porter_core::aws::Aws,
    region: &str,
    session: &str,
) -> porter_core::aws::RegionClients {
    aws.region(region, "arn:aws:iam::123456789012:role/porter-deployment", session, &[])
        .await
        .unwrap()
}

/// Each region's promoted stack (by its ELB's tag) and the instances its
/// ELB holds, for the example `service` deployed to staging.
pub(crate) async fn serving(local: &LocalStack, service: &str) -> Vec<(String, String, Vec<String>)> {
    let aws = porter_core::aws::Aws::unpinned(sdk(local).await);
    let mut out = Vec::new();
    for (region, lb) in example_load_balancers(service) {
        let c = deployment_clients(&aws, region, "serving").await;
        let promoted = porter_core::balancer::tags(&c, &lb)
            .await
            .unwrap()
            .remove(porter_core::promote::PROMOTED_NAME_TAG)
            .unwrap_or_default();
        let mut registered = porter_core::balancer::registered(&c, &lb).await.unwrap();
        registered.sort();
        out.push((region.to_owned(), promoted, registered));
    }
    out
}

/// The example's load balancers, for a copy named `service`: a classic ELB
/// in us-west-2, an ALB's target group in us-east-1.
pub(crate) fn example_load_balancers(service: &str) -> [(&'static str, porter_core::config::Elb); 2] {
    [
        (
            "us-west-2",
            porter_core::config::Elb::classic(format!("{service}-staging-usw2")),
        ),
        (
            "us-east-1",
            porter_core::config::Elb::target_group(format!("{service}-staging-use1")),
        ),
    ]
}

/// Asserts that the example `service`'s load balancers serve as `view`
/// says (see [`serving`]); `what` says what that means.
pub(crate) async fn assert_serving(
    local: &LocalStack,
    service: &str,
    view: &[(String, String, Vec<String>)],
    what: &str,
) {
    assert_eq!(serving(local, service).await, view, "{what}");
}

/// Asserts that no deploy of the example `service` holds the lease;
/// `what` says why none should.
pub(crate) async fn assert_lease_free(local: &LocalStack, service: &str, what: &str) {
    assert!(lease(local, service).await.is_none(), "{what}");
}

/// The status of each stack in `region` whose name starts with `prefix`
/// (a service's release stacks: `SERVICE-ENV-`), by name.
pub(crate) async fn release_stacks(
    local: &LocalStack,
    prefix: &str,
    region: &str,
) -> std::collections::BTreeMap<String, String> {
    // Through the front, as AWS would answer: moto alone calls a stack
    // whose instances failed CREATE_COMPLETE.
    aws_sdk_cloudformation::Client::new(&porter_local::moto::sdk_config(&local.endpoint(), region).await)
        .describe_stacks()
        .send()
        .await
        .unwrap()
        .stacks()
        .iter()
        .filter(|s| s.stack_name().is_some_and(|n| n.starts_with(prefix)))
        .map(|s| {
            (
                s.stack_name().unwrap_or_default().to_owned(),
                s.stack_status().map(|x| x.as_str().to_owned()).unwrap_or_default(),
            )
        })
        .collect()
}
