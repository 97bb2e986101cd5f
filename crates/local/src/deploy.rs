//! `porter deploy --local`: the shipped state machine, run by moto's
//! interpreter against the real handlers, with progress as it happens.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use porter_core::aws::Aws;
use porter_core::config;
use serde_json::{json, Value};
use sha2::Digest;

use crate::stack::{function_arn, ACCOUNT, REGION};
use crate::{bootstrap, moto};

/// The definition that ships, compiled in so the local run cannot drift
/// from it: only the `${...}` substitutions differ.
pub const DEFINITION: &str = include_str!("../../../statemachines/deploy.asl.json");

pub const STATE_MACHINE: &str = "porter-deploy";

/// The definition with the function ARNs of `arn` filled in.
pub fn definition(arn: impl Fn(&str) -> String) -> String {
    DEFINITION
        .replace("${PackFunctionArn}", &arn("pack"))
        .replace("${ProvisionFunctionArn}", &arn("provision"))
        .replace("${PromoteFunctionArn}", &arn("promote"))
        .replace("${PruneFunctionArn}", &arn("prune"))
        .replace("${LeaseFunctionArn}", &arn("lease"))
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub path: PathBuf,
    pub environment: String,
    pub keep: u32,
    /// Wait for another deploy's lease instead of failing at once.
    pub wait_for_lease: bool,
}

/// What a deploy ended with, per region.
#[derive(Debug, Clone, Default)]
pub struct RegionOutcome {
    pub stack: String,
    pub in_service: Vec<String>,
    /// The previous release's instances that cutover took out.
    pub taken_out: Vec<String>,
    pub deleted: Vec<String>,
    /// Kept by prune as what a rollback goes back to.
    pub rollback: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub execution_arn: String,
    pub succeeded: bool,
    pub output: Value,
    pub error: Option<(String, String)>,
    pub regions: BTreeMap<String, RegionOutcome>,
    pub transitions: usize,
    pub wall: Duration,
}

pub fn state_machine_arn() -> String {
    format!("arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STATE_MACHINE}")
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
            .await?;
        return Ok(arn);
    }
    let out = sfn
        .create_state_machine()
        .name(STATE_MACHINE)
        .definition(def)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/porter-deploy-states"))
        .send()
        .await
        .context("creating the deploy state machine")?;
    Ok(out.state_machine_arn().to_string())
}

/// The deploy lease table, as the infra's `LeaseTable` is made.
pub async fn ensure_lease_table(sdk: &aws_config::SdkConfig) -> Result<()> {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    if ddb
        .describe_table()
        .table_name(crate::stack::LEASE_TABLE)
        .send()
        .await
        .is_ok()
    {
        return Ok(());
    }
    ddb.create_table()
        .table_name(crate::stack::LEASE_TABLE)
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
        .context("creating the deploy lease table")?;
    Ok(())
}

/// The service folder, its config and the account made ready for it: the
/// bootstrap and the deploy state machine.
pub struct Prepared {
    pub repo: PathBuf,
    pub config: config::Config,
    pub aws: Aws,
    pub sfn: aws_sdk_sfn::Client,
    pub machine: String,
}

pub async fn prepare(endpoint: &str, opts: &Options, out: &mut dyn Write) -> Result<Prepared> {
    let sdk = moto::sdk_config(endpoint, REGION).await;
    let aws = Aws::new(sdk.clone());
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let root = std::fs::canonicalize(&opts.path).with_context(|| format!("no such folder {}", opts.path.display()))?;
    let (file, repo) = config::locate(&root);
    let loaded = config::load_file(&file, &repo, &config::process_env)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let cfg = loaded.deployable().map_err(|m| anyhow!(m))?;
    let env = cfg.environment(&opts.environment).map_err(|m| anyhow!(m))?;
    writeln!(
        out,
        "bootstrap: the buckets, network and load balancers a real account would already have"
    )?;
    bootstrap::environment(&aws, &cfg.service_name, env).await?;
    // What the infra holds: the artifact bucket (pack writes payloads only
    // there) and the deploy state machine.
    bootstrap::ensure_bucket(&aws.s3(), crate::stack::ARTIFACT_BUCKET, REGION).await?;
    ensure_lease_table(&sdk).await?;
    let machine = ensure_state_machine(&sfn).await?;
    Ok(Prepared {
        repo,
        config: cfg,
        aws,
        sfn,
        machine,
    })
}

pub async fn run(endpoint: &str, opts: &Options, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    let Prepared {
        repo,
        config: cfg,
        sfn,
        machine,
        ..
    } = prepare(endpoint, opts, out).await?;
    let env = cfg.environment(&opts.environment).map_err(|m| anyhow!(m))?;
    let name = format!("{}-{}-{}", cfg.service_name, env.name, chrono_millis());
    let input = porter_core::pack::DeployInput {
        pack: porter_core::pack::PackInput {
            environment: env.name.clone(),
            source: porter_core::pack::Source::Path(repo.clone()),
            provenance: porter_core::release::Provenance {
                repository: Some(repo.display().to_string()),
                branch: None,
                commit: None,
            },
            image: None,
            artifact_bucket: None,
            sse_kms_key_id: None,
            variables: config::shell_variables(&config::locate(&repo).0),
        },
        keep: opts.keep,
        wait_for_lease: opts.wait_for_lease,
    };
    let exec = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name(&name)
        .input(serde_json::to_string(&input)?)
        .send()
        .await
        .context("starting the execution")?;
    let exec_arn = exec.execution_arn().to_string();
    writeln!(
        out,
        "execution {name}: {} {} to {}",
        cfg.service_name,
        env.name,
        region_list(env)
    )?;

    let mut seen = 0usize;
    let mut transitions = 0usize;
    let deadline = Instant::now() + Duration::from_secs(900);
    let described = loop {
        // Status first, then history: once the status is final, the history
        // read after it holds every event.
        let d = sfn.describe_execution().execution_arn(&exec_arn).send().await?;
        let events = history(&sfn, &exec_arn).await?;
        for e in &events[seen..] {
            if e.r#type().as_str().ends_with("StateEntered") {
                transitions += 1;
            }
            if let Some(line) = progress_line(e) {
                writeln!(out, "{line}")?;
            }
        }
        seen = events.len();
        if d.status().as_str() != "RUNNING" {
            break d;
        }
        if Instant::now() > deadline {
            bail!("the execution is still running after 15 minutes: {exec_arn}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    outcome_from(&described, &exec_arn, transitions, started.elapsed())
}

/// Reads a finished execution: its output, error, transitions.
pub async fn outcome_of(sfn: &aws_sdk_sfn::Client, exec_arn: &str, wall: Duration) -> Result<Outcome> {
    let described = sfn.describe_execution().execution_arn(exec_arn).send().await?;
    let transitions = history(sfn, exec_arn)
        .await?
        .iter()
        .filter(|e| e.r#type().as_str().ends_with("StateEntered"))
        .count();
    outcome_from(&described, exec_arn, transitions, wall)
}

fn outcome_from(
    described: &aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput,
    exec_arn: &str,
    transitions: usize,
    wall: Duration,
) -> Result<Outcome> {
    let succeeded = described.status().as_str() == "SUCCEEDED";
    let output: Value = described
        .output()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null);
    let error = (!succeeded).then(|| {
        (
            described.error().unwrap_or(described.status().as_str()).to_string(),
            described.cause().unwrap_or("no cause given").to_string(),
        )
    });
    Ok(Outcome {
        execution_arn: exec_arn.to_string(),
        succeeded,
        regions: if succeeded {
            regions_of(&output)
        } else {
            BTreeMap::new()
        },
        output,
        error,
        transitions,
        wall,
    })
}

fn region_list(env: &config::Environment) -> String {
    env.regions
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn chrono_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn history(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<Vec<aws_sdk_sfn::types::HistoryEvent>> {
    let mut events = Vec::new();
    let mut token = None;
    loop {
        let page = sfn
            .get_execution_history()
            .execution_arn(arn)
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await?;
        events.extend(page.events().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(events);
        }
    }
}

/// One line per phase step that finished, for a person watching.
fn progress_line(e: &aws_sdk_sfn::types::HistoryEvent) -> Option<String> {
    let exited = e.state_exited_event_details()?;
    let output: Value = serde_json::from_str(exited.output()?).ok()?;
    let name = exited.name();
    if name == "Pack" {
        let r = &output["packed"]["release"];
        let regions: Vec<&str> = r["regions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        return Some(format!(
            "{:<9} packed {} release {} for {}",
            "pack",
            r["service"].as_str().unwrap_or("?"),
            r["version"].as_str().unwrap_or("?"),
            regions.join(", ")
        ));
    }
    let phase = name.strip_suffix("Step")?.to_lowercase();
    let region = output["region"].as_str().unwrap_or("?");
    let result = &output["last"]["result"];
    let detail = match result["status"].as_str() {
        Some("pending") => format!(
            "waiting {}s: {}",
            result["wait_seconds"],
            result["progress"].as_str().unwrap_or("")
        ),
        Some("done") => {
            let o = &result["output"];
            match phase.as_str() {
                "provision" => format!(
                    "stack {} CREATE_COMPLETE",
                    o["stacks"][region]["stack_name"].as_str().unwrap_or("?")
                ),
                "promote" => {
                    let p = &o["regions"][region];
                    let n: usize = p["elbs"]
                        .as_array()
                        .map(|a| a.iter().map(|e| e["in_service"].as_array().map_or(0, Vec::len)).sum())
                        .unwrap_or(0);
                    let out_count = p["deregistered"].as_array().map_or(0, Vec::len);
                    format!(
                        "{} promoted: {n} instance(s) InService, {out_count} previous instance(s) taken out",
                        p["stack_name"].as_str().unwrap_or("?")
                    )
                }
                "prune" => {
                    let deleted: Vec<&str> = o["regions"][region]["deleted"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if deleted.is_empty() {
                        "nothing to delete".to_string()
                    } else {
                        format!("deleted {}", deleted.join(", "))
                    }
                }
                _ => "done".to_string(),
            }
        }
        _ => return None,
    };
    Some(format!("{phase:<9} {region:<10} {detail}"))
}

/// The strings of a JSON list (none when it is not one).
fn strings(v: &Value) -> impl Iterator<Item = String> + '_ {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
}

fn regions_of(output: &Value) -> BTreeMap<String, RegionOutcome> {
    let mut regions: BTreeMap<String, RegionOutcome> = BTreeMap::new();
    for item in output["promoted"].as_array().into_iter().flatten() {
        for (region, p) in item["promoted"].as_object().into_iter().flatten() {
            let r = regions.entry(region.clone()).or_default();
            r.stack = p["stack_name"].as_str().unwrap_or_default().to_string();
            r.taken_out = strings(&p["deregistered"]).collect();
            r.in_service = p["elbs"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| strings(&e["in_service"]))
                .collect();
        }
    }
    for item in output["pruned"].as_array().into_iter().flatten() {
        for (region, p) in item["pruned"].as_object().into_iter().flatten() {
            let r = regions.entry(region.clone()).or_default();
            r.deleted = strings(&p["deleted"]).collect();
            r.rollback = strings(&p["rollback"]).collect();
        }
    }
    regions
}

/// Checks the account, not the execution's word for it: in every region
/// the ELB holds exactly the promoted stack's instances, all InService, its
/// tag names that stack, and the only live stacks of the service are that
/// one and the rollback target its tag names (when prune keeps no more).
pub async fn verify(endpoint: &str, opts: &Options, outcome: &Outcome) -> Result<Vec<String>> {
    let sdk = moto::sdk_config(endpoint, REGION).await;
    let aws = Aws::new(sdk);
    let (file, repo) = config::locate(Path::new(&opts.path));
    let cfg = config::load_file(&file, &repo, &config::process_env)?
        .deployable()
        .map_err(|m| anyhow!(m))?;
    let env = cfg.environment(&opts.environment).map_err(|m| anyhow!(m))?;
    let mut problems = Vec::new();
    for region in &env.regions {
        let Some(expected) = outcome.regions.get(&region.name) else {
            problems.push(format!(
                "{}: the execution reported nothing for this region",
                region.name
            ));
            continue;
        };
        let clients = aws
            .region(&region.name, &region.role_arn, "porter-verify", &[])
            .await
            .map_err(|e| anyhow!("{e}"))?;
        // The promoted stack and its rollback target, as the ELBs' tags name them.
        let mut want_live = vec![expected.stack.clone()];
        for elb in &region.elbs {
            let mut registered = porter_core::promote::registered(&clients, &elb.name)
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
            let tags = porter_core::pins::elb_tags(&clients, &elb.name)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            want_live.extend(
                tags.get(porter_core::promote::PREVIOUS_NAME_TAG)
                    .filter(|n| !n.is_empty())
                    .cloned(),
            );
            if !tags
                .get(porter_core::promote::PROMOTED_TAG)
                .is_some_and(|t| t.contains(&expected.stack))
            {
                problems.push(format!(
                    "{}: {} is not tagged with {}",
                    region.name, elb.name, expected.stack
                ));
            }
        }
        if opts.keep == 0 {
            let live: Vec<String> = porter_core::prune::service_stacks(&clients, &cfg.service_name, &env.name)
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
    }
    Ok(problems)
}

/// `porter local pipeline`: the deploy as CodePipeline runs it. The folder
/// is zipped into the artifact bucket as a source stage would, then the
/// `pipeline` function is driven through the job loop until it reports.
pub async fn run_pipeline(
    endpoint: &str,
    host: &str,
    opts: &Options,
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
    let key = format!("{}/source/{}.zip", prepared.config.service_name, &revision[..12]);
    s3.put_object()
        .bucket(crate::stack::ARTIFACT_BUCKET)
        .key(&key)
        .body(zip.into())
        .send()
        .await
        .context("uploading the source artifact")?;
    writeln!(out, "source artifact: s3://{}/{key}", crate::stack::ARTIFACT_BUCKET)?;
    let action = crate::job_sim::Action {
        function: "porter-pipeline".into(),
        user_parameters: json!({"environment": opts.environment, "keep": opts.keep, "branch": "main", "wait_for_lease": opts.wait_for_lease}).to_string(),
        input: Some(porter_core::release::S3Object {
            bucket: crate::stack::ARTIFACT_BUCKET.into(),
            key,
        }),
        revision: Some(revision),
        wait,
        max_calls: 500,
    };
    writeln!(
        out,
        "CodePipeline invoke action `porter-pipeline`, UserParameters {}",
        action.user_parameters
    )?;
    let end = crate::job_sim::run_action(host, &action, out).await?;
    let outcome = match &end.first_external_id {
        Some(arn) if arn.starts_with("arn:aws:states:") => {
            Some(outcome_of(&prepared.sfn, arn, started.elapsed()).await?)
        }
        _ => None,
    };
    Ok((end, outcome))
}
