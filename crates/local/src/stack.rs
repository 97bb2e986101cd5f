//! The local stack as one unit: moto, and the Lambda host it calls.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use porter_core::aws::Aws;
use porter_core::pins::{self, Pinning};
use serde::{Deserialize, Serialize};

use crate::elb::Balancers;
use crate::front::Front;
use crate::instances::Fleet;
use crate::invoke_host::Faults;
use crate::job_sim::Jobs;
use crate::moto::{self, Moto};
use crate::signals::Signals;

// The names, where users of the local stack have always found them.
pub use crate::names::{
    function_arn, ACCOUNT, ARTIFACT_BUCKET, FIRST_MACHINE_IMAGE, LEASE_TABLE, MACHINE_IMAGE_PARAMETER, REGION,
};

/// A running local stack. Dropping it stops moto and the host.
#[derive(Debug)]
pub struct LocalStack {
    pub moto: Moto,
    pub host_port: u16,
    pub jobs: Jobs,
    /// The instances it boots (or why it does not).
    pub fleet: Fleet,
    pub balancers: Balancers,
    host: tokio::task::JoinHandle<()>,
}

/// What `porter local up` records so later commands can find the stack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackFile {
    pub moto_port: u16,
    pub host_port: u16,
    pub pid: u32,
}

/// How to start a local stack. The default: any free ports, no faults,
/// and instances kept as moto's books only.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub moto_port: u16,
    pub host_port: u16,
    /// Failures to inject into the host (the state machine's Retry).
    pub faults: Faults,
    /// Instances that boot their UserData, and load balancers that check
    /// them and carry traffic, where namespaces can be made (else it says
    /// why and keeps books). Off: nothing boots, health is moto's.
    pub run_instances: bool,
}

impl Options {
    /// The default, with instances that run.
    pub fn running() -> Options {
        Options {
            run_instances: true,
            ..Options::default()
        }
    }

    /// The default, with `faults` injected.
    pub fn with_faults(faults: Faults) -> Options {
        Options {
            faults,
            ..Options::default()
        }
    }
}

impl LocalStack {
    /// Starts the host on `options.host_port` (0: any free port), then moto
    /// on `options.moto_port` pointing its Lambda calls at the host.
    pub async fn start(options: Options) -> Result<LocalStack> {
        let Options {
            moto_port,
            host_port,
            faults,
            run_instances,
        } = options;
        let venv = moto::venv()?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", host_port))
            .await
            .with_context(|| format!("port {host_port} is taken: stop what uses it, or pick another (--host-port)"))?;
        let host_port = listener.local_addr()?.port();
        let moto = Moto::start(&venv, moto_port, Some(host_port)).await?;
        let fleet = Fleet::start(&moto.endpoint(), host_port, Signals::default(), run_instances).await;
        let balancers = Balancers::start(fleet.clone());
        let front = Front::new(&moto.endpoint(), fleet.clone(), balancers.clone());
        let host_url = format!("http://127.0.0.1:{host_port}");
        // Each function as its own role, as in AWS: it calls with a key of
        // its own, by which the front checks each call against its role
        // (crates/local/src/callers.rs).
        let mut contexts = std::collections::HashMap::new();
        for function in porter_lambda::Function::ALL {
            contexts.insert(function.name(), function_context(&host_url, function.name()).await);
        }
        let jobs = Jobs::default();
        let app = crate::invoke_host::router(contexts, faults, jobs.clone(), front);
        let host = tokio::spawn(async move {
            if let Err(e) = crate::invoke_host::serve(app, listener).await {
                eprintln!("porter local: the Lambda host stopped: {e}");
            }
        });
        Ok(LocalStack {
            moto,
            host_port,
            jobs,
            fleet,
            balancers,
            host,
        })
    }

    /// The AWS endpoint clients of the local stack use: moto behind the
    /// front, which answers what moto cannot once instances run.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.host_port)
    }

    pub async fn stop(self) {
        self.host.abort();
        self.balancers.shutdown();
        self.fleet.shutdown().await;
        self.moto.stop().await;
    }
}

/// What `function` runs with on the local stack: pinned as the functions
/// are in AWS (`bootstrap` writes the pins), its AWS the front (moto, with
/// real instance health and stack signals where instances run), calling
/// with the function's own key.
async fn function_context(host_url: &str, function: &str) -> porter_lambda::Context {
    let key = crate::callers::access_key(function);
    let aws = Aws::new(moto::sdk_config_as(host_url, REGION, &key).await)
        .with_pinning(Pinning::Pinned {
            path: pins::DEFAULT_PATH.into(),
            service: None,
        })
        .with_fence(LEASE_TABLE);
    // The functions reach CodePipeline through the host (the job API
    // moto lacks) and run the deploy state machine `deploy` creates.
    let codepipeline = aws_sdk_codepipeline::Client::from_conf(
        aws_sdk_codepipeline::config::Builder::from(aws.sdk_config())
            .endpoint_url(host_url)
            .build(),
    );
    let mut ctx = porter_lambda::Context::new(aws).with_codepipeline(codepipeline);
    ctx.state_machine_arn = Some(crate::names::state_machine_arn());
    ctx.artifact_bucket = Some(ARTIFACT_BUCKET.to_owned());
    ctx.lease_table = Some(LEASE_TABLE.to_owned());
    ctx.image_parameter = Some(MACHINE_IMAGE_PARAMETER.to_owned());
    // The CLI's local deploys pack the repository's folder.
    ctx.local_sources = true;
    // Jobs are checked against the local pipeline the job simulator
    // plays, as a real installation checks its own.
    ctx.job_rules = Some(porter_core::job_origin::Rules {
        main_pipeline: crate::job_sim::LOCAL_PIPELINE.into(),
        approved_environments: crate::job_sim::APPROVED_ENVIRONMENTS
            .iter()
            .map(|e| e.to_string())
            .collect(),
        branch_environments: Vec::new(),
    });
    // Hooks run here as processes; a Dockerfile hook is skipped with a
    // warning unless PORTER_HOOKS_REQUIRE_DOCKER=1 makes it a failure.
    ctx.hooks = Some(porter_core::hooks::Runner::Processes(std::sync::Arc::new(
        crate::hook_runner::Processes {
            require_docker: std::env::var("PORTER_HOOKS_REQUIRE_DOCKER").is_ok_and(|v| v == "1"),
        },
    )));
    ctx.notify = porter_lambda::notify::Settings {
        topic_arn: Some(crate::names::notification_topic_arn()),
        webhook_hosts: porter_lambda::notify::hosts(crate::names::WEBHOOK_HOSTS),
        service: None,
    };
    ctx
}

/// `.local/stack.json` under the project (or current) folder.
pub fn stack_file(base: &Path) -> PathBuf {
    base.join(".local").join("stack.json")
}

pub fn read_stack_file(base: &Path) -> Option<StackFile> {
    let text = std::fs::read_to_string(stack_file(base)).ok()?;
    serde_json::from_str(&text).ok()
}
