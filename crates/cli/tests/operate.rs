//! `porter deploy`, `status`, `rollback` and `history` as a person runs
//! them: the binary, against the local stack (`--local`), and against an
//! "AWS account" that is moto with a porter installation's stack in it
//! (no `--local`: the state machine, bucket and lease table are found from
//! the stack's outputs, with the default credential chain).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use porter_local::stack::{self, LocalStack, StackFile};

fn porter(cwd: &Path, env: &[(&str, String)], args: &[&str]) -> (bool, String) {
    let Output { status, stdout, stderr } = Command::new(env!("CARGO_BIN_EXE_porter"))
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .output()
        .expect("porter runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), text)
}

/// The example service copied to `dir/name` and renamed `name`.
fn example(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-service");
    let dest = dir.join(name);
    // `cp -R` keeps the start scripts executable, as a checkout would.
    let copied = Command::new("cp")
        .arg("-R")
        .arg(&src)
        .arg(&dest)
        .status()
        .expect("cp runs");
    assert!(copied.success(), "copying {} failed", src.display());
    let config = dest.join(".porter/config");
    let renamed = std::fs::read_to_string(&config)
        .unwrap()
        .replace("service_name: hello", &format!("service_name: {name}"))
        .replace("hello-", &format!("{name}-"));
    std::fs::write(&config, renamed).unwrap();
    dest
}

fn change(svc: &Path, release: &str) {
    let page = svc.join("index.html");
    let text = std::fs::read_to_string(&page).unwrap();
    std::fs::write(&page, format!("{text}\n<!-- {release} -->\n")).unwrap();
}

/// The version a deploy's output names.
fn version(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.contains(" release ") && (l.starts_with("deployed ") || l.starts_with("rolled back to ")))
        .unwrap_or_else(|| panic!("no release line in\n{out}"));
    line.split(" release ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_rollback_and_history_on_the_local_stack() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // What `porter local up` leaves for the commands to find.
    let file = stack::stack_file(dir.path());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let record = StackFile {
        moto_port: local.moto.port,
        host_port: local.host_port,
        pid: std::process::id(),
    };
    std::fs::write(&file, serde_json::to_string(&record).unwrap()).unwrap();
    let svc = example(dir.path(), "ops");
    let svc_arg = svc.to_str().unwrap();
    let run = |args: &[&str]| porter(dir.path(), &[], args);

    change(&svc, "release 1");
    let (ok, out) = run(&["deploy", "-e", "staging", "--local", svc_arg]);
    assert!(ok, "{out}");
    let r1 = version(&out);
    let (ok, out) = run(&["status", "-e", "staging", "--local", svc_arg]);
    assert!(ok, "{out}");
    assert_eq!(out.matches(&format!("serving   release {r1}")).count(), 2, "{out}");
    assert_eq!(out.matches("rollback  nothing").count(), 2, "{out}");
    assert!(out.contains("deploy lease: free"), "{out}");
    assert!(!out.contains("does not drain"), "the bootstrap's ELBs drain: {out}");
    // An ELB whose connection draining is off is flagged.
    let elb = aws_sdk_elasticloadbalancing::Client::new(
        &porter_local::moto::sdk_config(&local.moto.endpoint(), "us-west-2").await,
    );
    let set_draining = |on: bool| {
        let elb = elb.clone();
        async move {
            elb.modify_load_balancer_attributes()
                .load_balancer_name("ops-staging-usw2")
                .load_balancer_attributes(
                    aws_sdk_elasticloadbalancing::types::LoadBalancerAttributes::builder()
                        .connection_draining(
                            aws_sdk_elasticloadbalancing::types::ConnectionDraining::builder()
                                .enabled(on)
                                .timeout(5)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    };
    set_draining(false).await;
    let (ok, out) = run(&["status", "-e", "staging", "--local", svc_arg]);
    assert!(
        ok && out.contains("warning   load balancer ops-staging-usw2 does not drain connections"),
        "{out}"
    );
    set_draining(true).await;
    // So is a target group that deregisters at once.
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(
        &porter_local::moto::sdk_config(&local.moto.endpoint(), "us-east-1").await,
    );
    let (group, _) = porter_local::query::target_group(&local.moto.endpoint(), "us-east-1", "ops-staging-use1")
        .await
        .unwrap();
    let set_delay = |seconds: u32| {
        elbv2
            .modify_target_group_attributes()
            .target_group_arn(&group)
            .attributes(
                aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(seconds.to_string())
                    .build(),
            )
            .send()
    };
    set_delay(0).await.unwrap();
    let (ok, out) = run(&["status", "-e", "staging", "--local", svc_arg]);
    assert!(
        ok && out.contains("warning   target group ops-staging-use1 does not drain"),
        "{out}"
    );
    set_delay(5).await.unwrap();
    // No deploy runs: nothing to abort, and nothing changes.
    let (ok, out) = run(&["abort", "-e", "staging", "--local", svc_arg]);
    assert!(ok && out.contains("there is nothing to abort"), "{out}");
    let (ok, out) = run(&["rollback", "-e", "staging", "--local", svc_arg]);
    assert!(!ok, "{out}");
    assert!(out.contains("nothing was deployed before"), "{out}");
    change(&svc, "release 2");
    let (ok, out) = run(&["deploy", "-e", "staging", "--local", svc_arg]);
    assert!(ok, "{out}");
    let r2 = version(&out);
    assert_ne!(r1, r2);

    let (ok, out) = run(&["status", "-e", "staging", "--local", svc_arg]);
    assert!(ok, "{out}");
    for region in ["us-west-2", "us-east-1"] {
        let serving = format!("{region:<10} serving   release {r2} (ops-staging-{r2})");
        assert!(out.contains(&serving), "{serving}\n{out}");
    }
    assert_eq!(out.matches(&format!("rollback  release {r1}")).count(), 2, "{out}");
    // The example's classic ELB in us-west-2, its ALB target group in us-east-1.
    assert!(out.contains("ELB ops-staging-usw2: 2/2 InService"), "{out}");
    assert!(out.contains("target group ops-staging-use1: 2/2 healthy"), "{out}");
    assert_eq!(out.matches("SUCCEEDED deploy").count(), 2, "{out}");

    // Without --to: the release every region's ELB names as replaced.
    let (ok, out) = run(&["rollback", "-e", "staging", "--local", svc_arg]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("rolling ops in staging back to release {r1}")),
        "{out}"
    );
    assert_eq!(version(&out), r1);
    assert!(out.contains("verified: every region serves this release only"), "{out}");

    let (ok, out) = run(&["status", "-e", "staging", "--local", svc_arg]);
    assert!(ok, "{out}");
    assert_eq!(out.matches(&format!("serving   release {r1}")).count(), 2, "{out}");
    assert_eq!(out.matches(&format!("rollback  release {r2}")).count(), 2, "{out}");

    // Forward again by name, fast (nothing runs to abort: every region at
    // once), then a release that was never packed.
    let (ok, out) = run(&["rollback", "-e", "staging", "--local", "--fast", "--to", &r2, svc_arg]);
    assert!(ok, "{out}");
    assert_eq!(version(&out), r2);
    assert!(
        out.contains(&format!("every region serves release {r2}, "))
            && out.contains("(one wave, no bake, no canaries)"),
        "{out}"
    );
    let (ok, out) = run(&["rollback", "-e", "staging", "--local", "--to", "0123456789ab", svc_arg]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("there is no release 0123456789ab of ops in staging"),
        "{out}"
    );
    let (ok, out) = run(&["rollback", "-e", "staging", "--local", "--to", "../../etc", svc_arg]);
    assert!(!ok && out.contains("is not a release version"), "{out}");

    let (ok, out) = run(&["history", "-e", "staging", "--local", svc_arg]);
    assert!(ok, "{out}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{out}");
    let row = |i: usize, status: &str, kind: &str, v: &str| {
        assert!(
            rows[i].contains(&format!("{status:<9} {kind:<8} {v}")),
            "row {i}: {status} {kind} {v}\n{out}"
        );
    };
    row(0, "FAILED", "rollback", "0123456789ab");
    row(1, "SUCCEEDED", "rollback", &r2);
    row(2, "SUCCEEDED", "rollback", &r1);
    row(3, "SUCCEEDED", "deploy", &r2);
    row(4, "SUCCEEDED", "deploy", &r1);
    assert!(rows[0].contains("there is no release 0123456789ab"), "{out}");

    // An AWS error reaches the user as one line: the call, the code, the
    // message (clipped), not the SDK's rendering of the error.
    let bad = example(dir.path(), "badzone");
    let cfg = std::fs::read_to_string(bad.join(".porter/config")).unwrap();
    std::fs::write(bad.join(".porter/config"), cfg.replace("us-west-2b}", "us-west-2z}")).unwrap();
    let (ok, out) = run(&["deploy", "-e", "staging", "--local", bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
    let line = out.lines().last().unwrap();
    assert!(
        line.contains("InvalidParameterValue (HTTP 400): Value (us-west-2z)"),
        "{out}"
    );
    assert!(line.len() < 600 && !out.contains("Error {"), "{out}");
    local.stop().await;
}

/// `porter deploy` without `--local` finds the installation from its
/// stack's outputs.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_finds_installation_from_stack_outputs() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "acct");
    let endpoint = local.moto.endpoint();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_REGION", stack::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
    ];
    // No installation yet: the error names the stack and what to do.
    let (ok, out) = porter(dir.path(), &env, &["deploy", "-e", "staging", svc.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("porter stack porter-serverless") && out.contains("--stack"),
        "{out}"
    );
    assert!(
        !out.contains("Error {") && out.lines().count() <= 3,
        "one line, not the SDK's dump:\n{out}"
    );

    // The account as `make deploy` leaves it: the bootstrap stands in for
    // what the service's account holds, the stack's outputs name the rest.
    let mut sink = Vec::new();
    let opts = porter_local::deploy::Options {
        path: svc.clone(),
        environment: "staging".into(),
        ..Default::default()
    };
    porter_local::deploy::prepare(&endpoint, &opts, &mut sink)
        .await
        .unwrap();
    let sdk = porter_local::moto::sdk_config(&endpoint, stack::REGION).await;
    let template = serde_json::json!({
        "Resources": {"Marker": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {
            "StateMachineArn": {"Value": porter_local::deploy::state_machine_arn()},
            "ArtifactBucketName": {"Value": stack::ARTIFACT_BUCKET},
            "LeaseTableName": {"Value": stack::LEASE_TABLE}
        }
    });
    aws_sdk_cloudformation::Client::new(&sdk)
        .create_stack()
        .stack_name("porter-acct")
        .template_body(template.to_string())
        .send()
        .await
        .unwrap();

    let (ok, out) = porter(
        dir.path(),
        &env,
        &[
            "deploy",
            "-e",
            "staging",
            "--stack",
            "porter-acct",
            svc.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("source: s3://{}/acct/source/cli-", stack::ARTIFACT_BUCKET)),
        "{out}"
    );
    let v = version(&out);
    assert_eq!(out.matches(&format!("promoted acct-staging-{v}")).count(), 2, "{out}");
    let (ok, out) = porter(
        dir.path(),
        &env,
        &[
            "history",
            "-e",
            "staging",
            "--stack",
            "porter-acct",
            svc.to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains(&format!("SUCCEEDED deploy   {v}")), "{out}");
    local.stop().await;
}
