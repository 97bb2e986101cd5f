//! Cold start, measured from outside: each command is started behind a
//! Runtime API of this harness's own and handed one malformed event. Per
//! command it prints the medians over `--rounds` fresh processes of
//!
//! - `next`: process start to its first `GET .../invocation/next` (init),
//! - `answer`: process start to its answer to that first event,
//! - `rss`: the process's peak resident set (VmHWM) when it has answered.
//!
//! Rounds go round-robin over the commands, so a busy moment of the machine
//! is shared among them rather than landing on one.
//!
//! Usage: coldstart [--rounds N] LABEL 'COMMAND [ARGS]' [LABEL 'COMMAND' ...]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;

const EVENT: &str = r#"{"unexpected": true}"#;

#[derive(Clone)]
struct Api {
    started: Instant,
    next: Arc<Mutex<Option<Duration>>>,
    answer: Arc<Mutex<Option<Duration>>>,
    answered: Arc<Notify>,
}

async fn next(State(api): State<Api>) -> (HeaderMap, String) {
    let first = {
        let mut next = api.next.lock().expect("lock");
        let first = next.is_none();
        if first {
            *next = Some(api.started.elapsed());
        }
        first
    };
    if !first {
        // One event per process: later polls wait until it is killed.
        std::future::pending::<()>().await;
    }
    let mut h = HeaderMap::new();
    h.insert("Lambda-Runtime-Aws-Request-Id", "req-1".parse().expect("header"));
    h.insert("Lambda-Runtime-Deadline-Ms", "9999999999999".parse().expect("header"));
    h.insert(
        "Lambda-Runtime-Invoked-Function-Arn",
        "arn:aws:lambda:us-east-1:123456789012:function:bench"
            .parse()
            .expect("header"),
    );
    (h, EVENT.to_owned())
}

async fn answer(State(api): State<Api>) -> &'static str {
    api.answer.lock().expect("lock").get_or_insert(api.started.elapsed());
    api.answered.notify_one();
    "{}"
}

struct Sample {
    next: Duration,
    answer: Duration,
    rss_kb: u64,
}

/// Peak resident set of `pid` in kB, from /proc.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

async fn once(command: &str) -> Result<Sample, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut parts = command.split_whitespace();
    let program = parts.next().ok_or("empty command")?;
    let api = Api {
        started: Instant::now(),
        next: Arc::default(),
        answer: Arc::default(),
        answered: Arc::default(),
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
        .with_state(api.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut child = tokio::process::Command::new(program)
        .args(parts)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let pid = child.id().unwrap_or(0);
    let waited = tokio::time::timeout(Duration::from_secs(30), api.answered.notified()).await;
    let rss_kb = peak_rss_kb(pid);
    child.kill().await.ok();
    server.abort();
    waited.map_err(|_| format!("{command}: no answer within 30 s"))?;
    let next = api
        .next
        .lock()
        .expect("lock")
        .ok_or("answered without asking for an event")?;
    let answer = api.answer.lock().expect("lock").ok_or("no answer")?;
    Ok(Sample { next, answer, rss_kb })
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 7;
    if args.first().map(String::as_str) == Some("--rounds") {
        rounds = args
            .get(1)
            .and_then(|n| n.parse().ok())
            .ok_or("--rounds takes a number")?;
        args.drain(..2);
    }
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err("usage: coldstart [--rounds N] LABEL 'COMMAND [ARGS]' [LABEL 'COMMAND' ...]".into());
    }
    let commands: Vec<(&str, &str)> = args.chunks(2).map(|c| (c[0].as_str(), c[1].as_str())).collect();
    let mut samples: Vec<Vec<Sample>> = commands.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (_, command)) in commands.iter().enumerate() {
            samples[i].push(once(command).await?);
        }
    }
    println!(
        "{:<22} {:>10} {:>10} {:>9}   (medians of {rounds} cold starts)",
        "cold start", "next ms", "answer ms", "rss MB"
    );
    for ((label, _), s) in commands.iter().zip(samples) {
        let next = median(s.iter().map(|x| x.next).collect());
        let answer = median(s.iter().map(|x| x.answer).collect());
        let rss = median(s.iter().map(|x| x.rss_kb).collect());
        println!(
            "{label:<22} {:>10.1} {:>10.1} {:>9.1}",
            next.as_secs_f64() * 1000.0,
            answer.as_secs_f64() * 1000.0,
            rss as f64 / 1024.0
        );
    }
    Ok(())
}
