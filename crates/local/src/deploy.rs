//! `porter deploy --local`: the shipped state machine, run by moto's
//! interpreter against the real handlers, with progress as it happens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use porter_core::aws::Aws;
use porter_core::config;
use porter_ops::one_line;
use serde_json::json;
use sha2::Digest;

use crate::names::{function_arn, ACCOUNT, REGION};
pub use crate::names::{state_machine_arn, STATE_MACHINE};
use crate::{bootstrap, moto};

/// The definition that ships, compiled in so the local run cannot drift
/// from it: only the `${...}` substitutions differ.
pub const DEFINITION: &str = include_str!("../../../statemachines/deploy.asl.json");

/// The definition with the function ARNs of `arn` filled in.
pub fn definition(arn: impl Fn(&str) -> String) -> String {
    DEFINITION
        .replace("${PackFunctionArn}", &arn("pack"))
        .replace("${ProvisionFunctionArn}", &arn("provision"))
        .replace("${PromoteFunctionArn}", &arn("promote"))
        .replace("${PruneFunctionArn}", &arn("prune"))
        .replace("${LeaseFunctionArn}", &arn("lease"))
        .replace("${NotifyFunctionArn}", &arn("notify"))
        .replace("${HooksFunctionArn}", &arn("hooks"))
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub path: PathBuf,
    pub environment: String,
    pub keep: u32,
    /// Wait for another deploy's lease instead of failing at once.
    pub wait_for_lease: bool,
    /// This deploy's rollout over the environment's.
    pub rollout: Option<config::RolloutOverride>,
    /// Secret-like variables to send from the shell (`--var`).
    pub vars: Vec<String>,
}

pub use porter_ops::follow::Outcome;

/// The local stack's porter installation, as `porter_ops` finds a real one.
pub fn installation() -> porter_ops::account::Installation {
    porter_ops::account::Installation {
        state_machine_arn: state_machine_arn(),
        artifact_bucket: crate::names::ARTIFACT_BUCKET.into(),
        lease_table: crate::names::LEASE_TABLE.into(),
        artifact_key: None,
    }
}

/// Creates (or updates) the deploy state machine in the local stack.
pub async fn ensure_state_machine(sfn: &aws_sdk_sfn::Client) -> Result<String> {
    let def = definition(function_arn);
    let arn = state_machine_arn();
    if sfn
        .describe_state_machine()
        .state_machine_arn(&arn)
        .send()
        .await
        .is_ok()
    {
        sfn.update_state_machine()
            .state_machine_arn(&arn)
            .definition(def)
            .send()
            .await
            .map_err(|e| one_line("updating the deploy state machine", e))?;
        return Ok(arn);
    }
    let out = sfn
        .create_state_machine()
        .name(STATE_MACHINE)
        .definition(def)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/porter-deploy-states"))
        .send()
        .await
        .map_err(|e| one_line("creating the deploy state machine", e))?;
    Ok(out.state_machine_arn().to_owned())
}

/// The deploy lease table, as the infra's `LeaseTable` is made.
pub async fn ensure_lease_table(sdk: &aws_config::SdkConfig) -> Result<()> {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    if ddb
        .describe_table()
        .table_name(crate::names::LEASE_TABLE)
        .send()
        .await
        .is_ok()
    {
        return Ok(());
    }
    ddb.create_table()
        .table_name(crate::names::LEASE_TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("lease")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("lease")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await
        .map_err(|e| one_line("creating the deploy lease table", e))?;
    Ok(())
}

/// The notification topic, as the infra's `NotificationTopic` is made
/// (without its key: moto's SNS keeps messages in the clear either way).
pub async fn ensure_notification_topic(sdk: &aws_config::SdkConfig) -> Result<String> {
    let sns = aws_sdk_sns::Client::new(sdk);
    // CreateTopic is idempotent for a name.
    let out = sns
        .create_topic()
        .name(crate::names::NOTIFICATION_TOPIC)
        .send()
        .await
        .map_err(|e| one_line("creating the notification topic", e))?;
    Ok(out.topic_arn.unwrap_or_else(crate::names::notification_topic_arn))
}

/// The service folder, its config and the account made ready for it: the
/// bootstrap and the deploy state machine.
#[derive(Debug)]
pub struct Prepared {
    pub repo: PathBuf,
    pub config: config::Config,
    pub aws: Aws,
    pub sfn: aws_sdk_sfn::Client,
    pub machine: String,
}

pub async fn prepare(endpoint: &str, opts: &Options, out: &mut dyn Write) -> Result<Prepared> {
    let sdk = moto::sdk_config(endpoint, REGION).await;
    let aws = Aws::unpinned(sdk.clone());
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let root = std::fs::canonicalize(&opts.path).with_context(|| format!("no such folder {}", opts.path.display()))?;
    let (file, repo) = config::locate(&root);
    let loaded = config::load_file(&file, &repo, &config::process_env)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let cfg = loaded.deployable()?;
    let env = cfg.environment(&opts.environment)?;
    writeln!(
        out,
        "bootstrap: the buckets, network and load balancers a real account would already have"
    )?;
    bootstrap::environment_once(&aws, &cfg.service_name, env).await?;
    // What the infra holds: the artifact bucket (pack writes payloads only
    // there) and the deploy state machine.
    bootstrap::ensure_bucket(&aws.s3(), crate::names::ARTIFACT_BUCKET, REGION).await?;
    ensure_lease_table(&sdk).await?;
    ensure_notification_topic(&sdk).await?;
    let machine = ensure_state_machine(&sfn).await?;
    Ok(Prepared {
        repo,
        config: cfg,
        aws,
        sfn,
        machine,
    })
}

/// What a local run deploys: the folder's source, or a release packed
/// before (the rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    Source,
    Release(String),
}

pub async fn run(endpoint: &str, opts: &Options, out: &mut dyn Write) -> Result<Outcome> {
    run_what(endpoint, opts, &What::Source, out).await
}

/// Deploys `what` through the state machine and follows it to its end.
pub async fn run_what(endpoint: &str, opts: &Options, what: &What, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    let Prepared {
        repo,
        config: cfg,
        sfn,
        machine,
        ..
    } = prepare(endpoint, opts, out).await?;
    let env = cfg.environment(&opts.environment)?;
    let (source, kind) = match what {
        What::Source => (porter_core::pack::Source::Path(repo.clone()), "deploy"),
        What::Release(version) => (
            porter_core::pack::Source::Release {
                service: cfg.service_name.clone(),
                version: version.clone(),
            },
            "rollback",
        ),
    };
    let name = porter_ops::follow::execution_name(&cfg.service_name, &env.name, kind);
    let input = porter_ops::follow::input_from_folder(
        &env.name,
        source,
        &repo,
        &installation(),
        &porter_ops::follow::Asked {
            keep: opts.keep,
            wait_for_lease: opts.wait_for_lease,
            rollout: opts.rollout.clone(),
            vars: opts.vars.clone(),
        },
    );
    let exec_arn = porter_ops::follow::start(&sfn, &machine, &name, &input).await?;
    writeln!(
        out,
        "execution {name}: {kind} {} {} to {}",
        cfg.service_name,
        env.name,
        region_list(env)
    )?;
    porter_ops::follow::follow(
        &sfn,
        &exec_arn,
        started,
        Duration::from_secs(900),
        Duration::from_millis(200),
        out,
    )
    .await
}

fn region_list(env: &config::Environment) -> String {
    env.regions
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the account, not the execution's word for it: in every region
/// the ELB holds exactly the promoted stack's instances, all InService, its
/// tag names that stack, and the only live stacks of the service are that
/// one and the rollback target its tag names (when prune keeps no more).
pub async fn verify(endpoint: &str, opts: &Options, outcome: &Outcome) -> Result<Vec<String>> {
    let sdk = moto::sdk_config(endpoint, REGION).await;
    let aws = Aws::unpinned(sdk);
    let (file, repo) = config::locate(Path::new(&opts.path));
    let cfg = config::load_file(&file, &repo, &config::process_env)?.deployable()?;
    let env = cfg.environment(&opts.environment)?;
    // The regions at once, as the deploy ran them: one region's reads wait
    // on no other's. Problems are listed in the config's order of regions.
    let checks = env
        .regions
        .iter()
        .map(|region| verify_region(&aws, region, &cfg.service_name, &env.name, opts.keep, outcome));
    Ok(futures::future::try_join_all(checks).await?.concat())
}

/// What [`verify`] finds wrong in one region.
async fn verify_region(
    aws: &Aws,
    region: &config::Region,
    service: &str,
    environment: &str,
    keep: u32,
    outcome: &Outcome,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let Some(expected) = outcome.regions.get(&region.name) else {
        problems.push(format!(
            "{}: the execution reported nothing for this region",
            region.name
        ));
        return Ok(problems);
    };
    let clients = aws
        .region(&region.name, &region.role_arn, "porter-verify", &[])
        .await
        .map_err(|e| anyhow!("{e}"))?;
    // The promoted stack and its rollback target, as the ELBs' tags name them.
    let mut want_live = vec![expected.stack_name.clone()];
    for elb in &region.elbs {
        let mut registered = porter_core::balancer::registered(&clients, elb)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        registered.sort();
        let mut want = expected.in_service.clone();
        want.sort();
        want.dedup();
        if registered != want {
            problems.push(format!(
                "{}: {} holds {registered:?}, expected {want:?}",
                region.name, elb.name
            ));
        }
        let tags = porter_core::balancer::tags(&clients, elb)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        want_live.extend(
            tags.get(porter_core::promote::PREVIOUS_NAME_TAG)
                .filter(|n| !n.is_empty())
                .cloned(),
        );
        if !tags
            .get(porter_core::promote::PROMOTED_TAG)
            .is_some_and(|t| t.contains(&expected.stack_name))
        {
            problems.push(format!(
                "{}: {} is not tagged with {}",
                region.name, elb.name, expected.stack_name
            ));
        }
    }
    if keep == 0 {
        let live: Vec<String> = porter_core::prune::service_stacks(&clients, service, environment)
            .await
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .filter(|s| s.status != "DELETE_COMPLETE")
            .map(|s| s.stack_name)
            .collect();
        let mut want = want_live;
        want.sort();
        want.dedup();
        let mut live = live;
        live.sort();
        if live != want {
            problems.push(format!(
                "{}: live stacks {live:?}, expected only {want:?} (the promoted stack and its rollback target)",
                region.name
            ));
        }
    }
    Ok(problems)
}

/// Which kind of CodePipeline action runs the deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// The Lambda invoke action, `pipeline` with UserParameters.
    Invoke,
    /// The custom action type, its job polled by `pipeline` when woken.
    Custom(crate::job_sim::Wake),
}

/// `porter local pipeline`: the deploy as CodePipeline runs it. The folder
/// is zipped into the artifact bucket as a source stage would, then the
/// `pipeline` function is driven through the job loop until it reports.
pub async fn run_pipeline(
    endpoint: &str,
    host: &str,
    opts: &Options,
    kind: ActionKind,
    wait: Duration,
    out: &mut dyn Write,
) -> Result<(crate::job_sim::ActionEnd, Option<Outcome>)> {
    let started = Instant::now();
    let prepared = prepare(endpoint, opts, out).await?;
    let s3 = prepared.aws.s3();
    let zip = porter_core::pack::zip_folder(&prepared.repo).map_err(|e| anyhow!("{e}"))?;
    // A commit-like revision: the zip's digest, as a source stage would
    // give the commit id.
    let revision = hex::encode(sha2::Sha256::digest(&zip))[..40].to_string();
    // Under the pipeline's own prefix of the artifact bucket, where
    // CodePipeline keeps a pipeline's artifacts.
    let key = format!(
        "{}{}/source/{}.zip",
        crate::job_sim::artifact_prefix(),
        prepared.config.service_name,
        &revision[..12]
    );
    s3.put_object()
        .bucket(crate::names::ARTIFACT_BUCKET)
        .key(&key)
        .body(zip.into())
        .send()
        .await
        .map_err(|e| one_line("uploading the source artifact", e))?;
    writeln!(out, "source artifact: s3://{}/{key}", crate::names::ARTIFACT_BUCKET)?;
    let input = porter_core::release::S3Object {
        bucket: crate::names::ARTIFACT_BUCKET.into(),
        key,
    };
    let end = match kind {
        ActionKind::Invoke => invoke_action(host, opts, input, revision, wait, out).await?,
        ActionKind::Custom(wake) => {
            let job = crate::job_sim::CustomJobRequest {
                action_type: crate::job_sim::porter_action_type(),
                configuration: [
                    ("Environment", Some(opts.environment.clone())),
                    ("Keep", Some(opts.keep.to_string())),
                    ("WaitForLease", Some(opts.wait_for_lease.to_string())),
                    ("Rollout", opts.rollout.as_ref().map(|r| json!(r).to_string())),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                .collect(),
                input: Some(input),
                revision: Some(revision),
            };
            writeln!(
                out,
                "CodePipeline custom action Deploy/Custom/{}/{}, configuration {:?}",
                porter_lambda::job_worker::PROVIDER,
                porter_lambda::job_worker::VERSION,
                job.configuration.iter().collect::<std::collections::BTreeMap<_, _>>()
            )?;
            crate::job_sim::run_custom_action(host, &job, wake, wait, 500, out).await?
        }
    };
    let outcome = match &end.first_external_id {
        Some(arn) if arn.starts_with("arn:aws:states:") => {
            Some(porter_ops::follow::outcome_of(&prepared.sfn, arn, started.elapsed()).await?)
        }
        _ => None,
    };
    Ok((end, outcome))
}

async fn invoke_action(
    host: &str,
    opts: &Options,
    input: porter_core::release::S3Object,
    revision: String,
    wait: Duration,
    out: &mut dyn Write,
) -> Result<crate::job_sim::ActionEnd> {
    let action = crate::job_sim::Action {
        function: "porter-pipeline".into(),
        user_parameters: json!({"environment": opts.environment, "keep": opts.keep, "branch": "main",
                                "wait_for_lease": opts.wait_for_lease, "rollout": opts.rollout})
        .to_string(),
        input: Some(input),
        revision: Some(revision),
        wait,
        max_calls: 500,
        pipeline_execution: None,
    };
    writeln!(
        out,
        "CodePipeline invoke action `porter-pipeline`, UserParameters {}",
        action.user_parameters
    )?;
    crate::job_sim::run_action(host, &action, out).await
}
