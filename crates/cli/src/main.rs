//! `porter`: validate and render a service's config, deploy it through the
//! state machine on the local stack, and run that stack.

mod local_cmd;
mod ops_cmd;
mod outcome;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use porter_core::config::{self, Severity};
use porter_core::release::{Release, S3Object};
use porter_core::template::{self, PayloadLocation, RenderContext};

#[derive(Parser)]
#[command(
    name = "porter",
    version,
    about = "Blue/green multi-region deploys without a CD server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a .porter/config: every error with its line, column and key.
    Validate {
        /// The config file, its .porter folder, or the service folder.
        #[arg(default_value = ".porter/config")]
        path: PathBuf,
    },
    /// Print the CloudFormation template provision would create.
    Render {
        #[arg(short, long)]
        environment: String,
        #[arg(short, long)]
        region: String,
        #[arg(default_value = ".porter/config")]
        path: PathBuf,
    },
    /// Deploy a service folder through the deploy state machine: in AWS
    /// (the installation `--stack` names), or `--local`.
    Deploy {
        #[command(flatten)]
        on: ops_cmd::On,
        #[command(flatten)]
        run: outcome::Run,
    },
    /// Deploy the release the live one replaced (or `--to VERSION`) again,
    /// in every region, through the same state machine.
    Rollback {
        #[command(flatten)]
        on: ops_cmd::On,
        /// The release version to go back to (`porter history` lists them).
        #[arg(long)]
        to: Option<String>,
        /// Now: a running deploy is aborted (which puts back what it cut
        /// over); otherwise every region at once, with no bake and no
        /// canaries. Prints how long until every region served.
        #[arg(long)]
        fast: bool,
        #[command(flatten)]
        run: outcome::Run,
    },
    /// Stop the environment's running deploy and put back, in every
    /// region, what it cut over; its lease is given back.
    Abort {
        #[command(flatten)]
        on: ops_cmd::On,
        /// Keep the stacks the deploy made (to debug them); by default
        /// they are deleted once every region is put back.
        #[arg(long)]
        keep_stacks: bool,
    },
    /// Per region: the release serving, its instances' health, the release
    /// to roll back to; who holds the deploy lease; the last deploys.
    Status {
        #[command(flatten)]
        on: ops_cmd::On,
    },
    /// Past deploys and rollbacks of an environment, newest first.
    History {
        #[command(flatten)]
        on: ops_cmd::On,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The local stack: moto plus the project's Lambda host.
    #[command(subcommand)]
    Local(local_cmd::LocalCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PORTER_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { path } => validate(&path),
        Command::Render {
            environment,
            region,
            path,
        } => render(&path, &environment, &region),
        Command::Deploy { on, run } if on.local => {
            local_cmd::deploy(&on.path, &on.environment, porter_local::deploy::What::Source, &run).await
        }
        Command::Deploy { on, run } => ops_cmd::deploy(&on, &run).await,
        Command::Rollback { on, to, fast, run } => ops_cmd::rollback(&on, to, fast, &run).await,
        Command::Abort { on, keep_stacks } => ops_cmd::abort(&on, keep_stacks).await,
        Command::Status { on } => ops_cmd::status(&on).await,
        Command::History { on, limit } => ops_cmd::history(&on, limit).await,
        Command::Local(cmd) => local_cmd::run(cmd).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("porter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<config::Loaded> {
    let (file, root) = config::locate(path);
    config::load_file(&file, &root, &config::process_env).with_context(|| format!("cannot read {}", file.display()))
}

/// What the instances may reach, as `validate` says it.
fn egress(rules: Option<&[config::EgressRule]>) -> String {
    match rules {
        None => "all outbound traffic (AWS's default; auto_scaling_group.security_group_egress limits it)".to_owned(),
        Some([]) => "none (security_group_egress is empty)".to_owned(),
        Some(rules) => rules
            .iter()
            .map(|r| match r.ip_protocol.as_str() {
                "-1" => format!("all to {}", r.cidr_ip),
                p if r.from_port == r.to_port => format!("{p} {} to {}", r.from_port, r.cidr_ip),
                p => format!("{p} {}-{} to {}", r.from_port, r.to_port, r.cidr_ip),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn validate(path: &Path) -> Result<ExitCode> {
    let loaded = load(path)?;
    for d in loaded.located() {
        eprintln!("{d}");
    }
    let errors = loaded.errors().count();
    let warnings = loaded.diagnostics.len() - errors;
    match &loaded.config {
        Some(cfg) if errors == 0 => {
            println!("{}: valid", loaded.file.display());
            println!("service {}", cfg.service_name);
            for env in &cfg.environments {
                println!("  environment {} ({})", env.name, env.instance_type);
                for r in &env.regions {
                    let elbs: Vec<&str> = r.elbs.iter().map(|e| e.name.as_str()).collect();
                    println!(
                        "    region {}: {} AZ, {} instance(s), ELB {}",
                        r.name,
                        r.azs.len(),
                        r.instance_count,
                        if elbs.is_empty() {
                            "none (promote is a no-op)".to_owned()
                        } else {
                            elbs.join(", ")
                        }
                    );
                    let asg = &r.auto_scaling_group;
                    println!(
                        "      group: starts at {} (or the live fleet's size, if larger), min {}, max {}; health grace {} s",
                        r.instance_count,
                        asg.min_size.unwrap_or(r.instance_count),
                        asg.max_size
                            .map_or_else(|| "its start".to_owned(), |m| m.to_string()),
                        asg.health_check_grace_period
                            .unwrap_or(template::HEALTH_CHECK_GRACE_SECONDS)
                    );
                    println!("      egress: {}", egress(asg.security_group_egress.as_deref()));
                }
                println!(
                    "    stacks: created within {} min, a failed one {}",
                    env.stack_creation.timeout_minutes,
                    match env.stack_creation.on_failure {
                        config::StackOnFailure::Delete => "deleted (DELETE)",
                        config::StackOnFailure::Rollback => "kept without its resources (ROLLBACK)",
                        config::StackOnFailure::DoNothing => "kept with its instances (DO_NOTHING)",
                    }
                );
            }
            let blocking = loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Incomplete)
                .count();
            println!(
                "{warnings} warning(s){}",
                if blocking > 0 {
                    format!(", {blocking} of them block a deploy")
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{}: {errors} error(s), {warnings} warning(s)", loaded.file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn render(path: &Path, environment: &str, region: &str) -> Result<ExitCode> {
    let loaded = load(path)?;
    let file = loaded.file.clone();
    let cfg = match loaded.deployable() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let env = cfg.environment(environment)?;
    let reg = env.region(region)?;
    // A stand-in release: the real one gets its version and sha256 at pack.
    let sha = "0".repeat(64);
    let key = format!("porter-deployment/{}/{}/preview/{sha}.tar", cfg.service_name, env.name);
    let obj = |suffix: &str| S3Object {
        bucket: reg.s3_bucket.clone(),
        key: key.replace(".tar", suffix),
    };
    let release = Release {
        service: cfg.service_name.clone(),
        environment: env.name.clone(),
        version: "preview".into(),
        revision: "preview".into(),
        sha256: sha.clone(),
        config_sha256: String::new(),
        image: None,
        images: Default::default(),
        rollout: Default::default(),
        steps: porter_core::release::Steps::none(),
        payload: obj(".tar"),
        manifest: obj(".manifest.json"),
        config: obj(".config.json"),
        record: obj(".release.json"),
        regions: vec![reg.name.clone()],
    };
    let payload = PayloadLocation {
        bucket: reg.s3_bucket.clone(),
        key,
        sha256: sha,
    };
    let t = template::render(&cfg, env, reg, &release, &payload, &RenderContext::default());
    let stack = template::stack_name(&cfg.service_name, &env.name, &release.version);
    if let Err(why) = template::check_user_data(&t, &stack, &reg.name) {
        eprintln!("{}: error: {why}", file.display());
        return Ok(ExitCode::FAILURE);
    }
    println!("{}", serde_json::to_string_pretty(&t)?);
    eprintln!(
        "rendered {} for {environment}/{region} (version and sha256 are placeholders until pack; ELB ingress is added at provision)",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}
