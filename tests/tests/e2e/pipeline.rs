//! CodePipeline front doors on the local stack: the `pipeline` function in
//! the job loop, the phases as actions, and the job API's bookkeeping.

use std::time::Duration;

use porter_core::release::S3Object;
use porter_local::deploy::{self, Options};
use porter_local::job_sim::{self, Action, JobResult, Wake};
use porter_local::stack::{LocalStack, ARTIFACT_BUCKET};
use serde_json::{json, Value};

use porter_e2e::started;

/// An action of `function` with `user_parameters`, reading `input`, at
/// most `max_calls` calls with no waits, from no pipeline execution.
fn action(function: &str, user_parameters: impl ToString, input: Option<S3Object>, max_calls: usize) -> Action {
    Action {
        function: function.into(),
        user_parameters: user_parameters.to_string(),
        input,
        revision: None,
        wait: Duration::ZERO,
        max_calls,
        pipeline_execution: None,
    }
}

/// `name` in the artifact bucket, where the local pipeline keeps its
/// artifacts.
fn artifact(name: &str) -> Option<S3Object> {
    Some(S3Object {
        bucket: ARTIFACT_BUCKET.into(),
        key: format!("{}{name}", job_sim::artifact_prefix()),
    })
}

/// The local pipeline's deploy action of a revision of the source that
/// [`upload_source`] put, with `params`: one call.
fn deploy_action(params: Value) -> Action {
    Action {
        revision: Some("abcdef1234567".into()),
        ..action("porter-pipeline", params, artifact("src.zip"), 1)
    }
}

/// The message of the last result of job `id`, which must be a failure.
fn failure_of(local: &LocalStack, id: &str, what: &str) -> String {
    match local.jobs.results(id).last() {
        Some(JobResult::Failure { message, .. }) => message.clone(),
        other => panic!("{what}: expected a failure result, got {other:?}"),
    }
}

/// An S3 client of the local stack's moto, with the artifact bucket made.
async fn artifact_store(local: &LocalStack) -> aws_sdk_s3::Client {
    let s3 =
        porter_core::aws::Aws::unpinned(porter_local::moto::sdk_config(&local.moto.endpoint(), "us-east-1").await).s3();
    s3.create_bucket().bucket(ARTIFACT_BUCKET).send().await.unwrap();
    s3
}

fn opts(path: &std::path::Path) -> Options {
    Options {
        path: path.to_path_buf(),
        environment: "staging".into(),
        keep: 0,
        ..Default::default()
    }
}

/// `porter local pipeline` on the local stack, without waits; its log
/// goes to `log`.
async fn run_pipeline(
    local: &LocalStack,
    opts: &Options,
    kind: deploy::ActionKind,
    log: &mut Vec<u8>,
) -> (job_sim::ActionEnd, Option<deploy::Outcome>) {
    deploy::run_pipeline(&local.moto.endpoint(), &host(local), opts, kind, Duration::ZERO, log)
        .await
        .unwrap()
}

fn host(local: &LocalStack) -> String {
    format!("http://127.0.0.1:{}", local.host_port)
}

async fn invoke(local: &LocalStack, function: &str, event: &Value) -> (bool, Value) {
    reqwest_post(
        &format!("{}/2015-03-31/functions/{function}/invocations", host(local)),
        event,
    )
    .await
}

async fn reqwest_post(url: &str, body: &Value) -> (bool, Value) {
    let client = porter_e2e::http();
    let r = client.post(url).json(body).send().await.unwrap();
    let errored = r.headers().contains_key("x-amz-function-error");
    (errored, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn two_releases_through_the_pipeline_function() {
    let (local, _dir, svc) = started(Default::default(), "cp").await;
    let mut log = Vec::new();
    let (first, outcome) = run_pipeline(&local, &opts(&svc), deploy::ActionKind::Invoke, &mut log).await;
    let text = String::from_utf8_lossy(&log).to_string();
    assert!(first.succeeded, "{text}");
    assert!(
        first.calls >= 2,
        "the first call starts the execution and continues: {text}"
    );
    assert!(
        first.first_token.as_deref().unwrap().starts_with("porter1."),
        "the token is sealed: {:?}",
        first.first_token
    );
    let outcome = outcome.unwrap();
    assert!(outcome.succeeded);
    for region in ["us-west-2", "us-east-1"] {
        assert!(
            first.variables[&format!("stack_{region}")].starts_with("cp-staging-"),
            "{:?}",
            first.variables
        );
        assert!(
            first.variables.contains_key(&format!("elb_dns_{region}")),
            "{:?}",
            first.variables
        );
    }
    assert_eq!(
        first.variables["version"],
        outcome.release.as_ref().unwrap().version.as_str()
    );
    assert!(deploy::verify(&local.moto.endpoint(), &opts(&svc), &outcome)
        .await
        .unwrap()
        .is_empty());

    // Release 2 through the custom action type, its job found by the
    // worker's schedule alone (no STARTED event announced it).
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let (second, outcome2) = run_pipeline(
        &local,
        &opts(&svc),
        deploy::ActionKind::Custom(Wake::Schedule),
        &mut log,
    )
    .await;
    let text = String::from_utf8_lossy(&log).to_string();
    assert!(second.succeeded && second.calls >= 2, "{text}");
    assert!(text.contains("custom action Deploy/Custom/Porter/1"), "{text}");
    let outcome2 = outcome2.unwrap();
    assert_eq!(
        second.variables["version"],
        outcome2.release.as_ref().unwrap().version.as_str()
    );
    assert!(
        second.variables["stack_us-east-1"].starts_with("cp-staging-"),
        "{:?}",
        second.variables
    );
    for (region, r) in &outcome2.regions {
        assert!(r.deleted.is_empty(), "{region}: {:?}", r.deleted);
        assert_eq!(
            r.rollback,
            vec![outcome.regions[region].stack_name.clone()],
            "{region}: release 1 is kept to roll back to"
        );
    }
    assert!(deploy::verify(&local.moto.endpoint(), &opts(&svc), &outcome2)
        .await
        .unwrap()
        .is_empty());
    local.stop().await;
}

#[tokio::test]
async fn redelivered_first_job_starts_one_execution() {
    let (local, _dir, svc) = started(Default::default(), "cpdup").await;
    let prepared = upload_source(&local, &svc).await;
    let action = deploy_action(json!({"environment": "staging"}));
    local
        .jobs
        .made("11111111-2222-4333-8444-555555555555", &job_sim::MadeJob::of(&action));
    let event = job_sim::job_event("11111111-2222-4333-8444-555555555555", &action, None);
    invoke(&local, "porter-pipeline", &event).await;
    invoke(&local, "porter-pipeline", &event).await;
    let results = local.jobs.results("11111111-2222-4333-8444-555555555555");
    assert_eq!(results.len(), 2, "both deliveries were answered");
    let tokens: Vec<_> = results
        .iter()
        .map(|r| match r {
            JobResult::Success { continuation_token, .. } => continuation_token.clone().unwrap(),
            other @ JobResult::Failure { .. } => panic!("expected a continuation, got {other:?}"),
        })
        .collect();
    assert_eq!(tokens[0], tokens[1], "the same execution");
    let executions = prepared
        .sfn
        .list_executions()
        .state_machine_arn(&prepared.machine)
        .send()
        .await
        .unwrap();
    assert_eq!(executions.executions().len(), 1, "one execution for one job");
    local.stop().await;
}

/// A failed deploy fails the job with the failing state and its cause.
#[tokio::test]
async fn failed_deploy_fails_the_job_with_its_cause() {
    let (local, _dir, svc) = started(Default::default(), "cpfail").await;
    porter_e2e::break_provisioning(
        &svc,
        "  instance_type: t3.micro
",
    );
    let mut log = Vec::new();
    let (end, _) = run_pipeline(&local, &opts(&svc), deploy::ActionKind::Invoke, &mut log).await;
    assert!(!end.succeeded);
    assert!(end.message.contains("FAILED: StackFailed"), "{}", end.message);
    assert!(
        end.message.contains("provision failed: ") && end.message.contains(" in us-"),
        "{}",
        end.message
    );
    assert!(end.message.contains(porter_e2e::MISSING_GROUP), "{}", end.message);
    local.stop().await;
}

/// Bootstraps the service and puts its folder, zipped, at
/// `s3://porter-local-artifacts/src.zip`, as a source stage would.
async fn upload_source(local: &LocalStack, svc: &std::path::Path) -> deploy::Prepared {
    let mut log = Vec::new();
    let prepared = deploy::prepare(&local.moto.endpoint(), &opts(svc), &mut log)
        .await
        .unwrap();
    let s3 = prepared.aws.s3();
    s3.create_bucket().bucket(ARTIFACT_BUCKET).send().await.unwrap();
    let zip = porter_core::pack::zip_folder(&prepared.repo).unwrap();
    s3.put_object()
        .bucket(ARTIFACT_BUCKET)
        .key(format!("{}src.zip", job_sim::artifact_prefix()))
        .body(zip.into())
        .send()
        .await
        .unwrap();
    prepared
}

/// Runs one phase as a CodePipeline action through the job loop.
async fn phase_action(
    local: &LocalStack,
    function: &str,
    params: Value,
    input: Option<S3Object>,
) -> job_sim::ActionEnd {
    let action = Action {
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        ..action(function, params, input, 50)
    };
    let mut log = Vec::new();
    job_sim::run_action(&host(local), &action, &mut log).await.unwrap()
}

#[tokio::test]
async fn each_phase_is_a_codepipeline_action() {
    let (local, _dir, svc) = started(Default::default(), "cpph").await;
    upload_source(&local, &svc).await;
    let source = artifact("src.zip");

    let packed = phase_action(&local, "porter-pack", json!({"environment": "staging"}), source.clone()).await;
    assert!(packed.succeeded, "{}", packed.message);
    let release = packed.variables["release"].clone();
    assert!(
        release.starts_with(&format!(
            "s3://{ARTIFACT_BUCKET}/porter-deployment/cpph/staging/releases/{}.json",
            packed.variables["version"]
        )),
        "{release}"
    );

    for phase in ["porter-provision", "porter-promote", "porter-prune"] {
        let end = phase_action(
            &local,
            phase,
            json!({"environment": "staging", "release": release}),
            None,
        )
        .await;
        assert!(end.succeeded, "{phase}: {}", end.message);
        if phase == "porter-promote" {
            assert!(
                end.variables["stack_us-west-2"].starts_with("cpph-staging-"),
                "{:?}",
                end.variables
            );
        }
        if phase == "porter-prune" {
            assert_eq!(end.variables["deleted_us-east-1"], "none");
        }
    }

    // Wrong environment for the release: a clear failure, not a hang.
    let end = phase_action(
        &local,
        "porter-promote",
        json!({"environment": "production", "release": release}),
        None,
    )
    .await;
    assert!(!end.succeeded);
    assert!(
        end.message.contains("packed for environment `staging`"),
        "{}",
        end.message
    );
    local.stop().await;
}

/// Bad UserParameters and missing artifacts fail the job with a message
/// that says what is wrong (and repeats no variable's value); a malformed
/// job event fails the job too, never leaving it hanging.
#[tokio::test]
async fn bad_parameters_or_artifacts_fail_the_job() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let cases = [
        ("porter-pack", "not json", None, "UserParameters must be a JSON object"),
        ("porter-pack", "{}", None, "must name the environment"),
        (
            "porter-pack",
            r#"{"environment": "staging"}"#,
            None,
            "needs the source artifact",
        ),
        (
            "porter-pack",
            r#"{"environment": "staging"}"#,
            artifact("nope.zip"),
            "s3://porter-local-artifacts/porter-pipeline/nope.zip",
        ),
        (
            "porter-provision",
            r#"{"environment": "staging"}"#,
            None,
            "needs `release`",
        ),
        (
            "porter-promote",
            r#"{"environment": "staging", "release": "not-a-url"}"#,
            None,
            "must be s3://",
        ),
        (
            "porter-prune",
            r#"{"environment": "staging", "release": "s3://b/k", "keep": "two"}"#,
            None,
            "s3://b/k",
        ),
        (
            "porter-pipeline",
            r#"{"environment": "staging"}"#,
            None,
            "needs the source artifact",
        ),
        (
            "porter-pipeline",
            r#"{"environment": "staging", "variables": ["BUCKET=b"]}"#,
            artifact("source.zip"),
            "`variables` must be an object of names to strings",
        ),
        (
            "porter-pipeline",
            r#"{"environment": "staging", "variables": {"TOKEN": 424242}}"#,
            artifact("source.zip"),
            "`variables.TOKEN` must be a string",
        ),
    ];
    artifact_store(&local).await;
    for (function, params, input, expected) in cases {
        let action = action(function, params, input, 3);
        let mut log = Vec::new();
        let end = job_sim::run_action(&host(&local), &action, &mut log).await.unwrap();
        assert!(!end.succeeded, "{function} {params}");
        assert!(end.message.contains(expected), "{function} {params}: {}", end.message);
        assert!(
            !end.message.contains("424242"),
            "a variable's value is never repeated: {}",
            end.message
        );
    }
    // A malformed job event is reported as a failed job, never left hanging.
    let (_, answer) = invoke(
        &local,
        "porter-provision",
        &json!({"CodePipeline.job": {"id": "job-malformed", "data": {}}}),
    )
    .await;
    assert_eq!(answer["reported"], "failure", "{answer}");
    let message = failure_of(&local, "job-malformed", "a malformed job");
    assert!(message.contains("malformed"), "{message}");
    local.stop().await;
}

#[tokio::test]
async fn the_job_api_holds_functions_to_codepipeline_rules() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let url = format!("{}/", host(&local));
    let client = porter_e2e::http();
    let call = |target: &'static str, body: Value| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(url)
                .header("x-amz-target", format!("CodePipeline_20150709.{target}"))
                .header("content-type", "application/x-amz-json-1.1")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for (target, body, status) in [
        // A continuation token longer than CodePipeline's 2048 characters.
        (
            "PutJobSuccessResult",
            json!({"jobId": "j1", "continuationToken": "x".repeat(2049)}),
            400,
        ),
        // Output variables and a continuation token at once.
        (
            "PutJobSuccessResult",
            json!({"jobId": "j1", "continuationToken": "t", "outputVariables": {"a": "b"}}),
            400,
        ),
        // A failure without a message.
        (
            "PutJobFailureResult",
            json!({"jobId": "j1", "failureDetails": {"type": "JobFailed"}}),
            400,
        ),
        (
            "PutJobSuccessResult",
            json!({"jobId": "j1", "outputVariables": {"a": "b"}}),
            200,
        ),
    ] {
        assert_eq!(call(target, body.clone()).await, status, "{target} {body}");
    }
    assert!(local.jobs.results("j1").len() == 1);
    local.stop().await;
}

/// State too large for a continuation token travels through the artifact
/// bucket, bound to the token: a swapped object is refused.
#[tokio::test]
async fn large_state_travels_through_the_artifact_bucket() {
    let stack = porter_e2e::Stack::start().await;
    let s3 = stack.aws.s3();
    s3.create_bucket().bucket(ARTIFACT_BUCKET).send().await.unwrap();
    let mut ctx = porter_lambda::Context::new(stack.aws.clone());
    ctx.artifact_bucket = Some(ARTIFACT_BUCKET.into());
    let action = action("porter-provision", "{}", None, 1);
    let (job, _) = porter_lambda::codepipeline::parse(&ctx, job_sim::job_event("job-big", &action, None)).unwrap();
    let binding = porter_lambda::token::Binding {
        function: "provision".into(),
        environment: "staging".into(),
        release: Some("s3://b/r.json".into()),
        origin: None,
    };
    let small = json!({"us-west-2": {"stack_id": "arn:x", "checks": 1}});
    let token = porter_lambda::codepipeline::token_for(&ctx, &job, &binding, &small)
        .await
        .unwrap();
    assert!(token.starts_with("porter1."), "small state is sealed inline: {token}");
    assert_eq!(
        porter_lambda::codepipeline::state_from(&ctx, &binding, &token)
            .await
            .unwrap(),
        small
    );
    let big = json!({"regions": (0..200).map(|i| format!("arn:aws:cloudformation:us-west-2:123456789012:stack/s-{i}")).collect::<Vec<_>>()});
    let token = porter_lambda::codepipeline::token_for(&ctx, &job, &binding, &big)
        .await
        .unwrap();
    assert!(token.len() <= porter_lambda::codepipeline::TOKEN_LIMIT);
    let stored = "porter-continuations/job-big.json".to_owned();
    assert!(porter_core::store::exists(
        &s3,
        &S3Object {
            bucket: ARTIFACT_BUCKET.into(),
            key: stored.clone()
        }
    )
    .await
    .unwrap());
    assert_eq!(
        porter_lambda::codepipeline::state_from(&ctx, &binding, &token)
            .await
            .unwrap(),
        big
    );
    // The stored state swapped for another: the token does not follow it.
    s3.put_object()
        .bucket(ARTIFACT_BUCKET)
        .key(&stored)
        .body(b"{\"regions\": []}".to_vec().into())
        .send()
        .await
        .unwrap();
    let err = porter_lambda::codepipeline::state_from(&ctx, &binding, &token)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not the one it was sealed with"), "{err}");
}

/// A continuation token is untrusted input: one this product did not seal
/// for this action ends the job with a failure that says so, for a phase
/// (an inline state naming another service's stack) and for `pipeline`
/// (another state machine's execution, an ARN as old tokens were).
#[tokio::test]
async fn forged_or_foreign_continuation_tokens_fail_the_job() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    artifact_store(&local).await;
    let source = artifact("source.zip");
    let forged_state = r#"{"us-west-2": {"stack_id": "arn:aws:cloudformation:us-west-2:123456789012:stack/other-service-prod/1", "checks": 1}}"#;
    let other_execution = "arn:aws:states:us-east-1:123456789012:execution:someone-elses-machine:x";
    let sealed_for_production = {
        // A real token of this stack, but for another environment.
        let mut ctx = porter_lambda::Context::new(porter_core::aws::Aws::unpinned(
            porter_local::moto::sdk_config(&local.moto.endpoint(), "us-east-1").await,
        ));
        ctx.artifact_bucket = Some(ARTIFACT_BUCKET.into());
        let key = porter_lambda::token::key(&ctx).await.unwrap();
        let binding = porter_lambda::token::Binding {
            function: "pipeline".into(),
            environment: "production".into(),
            release: None,
            origin: None,
        };
        porter_lambda::token::seal(&key, &binding, other_execution)
    };
    let cases = [
        (
            "porter-provision",
            r#"{"environment": "staging", "release": "s3://b/r.json"}"#,
            forged_state.to_owned(),
            "not a sealed porter token",
        ),
        (
            "porter-pipeline",
            r#"{"environment": "staging"}"#,
            other_execution.to_owned(),
            "not a sealed porter token",
        ),
        (
            "porter-pipeline",
            r#"{"environment": "staging"}"#,
            sealed_for_production,
            "for environment `production`",
        ),
        (
            "porter-pipeline",
            r#"{"environment": "staging"}"#,
            "porter1.e30=.AAAA".to_owned(),
            "does not match",
        ),
    ];
    for (i, (function, params, token, expected)) in cases.into_iter().enumerate() {
        let action = action(function, params, source.clone(), 1);
        let id = format!("job-forged-{i}");
        local.jobs.made(&id, &job_sim::MadeJob::of(&action));
        let (_, answer) = invoke(&local, function, &job_sim::job_event(&id, &action, Some(&token))).await;
        assert_eq!(answer["reported"], "failure", "{function}: {answer}");
        let message = failure_of(&local, &id, function);
        assert!(message.contains("was not issued here"), "{function}: {message}");
        assert!(message.contains(expected), "{function} {expected}: {message}");
    }
    local.stop().await;
}

/// A stopped pipeline execution stops its deploy and gives its lease back;
/// an event that says STOPPED while CodePipeline says otherwise stops
/// nothing.
#[tokio::test]
async fn stopped_pipeline_execution_stops_its_deploy() {
    // provision's call (one for both regions) fails retryably twice: the
    // deploy holds the lease for about six seconds while the pipeline is
    // stopped.
    let faults = porter_local::invoke_host::Faults::default();
    let (local, _dir, svc) = started(porter_local::stack::Options::with_faults(faults.clone()), "cpstop").await;
    let prepared = upload_source(&local, &svc).await;
    faults.fail_next(porter_lambda::Phase::Provision, 2);
    let pipeline_execution = job_sim::PipelineExecution {
        pipeline: job_sim::LOCAL_PIPELINE.into(),
        id: "0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e".into(),
        action: "Deploy".into(),
    };
    let action = deploy_action(json!({"environment": "staging"}));
    let job = "22222222-3333-4444-8555-666666666666";
    local.jobs.register(&pipeline_execution, job);
    local.jobs.made(
        job,
        &job_sim::MadeJob {
            execution: pipeline_execution.clone(),
            ..job_sim::MadeJob::of(&action)
        },
    );
    invoke(&local, "porter-pipeline", &job_sim::job_event(job, &action, None)).await;
    let arn = match local.jobs.results(job).last() {
        Some(JobResult::Success {
            external_id: Some(arn), ..
        }) => arn.clone(),
        other => panic!("expected the deploy started, got {other:?}"),
    };
    // Wait until the deploy holds the lease.
    let ddb = aws_sdk_dynamodb::Client::new(prepared.aws.sdk_config());
    let holder = || async {
        ddb.get_item()
            .table_name(porter_local::stack::LEASE_TABLE)
            .key(
                "lease",
                aws_sdk_dynamodb::types::AttributeValue::S("cpstop/staging".into()),
            )
            .send()
            .await
            .unwrap()
            .item()
            .and_then(|i| i.get("execution")?.as_s().ok().cloned())
    };
    for _ in 0..100 {
        if holder().await.as_deref() == Some(arn.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        holder().await.as_deref(),
        Some(arn.as_str()),
        "the deploy took the lease"
    );

    let event = |state: &str| {
        let mut e: Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/codepipeline-execution-stopped.json"),
            )
            .unwrap(),
        )
        .unwrap();
        e["detail"]["pipeline"] = json!(pipeline_execution.pipeline);
        e["detail"]["execution-id"] = json!(pipeline_execution.id);
        e["detail"]["state"] = json!(state);
        e
    };
    // Still running: nothing to do.
    let (errored, answer) = invoke(&local, "porter-pipeline", &event("RESUMED")).await;
    assert!(
        !errored && answer["ignored"].as_str().unwrap().contains("RESUMED"),
        "{answer}"
    );

    // An event that says STOPPED while CodePipeline says the execution
    // goes on stops nothing.
    let (errored, answer) = invoke(&local, "porter-pipeline", &event("STOPPED")).await;
    assert!(
        !errored && answer["ignored"].as_str().unwrap().contains("InProgress"),
        "{answer}"
    );
    assert_eq!(
        holder().await.as_deref(),
        Some(arn.as_str()),
        "the deploy still holds its lease"
    );

    let codepipeline = aws_sdk_codepipeline::Client::new(
        &porter_local::moto::sdk_config(&local.endpoint(), porter_local::stack::REGION).await,
    );
    codepipeline
        .stop_pipeline_execution()
        .pipeline_name(&pipeline_execution.pipeline)
        .pipeline_execution_id(&pipeline_execution.id)
        .send()
        .await
        .unwrap();
    let (errored, answer) = invoke(&local, "porter-pipeline", &event("STOPPED")).await;
    assert!(!errored, "{answer}");
    assert_eq!(answer["stopped"], json!([arn]), "{answer}");
    assert_eq!(answer["leases_given"], json!(["cpstop/staging"]), "{answer}");
    // AWS ends a stopped execution ABORTED. moto's interpreter, stopped
    // during a Retry back-off (here: provision's), ends it FAILED with
    // `States.Runtime` once the back-off is over; either way it goes no
    // further than the state it was in.
    let mut status = String::new();
    for _ in 0..60 {
        let d = prepared
            .sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        status = d.status().as_str().to_owned();
        if status != "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(status == "ABORTED" || status == "FAILED", "{status}");
    let history = crate::support::history(&prepared.sfn, &arn).await;
    assert!(
        !crate::support::entered(&history, "Promote") && !crate::support::entered(&history, "GiveLease"),
        "the stopped deploy went no further"
    );
    assert!(holder().await.is_none(), "the lease was given back");
    // A second delivery of the event finds nothing left to stop.
    let (errored, answer) = invoke(&local, "porter-pipeline", &event("STOPPED")).await;
    assert!(!errored && answer["stopped"] == json!([]), "{answer}");

    let mut forged = event("STOPPED");
    forged["detail"]["execution-id"] = json!("../../x");
    let (errored, answer) = invoke(&local, "porter-pipeline", &forged).await;
    assert!(errored, "{answer}");
    local.stop().await;
}

/// A retried invocation of a job already answered leaves its one result.
#[tokio::test]
async fn retried_invocation_of_answered_job_is_harmless() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let action = action("porter-pipeline", "not json", None, 1);
    let job = "33333333-4444-4555-8666-777777777777";
    let event = job_sim::job_event(job, &action, None);
    let (errored, first) = invoke(&local, "porter-pipeline", &event).await;
    assert!(!errored && first["reported"] == "failure", "{first}");
    // Lambda delivers it again: CodePipeline refuses a second result, and
    // the function neither errors (which would make Lambda retry once more)
    // nor changes what the job says.
    let (errored, again) = invoke(&local, "porter-pipeline", &event).await;
    assert!(!errored && again["reported"] == "already answered", "{again}");
    assert_eq!(local.jobs.results(job).len(), 1);
    local.stop().await;
}

/// Queues a custom action job with `configuration` on the local stack.
async fn queue_custom_job(local: &LocalStack, configuration: &[(&str, &str)]) -> String {
    let req = job_sim::CustomJobRequest {
        action_type: job_sim::porter_action_type(),
        configuration: configuration
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        input: None,
        revision: None,
    };
    porter_e2e::http()
        .post(format!("{}/porter-local/custom-jobs", host(local)))
        .json(&req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A custom action job that another worker acknowledged first is not
/// taken twice.
#[tokio::test]
async fn custom_job_acknowledged_elsewhere_is_not_taken() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let id = queue_custom_job(&local, &[("Environment", "staging")]).await;
    // Another worker polls and acknowledges it first.
    let sdk = porter_local::moto::sdk_config(&host(&local), porter_local::stack::REGION).await;
    let cp = aws_sdk_codepipeline::Client::new(&sdk);
    let polled = cp
        .poll_for_jobs()
        .action_type_id(porter_lambda::job_worker::action_type())
        .max_batch_size(5)
        .send()
        .await
        .unwrap();
    let job = &polled.jobs()[0];
    assert_eq!(job.id(), Some(id.as_str()));
    let stale = cp
        .acknowledge_job()
        .job_id(&id)
        .nonce("not-the-nonce")
        .send()
        .await
        .unwrap_err();
    assert!(
        stale.as_service_error().is_some_and(|e| e.is_invalid_nonce_exception()),
        "{stale:?}"
    );
    cp.acknowledge_job()
        .job_id(&id)
        .nonce(job.nonce().unwrap())
        .send()
        .await
        .unwrap();
    // Woken, the worker finds nothing to take, and the job has no result
    // from it.
    let (errored, answer) = invoke(&local, "porter-pipeline", &job_sim::wake_event(Wake::Event)).await;
    assert!(!errored, "{answer}");
    assert_eq!(answer["jobs"], json!([]), "{answer}");
    assert!(local.jobs.results(&id).is_empty());
    local.stop().await;
}

/// A custom action with a bad configuration fails its job, saying why.
#[tokio::test]
async fn custom_action_bad_configuration_fails_its_job() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let id = queue_custom_job(&local, &[("Environment", "staging"), ("Keep", "many")]).await;
    let (errored, answer) = invoke(&local, "porter-pipeline", &job_sim::wake_event(Wake::Schedule)).await;
    assert!(!errored, "{answer}");
    match local.jobs.results(&id).as_slice() {
        [JobResult::Failure { message, .. }] => {
            assert!(message.contains("Keep must be a whole number, not `many`"), "{message}")
        }
        other => panic!("expected one failure, got {other:?}"),
    }
    // The job is answered: a second wake-up takes nothing.
    let (_, again) = invoke(&local, "porter-pipeline", &job_sim::wake_event(Wake::Schedule)).await;
    assert_eq!(again["jobs"], json!([]), "{again}");
    local.stop().await;
}

/// A rollout that bakes longer than a CodePipeline action may run is
/// refused at pack, before anything changes.
#[tokio::test]
async fn rollout_longer_than_an_action_is_refused() {
    let (local, _dir, svc) = started(Default::default(), "cplong").await;
    let opts = Options {
        rollout: Some(porter_core::config::RolloutOverride {
            waves: Some(vec![vec!["us-west-2".into()], vec!["us-east-1".into()]]),
            bake_seconds: Some(86_400),
            ..Default::default()
        }),
        ..opts(&svc)
    };
    let mut log = Vec::new();
    let (end, outcome) = run_pipeline(&local, &opts, deploy::ActionKind::Invoke, &mut log).await;
    let text = String::from_utf8_lossy(&log).to_string();
    assert!(!end.succeeded, "{text}");
    assert!(
        end.message
            .contains("the rollout bakes 172800 s in all (2 wave(s) of 86400 s)")
            && end.message.contains("a CodePipeline action runs at most 24 hours"),
        "{}",
        end.message
    );
    // Refused at pack: no region was touched, and the lease was never taken.
    let outcome = outcome.unwrap();
    assert!(outcome.regions.is_empty(), "{:?}", outcome.regions);
    local.stop().await;
}

/// A job is read back from CodePipeline before anything runs: one it never
/// made is refused without a result, and one it made is refused (and
/// failed, saying why) when its event does not say what CodePipeline
/// holds, or when its pipeline is not the installation's.
#[tokio::test]
async fn jobs_codepipeline_did_not_make_are_refused() {
    let (local, _dir, svc) = started(Default::default(), "cpforge").await;
    upload_source(&local, &svc).await;
    let staging = deploy_action(json!({"environment": "staging"}));

    // Never made: an error, no result, no deploy.
    let job = "44444444-5555-4666-8777-888888888888";
    let (errored, answer) = invoke(&local, "porter-pipeline", &job_sim::job_event(job, &staging, None)).await;
    assert!(errored, "{answer}");
    assert!(answer.to_string().contains("not one CodePipeline made"), "{answer}");
    assert!(local.jobs.results(job).is_empty());

    let refused = |id: &str, made: job_sim::MadeJob, sent: Action, why: &'static str| {
        let local = &local;
        let id = id.to_owned();
        async move {
            local.jobs.made(&id, &made);
            let (errored, answer) = invoke(local, "porter-pipeline", &job_sim::job_event(&id, &sent, None)).await;
            assert!(!errored, "{answer}");
            let message = failure_of(local, &id, why);
            assert!(message.contains(why), "{why}: {message}");
        }
    };
    // Made for staging, handed over as production.
    refused(
        "55555555-6666-4777-8888-999999999991",
        job_sim::MadeJob::of(&staging),
        deploy_action(json!({"environment": "production"})),
        "UserParameters are not the ones",
    )
    .await;
    // Another pipeline of the account.
    refused(
        "55555555-6666-4777-8888-999999999992",
        job_sim::MadeJob {
            execution: job_sim::PipelineExecution {
                pipeline: "someone-else".into(),
                id: "e".into(),
                action: "Deploy".into(),
            },
            ..job_sim::MadeJob::of(&staging)
        },
        staging.clone(),
        "not this installation's",
    )
    .await;
    // An input artifact from outside the pipeline's own store.
    let outside = Action {
        input: Some(S3Object {
            bucket: ARTIFACT_BUCKET.into(),
            key: "elsewhere/src.zip".into(),
        }),
        ..deploy_action(json!({"environment": "staging"}))
    };
    refused(
        "55555555-6666-4777-8888-999999999993",
        job_sim::MadeJob::of(&outside),
        outside.clone(),
        "artifact store",
    )
    .await;
    local.stop().await;
}
