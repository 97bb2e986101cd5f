//! A real function binary behind a Lambda Runtime API: the same bootstrap
//! that ships, talking the runtime protocol, answering a sample event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

type Answers = Arc<Mutex<Vec<(String, Value)>>>;

#[derive(Clone)]
struct Runtime {
    event: Arc<Mutex<Option<String>>>,
    answers: Answers,
}

async fn next(State(rt): State<Runtime>) -> (HeaderMap, String) {
    let event = rt.event.lock().unwrap().take();
    match event {
        Some(body) => {
            let mut h = HeaderMap::new();
            h.insert("Lambda-Runtime-Aws-Request-Id", "req-1".parse().unwrap());
            h.insert("Lambda-Runtime-Deadline-Ms", "9999999999999".parse().unwrap());
            h.insert(
                "Lambda-Runtime-Invoked-Function-Arn",
                "arn:aws:lambda:us-east-1:123456789012:function:porter-pack"
                    .parse()
                    .unwrap(),
            );
            h.insert(
                "Lambda-Runtime-Trace-Id",
                "Root=1-00000000-000000000000000000000000".parse().unwrap(),
            );
            (h, body)
        }
        // One event per test: later polls wait until the process is killed.
        None => std::future::pending().await,
    }
}

async fn answer(State(rt): State<Runtime>, Path((id, kind)): Path<(String, String)>, body: String) -> &'static str {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    rt.answers.lock().unwrap().push((format!("{id}/{kind}"), v));
    "{}"
}

/// A function's bootstrap: cargo-lambda's release build when `make test`
/// made it (the one that ships), else the same crate built by cargo.
fn bootstrap(function: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or(root.join("target"));
    let lambda = target.join(format!("lambda/{function}/bootstrap"));
    if lambda.exists() {
        return lambda;
    }
    let debug = target.join(format!("debug/{function}"));
    assert!(
        debug.exists(),
        "build the functions first: make lambda (or cargo build --workspace)"
    );
    debug
}

/// Runs `function`'s bootstrap behind a Runtime API of our own, hands it
/// `event`, and returns where it answered (`req-1/response` or
/// `req-1/error`) and what.
async fn invoke(function: &str, event: String) -> (String, Value) {
    let rt = Runtime {
        event: Arc::new(Mutex::new(Some(event))),
        answers: Answers::default(),
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut child = tokio::process::Command::new(bootstrap(function))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("porter-{function}"))
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut answer = None;
    for _ in 0..300 {
        if let Some(a) = rt.answers.lock().unwrap().first().cloned() {
            answer = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.ok();
    answer.unwrap_or_else(|| panic!("the {function} function answered within 30 s"))
}

#[tokio::test]
async fn the_pack_binary_answers_a_sample_event_over_the_runtime_api() {
    let event = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/pack-missing-source.json"),
    )
    .unwrap();
    let (path, body) = invoke("pack", event).await;
    assert_eq!(path, "req-1/error", "a missing source is an error: {body}");
    assert_eq!(body["errorType"], "Invalid");
    let msg = body["errorMessage"].as_str().unwrap();
    assert!(msg.contains("/nonexistent/hello-service"), "names the folder: {msg}");
}

/// Every bootstrap starts, serves the Runtime API and answers with its own
/// handler: an event it cannot read is an `Invalid` error that names the
/// function (a bootstrap wired to another function's handler would name
/// that one, or not fail at all).
#[tokio::test]
async fn every_binary_answers_with_its_own_handler() {
    for (function, names) in [
        ("provision", "provision"),
        ("promote", "promote"),
        ("prune", "prune"),
        ("pipeline", "CodePipeline"),
        ("trigger", "EventBridge"),
        ("lease", "lease"),
    ] {
        let (path, body) = invoke(function, r#"{"unexpected": true}"#.to_owned()).await;
        assert_eq!(path, "req-1/error", "{function}: {body}");
        assert_eq!(body["errorType"], "Invalid", "{function}: {body}");
        let msg = body["errorMessage"].as_str().unwrap();
        assert!(msg.contains(names), "{function} names what it takes: {msg}");
    }
}
