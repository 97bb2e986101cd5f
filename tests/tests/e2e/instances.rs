//! Instances that run: releases boot their UserData in namespaces, load
//! balancers check them and carry traffic, stacks wait for their signals.
//! Each test needs root on Linux; elsewhere it says why it is skipped.

use std::time::Duration;

use std::path::PathBuf;

use porter_e2e::deploy_staging as deploy;
use porter_e2e::{edit_config, page_of, succeeded};
use porter_local::deploy;
use porter_local::instances::Mode;
use porter_local::load;
use porter_local::stack::LocalStack;

/// A local stack whose instances run, with the example copied as service
/// `name` (see [`porter_e2e::started`]), or `None` (with the reason
/// printed) where namespaces cannot be made.
async fn running_example(name: &str) -> Option<(LocalStack, tempfile::TempDir, PathBuf)> {
    let (local, dir, svc) = porter_e2e::started(porter_local::stack::Options::running(), name).await;
    if let Mode::Bookkeeping(why) = local.fleet.mode() {
        eprintln!("SKIPPED: instances cannot run here: {why}");
        local.stop().await;
        return None;
    }
    Some((local, dir, svc))
}

/// Each region's page, fetched through its load balancer.
async fn pages(local: &LocalStack) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for lb in local.balancers.list() {
        let page = reqwest::get(format!("{}/", lb.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        out.push((lb.region, load::release_of(&page)));
    }
    assert_eq!(out.len(), 2, "one load balancer per region");
    out
}

/// Waits (at most 5 s) until every region's load balancer serves `page`,
/// then says which served what. A cutover ends when every new instance is
/// InService and the old ones are deregistered; the local load balancer
/// reads registrations from moto twice a second, and AWS's own take
/// seconds to reach every load balancer node, so the first request after
/// the deploy returns may still meet the release before.
async fn serving_everywhere(local: &LocalStack, page: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = pages(local).await;
        if now.iter().all(|(_, p)| p == page) || std::time::Instant::now() > deadline {
            for (region, p) in now {
                assert_eq!(p, page, "{region}");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Load through every load balancer while `during` runs.
async fn under_load<F: std::future::Future>(local: &LocalStack, during: F) -> (F::Output, Vec<load::Tally>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runs: Vec<_> = local
        .balancers
        .list()
        .into_iter()
        .map(|lb| {
            let stopped = stopped.clone();
            tokio::spawn(async move {
                load::drive(&lb.url, load::Shape::mixed(20, 3), Duration::from_secs(300), stopped).await
            })
        })
        .collect();
    let out = during.await;
    stop.send(true).unwrap();
    let mut tallies = Vec::new();
    for r in runs {
        tallies.push(r.await.unwrap());
    }
    (out, tallies)
}

/// Deploys release 2 of the example in `svc` under load: it succeeds, no
/// request fails, both releases answer during the cutover, and release 2
/// serves everywhere after. The example's page, for further releases.
async fn release_2_under_load(local: &LocalStack, svc: &std::path::Path) -> String {
    let html = std::fs::read_to_string(svc.join("index.html")).unwrap();
    page_of(svc, "release 2");
    let (second, tallies) = under_load(local, deploy(local, svc)).await;
    succeeded(second);
    for t in &tallies {
        assert!(t.requests > 20, "{t:?}");
        assert_eq!(t.failed, 0, "no request fails during the cutover: {t:?}");
        assert!(
            t.pages.contains_key("release 1") && t.pages.contains_key("release 2"),
            "{t:?}"
        );
    }
    serving_everywhere(local, "release 2").await;
    html
}

/// The SecureString the secrets test's service reads as API_KEY.
async fn put_api_key(ssm: &aws_sdk_ssm::Client, value: &str) {
    ssm.put_parameter()
        .name("/porter/sec/staging/api-key")
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

/// A deploy that must have failed: its error and cause as one line.
fn cause_of(run: (deploy::Outcome, String)) -> String {
    let (error, cause, _) = porter_e2e::failed(run);
    format!("{error}: {cause}")
}

/// Asserts that no request failed and every one met `release`.
fn assert_only(tallies: &[load::Tally], release: &str) {
    for t in tallies {
        assert_eq!(t.failed, 0, "{t:?}");
        assert_eq!(t.pages.keys().collect::<Vec<_>>(), vec![release], "{t:?}");
    }
}

fn namespaces_left(host_port: u16) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("porter-{host_port}-")))
        .map(str::to_owned)
        .collect()
}

/// A cutover under load fails no request, and a release that cannot
/// start, or starts unhealthy, never serves: its stack fails with the
/// instance's own reason.
#[tokio::test]
async fn cutover_under_load_and_releases_that_never_serve() {
    let Some((local, _dir, svc)) = running_example("real").await else {
        return;
    };

    succeeded(deploy(&local, &svc).await);
    for (region, page) in pages(&local).await {
        assert_eq!(page, "release 1", "{region}");
    }

    let html = release_2_under_load(&local, &svc).await;

    // The start script exits: the instance signals why, the stack fails
    // with it, and release 2 keeps every request.
    std::fs::write(svc.join("index.html"), html.replace("release 1", "release 3")).unwrap();
    std::fs::write(
        svc.join("start"),
        "#!/bin/sh\necho 'real: no database configured' >&2\nexit 3\n",
    )
    .unwrap();
    let (third, tallies) = under_load(&local, deploy(&local, &svc)).await;
    let cause = cause_of(third);
    assert!(
        cause.contains("exited before it was healthy") && cause.contains("real: no database configured"),
        "the instance's own reason: {cause}"
    );
    assert_only(&tallies, "release 2");
    for (region, page) in pages(&local).await {
        assert_eq!(page, "release 2", "{region}");
    }

    // It starts, but its health check answers 500: it fails saying so,
    // and never gets a request.
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service/start"),
        svc.join("start"),
    )
    .unwrap();
    let serve = std::fs::read_to_string(svc.join("serve.py")).unwrap();
    std::fs::write(
        svc.join("serve.py"),
        serve.replace("send_response(200)", "send_response(500)"),
    )
    .unwrap();
    std::fs::write(svc.join("index.html"), html.replace("release 1", "release 4")).unwrap();
    let (fourth, tallies) = under_load(&local, deploy(&local, &svc)).await;
    let cause = cause_of(fourth);
    assert!(cause.contains("/health answered HTTP 500 10 times in a row"), "{cause}");
    assert_only(&tallies, "release 2");

    let port = local.host_port;
    local.stop().await;
    assert_eq!(
        namespaces_left(port),
        Vec::<String>::new(),
        "nothing of an instance is left"
    );
}

/// A new instance killed before it is healthy fails the deploy, naming
/// it, and the old release serves on.
#[tokio::test]
async fn instance_killed_before_healthy_fails_deploy() {
    let Some((local, _dir, svc)) = running_example("kill").await else {
        return;
    };
    let first = succeeded(deploy(&local, &svc).await);
    let serving: Vec<String> = first.regions.values().flat_map(|r| r.in_service.clone()).collect();

    // The service is held back a few seconds, so it can be killed while its
    // instance waits for it to become healthy.
    page_of(&svc, "release 2");
    std::fs::write(
        svc.join("start"),
        "#!/bin/sh\ncd \"$(dirname \"$0\")\"\nsleep 4\nexec python3 serve.py\n",
    )
    .unwrap();
    let port = local.host_port;
    let killer = tokio::spawn(async move {
        for _ in 0..600 {
            for ns in namespaces_left(port) {
                let instance = ns.trim_start_matches(&format!("porter-{port}-"));
                if !instance.starts_with("i-") || serving.iter().any(|s| s == instance) {
                    continue;
                }
                let pids = std::process::Command::new("ip")
                    .args(["netns", "pids", &ns])
                    .output()
                    .unwrap();
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    // The start script itself: the process the boot watches.
                    if cmd.contains("./start") {
                        std::process::Command::new("kill")
                            .args(["-KILL", pid])
                            .status()
                            .unwrap();
                        return instance.to_owned();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no new instance's service was seen starting");
    });
    let (second, tallies) = under_load(&local, deploy(&local, &svc)).await;
    let killed = killer.await.unwrap();
    let cause = cause_of(second);
    assert!(
        cause.contains(&killed) && cause.contains("exited before it was healthy"),
        "the killed instance {killed} is named: {cause}"
    );
    assert_only(&tallies, "release 1");
    local.stop().await;
    assert_eq!(namespaces_left(port), Vec::<String>::new());
}

/// Instances read their secrets and run `ec2_bootstrap` at boot; a
/// missing secret or a failing hook fails the stack by name, with no
/// secret's value in the cause or the log.
#[tokio::test]
async fn instances_read_secrets_and_run_ec2_bootstrap() {
    let Some((local, _dir, svc)) = running_example("sec").await else {
        return;
    };
    let cfg = std::fs::read_to_string(svc.join(".porter/config")).unwrap();
    std::fs::write(
        svc.join(".porter/config"),
        cfg.replacen(
            "  instance_type: t3.micro\n",
            "  instance_type: t3.micro\n  secrets:\n    DATABASE_URL: secretsmanager:porter/sec/staging/database-url\n    API_KEY: ssm:/porter/sec/staging/api-key\n",
            1,
        ) + "hooks:\n  ec2_bootstrap:\n  - command: echo \"$PORTER_STACK $GREETING [$DATABASE_URL$API_KEY]\" > bootstrap.txt\n    environment: {GREETING: hello}\n",
    )
    .unwrap();
    // The service shows what it got as digests, and whether it could read
    // a secret of its environment that the config does not name.
    std::fs::write(
        svc.join("start"),
        "#!/bin/bash\ncd \"$(dirname \"$0\")\"\n\
         printf '%s' \"$DATABASE_URL\" | sha256sum | cut -c1-64 > db.txt\n\
         printf '%s' \"$API_KEY\" | sha256sum | cut -c1-64 > key.txt\n\
         if aws secretsmanager get-secret-value --secret-id porter/sec/staging/not-named --query SecretString --output text > /dev/null 2> other.txt; then echo read > other.txt; fi\n\
         exec python3 serve.py\n",
    )
    .unwrap();
    let endpoint = local.moto.endpoint();
    const DB: &str = "postgres://app:s3cr3t-db-pw@db.internal/app";
    const KEY: &str = "k-9f8e7d6c5b4a";
    for region in ["us-west-2", "us-east-1"] {
        porter_e2e::put_secret(&endpoint, region, "porter/sec/staging/database-url", DB).await;
        porter_e2e::put_secret(
            &endpoint,
            region,
            "porter/sec/staging/not-named",
            "not-for-this-service",
        )
        .await;
        let ssm = aws_sdk_ssm::Client::new(&porter_local::moto::sdk_config(&endpoint, region).await);
        put_api_key(&ssm, KEY).await;
    }
    let digest = |v: &str| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(v.as_bytes()))
    };

    let (first, log) = deploy(&local, &svc).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);
    for lb in local.balancers.list() {
        let get = |file: &str| {
            let url = format!("{}/{file}", lb.url);
            async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
        };
        assert_eq!(get("db.txt").await.trim(), digest(DB), "{}", lb.region);
        assert_eq!(get("key.txt").await.trim(), digest(KEY), "{}", lb.region);
        assert_eq!(
            get("bootstrap.txt").await.trim(),
            format!("sec-staging-{} hello []", first.release.as_ref().unwrap().version),
            "ec2_bootstrap ran in the payload's folder before the service started, and saw no secret"
        );
        let other = get("other.txt").await;
        assert!(
            other.contains("AccessDeniedException") && other.contains("porter/sec/staging/not-named"),
            "a secret the config does not name is refused: {other}"
        );
    }
    assert!(!log.contains(DB) && !log.contains(KEY), "{log}");

    // The parameter goes away in one region: the next release's stack
    // there fails naming the reference, and no value is in the cause.
    let ssm = aws_sdk_ssm::Client::new(&porter_local::moto::sdk_config(&endpoint, "us-east-1").await);
    ssm.delete_parameter()
        .name("/porter/sec/staging/api-key")
        .send()
        .await
        .unwrap();
    page_of(&svc, "release 2");
    let (second, log) = deploy(&local, &svc).await;
    let cause = cause_of((second, log.clone()));
    assert!(
        cause.contains("cannot read secret API_KEY (ssm:/porter/sec/staging/api-key)")
            && cause.contains("ParameterNotFound"),
        "{cause}"
    );
    assert!(
        !cause.contains(DB) && !log.contains(DB) && !log.contains(KEY),
        "{cause}\n{log}"
    );
    for (region, page) in pages(&local).await {
        assert_eq!(page, "release 1", "{region}: the release before serves on");
    }

    // The parameter is back, and an ec2_bootstrap hook fails: the stack
    // fails naming it, with the end of its output.
    put_api_key(&ssm, KEY).await;
    edit_config(
        &svc,
        "  - command: echo \"$PORTER_STACK $GREETING [$DATABASE_URL$API_KEY]\" > bootstrap.txt\n",
        "  - command: \"echo 'agent: no licence key' >&2; exit 4\"\n",
    );
    let cause = cause_of(deploy(&local, &svc).await);
    porter_e2e::assert_says(
        &cause,
        "ec2_bootstrap[0] failed; its output ends: agent: no licence key",
    );
    local.stop().await;
}

/// Serving instances stay in service while another group is attached to
/// their load balancer (which moto answers by deregistering them).
#[tokio::test]
async fn serving_instances_survive_another_group_attaching() {
    let Some((local, _dir, svc)) = running_example("shuf").await else {
        return;
    };
    let first = succeeded(deploy(&local, &svc).await);

    // moto answers AttachLoadBalancers by first taking every instance of
    // other groups out of the load balancer; the front registers them again.
    // A group with no instances, attached over and over, repeats that while
    // health is read as fast as promote could read it.
    let region = "us-west-2";
    let lb = local
        .balancers
        .list()
        .into_iter()
        .find(|b| b.region == region)
        .expect("a load balancer in us-west-2");
    let serving: Vec<String> = first.regions[region].in_service.clone();
    assert!(!serving.is_empty(), "{first:?}");
    let sdk = porter_local::moto::sdk_config(&local.endpoint(), region).await;
    let asg = aws_sdk_autoscaling::Client::new(&sdk);
    asg.create_launch_configuration()
        .launch_configuration_name("shuf-empty")
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .unwrap();
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("shuf-empty")
        .launch_configuration_name("shuf-empty")
        .availability_zones(format!("{region}a"))
        .min_size(0)
        .max_size(0)
        .desired_capacity(0)
        .send()
        .await
        .unwrap();

    let elb = aws_sdk_elasticloadbalancing::Client::new(&sdk);
    let (done, finished) = tokio::sync::watch::channel(false);
    let reader = {
        let elb = elb.clone();
        let name = lb.name.clone();
        let serving = serving.clone();
        tokio::spawn(async move {
            let mut reads = 0;
            let mut out_of_service = Vec::new();
            while !*finished.borrow() {
                let health = elb
                    .describe_instance_health()
                    .load_balancer_name(&name)
                    .set_instances(Some(porter_core::balancer::as_instances(&serving)))
                    .send()
                    .await
                    .unwrap();
                reads += 1;
                for s in health.instance_states() {
                    let seen = format!("{} {}", s.instance_id().unwrap_or("?"), s.state().unwrap_or("?"));
                    if s.state() != Some("InService") && !out_of_service.contains(&seen) {
                        out_of_service.push(seen);
                    }
                }
            }
            (reads, out_of_service)
        })
    };
    let attach = async {
        for _ in 0..20 {
            asg.attach_load_balancers()
                .auto_scaling_group_name("shuf-empty")
                .load_balancer_names(&lb.name)
                .send()
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The next check of each instance, an interval on, decides.
        tokio::time::sleep(Duration::from_secs(6)).await;
    };
    let ((), tallies) = under_load(&local, attach).await;
    done.send(true).unwrap();
    let (reads, out_of_service) = reader.await.unwrap();
    assert!(reads > 20, "health was read {reads} times");
    assert_eq!(out_of_service, Vec::<String>::new(), "no serving instance left service");
    for t in &tallies {
        assert!(t.requests > 20, "{t:?}");
        assert_eq!(t.failed, 0, "{t:?}");
    }
    let registered: Vec<String> = elb
        .describe_load_balancers()
        .load_balancer_names(&lb.name)
        .send()
        .await
        .unwrap()
        .load_balancer_descriptions()[0]
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    let mut want = serving.clone();
    want.sort();
    let mut got = registered;
    got.sort();
    assert_eq!(got, want, "the serving instances are registered as before");
    local.stop().await;
}

/// The example with target groups where it names ELBs: each region's
/// `elb:` becomes a `target_group:` of the same name.
fn behind_target_groups(svc: &std::path::Path) {
    edit_config(svc, "    elb: ", "    target_group: ");
}

/// Target groups cut over under load and leave only the new release
/// healthy (the old one drains); a target group tagged for another
/// service, or on a port the service does not listen on, is refused.
#[tokio::test]
async fn target_groups_cut_over_and_refuse_anothers() {
    use porter_core::balancer;
    use porter_core::config::Elb;

    let Some((local, _dir, svc)) = running_example("albs").await else {
        return;
    };
    behind_target_groups(&svc);

    succeeded(deploy(&local, &svc).await);
    let listed = local.balancers.list();
    assert!(
        listed
            .iter()
            .all(|lb| lb.kind == "target_group" && lb.load_balancer.as_deref() == Some(lb.name.as_str())),
        "an ALB in front of each target group: {listed:?}"
    );
    serving_everywhere(&local, "release 1").await;

    let html = release_2_under_load(&local, &svc).await;

    // DescribeTargetHealth (answered from the local checks) calls only the
    // new release's instances healthy; the old ones drain, then leave.
    let aws =
        porter_core::aws::Aws::unpinned(porter_local::moto::sdk_config(&local.moto.endpoint(), "us-east-1").await);
    for (region, name) in [("us-west-2", "albs-staging-usw2"), ("us-east-1", "albs-staging-use1")] {
        let c = crate::support::deployment_clients(&aws, region, "test").await;
        let tg = Elb::target_group(name);
        let stack = porter_core::prune::promoted_stack(&c, &tg).await.unwrap().unwrap();
        assert!(
            stack.contains("albs-staging-"),
            "the target group names the promoted stack: {stack}"
        );
        let mut new = porter_core::promote::stack_instances(&c, &stack).await.unwrap();
        new.sort();
        let health = balancer::health(&c, &tg, &[]).await.unwrap();
        let mut healthy: Vec<String> = health
            .iter()
            .filter(|h| h.serving)
            .map(|h| h.instance.clone())
            .collect();
        healthy.sort();
        assert_eq!(healthy, new, "{region}: {health:?}");
        assert!(
            health.iter().all(|h| h.serving || h.state == "draining"),
            "{region}: the rest drain: {health:?}"
        );
        let mut registered = balancer::registered(&c, &tg).await.unwrap();
        registered.sort();
        assert_eq!(registered, new, "{region}");
    }

    // A target group tagged for another service is refused by name before
    // anything is made.
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(
        &porter_local::moto::sdk_config(&local.moto.endpoint(), "us-west-2").await,
    );
    let (_, vpc) = porter_local::query::target_group(&local.moto.endpoint(), "us-west-2", "albs-staging-usw2")
        .await
        .unwrap();
    let vpc = vpc.as_str();
    elbv2
        .create_target_group()
        .name("someone-elses")
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(8080)
        .vpc_id(vpc)
        .tags(
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key("porter:service")
                .value("billing")
                .build(),
        )
        .send()
        .await
        .unwrap();
    edit_config(&svc, "target_group: albs-staging-usw2", "target_group: someone-elses");
    std::fs::write(svc.join("index.html"), html.replace("release 1", "release 3")).unwrap();
    let cause = cause_of(deploy(&local, &svc).await);
    porter_e2e::assert_says(&cause, "target group someone-elses");
    porter_e2e::assert_says(&cause, "billing");

    // One of the service's own, on a port the service does not listen on:
    // its instances would register and never answer.
    let tag = |k: &str, v: &str| {
        aws_sdk_elasticloadbalancingv2::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
    };
    elbv2
        .create_target_group()
        .name("albs-port-80")
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(80)
        .vpc_id(vpc)
        .tags(tag("porter:service", "albs"))
        .tags(tag("porter:environment", "staging"))
        .send()
        .await
        .unwrap();
    edit_config(&svc, "target_group: someone-elses", "target_group: albs-port-80");
    let cause = cause_of(deploy(&local, &svc).await);
    porter_e2e::assert_says(&cause, "target group albs-port-80");
    porter_e2e::assert_says(&cause, "sends traffic to port 80, and the service listens on 8080");
    local.stop().await;
}

/// With `stack_creation.on_failure: DO_NOTHING`, a release whose service
/// will not start keeps its stack, CREATE_FAILED, and the deploy says so;
/// deploying that version again is refused naming the stack; the next
/// good release serves and its prune deletes the kept stack.
#[tokio::test]
async fn a_kept_failed_stack_is_refused_then_pruned() {
    let Some((local, _dir, svc)) = running_example("kept").await else {
        return;
    };
    edit_config(
        &svc,
        "  instance_type: t3.micro\n",
        "  instance_type: t3.micro\n  stack_creation: {timeout_minutes: 15, on_failure: DO_NOTHING}\n",
    );
    succeeded(deploy(&local, &svc).await);

    let start = std::fs::read_to_string(svc.join("start")).unwrap();
    std::fs::write(
        svc.join("start"),
        "#!/bin/sh\necho 'no database configured' >&2\nexit 3\n",
    )
    .unwrap();
    page_of(&svc, "release 2");
    let cause = cause_of(deploy(&local, &svc).await);
    assert!(
        cause.contains("no database configured")
            && cause.contains("kept to debug it (stack_creation.on_failure: DO_NOTHING)"),
        "{cause}"
    );
    let mut kept = Vec::new();
    for region in ["us-west-2", "us-east-1"] {
        let stacks = crate::support::release_stacks(&local, "kept-staging-", region).await;
        let failed: Vec<&String> = stacks
            .iter()
            .filter(|(_, s)| *s == "CREATE_FAILED")
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            failed.len(),
            1,
            "{region}: the failed release's stack is kept: {stacks:?}"
        );
        kept.push((region, failed[0].clone()));
    }
    for (region, page) in pages(&local).await {
        assert_eq!(page, "release 1", "{region}: the release before serves on");
    }

    // The same version again: its stack name is taken by the kept stack.
    let cause = cause_of(deploy(&local, &svc).await);
    assert!(
        cause.contains("a failed stack of this release is kept from an earlier deploy")
            && cause.contains(&format!("delete-stack --stack-name {}", kept[0].1)),
        "{cause}"
    );

    // A fixed release deploys, and its prune deletes the kept stack.
    std::fs::write(svc.join("start"), start).unwrap();
    let page = std::fs::read_to_string(svc.join("index.html")).unwrap();
    std::fs::write(svc.join("index.html"), page.replace("release 2", "release 3")).unwrap();
    succeeded(deploy(&local, &svc).await);
    serving_everywhere(&local, "release 3").await;
    for (region, name) in kept {
        let stacks = crate::support::release_stacks(&local, "kept-staging-", region).await;
        assert!(
            stacks.get(&name).is_none_or(|s| s == "DELETE_COMPLETE"),
            "{region}: prune deleted the kept stack {name}: {stacks:?}"
        );
    }
    local.stop().await;
}

/// `porter abort` mid-provision and mid-canary, under load: nothing the
/// aborted deploys made serves, no request fails, release 1 serves in
/// every region, the lease is free, and the aborted releases' stacks are
/// deleted.
#[tokio::test]
async fn abort_mid_provision_and_mid_canary_under_load() {
    let Some((local, _dir, svc)) = running_example("abcan").await else {
        return;
    };
    succeeded(deploy(&local, &svc).await);
    let first = crate::support::release_stacks(&local, "abcan-staging-", "us-west-2").await;
    let start = std::fs::read_to_string(svc.join("start")).unwrap();
    let abort = |state: &'static str| {
        let local = &local;
        async move {
            let arn = crate::statemachine::in_state(local, "abcan", state, 1).await;
            crate::statemachine::invoke_promote(local, serde_json::json!({"abort": {"execution": arn}})).await
        }
    };
    let check = |answer: &serde_json::Value, failed: bool, tallies: &[load::Tally], when: &str| {
        assert!(
            !failed && answer["stopped"] == true && answer["lease_given"] == true,
            "{when}: {answer}"
        );
        assert_only(tallies, "release 1");
    };

    // Mid-provision: release 2's instances take 20 s to serve, so its
    // stacks are still being created when the deploy is aborted.
    std::fs::write(
        svc.join("start"),
        format!("#!/bin/sh\nsleep 20\n{}", start.trim_start_matches("#!/bin/sh\n")),
    )
    .unwrap();
    page_of(&svc, "release 2");
    let ((deployed, (answer, failed)), tallies) = under_load(&local, async {
        tokio::join!(deploy(&local, &svc), abort("ProvisionWait"))
    })
    .await;
    assert!(!deployed.0.succeeded, "{}", deployed.1);
    check(&answer, failed, &tallies, "mid-provision");
    for region in ["us-west-2", "us-east-1"] {
        let stacks = crate::support::release_stacks(&local, "abcan-staging-", region).await;
        let live: Vec<&String> = stacks
            .iter()
            .filter(|(_, s)| !s.starts_with("DELETE"))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            live.len(),
            1,
            "{region}: release 2's stack is deleted, release 1's serves: {stacks:?}"
        );
    }
    crate::support::assert_lease_free(&local, "abcan", "mid-provision: the lease is free").await;

    // Mid-canary: release 3's canary serves beside release 1 in us-west-2
    // and bakes; the abort takes it out.
    std::fs::write(svc.join("start"), &start).unwrap();
    let page = std::fs::read_to_string(svc.join("index.html")).unwrap();
    std::fs::write(svc.join("index.html"), page.replace("release 2", "release 3")).unwrap();
    edit_config(
        &svc,
        "  instance_type: t3.micro\n",
        "  instance_type: t3.micro\n  rollout:\n    waves: [[us-west-2], [us-east-1]]\n    canary_instances: 1\n    bake_seconds: 600\n",
    );
    let ((deployed, (answer, failed)), tallies) =
        under_load(&local, async { tokio::join!(deploy(&local, &svc), abort("Bake")) }).await;
    assert!(!deployed.0.succeeded, "{}", deployed.1);
    assert!(
        !failed && answer["stopped"] == true && answer["lease_given"] == true,
        "mid-canary: {answer}"
    );
    // Load ran while the canary served: requests met release 1 or the
    // canary's release 3, and none failed.
    for t in &tallies {
        assert_eq!(t.failed, 0, "{t:?}");
        assert!(t.pages.keys().all(|p| p == "release 1" || p == "release 3"), "{t:?}");
    }
    serving_everywhere(&local, "release 1").await;
    crate::support::assert_lease_free(&local, "abcan", "mid-canary: the lease is free").await;
    assert_eq!(
        crate::support::release_stacks(&local, "abcan-staging-", "us-west-2")
            .await
            .into_iter()
            .filter(|(_, s)| !s.starts_with("DELETE"))
            .collect::<std::collections::BTreeMap<_, _>>(),
        first,
        "only release 1's stack is left"
    );
    local.stop().await;
}
