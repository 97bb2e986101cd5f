//! Deploy notices: the notify function, called by the shipped state
//! machine, tells the SNS topic and the service's Slack webhooks (their
//! URLs in Secrets Manager) how a deploy goes. A receiver on loopback
//! stands in for Slack and for an SNS subscriber.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use porter_e2e::deploy_staging as deploy;
use porter_local::deploy;
use porter_local::names::REGION;
use porter_local::stack::LocalStack;
use serde_json::Value;

use porter_e2e::example;

type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A receiver on loopback: every POST's path and body.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/{*path}",
            post(
                |State(r): State<Received>, Path(path): Path<String>, body: String| async move {
                    r.lock().unwrap().push((path, body));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// What arrived at `path`: Slack's `text`, or SNS's message.
fn at(received: &Received, path: &str) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, body)| {
            let v: Value = serde_json::from_str(body).unwrap();
            match v.get("Message").and_then(Value::as_str) {
                Some(m) => serde_json::from_str(m).unwrap(),
                None => v,
            }
        })
        .collect()
}

/// A deploy tells the topic and its webhooks each step, and a failure with
/// its cause; an unreachable webhook stops nothing.
#[tokio::test]
async fn deploy_notifies_topic_and_webhooks() {
    let local = LocalStack::start(Default::default()).await.unwrap();
    let (url, received) = receiver().await;
    let endpoint = local.moto.endpoint();
    let sdk = porter_local::moto::sdk_config(&endpoint, REGION).await;
    let topic = deploy::ensure_notification_topic(&sdk).await.unwrap();
    aws_sdk_sns::Client::new(&sdk)
        .subscribe()
        .topic_arn(&topic)
        .protocol("http")
        .endpoint(format!("{url}/sns"))
        .send()
        .await
        .unwrap();
    for (name, target) in [
        ("team", format!("{url}/team")),
        ("oncall", format!("{url}/oncall")),
        ("progress", format!("{url}/progress")),
        // Nothing listens on the discard port: the notice is lost, the
        // deploy goes on.
        ("down", "http://127.0.0.1:9/down".to_owned()),
    ] {
        porter_e2e::put_secret(&endpoint, REGION, &format!("porter/note/notifications/{name}"), &target).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "note");
    let cfg = std::fs::read_to_string(svc.join(".porter/config")).unwrap();
    std::fs::write(
        svc.join(".porter/config"),
        format!(
            "{cfg}\nslack:\n  pack_success_webhook_url: secretsmanager:porter/note/notifications/team\n  deploy_webhook_url: secretsmanager:porter/note/notifications/team\n  provision_failure_webhook_url: secretsmanager:porter/note/notifications/oncall\n  promote_success_webhook_url: secretsmanager:porter/note/notifications/down\n"
        ),
    )
    .unwrap();

    let (first, log) = deploy(&local, &svc).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);
    let version = first.release.as_ref().unwrap().version.clone();
    let sns = at(&received, "sns");
    let events: Vec<&str> = sns.iter().map(|m| m["event"].as_str().unwrap()).collect();
    // A progress notice goes out only for the phase whose success webhook
    // the config names: promote's here, provision's not.
    assert_eq!(events, ["started", "promoted", "succeeded"], "{sns:?}");
    for m in &sns {
        assert_eq!(m["service"], "note");
        assert_eq!(m["environment"], "staging");
        assert_eq!(m["version"], version.as_str());
        assert_eq!(m["regions"], serde_json::json!(["us-west-2", "us-east-1"]));
    }
    // pack_success and deploy name one secret: one post per notice.
    let team: Vec<String> = at(&received, "team")
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(team.len(), 2, "{team:?}");
    assert!(
        team[0].starts_with(&format!(
            "porter: note staging release {version} started (us-west-2, us-east-1)"
        )),
        "{team:?}"
    );
    assert!(team[1].contains("succeeded"), "{team:?}");
    assert!(at(&received, "oncall").is_empty());

    // Asked for provision's progress notice too, the next release sends it,
    // to its webhook and to the topic.
    let cfg = std::fs::read_to_string(svc.join(".porter/config")).unwrap();
    std::fs::write(
        svc.join(".porter/config"),
        format!("{cfg}  provision_success_webhook_url: secretsmanager:porter/note/notifications/progress\n"),
    )
    .unwrap();
    std::fs::write(svc.join("index.html"), "release 2").unwrap();
    let (again, log) = deploy(&local, &svc).await;
    assert!(again.succeeded, "{:?}\n{log}", again.error);
    let sns = at(&received, "sns");
    let events: Vec<&str> = sns[3..].iter().map(|m| m["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["started", "provisioned", "promoted", "succeeded"], "{sns:?}");
    let progress = at(&received, "progress");
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert!(
        progress[0]["text"].as_str().unwrap().contains("provisioned"),
        "{progress:?}"
    );

    // A release whose stacks CloudFormation refuses: the failure, its
    // phase and its cause reach the topic, the deploy webhook and
    // provision's failure webhook.
    porter_e2e::break_provisioning(&svc, "  instance_type: t3.micro\n");
    let (second, log) = deploy(&local, &svc).await;
    assert!(!second.succeeded, "{log}");
    let failed = at(&received, "sns").last().cloned().unwrap();
    assert_eq!(
        (failed["event"].as_str(), failed["phase"].as_str()),
        (Some("failed"), Some("provision")),
        "{failed}"
    );
    assert_eq!(failed["error"], "StackFailed");
    // Both regions' stacks are refused; whichever fails first is the cause.
    let cause = failed["cause"].as_str().unwrap();
    assert!(
        cause.contains("provision failed: ") && ["us-west-2", "us-east-1"].iter().any(|r| cause.contains(r)),
        "{failed}"
    );
    let oncall = at(&received, "oncall");
    assert_eq!(oncall.len(), 1, "{oncall:?}");
    let text = oncall[0]["text"].as_str().unwrap();
    assert!(
        text.contains("failed in provision")
            && text.contains("StackFailed: provision failed: ")
            && text.contains(" in us-"),
        "{text}"
    );
    assert!(at(&received, "team").last().unwrap()["text"]
        .as_str()
        .unwrap()
        .contains("failed in provision"));
    local.stop().await;
}
