//! What a function needs, built once per cold start.

use porter_core::aws::Aws;

use crate::function::Function;
use crate::{notify, trigger};

/// What a function needs, built once per cold start.
#[derive(Debug, Clone)]
pub struct Context {
    pub aws: Aws,
    /// CodePipeline: made at init by the functions that use it
    /// ([`Function::uses_codepipeline`]), or given
    /// ([`Context::with_codepipeline`]: the local job simulator).
    codepipeline: std::sync::Arc<std::sync::OnceLock<aws_sdk_codepipeline::Client>>,
    /// Step Functions: made at init by the functions that use it
    /// ([`Function::uses_step_functions`]), never by the phases.
    sfn: std::sync::Arc<std::sync::OnceLock<aws_sdk_sfn::Client>>,
    /// Where pack writes payloads in CodePipeline mode and where large
    /// continuation state goes (`ARTIFACT_BUCKET`).
    pub artifact_bucket: Option<String>,
    /// The deploy state machine the `pipeline` function runs.
    pub state_machine_arn: Option<String>,
    pub trigger: trigger::Settings,
    /// The deploy lease table (`LEASE_TABLE`), for the `lease` function.
    pub lease_table: Option<String>,
    /// The SSM parameter naming the machine image pack pins into each
    /// release (`PORTER_IMAGE_PARAMETER`).
    pub image_parameter: Option<String>,
    /// Existing resources outside a release stack that overlays may name
    /// (`PORTER_ALLOWED_REFERENCES`, comma-separated): the installation's.
    pub allowed_references: Vec<String>,
    /// Whether a pack event may name a folder on this machine
    /// (`Source::Path`): only the local stack, whose functions run beside
    /// the repository, sets it. A function in AWS packs from S3 only.
    pub local_sources: bool,
    /// What the installation's pipelines may deploy: every CodePipeline
    /// job is checked against it ([`crate::origin`]). `PIPELINE_NAME`,
    /// `APPROVED_ENVIRONMENTS` and `BRANCH_ENVIRONMENTS`, comma-separated.
    pub job_rules: Option<porter_core::job_origin::Rules>,
    /// Jobs are worked without being read back from CodePipeline: only
    /// tests that drive a job handler against a mock may ask for it.
    pub unverified_jobs: bool,
    /// Where the `notify` function sends notices.
    pub notify: notify::Settings,
    /// Where the `hooks` function runs hooks: the CodeBuild project
    /// (`HOOKS_PROJECT`) in AWS, local processes on the local stack.
    pub hooks: Option<porter_core::hooks::Runner>,
    /// The key that seals continuation tokens, once read ([`token::key`]).
    pub token_key: std::sync::Arc<std::sync::OnceLock<Vec<u8>>>,
}

impl Context {
    /// Clients from `aws`, made when first used.
    pub fn new(aws: Aws) -> Context {
        Context {
            codepipeline: Default::default(),
            sfn: Default::default(),
            aws,
            artifact_bucket: None,
            state_machine_arn: None,
            trigger: trigger::Settings::default(),
            lease_table: None,
            image_parameter: None,
            allowed_references: Vec::new(),
            local_sources: false,
            job_rules: None,
            unverified_jobs: false,
            notify: notify::Settings::default(),
            hooks: None,
            token_key: Default::default(),
        }
    }

    /// CodePipeline, made on first use by a function that did not make it
    /// at init.
    pub fn codepipeline(&self) -> &aws_sdk_codepipeline::Client {
        self.codepipeline
            .get_or_init(|| aws_sdk_codepipeline::Client::new(self.aws.sdk_config()))
    }

    /// The same context with `codepipeline` as its CodePipeline client.
    pub fn with_codepipeline(self, codepipeline: aws_sdk_codepipeline::Client) -> Context {
        let _ = self.codepipeline.set(codepipeline);
        self
    }

    /// One execution, as Step Functions describes it.
    pub async fn describe_execution(
        &self,
        arn: &str,
    ) -> Result<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput, porter_core::phase::PhaseError>
    {
        self.sfn()
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
            .map_err(porter_core::aws::err(format!("read execution {arn}")))
    }

    /// Step Functions, made on first use by a function that did not make
    /// it at init.
    pub fn sfn(&self) -> &aws_sdk_sfn::Client {
        self.sfn.get_or_init(|| aws_sdk_sfn::Client::new(self.aws.sdk_config()))
    }

    /// The same context with `sfn` as its Step Functions client.
    pub fn with_sfn(self, sfn: aws_sdk_sfn::Client) -> Context {
        let _ = self.sfn.set(sfn);
        self
    }

    /// `function`'s context, from the environment the infra gives it, with
    /// the clients it calls made. Each function reads its own settings: the
    /// others keep their defaults, which cost nothing to make.
    pub fn from_env(function: &str) -> Result<Context, porter_core::settings::SettingsError> {
        let function = Function::from_name(function);
        // A function is always pinned: what a repository names is checked
        // against the environment pins before anything is touched.
        let aws = Aws::from_lambda_env(porter_core::aws::Roots::AmazonTrustServices)?
            .with_pinning(porter_core::pins::Pinning::from_env());
        let mut ctx = Context::new(aws);
        ctx.artifact_bucket = std::env::var("ARTIFACT_BUCKET").ok().filter(|s| !s.is_empty());
        ctx.state_machine_arn = std::env::var("STATE_MACHINE_ARN").ok().filter(|s| !s.is_empty());
        ctx.lease_table = std::env::var("LEASE_TABLE").ok().filter(|s| !s.is_empty());
        // Provision and promote act only while their execution holds the
        // deploy lease (`porter_core::lease::check_fence`).
        if let Some(table) = &ctx.lease_table {
            ctx.aws = ctx.aws.clone().with_fence(table.clone());
        }
        ctx.image_parameter = std::env::var("PORTER_IMAGE_PARAMETER").ok().filter(|s| !s.is_empty());
        let list = |name: &str| trigger::list(&std::env::var(name).unwrap_or_default());
        ctx.job_rules = std::env::var("PIPELINE_NAME")
            .ok()
            .filter(|p| !p.is_empty())
            .map(|main_pipeline| porter_core::job_origin::Rules {
                main_pipeline,
                approved_environments: list("APPROVED_ENVIRONMENTS"),
                branch_environments: list("BRANCH_ENVIRONMENTS"),
            });
        ctx.allowed_references = list("PORTER_ALLOWED_REFERENCES");
        if function == Some(Function::Trigger) {
            ctx.trigger = trigger::Settings::from_env()?;
        }
        ctx.notify = notify::Settings::from_env();
        ctx.hooks = std::env::var("HOOKS_PROJECT")
            .ok()
            .filter(|p| !p.is_empty())
            .map(|project| porter_core::hooks::Runner::CodeBuild { project });
        if function.is_some_and(Function::uses_step_functions) {
            ctx.sfn();
        }
        if function.is_some_and(Function::uses_codepipeline) {
            ctx.codepipeline();
        }
        Ok(ctx)
    }
}
