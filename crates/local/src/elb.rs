//! Classic load balancers that carry traffic: each ELB moto holds gets a
//! listener on 127.0.0.1, health-checks its registered instances with the
//! ELB's own HealthCheck (target, interval, timeout, thresholds; only a 200
//! counts) from inside the VPC, and forwards each connection to an
//! InService instance in turn. DescribeInstanceHealth is answered from
//! these checks (see `front`), so promote waits on real health.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::instances::Fleet;
use crate::netns;

/// How often moto's load balancers are read.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// An ELB's HealthCheck, as moto holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub target: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
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
            _ => Target::Unsupported(text.to_string()),
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
    check: HealthCheck,
    registered: Vec<String>,
    health: HashMap<String, Health>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One load balancer as `porter local status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub region: String,
    pub name: String,
    pub url: String,
    pub instances: BTreeMap<String, Health>,
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
            .entry(region.to_string())
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
            .set_load_balancer_names(name.map(|n| vec![n.to_string()]))
            .send()
            .await?;
        let mut seen = Vec::new();
        for d in out.load_balancer_descriptions() {
            let Some(lb_name) = d.load_balancer_name() else {
                continue;
            };
            seen.push(lb_name.to_string());
            let instance_port = d
                .listener_descriptions()
                .iter()
                .filter_map(|l| l.listener())
                .map(|l| l.instance_port())
                .next()
                .unwrap_or(80) as u16;
            let check = d
                .health_check()
                .map(|h| HealthCheck {
                    target: h.target().to_string(),
                    interval: Duration::from_secs(h.interval().max(1) as u64),
                    timeout: Duration::from_secs(h.timeout().max(1) as u64),
                    healthy: h.healthy_threshold().max(1) as u32,
                    unhealthy: h.unhealthy_threshold().max(1) as u32,
                })
                .unwrap_or(HealthCheck {
                    target: format!("TCP:{instance_port}"),
                    interval: Duration::from_secs(30),
                    timeout: Duration::from_secs(5),
                    healthy: 10,
                    unhealthy: 2,
                });
            let registered: Vec<String> = d
                .instances()
                .iter()
                .filter_map(|i| i.instance_id())
                .map(str::to_string)
                .collect();
            let key = (region.to_string(), lb_name.to_string());
            let is_new = !self.map.lock().expect("balancers lock").contains_key(&key);
            if is_new {
                self.open(region, lb_name, instance_port, check.clone()).await?;
            }
            let mut fresh = Vec::new();
            if let Some(b) = self.map.lock().expect("balancers lock").get_mut(&key) {
                b.check = check;
                b.instance_port = instance_port;
                b.health.retain(|id, _| registered.contains(id));
                for id in &registered {
                    if !b.health.contains_key(id) {
                        b.health.insert(id.clone(), Health::registering());
                        fresh.push(id.clone());
                    }
                }
                b.registered = registered;
            }
            // A new registration is checked at once, not an interval later.
            for id in fresh {
                let me = self.clone();
                let key = key.clone();
                tokio::spawn(async move { me.check_one(&key, &id).await });
            }
        }
        if name.is_none() {
            let mut map = self.map.lock().expect("balancers lock");
            let gone: Vec<_> = map
                .keys()
                .filter(|(r, n)| r == region && !seen.contains(n))
                .cloned()
                .collect();
            for key in gone {
                if let Some(b) = map.remove(&key) {
                    b.tasks.iter().for_each(|t| t.abort());
                }
            }
        }
        Ok(())
    }

    async fn open(&self, region: &str, name: &str, instance_port: u16, check: HealthCheck) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let key = (region.to_string(), name.to_string());
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
                check,
                registered: Vec::new(),
                health: HashMap::new(),
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
            if code == "200" {
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

    /// Carries one client connection to an InService instance, or answers
    /// 503 when there is none (as an ELB does).
    async fn forward(&self, key: &(String, String), mut client: tokio::net::TcpStream) {
        let pick = {
            let map = self.map.lock().expect("balancers lock");
            map.get(key).and_then(|b| {
                let ready: Vec<&String> = b
                    .registered
                    .iter()
                    .filter(|id| b.health.get(*id).is_some_and(|h| h.state == "InService"))
                    .collect();
                if ready.is_empty() {
                    return None;
                }
                let id = ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()];
                Some((id.clone(), b.instance_port))
            })
        };
        let target = pick.and_then(|(id, port)| self.fleet.booted(&id).filter(|b| !b.stopped).map(|b| (b, port)));
        let Some((b, port)) = target else {
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
        let b = map.get(&(region.to_string(), name.to_string()))?;
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

    /// Every load balancer with its listener URL and instances.
    pub fn list(&self) -> Vec<Listing> {
        let map = self.map.lock().expect("balancers lock");
        let mut out: Vec<Listing> = map
            .iter()
            .map(|((region, name), b)| Listing {
                region: region.clone(),
                name: name.clone(),
                url: b.url.clone(),
                instances: b.health.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
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
    fn thresholds_decide_in_and_out_of_service() {
        let check = HealthCheck {
            target: "HTTP:8080/health".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy: 2,
            unhealthy: 3,
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
