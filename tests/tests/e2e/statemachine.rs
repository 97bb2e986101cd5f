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
    let opts = Options {
        path: path.to_path_buf(),
        environment: "staging".into(),
        keep: 0,
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
    let local = LocalStack::start(0, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "smok");
    let (first, log) = deploy(&local, &svc).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);
    assert_eq!(first.regions.len(), 2);
    assert!(
        first.transitions <= 40,
        "a fast two-region deploy takes a few dozen transitions, took {}",
        first.transitions
    );

    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let (second, log) = deploy(&local, &svc).await;
    assert!(second.succeeded, "{:?}\n{log}", second.error);
    for (region, r) in &second.regions {
        assert_ne!(r.stack, first.regions[region].stack);
        assert!(r.deleted.is_empty(), "{region}: {:?}", r.deleted);
        assert_eq!(
            r.rollback,
            vec![first.regions[region].stack.clone()],
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
    let local = LocalStack::start(0, 0).await.unwrap();
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
        cause.contains("provision failed in us-"),
        "names the phase and region: {cause}"
    );
    assert!(cause.contains("subnet"), "carries the reason: {cause}");
    assert!(!log.contains("promote "), "nothing was promoted:\n{log}");
    local.stop().await;
}

#[tokio::test]
async fn a_retryable_error_is_retried_and_the_deploy_succeeds() {
    let faults = Faults::default();
    faults.fail_next(Phase::Promote, 1);
    let local = LocalStack::start_with_faults(0, 0, faults).await.unwrap();
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
