//! `trigger` against moto's CodePipeline, with the sample events.

use aws_sdk_codepipeline::types::{
    ActionCategory, ActionDeclaration, ActionOwner, ActionTypeId, ArtifactStore, ArtifactStoreType, InputArtifact,
    OutputArtifact, PipelineDeclaration, StageDeclaration,
};
use porter_lambda::{handle, trigger, Context, Function};
use serde_json::{json, Value};

fn event(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The main branch's pipeline, as infra/template.yaml declares it (in short).
/// The trigger's settings for service `hello`, whose main pipeline is
/// `hello`, with `feature/` branches getting pipelines of their own.
fn settings() -> trigger::Settings {
    trigger::Settings::new(Some("hello".into()), "^feature/.+$", "hello").unwrap()
}

/// A context whose trigger has `settings`, with the main pipeline made,
/// and the name of the branch pipeline of `feature/new-login`.
async fn triggering(aws: &porter_core::aws::Aws, settings: trigger::Settings) -> (Context, String) {
    let mut ctx = Context::new(aws.clone());
    ctx.trigger = settings;
    main_pipeline(&ctx, aws).await;
    (ctx, trigger::branch_pipeline("hello", "feature/new-login"))
}

async fn main_pipeline(ctx: &Context, aws: &porter_core::aws::Aws) {
    let role = json!({"Resources": {"PipelineRole": {"Type": "AWS::IAM::Role", "Properties": {
        "RoleName": "porter-pipeline",
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"Service": "codepipeline.amazonaws.com"}, "Action": "sts:AssumeRole"}]}}}}});
    aws_sdk_cloudformation::Client::new(aws.sdk_config())
        .create_stack()
        .stack_name("pipeline-role")
        .template_body(role.to_string())
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
        .send()
        .await
        .unwrap();
    let type_id = |cat: ActionCategory, owner: ActionOwner, provider: &str| {
        ActionTypeId::builder()
            .category(cat)
            .owner(owner)
            .provider(provider)
            .version("1")
            .build()
            .unwrap()
    };
    let source = ActionDeclaration::builder()
        .name("Source")
        .action_type_id(type_id(ActionCategory::Source, ActionOwner::Aws, "CodeCommit"))
        .configuration("RepositoryName", "hello-service")
        .configuration("BranchName", "main")
        .configuration("PollForSourceChanges", "false")
        .output_artifacts(OutputArtifact::builder().name("SourceArtifact").build().unwrap())
        .build()
        .unwrap();
    let build = ActionDeclaration::builder()
        .name("Image")
        .action_type_id(type_id(ActionCategory::Build, ActionOwner::Aws, "CodeBuild"))
        .configuration("ProjectName", "hello-image")
        .input_artifacts(InputArtifact::builder().name("SourceArtifact").build().unwrap())
        .build()
        .unwrap();
    let deploy = |name: &str, env: &str| {
        ActionDeclaration::builder()
            .name(name)
            .action_type_id(type_id(ActionCategory::Invoke, ActionOwner::Aws, "Lambda"))
            .configuration("FunctionName", "porter-pipeline")
            .configuration("UserParameters", format!(r#"{{"environment": "{env}"}}"#))
            .input_artifacts(InputArtifact::builder().name("SourceArtifact").build().unwrap())
            .build()
            .unwrap()
    };
    let approve = ActionDeclaration::builder()
        .name("Approve")
        .action_type_id(type_id(ActionCategory::Approval, ActionOwner::Aws, "Manual"))
        .build()
        .unwrap();
    let stage =
        |name: &str, action: ActionDeclaration| StageDeclaration::builder().name(name).actions(action).build().unwrap();
    let decl = PipelineDeclaration::builder()
        .name("hello")
        .role_arn("arn:aws:iam::123456789012:role/porter-pipeline")
        .artifact_store(
            ArtifactStore::builder()
                .r#type(ArtifactStoreType::S3)
                .location("porter-local-artifacts")
                .build()
                .unwrap(),
        )
        .stages(stage("Source", source))
        .stages(stage("Build", build))
        .stages(stage("Staging", deploy("Deploy", "staging")))
        // A deploy to production before the approval is still production.
        .stages(stage("Early", deploy("Sneak", "production")))
        .stages(stage("Approval", approve))
        .stages(stage("Production", deploy("Deploy", "production")))
        .build()
        .unwrap();
    ctx.codepipeline()
        .create_pipeline()
        .pipeline(decl)
        .send()
        .await
        .unwrap();
}

/// The pipeline's stages and actions, as `Stage.Action`.
async fn actions_of(ctx: &Context, name: &str) -> Vec<String> {
    let p = ctx.codepipeline().get_pipeline().name(name).send().await.unwrap();
    p.pipeline()
        .unwrap()
        .stages()
        .iter()
        .flat_map(|s| s.actions().iter().map(move |a| format!("{}.{}", s.name(), a.name())))
        .collect()
}

async fn branch_of(ctx: &Context, name: &str) -> Option<String> {
    let p = ctx.codepipeline().get_pipeline().name(name).send().await.ok()?;
    p.pipeline()?
        .stages()
        .iter()
        .flat_map(|s| s.actions())
        .find_map(|a| a.configuration().and_then(|c| c.get("BranchName").cloned()))
}

/// Branch events create, start and delete branch pipelines (which deploy
/// only where the infra allows), and the weekly schedule starts builds.
#[tokio::test]
async fn branch_events_drive_branch_pipelines() {
    let stack = porter_e2e::Stack::start().await;
    let (ctx, pipeline) = triggering(&stack.aws, settings()).await;

    let created = handle(&ctx, Function::Trigger, event("codecommit-created.json"))
        .await
        .unwrap();
    assert_eq!(created["action"], "created", "{created}");
    assert_eq!(created["pipeline"], pipeline.as_str());
    assert_eq!(branch_of(&ctx, &pipeline).await.as_deref(), Some("feature/new-login"));
    assert_eq!(
        branch_of(&ctx, "hello").await.as_deref(),
        Some("main"),
        "the main pipeline is untouched"
    );
    // A branch builds; by default it deploys nowhere.
    assert_eq!(
        actions_of(&ctx, &pipeline).await,
        ["Source.Source", "Build.Image"],
        "no deploy, no approval, no production"
    );
    assert_eq!(
        actions_of(&ctx, "hello").await.len(),
        6,
        "the main pipeline keeps every stage"
    );

    // Created twice (a re-delivered event): still one pipeline, still right.
    handle(&ctx, Function::Trigger, event("codecommit-created.json"))
        .await
        .unwrap();
    let names: Vec<String> = ctx
        .codepipeline()
        .list_pipelines()
        .send()
        .await
        .unwrap()
        .pipelines()
        .iter()
        .filter_map(|p| p.name().map(str::to_owned))
        .collect();
    assert_eq!(names.iter().filter(|n| n.as_str() == pipeline).count(), 1);

    let updated = handle(&ctx, Function::Trigger, event("codecommit-updated.json"))
        .await
        .unwrap();
    assert_eq!(updated["action"], "started", "{updated}");
    assert!(!updated["execution"].as_str().unwrap().is_empty());

    let scheduled = handle(&ctx, Function::Trigger, event("schedule-weekly.json"))
        .await
        .unwrap();
    assert_eq!(scheduled["pipelines"][0]["pipeline"], "hello", "{scheduled}");

    // The infra may let branches deploy to named environments: never to
    // one that the main pipeline deploys after its approval.
    let mut allowing = ctx.clone();
    allowing.trigger = settings().with_branch_environments("staging, production");
    handle(&allowing, Function::Trigger, event("codecommit-created.json"))
        .await
        .unwrap();
    assert_eq!(
        actions_of(&ctx, &pipeline).await,
        ["Source.Source", "Build.Image", "Staging.Deploy"]
    );

    let deleted = handle(&ctx, Function::Trigger, event("codecommit-deleted.json"))
        .await
        .unwrap();
    assert_eq!(deleted["action"], "deleted", "{deleted}");
    assert!(branch_of(&ctx, &pipeline).await.is_none());

    // A branch outside the pattern is left alone.
    let mut other = event("codecommit-created.json");
    other["detail"]["referenceName"] = json!("experiments/x");
    let ignored = handle(&ctx, Function::Trigger, other).await.unwrap();
    assert_eq!(ignored["action"], "ignored", "{ignored}");

    // Not an EventBridge event: a clear error naming what was expected.
    let err = handle(&ctx, Function::Trigger, json!({"hello": 1})).await.unwrap_err();
    assert_eq!(err.error_type(), "Invalid");
    assert!(err.to_string().contains("EventBridge"), "{err}");
}

/// CodeCommit repository triggers drive the same branch pipelines as
/// EventBridge's events.
#[tokio::test]
async fn repository_triggers_drive_branch_pipelines() {
    let stack = porter_e2e::Stack::start().await;
    let mut settings = settings();
    settings.repository = Some("hello-service".into());
    settings.main_branch = Some("main".into());
    let (ctx, pipeline) = triggering(&stack.aws, settings).await;

    // A push that created a branch: its pipeline, as from EventBridge.
    let created = handle(&ctx, Function::Trigger, event("codecommit-trigger-push.json"))
        .await
        .unwrap();
    assert_eq!(created["action"], "created", "{created}");
    assert_eq!(
        actions_of(&ctx, &pipeline).await,
        ["Source.Source", "Build.Image"],
        "the same trust rules: no deploy"
    );

    // A later push to it starts it; one deleting it deletes the pipeline.
    let mut pushed = event("codecommit-trigger-push.json");
    pushed["Records"][0]["codecommit"]["references"][0]["created"] = json!(false);
    let started = handle(&ctx, Function::Trigger, pushed.clone()).await.unwrap();
    assert_eq!(started["action"], "started", "{started}");
    pushed["Records"][0]["codecommit"]["references"][0]["deleted"] = json!(true);
    let deleted = handle(&ctx, Function::Trigger, pushed.clone()).await.unwrap();
    assert_eq!(deleted["action"], "deleted", "{deleted}");
    assert!(branch_of(&ctx, &pipeline).await.is_none());

    // A push to main starts the main pipeline.
    let mut main = event("codecommit-trigger-push.json");
    main["Records"][0]["codecommit"]["references"][0] = json!({"commit": "abc", "ref": "refs/heads/main"});
    let started = handle(&ctx, Function::Trigger, main).await.unwrap();
    assert_eq!(started["pipelines"][0]["pipeline"], "hello", "{started}");

    // What is not built is answered, naming it, not failed: AWS's own test
    // event (of another repository too), a tag, a branch outside the pattern.
    let test = handle(&ctx, Function::Trigger, event("codecommit-trigger-test.json"))
        .await
        .unwrap();
    assert_eq!(test["action"], "ignored", "{test}");
    assert!(test["reason"].as_str().unwrap().contains("my-repo"), "{test}");
    let mut own_test = event("codecommit-trigger-test.json");
    own_test["Records"][0]["eventSourceARN"] = json!("arn:aws:codecommit:us-east-1:123456789012:hello-service");
    let test = handle(&ctx, Function::Trigger, own_test).await.unwrap();
    assert!(test["reason"].as_str().unwrap().contains("test event"), "{test}");
    for reference in ["refs/tags/v1", "refs/heads/experiments/x"] {
        let mut other = event("codecommit-trigger-push.json");
        other["Records"][0]["codecommit"]["references"][0]["ref"] = json!(reference);
        let ignored = handle(&ctx, Function::Trigger, other).await.unwrap();
        assert_eq!(ignored["action"], "ignored", "{ignored}");
        let reason = ignored["reason"].as_str().unwrap();
        assert!(reason.contains(reference.trim_start_matches("refs/heads/")), "{reason}");
    }

    // Another event source in Records is refused, naming it.
    let mut foreign = event("codecommit-trigger-push.json");
    foreign["Records"][0]["eventSource"] = json!("aws:s3");
    let err = handle(&ctx, Function::Trigger, foreign).await.unwrap_err();
    assert!(err.to_string().contains("aws:s3"), "{err}");
}
