//! The service's hooks, run by the shipped state machine between the
//! phases: on the local stack each `command:` hook is a process run as an
//! unprivileged user in a copy of the repository.

use porter_e2e::deploy_staging as deploy;
use porter_e2e::{append_config, edit_config, example, failed, page_of, started, succeeded};

use crate::support::{assert_lease_free, assert_serving, serving};

/// A folder every user may write to: where the hooks say they ran.
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("porter-hooks-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn hook(point: &str, out: &std::path::Path, extra: &str) -> String {
    format!(
        "  {point}:\n  - command: echo \"{point} $(id -u) v=$PORTER_VERSION $PORTER_SERVICE $PORTER_ENVIRONMENT $GREETING\" >> {out}/ran\n    environment: {{GREETING: hi}}\n{extra}",
        out = out.display()
    )
}

fn ran(out: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(out.join("ran"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Hooks run around each phase as an unprivileged user; a failing one
/// stops the deploy with the end of its output, and runs no later hook
/// but the ones asked for on failure.
#[tokio::test]
async fn hooks_run_unprivileged_and_a_failing_one_stops() {
    let (local, _dir, svc) = started(Default::default(), "hook").await;
    let shared = shared_dir();
    let out = shared.path();
    let mut hooks = String::from("hooks:\n");
    for point in porter_core::config::DEPLOY_HOOKS {
        let extra = match *point {
            // Runs only when provision fails; porter's Docker hooks are
            // skipped here, saying why.
            "post_provision" => format!(
                "  - command: echo post_provision-after-failure >> {}/ran\n    run_condition: fail\n",
                out.display()
            ),
            "pre_promote" => "  - dockerfile: hooks/Dockerfile\n".to_owned(),
            _ => String::new(),
        };
        hooks.push_str(&hook(point, out, &extra));
    }
    append_config(&svc, &hooks);
    let cfg = std::fs::read_to_string(svc.join(".porter/config")).unwrap();

    let first = succeeded(deploy(&local, &svc).await);
    let version = first.release.as_ref().unwrap().version.clone();
    let lines = ran(out);
    let points: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(points, porter_core::config::DEPLOY_HOOKS, "{lines:?}");
    assert_eq!(
        lines[0], "pre_pack 65534 v= hook staging hi",
        "before pack there is no release yet"
    );
    assert_eq!(lines[1], format!("post_pack 65534 v={version} hook staging hi"));
    assert!(
        lines.iter().all(|l| l.split(' ').nth(1) == Some("65534")),
        "every hook runs as nobody: {lines:?}"
    );

    // A pre_provision hook that fails: the deploy stops before provision
    // changes anything, naming the hook and the end of its output.
    std::fs::remove_file(out.join("ran")).unwrap();
    edit_config(
        &svc,
        "  pre_provision:\n",
        "  pre_provision:\n  - command: \"echo 'migrations: the database refused the schema' >&2; exit 3\"\n",
    );
    page_of(&svc, "release 2");
    let (error, cause, _) = failed(deploy(&local, &svc).await);
    assert_eq!(error, "HookFailed", "{cause}");
    assert!(
        cause.contains("hook pre_provision[0] failed: exit 3")
            && cause.contains("migrations: the database refused the schema"),
        "{cause}"
    );
    let points: Vec<String> = ran(out)
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(points, ["pre_pack", "post_pack"], "nothing after the failing hook ran");
    let stacks: Vec<String> = crate::support::release_stacks(&local, "hook-staging-", "us-west-2")
        .await
        .into_keys()
        .collect();
    assert_eq!(
        stacks,
        [format!("hook-staging-{version}")],
        "no stack of the failed release"
    );

    // Provision fails: the post_provision hook asked for failures runs,
    // the others of post_provision do not, and the deploy fails with
    // provision's own cause.
    std::fs::write(svc.join(".porter/config"), cfg).unwrap();
    porter_e2e::break_provisioning(&svc, "  instance_type: t3.micro\n");
    std::fs::remove_file(out.join("ran")).unwrap();
    let (error, _, _) = failed(deploy(&local, &svc).await);
    assert_eq!(error, "StackFailed");
    let lines = ran(out);
    assert!(lines.contains(&"post_provision-after-failure".to_owned()), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("post_provision ")), "{lines:?}");

    // A post_ hook that fails fails the deploy the same way.
    edit_config(
        &svc,
        "  post_pack:\n",
        "  post_pack:\n  - command: \"echo 'lint: 3 problems'; exit 1\"\n",
    );
    edit_config(&svc, "  stack_definition_path: .porter/broken.json\n", "");
    let (error, cause, _) = failed(deploy(&local, &svc).await);
    assert_eq!(error, "HookFailed", "{cause}");
    porter_e2e::assert_says(
        &cause,
        "hook post_pack[0] failed: exit 1; its output ends: lint: 3 problems",
    );
    local.stop().await;
}

/// Asked to, the local stack fails a Docker hook instead of skipping it.
#[tokio::test]
async fn dockerfile_hook_fails_when_docker_is_required() {
    use porter_core::hooks::{self, HooksInput, Runner};
    use porter_local::hook_runner::Processes;
    use std::sync::Arc;
    let stack = porter_e2e::Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "dock");
    append_config(&svc, "hooks:\n  pre_pack:\n  - dockerfile: hooks/Dockerfile\n");
    let input = HooksInput {
        points: vec!["pre_pack".into()],
        failed: false,
        source: porter_core::pack::Source::Path(svc),
        environment: "staging".into(),
        variables: Default::default(),
        release: None,
        waves: Vec::new(),
        execution: None,
    };
    let run = |require_docker: bool| {
        let runner = Runner::Processes(Arc::new(Processes { require_docker }));
        let (aws, input) = (&stack.aws, &input);
        async move { hooks::run(aws, &runner, input, None).await }
    };
    let skipped = run(false).await.unwrap();
    let porter_core::phase::Step::Done { output } = skipped else {
        panic!("done at once")
    };
    assert!(
        output.ran.is_empty() && output.skipped[0].contains("no Docker engine"),
        "{output:?}"
    );
    let err = run(true).await.unwrap_err();
    assert_eq!(err.error_type(), "HookFailed");
    assert!(
        err.to_string()
            .contains("hook pre_pack[0] failed: it builds hooks/Dockerfile with Docker"),
        "{err}"
    );
}

/// A service folder zipped into the bucket, as a pipeline's source
/// artifact, with `hooks` in its config.
async fn source_in_s3(aws: &porter_core::aws::Aws, hooks: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "cbh");
    append_config(&svc, hooks);
    let zip = porter_core::pack::zip_folder(&svc).unwrap();
    let s3 = aws.s3();
    s3.create_bucket().bucket("cbh-artifacts").send().await.unwrap();
    s3.put_object()
        .bucket("cbh-artifacts")
        .key("source.zip")
        .body(zip.into())
        .send()
        .await
        .unwrap();
    ("cbh-artifacts".into(), "source.zip".into())
}

/// The CodeBuild path, as far as moto goes: one build of the hooks
/// project per hook, concurrent neighbours started together, the next
/// group once moto reports the last one's builds ended. (moto's CodeBuild
/// runs no buildspec and reports every build SUCCEEDED: what a build runs
/// is checked on its buildspec, and a failed build with a mock below.)
#[tokio::test]
async fn in_aws_each_hook_is_a_codebuild_build() {
    use aws_sdk_codebuild::types::{
        ArtifactsType, ComputeType, EnvironmentType, ProjectArtifacts, ProjectEnvironment, ProjectSource, SourceType,
    };
    use porter_core::hooks::{self, HooksInput, Runner};
    use porter_core::phase::Step;
    let stack = porter_e2e::Stack::start().await;
    let (bucket, key) = source_in_s3(
        &stack.aws,
        "hooks:\n  pre_pack:\n  - {command: make lint, concurrent: true}\n  - {command: make test, concurrent: true}\n  - dockerfile: hooks/Dockerfile\n",
    )
    .await;
    let codebuild = aws_sdk_codebuild::Client::new(stack.aws.sdk_config());
    codebuild
        .create_project()
        .name("porter-serverless-hooks")
        // moto wants a location even where AWS takes NO_SOURCE; every
        // build overrides it anyway.
        .source(
            ProjectSource::builder()
                .r#type(SourceType::S3)
                .location("cbh-artifacts/none.zip")
                .build()
                .unwrap(),
        )
        .artifacts(
            ProjectArtifacts::builder()
                .r#type(ArtifactsType::NoArtifacts)
                .build()
                .unwrap(),
        )
        .environment(
            ProjectEnvironment::builder()
                .r#type(EnvironmentType::LinuxContainer)
                .image("aws/codebuild/amazonlinux-x86_64-standard:5.0")
                .compute_type(ComputeType::BuildGeneral1Small)
                .build()
                .unwrap(),
        )
        .service_role("arn:aws:iam::123456789012:role/porter-serverless-hook")
        .send()
        .await
        .unwrap();
    let runner = Runner::CodeBuild {
        project: "porter-serverless-hooks".into(),
    };
    let input = HooksInput {
        points: vec!["pre_pack".into()],
        failed: false,
        source: porter_core::pack::Source::S3 { bucket, key },
        environment: "staging".into(),
        variables: Default::default(),
        release: None,
        waves: Vec::new(),
        execution: None,
    };
    let mut started = Vec::new();
    let mut state = None;
    let done = loop {
        match hooks::run(&stack.aws, &runner, &input, state.take()).await.unwrap() {
            Step::Pending { state: s, .. } => {
                started.push(s.builds.iter().map(|b| b.hook.clone()).collect::<Vec<_>>());
                state = Some(s);
            }
            Step::Done { output } => break output,
        }
        assert!(started.len() < 10, "{started:?}");
    };
    assert_eq!(
        started,
        [vec!["pre_pack[0]", "pre_pack[1]"], vec!["pre_pack[2]"]],
        "the concurrent pair together, then the Docker hook"
    );
    assert_eq!(done.ran, ["pre_pack[0]", "pre_pack[1]", "pre_pack[2]"]);
    let builds = codebuild
        .list_builds_for_project()
        .project_name("porter-serverless-hooks")
        .send()
        .await
        .unwrap();
    assert_eq!(builds.ids().len(), 3, "one build per hook");

    // The fence: a step of an execution that no longer holds the deploy
    // lease (an abort gave it back) runs nothing more, and stops the
    // builds it had started.
    porter_local::deploy::ensure_lease_table(stack.aws.sdk_config())
        .await
        .unwrap();
    let fenced = stack.aws.clone().with_fence(porter_local::names::LEASE_TABLE);
    let Step::Pending { state: first, .. } = hooks::run(&fenced, &runner, &input, None).await.unwrap() else {
        panic!("the first group's builds run")
    };
    let release: porter_core::release::Release = serde_json::from_value(serde_json::json!({
        "service": "cbh", "environment": "staging", "version": "0123456789ab", "revision": "0123456789ab",
        "sha256": "", "payload": {"bucket": "b", "key": "p"}, "manifest": {"bucket": "b", "key": "m"},
        "config": {"bucket": "b", "key": "c"}, "record": {"bucket": "b", "key": "r"}, "regions": ["us-east-1"],
    }))
    .unwrap();
    let lost = HooksInput {
        points: vec!["post_promote".into()],
        release: Some(porter_core::release::ReleaseRef::Inline(Box::new(release))),
        execution: Some("arn:aws:states:us-east-1:123456789012:execution:porter-serverless-deploy:aborted".into()),
        ..input.clone()
    };
    let err = hooks::run(&fenced, &runner, &lost, Some(first.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no longer holds the deploy lease"), "{err}");
    let ids: Vec<String> = first.builds.iter().map(|b| b.build.clone()).collect();
    assert_eq!(ids.len(), 2, "{first:?}");
    assert!(ids.iter().all(|id| err.contains(&format!("{id} stopped"))), "{err}");
    // (StopBuild's own answer said STOPPED: moto's BatchGetBuilds would
    // now report them SUCCEEDED, as it completes every build it reads.)
}

/// A build that fails (moto cannot make one): the hook fails the step with
/// its name and CodeBuild's own words for the failed phase.
#[tokio::test]
async fn a_failed_build_fails_the_hook_with_codebuilds_reason() {
    use aws_sdk_codebuild::operation::batch_get_builds::BatchGetBuildsOutput;
    use aws_sdk_codebuild::types::{Build, BuildPhase, BuildPhaseType, PhaseContext, StatusType};
    use aws_smithy_mocks::{mock, mock_client};
    let failed = mock!(aws_sdk_codebuild::Client::batch_get_builds).then_output(|| {
        BatchGetBuildsOutput::builder()
            .builds(
                Build::builder()
                    .id("porter-serverless-hooks:1")
                    .build_status(StatusType::Failed)
                    .phases(
                        BuildPhase::builder()
                            .phase_type(BuildPhaseType::Build)
                            .phase_status(StatusType::Failed)
                            .contexts(
                                PhaseContext::builder()
                                    .status_code("COMMAND_EXECUTION_ERROR")
                                    .message("Error while executing command: make test. Reason: exit status 2")
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let codebuild = mock_client!(aws_sdk_codebuild, [&failed]);
    let mut state = porter_core::hooks::HooksState {
        next: 1,
        builds: vec![porter_core::hooks::Started {
            hook: "post_promote[1]".into(),
            build: "porter-serverless-hooks:1".into(),
        }],
        ..Default::default()
    };
    let err = porter_core::hooks::codebuild_check(&codebuild, &mut state)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "HookFailed");
    let text = err.to_string();
    assert!(
        text.starts_with("hook post_promote[1] failed: CodeBuild build porter-serverless-hooks:1 ended FAILED")
            && text.contains("make test. Reason: exit status 2"),
        "{text}"
    );
}

/// A post_promote hook is a check after the cutover (a smoke test): when it
/// fails, every region serves the release before again, as after a failed
/// alarm gate, and the lease is free.
#[tokio::test]
async fn a_failing_post_promote_hook_puts_every_region_back() {
    let (local, _dir, svc) = started(Default::default(), "smoke").await;
    succeeded(deploy(&local, &svc).await);
    let before = serving(&local, "smoke").await;

    append_config(
        &svc,
        "hooks:\n  post_promote:\n  - command: \"echo \\\"smoke: $PORTER_INSTANCES at $PORTER_ELB_DNS_NAMES: /health answered 503\\\"; exit 1\"\n",
    );
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let (error, cause, _) = failed(deploy(&local, &svc).await);
    assert_eq!(error, "HookFailed", "{cause}");
    porter_e2e::assert_says(&cause, "hook post_promote[0] failed");
    porter_e2e::assert_says(&cause, "serves the release it replaced again");
    // The hook was told where release 2 served: its instances and load
    // balancers in both regions.
    porter_e2e::assert_says(&cause, "smoke: us-east-1:i-");
    porter_e2e::assert_says(&cause, ",us-west-2:i-");
    porter_e2e::assert_says(&cause, " at us-east-1:");
    assert_serving(
        &local,
        "smoke",
        &before,
        "every region serves release 1 again, from the same instances",
    )
    .await;
    assert_lease_free(&local, "smoke", "the lease is free").await;
    local.stop().await;
}
