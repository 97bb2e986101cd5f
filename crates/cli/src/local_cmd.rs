//! `porter local ...` and `porter deploy --local`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use porter_local::deploy::{self, Options};
use porter_local::stack::{self, LocalStack, Options as StackOptions, StackFile};

#[derive(Subcommand)]
pub(crate) enum LocalCommand {
    /// Start moto and the Lambda host; runs until Ctrl-C or `porter local down`.
    Up {
        #[arg(long, default_value_t = 4510)]
        moto_port: u16,
        #[arg(long, default_value_t = 4511)]
        host_port: u16,
        /// Keep moto's books only: no instance boots, health is moto's
        /// (the default where namespaces cannot be made: not root, not Linux).
        #[arg(long)]
        bookkeeping: bool,
    },
    /// Stop the stack that `porter local up` started.
    Down,
    /// Say whether the local stack is up, and where.
    Status,
    /// Deploy through the `pipeline` function as CodePipeline drives it:
    /// job, continuation tokens, job result.
    Pipeline {
        #[arg(short, long)]
        environment: String,
        #[arg(default_value = ".")]
        path: PathBuf,
        #[arg(long, default_value_t = 0)]
        keep: u32,
        /// Seconds between a continuation and the next call.
        #[arg(long, default_value_t = 1.0)]
        wait_seconds: f64,
        /// Run the deploy as the custom action type (its job polled by the
        /// worker when woken) instead of the Lambda invoke action.
        #[arg(long)]
        custom_action: bool,
    },
    /// Create what a real account would already hold for a service: its
    /// buckets, a VPC with subnets, its load balancers.
    Bootstrap {
        #[arg(short, long)]
        environment: String,
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Set a CloudWatch alarm's state on the local stack (made if missing):
    /// what a rollout's alarm gate reads.
    Alarm {
        name: String,
        #[arg(long)]
        region: String,
        /// OK, ALARM or INSUFFICIENT_DATA.
        #[arg(long, default_value = "ALARM")]
        state: String,
    },
    /// Store a secret on the local stack, as an administrator would in
    /// Secrets Manager or SSM: what `secrets:` and `slack:` name. The value
    /// is read from standard input, so it is never on a command line.
    Secret {
        /// `secretsmanager:NAME` or `ssm:NAME`, as the config writes it.
        reference: String,
        /// Each region to store it in (repeat the flag).
        #[arg(long, required = true)]
        region: Vec<String>,
    },
    /// Send bounded load through the local stack's load balancers (loopback
    /// only) until Ctrl-C, SIGTERM or --max-seconds; then print, per load
    /// balancer, the requests sent, the failed ones and the pages served.
    Load {
        /// Only this region's load balancers.
        #[arg(long)]
        region: Option<String>,
        /// Requests a second per load balancer (at most 100).
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Stop after this long at the latest (at most 900).
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
        /// Keep connections alive between requests (a fresh one per
        /// request otherwise).
        #[arg(long)]
        keep_alive: bool,
        /// Of every 100 requests, how many are slow (`/slow?seconds=N` of
        /// the example service).
        #[arg(long, default_value_t = 0)]
        slow_percent: u32,
        /// How long a slow request takes (at most 10).
        #[arg(long, default_value_t = 3)]
        slow_seconds: u32,
    },
    /// Invoke one function with an event file, print its answer.
    Invoke {
        /// pack, provision, promote or prune.
        function: String,
        #[arg(long)]
        event: PathBuf,
        /// For a CodePipeline job event: make its job first, as the local
        /// pipeline would when it runs the action. Without it the job is
        /// checked as any is, and one the local stack never made is refused.
        #[arg(long)]
        as_pipeline_job: bool,
    },
}

fn base() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// The stack `porter local up` left running, if it still answers.
pub(crate) async fn running() -> Option<StackFile> {
    let f = stack::read_stack_file(&base())?;
    porter_local::moto::answers(f.moto_port).await.then_some(f)
}

pub(crate) async fn run(cmd: LocalCommand) -> Result<ExitCode> {
    match cmd {
        LocalCommand::Up {
            moto_port,
            host_port,
            bookkeeping,
        } => up(moto_port, host_port, !bookkeeping).await,
        LocalCommand::Load {
            region,
            rate,
            max_seconds,
            keep_alive,
            slow_percent,
            slow_seconds,
        } => {
            let shape = porter_local::load::Shape {
                rate,
                keep_alive,
                slow_percent,
                slow_seconds,
            };
            load(region.as_deref(), shape, max_seconds).await
        }
        LocalCommand::Down => down().await,
        LocalCommand::Status => {
            match running().await {
                Some(f) => {
                    println!("local stack up: moto (AWS) at http://127.0.0.1:{}, Lambda host at http://127.0.0.1:{} (pid {})", f.moto_port, f.host_port, f.pid);
                    print_load_balancers(&format!("http://127.0.0.1:{}", f.host_port)).await;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    println!("local stack down (start it with `porter local up`)");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        LocalCommand::Invoke {
            function,
            event,
            as_pipeline_job,
        } => invoke(&function, &event, as_pipeline_job).await,
        LocalCommand::Alarm { name, region, state } => alarm(&name, &region, &state).await,
        LocalCommand::Secret { reference, region } => secret(&reference, &region).await,
        LocalCommand::Bootstrap { environment, path } => bootstrap(&path, &environment).await,
        LocalCommand::Pipeline {
            environment,
            path,
            keep,
            wait_seconds,
            custom_action,
        } => {
            let kind = if custom_action {
                deploy::ActionKind::Custom(porter_local::job_sim::Wake::Event)
            } else {
                deploy::ActionKind::Invoke
            };
            pipeline(&path, &environment, keep, kind, wait_seconds).await
        }
    }
}

/// Whether instances run, and each load balancer's URL and instances.
async fn print_load_balancers(host: &str) {
    let Ok(t) = porter_local::load::traffic(host).await else {
        return;
    };
    if t.instances != "running" {
        println!("instances: not run ({}); moto keeps their books", t.instances);
        return;
    }
    println!("instances: running (UserData booted in namespaces; load balancers check health and carry traffic)");
    for lb in &t.load_balancers {
        println!(
            "  {} in {}: {}  ({} of {} instance(s) serving)",
            lb.label(),
            lb.region,
            lb.url,
            lb.in_service(),
            lb.instances.len()
        );
    }
}

async fn load(region: Option<&str>, shape: porter_local::load::Shape, max_seconds: u64) -> Result<ExitCode> {
    use porter_local::load;
    let Some(f) = running().await else {
        bail!("the local stack is down: start it with `porter local up` (in another terminal)");
    };
    let t = load::traffic(&format!("http://127.0.0.1:{}", f.host_port)).await?;
    if t.instances != "running" {
        bail!(
            "no instance runs on this local stack ({}), so nothing serves traffic",
            t.instances
        );
    }
    let targets: Vec<_> = t
        .load_balancers
        .into_iter()
        .filter(|lb| region.is_none_or(|r| r == lb.region))
        .collect();
    if targets.is_empty() {
        bail!(
            "no load balancer{} on the local stack: run a deploy first",
            region.map(|r| format!(" in {r}")).unwrap_or_default()
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let max = Duration::from_secs(max_seconds);
    let runs: Vec<_> = targets
        .iter()
        .map(|lb| {
            let url = lb.url.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move { load::drive(&url, shape, max, stop).await })
        })
        .collect();
    eprintln!(
        "sending {} request(s)/s to each of {} load balancer(s){}{}; Ctrl-C or SIGTERM stops",
        shape.rate.min(load::MAX_RATE),
        targets.len(),
        if shape.keep_alive {
            " on kept-alive connections"
        } else {
            ""
        },
        if shape.slow_percent > 0 {
            format!(
                ", {}% of them taking {} s",
                shape.slow_percent.min(100),
                shape.slow_seconds.min(load::MAX_SLOW_SECONDS)
            )
        } else {
            String::new()
        }
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let all_done = async {
        let mut tallies = Vec::new();
        for r in runs {
            tallies.push(r.await.unwrap_or_default());
        }
        tallies
    };
    tokio::pin!(all_done);
    let tallies = tokio::select! {
        t = &mut all_done => t,
        _ = tokio::signal::ctrl_c() => { let _ = stop_tx.send(true); all_done.await }
        _ = term.recv() => { let _ = stop_tx.send(true); all_done.await }
    };
    let mut failed = 0;
    for (lb, t) in targets.iter().zip(tallies) {
        let pages: Vec<String> = t.pages.iter().map(|(p, n)| format!("{p}: {n}")).collect();
        println!(
            "{} {}: requests: {}, failed: {} ({})",
            lb.region,
            lb.name,
            t.requests,
            t.failed,
            listed_or(&pages, "no page served")
        );
        for why in &t.failures {
            println!("  failed: {why}");
        }
        failed += t.failed;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn up(moto_port: u16, host_port: u16, run_instances: bool) -> Result<ExitCode> {
    if let Some(f) = running().await {
        bail!(
            "the local stack is already up (moto on port {}); `porter local down` stops it",
            f.moto_port
        );
    }
    let local = LocalStack::start(StackOptions {
        moto_port,
        host_port,
        faults: Default::default(),
        run_instances,
    })
    .await?;
    let file = stack::stack_file(&base());
    std::fs::create_dir_all(file.parent().expect("has a parent"))?;
    let record = StackFile {
        moto_port: local.moto.port,
        host_port: local.host_port,
        pid: std::process::id(),
    };
    std::fs::write(&file, serde_json::to_string(&record)?)?;
    println!(
        "local stack up: moto (AWS, Step Functions interpreter on) at {}, Lambda host at http://127.0.0.1:{}",
        local.moto.endpoint(),
        local.host_port
    );
    println!(
        "export AWS_ENDPOINT_URL={} to point AWS tools at it; Ctrl-C or `porter local down` stops it",
        local.endpoint()
    );
    match local.fleet.mode() {
        porter_local::instances::Mode::Running => println!(
            "instances: release instances boot their UserData in their own namespaces; `porter local status` lists the load balancers' URLs"
        ),
        porter_local::instances::Mode::Bookkeeping(why) => println!("instances: not run ({why}); moto keeps their books"),
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    local.stop().await;
    let _ = std::fs::remove_file(&file);
    println!("local stack down");
    Ok(ExitCode::SUCCESS)
}

async fn down() -> Result<ExitCode> {
    let Some(f) = stack::read_stack_file(&base()) else {
        println!("no local stack recorded in {}", stack::stack_file(&base()).display());
        return Ok(ExitCode::SUCCESS);
    };
    let _ = std::process::Command::new("kill").arg(f.pid.to_string()).status();
    for _ in 0..100 {
        if porter_local::moto::port_is_free(f.moto_port) && porter_local::moto::port_is_free(f.host_port) {
            let _ = std::fs::remove_file(stack::stack_file(&base()));
            // What a stack killed mid-stop left: its instances and namespaces.
            porter_local::instances::sweep(f.host_port).await;
            println!("local stack down");
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the local stack (pid {}) did not stop within 10 s; stop it with `kill -9 {}`",
        f.pid,
        f.pid
    )
}

async fn secret(reference: &str, regions: &[String]) -> Result<ExitCode> {
    use porter_local::instance_secrets::{self, Store};
    let Some((store, name)) = reference
        .split_once(':')
        .and_then(|(s, n)| Some((Store::parse(s)?, n)))
        .filter(|(_, n)| !n.is_empty())
    else {
        bail!("`{reference}` is not a reference: write secretsmanager:NAME or ssm:NAME, as .porter/config does");
    };
    let Some(f) = running().await else {
        bail!("the local stack is down: start it with `porter local up` (in another terminal)");
    };
    let mut value = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
        .context("reading the value from standard input")?;
    // What `echo value |` adds is not part of the secret.
    let value = value.strip_suffix('\n').unwrap_or(&value);
    if value.is_empty() {
        bail!("no value on standard input: pipe it in (printf %s \"$VALUE\" | porter local secret {reference} --region ...)");
    }
    let moto = format!("http://127.0.0.1:{}", f.moto_port);
    for region in regions {
        let sdk = porter_local::moto::sdk_config(&moto, region).await;
        instance_secrets::put(&moto, &sdk, region, store, name, value).await?;
        // The reference only: the value is never printed.
        println!("{reference} stored in {region}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn alarm(name: &str, region: &str, state: &str) -> Result<ExitCode> {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
    let value = match state {
        "OK" => StateValue::Ok,
        "ALARM" => StateValue::Alarm,
        "INSUFFICIENT_DATA" => StateValue::InsufficientData,
        other => bail!("`{other}` is not an alarm state: OK, ALARM or INSUFFICIENT_DATA"),
    };
    let Some(f) = running().await else {
        bail!("the local stack is down: start it with `porter local up` (in another terminal)");
    };
    let sdk = porter_local::moto::sdk_config(&format!("http://127.0.0.1:{}", f.moto_port), region).await;
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    let what = |verb: &str| format!("{verb} alarm {name} in {region}");
    let found = cw
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|e| porter_ops::one_line(&what("read"), e))?;
    if found.metric_alarms().is_empty() {
        cw.put_metric_alarm()
            .alarm_name(name)
            .namespace("porter-local")
            .metric_name(name)
            .statistic(Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
            .send()
            .await
            .map_err(|e| porter_ops::one_line(&what("create"), e))?;
    }
    cw.set_alarm_state()
        .alarm_name(name)
        .state_value(value)
        .state_reason("set by porter local alarm")
        .send()
        .await
        .map_err(|e| porter_ops::one_line(&what("set"), e))?;
    println!("alarm {name} in {region}: {state}");
    Ok(ExitCode::SUCCESS)
}

async fn invoke(function: &str, event: &Path, as_pipeline_job: bool) -> Result<ExitCode> {
    let body = std::fs::read_to_string(event).with_context(|| format!("cannot read {}", event.display()))?;
    let parsed =
        serde_json::from_str::<serde_json::Value>(&body).with_context(|| format!("{} is not JSON", event.display()))?;
    let job = parsed
        .pointer("/CodePipeline.job/id")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let Some(f) = running().await else {
        bail!("the local stack is down: start it with `porter local up` (in another terminal)");
    };
    if let (Some(id), true) = (&job, as_pipeline_job) {
        let data = &parsed["CodePipeline.job"]["data"];
        let s3 = &data["inputArtifacts"][0]["location"]["s3Location"];
        let made = porter_local::job_sim::MadeJob {
            function: format!("porter-{function}"),
            user_parameters: data["actionConfiguration"]["configuration"]["UserParameters"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            input: match (s3["bucketName"].as_str(), s3["objectKey"].as_str()) {
                (Some(bucket), Some(key)) => Some(porter_core::release::S3Object {
                    bucket: bucket.into(),
                    key: key.into(),
                }),
                _ => None,
            },
            revision: data["inputArtifacts"][0]["revision"].as_str().map(str::to_owned),
            execution: porter_local::job_sim::new_execution("Deploy"),
        };
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/porter-local/jobs/{id}/made", f.host_port))
            .json(&made)
            .send()
            .await?
            .error_for_status()?;
    }
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations",
            f.host_port
        ))
        .body(body)
        .send()
        .await?;
    let failed = resp.headers().contains_key("X-Amz-Function-Error") || !resp.status().is_success();
    let text = resp.text().await?;
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .map(|v| serde_json::to_string_pretty(&v).unwrap_or(text.clone()))
        .unwrap_or(text);
    println!("{pretty}");
    // A CodePipeline job's real answer is what the function reported to
    // CodePipeline (the job simulator kept it), not the invoke's answer.
    let mut job_failed = false;
    if let Some(id) = job {
        let results: Vec<porter_local::job_sim::JobResult> = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/porter-local/jobs/{id}", f.host_port))
            .send()
            .await?
            .json()
            .await
            .context("reading what the function reported to CodePipeline")?;
        match results.last() {
            None if failed => {
                job_failed = true;
                println!(
                    "CodePipeline job {id}: refused, nothing reported (a job the local pipeline did not make; --as-pipeline-job makes it first)"
                )
            }
            None => {
                job_failed = true;
                println!("CodePipeline job {id}: nothing reported (the job would hang until CodePipeline times it out)")
            }
            Some(r) => {
                job_failed = matches!(r, porter_local::job_sim::JobResult::Failure { .. });
                println!("CodePipeline job {id}: {}", describe_job_result(r));
            }
        }
    }
    Ok(if failed || job_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One line for what a function told CodePipeline.
fn describe_job_result(r: &porter_local::job_sim::JobResult) -> String {
    use porter_local::job_sim::JobResult;
    match r {
        JobResult::Failure { message, .. } => format!("failure: {message}"),
        JobResult::Success {
            continuation_token: Some(token),
            summary,
            ..
        } => format!(
            "in progress ({}); continuation token {token}",
            summary.as_deref().unwrap_or("no summary")
        ),
        JobResult::Success {
            summary,
            output_variables,
            ..
        } => {
            let mut vars: Vec<String> = output_variables.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vars.sort();
            format!(
                "success ({}){}",
                summary.as_deref().unwrap_or("no summary"),
                if vars.is_empty() {
                    String::new()
                } else {
                    format!("; output variables {}", vars.join(", "))
                }
            )
        }
    }
}

/// `porter deploy --local` and `porter rollback --local`: `what` through the
/// state machine on the local stack, then the account checked.
/// The local stack a deploy runs against: `porter local up`'s when it runs,
/// else one started for this command alone (with instances that run).
/// Either way AWS as the functions see it: moto behind the front, so the
/// checks after a deploy read real instance health.
struct Attached {
    endpoint: String,
    own: Option<LocalStack>,
}

impl Attached {
    async fn attach_or_start() -> Result<Attached> {
        Ok(match running().await {
            Some(f) => Attached {
                endpoint: format!("http://127.0.0.1:{}", f.host_port),
                own: None,
            },
            None => {
                let s = LocalStack::start(StackOptions::running()).await?;
                Attached {
                    endpoint: s.endpoint(),
                    own: Some(s),
                }
            }
        })
    }

    /// Prints the load balancers' URLs, and stops a stack of its own.
    async fn done(self) {
        print_load_balancers(&self.endpoint).await;
        if let Some(s) = self.own {
            s.stop().await;
        }
    }
}

pub(crate) async fn deploy(
    path: &Path,
    environment: &str,
    what: deploy::What,
    run: &crate::outcome::Run,
) -> Result<ExitCode> {
    let opts = Options {
        path: path.to_path_buf(),
        environment: environment.to_owned(),
        keep: run.keep,
        wait_for_lease: run.wait_for_lease,
        rollout: run.rollout(),
        vars: run.vars.clone(),
    };
    let stack = Attached::attach_or_start().await?;
    let endpoint = stack.endpoint.clone();
    let mut stdout = std::io::stdout();
    let verb = match what {
        deploy::What::Source => "deployed",
        deploy::What::Release(_) => "rolled back to",
    };
    let code = match deploy::run_what(&endpoint, &opts, &what, &mut stdout).await {
        Err(e) => {
            eprintln!("porter: the deploy could not run: {e:#}");
            ExitCode::FAILURE
        }
        Ok(outcome) => summarize(&endpoint, &opts, &outcome, verb).await?,
    };
    stack.done().await;
    Ok(code)
}

/// Prints how the deploy ended and checks the account; exit 0 only when
/// the execution succeeded and the account shows it.
async fn summarize(endpoint: &str, opts: &Options, outcome: &deploy::Outcome, verb: &str) -> Result<ExitCode> {
    if crate::outcome::report(outcome, verb) != ExitCode::SUCCESS {
        return Ok(ExitCode::FAILURE);
    }
    let problems = deploy::verify(endpoint, opts, outcome).await?;
    if problems.is_empty() {
        println!("verified: every region serves this release only, from its promoted stack");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verification FAILED:");
        for p in problems {
            println!("  {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

async fn pipeline(
    path: &Path,
    environment: &str,
    keep: u32,
    kind: deploy::ActionKind,
    wait_seconds: f64,
) -> Result<ExitCode> {
    let opts = Options {
        path: path.to_path_buf(),
        environment: environment.to_owned(),
        keep,
        ..Default::default()
    };
    let stack = Attached::attach_or_start().await?;
    let endpoint = stack.endpoint.clone();
    let wait = Duration::from_secs_f64(wait_seconds.max(0.0));
    let mut stdout = std::io::stdout();
    let code = match deploy::run_pipeline(&endpoint, &endpoint, &opts, kind, wait, &mut stdout).await {
        Err(e) => {
            eprintln!("porter: the pipeline action could not run: {e:#}");
            ExitCode::FAILURE
        }
        Ok((end, outcome)) => {
            println!(
                "\nCodePipeline action {} after {} call(s)",
                if end.succeeded { "succeeded" } else { "FAILED" },
                end.calls
            );
            match outcome {
                Some(o) if end.succeeded => summarize(&endpoint, &opts, &o, "deployed").await?,
                Some(o) => {
                    summarize(&endpoint, &opts, &o, "deployed").await?;
                    ExitCode::FAILURE
                }
                None => {
                    println!("  {}", end.message);
                    ExitCode::FAILURE
                }
            }
        }
    };
    stack.done().await;
    Ok(code)
}

async fn bootstrap(path: &Path, environment: &str) -> Result<ExitCode> {
    let Some(f) = running().await else {
        bail!("the local stack is down: start it with `porter local up` (in another terminal)");
    };
    let opts = Options {
        path: path.to_path_buf(),
        environment: environment.to_owned(),
        ..Default::default()
    };
    let mut stdout = std::io::stdout();
    let p = deploy::prepare(&format!("http://127.0.0.1:{}", f.moto_port), &opts, &mut stdout).await?;
    let env = p.config.environment(environment)?;
    for r in &env.regions {
        let elbs: Vec<&str> = r.elbs.iter().map(|e| e.name.as_str()).collect();
        println!(
            "  {:<10} bucket {}, ELB {}",
            r.name,
            r.s3_bucket,
            listed_or(&elbs, "none")
        );
    }
    println!("state machine {}", p.machine);
    Ok(ExitCode::SUCCESS)
}

/// `items` joined with commas, or `none` when there are none.
fn listed_or(items: &[impl AsRef<str>], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
    }
}
