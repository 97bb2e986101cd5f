//! Faults moto cannot produce: throttling, 500s, AccessDenied, and a
//! CodePipeline that will not take the result. Every path ends in a job
//! result, or in an error that makes Lambda retry when the result itself
//! could not be reported.

use std::time::Duration;

use aws_sdk_codepipeline::operation::put_job_failure_result::PutJobFailureResultOutput;
use aws_sdk_codepipeline::operation::put_job_success_result::PutJobSuccessResultOutput;
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
use aws_sdk_sfn::operation::get_execution_history::GetExecutionHistoryOutput;
use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
use aws_sdk_sfn::types::ExecutionStatus;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::body::SdkBody;
use porter_core::aws::Aws;
use porter_lambda::{handle, Context, Function, Phase};
use serde_json::Value;

const MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:porter-deploy";

fn event(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An AWS that answers every call with `status` and an error `code`.
fn failing_aws(status: u16, code: &'static str) -> Aws {
    let client = aws_smithy_http_client::test_util::infallible_client_fn(move |_req| {
        let body = format!(
            r#"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected {code}</Message></Error></ErrorResponse>"#
        );
        http::Response::builder()
            .status(status)
            .header("content-type", "text/xml")
            .body(SdkBody::from(body))
            .unwrap()
    });
    Aws::unpinned(
        aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
                aws_sdk_s3::config::Credentials::for_tests(),
            ))
            .http_client(client)
            .behavior_version(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    )
}

fn context(aws: Aws, sfn: aws_sdk_sfn::Client, cp: aws_sdk_codepipeline::Client) -> Context {
    let mut ctx = Context::new(aws).with_sfn(sfn).with_codepipeline(cp);
    ctx.state_machine_arn = Some(MACHINE.into());
    // These jobs are the mocks' own: there is no pipeline to read them
    // back from (the verification itself is tested on the local stack).
    ctx.unverified_jobs = true;
    // The token key as if already read: these clients' S3 only fails.
    ctx.token_key.set(TOKEN_KEY.to_vec()).unwrap();
    ctx
}

const TOKEN_KEY: [u8; 32] = [7; 32];

fn no_retries(b: aws_sdk_sfn::config::Builder) -> aws_sdk_sfn::config::Builder {
    b.retry_config(aws_sdk_sfn::config::retry::RetryConfig::disabled())
}

/// The pipeline function's error on a first job event when Step Functions
/// is `sfn` and CodePipeline answers the report with `report`: it must be
/// `ReportFailed`, so that Lambda retries.
async fn unreported(sfn: aws_sdk_sfn::Client, report: &Rule) -> porter_lambda::FunctionError {
    let ctx = context(failing_aws(500, "Unused"), sfn, reporting(report));
    let err = handle(&ctx, Function::Pipeline, event("codepipeline-job-first.json"))
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "ReportFailed");
    err
}

/// A CodePipeline that answers `report` once, never retried.
fn reporting(report: &Rule) -> aws_sdk_codepipeline::Client {
    mock_client!(
        aws_sdk_codepipeline,
        RuleMode::Sequential,
        [report],
        |b: aws_sdk_codepipeline::config::Builder| b
            .retry_config(aws_sdk_codepipeline::config::retry::RetryConfig::disabled())
    )
}

/// A CodePipeline that accepts one failure whose message holds `needle`.
fn expect_failure(needle: &'static str) -> Rule {
    mock!(aws_sdk_codepipeline::Client::put_job_failure_result)
        .match_requests(move |r| r.failure_details().is_some_and(|f| f.message().contains(needle)))
        .then_output(|| PutJobFailureResultOutput::builder().build())
}

fn json_error(status: u16, kind: &'static str) -> impl Fn() -> http::Response<SdkBody> + Send + Sync {
    move || {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.0")
            .body(SdkBody::from(format!(
                r#"{{"__type":"{kind}","message":"injected {kind}"}}"#
            )))
            .unwrap()
    }
}

/// The same, as a mock's HTTP response.
fn http_error(status: u16, kind: &'static str) -> impl Fn() -> aws_smithy_runtime_api::http::Response + Send + Sync {
    let resp = json_error(status, kind);
    move || {
        let (parts, body) = resp().into_parts();
        aws_smithy_runtime_api::http::Response::try_from(http::Response::from_parts(parts, body)).unwrap()
    }
}

/// A deploy execution that is still running.
fn running() -> DescribeExecutionOutput {
    DescribeExecutionOutput::builder()
        .execution_arn("arn:aws:states:us-east-1:123456789012:execution:porter-deploy:x")
        .state_machine_arn(MACHINE)
        .status(ExecutionStatus::Running)
        .start_date(aws_smithy_types::DateTime::from_secs(0))
        .build()
        .unwrap()
}

fn start_fails(status: u16, kind: &'static str) -> Rule {
    mock!(aws_sdk_sfn::Client::start_execution).then_http_response(http_error(status, kind))
}

/// Starting the execution throttled, with a 500 or denied fails the job
/// with a message that says what to do.
#[tokio::test]
async fn refused_start_fails_the_job_with_what_to_do() {
    for (status, kind, needle) in [
        (400, "ThrottlingException", "retry the stage"),
        (500, "InternalFailure", "retrying may help"),
        (400, "AccessDeniedException", "grant the permission"),
    ] {
        let start = start_fails(status, kind);
        let failed = expect_failure(needle);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::Sequential, [&start], no_retries);
        let cp = mock_client!(aws_sdk_codepipeline, [&failed]);
        let ctx = context(failing_aws(500, "Unused"), sfn, cp);
        let out = handle(&ctx, Function::Pipeline, event("codepipeline-job-first.json"))
            .await
            .unwrap();
        assert_eq!(out["reported"], "failure", "{kind}");
        assert_eq!(failed.num_calls(), 1, "{kind}: one failure result naming {needle:?}");
    }
}

#[tokio::test]
async fn a_500_that_succeeds_on_retry_reports_progress() {
    let describe = mock!(aws_sdk_sfn::Client::describe_execution)
        .sequence()
        .http_status(500, None)
        .output(running)
        .build();
    let history = mock!(aws_sdk_sfn::Client::get_execution_history).then_output(|| {
        GetExecutionHistoryOutput::builder()
            .set_events(Some(vec![]))
            .build()
            .unwrap()
    });
    let progress = mock!(aws_sdk_codepipeline::Client::put_job_success_result)
        .match_requests(|r| r.continuation_token().is_some_and(|t| t.starts_with("porter1.")))
        .then_output(|| PutJobSuccessResultOutput::builder().build());
    let sfn = mock_client!(
        aws_sdk_sfn,
        RuleMode::MatchAny,
        [&describe, &history],
        |b: aws_sdk_sfn::config::Builder| b
            .retry_config(
                aws_sdk_sfn::config::retry::RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(1))
            )
            .sleep_impl(aws_smithy_async::rt::sleep::SharedAsyncSleep::new(
                aws_smithy_async::rt::sleep::TokioSleep::new()
            ))
    );
    let cp = mock_client!(aws_sdk_codepipeline, [&progress]);
    let ctx = context(failing_aws(500, "Unused"), sfn, cp);
    let (continuation, _) = sealed_continuation();
    let out = handle(&ctx, Function::Pipeline, continuation).await.unwrap();
    assert_eq!(out["reported"], "continue");
    assert_eq!(describe.num_calls(), 2, "the 500, then the retry that worked");
    assert_eq!(progress.num_calls(), 1);
}

/// When CodePipeline will not take the result (throttled, or a 500), the
/// function errors, so that Lambda retries it.
#[tokio::test]
async fn unreported_result_errors_so_lambda_retries() {
    // Success path: the execution starts, reporting it is throttled.
    let start = mock!(aws_sdk_sfn::Client::start_execution).then_output(|| {
        StartExecutionOutput::builder()
            .execution_arn("arn:aws:states:us-east-1:123456789012:execution:porter-deploy:j")
            .start_date(aws_smithy_types::DateTime::from_secs(0))
            .build()
            .unwrap()
    });
    let report = mock!(aws_sdk_codepipeline::Client::put_job_success_result)
        .then_http_response(http_error(400, "ThrottlingException"));
    let err = unreported(mock_client!(aws_sdk_sfn, [&start]), &report).await;
    assert!(err.to_string().contains("ThrottlingException"), "{err}");

    // Failure path: the job failed, and reporting that failed with a 500.
    let denied = start_fails(400, "AccessDeniedException");
    let report = mock!(aws_sdk_codepipeline::Client::put_job_failure_result)
        .then_http_response(http_error(500, "InternalFailure"));
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::Sequential, [&denied], no_retries);
    unreported(sfn, &report).await;
}

#[tokio::test]
async fn every_phase_action_reports_an_aws_fault_as_a_job_failure() {
    // Every AWS call the phases make (STS, S3, CloudFormation, ELB, Auto
    // Scaling) answers the fault; the job must still get its result.
    for (status, code, needle) in [
        (403, "AccessDenied", "access denied"),
        (503, "ServiceUnavailable", "retrying may help"),
    ] {
        for (phase, file) in [
            (Phase::Pack, "codepipeline-job-first.json"),
            (Phase::Provision, "codepipeline-job-provision.json"),
            (Phase::Promote, "codepipeline-job-provision.json"),
            (Phase::Prune, "codepipeline-job-provision.json"),
        ] {
            let failed = expect_failure(needle);
            let cp = mock_client!(aws_sdk_codepipeline, [&failed]);
            let sfn = mock_client!(aws_sdk_sfn, [&start_fails(500, "Unused")]);
            let ctx = context(failing_aws(status, code), sfn, cp);
            let mut ev = event(file);
            ev["CodePipeline.job"]["data"]["actionConfiguration"]["configuration"]["UserParameters"] = match phase {
                Phase::Pack => Value::String(r#"{"environment": "staging"}"#.into()),
                _ => ev["CodePipeline.job"]["data"]["actionConfiguration"]["configuration"]["UserParameters"].clone(),
            };
            let out = handle(&ctx, Function::Phase(phase), ev).await.unwrap();
            assert_eq!(out["reported"], "failure", "{phase:?} {code}");
            assert_eq!(failed.num_calls(), 1, "{phase:?} {code}: a failure naming {needle:?}");
        }
    }
}

/// The sample continuation event, with its execution ARN sealed as the
/// first call would have sealed it; and that ARN.
fn sealed_continuation() -> (Value, String) {
    let mut continuation = event("codepipeline-job-continuation.json");
    let arn = continuation["CodePipeline.job"]["data"]["continuationToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let binding = porter_lambda::token::Binding {
        function: "pipeline".into(),
        environment: "staging".into(),
        release: None,
        origin: None,
    };
    continuation["CodePipeline.job"]["data"]["continuationToken"] =
        Value::String(porter_lambda::token::seal(&TOKEN_KEY, &binding, &arn));
    (continuation, arn)
}

#[tokio::test]
async fn a_throttled_status_read_answers_with_the_same_token() {
    let (continuation, _) = sealed_continuation();
    let token = continuation["CodePipeline.job"]["data"]["continuationToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let describe =
        mock!(aws_sdk_sfn::Client::describe_execution).then_http_response(http_error(400, "ThrottlingException"));
    let again = mock!(aws_sdk_codepipeline::Client::put_job_success_result)
        .match_requests(move |r| r.continuation_token() == Some(token.as_str()))
        .then_output(|| PutJobSuccessResultOutput::builder().build());
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&describe], no_retries);
    let cp = mock_client!(aws_sdk_codepipeline, [&again]);
    let ctx = context(failing_aws(500, "Unused"), sfn, cp);
    let out = handle(&ctx, Function::Pipeline, continuation).await.unwrap();
    assert_eq!(out["reported"], "continue", "{out}");
    assert_eq!(again.num_calls(), 1, "the job goes on with the token it came with");
}

#[tokio::test]
async fn a_failed_job_stops_the_execution_it_followed() {
    let (continuation, arn) = sealed_continuation();
    let describe = mock!(aws_sdk_sfn::Client::describe_execution).then_output(running);
    let history =
        mock!(aws_sdk_sfn::Client::get_execution_history).then_http_response(http_error(400, "AccessDeniedException"));
    let stop_arn = arn.clone();
    let stop = mock!(aws_sdk_sfn::Client::stop_execution)
        .match_requests(move |r| r.execution_arn() == Some(stop_arn.as_str()))
        .then_output(|| {
            aws_sdk_sfn::operation::stop_execution::StopExecutionOutput::builder()
                .stop_date(aws_smithy_types::DateTime::from_secs(0))
                .build()
                .unwrap()
        });
    let failed = expect_failure("was stopped");
    let sfn = mock_client!(
        aws_sdk_sfn,
        RuleMode::MatchAny,
        [&describe, &history, &stop],
        no_retries
    );
    let cp = mock_client!(aws_sdk_codepipeline, [&failed]);
    let ctx = context(failing_aws(500, "Unused"), sfn, cp);
    let out = handle(&ctx, Function::Pipeline, continuation).await.unwrap();
    assert_eq!(out["reported"], "failure", "{out}");
    assert_eq!(stop.num_calls(), 1, "the execution was stopped");
    assert_eq!(failed.num_calls(), 1);
}

#[tokio::test]
async fn a_handler_that_panics_or_runs_out_of_time_still_answers() {
    let panics: porter_lambda::Handler = |_, _| Box::pin(async { panic!("planted panic") });
    let sleeps: porter_lambda::Handler = |_, _| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Value::Null)
        })
    };
    let soon = || Some(tokio::time::Instant::now() + Duration::from_millis(200));

    // A CodePipeline job gets a failure result either way.
    for (handler, needle) in [(panics, "planted panic"), (sleeps, "ran out of time")] {
        let failed = expect_failure(needle);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [], no_retries);
        let cp = mock_client!(aws_sdk_codepipeline, [&failed]);
        let ctx = context(failing_aws(500, "Unused"), sfn, cp);
        let out = porter_lambda::answer(&ctx, handler, "pipeline", event("codepipeline-job-first.json"), soon())
            .await
            .unwrap();
        assert_eq!(out["reported"], "failure", "{needle}: {out}");
        assert_eq!(failed.num_calls(), 1, "{needle}");
    }

    // A Step Functions state gets an error its Retry and Catch can match.
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [], no_retries);
    let cp = mock_client!(aws_sdk_codepipeline, RuleMode::MatchAny, []);
    let ctx = context(failing_aws(500, "Unused"), sfn, cp);
    let e = porter_lambda::answer(&ctx, panics, "provision", serde_json::json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Crashed", "{e}");
    let e = porter_lambda::answer(&ctx, sleeps, "provision", serde_json::json!({}), soon())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Retryable", "{e}");
}
