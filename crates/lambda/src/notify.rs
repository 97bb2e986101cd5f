//! `notify`: tells people how a deploy goes, and never gets in its way.
//!
//! The deploy state machine calls it when a deploy starts (pack is done and
//! the lease taken), after provision, after promote, when the deploy is
//! done and when it fails (rolled back or not). Each notice goes to the
//! stack's SNS topic (`NOTIFICATION_TOPIC_ARN`) and to the Slack webhooks
//! the service's `slack:` names for it: porter's per-phase keys, and
//! `deploy_webhook_url` for every start, success and failure.
//!
//! A webhook URL is a credential, so the config names a Secrets Manager
//! secret that holds it (under `porter/SERVICE/notifications/`), read here
//! through SSM's `/aws/reference/secretsmanager/` path (no second SDK
//! client). A URL is posted to only when its host is one the platform
//! allows (`PORTER_WEBHOOK_HOSTS`, default `hooks.slack.com`), and never
//! appears in a log or an answer. A notice that cannot be delivered is
//! logged and counted; the function answers success all the same, and the
//! state machine's Catch goes on past any error: a notification never
//! fails or holds up a deploy.

use std::collections::BTreeSet;
use std::time::Duration;

use porter_core::config::Config;
use porter_core::release::{Release, ReleaseRef};
use porter_core::target::{Deployment, Target};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Context, FunctionError};

/// How long one webhook may take: a slow endpoint costs the deploy no
/// more than this per notice.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// The hosts webhooks may go to unless the platform says otherwise.
pub const DEFAULT_WEBHOOK_HOSTS: &str = "hooks.slack.com";

/// Where notices go, from the function's environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `NOTIFICATION_TOPIC_ARN`: the SNS topic every notice goes to.
    pub topic_arn: Option<String>,
    /// `PORTER_WEBHOOK_HOSTS`: `host` or `host:port`, comma-separated.
    pub webhook_hosts: Vec<String>,
    /// `PORTER_SERVICE`: the one service this stack deploys, named in a
    /// notice when pack failed before there was a release.
    pub service: Option<String>,
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Settings {
            topic_arn: var("NOTIFICATION_TOPIC_ARN"),
            webhook_hosts: hosts(&var("PORTER_WEBHOOK_HOSTS").unwrap_or_else(|| DEFAULT_WEBHOOK_HOSTS.into())),
            service: var("PORTER_SERVICE"),
        }
    }
}

/// `a.example.com, b.example.com:8443` as a list.
pub fn hosts(list: &str) -> Vec<String> {
    list.split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

/// Where in a deploy the state machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Started,
    Provisioned,
    Promoted,
    Deployed,
    Failed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub event: Event,
    /// The execution ARN (`$$.Execution.Id`).
    pub execution: String,
    /// The execution's whole state (`$`): what it holds tells which phase
    /// a failure came from.
    pub state: Value,
}

/// One notice, as SNS gets it (JSON) and Slack reads it (`text`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    /// started, provisioned, promoted, succeeded, failed, rolled_back.
    pub event: &'static str,
    pub service: String,
    pub environment: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub regions: Vec<String>,
    pub execution: String,
    /// The phase that failed: pack, lease, provision, promote or prune.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl Notice {
    /// What a person reads first: one line.
    pub fn subject(&self) -> String {
        let release = self
            .version
            .as_deref()
            .map(|v| format!(" release {v}"))
            .unwrap_or_default();
        let what = match (self.event, self.phase) {
            ("failed", Some(phase)) => format!("failed in {phase}"),
            ("rolled_back", _) => "failed and was rolled back".to_owned(),
            (event, _) => event.replace('_', " "),
        };
        format!("porter: {} {}{release} {what}", self.service, self.environment)
    }

    pub fn text(&self) -> String {
        let mut out = self.subject();
        if !self.regions.is_empty() {
            out.push_str(&format!(" ({})", self.regions.join(", ")));
        }
        if let (Some(error), Some(cause)) = (&self.error, &self.cause) {
            out.push_str(&format!("\n{error}: {cause}"));
        }
        out.push_str(&format!("\nexecution {}", self.execution));
        out
    }

    /// [`Notice::text`] as Slack's `text` must carry it: `&`, `<` and `>`
    /// escaped as Slack documents, so nothing a repository or an error
    /// says becomes a mention (`<!channel>`) or a link.
    pub fn slack_text(&self) -> String {
        slack_escape(&self.text())
    }

    /// The `slack:` keys whose webhooks get this notice.
    pub fn slack_keys(&self) -> Vec<&'static str> {
        // The deploy's own webhook hears its start and its end; porter's
        // per-phase ones hear their phase.
        let phase = match (self.event, self.phase) {
            ("started", _) => Some("pack_success_webhook_url"),
            ("provisioned", _) => return vec!["provision_success_webhook_url"],
            ("promoted", _) => return vec!["promote_success_webhook_url"],
            (_, Some("pack")) => Some("pack_failure_webhook_url"),
            (_, Some("provision")) => Some("provision_failure_webhook_url"),
            (_, Some("promote")) => Some("promote_failure_webhook_url"),
            _ => None,
        };
        std::iter::once("deploy_webhook_url").chain(phase).collect()
    }
}

/// Reads the notice out of the execution's state. Untrusted only in shape
/// (the state machine builds it): anything missing is left out.
pub fn notice(request: &Request, settings: &Settings) -> Notice {
    notice_of(request, packed_release(&request.state).as_ref(), settings)
}

/// The release pack made, when the state holds one (pack did not fail).
fn packed_release(state: &Value) -> Option<Release> {
    serde_json::from_value(state["packed"]["release"].clone()).ok()
}

/// [`notice`], with the state's release already read.
fn notice_of(request: &Request, release: Option<&Release>, settings: &Settings) -> Notice {
    let state = &request.state;
    let text = |v: &Value| v.as_str().map(|s| porter_core::aws::clip(s, 2000));
    let failure = &state["failure"];
    let phase = match request.event {
        Event::Failed => porter_core::execution::phase_reached(state).or(Some("deploy")),
        _ => None,
    };
    let event = match request.event {
        Event::Started => "started",
        Event::Provisioned => "provisioned",
        Event::Promoted => "promoted",
        Event::Deployed => "succeeded",
        // Promote's failures put every region back (RolledBack); a
        // failed putting back says RollbackFailed.
        Event::Failed if phase == Some("promote") && failure["Error"] != "RollbackFailed" => "rolled_back",
        Event::Failed => "failed",
    };
    Notice {
        event,
        service: release
            .map(|r| r.service.clone())
            .or_else(|| settings.service.clone())
            .unwrap_or_default(),
        environment: release
            .map(|r| r.environment.clone())
            .or_else(|| text(&state["environment"]))
            .unwrap_or_default(),
        version: release.map(|r| r.version.clone()),
        regions: release.map(|r| r.regions.clone()).unwrap_or_default(),
        execution: request.execution.clone(),
        phase,
        error: text(&failure["Error"]),
        cause: text(&failure["Cause"]),
    }
}

/// What one call delivered: answered to the state machine, which keeps
/// none of it (`ResultPath: null`); logs and tests read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    pub topic: bool,
    /// Webhooks posted to, by the secret that names them.
    pub webhooks: Vec<String>,
    /// What could not be delivered, and why (never a URL).
    pub failed: Vec<String>,
}

pub async fn handle(ctx: &Context, event: Value) -> Result<Value, FunctionError> {
    let request: Request = serde_json::from_value(event).map_err(|e| FunctionError::BadEvent {
        phase: "notify",
        detail: e.to_string(),
    })?;
    let release = packed_release(&request.state);
    let notice = notice_of(&request, release.as_ref(), &ctx.notify);
    let mut delivered = Delivered::default();
    if let Some(topic) = &ctx.notify.topic_arn {
        let sns = aws_sdk_sns::Client::new(ctx.aws.sdk_config());
        let message = serde_json::to_string(&notice).expect("notices serialize");
        match sns
            .publish()
            .topic_arn(topic)
            .subject(subject_for_sns(&notice.subject()))
            .message(message)
            .send()
            .await
        {
            Ok(_) => delivered.topic = true,
            Err(e) => delivered.failed.push(porter_core::aws::describe("SNS topic", &e)),
        }
    }
    // Webhooks come from the release's own config: pack checked it, and the
    // release record pins it by its sha256. Before there is a release
    // (pack failed) there is no config to read them from.
    if let Some(release) = release {
        let target = Target {
            release: ReleaseRef::Inline(Box::new(release)),
            region: None,
            regions: Vec::new(),
        };
        match Deployment::load(&ctx.aws, &target).await {
            Ok(deployment) => post_webhooks(ctx, &deployment.config, &notice, &mut delivered).await,
            Err(e) => delivered.failed.push(format!("slack: the release's config: {e}")),
        }
    }
    for why in &delivered.failed {
        tracing::warn!(event = notice.event, service = %notice.service, %why, "a notice was not delivered");
    }
    tracing::info!(
        event = notice.event,
        topic = delivered.topic,
        webhooks = delivered.webhooks.len(),
        "notified"
    );
    Ok(serde_json::to_value(&delivered).expect("serializes"))
}

/// SNS takes a subject of at most 100 printable ASCII characters.
fn subject_for_sns(subject: &str) -> String {
    subject
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .take(100)
        .collect()
}

/// Text as Slack's message formatting reads it literally.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

async fn post_webhooks(ctx: &Context, config: &Config, notice: &Notice, delivered: &mut Delivered) {
    let secrets: BTreeSet<&String> = notice
        .slack_keys()
        .into_iter()
        .filter_map(|k| config.slack.get(k))
        .collect();
    if secrets.is_empty() {
        return;
    }
    let body = json!({"text": notice.slack_text()}).to_string();
    let ssm = ctx.aws.ssm();
    for secret in secrets {
        let read = ssm
            .get_parameter()
            .name(format!("/aws/reference/secretsmanager/{secret}"))
            .with_decryption(true)
            .send()
            .await;
        let url = match read {
            Ok(out) => out.parameter.and_then(|p| p.value).unwrap_or_default(),
            Err(e) => {
                delivered
                    .failed
                    .push(porter_core::aws::describe(&format!("slack: secret {secret}"), &e));
                continue;
            }
        };
        match crate::webhook::post(url.trim(), &ctx.notify.webhook_hosts, &body, WEBHOOK_TIMEOUT).await {
            Ok(()) => delivered.webhooks.push(secret.clone()),
            Err(why) => delivered.failed.push(format!("slack: the webhook in {secret}: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(event: Event, state: Value) -> Request {
        Request {
            event,
            execution: "arn:aws:states:us-east-1:1:execution:porter-deploy:e1".into(),
            state,
        }
    }

    fn packed() -> Value {
        json!({"release": {
            "service": "hello", "environment": "staging", "version": "0a1b2c3d4e5f", "revision": "0a1b2c3",
            "sha256": "s", "config_sha256": "c",
            "payload": {"bucket": "b", "key": "p"}, "manifest": {"bucket": "b", "key": "m"},
            "config": {"bucket": "b", "key": "c"}, "record": {"bucket": "b", "key": "r"},
            "regions": ["us-west-2", "us-east-1"]
        }})
    }

    #[test]
    fn a_failure_names_the_phase_the_state_had_reached_and_its_webhooks() {
        let settings = Settings {
            service: Some("hello".into()),
            ..Settings::default()
        };
        let failure =
            json!({"Error": "StackFailed", "Cause": "provision failed: stack in us-west-2 failed: ROLLBACK_COMPLETE"});
        let cases = [
            (
                json!({"environment": "staging", "failure": failure}),
                "failed",
                Some("pack"),
            ),
            (json!({"packed": packed(), "failure": failure}), "failed", Some("lease")),
            (
                json!({"packed": packed(), "lease": {}, "failure": failure}),
                "failed",
                Some("provision"),
            ),
            (
                json!({"packed": packed(), "lease": {}, "provision": {"result": {"status": "done"}}, "failure": failure}),
                "rolled_back",
                Some("promote"),
            ),
            (
                json!({"packed": packed(), "lease": {}, "provision": {"result": {"status": "done"}}, "failure": {"Error": "RollbackFailed", "Cause": "x"}}),
                "failed",
                Some("promote"),
            ),
            (
                json!({"packed": packed(), "lease": {}, "provision": {"result": {"status": "done"}}, "waves": [], "failure": failure}),
                "failed",
                Some("prune"),
            ),
        ];
        for (state, event, phase) in cases {
            let n = notice(&request(Event::Failed, state.clone()), &settings);
            assert_eq!((n.event, n.phase), (event, phase), "{state}");
            assert_eq!(n.service, "hello");
            assert_eq!(n.environment, "staging");
        }
        let n = notice(
            &request(
                Event::Failed,
                json!({"packed": packed(), "lease": {}, "failure": failure}),
            ),
            &settings,
        );
        assert_eq!(n.slack_keys(), ["deploy_webhook_url", "provision_failure_webhook_url"]);
        assert_eq!(n.regions, ["us-west-2", "us-east-1"]);
        let text = n.text();
        assert!(
            text.starts_with("porter: hello staging release 0a1b2c3d4e5f failed in provision (us-west-2, us-east-1)\nStackFailed: provision failed: stack in us-west-2"),
            "{text}"
        );
    }

    #[test]
    fn each_step_of_a_deploy_goes_to_porters_webhook_for_it() {
        let settings = Settings::default();
        let keys = |event| notice(&request(event, json!({"packed": packed()})), &settings).slack_keys();
        assert_eq!(keys(Event::Started), ["deploy_webhook_url", "pack_success_webhook_url"]);
        assert_eq!(keys(Event::Provisioned), ["provision_success_webhook_url"]);
        assert_eq!(keys(Event::Promoted), ["promote_success_webhook_url"]);
        assert_eq!(keys(Event::Deployed), ["deploy_webhook_url"]);
        let subject = subject_for_sns(&format!("{}é\n", "x".repeat(120)));
        assert_eq!(subject.len(), 100);
        assert!(subject.is_ascii());
    }

    #[test]
    fn slack_text_cannot_mention_or_link() {
        assert_eq!(
            slack_escape("<!channel> <https://x|click> & more"),
            "&lt;!channel&gt; &lt;https://x|click&gt; &amp; more"
        );
    }
}
