//! Bounded load through the local stack's load balancers: a steady rate of
//! GETs on loopback, counted by what answered. By default each request is
//! on a fresh connection; a [`Shape`] may keep connections alive between
//! requests (a browser's or a service client's) and make a share of the
//! requests slow (the example service's `/slow?seconds=N`), which is what
//! a cutover must not cut.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// What the host says of its load balancers (`elb::Listing`, read back).
#[derive(Debug, Clone, Deserialize)]
pub struct Traffic {
    /// "running", or why instances do not run here.
    pub instances: String,
    pub load_balancers: Vec<Balancer>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Balancer {
    pub region: String,
    pub name: String,
    /// "elb", or "target_group" behind the ALB or NLB `load_balancer`.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub load_balancer: Option<String>,
    pub url: String,
    pub instances: BTreeMap<String, InstanceState>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InstanceState {
    pub state: String,
    pub description: String,
}

impl Balancer {
    /// `load balancer NAME`, or `load balancer NAME (target group NAME)`.
    pub fn label(&self) -> String {
        match &self.load_balancer {
            Some(lb) => format!("load balancer {lb} (target group {})", self.name),
            None => format!("load balancer {}", self.name),
        }
    }

    /// How many instances take traffic (InService, healthy).
    pub fn in_service(&self) -> usize {
        self.instances
            .values()
            .filter(|i| i.state == "InService" || i.state == "healthy")
            .count()
    }
}

pub async fn traffic(host: &str) -> anyhow::Result<Traffic> {
    Ok(reqwest::get(format!("{host}/porter-local/load-balancers"))
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The requests sent to one load balancer and what came back.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub requests: u64,
    pub failed: u64,
    /// Answers by the first `release N` each page named.
    pub pages: BTreeMap<String, u64>,
    /// The first few failures, as they happened.
    pub failures: Vec<String>,
}

/// The largest rate and duration the load may have: it stays bounded.
pub const MAX_RATE: u32 = 100;
pub const MAX_SECONDS: u64 = 900;

/// The longest a slow request may take: it stays bounded.
pub const MAX_SLOW_SECONDS: u32 = 10;

/// What the load is made of.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Requests a second (at most [`MAX_RATE`]).
    pub rate: u32,
    /// Connections kept alive between requests, not one per request.
    pub keep_alive: bool,
    /// Of every 100 requests, how many are slow.
    pub slow_percent: u32,
    /// How long a slow request takes (at most [`MAX_SLOW_SECONDS`]).
    pub slow_seconds: u32,
}

impl Shape {
    /// `rate` short requests a second, each on a fresh connection.
    pub fn plain(rate: u32) -> Shape {
        Shape {
            rate,
            keep_alive: false,
            slow_percent: 0,
            slow_seconds: 0,
        }
    }

    /// `rate` requests a second on kept-alive connections, one in ten
    /// taking `slow_seconds`.
    pub fn mixed(rate: u32, slow_seconds: u32) -> Shape {
        Shape {
            rate,
            keep_alive: true,
            slow_percent: 10,
            slow_seconds,
        }
    }
}

/// Sends `shape`'s requests to `url` until `stop` resolves or `max`
/// passes.
pub async fn drive(url: &str, shape: Shape, max: Duration, stop: tokio::sync::watch::Receiver<bool>) -> Tally {
    let rate = shape.rate.clamp(1, MAX_RATE);
    let slow_seconds = shape.slow_seconds.min(MAX_SLOW_SECONDS);
    let slow_percent = shape.slow_percent.min(100);
    let max = max.min(Duration::from_secs(MAX_SECONDS));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(if shape.keep_alive { usize::MAX } else { 0 })
        // Generous: a request counts as failed when the load balancer or
        // the instance fails it, not when a loaded machine is slow to
        // answer (an ELB's own idle timeout is 60 s).
        .timeout(Duration::from_secs(30 + u64::from(slow_seconds)))
        .build()
        .expect("a plain HTTP client");
    let base = url.trim_end_matches('/').to_owned();
    let mut sent = 0u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<String, String>>();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let deadline = tokio::time::Instant::now() + max;
    let mut tally = Tally::default();
    let mut in_flight = 0u64;
    loop {
        if *stop.borrow() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {
                in_flight += 1;
                sent += 1;
                let client = client.clone();
                // Every n-th request slow, spread evenly.
                let slow = slow_percent > 0 && slow_seconds > 0 && (sent * u64::from(slow_percent)) % 100 < u64::from(slow_percent);
                let url = if slow { format!("{base}/slow?seconds={slow_seconds}") } else { format!("{base}/") };
                let keep_alive = shape.keep_alive;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut req = client.get(&url);
                    if !keep_alive {
                        req = req.header("connection", "close");
                    }
                    let outcome = match req.send().await {
                        Ok(r) if r.status().is_success() => Ok(r.text().await.unwrap_or_default()),
                        Ok(r) => Err(format!("HTTP {}", r.status())),
                        // The whole chain: "error sending request" alone
                        // does not say whether it timed out or was cut.
                        Err(e) => Err(porter_core::aws::error_chain(&e)),
                    };
                    let _ = tx.send(outcome);
                });
            }
            Some(outcome) = rx.recv() => {
                in_flight -= 1;
                count(&mut tally, outcome);
            }
        }
    }
    // The requests already sent are counted too.
    while in_flight > 0 {
        match rx.recv().await {
            Some(outcome) => {
                in_flight -= 1;
                count(&mut tally, outcome);
            }
            None => break,
        }
    }
    tally
}

fn count(tally: &mut Tally, outcome: Result<String, String>) {
    tally.requests += 1;
    match outcome {
        Ok(body) => *tally.pages.entry(release_of(&body)).or_default() += 1,
        Err(why) => {
            tally.failed += 1;
            if tally.failures.len() < 5 {
                tally.failures.push(why);
            }
        }
    }
}

/// The first `release N` a page names, or "other".
pub fn release_of(page: &str) -> String {
    let Some(at) = page.find("release ") else {
        return "other".into();
    };
    let digits: String = page[at + 8..].chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        "other".into()
    } else {
        format!("release {digits}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_counted_by_the_release_they_name() {
        assert_eq!(release_of("<h1>hello, release 12</h1>"), "release 12");
        assert_eq!(release_of("release notes"), "other");
        assert_eq!(release_of(""), "other");
        let mut t = Tally::default();
        count(&mut t, Ok("release 1".into()));
        count(&mut t, Err("HTTP 503".into()));
        assert_eq!((t.requests, t.failed), (2, 1));
        assert_eq!(t.pages["release 1"], 1);
        assert_eq!(t.failures, vec!["HTTP 503".to_owned()]);
    }
}
