//! `porter deploy` (without `--local`), `rollback`, `status` and `history`:
//! against the installation in an AWS account (found from its stack's
//! outputs, with the default credential chain), or with `--local` against
//! the local stack `porter local up` runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use porter_core::aws::Aws;
use porter_core::config;
use porter_core::pack::Source;
use porter_ops::account::{Installation, DEFAULT_STACK};
use porter_ops::follow::{self, Outcome};
use porter_ops::status::{self, Status};
use sha2::Digest;

use crate::outcome::{report, Run};

/// What the commands act on: a service's environment, in AWS or on the
/// local stack.
#[derive(Args, Debug, Clone)]
pub(crate) struct On {
    #[arg(short, long)]
    pub environment: String,
    /// Act on the local stack (`porter local up`) instead of AWS.
    #[arg(long)]
    pub local: bool,
    /// The stack `make deploy` created (its outputs name the state
    /// machine, the artifact bucket and the lease table).
    #[arg(long, default_value = DEFAULT_STACK)]
    pub stack: String,
    /// The service folder.
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

/// An account and its porter installation, ready to use.
struct Account {
    aws: Aws,
    sfn: aws_sdk_sfn::Client,
    installation: Installation,
}

async fn account(place: &On) -> Result<Account> {
    if place.local {
        let Some(f) = crate::local_cmd::running().await else {
            bail!("the local stack is down: start it with `porter local up` (in another terminal), then deploy with `porter deploy --local`");
        };
        let sdk = porter_local::moto::sdk_config(
            &format!("http://127.0.0.1:{}", f.host_port),
            porter_local::stack::REGION,
        )
        .await;
        return Ok(Account {
            aws: Aws::unpinned(sdk.clone()),
            sfn: aws_sdk_sfn::Client::new(&sdk),
            installation: porter_local::deploy::installation(),
        });
    }
    // The SDK's whole chain (profiles, SSO, instance roles...), as every
    // AWS tool on this machine reads it.
    let aws = Aws::unpinned(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(porter_core::aws::http_client(porter_core::aws::Roots::System))
            .load()
            .await,
    );
    let cfn = aws_sdk_cloudformation::Client::new(aws.sdk_config());
    let installation = Installation::from_stack(&cfn, &place.stack).await?;
    Ok(Account {
        sfn: aws_sdk_sfn::Client::new(aws.sdk_config()),
        aws,
        installation,
    })
}

/// The service's config and the environment named.
fn service(path: &Path, environment: &str) -> Result<(PathBuf, config::Config)> {
    let root = std::fs::canonicalize(path).with_context(|| format!("no such folder {}", path.display()))?;
    let (file, repo) = config::locate(&root);
    let cfg = config::load_file(&file, &repo, &config::process_env)
        .with_context(|| format!("cannot read {}", file.display()))?
        .deployable()?;
    cfg.environment(environment)?;
    Ok((repo, cfg))
}

/// `porter status`.
pub(crate) async fn status(on: &On) -> Result<ExitCode> {
    let (_, cfg) = service(&on.path, &on.environment)?;
    let acct = account(on).await?;
    let s = read_status(&acct, &cfg, &on.environment).await?;
    print!("{}", s.render());
    let unreadable = s.regions.iter().any(|r| r.problem.is_some());
    Ok(if unreadable {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn read_status(acct: &Account, cfg: &config::Config, environment: &str) -> Result<Status> {
    let env = cfg.environment(environment)?;
    let ddb = aws_sdk_dynamodb::Client::new(acct.aws.sdk_config());
    let lease = status::lease_holder(&ddb, &acct.installation.lease_table, &cfg.service_name, &env.name).await?;
    // The holder's history says where it stands; a history that cannot be
    // read leaves the lease line alone.
    let running = match &lease {
        Some(h) => porter_core::history::progress(&acct.sfn, &h.execution)
            .await
            .ok()
            .map(|p| status::Running::of(&p)),
        None => None,
    };
    Ok(Status {
        service: cfg.service_name.clone(),
        environment: env.name.clone(),
        regions: status::read(&acct.aws, &cfg.service_name, env).await,
        lease,
        running,
        recent: porter_ops::history::read(&acct.sfn, &acct.installation.state_machine_arn, &env.name, 5).await?,
    })
}

/// `porter abort`: the deploy that holds the environment's lease is
/// stopped, and the promote function's undo puts back what it cut over and
/// gives its lease back. In AWS the stop is all this command does itself:
/// the infra's rule on aborted executions invokes the undo, as for a stop
/// from the console; this waits for it. The local stack has no EventBridge,
/// so with `--local` the function is invoked as the rule would.
pub(crate) async fn abort(on: &On, keep_stacks: bool) -> Result<ExitCode> {
    let environment = &on.environment;
    let (_, cfg) = service(&on.path, environment)?;
    let acct = account(on).await?;
    let started = Instant::now();
    if !abort_held(on, &acct, &cfg, keep_stacks).await? {
        println!(
            "no deploy of {} in {environment} holds the lease: there is nothing to abort",
            cfg.service_name
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("aborted in {:.1} s; what serves now:", started.elapsed().as_secs_f64());
    print!("{}", read_status(&acct, &cfg, environment).await?.render());
    Ok(ExitCode::SUCCESS)
}

/// Aborts the deploy that holds the environment's lease, if one does
/// (see [`abort`]); whether there was one.
async fn abort_held(on: &On, acct: &Account, cfg: &config::Config, keep_stacks: bool) -> Result<bool> {
    let environment = &on.environment;
    let ddb = aws_sdk_dynamodb::Client::new(acct.aws.sdk_config());
    let table = &acct.installation.lease_table;
    let Some(holder) = status::lease_holder(&ddb, table, &cfg.service_name, environment).await? else {
        return Ok(false);
    };
    println!(
        "aborting {} (release {}) of {} in {environment}",
        holder.execution, holder.release, cfg.service_name
    );
    if on.local {
        let Some(f) = crate::local_cmd::running().await else {
            bail!("the local stack is down: start it with `porter local up`");
        };
        let resp = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/2015-03-31/functions/promote/invocations",
                f.host_port
            ))
            .json(&serde_json::json!({"abort": {"execution": holder.execution, "keep_stacks": keep_stacks}}))
            .send()
            .await?;
        let failed = resp.headers().contains_key("X-Amz-Function-Error") || !resp.status().is_success();
        let answer: serde_json::Value = resp.json().await.context("reading the abort's answer")?;
        if failed {
            bail!(
                "the abort failed: {}",
                answer["errorMessage"].as_str().unwrap_or(&answer.to_string())
            );
        }
        for (region, what) in answer["undone"].as_object().into_iter().flatten() {
            println!("  {region:<10} {}", what.as_str().unwrap_or_default());
        }
        for build in answer["hooks_stopped"].as_array().into_iter().flatten() {
            println!("  hook build {}", build.as_str().unwrap_or_default());
        }
        match &answer["stacks"] {
            serde_json::Value::Object(each) => {
                for (region, what) in each {
                    println!("  {region:<10} stack {}", what.as_str().unwrap_or_default());
                }
            }
            other => println!("  stacks: {}", other.as_str().unwrap_or_default()),
        }
    } else {
        acct.sfn
            .stop_execution()
            .execution_arn(&holder.execution)
            // The rule's undo reads this: it keeps the stacks when asked.
            .error(if keep_stacks {
                porter_core::execution::ABORTED_KEEP_STACKS
            } else {
                porter_core::execution::ABORTED
            })
            .cause("porter abort: the deploy was stopped and what it cut over put back")
            .send()
            .await
            .map_err(|e| porter_ops::one_line(&format!("stop execution {}", holder.execution), e))?;
        // The rule's undo gives the lease back when every region is back.
        let deadline = Instant::now() + Duration::from_secs(300);
        while status::lease_holder(&ddb, table, &cfg.service_name, environment)
            .await?
            .is_some_and(|h| h.execution == holder.execution)
        {
            if Instant::now() > deadline {
                bail!(
                    "the deploy was stopped, and its lease is still held after 5 minutes: the undo has not finished (its log is the promote function's); `porter status` shows what serves"
                );
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    Ok(true)
}

/// `porter history`.
pub(crate) async fn history(on: &On, limit: usize) -> Result<ExitCode> {
    let environment = &on.environment;
    let (_, cfg) = service(&on.path, environment)?;
    let acct = account(on).await?;
    let entries =
        porter_ops::history::read(&acct.sfn, &acct.installation.state_machine_arn, environment, limit).await?;
    println!(
        "{} in {}: the last {} deploy(s) and rollback(s), newest first",
        cfg.service_name,
        environment,
        entries.len()
    );
    for e in &entries {
        println!("  {}", e.line());
    }
    Ok(ExitCode::SUCCESS)
}

/// `porter rollback`: the previous (or named) release, deployed again
/// through the same state machine: lease, provision (which finds its
/// stack), promote, prune.
pub(crate) async fn rollback(on: &On, to: Option<String>, fast: bool, run: &Run) -> Result<ExitCode> {
    let environment = &on.environment;
    let (repo, cfg) = service(&on.path, environment)?;
    let acct = account(on).await?;
    let started = Instant::now();
    let mut run = run.clone();
    if fast {
        // A deploy still running (baking a bad release, say) is aborted:
        // the release before it serves again in every region it reached,
        // which is where a rollback would go.
        if abort_held(on, &acct, &cfg, false).await? {
            println!(
                "rolled back by aborting the running deploy: every region serves what it served before it, {:.1} s after the command",
                started.elapsed().as_secs_f64()
            );
            print!("{}", read_status(&acct, &cfg, environment).await?.render());
            return Ok(ExitCode::SUCCESS);
        }
        // Otherwise every region at once: one wave, no bake, no canaries.
        let env = cfg.environment(environment)?;
        run.waves = Some(vec![env.regions.iter().map(|r| r.name.clone()).collect()]);
        run.bake_seconds = Some(0);
        run.canary_instances = Some(0);
    }
    let run = &run;
    let version = match to {
        Some(v) if !porter_core::release::is_version(&v) => bail!(
            "`{v}` is not a release version ({} hex digits); `porter history -e {environment}` lists them",
            porter_core::release::VERSION_LEN
        ),
        Some(v) => v,
        None => status::rollback_version(&read_status(&acct, &cfg, environment).await?)?,
    };
    println!(
        "rolling {} in {environment} back to release {version}",
        cfg.service_name
    );
    let code = if on.local {
        // As `deploy --local` does: the same state machine, then the
        // account checked.
        crate::local_cmd::deploy(
            &on.path,
            environment,
            porter_local::deploy::What::Release(version.clone()),
            run,
        )
        .await?
    } else {
        let source = Source::Release {
            service: cfg.service_name.clone(),
            version: version.clone(),
        };
        let outcome = start_and_follow(&acct, &repo, &cfg, environment, source, "rollback", run).await?;
        report(&outcome, "rolled back to")
    };
    if fast && code == ExitCode::SUCCESS {
        println!(
            "every region serves release {version}, {:.1} s after the command (one wave, no bake, no canaries)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(code)
}

/// `porter deploy` without `--local`: the folder zipped into the artifact
/// bucket (as a pipeline's source stage would), then the state machine.
pub(crate) async fn deploy(on: &On, run: &Run) -> Result<ExitCode> {
    let environment = &on.environment;
    let (repo, cfg) = service(&on.path, environment)?;
    let acct = account(on).await?;
    let zip = porter_core::pack::zip_folder(&repo).map_err(|e| anyhow!("{e}"))?;
    let digest = hex::encode(sha2::Sha256::digest(&zip));
    let key = format!("{}/source/cli-{}.zip", cfg.service_name, &digest[..16]);
    let bucket = &acct.installation.artifact_bucket;
    let mut put = acct.aws.s3().put_object().bucket(bucket).key(&key).body(zip.into());
    if let Some(kms) = &acct.installation.artifact_key {
        put = put
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .ssekms_key_id(kms);
    }
    put.send()
        .await
        .map_err(|e| porter_ops::one_line(&format!("upload the source to s3://{bucket}/{key}"), e))?;
    println!("source: s3://{bucket}/{key}");
    let source = Source::S3 {
        bucket: bucket.clone(),
        key,
    };
    let outcome = start_and_follow(&acct, &repo, &cfg, environment, source, "deploy", run).await?;
    Ok(report(&outcome, "deployed"))
}

async fn start_and_follow(
    acct: &Account,
    repo: &Path,
    cfg: &config::Config,
    environment: &str,
    source: Source,
    kind: &str,
    run: &Run,
) -> Result<Outcome> {
    let started = Instant::now();
    let input = follow::input_from_folder(
        environment,
        source,
        repo,
        &acct.installation,
        &follow::Asked {
            keep: run.keep,
            wait_for_lease: run.wait_for_lease,
            rollout: run.rollout(),
            vars: run.vars.clone(),
        },
    );
    let name = follow::execution_name(&cfg.service_name, environment, kind);
    let arn = follow::start(&acct.sfn, &acct.installation.state_machine_arn, &name, &input).await?;
    println!("execution {name}: {kind} {} {environment}", cfg.service_name);
    let mut stdout = std::io::stdout();
    // A real deploy waits for stacks and instances; a lease may be awaited.
    follow::follow(
        &acct.sfn,
        &arn,
        started,
        Duration::from_secs(3 * 3600),
        Duration::from_secs(2),
        &mut stdout,
    )
    .await
}
