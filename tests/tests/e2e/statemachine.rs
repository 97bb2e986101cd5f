//! The shipped state machine, run by moto's interpreter against the real
//! handlers behind the local Lambda host.

use porter_lambda::Phase;
use porter_local::deploy::{self, Options};
use porter_local::invoke_host::Faults;
use porter_local::stack::LocalStack;

use crate::support::{
    assert_lease_free, assert_serving, cloudwatch, deployment_clients, entered, entries, example_load_balancers,
    history, lease, release_stacks, sdk, sdk_in, serving, set_alarm,
};
use aws_sdk_cloudwatch::types::StateValue;
use porter_e2e::{copy_dir, edit_config, failed, started, succeeded};

/// The line of the example's environment that rollout settings follow.
const ENVIRONMENT_LINE: &str = "  instance_type: t3.micro\n";

/// Gives the example's environment a `rollout:` with `settings` (lines
/// indented four spaces).
fn rollout(svc: &std::path::Path, settings: &str) {
    edit_config(
        svc,
        ENVIRONMENT_LINE,
        &format!("{ENVIRONMENT_LINE}  rollout:\n{settings}"),
    );
}

/// Runs a deploy with `opts` as it is, printing nothing anywhere.
async fn run(local: &LocalStack, opts: &Options) -> deploy::Outcome {
    let mut out = Vec::new();
    deploy::run(&local.moto.endpoint(), opts, &mut out).await.unwrap()
}

/// Staging deploy options for `svc` with a rollout override.
fn with_rollout(svc: &std::path::Path, rollout: porter_core::config::RolloutOverride) -> Options {
    Options {
        path: svc.to_path_buf(),
        environment: "staging".into(),
        rollout: Some(rollout),
        ..Default::default()
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
    let (local, _dir, svc) = started(Default::default(), "smok").await;
    let first = succeeded(deploy(&local, &svc).await);
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

/// A provision failure ends on the Catch path with its reason, promotes
/// nothing and gives the lease back.
#[tokio::test]
async fn provision_failure_takes_the_catch_path() {
    let (local, _dir, svc) = started(Default::default(), "smfail").await;
    porter_e2e::break_provisioning(&svc, ENVIRONMENT_LINE);
    let (error, cause, log) = failed(deploy(&local, &svc).await);
    assert_eq!(error, "StackFailed");
    assert!(
        cause.contains("provision failed: ") && cause.contains(" in us-"),
        "names the phase and region: {cause}"
    );
    assert!(cause.contains(porter_e2e::MISSING_GROUP), "carries the reason: {cause}");
    assert!(!log.contains("promote "), "nothing was promoted:\n{log}");
    assert_lease_free(&local, "smfail", "the failed deploy gave the lease back").await;
    local.stop().await;
}

#[tokio::test]
async fn a_retryable_error_is_retried_and_the_deploy_succeeds() {
    let faults = Faults::default();
    faults.fail_next(Phase::Promote, 1);
    let (local, _dir, svc) = started(porter_local::stack::Options::with_faults(faults), "smretry").await;
    let outcome = succeeded(deploy(&local, &svc).await);
    // The history holds the failed attempt that Retry absorbed.
    let sfn = aws_sdk_sfn::Client::new(&sdk(&local).await);
    let failed = history(&sfn, &outcome.execution_arn)
        .await
        .iter()
        .filter(|e| e.r#type().as_str() == "TaskFailed")
        .count();
    assert_eq!(failed, 1, "exactly the injected failure, then success");
    local.stop().await;
}

/// Registered instances per ELB, sampled until `stop`: the fewest seen.
async fn sample_elbs(
    local: &LocalStack,
    elbs: &[(&str, porter_core::config::Elb)],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, usize) {
    let aws = porter_core::aws::Aws::unpinned(sdk(local).await);
    let mut clients = Vec::new();
    for (region, elb) in elbs {
        clients.push((deployment_clients(&aws, region, "sample").await, elb.clone()));
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
    let (local, dir, a) = started(porter_local::stack::Options::with_faults(faults.clone()), "smlease").await;
    succeeded(deploy(&local, &a).await);

    let b = dir.path().join("smlease-b");
    copy_dir(&a, &b);
    std::fs::write(a.join("index.html"), "release 2a").unwrap();
    std::fs::write(b.join("index.html"), "release 2b").unwrap();
    faults.fail_next(Phase::Provision, 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The example's us-west-2 sits behind a classic ELB, us-east-1 behind
    // an ALB's target group.
    let lbs = example_load_balancers("smlease");
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
    assert_lease_free(&local, "smlease", "the winner gave the lease back").await;
    local.stop().await;
}

/// The lease of a running deploy refuses another deploy; one of a deploy
/// that has ended (aborted, giving nothing back) is taken over by a
/// deploy that waits for it.
#[tokio::test]
async fn lease_refused_while_held_taken_when_ended() {
    let (local, _dir, svc) = started(Default::default(), "smheld").await;
    let sdk = sdk(&local).await;
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

    let (error, cause, log) = failed(deploy(&local, &svc).await);
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
    let (taken, ()) = tokio::join!(waiting, abort);
    let taken = succeeded(taken);
    assert!(
        entered(&history(&sfn, &taken.execution_arn).await, "WaitForLease"),
        "it waited for the lease"
    );
    assert!(lease(&local, "smheld").await.is_none());
    local.stop().await;
}

/// The executions of the deploy state machine that are running.
async fn running_deploys(
    sfn: &aws_sdk_sfn::Client,
) -> Result<Vec<aws_sdk_sfn::types::ExecutionListItem>, impl std::fmt::Debug> {
    sfn.list_executions()
        .state_machine_arn(deploy::state_machine_arn())
        .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
        .send()
        .await
        .map(|out| out.executions().to_vec())
}

/// Returns once a deploy execution has entered `WaitForLease`: on a busy
/// machine a deploy takes seconds to get there, and the holder must not
/// end before it does.
async fn waits_for_the_lease(sfn: &aws_sdk_sfn::Client) {
    for _ in 0..600 {
        for execution in running_deploys(sfn).await.unwrap_or_default() {
            if entered(&history(sfn, execution.execution_arn()).await, "WaitForLease") {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no deploy waited for the lease within 60 s");
}

/// The same source deploys nothing new (the release is already live)
/// until the machine image changes: a patched image in every region makes
/// it a new release, whose stacks boot that image.
#[tokio::test]
async fn same_source_is_new_only_with_a_new_image() {
    let (local, _dir, svc) = started(Default::default(), "smami").await;
    let first = succeeded(deploy(&local, &svc).await);
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
    let patched = "ami-0f1e2d3c4b5a69788";
    for region in ["us-west-2", "us-east-1"] {
        aws_sdk_ssm::Client::new(&sdk_in(&local, region).await)
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
        let body = aws_sdk_cloudformation::Client::new(&sdk_in(&local, region).await)
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

/// Waits until the running deploy of `service` has entered its `n`th
/// bake, then fires its alarm `{service}-errors` in `region`: the
/// deploy's execution.
async fn alarm_in_bake(local: &LocalStack, service: &str, n: usize, region: &str) -> String {
    let arn = in_bake(local, service, n).await;
    set_alarm(
        local,
        region,
        &format!("{service}-errors"),
        StateValue::Alarm,
        "errors above threshold",
    )
    .await;
    arn
}

/// Waits until the running deploy of `service` has entered its `n`th bake.
pub(crate) async fn in_bake(local: &LocalStack, service: &str, n: usize) -> String {
    in_state(local, service, "Bake", n).await
}

/// Waits until the running deploy of `service` has entered `state` `n`
/// times: its execution's ARN.
pub(crate) async fn in_state(local: &LocalStack, service: &str, state: &str, n: usize) -> String {
    let sfn = aws_sdk_sfn::Client::new(&sdk(local).await);
    for _ in 0..1200 {
        for e in running_deploys(&sfn).await.unwrap() {
            if !e.name().starts_with(&format!("{service}-staging-")) {
                continue;
            }
            if entries(&history(&sfn, e.execution_arn()).await, state) >= n {
                return e.execution_arn().to_owned();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no deploy of {service} reached {state} {n} times");
}

/// An alarm that fires during a wave's bake puts every region back on the
/// release before, from the same instances; one that fired and cleared
/// during a bake is caught by the alarm's state-updated time.
#[tokio::test]
async fn alarm_in_bake_rolls_every_region_back() {
    let (local, _dir, svc) = started(Default::default(), "smroll").await;
    rollout(
        &svc,
        "    waves: [[us-west-2], [us-east-1]]\n    bake_seconds: 3\n    alarms: [smroll-errors]\n",
    );
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
    let fire = alarm_in_bake(&local, "smroll", 2, "us-east-1");
    let (r2, _) = tokio::join!(deploy(&local, &svc), fire);
    let (error, cause, _) = failed(r2);
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
    assert_lease_free(&local, "smroll", "the lease was given back").await;

    // Fired and cleared during the first wave's bake: caught by the
    // alarm's state-updated time.
    set_alarm(&local, "us-east-1", "smroll-errors", StateValue::Ok, "quiet").await;
    std::fs::write(svc.join("index.html"), "release 3").unwrap();
    let flap = async {
        in_bake(&local, "smroll", 1).await;
        for state in [StateValue::Alarm, StateValue::Ok] {
            set_alarm(&local, "us-west-2", "smroll-errors", state, "a spike").await;
        }
    };
    let (r3, ()) = tokio::join!(deploy(&local, &svc), flap);
    let (error, cause, _) = failed(r3);
    assert!(
        error == "GateFailed" && cause.contains("us-west-2") && cause.contains("fired and cleared"),
        "{cause}"
    );
    assert_serving(&local, "smroll", &before, "release 1 still serves everywhere").await;
    local.stop().await;
}

/// What the example `service` serves (see [`serving`]), asserting that
/// every region serves `outcome`'s release alone, from two instances.
async fn serving_only(
    local: &LocalStack,
    service: &str,
    outcome: &deploy::Outcome,
) -> Vec<(String, String, Vec<String>)> {
    let view = serving(local, service).await;
    let stack = &outcome.regions["us-west-2"].stack_name;
    assert!(view.iter().all(|(_, s, ids)| s == stack && ids.len() == 2), "{view:?}");
    view
}

/// Canaries serve beside the fleet without a cutover; a canary that dies
/// during its bake fails the gate and puts every region back, and a
/// release that serves already has no canaries to hold against it.
#[tokio::test]
async fn canaries_serve_and_a_failing_one_rolls_back() {
    let (local, _dir, svc) = started(Default::default(), "smcan").await;
    rollout(&svc, "    canary_instances: 1\n    bake_seconds: 3\n");
    let r1 = succeeded(deploy(&local, &svc).await);
    let r1_view = serving_only(&local, "smcan", &r1).await;
    let r1_stack = &r1.regions["us-west-2"].stack_name;

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
        assert_eq!(stack, r1_stack, "{region}: the canary does not cut over");
        assert_eq!(ids.len(), 3, "{region}: two old instances and one canary: {ids:?}");
        assert!(
            before.iter().all(|i| ids.contains(i)),
            "{region}: the old fleet serves on"
        );
    }
    let r2_view = serving_only(&local, "smcan", &r2).await;

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
        aws_sdk_autoscaling::Client::new(&sdk_in(&local, "us-east-1").await)
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&canary)
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .unwrap();
        canary
    };
    let (r3, canary) = tokio::join!(deploy(&local, &svc), stop);
    let (error, cause, _) = failed(r3);
    assert_eq!(error, "GateFailed", "{cause}");
    assert!(
        // us-east-1's target group says at once that a target was
        // terminated, as AWS does.
        cause.contains("us-east-1")
            && cause.contains(&format!("canary {canary} in target group smcan-staging-use1 is unused"))
            && cause.contains("Target.InvalidState"),
        "{cause}"
    );
    assert_serving(&local, "smcan", &r2_view, "every region serves release 2 again").await;
    assert_lease_free(&local, "smcan", "the lease was given back").await;

    // Release 2 again (a weekly build with nothing new): it serves already,
    // so it has no canaries, and its gate must not hold that against it.
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let (again, log) = deploy(&local, &svc).await;
    assert!(again.succeeded, "{:?}\n{log}", again.error);
    assert!(again.regions.values().all(|r| r.already_live), "{log}");
    assert_serving(&local, "smcan", &r2_view, "nothing changed").await;

    // And again with an alarm that fires while it bakes: the deploy fails,
    // and since it cut nothing over, nothing is put back (release 1 does
    // not come back).
    error_alarm(&local, "smcan-errors").await;
    let opts = with_rollout(
        &svc,
        porter_core::config::RolloutOverride {
            alarms: Some(vec!["smcan-errors".into()]),
            ..Default::default()
        },
    );
    let fire = alarm_in_bake(&local, "smcan", 1, "us-west-2");
    let (failed, _) = tokio::join!(run(&local, &opts), fire);
    assert_eq!(
        failed.error.as_ref().map(|e| e.0.as_str()),
        Some("GateFailed"),
        "{:?}",
        failed.error
    );
    assert_serving(&local, "smcan", &r2_view, "release 2 still serves everywhere").await;
    local.stop().await;
}

/// A long bake is read each minute, so an alarm early in it ends the
/// deploy at the first read after it, not at the bake's end.
#[tokio::test]
async fn long_bake_is_read_each_minute() {
    let (local, _dir, svc) = started(Default::default(), "smlong").await;
    succeeded(deploy(&local, &svc).await);
    error_alarm(&local, "smlong-errors").await;
    // Release 2 bakes 130 s: read after 60 s, 60 s and 10 s. Its alarm
    // fires in the first minute, so the first read after it fails the gate.
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let opts = with_rollout(
        &svc,
        porter_core::config::RolloutOverride {
            bake_seconds: Some(130),
            alarms: Some(vec!["smlong-errors".into()]),
            ..Default::default()
        },
    );
    let fire = alarm_in_bake(&local, "smlong", 1, "us-east-1");
    let (r2, arn) = tokio::join!(run(&local, &opts), fire);
    let (error, cause) = r2.error.clone().unwrap();
    assert!(
        error == "GateFailed" && cause.contains("smlong-errors is in ALARM"),
        "{cause}"
    );
    let h = history(&aws_sdk_sfn::Client::new(&sdk(&local).await), &arn).await;
    assert_eq!(
        (entries(&h, "Bake"), entries(&h, "CheckGate")),
        (1, 1),
        "one stretch of a minute, one read, and the release was rolled back"
    );
    let first_stretch = h
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
    let sdk = sdk_in(local, region).await;
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
    let (local, _dir, svc) = started(Default::default(), "smscale").await;
    let first = succeeded(deploy(&local, &svc).await);

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
    let second = succeeded(deploy(&local, &svc).await);
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
pub(crate) async fn invoke_promote(local: &LocalStack, event: serde_json::Value) -> (serde_json::Value, bool) {
    invoke_function(local, "promote", event).await
}

/// Invokes `function` of the local stack with `event`: its answer, and
/// whether the function failed.
async fn invoke_function(local: &LocalStack, function: &str, event: serde_json::Value) -> (serde_json::Value, bool) {
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations",
            local.host_port
        ))
        .json(&event)
        .send()
        .await
        .unwrap();
    let failed = resp.headers().contains_key("X-Amz-Function-Error");
    (resp.json().await.unwrap(), failed)
}

/// `porter abort --keep-stacks` mid-bake (the promote function's abort
/// event) puts every region back, keeps the release's stacks and frees the
/// lease, and fences off the aborted deploy's late calls; a stop from the
/// console, which runs no Catch, does the same through Step Functions' own
/// event, and deletes the stacks of its release.
#[tokio::test]
async fn abort_or_console_stop_mid_bake_rolls_back() {
    let (local, _dir, svc) = started(Default::default(), "smabort").await;
    succeeded(deploy(&local, &svc).await);
    let before = serving(&local, "smabort").await;
    // From now on a long bake after each wave: us-west-2 first.
    rollout(&svc, "    waves: [[us-west-2], [us-east-1]]\n    bake_seconds: 600\n");

    // `porter abort` while release 2 bakes in us-west-2.
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let abort = async {
        let arn = in_bake(&local, "smabort", 1).await;
        let (held, _) = lease(&local, "smabort").await.expect("the deploy holds the lease");
        assert_eq!(held, arn);
        (
            invoke_promote(
                &local,
                serde_json::json!({"abort": {"execution": arn, "keep_stacks": true}}),
            )
            .await,
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
    assert_serving(&local, "smabort", &before, "release 1 serves everywhere again").await;
    assert_lease_free(&local, "smabort", "the lease is free").await;
    assert_eq!(answer["stacks"], "kept, as asked", "{answer}");
    let kept = release_stacks(&local, "smabort-staging-", "us-west-2").await;
    assert_eq!(kept.len(), 2, "release 1's and release 2's stacks: {kept:?}");
    assert!(kept.values().all(|s| s == "CREATE_COMPLETE"), "{kept:?}");
    let kept_east = release_stacks(&local, "smabort-staging-", "us-east-1").await;
    // The fence: a phase of the aborted deploy (a call already on its way
    // when it was stopped) does nothing more.
    let release = porter_core::history::progress(&aws_sdk_sfn::Client::new(&sdk(&local).await), &aborted)
        .await
        .unwrap()
        .into_iter()
        .find_map(|p| match p {
            porter_core::execution::Progress::Packed(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let late_promote = porter_core::promote::PromoteInput {
        execution: Some(aborted.clone()),
        ..porter_e2e::promote_input(&release, None, None)
    };
    let late_prune = porter_core::prune::PruneInput {
        execution: Some(aborted.clone()),
        ..porter_e2e::prune_input(&release, 0, None)
    };
    // Its hooks after promote and its bake's gate read too.
    let late_hooks = porter_core::hooks::HooksInput {
        points: vec!["post_promote".into()],
        failed: false,
        source: porter_core::pack::Source::Path(svc.clone()),
        environment: "staging".into(),
        variables: Default::default(),
        release: Some(porter_core::release::ReleaseRef::Inline(release.clone())),
        waves: Vec::new(),
        execution: Some(aborted.clone()),
    };
    let late_gate = porter_core::gate::GateInput {
        target: porter_e2e::target(&release),
        armed: None,
        canary: false,
        baked: 0,
        waited: 0,
        execution: Some(aborted.clone()),
    };
    for (function, late) in [
        ("promote", serde_json::to_value(&late_promote).unwrap()),
        ("prune", serde_json::to_value(&late_prune).unwrap()),
        ("hooks", serde_json::to_value(&late_hooks).unwrap()),
        ("promote", serde_json::json!({ "gate": late_gate })),
    ] {
        let (answer, failed) = invoke_function(&local, function, late).await;
        let said = answer["errorMessage"].as_str().unwrap_or_default();
        assert!(
            failed && said.contains("no longer holds the deploy lease"),
            "{function}: {answer}"
        );
    }
    assert_serving(&local, "smabort", &before, "nothing changed").await;
    assert_eq!(
        release_stacks(&local, "smabort-staging-", "us-west-2").await,
        kept,
        "prune deleted nothing"
    );

    // A stop from the console runs no Catch: the infra's rule hands the
    // function Step Functions' own event, and it does the same.
    std::fs::write(svc.join("index.html"), "release 3").unwrap();
    let stop = async {
        let arn = in_bake(&local, "smabort", 1).await;
        aws_sdk_sfn::Client::new(&sdk(&local).await)
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
    assert_serving(&local, "smabort", &before, "release 1 serves everywhere again").await;
    assert_lease_free(&local, "smabort", "the lease is free").await;
    // Release 3's stacks go; release 1's serves and release 2's was kept.
    for region in ["us-west-2", "us-east-1"] {
        let said = answer["stacks"][region].as_str().unwrap_or_default();
        assert!(said.contains(": deleting"), "{region}: {answer}");
        let name = said.split(": deleting").next().unwrap_or_default();
        let mut statuses = release_stacks(&local, "smabort-staging-", region).await;
        let gone = statuses.remove(name);
        assert!(
            gone.as_ref().is_none_or(|s| s.starts_with("DELETE_")),
            "{region}: {name} {gone:?}"
        );
        let before_stop = if region == "us-west-2" { &kept } else { &kept_east };
        assert_eq!(&statuses, before_stop, "{region}: the other stacks stay");
    }
    local.stop().await;
}
