//! Load balancers that carry traffic: each classic ELB moto holds, and each
//! target group of an ALB or NLB, gets a listener on 127.0.0.1, health-checks
//! its registered instances with its own settings (an ELB's HealthCheck:
//! target, interval, timeout, thresholds, only a 200 counts; a target
//! group's protocol, port, path, matcher, interval and thresholds) from
//! inside the VPC, and forwards traffic to a healthy instance in turn:
//! behind an HTTP listener each request on its own (a client's kept-alive
//! connection is the load balancer's), behind a TCP one each connection.
//! DescribeInstanceHealth and DescribeTargetHealth are answered from these
//! checks (see `front`), so promote waits on real health (moto calls a
//! target healthy the moment it registers). A target taken out drains for
//! the ELB's connection draining timeout or the target group's
//! deregistration delay: it takes no new request or connection, and what
//! it is answering goes on until it is gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::instances::Fleet;
use crate::netns;

/// How often moto's load balancers are read.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A target group's key among the balancers: its name under this prefix
/// (as its ARN writes it), apart from a classic ELB of the same name.
const TARGET_GROUP_KEY: &str = "targetgroup/";

/// An ELB's HealthCheck, or a target group's health check, as moto holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub target: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
    /// The HTTP codes that count as healthy (a classic ELB: only 200).
    pub matcher: Vec<(u16, u16)>,
}

/// A target group's matcher (`200`, `200-299`, `200,202`): the codes it
/// counts as healthy; `None` when it cannot be read.
pub fn parse_matcher(text: &str) -> Option<Vec<(u16, u16)>> {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                None => part.parse().ok().map(|c| (c, c)),
            }
        })
        .collect()
}

/// What a health check asks: `HTTP:8080/health` or `TCP:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Unsupported(String),
}

impl Target {
    pub fn parse(text: &str) -> Target {
        let (proto, rest) = text.split_once(':').unwrap_or((text, ""));
        let (port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        match (proto.to_ascii_uppercase().as_str(), port.parse::<u16>()) {
            ("HTTP", Ok(port)) => Target::Http {
                port,
                path: if path.is_empty() { "/".into() } else { path.into() },
            },
            ("TCP", Ok(port)) => Target::Tcp { port },
            _ => Target::Unsupported(text.to_owned()),
        }
    }
}

/// An instance's state at its load balancer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Health {
    pub state: &'static str,
    pub reason_code: &'static str,
    pub description: String,
    #[serde(skip)]
    ok: u32,
    #[serde(skip)]
    failed: u32,
}

impl Health {
    fn registering() -> Health {
        Health {
            state: "OutOfService",
            reason_code: "ELB",
            description: "Instance registration is still in progress.".into(),
            ok: 0,
            failed: 0,
        }
    }

    /// Counts one check's outcome against the thresholds.
    fn record(&mut self, outcome: Result<(), String>, check: &HealthCheck) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                self.failed = 0;
                if self.ok >= check.healthy {
                    self.state = "InService";
                    self.reason_code = "N/A";
                    self.description = "N/A".into();
                }
            }
            Err(why) => {
                self.failed += 1;
                self.ok = 0;
                if self.failed >= check.unhealthy || self.state != "InService" {
                    self.state = "OutOfService";
                    self.reason_code = "Instance";
                    self.description = format!("Instance has failed at least the UnhealthyThreshold number of health checks consecutively: {why}");
                }
            }
        }
    }
}

struct Balancer {
    url: String,
    instance_port: u16,
    /// An HTTP listener (a classic ELB's HTTP or HTTPS, an ALB's target
    /// group): each request is placed on its own, as AWS's HTTP load
    /// balancers do; a TCP one carries whole connections.
    http: bool,
    check: HealthCheck,
    registered: Vec<String>,
    health: HashMap<String, Health>,
    /// A target group's: the load balancer in front of it and how long a
    /// target taken out drains.
    target_group: Option<TargetGroupFront>,
    /// Targets taken out, draining until then: no new connections.
    draining: HashMap<String, Instant>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A response body: an instance's, or the load balancer's own.
type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

/// The load balancer's own answer (no instance to ask, or one that failed).
fn plain(status: u16, reason: &str) -> hyper::Response<Body> {
    let body = http_body_util::Full::new(bytes::Bytes::from(format!("{reason}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    resp
}

/// What a load balancer's listener sends on to its instances.
#[derive(Debug, Clone, Copy)]
struct Listener {
    instance_port: u16,
    http: bool,
}

#[derive(Debug, Clone, Default)]
struct TargetGroupFront {
    load_balancer: String,
}

/// One load balancer as `porter local status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub region: String,
    pub name: String,
    /// "elb", or "target_group" (of the ALB or NLB `load_balancer`).
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<String>,
    pub url: String,
    pub instances: BTreeMap<String, Health>,
}

/// A target's health as DescribeTargetHealth words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    pub state: &'static str,
    pub reason: Option<&'static str>,
    pub description: String,
}

impl TargetHealth {
    /// `running`: whether the instance runs (AWS reports a stopped or
    /// terminated target at once, without waiting for checks to fail).
    fn of(h: Option<&Health>, draining: bool, running: bool) -> TargetHealth {
        let t = |state, reason, description: &str| TargetHealth {
            state,
            reason,
            description: description.to_owned(),
        };
        match h {
            _ if draining => t(
                "draining",
                Some("Target.DeregistrationInProgress"),
                "Target deregistration is in progress",
            ),
            None => t(
                "unused",
                Some("Target.NotRegistered"),
                "Target is not registered to the target group",
            ),
            Some(_) if !running => t(
                "unused",
                Some("Target.InvalidState"),
                "Target is in the stopped or terminated state",
            ),
            Some(h) if h.state == "InService" => t("healthy", None, ""),
            Some(h) if h.reason_code == "ELB" => t(
                "initial",
                Some("Elb.RegistrationInProgress"),
                "Target registration is in progress",
            ),
            Some(h) => t("unhealthy", Some("Target.FailedHealthChecks"), &h.description),
        }
    }
}

#[derive(Clone)]
pub struct Balancers {
    fleet: Fleet,
    map: Arc<Mutex<HashMap<(String, String), Balancer>>>,
    next: Arc<AtomicUsize>,
    /// Per region: held by every read of moto's registrations there, and
    /// by the front while a call passes moto through registrations AWS
    /// never shows (see [`Balancers::hold_reads`]).
    reads: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Balancers {
    pub fn start(fleet: Fleet) -> Balancers {
        let b = Balancers {
            fleet,
            map: Arc::default(),
            next: Arc::default(),
            reads: Arc::default(),
        };
        if b.fleet.running() {
            let watcher = b.clone();
            tokio::spawn(async move {
                loop {
                    for region in watcher.fleet.regions() {
                        let _ = watcher.refresh(&region, None).await;
                        let _ = watcher.refresh_target_groups(&region, None).await;
                    }
                    tokio::time::sleep(WATCH_EVERY).await;
                }
            });
        }
        b
    }

    /// Whether instance health comes from these checks (instances run).
    pub fn active(&self) -> bool {
        self.fleet.running()
    }

    /// Keeps every read of moto's registrations waiting until the guard
    /// is dropped. moto answers some Auto Scaling calls by first taking the
    /// other groups' instances out of a load balancer, and the front puts
    /// them back: a read in between would forget their health, and they
    /// would serve nothing until enough checks passed again (seconds of
    /// 503s during a cutover, where AWS would carry every request).
    ///
    /// Only `region`'s reads wait: moto's load balancers are per region,
    /// and with one lock for all, the regions of a deploy were cut over one
    /// after the other here (the 8 attach calls of an 8-region cutover
    /// waited 3.4 s in all, 1.7 s with a lock per region).
    pub async fn hold_reads(&self, region: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.reads_in(region).lock_owned().await
    }

    fn reads_in(&self, region: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.reads
            .lock()
            .expect("read locks")
            .entry(region.to_owned())
            .or_default()
            .clone()
    }

    /// Reads the region's load balancers (or one of them) from moto and
    /// brings listeners, registrations and checks up to date.
    pub async fn refresh(&self, region: &str, name: Option<&str>) -> anyhow::Result<()> {
        let _settled = self.reads_in(region).lock_owned().await;
        let sdk = self.fleet.configs().get(region).await;
        let elb = aws_sdk_elasticloadbalancing::Client::new(&sdk);
        let out = elb
            .describe_load_balancers()
            .set_load_balancer_names(name.map(|n| vec![n.to_owned()]))
            .send()
            .await?;
        let mut seen = Vec::new();
        for d in out.load_balancer_descriptions() {
            let Some(lb_name) = d.load_balancer_name() else {
                continue;
            };
            seen.push(lb_name.to_owned());
            let listener = d.listener_descriptions().iter().find_map(|l| l.listener());
            let instance_port = listener.map_or(80, |l| l.instance_port()) as u16;
            let http = listener.is_some_and(|l| matches!(l.protocol().to_ascii_uppercase().as_str(), "HTTP" | "HTTPS"));
            let check = d
                .health_check()
                .map(|h| HealthCheck {
                    target: h.target().to_owned(),
                    interval: Duration::from_secs(h.interval().max(1) as u64),
                    timeout: Duration::from_secs(h.timeout().max(1) as u64),
                    healthy: h.healthy_threshold().max(1) as u32,
                    unhealthy: h.unhealthy_threshold().max(1) as u32,
                    matcher: vec![(200, 200)],
                })
                .unwrap_or(HealthCheck {
                    target: format!("TCP:{instance_port}"),
                    interval: Duration::from_secs(30),
                    timeout: Duration::from_secs(5),
                    healthy: 10,
                    unhealthy: 2,
                    matcher: vec![(200, 200)],
                });
            let registered: Vec<String> = d
                .instances()
                .iter()
                .filter_map(|i| i.instance_id())
                .map(str::to_owned)
                .collect();
            // Connection draining, as the ELB has it set (moto keeps it;
            // moto's CloudFormation ignores the property).
            let drain = elb
                .describe_load_balancer_attributes()
                .load_balancer_name(lb_name)
                .send()
                .await?
                .load_balancer_attributes()
                .and_then(|a| a.connection_draining())
                .filter(|c| c.enabled())
                .map_or(Duration::ZERO, |c| {
                    Duration::from_secs(c.timeout().unwrap_or(300).max(0) as u64)
                });
            let key = (region.to_owned(), lb_name.to_owned());
            self.update(key, Listener { instance_port, http }, check, registered, None, drain)
                .await?;
        }
        if name.is_none() {
            self.forget(region, |n| {
                !n.starts_with(TARGET_GROUP_KEY) && !seen.iter().any(|s| s == n)
            });
        }
        Ok(())
    }

    /// Brings one load balancer up to date with what moto holds: its
    /// listener opened, its check and port, and new registrations checked
    /// at once. Instances that left moto drain for `drain` (a target
    /// group's deregistration delay, an ELB's connection draining).
    async fn update(
        &self,
        key: (String, String),
        listener: Listener,
        check: HealthCheck,
        registered: Vec<String>,
        target_group: Option<TargetGroupFront>,
        drain: Duration,
    ) -> anyhow::Result<()> {
        let is_new = !self.map.lock().expect("balancers lock").contains_key(&key);
        if is_new {
            self.open(&key.0, &key.1, listener.instance_port, check.clone()).await?;
        }
        let mut fresh = Vec::new();
        if let Some(b) = self.map.lock().expect("balancers lock").get_mut(&key) {
            let now = Instant::now();
            if !drain.is_zero() {
                for id in b.registered.iter().filter(|id| !registered.contains(id)) {
                    b.draining.insert(id.clone(), now + drain);
                }
            }
            b.draining.retain(|id, until| *until > now && !registered.contains(id));
            b.check = check;
            b.instance_port = listener.instance_port;
            b.http = listener.http;
            let draining: Vec<String> = b.draining.keys().cloned().collect();
            b.health
                .retain(|id, _| registered.contains(id) || draining.contains(id));
            for id in &registered {
                if !b.health.contains_key(id) {
                    b.health.insert(id.clone(), Health::registering());
                    fresh.push(id.clone());
                }
            }
            b.registered = registered;
            b.target_group = target_group;
        }
        // A new registration is checked at once, not an interval later.
        for id in fresh {
            let me = self.clone();
            let key = key.clone();
            tokio::spawn(async move { me.check_one(&key, &id).await });
        }
        Ok(())
    }

    /// Reads the region's target groups (or one of them) from moto and
    /// brings listeners, registrations and checks up to date.
    pub async fn refresh_target_groups(&self, region: &str, name: Option<&str>) -> anyhow::Result<()> {
        let sdk = self.fleet.configs().get(region).await;
        let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let out = elbv2
            .describe_target_groups()
            .set_names(name.map(|n| vec![n.to_owned()]))
            .send()
            .await?;
        let mut seen = Vec::new();
        for g in out.target_groups() {
            let (Some(tg_name), Some(arn)) = (g.target_group_name(), g.target_group_arn()) else {
                continue;
            };
            if g.load_balancer_arns().is_empty() {
                continue; // behind no load balancer: nothing reaches it
            }
            seen.push(format!("{TARGET_GROUP_KEY}{tg_name}"));
            let port = g.port().unwrap_or(80) as u16;
            let check_port = match g.health_check_port() {
                Some("traffic-port") | None => port,
                Some(p) => p.parse().unwrap_or(port),
            };
            let protocol = g
                .health_check_protocol()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "HTTP".into());
            let target = match protocol.as_str() {
                "HTTP" => format!("HTTP:{check_port}{}", g.health_check_path().unwrap_or("/")),
                "TCP" => format!("TCP:{check_port}"),
                other => format!("{other}:{check_port}"),
            };
            let matcher = g
                .matcher()
                .and_then(|m| m.http_code())
                .and_then(parse_matcher)
                .unwrap_or_else(|| vec![(200, 200)]);
            let check = HealthCheck {
                target,
                interval: Duration::from_secs(g.health_check_interval_seconds().unwrap_or(30).max(1) as u64),
                timeout: Duration::from_secs(g.health_check_timeout_seconds().unwrap_or(5).max(1) as u64),
                healthy: g.healthy_threshold_count().unwrap_or(5).max(1) as u32,
                unhealthy: g.unhealthy_threshold_count().unwrap_or(2).max(1) as u32,
                matcher,
            };
            // moto keeps registrations; their health it makes up.
            let registered: Vec<String> = elbv2
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await?
                .target_health_descriptions()
                .iter()
                .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_owned))
                .collect();
            let delay = elbv2
                .describe_target_group_attributes()
                .target_group_arn(arn)
                .send()
                .await?
                .attributes()
                .iter()
                .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
                .and_then(|a| a.value()?.parse().ok())
                .unwrap_or(300);
            let load_balancer = elbv2
                .describe_load_balancers()
                .load_balancer_arns(&g.load_balancer_arns()[0])
                .send()
                .await?
                .load_balancers()
                .first()
                .and_then(|l| l.load_balancer_name().map(str::to_owned))
                .unwrap_or_default();
            let key = (region.to_owned(), format!("{TARGET_GROUP_KEY}{tg_name}"));
            let front = TargetGroupFront { load_balancer };
            let http = g.protocol().is_some_and(|p| matches!(p.as_str(), "HTTP" | "HTTPS"));
            self.update(
                key,
                Listener {
                    instance_port: port,
                    http,
                },
                check,
                registered,
                Some(front),
                Duration::from_secs(delay),
            )
            .await?;
        }
        if name.is_none() {
            self.forget(region, |n| {
                n.starts_with(TARGET_GROUP_KEY) && !seen.iter().any(|s| s == n)
            });
        }
        Ok(())
    }

    /// Closes the region's balancers `gone` says moto no longer holds.
    fn forget(&self, region: &str, gone: impl Fn(&str) -> bool) {
        {
            let mut map = self.map.lock().expect("balancers lock");
            let gone: Vec<_> = map.keys().filter(|(r, n)| r == region && gone(n)).cloned().collect();
            for key in gone {
                if let Some(b) = map.remove(&key) {
                    b.tasks.iter().for_each(|t| t.abort());
                }
            }
        }
    }

    async fn open(&self, region: &str, name: &str, instance_port: u16, check: HealthCheck) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let key = (region.to_owned(), name.to_owned());
        let me = self.clone();
        let k = key.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let me = me.clone();
                let k = k.clone();
                tokio::spawn(async move { me.forward(&k, client).await });
            }
        });
        let me = self.clone();
        let k = key.clone();
        let checker = tokio::spawn(async move {
            loop {
                let (ids, every) = match me.map.lock().expect("balancers lock").get(&k) {
                    Some(b) => (b.registered.clone(), b.check.interval),
                    None => return,
                };
                // Checks of one interval run side by side.
                let mut checks = tokio::task::JoinSet::new();
                for id in ids {
                    let me = me.clone();
                    let k = k.clone();
                    checks.spawn(async move { me.check_one(&k, &id).await });
                }
                while checks.join_next().await.is_some() {}
                tokio::time::sleep(every).await;
            }
        });
        self.map.lock().expect("balancers lock").insert(
            key,
            Balancer {
                url,
                instance_port,
                http: false,
                check,
                registered: Vec::new(),
                health: HashMap::new(),
                target_group: None,
                draining: HashMap::new(),
                tasks: vec![accept, checker],
            },
        );
        Ok(())
    }

    async fn check_one(&self, key: &(String, String), id: &str) {
        let Some(check) = self
            .map
            .lock()
            .expect("balancers lock")
            .get(key)
            .map(|b| b.check.clone())
        else {
            return;
        };
        let outcome = self.probe(id, &check).await;
        if let Some(h) = self
            .map
            .lock()
            .expect("balancers lock")
            .get_mut(key)
            .and_then(|b| b.health.get_mut(id))
        {
            h.record(outcome, &check);
        }
    }

    /// One health check of `id`, from inside its VPC.
    async fn probe(&self, id: &str, check: &HealthCheck) -> Result<(), String> {
        let Some(b) = self.fleet.booted(id).filter(|b| !b.stopped) else {
            return Err("the instance is not running".into());
        };
        let target = Target::parse(&check.target);
        let port = match &target {
            Target::Http { port, .. } | Target::Tcp { port } => *port,
            Target::Unsupported(t) => {
                return Err(format!(
                    "health check target {t} is not supported locally (HTTP or TCP)"
                ))
            }
        };
        let attempt = async {
            let mut stream = netns::dial(&b.vpc_ns, b.addr, port, check.timeout)
                .await
                .map_err(|e| format!("connection to {}:{port} failed: {e}", b.addr))?;
            let Target::Http { path, .. } = &target else {
                return Ok(());
            };
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {}:{port}\r\nUser-Agent: ELB-HealthChecker/1.0\r\nConnection: close\r\n\r\n",
                b.addr
            );
            stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut head = [0u8; 64];
            let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
            let line = String::from_utf8_lossy(&head[..n]);
            let code = line.split_whitespace().nth(1).unwrap_or("none");
            let counts = code
                .parse::<u16>()
                .is_ok_and(|c| check.matcher.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)));
            if counts {
                Ok(())
            } else {
                Err(format!("{path} answered HTTP {code}"))
            }
        };
        match tokio::time::timeout(check.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", check.timeout.as_secs())),
        }
    }

    /// An InService instance that is not draining, in turn, and the port
    /// to reach it on; `None` when there is none.
    fn pick(&self, key: &(String, String)) -> Option<(String, crate::instances::Booted, u16)> {
        let pick = {
            let map = self.map.lock().expect("balancers lock");
            map.get(key).and_then(|b| {
                // A draining target takes no new connection or request.
                let ready: Vec<&String> = b
                    .registered
                    .iter()
                    .filter(|id| !b.draining.contains_key(*id))
                    .filter(|id| b.health.get(*id).is_some_and(|h| h.state == "InService"))
                    .collect();
                if ready.is_empty() {
                    return None;
                }
                let id = ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()];
                Some((id.clone(), b.instance_port))
            })
        };
        pick.and_then(|(id, port)| {
            let booted = self.fleet.booted(&id).filter(|b| !b.stopped)?;
            Some((id, booted, port))
        })
    }

    /// Whether `id` may still answer at `key`: registered, or draining.
    fn still_serves(&self, key: &(String, String), id: &str) -> bool {
        let map = self.map.lock().expect("balancers lock");
        map.get(key)
            .is_some_and(|b| b.registered.iter().any(|r| r == id) || b.draining.contains_key(id))
    }

    /// Carries one client connection: request by request behind an HTTP
    /// listener, whole behind a TCP one.
    async fn forward(&self, key: &(String, String), client: tokio::net::TcpStream) {
        let http = self
            .map
            .lock()
            .expect("balancers lock")
            .get(key)
            .is_some_and(|b| b.http);
        if http {
            self.forward_http(key, client).await;
        } else {
            self.forward_tcp(key, client).await;
        }
    }

    /// A TCP listener: the connection goes to an InService instance as a
    /// whole, or is answered 503 when there is none.
    async fn forward_tcp(&self, key: &(String, String), mut client: tokio::net::TcpStream) {
        let Some((_, b, port)) = self.pick(key) else {
            let _ = client
                .write_all(b"HTTP/1.1 503 Service Unavailable: Back-end server is at capacity\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            return;
        };
        match netns::dial(&b.vpc_ns, b.addr, port, Duration::from_secs(5)).await {
            Ok(mut backend) => {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
            }
            Err(_) => {
                let _ = client
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
        }
    }

    /// An HTTP listener: the client's connection (kept alive between its
    /// requests) is the load balancer's, and each request goes to an
    /// instance of its own. A target taken out gets no new request; one it
    /// is answering finishes while it drains, and is cut (502) once the
    /// target is gone, as AWS cuts a deregistered target's in-flight
    /// requests when its drain ends (or at once without draining).
    async fn forward_http(&self, key: &(String, String), client: tokio::net::TcpStream) {
        let me = self.clone();
        let key = key.clone();
        let service = hyper::service::service_fn(move |req| {
            let me = me.clone();
            let key = key.clone();
            async move { Ok::<_, std::convert::Infallible>(me.one_request(&key, req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(hyper_util::rt::TokioIo::new(client), service)
            .await;
    }

    async fn one_request(
        &self,
        key: &(String, String),
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Body> {
        let Some((id, b, port)) = self.pick(key) else {
            return plain(503, "Service Unavailable: Back-end server is at capacity");
        };
        let Ok(backend) = netns::dial(&b.vpc_ns, b.addr, port, Duration::from_secs(5)).await else {
            return plain(502, "Bad Gateway");
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(backend)).await
        else {
            return plain(502, "Bad Gateway");
        };
        let connection = tokio::spawn(conn);
        let gone = async {
            while self.still_serves(key, &id) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let answer = tokio::select! {
            answer = sender.send_request(req) => answer,
            () = gone => {
                connection.abort();
                return plain(502, "Bad Gateway: the target was taken out");
            }
        };
        match answer {
            Ok(resp) => resp.map(|body| body.boxed()),
            Err(_) => plain(502, "Bad Gateway"),
        }
    }
    /// The health of `instances` (all registered when empty) at `name`, or
    /// `None` when this load balancer is not known here.
    pub async fn instance_health(
        &self,
        region: &str,
        name: &str,
        instances: &[String],
    ) -> Option<Vec<(String, Health)>> {
        if self.refresh(region, Some(name)).await.is_err() {
            return None;
        }
        let map = self.map.lock().expect("balancers lock");
        let b = map.get(&(region.to_owned(), name.to_owned()))?;
        let ids: Vec<String> = if instances.is_empty() {
            b.registered.clone()
        } else {
            instances.to_vec()
        };
        Some(
            ids.into_iter()
                .map(|id| {
                    let h = b.health.get(&id).cloned().unwrap_or(Health {
                        state: "Unknown",
                        reason_code: "N/A",
                        description: "Instance is not registered with the load balancer.".into(),
                        ok: 0,
                        failed: 0,
                    });
                    (id, h)
                })
                .collect(),
        )
    }

    /// The health of `targets` (all registered and draining when empty) in
    /// the target group `name`, or `None` when it is not known here.
    pub async fn target_health(
        &self,
        region: &str,
        name: &str,
        targets: &[String],
    ) -> Option<Vec<(String, u16, TargetHealth)>> {
        if self.refresh_target_groups(region, Some(name)).await.is_err() {
            return None;
        }
        let map = self.map.lock().expect("balancers lock");
        let b = map.get(&(region.to_owned(), format!("{TARGET_GROUP_KEY}{name}")))?;
        let ids: Vec<String> = if targets.is_empty() {
            let mut all = b.registered.clone();
            all.extend(b.draining.keys().filter(|id| !b.registered.contains(id)).cloned());
            all
        } else {
            targets.to_vec()
        };
        Some(
            ids.into_iter()
                .map(|id| {
                    let registered = b.registered.contains(&id);
                    let draining = b.draining.contains_key(&id);
                    let h = (registered || draining).then(|| b.health.get(&id)).flatten();
                    let running = self.fleet.booted(&id).is_some_and(|i| !i.stopped);
                    let t = TargetHealth::of(h, draining, running);
                    (id, b.instance_port, t)
                })
                .collect(),
        )
    }

    /// Every load balancer with its listener URL and instances.
    pub fn list(&self) -> Vec<Listing> {
        let map = self.map.lock().expect("balancers lock");
        let mut out: Vec<Listing> = map
            .iter()
            .map(|((region, name), b)| Listing {
                region: region.clone(),
                name: name.strip_prefix(TARGET_GROUP_KEY).unwrap_or(name).to_owned(),
                kind: if b.target_group.is_some() {
                    "target_group"
                } else {
                    "elb"
                },
                load_balancer: b.target_group.as_ref().map(|t| t.load_balancer.clone()),
                url: b.url.clone(),
                instances: b
                    .health
                    .iter()
                    .map(|(k, v)| {
                        let mut v = v.clone();
                        if b.target_group.is_some() {
                            // In the target group's own words.
                            let running = self.fleet.booted(k).is_some_and(|i| !i.stopped);
                            let t = TargetHealth::of(Some(&v), b.draining.contains_key(k), running);
                            v.state = t.state;
                            v.description = t.description;
                        } else if b.draining.contains_key(k) {
                            // An ELB's words for connection draining.
                            v.state = "OutOfService";
                            v.description = "Instance deregistration currently in progress.".into();
                        }
                        (k.clone(), v)
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| (&a.region, &a.name).cmp(&(&b.region, &b.name)));
        out
    }

    pub fn shutdown(&self) {
        for (_, b) in self.map.lock().expect("balancers lock").drain() {
            b.tasks.iter().for_each(|t| t.abort());
        }
    }
}

/// The load balancers by name; their state is too large to print.
impl std::fmt::Debug for Balancers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.map.lock().expect("balancers lock").keys().cloned().collect();
        f.debug_struct("Balancers")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_elb_writes_them() {
        assert_eq!(
            Target::parse("HTTP:8080/health"),
            Target::Http {
                port: 8080,
                path: "/health".into()
            }
        );
        assert_eq!(
            Target::parse("http:80"),
            Target::Http {
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(Target::parse("TCP:5432"), Target::Tcp { port: 5432 });
        assert!(matches!(Target::parse("HTTPS:443/x"), Target::Unsupported(_)));
        assert!(matches!(Target::parse("HTTP:x/y"), Target::Unsupported(_)));
    }

    #[test]
    fn matchers_read_as_target_groups_write_them() {
        assert_eq!(parse_matcher("200"), Some(vec![(200, 200)]));
        assert_eq!(parse_matcher("200-299"), Some(vec![(200, 299)]));
        assert_eq!(
            parse_matcher("200,202, 301-302"),
            Some(vec![(200, 200), (202, 202), (301, 302)])
        );
        assert_eq!(parse_matcher("ok"), None);
    }

    #[test]
    fn a_targets_health_reads_in_the_target_groups_words() {
        let mut h = Health::registering();
        assert_eq!(TargetHealth::of(Some(&h), false, true).state, "initial");
        assert_eq!(TargetHealth::of(Some(&h), true, true).state, "draining");
        assert_eq!(TargetHealth::of(None, false, true).reason, Some("Target.NotRegistered"));
        assert_eq!(
            TargetHealth::of(Some(&h), false, false).reason,
            Some("Target.InvalidState")
        );
        let check = HealthCheck {
            target: "HTTP:8080/health".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy: 1,
            unhealthy: 1,
            matcher: vec![(200, 200)],
        };
        h.record(Ok(()), &check);
        assert_eq!(TargetHealth::of(Some(&h), false, true).state, "healthy");
        h.record(Err("HTTP 503".into()), &check);
        let t = TargetHealth::of(Some(&h), false, true);
        assert_eq!((t.state, t.reason), ("unhealthy", Some("Target.FailedHealthChecks")));
        assert!(t.description.contains("HTTP 503"));
    }

    #[test]
    fn thresholds_decide_in_and_out_of_service() {
        let check = HealthCheck {
            target: "HTTP:8080/health".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy: 2,
            unhealthy: 3,
            matcher: vec![(200, 200)],
        };
        let mut h = Health::registering();
        h.record(Ok(()), &check);
        assert_eq!(h.state, "OutOfService", "one good check is not enough");
        h.record(Ok(()), &check);
        assert_eq!(h.state, "InService");
        h.record(Err("HTTP 500".into()), &check);
        h.record(Err("HTTP 500".into()), &check);
        assert_eq!(h.state, "InService", "below the unhealthy threshold");
        h.record(Err("HTTP 500".into()), &check);
        assert_eq!(h.state, "OutOfService");
        assert!(h.description.contains("HTTP 500"));
        h.record(Ok(()), &check);
        assert_eq!(h.state, "OutOfService");
    }
}
