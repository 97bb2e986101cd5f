//! The shipped state machine, run by moto's interpreter against the real
//! handlers behind the local Lambda host.

use porter_lambda::Phase;
use porter_local::deploy::{self, Options};
use porter_local::invoke_host::Faults;
use porter_local::stack::LocalStack;

pub(crate) fn example(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service");
    let dest = dir.join(name);
    copy_dir(&src, &dest);
    // Each test deploys its own service so nothing is shared.
    let cfg = std::fs::read_to_string(dest.join(".porter/config")).unwrap();
    std::fs::write(
        dest.join(".porter/config"),
        cfg.replace("service_name: hello", &format!("service_name: {name}"))
            .replace("hello-", &format!("{name}-")),
    )
    .unwrap();
    dest
}

fn copy_dir(src: &std::path::Path, dest: &std::path::Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dest.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

async fn deploy(local: &LocalStack, path: &std::path::Path) -> (deploy::Outcome, String) {
    deploy_waiting(local, path, false).await
}

async fn deploy_waiting(local: &LocalStack, path: &std::path::Path, wait_for_lease: bool) -> (deploy::Outcome, String) {
    let opts = Options {
        path: path.to_path_buf(),
        environment: "staging".into(),
        keep: 0,
        wait_for_lease,
        ..Default::default()
    };
    let mut out = Vec::new();
    let outcome = deploy::run(&local.moto.endpoint(), &opts, &mut out).await.unwrap();
    if outcome.succeeded {
        let problems = deploy::verify(&local.moto.endpoint(), &opts, &outcome).await.unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }
    (outcome, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn two_releases_through_the_state_machine() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smok");
    let (first, log) = deploy(&local, &svc).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);
    assert_eq!(first.regions.len(), 2);
    assert!(
        // 18, however many regions: the pre_pack hooks step (a call and
        // its Choice), pack, the lease (taken, its Choice, given back),
        // the start and end notices, provision and prune (a call for all
        // regions and the Choice after it, each), promote (the waves' Map,
        // the one wave's call, its Choice and its end, then the Choice
        // after the waves), and the end. The Choices after the phases enter
        // none of the optional steps: this service has no hooks and no
        // webhooks.
        first.transitions <= 18,
        "a fast two-region deploy takes 18 transitions, took {}",
        first.transitions
    );
    // 9: pre_pack hooks, pack, the lease taken and given back, the start
    // and end notices, and one call of provision, promote and prune for
    // both regions.
    assert_eq!(first.invocations, 9, "Lambda invocations of a fast two-region deploy");

    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let (second, log) = deploy(&local, &svc).await;
    assert!(second.succeeded, "{:?}\n{log}", second.error);
    for (region, r) in &second.regions {
        assert_ne!(r.stack_name, first.regions[region].stack_name);
        assert!(r.deleted.is_empty(), "{region}: {:?}", r.deleted);
        assert_eq!(
            r.rollback,
            vec![first.regions[region].stack_name.clone()],
            "{region}: release 1 kept as the rollback target"
        );
        assert_eq!(r.in_service.len(), 2);
    }
    assert!(
        log.contains("promote   us-west-2"),
        "progress is streamed per phase and region:\n{log}"
    );
    local.stop().await;
}

#[tokio::test]
async fn a_provision_failure_ends_on_the_catch_path_with_its_reason() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smfail");
    porter_e2e::break_provisioning(
        &svc,
        "  instance_type: t3.micro
",
    );
    let (outcome, log) = deploy(&local, &svc).await;
    assert!(!outcome.succeeded, "{log}");
    let (error, cause) = outcome.error.unwrap();
    assert_eq!(error, "StackFailed");
    assert!(
        cause.contains("provision failed: ") && cause.contains(" in us-"),
        "names the phase and region: {cause}"
    );
    assert!(cause.contains(porter_e2e::MISSING_GROUP), "carries the reason: {cause}");
    assert!(!log.contains("promote "), "nothing was promoted:\n{log}");
    assert!(
        lease(&local, "smfail").await.is_none(),
        "the failed deploy gave the lease back"
    );
    local.stop().await;
}

#[tokio::test]
async fn a_retryable_error_is_retried_and_the_deploy_succeeds() {
    let faults = Faults::default();
    faults.fail_next(Phase::Promote, 1);
    let local = LocalStack::start(porter_local::stack::Options::with_faults(faults))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smretry");
    let (outcome, log) = deploy(&local, &svc).await;
    assert!(outcome.succeeded, "{:?}\n{log}", outcome.error);
    // The history holds the failed attempt that Retry absorbed.
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let history = sfn
        .get_execution_history()
        .execution_arn(&outcome.execution_arn)
        .max_results(1000)
        .send()
        .await
        .unwrap();
    let failed = history
        .events()
        .iter()
        .filter(|e| e.r#type().as_str() == "TaskFailed")
        .count();
    assert_eq!(failed, 1, "exactly the injected failure, then success");
    local.stop().await;
}

/// The lease item of `service` in staging, if any: (execution, release).
pub(crate) async fn lease(local: &LocalStack, service: &str) -> Option<(String, String)> {
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
    let out = aws_sdk_dynamodb::Client::new(&sdk)
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

/// Registered instances per ELB, sampled until `stop`: the fewest seen.
async fn sample_elbs(
    local: &LocalStack,
    elbs: &[(&str, porter_core::config::Elb)],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, usize) {
    let aws = porter_core::aws::Aws::unpinned(
        porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await,
    );
    let mut clients = Vec::new();
    for (region, elb) in elbs {
        let c = aws
            .region(
                region,
                "arn:aws:iam::123456789012:role/porter-deployment",
                "sample",
                &[],
            )
            .await
            .unwrap();
        clients.push((c, elb.clone()));
    }
    let (mut fewest, mut samples) = (usize::MAX, 0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for (c, elb) in &clients {
            let n = porter_core::balancer::registered(c, elb).await.unwrap().len();
            fewest = fewest.min(n);
            samples += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (fewest, samples)
}

#[tokio::test]
async fn two_deploys_at_once_one_proceeds_and_the_elb_never_empties() {
    // The lease holder's provision call (one for both regions) fails twice
    // (retried after 2 s and 4 s), so it holds the lease long enough for
    // the other deploy to meet it.
    let faults = Faults::default();
    let local = LocalStack::start(porter_local::stack::Options::with_faults(faults.clone()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = example(dir.path(), "smlease");
    let (first, log) = deploy(&local, &a).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);

    let b = dir.path().join("smlease-b");
    copy_dir(&a, &b);
    std::fs::write(a.join("index.html"), "release 2a").unwrap();
    std::fs::write(b.join("index.html"), "release 2b").unwrap();
    faults.fail_next(Phase::Provision, 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The example's us-west-2 sits behind a classic ELB, us-east-1 behind
    // an ALB's target group.
    let lbs = [
        ("us-west-2", porter_core::config::Elb::classic("smlease-staging-usw2")),
        (
            "us-east-1",
            porter_core::config::Elb::target_group("smlease-staging-use1"),
        ),
    ];
    let sampler = sample_elbs(&local, &lbs, stop.clone());
    let both = async {
        let both = tokio::join!(deploy(&local, &a), deploy(&local, &b));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        both
    };
    let (((x, xlog), (y, ylog)), (fewest, samples)) = tokio::join!(both, sampler);
    assert_eq!(
        [x.succeeded, y.succeeded].iter().filter(|s| **s).count(),
        1,
        "exactly one proceeds:\n{xlog}\n{ylog}"
    );
    let (won, lost) = if x.succeeded { (&x, &y) } else { (&y, &x) };
    let (error, cause) = lost.error.clone().unwrap();
    assert_eq!(error, "LeaseHeld", "{cause}");
    assert!(
        cause.contains(&won.execution_arn) && cause.contains("holds the deploy lease since"),
        "names the holder: {cause}"
    );
    assert!(
        samples > 10 && fewest > 0,
        "the ELBs never emptied ({samples} samples, fewest {fewest})"
    );
    assert!(
        lease(&local, "smlease").await.is_none(),
        "the winner gave the lease back"
    );
    local.stop().await;
}

#[tokio::test]
async fn a_lease_of_a_running_deploy_refuses_and_one_of_an_ended_deploy_is_taken_over() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smheld");
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
    deploy::ensure_lease_table(&sdk).await.unwrap();
    // Another deploy, still running, holds the lease: an execution of the
    // deploy state machine, as every holder is (the lease function may read
    // no other's), that only waits. The deploys below give the machine its
    // real definition; the holder runs on with the one it started with.
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let sleeper = sfn
        .create_state_machine()
        .name(porter_local::names::STATE_MACHINE)
        .definition(r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": true}}}"#)
        .role_arn("arn:aws:iam::123456789012:role/porter-deploy-states")
        .send()
        .await
        .unwrap();
    let running = sfn
        .start_execution()
        .state_machine_arn(sleeper.state_machine_arn())
        .send()
        .await
        .unwrap()
        .execution_arn()
        .to_owned();
    let now = chrono::Utc::now().timestamp();
    let item = |k: &str, v: String| (k.to_owned(), aws_sdk_dynamodb::types::AttributeValue::S(v));
    aws_sdk_dynamodb::Client::new(&sdk)
        .put_item()
        .table_name(porter_local::stack::LEASE_TABLE)
        .set_item(Some(
            [
                item("lease", "smheld/staging".into()),
                item("execution", running.clone()),
                item("release", "0123456789ab".into()),
            ]
            .into_iter()
            .chain([
                (
                    "since".to_owned(),
                    aws_sdk_dynamodb::types::AttributeValue::N(now.to_string()),
                ),
                (
                    "expires".to_owned(),
                    aws_sdk_dynamodb::types::AttributeValue::N((now + 3600).to_string()),
                ),
            ])
            .collect(),
        ))
        .send()
        .await
        .unwrap();

    let (refused, log) = deploy(&local, &svc).await;
    assert!(!refused.succeeded, "{log}");
    let (error, cause) = refused.error.unwrap();
    assert_eq!(error, "LeaseHeld");
    assert!(cause.contains(&running) && cause.contains("0123456789ab"), "{cause}");
    assert!(!log.contains("provision "), "nothing was provisioned:\n{log}");
    assert_eq!(
        lease(&local, "smheld").await.unwrap().0,
        running,
        "the lease is still the holder's"
    );

    // A deploy asked to wait does; the holder is aborted once it waits (it
    // gives nothing back), and the waiting deploy takes the lease over.
    let waiting = deploy_waiting(&local, &svc, true);
    let abort = async {
        waits_for_the_lease(&sfn).await;
        sfn.stop_execution().execution_arn(&running).send().await.unwrap();
    };
    let ((taken, log), ()) = tokio::join!(waiting, abort);
    assert!(taken.succeeded, "{:?}\n{log}", taken.error);
    let history = sfn
        .get_execution_history()
        .execution_arn(&taken.execution_arn)
        .max_results(1000)
        .send()
        .await
        .unwrap();
    assert!(entered(history.events(), "WaitForLease"), "it waited for the lease");
    assert!(lease(&local, "smheld").await.is_none());
    local.stop().await;
}

/// Returns once a deploy execution has entered `WaitForLease`: on a busy
/// machine a deploy takes seconds to get there, and the holder must not
/// end before it does.
async fn waits_for_the_lease(sfn: &aws_sdk_sfn::Client) {
    for _ in 0..600 {
        let running = sfn
            .list_executions()
            .state_machine_arn(deploy::state_machine_arn())
            .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
            .send()
            .await
            .map(|out| out.executions().to_vec())
            .unwrap_or_default();
        for execution in running {
            let history = sfn
                .get_execution_history()
                .execution_arn(execution.execution_arn())
                .max_results(1000)
                .send()
                .await;
            if history.is_ok_and(|h| entered(h.events(), "WaitForLease")) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no deploy waited for the lease within 60 s");
}

/// Whether an execution's history shows it entered `state`.
fn entered(events: &[aws_sdk_sfn::types::HistoryEvent], state: &str) -> bool {
    events
        .iter()
        .any(|e| e.state_entered_event_details().is_some_and(|d| d.name() == state))
}

#[tokio::test]
async fn the_same_source_deploys_nothing_new_until_the_machine_image_changes() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smami");
    let (first, log) = deploy(&local, &svc).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);
    let v1 = first.release.clone().unwrap();
    assert_eq!(v1.images.len(), 2, "pack pinned each region's image: {:?}", v1.images);
    assert!(v1
        .images
        .values()
        .all(|i| i == porter_local::stack::FIRST_MACHINE_IMAGE));
    assert!(first.regions.values().all(|r| !r.already_live));

    // The weekly build with nothing new: the same release, already live.
    let (again, log) = deploy(&local, &svc).await;
    assert!(again.succeeded, "{:?}\n{log}", again.error);
    assert_eq!(again.release.as_ref().unwrap().version, v1.version);
    assert!(
        again.regions.values().all(|r| r.already_live && r.taken_out.is_empty()),
        "{log}"
    );

    // A patched image in every region: the same source is a new release,
    // whose stacks boot the new image.
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
    let patched = "ami-0f1e2d3c4b5a69788";
    for region in ["us-west-2", "us-east-1"] {
        let conf = sdk.to_builder().region(aws_config::Region::new(region)).build();
        aws_sdk_ssm::Client::new(&conf)
            .put_parameter()
            .name(porter_local::stack::MACHINE_IMAGE_PARAMETER)
            .value(patched)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }
    let (patch, log) = deploy(&local, &svc).await;
    assert!(patch.succeeded, "{:?}\n{log}", patch.error);
    let v2 = patch.release.clone().unwrap();
    assert_ne!(v2.version, v1.version, "a new image is a new release");
    assert!(v2.images.values().all(|i| i == patched));
    for (region, r) in &patch.regions {
        assert!(!r.already_live && r.taken_out.len() == 2, "{region}: {log}");
        let conf = sdk.to_builder().region(aws_config::Region::new(region.clone())).build();
        let body = aws_sdk_cloudformation::Client::new(&conf)
            .get_template()
            .stack_name(&r.stack_name)
            .send()
            .await
            .unwrap()
            .template_body()
            .unwrap()
            .to_owned();
        assert!(
            body.contains(patched) && !body.contains("/aws/service/"),
            "{region}: {body}"
        );
    }
    local.stop().await;
}

/// A CloudWatch client in `region` of the local stack.
async fn cloudwatch(local: &LocalStack, region: &str) -> aws_sdk_cloudwatch::Client {
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
    aws_sdk_cloudwatch::Client::new(
        &sdk.to_builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build(),
    )
}

/// Each region's promoted stack (by its ELB's tag) and the instances its
/// ELB holds, for the example `service` deployed to staging.
pub(crate) async fn serving(local: &LocalStack, service: &str) -> Vec<(String, String, Vec<String>)> {
    let aws = porter_core::aws::Aws::unpinned(
        porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await,
    );
    let mut out = Vec::new();
    for (region, lb) in example_load_balancers(service) {
        let c = aws
            .region(
                region,
                "arn:aws:iam::123456789012:role/porter-deployment",
                "serving",
                &[],
            )
            .await
            .unwrap();
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

/// An OK alarm `name` on an error count, in both regions of the example.
async fn error_alarm(local: &LocalStack, name: &str) {
    for region in ["us-west-2", "us-east-1"] {
        cloudwatch(local, region)
            .await
            .put_metric_alarm()
            .alarm_name(name)
            .metric_name("Errors")
            .namespace("porter-e2e")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold)
            .send()
            .await
            .unwrap();
    }
}

/// Waits until the running deploy of `service` has entered its `n`th bake.
async fn in_bake(local: &LocalStack, service: &str, n: usize) -> String {
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    for _ in 0..400 {
        let running = sfn
            .list_executions()
            .state_machine_arn(deploy::state_machine_arn())
            .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
            .send()
            .await
            .unwrap();
        for e in running.executions() {
            if !e.name().starts_with(&format!("{service}-staging-")) {
                continue;
            }
            let h = sfn
                .get_execution_history()
                .execution_arn(e.execution_arn())
                .max_results(1000)
                .send()
                .await
                .unwrap();
            let bakes = h
                .events()
                .iter()
                .filter(|x| x.state_entered_event_details().is_some_and(|d| d.name() == "Bake"))
                .count();
            if bakes >= n {
                return e.execution_arn().to_owned();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no deploy of {service} reached bake {n}");
}

#[tokio::test]
async fn an_alarm_during_a_bake_puts_every_region_back_to_the_release_before() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smroll");
    let cfg = std::fs::read_to_string(svc.join(".porter/config")).unwrap();
    std::fs::write(
        svc.join(".porter/config"),
        cfg.replace(
            "  instance_type: t3.micro\n",
            "  instance_type: t3.micro\n  rollout:\n    waves: [[us-west-2], [us-east-1]]\n    bake_seconds: 3\n    alarms: [smroll-errors]\n",
        ),
    )
    .unwrap();
    error_alarm(&local, "smroll-errors").await;
    let (r1, log) = deploy(&local, &svc).await;
    assert!(r1.succeeded, "{:?}\n{log}", r1.error);
    // Wave by wave: us-west-2 cut over and baked before us-east-1 began.
    let west = log.find("promote   us-west-2").unwrap();
    let east = log.find("promote   us-east-1").unwrap();
    assert!(west < east, "{log}");

    let r1_stack = r1.regions["us-west-2"].stack_name.clone();
    let before = serving(&local, "smroll").await;
    assert!(before.iter().all(|(_, s, _)| *s == r1_stack), "{before:?}");

    // Release 2: the second wave's alarm fires during its bake, after
    // us-west-2 was cut over in the first.
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let fire = async {
        in_bake(&local, "smroll", 2).await;
        cloudwatch(&local, "us-east-1")
            .await
            .set_alarm_state()
            .alarm_name("smroll-errors")
            .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .state_reason("errors above threshold")
            .send()
            .await
            .unwrap();
    };
    let ((r2, log), ()) = tokio::join!(deploy(&local, &svc), fire);
    assert!(!r2.succeeded, "{log}");
    let (error, cause) = r2.error.unwrap();
    assert_eq!(error, "GateFailed", "{cause}");
    assert!(
        cause.contains("us-east-1")
            && cause.contains("alarm smroll-errors is in ALARM")
            && cause.contains("serves the release it replaced again"),
        "{cause}"
    );
    // Every region serves release 1 again, from the same instances.
    let after = serving(&local, "smroll").await;
    assert_eq!(after, before, "every region back on release 1");
    assert!(lease(&local, "smroll").await.is_none(), "the lease was given back");

    // Fired and cleared during the first wave's bake: caught by the
    // alarm's state-updated time.
    let cw = cloudwatch(&local, "us-east-1").await;
    cw.set_alarm_state()
        .alarm_name("smroll-errors")
        .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
        .state_reason("quiet")
        .send()
        .await
        .unwrap();
    std::fs::write(svc.join("index.html"), "release 3").unwrap();
    let flap = async {
        in_bake(&local, "smroll", 1).await;
        let west = cloudwatch(&local, "us-west-2").await;
        for state in [
            aws_sdk_cloudwatch::types::StateValue::Alarm,
            aws_sdk_cloudwatch::types::StateValue::Ok,
        ] {
            west.set_alarm_state()
                .alarm_name("smroll-errors")
                .state_value(state)
                .state_reason("a spike")
                .send()
                .await
                .unwrap();
        }
    };
    let ((r3, log), ()) = tokio::join!(deploy(&local, &svc), flap);
    assert!(!r3.succeeded, "{log}");
    let (error, cause) = r3.error.unwrap();
    assert!(
        error == "GateFailed" && cause.contains("us-west-2") && cause.contains("fired and cleared"),
        "{cause}"
    );
    assert_eq!(
        serving(&local, "smroll").await,
        before,
        "release 1 still serves everywhere"
    );
    local.stop().await;
}

#[tokio::test]
async fn canaries_serve_beside_the_fleet_and_one_that_fails_puts_every_region_back() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smcan");
    let cfg = std::fs::read_to_string(svc.join(".porter/config")).unwrap();
    std::fs::write(
        svc.join(".porter/config"),
        cfg.replace(
            "  instance_type: t3.micro\n",
            "  instance_type: t3.micro\n  rollout:\n    canary_instances: 1\n    bake_seconds: 3\n",
        ),
    )
    .unwrap();
    let (r1, log) = deploy(&local, &svc).await;
    assert!(r1.succeeded, "{:?}\n{log}", r1.error);
    let r1_view = serving(&local, "smcan").await;
    let r1_stack = r1.regions["us-west-2"].stack_name.clone();
    assert!(
        r1_view.iter().all(|(_, s, ids)| *s == r1_stack && ids.len() == 2),
        "{r1_view:?}"
    );

    // Release 2: during the canaries' bake each ELB holds release 1's two
    // instances and one of release 2's, and still names release 1.
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let look = async {
        in_bake(&local, "smcan", 1).await;
        serving(&local, "smcan").await
    };
    let ((r2, log), during) = tokio::join!(deploy(&local, &svc), look);
    assert!(r2.succeeded, "{:?}\n{log}", r2.error);
    assert!(log.contains("canary:"), "{log}");
    for ((region, stack, ids), (_, _, before)) in during.iter().zip(&r1_view) {
        assert_eq!(stack, &r1_stack, "{region}: the canary does not cut over");
        assert_eq!(ids.len(), 3, "{region}: two old instances and one canary: {ids:?}");
        assert!(
            before.iter().all(|i| ids.contains(i)),
            "{region}: the old fleet serves on"
        );
    }
    let r2_view = serving(&local, "smcan").await;
    let r2_stack = r2.regions["us-west-2"].stack_name.clone();
    assert!(
        r2_view.iter().all(|(_, s, ids)| *s == r2_stack && ids.len() == 2),
        "{r2_view:?}"
    );

    // Release 3: us-east-1's canary dies during its bake (terminated, as
    // when its host fails); the gate fails, and both regions serve release
    // 2 from the same instances.
    std::fs::write(svc.join("index.html"), "release 3").unwrap();
    let stop = async {
        in_bake(&local, "smcan", 1).await;
        let view = serving(&local, "smcan").await;
        let (_, _, ids) = view.iter().find(|(r, _, _)| r == "us-east-1").unwrap();
        let r2_ids = &r2_view.iter().find(|(r, _, _)| r == "us-east-1").unwrap().2;
        let canary = ids.iter().find(|i| !r2_ids.contains(i)).expect("a canary").clone();
        let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), "us-east-1").await;
        aws_sdk_autoscaling::Client::new(&sdk)
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&canary)
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .unwrap();
        canary
    };
    let ((r3, log), canary) = tokio::join!(deploy(&local, &svc), stop);
    assert!(!r3.succeeded, "{log}");
    let (error, cause) = r3.error.unwrap();
    assert_eq!(error, "GateFailed", "{cause}");
    assert!(
        // us-east-1's target group says at once that a target was
        // terminated, as AWS does.
        cause.contains("us-east-1")
            && cause.contains(&format!("canary {canary} in target group smcan-staging-use1 is unused"))
            && cause.contains("Target.InvalidState"),
        "{cause}"
    );
    assert_eq!(
        serving(&local, "smcan").await,
        r2_view,
        "every region serves release 2 again"
    );
    assert!(lease(&local, "smcan").await.is_none(), "the lease was given back");

    // Release 2 again (a weekly build with nothing new): it serves already,
    // so it has no canaries, and its gate must not hold that against it.
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let (again, log) = deploy(&local, &svc).await;
    assert!(again.succeeded, "{:?}\n{log}", again.error);
    assert!(again.regions.values().all(|r| r.already_live), "{log}");
    assert_eq!(serving(&local, "smcan").await, r2_view, "nothing changed");

    // And again with an alarm that fires while it bakes: the deploy fails,
    // and since it cut nothing over, nothing is put back (release 1 does
    // not come back).
    error_alarm(&local, "smcan-errors").await;
    let opts = Options {
        path: svc.clone(),
        environment: "staging".into(),
        rollout: Some(porter_core::config::RolloutOverride {
            alarms: Some(vec!["smcan-errors".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let fire = async {
        in_bake(&local, "smcan", 1).await;
        cloudwatch(&local, "us-west-2")
            .await
            .set_alarm_state()
            .alarm_name("smcan-errors")
            .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .state_reason("errors above threshold")
            .send()
            .await
            .unwrap();
    };
    let run = async {
        let mut out = Vec::new();
        deploy::run(&local.moto.endpoint(), &opts, &mut out).await.unwrap()
    };
    let (failed, ()) = tokio::join!(run, fire);
    assert_eq!(
        failed.error.as_ref().map(|e| e.0.as_str()),
        Some("GateFailed"),
        "{:?}",
        failed.error
    );
    assert_eq!(
        serving(&local, "smcan").await,
        r2_view,
        "release 2 still serves everywhere"
    );
    local.stop().await;
}

#[tokio::test]
async fn a_long_bake_is_read_each_minute_so_an_early_alarm_ends_it_at_once() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smlong");
    let (r1, log) = deploy(&local, &svc).await;
    assert!(r1.succeeded, "{:?}\n{log}", r1.error);
    let cw = cloudwatch(&local, "us-east-1").await;
    error_alarm(&local, "smlong-errors").await;
    // Release 2 bakes 130 s: read after 60 s, 60 s and 10 s. Its alarm
    // fires in the first minute, so the first read after it fails the gate.
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let opts = Options {
        path: svc.clone(),
        environment: "staging".into(),
        rollout: Some(porter_core::config::RolloutOverride {
            bake_seconds: Some(130),
            alarms: Some(vec!["smlong-errors".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let fire = async {
        let arn = in_bake(&local, "smlong", 1).await;
        cw.set_alarm_state()
            .alarm_name("smlong-errors")
            .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .state_reason("errors above threshold")
            .send()
            .await
            .unwrap();
        arn
    };
    let run = async {
        let mut out = Vec::new();
        deploy::run(&local.moto.endpoint(), &opts, &mut out).await.unwrap()
    };
    let (r2, arn) = tokio::join!(run, fire);
    let (error, cause) = r2.error.clone().unwrap();
    assert!(
        error == "GateFailed" && cause.contains("smlong-errors is in ALARM"),
        "{cause}"
    );
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
    let h = aws_sdk_sfn::Client::new(&sdk)
        .get_execution_history()
        .execution_arn(arn)
        .max_results(1000)
        .send()
        .await
        .unwrap();
    let entered = |name: &str| {
        h.events()
            .iter()
            .filter(|e| e.state_entered_event_details().is_some_and(|d| d.name() == name))
            .count()
    };
    assert_eq!(
        (entered("Bake"), entered("CheckGate")),
        (1, 1),
        "one stretch of a minute, one read, and the release was rolled back"
    );
    let first_stretch = h
        .events()
        .iter()
        .filter_map(|e| e.state_entered_event_details())
        .find(|d| d.name() == "Bake")
        .and_then(|d| d.input())
        .map(|i| serde_json::from_str::<serde_json::Value>(i).unwrap()["gate"]["next_wait"].clone());
    assert_eq!(first_stretch, Some(serde_json::json!(porter_core::gate::WATCH_SECONDS)));
    local.stop().await;
}

/// The Auto Scaling group of `stack` in `region`, and its client.
async fn stack_group(local: &LocalStack, region: &str, stack: &str) -> (aws_sdk_autoscaling::Client, String) {
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), region).await;
    let group = aws_sdk_cloudformation::Client::new(&sdk)
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .unwrap()
        .stack_resources()
        .iter()
        .find(|r| r.resource_type() == Some("AWS::AutoScaling::AutoScalingGroup"))
        .and_then(|r| r.physical_resource_id())
        .unwrap()
        .to_owned();
    (aws_sdk_autoscaling::Client::new(&sdk), group)
}

/// Min, desired and max size and health check type of `stack`'s group.
async fn group_sizes(local: &LocalStack, region: &str, stack: &str) -> (i32, i32, i32, String) {
    let (asg, group) = stack_group(local, region, stack).await;
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .unwrap();
    let g = &out.auto_scaling_groups()[0];
    (
        g.min_size().unwrap(),
        g.desired_capacity().unwrap(),
        g.max_size().unwrap(),
        g.health_check_type().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_live_fleet_scaled_out_is_replaced_at_its_size() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smscale");
    let (first, log) = deploy(&local, &svc).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);

    // us-west-2's fleet scales out to 4 under load (by hand here).
    let (asg, live) = stack_group(&local, "us-west-2", &first.regions["us-west-2"].stack_name).await;
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(&live)
        .max_size(4)
        .desired_capacity(4)
        .send()
        .await
        .unwrap();

    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let (second, log) = deploy(&local, &svc).await;
    assert!(second.succeeded, "{:?}\n{log}", second.error);
    assert_eq!(
        group_sizes(&local, "us-west-2", &second.regions["us-west-2"].stack_name).await,
        (2, 4, 4, "ELB".to_owned()),
        "the config's 2 is the floor, the live 4 the start"
    );
    assert_eq!(second.regions["us-west-2"].in_service.len(), 4, "{second:?}");
    // us-east-1 was not scaled: it stays at the config's count.
    assert_eq!(
        group_sizes(&local, "us-east-1", &second.regions["us-east-1"].stack_name).await,
        (2, 2, 2, "ELB".to_owned())
    );
    local.stop().await;
}

/// Invokes the promote function of the local stack, as `porter abort`
/// (or the infra's EventBridge rule) does: its answer, and whether the
/// function failed.
async fn invoke_promote(local: &LocalStack, event: serde_json::Value) -> (serde_json::Value, bool) {
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/2015-03-31/functions/promote/invocations",
            local.host_port
        ))
        .json(&event)
        .send()
        .await
        .unwrap();
    let failed = resp.headers().contains_key("X-Amz-Function-Error");
    (resp.json().await.unwrap(), failed)
}

#[tokio::test]
async fn an_abort_or_a_console_stop_mid_bake_puts_every_region_back_and_frees_the_lease() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smabort");
    let (r1, log) = deploy(&local, &svc).await;
    assert!(r1.succeeded, "{:?}\n{log}", r1.error);
    let before = serving(&local, "smabort").await;
    // From now on a long bake after each wave: us-west-2 first.
    let cfg = std::fs::read_to_string(svc.join(".porter/config")).unwrap();
    std::fs::write(
        svc.join(".porter/config"),
        cfg.replace(
            "  instance_type: t3.micro\n",
            "  instance_type: t3.micro\n  rollout:\n    waves: [[us-west-2], [us-east-1]]\n    bake_seconds: 600\n",
        ),
    )
    .unwrap();

    // `porter abort` while release 2 bakes in us-west-2.
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let abort = async {
        let arn = in_bake(&local, "smabort", 1).await;
        let (held, _) = lease(&local, "smabort").await.expect("the deploy holds the lease");
        assert_eq!(held, arn);
        (
            invoke_promote(&local, serde_json::json!({"abort": {"execution": arn}})).await,
            arn,
        )
    };
    let ((r2, log), ((answer, failed), aborted)) = tokio::join!(deploy(&local, &svc), abort);
    assert!(!failed, "{answer}");
    assert!(!r2.succeeded, "{log}");
    assert_eq!(answer["stopped"], true, "{answer}");
    assert_eq!(answer["lease_given"], true, "{answer}");
    let west = answer["undone"]["us-west-2"].as_str().unwrap_or_default();
    assert!(west.ends_with("serves again"), "us-west-2 was cut over: {answer}");
    assert!(
        answer["undone"]["us-east-1"]
            .as_str()
            .unwrap_or_default()
            .contains("as before"),
        "us-east-1 was never reached: {answer}"
    );
    assert_eq!(
        serving(&local, "smabort").await,
        before,
        "release 1 serves everywhere again"
    );
    assert!(lease(&local, "smabort").await.is_none(), "the lease is free");
    // The fence: a phase of the aborted deploy (a call already on its way
    // when it was stopped) does nothing more.
    let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
    let release = porter_core::history::progress(&aws_sdk_sfn::Client::new(&sdk), &aborted)
        .await
        .unwrap()
        .into_iter()
        .find_map(|p| match p {
            porter_core::execution::Progress::Packed(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let late = porter_core::promote::PromoteInput {
        target: porter_core::target::Target {
            release: porter_core::release::ReleaseRef::Inline(release),
            region: None,
            regions: Vec::new(),
        },
        stack_name: None,
        timeout_seconds: None,
        undo: false,
        canary: false,
        execution: Some(aborted.clone()),
        state: None,
    };
    let (answer, failed) = invoke_promote(&local, serde_json::to_value(&late).unwrap()).await;
    assert!(
        failed
            && answer["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("no longer holds the deploy lease"),
        "{answer}"
    );
    assert_eq!(serving(&local, "smabort").await, before, "nothing changed");

    // A stop from the console runs no Catch: the infra's rule hands the
    // function Step Functions' own event, and it does the same.
    std::fs::write(svc.join("index.html"), "release 3").unwrap();
    let stop = async {
        let arn = in_bake(&local, "smabort", 1).await;
        let sdk = porter_local::moto::sdk_config(&local.moto.endpoint(), porter_local::stack::REGION).await;
        aws_sdk_sfn::Client::new(&sdk)
            .stop_execution()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        arn
    };
    let ((r3, log), arn) = tokio::join!(deploy(&local, &svc), stop);
    assert!(!r3.succeeded, "{log}");
    assert!(
        lease(&local, "smabort").await.is_some(),
        "a console stop leaves the lease held"
    );
    let event = |status: &str, execution: &str| {
        serde_json::json!({
            "version": "0",
            "source": "aws.states",
            "detail-type": "Step Functions Execution Status Change",
            "detail": {
                "executionArn": execution,
                "stateMachineArn": deploy::state_machine_arn(),
                "status": status,
            }
        })
    };
    let (answer, failed) = invoke_promote(&local, event("SUCCEEDED", &arn)).await;
    assert!(!failed && answer["ignored"].is_string(), "{answer}");
    let foreign = arn.replace(":porter-deploy:", ":someone-elses:");
    let (answer, failed) = invoke_promote(&local, event("ABORTED", &foreign)).await;
    assert!(
        failed
            && answer["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("this installation's state machine"),
        "{answer}"
    );
    let (answer, failed) = invoke_promote(&local, event("ABORTED", &arn)).await;
    assert!(!failed, "{answer}");
    assert_eq!(
        (answer["stopped"].clone(), answer["lease_given"].clone()),
        (false.into(), true.into()),
        "{answer}"
    );
    assert_eq!(
        serving(&local, "smabort").await,
        before,
        "release 1 serves everywhere again"
    );
    assert!(lease(&local, "smabort").await.is_none(), "the lease is free");
    local.stop().await;
}
