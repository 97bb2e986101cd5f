//! Instances that run: for each EC2 instance a release's Auto Scaling group
//! launches in moto, the local stack boots it — its UserData, byte for byte
//! as moto holds it after CloudFormation's substitutions, runs as root in
//! the instance's own network and mount namespaces (own `/srv`, `/tmp`,
//! `/var/log`, `/opt`), with its private address on a veth to its VPC's
//! bridge. `aws`, `cfn-signal`, `dnf` and `systemctl` are small shims that
//! reach the local stack through a Unix socket (inside an instance,
//! 127.0.0.1 is the instance itself): the payload comes down through moto's
//! real S3 API, a signal lands in [`Signals`]. When moto terminates the
//! instance (stack deleted, group scaled in) its processes are killed and
//! its namespace goes.
//!
//! Where namespaces cannot be made (not root, not Linux) the fleet says so
//! once and the local stack keeps bookkeeping: moto's instances only.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::instance_secrets;
use crate::netns::{self, Cidr};
use crate::query;
use crate::signals::{Signal, Signals};

/// How often moto's instances are read.
const WATCH_EVERY: Duration = Duration::from_millis(400);
/// A VPC without subnets (zones only) gets the default VPC's first range.
const DEFAULT_SUBNET: &str = "172.31.0.0/20";

/// Whether instances run, and if not, why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Running,
    Bookkeeping(String),
}

/// An instance the local stack booted.
#[derive(Debug, Clone)]
pub struct Booted {
    pub region: String,
    pub group: Option<String>,
    pub vpc_ns: String,
    pub addr: Ipv4Addr,
    /// Set when the instance was stopped by the local stack (its stack
    /// failed): it serves nothing any more.
    pub stopped: bool,
}

#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    prefix: String,
    dir: PathBuf,
    moto: String,
    configs: crate::moto::Configs,
    signals: Signals,
    regions: Mutex<BTreeSet<String>>,
    booted: Mutex<HashMap<String, Booted>>,
    /// Instances being booted, or that could not be (never tried again).
    seen: Mutex<HashSet<String>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// One VPC bridge and router address at a time (boots run side by side).
    network: tokio::sync::Mutex<()>,
}

impl Fleet {
    /// Starts the fleet of the local stack whose host listens on
    /// `host_port`; `run` false keeps bookkeeping on purpose.
    pub async fn start(moto: &str, host_port: u16, signals: Signals, run: bool) -> Fleet {
        let (prefix, dir) = (prefix(host_port), state_dir(host_port));
        let mode = if !run {
            Mode::Bookkeeping("instances are not run (--bookkeeping)".into())
        } else {
            match netns::unavailable(&prefix).await {
                None => Mode::Running,
                Some(why) => Mode::Bookkeeping(why),
            }
        };
        let fleet = Fleet {
            inner: Arc::new(Inner {
                mode,
                prefix,
                dir,
                moto: moto.to_owned(),
                configs: crate::moto::Configs::new(moto),
                signals,
                regions: Mutex::default(),
                booted: Mutex::default(),
                seen: Mutex::default(),
                tasks: Mutex::default(),
                network: tokio::sync::Mutex::new(()),
            }),
        };
        if let Mode::Bookkeeping(why) = &fleet.inner.mode {
            if run {
                eprintln!("porter local: instances do not run here ({why}); moto keeps their books only");
            }
            return fleet;
        }
        if let Err(e) = fleet.prepare().await {
            eprintln!("porter local: instances cannot run: {e:#}");
            return fleet;
        }
        let watcher = fleet.clone();
        let task = tokio::spawn(async move { watcher.watch_loop().await });
        fleet.inner.tasks.lock().expect("tasks lock").push(task);
        fleet
    }

    pub fn mode(&self) -> &Mode {
        &self.inner.mode
    }

    pub fn running(&self) -> bool {
        self.inner.mode == Mode::Running
    }

    /// SDK configs for moto, shared by the local stack's own readers.
    pub fn configs(&self) -> &crate::moto::Configs {
        &self.inner.configs
    }

    pub fn signals(&self) -> &Signals {
        &self.inner.signals
    }

    /// Starts watching `region` (the front calls this for every region a
    /// request names).
    pub fn watch(&self, region: &str) {
        if self.running() {
            self.inner
                .regions
                .lock()
                .expect("regions lock")
                .insert(region.to_owned());
        }
    }

    pub fn regions(&self) -> Vec<String> {
        self.inner
            .regions
            .lock()
            .expect("regions lock")
            .iter()
            .cloned()
            .collect()
    }

    pub fn booted(&self, instance: &str) -> Option<Booted> {
        self.inner.booted.lock().expect("booted lock").get(instance).cloned()
    }

    fn instance_dir(&self, instance: &str) -> PathBuf {
        self.inner.dir.join("instances").join(instance)
    }

    /// The instance's own network namespace.
    fn namespace(&self, instance: &str) -> String {
        format!("{}{instance}", self.inner.prefix)
    }

    /// Stops every instance of `group` in `region` (CloudFormation rolled
    /// their stack back): their processes end, they serve nothing.
    pub async fn stop_group(&self, region: &str, group: &str) {
        let victims: Vec<String> = {
            let mut booted = self.inner.booted.lock().expect("booted lock");
            booted
                .iter_mut()
                .filter(|(_, b)| b.region == region && b.group.as_deref() == Some(group) && !b.stopped)
                .map(|(id, b)| {
                    b.stopped = true;
                    id.clone()
                })
                .collect()
        };
        for id in victims {
            netns::kill_all(&self.namespace(&id)).await;
        }
    }

    /// Ends every instance and namespace of this local stack.
    pub async fn shutdown(&self) {
        for t in self.inner.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
        if !self.running() {
            return;
        }
        clear(&self.inner.prefix, &self.inner.dir).await;
        self.inner.booted.lock().expect("booted lock").clear();
    }

    /// Sweeps what a dead local stack on this port left, writes the shims
    /// and serves the instances' agent socket.
    async fn prepare(&self) -> Result<()> {
        let dir = &self.inner.dir;
        clear(&self.inner.prefix, dir).await;
        std::fs::create_dir_all(dir.join("shims")).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::create_dir_all(dir.join("instances"))?;
        let socket = dir.join("agent.sock");
        for (name, text) in shims(&socket) {
            let path = dir.join("shims").join(name);
            std::fs::write(&path, text)?;
            set_mode(&path, 0o755)?;
        }
        let listener =
            tokio::net::UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        let app = agent(self.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("porter local: the instances' agent stopped: {e}");
            }
        });
        self.inner.tasks.lock().expect("tasks lock").push(task);
        Ok(())
    }

    async fn watch_loop(self) {
        let mut told: HashSet<String> = HashSet::new();
        loop {
            for region in self.regions() {
                if let Err(e) = self.reconcile(&region).await {
                    let msg = format!("{e:#}");
                    if told.insert(msg.clone()) {
                        eprintln!("porter local: reading instances in {region}: {msg}");
                    }
                }
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    /// Boots the region's new release instances and ends the ones moto no
    /// longer runs.
    async fn reconcile(&self, region: &str) -> Result<()> {
        let instances = query::describe_instances(&self.inner.moto, region).await?;
        let live: HashSet<String> = instances
            .iter()
            .filter(|i| matches!(i.state.as_str(), "pending" | "running"))
            .map(|i| i.id.clone())
            .collect();
        let gone: Vec<String> = self
            .inner
            .booted
            .lock()
            .expect("booted lock")
            .iter()
            .filter(|(id, b)| b.region == region && !live.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.end(&id).await;
        }
        for instance in instances {
            // Release instances only: their groups carry porter's tags.
            if !live.contains(&instance.id) || instance.tag("porter:service").is_none() {
                continue;
            }
            if !self.inner.seen.lock().expect("seen lock").insert(instance.id.clone()) {
                continue;
            }
            let fleet = self.clone();
            let region = region.to_owned();
            tokio::spawn(async move {
                if let Err(e) = fleet.boot(&region, &instance).await {
                    fleet.boot_failed(&region, &instance.id, &format!("{e:#}")).await;
                }
            });
        }
        Ok(())
    }

    async fn boot(&self, region: &str, instance: &query::Instance) -> Result<()> {
        let moto = &self.inner.moto;
        let dir = self.instance_dir(&instance.id);
        std::fs::create_dir_all(&dir)?;
        let user_data = query::user_data(moto, region, &instance.id).await?.unwrap_or_default();
        let script = dir.join("user-data");
        std::fs::write(&script, &user_data)?;
        set_mode(&script, 0o700)?;
        let cidr = match &instance.subnet {
            Some(s) => query::subnet_cidr(moto, region, s).await?,
            None => DEFAULT_SUBNET.to_owned(),
        };
        let subnet = Cidr::parse(&cidr)?;
        let vpc = instance.vpc.clone().unwrap_or_else(|| format!("default-{region}"));
        let vpc_ns = format!("{}{region}-{vpc}", self.inner.prefix);
        let ns = self.namespace(&instance.id);
        let addr = {
            let mut booted = self.inner.booted.lock().expect("booted lock");
            let taken: HashSet<Ipv4Addr> = booted.values().filter(|b| b.vpc_ns == vpc_ns).map(|b| b.addr).collect();
            let addr = subnet
                .hosts()
                .find(|a| !taken.contains(a))
                .with_context(|| format!("subnet {cidr} is full"))?;
            // Held now, so a concurrent boot picks another.
            booted.insert(
                instance.id.clone(),
                Booted {
                    region: region.to_owned(),
                    group: instance.tag("aws:autoscaling:groupName").map(str::to_owned),
                    vpc_ns: vpc_ns.clone(),
                    addr,
                    stopped: true,
                },
            );
            addr
        };
        {
            let _one = self.inner.network.lock().await;
            netns::ensure_vpc(&vpc_ns).await?;
            netns::ensure_router(&vpc_ns, &subnet).await?;
        }
        netns::make_instance(&ns, &vpc_ns, addr, &subnet).await?;

        std::fs::write(dir.join("instance-id"), &instance.id)?;
        std::fs::write(dir.join("region"), region)?;
        let console = std::fs::File::create(dir.join("console.log"))?;
        let shims = self.inner.dir.join("shims");
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &ns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "bash",
            "-c",
        ])
        .arg(BOOT)
        .arg("porter-boot")
        .arg(&script)
        .arg(&shims)
        .arg(&dir)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .stdin(std::process::Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        // The boot ends with the instance: `end` kills its namespace.
        .kill_on_drop(false);
        let mut child = cmd.spawn().context("starting the instance's boot")?;
        if let Some(b) = self.inner.booted.lock().expect("booted lock").get_mut(&instance.id) {
            b.stopped = false;
        }
        // Reap the boot script when it ends (the service it started lives on).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }

    /// The local stack could not boot the instance: it says so on the
    /// console and, where the UserData names the resource it signals,
    /// signals FAILURE for it (rather than let the stack wait out its
    /// timeout for an instance that never ran).
    async fn boot_failed(&self, region: &str, instance: &str, why: &str) {
        eprintln!("porter local: instance {instance} in {region} cannot boot: {why}");
        let dir = self.instance_dir(instance);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            dir.join("console.log"),
            format!("porter local: the instance cannot boot: {why}\n"),
        );
        let user_data = std::fs::read_to_string(dir.join("user-data")).unwrap_or_default();
        if let Some((stack, resource)) = signalled_resource(&user_data) {
            self.inner.signals.record(
                region,
                &stack,
                &resource,
                Signal {
                    instance: instance.to_owned(),
                    success: false,
                    reason: format!("the local stack could not boot the instance: {why}"),
                    at: std::time::SystemTime::now(),
                },
            );
        }
        if let Some(b) = self.inner.booted.lock().expect("booted lock").get_mut(instance) {
            b.stopped = true;
        }
    }

    async fn end(&self, instance: &str) {
        netns::destroy(&self.namespace(instance)).await;
        self.inner.booted.lock().expect("booted lock").remove(instance);
        let _ = std::fs::remove_dir_all(self.instance_dir(instance));
    }
}

/// The names of a local stack's namespaces begin with this: its host port
/// is unique among running stacks.
fn prefix(host_port: u16) -> String {
    format!("porter-{host_port}-")
}

/// Where a local stack keeps its instances' files, shims and agent socket.
fn state_dir(host_port: u16) -> PathBuf {
    PathBuf::from(format!("/run/porter-local/{host_port}"))
}

/// Ends every instance and namespace a local stack on `host_port` left.
pub async fn sweep(host_port: u16) {
    clear(&prefix(host_port), &state_dir(host_port)).await;
}

/// Ends every namespace named with `prefix` (with its processes) and
/// removes the files under `dir`.
async fn clear(prefix: &str, dir: &Path) {
    for ns in netns::existing(prefix).await {
        netns::destroy(&ns).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for Inner {
    /// A local stack dropped without `stop` (a test that panicked) still
    /// leaves no instance, namespace or veth behind.
    fn drop(&mut self) {
        if self.mode != Mode::Running {
            return;
        }
        let Ok(out) = std::process::Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for ns in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.prefix))
        {
            if let Ok(pids) = std::process::Command::new("ip").args(["netns", "pids", ns]).output() {
                let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                if !pids.is_empty() {
                    let _ = std::process::Command::new("kill").arg("-KILL").args(&pids).status();
                }
            }
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `--stack S --resource R` a boot script's `cfn-signal` names.
fn signalled_resource(user_data: &str) -> Option<(String, String)> {
    let line = user_data.lines().find(|l| l.contains("cfn-signal"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.trim_matches(|c| c == '"' || c == ';').to_owned())
    };
    Some((after("--stack")?, after("--resource")?))
}

/// Runs inside the instance's namespaces: its own `/srv`, `/tmp`,
/// `/var/log` and `/opt` (where the shims go, `cfn-signal` where Amazon
/// Linux has it), then the UserData as cloud-init would: as root, by its
/// own `#!`.
const BOOT: &str = r#"set -e
script="$1"; shims="$2"; state="$3"
for d in /srv /tmp /var/log /opt; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
chmod 1777 /tmp
mkdir -p /opt/aws/bin /opt/porter/bin
cp "$shims"/* /opt/porter/bin/
cp "$state/instance-id" "$state/region" /opt/porter/
ln -s /opt/porter/bin/cfn-signal /opt/aws/bin/cfn-signal
export PATH="/opt/porter/bin:$PATH"
echo "porter local: booting $(cat /opt/porter/instance-id) at $(ip -4 -o addr show dev eth0 | awk '{print $4}')"
exec "$script"
"#;

/// The shims an instance's boot finds on its PATH.
fn shims(socket: &Path) -> Vec<(&'static str, String)> {
    let sock = socket.display().to_string();
    let aws = r#"#!/bin/bash
# porter local: the `aws` CLI, as far as a release's boot script uses it.
agent="__SOCKET__"
region=""; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --region) region="$2"; shift 2 ;;
    --quiet|--only-show-errors|--no-progress) shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]}"
case "${1:-} ${2:-}" in
  "s3 cp")
    src="${3:-}"; dst="${4:-}"
    case "$src" in s3://*/*) ;; *) echo "porter local: the aws shim copies only s3://BUCKET/KEY to a file" >&2; exit 2 ;; esac
    [ -n "$dst" ] || { echo "porter local: aws s3 cp needs a destination file" >&2; exit 2; }
    code=$(curl -sS --unix-socket "$agent" -o "$dst" -w '%{http_code}' -G "http://agent/s3/${src#s3://}" --data-urlencode "region=$region") || exit 1
    if [ "$code" != 200 ]; then cat "$dst" >&2; echo >&2; rm -f "$dst"; exit 1; fi
    echo "download: $src to $dst" ;;
  "secretsmanager get-secret-value"|"ssm get-parameter")
    store="$1"; shift 2; name=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --secret-id|--name) name="$2"; shift 2 ;;
        --query|--output) shift 2 ;;
        --with-decryption) shift ;;
        *) echo "porter local: the aws shim does not take \`$1\` here" >&2; exit 2 ;;
      esac
    done
    # The value stays in this shell's memory: no file holds it.
    resp=$(curl -sS --unix-socket "$agent" -w '\n%{http_code}' -G "http://agent/secret" \
      --data-urlencode "store=$store" --data-urlencode "name=$name" --data-urlencode "region=$region" \
      --data-urlencode "instance=$(cat /opt/porter/instance-id)") || exit 1
    code="${resp##*$'\n'}"; body="${resp%$'\n'*}"
    if [ "$code" != 200 ]; then printf '%s\n' "$body" >&2; exit 254; fi
    printf '%s\n' "$body" ;;
  "ecr get-login-password")
    echo "porter local: no container registry runs on the local stack (image mode needs ECR and a Docker engine)" >&2; exit 1 ;;
  *)
    echo "porter local: the aws shim does not do \`aws $*\`" >&2; exit 2 ;;
esac
"#;
    let cfn_signal = r#"#!/bin/bash
# porter local: cfn-signal, delivered to the local stack's CloudFormation.
agent="__SOCKET__"
code=0; stack=""; resource=""; region=""; reason=""
while [ $# -gt 0 ]; do
  case "$1" in
    -e|--exit-code) code="$2"; shift 2 ;;
    -s|--success) if [ "$2" = true ]; then code=0; else code=1; fi; shift 2 ;;
    --stack) stack="$2"; shift 2 ;;
    --resource) resource="$2"; shift 2 ;;
    --region) region="$2"; shift 2 ;;
    -r|--reason) reason="$2"; shift 2 ;;
    -i|--id|-u|--url|--role|-f|--credential-file|--access-key|--secret-key|--https-proxy) shift 2 ;;
    *) echo "cfn-signal: unexpected argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$stack" ] && [ -n "$resource" ] || { echo "cfn-signal: --stack and --resource are required" >&2; exit 2; }
[ -n "$region" ] || region=$(cat /opt/porter/region)
curl -sS -f --unix-socket "$agent" -X POST http://agent/signal \
  --data-urlencode "instance=$(cat /opt/porter/instance-id)" --data-urlencode "stack=$stack" \
  --data-urlencode "resource=$resource" --data-urlencode "region=$region" \
  --data-urlencode "exit_code=$code" --data-urlencode "reason=$reason" >/dev/null
"#;
    let dnf = r#"#!/bin/bash
# porter local: packages are not installed on the local stack; the host's tools stand in.
echo "porter local: dnf $*: skipped (the host's tools stand in)" >&2
exit 0
"#;
    let systemctl = r#"#!/bin/bash
# porter local: no init system runs in a local instance.
echo "porter local: systemctl $*: no services can be started here (image mode needs a Docker engine)" >&2
exit 1
"#;
    [
        ("aws", aws),
        ("cfn-signal", cfn_signal),
        ("dnf", dnf),
        ("systemctl", systemctl),
    ]
    .into_iter()
    .map(|(n, t)| (n, t.replace("__SOCKET__", &sock)))
    .collect()
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The instances' agent: what the shims call.
fn agent(fleet: Fleet) -> Router {
    Router::new()
        .route("/s3/{bucket}/{*key}", get(s3_get))
        .route("/signal", post(signal))
        .route("/secret", get(secret))
        .with_state(fleet)
}

/// `aws s3 cp`: the object through moto's real S3 API.
async fn s3_get(
    State(fleet): State<Fleet>,
    UrlPath((bucket, key)): UrlPath<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let region = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, v)| k == "region" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| crate::names::REGION.to_owned());
    let sdk = fleet.configs().get(&region).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    match s3.get_object().bucket(&bucket).key(&key).send().await {
        Ok(out) => match out.body.collect().await {
            Ok(bytes) => (StatusCode::OK, bytes.into_bytes()).into_response(),
            Err(e) => (StatusCode::BAD_GATEWAY, format!("reading s3://{bucket}/{key}: {e}")).into_response(),
        },
        Err(e) => (
            StatusCode::NOT_FOUND,
            porter_ops::one_line(&format!("fatal error: s3://{bucket}/{key} in {region}"), e).to_string(),
        )
            .into_response(),
    }
}

/// `aws secretsmanager get-secret-value` and `aws ssm get-parameter`: the
/// value, if the instance's role may read it (`instance_secrets`). Nothing
/// here logs a value.
async fn secret(State(fleet): State<Fleet>, RawQuery(q): RawQuery) -> Response {
    let f: HashMap<String, String> = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let Some(store) = instance_secrets::Store::parse(&field("store")) else {
        return (StatusCode::BAD_REQUEST, "store must be secretsmanager or ssm").into_response();
    };
    let Some(booted) = fleet.booted(&field("instance")) else {
        return (StatusCode::FORBIDDEN, "the local stack booted no such instance").into_response();
    };
    let Some(group) = booted.group else {
        return (
            StatusCode::FORBIDDEN,
            "the instance belongs to no Auto Scaling group, so it has no role",
        )
            .into_response();
    };
    let region = booted.region;
    let sdk = fleet.configs().get(&region).await;
    let name = field("name");
    match instance_secrets::read(&fleet.inner.moto, &sdk, &region, &group, store, &name).await {
        Ok(value) => (StatusCode::OK, value).into_response(),
        Err(instance_secrets::Refused::AccessDenied(why)) => (StatusCode::FORBIDDEN, why).into_response(),
        Err(instance_secrets::Refused::NotFound(why)) => (StatusCode::NOT_FOUND, why).into_response(),
        Err(instance_secrets::Refused::Failed(why)) => (StatusCode::BAD_GATEWAY, why).into_response(),
    }
}

async fn signal(State(fleet): State<Fleet>, body: axum::body::Bytes) -> StatusCode {
    let mut f: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let mut take = |k: &str| f.remove(k).unwrap_or_default();
    let (instance, stack, resource, region) = (take("instance"), take("stack"), take("resource"), take("region"));
    let success = take("exit_code") == "0";
    let reason = take("reason");
    if stack.is_empty() || resource.is_empty() {
        return StatusCode::BAD_REQUEST;
    }
    tracing::info!(%instance, %stack, %resource, success, %reason, "resource signal");
    fleet.signals().record(
        &region,
        &stack,
        &resource,
        Signal {
            instance,
            success,
            reason,
            at: std::time::SystemTime::now(),
        },
    );
    StatusCode::NO_CONTENT
}

/// Where the fleet boots, not the instances' state.
impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.inner.prefix)
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_resource_a_boot_script_signals() {
        let script = "#!/bin/bash\nsignal() { /opt/aws/bin/cfn-signal -e \"$1\" --reason \"$2\" --stack hello-staging-1 --resource AutoScalingGroup --region us-west-2; }\n";
        assert_eq!(
            signalled_resource(script),
            Some(("hello-staging-1".into(), "AutoScalingGroup".into()))
        );
        assert_eq!(signalled_resource("#!/bin/sh\necho hi\n"), None);
    }
}
