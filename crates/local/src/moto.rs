//! Supervises moto, the local AWS: a pinned `moto_server` from the
//! project's virtualenv, on loopback, stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What starts moto: `moto_server`'s entry point with its per-request
/// costs taken out.
const LAUNCHER: &str = include_str!("moto_server.py");

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    child: Option<tokio::process::Child>,
    pub port: u16,
}

/// Where the project's virtualenv is: `PORTER_VENV`, or `.venv` in the
/// nearest folder up from here that has one.
pub fn venv() -> Result<PathBuf> {
    if let Ok(v) = std::env::var("PORTER_VENV") {
        return Ok(PathBuf::from(v));
    }
    let starts = [
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(".venv");
            if candidate.join("bin").join("moto_server").exists() {
                return Ok(candidate);
            }
        }
    }
    bail!("moto is not installed: run `make venv` in the project folder (it creates .venv with the pinned moto), or set PORTER_VENV")
}

/// A free loopback port, found by binding port 0.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl Moto {
    /// Starts moto on `port` with its Step Functions interpreter on.
    /// `lambda_port` is where moto sends Lambda Invoke calls (`MOTO_PORT`).
    /// Port 0 picks a free port (retrying if another process grabs it first).
    pub async fn start(venv: &Path, port: u16, lambda_port: Option<u16>) -> Result<Moto> {
        if port != 0 {
            return Self::start_on(venv, port, lambda_port).await;
        }
        let mut last = None;
        for _ in 0..5 {
            match Self::start_on(venv, free_port()?, lambda_port).await {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    async fn start_on(venv: &Path, port: u16, lambda_port: Option<u16>) -> Result<Moto> {
        if !port_is_free(port) {
            bail!("port {port} is taken: stop what uses it, or pick another port (--moto-port)");
        }
        let bin = venv.join("bin").join("moto_server");
        if !bin.exists() {
            bail!("{} is missing: run `make venv`", bin.display());
        }
        // moto_server's own entry point, with its per-request costs taken
        // out (see the script).
        let python = venv.join("bin").join("python");
        let mut cmd = tokio::process::Command::new(&python);
        cmd.args(["-c", LAUNCHER, "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // moto loads some thousand public images (with their snapshots and
        // volumes) into each region an EC2 call first touches: about 0.4 s
        // of its CPU per region (a first 8-region deploy took 12.0 s with
        // them, 8.9 s without), for images nothing here uses (the
        // bootstrap names its own).
        cmd.env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false");
        if let Some(lp) = lambda_port {
            cmd.env("MOTO_PORT", lp.to_string());
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting moto with {}", python.display()))?;
        let moto = Moto {
            child: Some(child),
            port,
        };
        moto.wait_ready().await?;
        moto.configure().await?;
        Ok(moto)
    }

    /// Adopts a moto already running (started by `porter local up`).
    pub fn attach(port: u16) -> Moto {
        Moto { child: None, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) -> Result<()> {
        for _ in 0..300 {
            if answers(self.port).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("moto did not answer on port {} within 15 s", self.port)
    }

    /// Switches on moto's Step Functions interpreter, so executions run the
    /// state machine for real instead of staying RUNNING forever.
    pub async fn configure(&self) -> Result<()> {
        let resp = reqwest::Client::new()
            .post(format!("{}/moto-api/config", self.endpoint()))
            .json(&serde_json::json!({"stepfunctions": {"execute_state_machine": true}}))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("moto refused its config: HTTP {}", resp.status());
        }
        Ok(())
    }

    /// Wipes every resource (between demo runs).
    pub async fn reset(&self) -> Result<()> {
        reqwest::Client::new()
            .post(format!("{}/moto-api/reset", self.endpoint()))
            .send()
            .await?
            .error_for_status()?;
        self.configure().await
    }

    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// Whether moto answers on `port`. Its config is the cheapest thing to ask
/// for: the model dump (`/moto-api/data.json`) grows with every resource
/// and region (megabytes after a few deploys: seconds to serve).
pub async fn answers(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/moto-api/config");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build();
    match client {
        Ok(c) => c.get(url).send().await.is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    }
}

/// SDK configs for moto, made once per region: the local stack's own reads
/// (instances, load balancers) run every half second.
#[derive(Debug, Clone)]
pub struct Configs {
    endpoint: String,
    by_region: std::sync::Arc<tokio::sync::Mutex<std::collections::HashMap<String, aws_config::SdkConfig>>>,
}

impl Configs {
    pub fn new(endpoint: &str) -> Configs {
        Configs {
            endpoint: endpoint.to_owned(),
            by_region: Default::default(),
        }
    }

    pub async fn get(&self, region: &str) -> aws_config::SdkConfig {
        let mut map = self.by_region.lock().await;
        if let Some(c) = map.get(region) {
            return c.clone();
        }
        let c = sdk_config(&self.endpoint, region).await;
        map.insert(region.to_owned(), c.clone());
        c
    }
}

/// An SDK config that talks to the local stack with fixed test credentials.
pub async fn sdk_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    sdk_config_as(endpoint, region, "testing").await
}

/// As [`sdk_config`], calling with the access key `key` (a function's:
/// the front checks its calls against the function's role).
pub async fn sdk_config_as(endpoint: &str, region: &str, key: &str) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new(key, "testing", None, None, "porter-local");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(porter_core::aws::http_client(porter_core::aws::Roots::System))
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(creds)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await
}
