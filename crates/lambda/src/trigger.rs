//! `trigger`: EventBridge events and CodeCommit repository triggers that
//! start pipelines.
//!
//! One pipeline serves one branch. A CodeCommit branch created whose name
//! matches `BRANCH_PATTERN` gets its own pipeline, copied from the main
//! pipeline (`PIPELINE_NAME`) with the source branch changed and its
//! deploys left out (see [`branch_stages`]); an update starts it; a
//! deletion deletes it. A scheduled event starts the pipelines
//! in `SCHEDULED_PIPELINES` (the weekly build).

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_sdk_codepipeline::types::{ActionCategory, ActionDeclaration, PipelineDeclaration, StageDeclaration};
use porter_core::aws;
use porter_core::phase::PhaseError;
use porter_core::settings::SettingsError;
use regex_lite::Regex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{Context, FunctionError};

/// The trigger's settings, from its environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub pipeline_name: Option<String>,
    pub branch_pattern: BranchPattern,
    pub scheduled: Vec<String>,
    /// The environments a branch pipeline may deploy to
    /// (`BRANCH_ENVIRONMENTS`, set by the infra; empty by default: branch
    /// pipelines build and test, and deploy nowhere).
    pub branch_environments: Vec<String>,
    /// The repository whose branches this serves (`REPOSITORY_NAME`): a
    /// repository trigger of another repository is ignored. EventBridge
    /// events are filtered by the rule already.
    pub repository: Option<String>,
    /// The main pipeline's branch (`BRANCH_NAME`): a push to it arriving
    /// as a repository trigger starts the main pipeline.
    pub main_branch: Option<String>,
}

/// `BRANCH_PATTERN` when the environment names none.
const DEFAULT_BRANCH_PATTERN: &str = "^(feature|release)/.+$";

/// The branches that get a pipeline of their own, in `regex-lite`'s syntax
/// (Rust's `regex` without Unicode classes: `\w`, `\d` and `(?i)` are
/// ASCII, as branch names are in practice). Compiled when the trigger
/// reads its settings (a bad pattern stops it at init, naming the
/// variable); the default is compiled only when first matched, because
/// every function's context holds one and only the trigger matches.
#[derive(Debug, Clone)]
pub struct BranchPattern {
    source: String,
    regex: std::sync::OnceLock<Regex>,
}

impl BranchPattern {
    fn new(source: &str) -> Result<BranchPattern, SettingsError> {
        let regex = Regex::new(source).map_err(|e| SettingsError::Invalid {
            name: "BRANCH_PATTERN",
            value: source.to_owned(),
            why: format!("is not a regex: {e}"),
        })?;
        Ok(BranchPattern {
            source: source.to_owned(),
            regex: regex.into(),
        })
    }

    pub fn is_match(&self, branch: &str) -> bool {
        self.regex
            .get_or_init(|| Regex::new(&self.source).expect("a pattern compiles: checked when made, or the default"))
            .is_match(branch)
    }
}

impl Default for BranchPattern {
    fn default() -> Self {
        BranchPattern {
            source: DEFAULT_BRANCH_PATTERN.to_owned(),
            regex: std::sync::OnceLock::new(),
        }
    }
}

impl std::fmt::Display for BranchPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl Settings {
    pub fn new(
        pipeline_name: Option<String>,
        branch_pattern: &str,
        scheduled: &str,
    ) -> Result<Settings, SettingsError> {
        Ok(Settings {
            pipeline_name: pipeline_name.filter(|p| !p.is_empty()),
            branch_pattern: BranchPattern::new(branch_pattern)?,
            scheduled: list(scheduled),
            branch_environments: Vec::new(),
            repository: None,
            main_branch: None,
        })
    }

    /// These settings, letting branch pipelines deploy to `environments`.
    pub fn with_branch_environments(mut self, environments: &str) -> Settings {
        self.branch_environments = list(environments);
        self
    }

    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::new(
            std::env::var("PIPELINE_NAME").ok(),
            &std::env::var("BRANCH_PATTERN").unwrap_or_else(|_| DEFAULT_BRANCH_PATTERN.into()),
            &std::env::var("SCHEDULED_PIPELINES").unwrap_or_default(),
        )
        .map(|s| s.with_branch_environments(&std::env::var("BRANCH_ENVIRONMENTS").unwrap_or_default()))
        .map(|mut s| {
            s.repository = std::env::var("REPOSITORY_NAME").ok().filter(|r| !r.is_empty());
            s.main_branch = std::env::var("BRANCH_NAME").ok().filter(|r| !r.is_empty());
            s
        })
    }
}

/// A comma-separated list, blanks dropped.
pub(crate) fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The pipeline that serves `branch`: the main pipeline's name, the
/// branch in the characters pipeline names allow, and 8 hex digits of the
/// branch's SHA-256, so branches that read alike once cleaned
/// (`feature/a-b`, `feature/a/b`) or once cut to 100 characters never
/// share a pipeline.
pub fn branch_pipeline(main: &str, branch: &str) -> String {
    let hash = hex::encode(&Sha256::digest(branch.as_bytes())[..4]);
    let prefix: String = legacy_branch_pipeline(main, branch).chars().take(100 - 9).collect();
    format!("{prefix}-{hash}")
}

/// The name branch pipelines had before they carried the branch's hash:
/// still looked for when a branch is deleted, so its pipeline goes too.
pub fn legacy_branch_pipeline(main: &str, branch: &str) -> String {
    let clean = aws::name_of(branch, "._-");
    format!("{main}-{clean}").chars().take(100).collect()
}

fn bad(detail: impl Into<String>) -> FunctionError {
    FunctionError::BadEvent {
        phase: "trigger",
        detail: detail.into(),
    }
}

/// What an event asks for, read without touching AWS.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Start these pipelines: the weekly build, or a push to the main
    /// branch arriving as a repository trigger.
    Start(Vec<String>),
    /// A branch was created: give it a pipeline copied from `main`.
    Create { main: String, name: String, branch: String },
    /// A branch changed: start its pipeline (made first if missing).
    Update { main: String, name: String, branch: String },
    /// A branch was deleted: delete its pipeline.
    /// The branch's pipeline, and the name it had before names carried the
    /// branch's hash.
    Delete {
        name: String,
        legacy: String,
        branch: String,
    },
    /// Nothing to do, and why.
    Ignored(String),
}

/// Reads an event against the settings: every check on what the event
/// says happens here, before any AWS call. An EventBridge event asks for
/// one thing; a CodeCommit repository trigger for one per reference.
pub fn read(settings: &Settings, event: Value) -> Result<Vec<Request>, FunctionError> {
    if event.get("Records").is_some() {
        return read_records(settings, event);
    }
    read_eventbridge(settings, event).map(|r| vec![r])
}

fn read_eventbridge(settings: &Settings, event: Value) -> Result<Request, FunctionError> {
    let event: CloudWatchEvent<Value> = serde_json::from_value(event).map_err(|e| {
        bad(format!(
            "neither an EventBridge event nor a CodeCommit repository trigger: {e}"
        ))
    })?;
    match event.detail_type.as_deref() {
        Some("Scheduled Event") => {
            if settings.scheduled.is_empty() {
                return Err(FunctionError::Phase(PhaseError::Invalid(
                    "a scheduled event arrived but SCHEDULED_PIPELINES names no pipeline to start".into(),
                )));
            }
            Ok(Request::Start(settings.scheduled.clone()))
        }
        Some("CodeCommit Repository State Change") => {
            let detail = event.detail.unwrap_or(Value::Null);
            let what = detail["event"].as_str().ok_or_else(|| bad("detail.event is missing"))?;
            if detail["referenceType"].as_str() != Some("branch") {
                return Ok(Request::Ignored("not a branch".into()));
            }
            let branch = detail["referenceName"]
                .as_str()
                .ok_or_else(|| bad("detail.referenceName is missing"))?;
            branch_request(settings, branch, what)
        }
        other => Err(bad(format!(
            "detail-type {other:?} is neither a CodeCommit Repository State Change nor a Scheduled Event"
        ))),
    }
}

/// What a change to `branch` asks for (`what` in EventBridge's words).
fn branch_request(settings: &Settings, branch: &str, what: &str) -> Result<Request, FunctionError> {
    if !settings.branch_pattern.is_match(branch) {
        return Ok(Request::Ignored(format!(
            "branch `{branch}` does not match BRANCH_PATTERN {}",
            settings.branch_pattern
        )));
    }
    let main = settings.pipeline_name.clone().ok_or_else(|| {
        FunctionError::Phase(PhaseError::Invalid(
            "PIPELINE_NAME (the main branch's pipeline to copy) is not set".into(),
        ))
    })?;
    let name = branch_pipeline(&main, branch);
    let branch = branch.to_owned();
    Ok(match what {
        "referenceCreated" => Request::Create { main, name, branch },
        "referenceUpdated" => Request::Update { main, name, branch },
        "referenceDeleted" => Request::Delete {
            legacy: legacy_branch_pipeline(&main, &branch),
            name,
            branch,
        },
        other => Request::Ignored(format!("event `{other}`")),
    })
}

/// A CodeCommit repository trigger: `Records`, each naming the repository
/// (`eventSourceARN`) and the references a push changed. Triggers fire for
/// every reference and for the console's test (`TriggerEventTest`): what
/// this does not build is answered, naming it, not failed.
fn read_records(settings: &Settings, event: Value) -> Result<Vec<Request>, FunctionError> {
    let records = event["Records"]
        .as_array()
        .ok_or_else(|| bad("`Records` is not a list"))?;
    if records.is_empty() {
        return Err(bad("`Records` is empty"));
    }
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let field = |k: &str| r[k].as_str().ok_or_else(|| bad(format!("Records[{i}].{k} is missing")));
        if field("eventSource")? != "aws:codecommit" {
            return Err(bad(format!(
                "Records[{i}] comes from {}, not from a CodeCommit repository trigger",
                field("eventSource")?
            )));
        }
        let arn = field("eventSourceARN")?;
        let repository = arn.rsplit(':').next().unwrap_or_default();
        if let Some(mine) = &settings.repository {
            if repository != mine {
                out.push(Request::Ignored(format!(
                    "repository `{repository}` is not `{mine}`, the repository this trigger serves"
                )));
                continue;
            }
        }
        if field("eventName")? == "TriggerEventTest" {
            out.push(Request::Ignored(format!(
                "a test event of the repository trigger on `{repository}`; it works"
            )));
            continue;
        }
        let references = r["codecommit"]["references"]
            .as_array()
            .ok_or_else(|| bad(format!("Records[{i}].codecommit.references is missing")))?;
        for (j, reference) in references.iter().enumerate() {
            let name = reference["ref"]
                .as_str()
                .ok_or_else(|| bad(format!("Records[{i}].codecommit.references[{j}].ref is missing")))?;
            let Some(branch) = name.strip_prefix("refs/heads/") else {
                out.push(Request::Ignored(format!("`{name}` is not a branch")));
                continue;
            };
            let deleted = reference["deleted"].as_bool() == Some(true);
            if settings.main_branch.as_deref() == Some(branch) {
                // The main branch has the main pipeline (the infra's).
                out.push(match (&settings.pipeline_name, deleted) {
                    (Some(main), false) => Request::Start(vec![main.clone()]),
                    (_, true) => {
                        Request::Ignored(format!("the main branch `{branch}` was deleted; its pipeline stays"))
                    }
                    (None, false) => Request::Ignored(format!("a push to `{branch}`, and PIPELINE_NAME is not set")),
                });
                continue;
            }
            let what = if deleted {
                "referenceDeleted"
            } else if reference["created"].as_bool() == Some(true) {
                "referenceCreated"
            } else {
                "referenceUpdated"
            };
            out.push(branch_request(settings, branch, what)?);
        }
    }
    Ok(out)
}

pub async fn handle(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    let mut answers = Vec::new();
    for request in read(&ctx.trigger, event)? {
        answers.push(act(ctx, request).await?);
    }
    Ok(match answers.len() {
        1 => answers.remove(0),
        _ => json!({"action": "several", "answers": answers}),
    })
}

async fn act(ctx: &Context, request: Request) -> Result<Value, FunctionError> {
    match request {
        Request::Start(pipelines) => {
            let mut started = Vec::new();
            for name in &pipelines {
                let id = start(ctx, name).await?;
                started.push(json!({"pipeline": name, "execution": id}));
            }
            Ok(json!({"action": "started", "pipelines": started}))
        }
        Request::Create { main, name, branch } => {
            create(ctx, &main, &name, &branch).await?;
            Ok(json!({"action": "created", "pipeline": name, "branch": branch}))
        }
        Request::Update { main, name, branch } => {
            if !exists(ctx, &name).await? {
                create(ctx, &main, &name, &branch).await?;
            }
            let id = start(ctx, &name).await?;
            Ok(json!({"action": "started", "pipeline": name, "execution": id}))
        }
        Request::Delete { name, legacy, branch } => {
            let mut deleted = delete(ctx, &name).await?;
            // A branch pipeline made before names carried the hash is
            // known by the name it had, and only if it is this branch's.
            if !deleted && legacy != name && branch_of_pipeline(ctx, &legacy).await?.as_deref() == Some(&branch) {
                deleted = delete(ctx, &legacy).await?;
            }
            Ok(json!({"action": if deleted {"deleted"} else {"ignored"}, "pipeline": name}))
        }
        Request::Ignored(reason) => Ok(json!({"action": "ignored", "reason": reason})),
    }
}

async fn start(ctx: &Context, name: &str) -> Result<String, FunctionError> {
    let out = ctx
        .codepipeline()
        .start_pipeline_execution()
        .name(name)
        .send()
        .await
        .map_err(aws::err(format!("start pipeline {name}")))?;
    tracing::info!(pipeline = name, "started");
    Ok(out.pipeline_execution_id().unwrap_or_default().to_owned())
}

async fn exists(ctx: &Context, name: &str) -> Result<bool, FunctionError> {
    Ok(declared(ctx, name).await?.is_some())
}

/// The pipeline's declaration; `None` when there is no such pipeline.
async fn declared(ctx: &Context, name: &str) -> Result<Option<PipelineDeclaration>, FunctionError> {
    match ctx.codepipeline().get_pipeline().name(name).send().await {
        Ok(out) => Ok(out.pipeline),
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_pipeline_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(aws::classify(&format!("look up pipeline {name}"), e).into()),
    }
}

/// The environment an action deploys to: `environment` in a Lambda
/// action's UserParameters or a custom action's configuration.
fn action_environment(action: &ActionDeclaration) -> Option<String> {
    let conf = action.configuration()?;
    // `Environment`: the Porter custom action's property.
    if let Some(env) = conf.get("environment").or_else(|| conf.get("Environment")) {
        return Some(env.clone());
    }
    let params: Value = serde_json::from_str(conf.get("UserParameters")?).ok()?;
    params.get("environment")?.as_str().map(str::to_owned)
}

/// What a branch pipeline keeps of the main pipeline's stages. A branch
/// push is untrusted, so its pipeline builds and tests, and deploys only to
/// an environment in `allowed` (the infra's `BranchEnvironments`). Nothing
/// from the main pipeline's first approval on is kept, and no environment
/// deployed after that approval (production) is ever deployed to, even if
/// `allowed` names it. The source is switched to `branch`. Returns the
/// stages and the names of the actions left out.
pub fn branch_stages(
    stages: &[StageDeclaration],
    branch: &str,
    allowed: &[String],
) -> (Vec<StageDeclaration>, Vec<String>) {
    let approval_at = stages
        .iter()
        .position(|s| s.actions().iter().any(|a| is(a, &ActionCategory::Approval)));
    let guarded: Vec<String> = approval_at
        .map(|i| {
            stages[i..]
                .iter()
                .flat_map(|s| s.actions())
                .filter_map(action_environment)
                .collect()
        })
        .unwrap_or_default();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        let mut actions = Vec::new();
        for action in stage.actions() {
            let keep = if approval_at.is_some_and(|a| i >= a) {
                false
            } else if is(action, &ActionCategory::Source)
                || is(action, &ActionCategory::Build)
                || is(action, &ActionCategory::Test)
            {
                true
            } else {
                // Anything else (a Lambda invoke, a deploy, a custom action)
                // may deploy: only to an allowed, unguarded environment.
                action_environment(action).is_some_and(|env| allowed.contains(&env) && !guarded.contains(&env))
            };
            if !keep {
                dropped.push(format!("{}.{}", stage.name(), action.name()));
                continue;
            }
            let mut action = action.clone();
            if action.action_type_id().is_some_and(|t| t.provider() == "CodeCommit") {
                let mut conf = action.configuration().cloned().unwrap_or_default();
                conf.insert("BranchName".into(), branch.to_owned());
                action.configuration = Some(conf);
            }
            actions.push(action);
        }
        if !actions.is_empty() {
            let mut stage = stage.clone();
            stage.actions = actions;
            kept.push(stage);
        }
    }
    (kept, dropped)
}

fn is(action: &ActionDeclaration, category: &ActionCategory) -> bool {
    action.action_type_id().is_some_and(|t| t.category() == category)
}

/// Copies the main pipeline for `branch`: see [`branch_stages`].
async fn create(ctx: &Context, main: &str, name: &str, branch: &str) -> Result<(), FunctionError> {
    let cp = ctx.codepipeline();
    let declaration = declared(ctx, main).await?.ok_or_else(|| {
        FunctionError::Phase(PhaseError::Invalid(format!(
            "the main pipeline {main} does not exist (PIPELINE_NAME names it): deploy the stack again"
        )))
    })?;
    let switched = declaration
        .stages()
        .iter()
        .flat_map(|s| s.actions())
        .any(|a| a.action_type_id().is_some_and(|t| t.provider() == "CodeCommit"));
    if !switched {
        return Err(FunctionError::Phase(PhaseError::Invalid(format!(
            "pipeline {main} has no CodeCommit source action to point at branch {branch}"
        ))));
    }
    let (stages, dropped) = branch_stages(declaration.stages(), branch, &ctx.trigger.branch_environments);
    if stages.len() < 2 {
        return Err(FunctionError::Phase(PhaseError::Invalid(format!(
            "pipeline {main} has nothing a branch may run besides its source (no build or test stage, and BRANCH_ENVIRONMENTS allows no deploy); branch {branch} gets no pipeline"
        ))));
    }
    tracing::info!(pipeline = name, branch, left_out = ?dropped, "branch pipeline: deploys left out");
    let mut copy = declaration.clone();
    copy.name = name.to_owned();
    copy.stages = stages;
    copy.version = None;
    // Look first: moto (and a re-delivered event racing the first) may
    // answer a second create with something other than NameInUse.
    if exists(ctx, name).await? {
        cp.update_pipeline()
            .pipeline(copy)
            .send()
            .await
            .map_err(aws::err(format!("update pipeline {name}")))?;
        tracing::info!(pipeline = name, branch, "updated");
        return Ok(());
    }
    cp.create_pipeline()
        .pipeline(copy)
        .send()
        .await
        .map_err(aws::err(format!("create pipeline {name}")))?;
    tracing::info!(pipeline = name, branch, "created");
    Ok(())
}

/// The branch a pipeline's CodeCommit source reads, if the pipeline exists.
async fn branch_of_pipeline(ctx: &Context, name: &str) -> Result<Option<String>, FunctionError> {
    Ok(declared(ctx, name).await?.and_then(|p| {
        p.stages()
            .iter()
            .flat_map(|s| s.actions())
            .find_map(|a| a.configuration().and_then(|c| c.get("BranchName").cloned()))
    }))
}

async fn delete(ctx: &Context, name: &str) -> Result<bool, FunctionError> {
    if !exists(ctx, name).await? {
        return Ok(false);
    }
    ctx.codepipeline()
        .delete_pipeline()
        .name(name)
        .send()
        .await
        .map_err(aws::err(format!("delete pipeline {name}")))?;
    tracing::info!(pipeline = name, "deleted");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_pipelines_have_valid_names() {
        let name = branch_pipeline("hello", "feature/new-login");
        assert!(name.starts_with("hello-feature-new-login-"), "{name}");
        assert_eq!(name.len(), "hello-feature-new-login-".len() + 8);
        assert!(branch_pipeline("p", &"x".repeat(300)).len() <= 100);
        // Alike once cleaned or cut, apart by their hash.
        assert_ne!(branch_pipeline("p", "feature/a-b"), branch_pipeline("p", "feature/a/b"));
        let long = "x".repeat(200);
        assert_ne!(
            branch_pipeline("p", &format!("{long}1")),
            branch_pipeline("p", &format!("{long}2"))
        );
        assert_eq!(
            legacy_branch_pipeline("hello", "feature/new-login"),
            "hello-feature-new-login"
        );
    }

    #[test]
    fn a_custom_deploy_action_is_judged_by_its_environment_like_an_invoke_action() {
        use aws_sdk_codepipeline::types::{ActionOwner, ActionTypeId};
        let action = |name: &str, category: ActionCategory, owner: ActionOwner, env: &str| {
            ActionDeclaration::builder()
                .name(name)
                .action_type_id(
                    ActionTypeId::builder()
                        .category(category)
                        .owner(owner)
                        .provider("Porter")
                        .version("1")
                        .build()
                        .unwrap(),
                )
                .configuration("Environment", env)
                .build()
                .unwrap()
        };
        let stage =
            |name: &str, a: ActionDeclaration| StageDeclaration::builder().name(name).actions(a).build().unwrap();
        let stages = vec![
            stage(
                "DeployStaging",
                action("Deploy", ActionCategory::Deploy, ActionOwner::Custom, "staging"),
            ),
            stage(
                "Approve",
                action("Approve", ActionCategory::Approval, ActionOwner::Aws, "-"),
            ),
            stage(
                "DeployProduction",
                action("Deploy", ActionCategory::Deploy, ActionOwner::Custom, "production"),
            ),
        ];
        let (kept, dropped) = branch_stages(&stages, "feature/x", &["staging".into(), "production".into()]);
        assert_eq!(kept.iter().map(|s| s.name()).collect::<Vec<_>>(), ["DeployStaging"]);
        assert_eq!(dropped, ["Approve.Approve", "DeployProduction.Deploy"]);
        let (kept, _) = branch_stages(&stages, "feature/x", &[]);
        assert!(kept.is_empty(), "no environment allowed: no deploy kept");
    }

    #[test]
    fn settings_name_a_bad_pattern() {
        let e = Settings::new(None, "([", "").unwrap_err();
        assert_eq!(e.variable(), "BRANCH_PATTERN");
        assert!(e.to_string().starts_with("BRANCH_PATTERN `([` is not a regex"), "{e}");
        let s = Settings::new(Some("main".into()), "^f/", " a, b ,").unwrap();
        assert_eq!(s.scheduled, vec!["a", "b"]);
    }

    #[test]
    fn the_default_pattern_compiles_when_first_matched_and_matches_as_written() {
        let s = Settings::default();
        assert_eq!(s.branch_pattern.to_string(), DEFAULT_BRANCH_PATTERN);
        for (branch, matches) in [
            ("feature/x", true),
            ("release/1.2", true),
            ("feature/", false),
            ("main", false),
            ("hotfix/feature/x", false),
        ] {
            assert_eq!(s.branch_pattern.is_match(branch), matches, "{branch}");
        }
    }
}
