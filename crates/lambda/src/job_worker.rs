//! The deploy as a CodePipeline custom action: the job worker.
//!
//! The infra registers an action type (category Deploy, owner Custom,
//! provider [`PROVIDER`], version [`VERSION`]) whose configuration
//! properties ([`PROPERTIES`]) the console shows as fields. CodePipeline
//! queues a job for each run of such an action; nothing invokes a function
//! with it. So the `pipeline` function is woken (by the action's STARTED
//! event, and by a short schedule in case an event is lost), polls for jobs
//! of exactly this type, acknowledges each with its nonce (a job another
//! worker acknowledged first is skipped), and works it as it works a Lambda
//! invoke job: the same deploy state machine, the same continuation
//! tokens, the same output variables. A continued job comes back as a new
//! job with the token, found by a later wake-up.
//!
//! The event is only a wake-up: what a job asks for is read from PollForJobs,
//! never from the event.

use std::collections::HashMap;

use aws_sdk_codepipeline::types::{ActionCategory, ActionOwner, ActionTypeId};
use porter_core::aws;
use serde_json::{json, Map, Value};

use crate::codepipeline;
use crate::{Context, FunctionError};

/// The custom action's provider and version, as the infra registers them.
pub const PROVIDER: &str = "Porter";
pub const VERSION: &str = "1";
/// Jobs taken per wake-up: each is one short step of its deploy.
const BATCH: i32 = 10;

/// How a configuration property's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A whole number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
}

/// One configuration property of the action type.
#[derive(Debug, Clone, Copy)]
pub struct Property {
    /// As the console and the pipeline definition name it.
    pub name: &'static str,
    /// The `pipeline` action's UserParameters key it stands for.
    pub key: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub description: &'static str,
}

/// What the action takes; the infra registers exactly these.
pub const PROPERTIES: &[Property] = &[
    Property {
        name: "Environment",
        key: "environment",
        kind: Kind::Text,
        required: true,
        description: "The environment of the service's .porter/config to deploy",
    },
    Property {
        name: "Keep",
        key: "keep",
        kind: Kind::Number,
        required: false,
        description: "Unpromoted stacks prune keeps (default 0)",
    },
    Property {
        name: "WaitForLease",
        key: "wait_for_lease",
        kind: Kind::Boolean,
        required: false,
        description: "Wait for another deploy of the environment instead of failing (true or false)",
    },
    Property {
        name: "Rollout",
        key: "rollout",
        kind: Kind::Object,
        required: false,
        description: "This deploy's rollout as JSON: waves, bake_seconds, alarms, canary_instances",
    },
    Property {
        name: "Image",
        key: "image",
        kind: Kind::Text,
        required: false,
        description: "The container image the build made, if any",
    },
    Property {
        name: "Variables",
        key: "variables",
        kind: Kind::Object,
        required: false,
        description: "What ${VAR} in the config expands to, as a JSON object of strings",
    },
    Property {
        name: "Repository",
        key: "repository",
        kind: Kind::Text,
        required: false,
        description: "The source repository, recorded in the release",
    },
    Property {
        name: "Branch",
        key: "branch",
        kind: Kind::Text,
        required: false,
        description: "The source branch, recorded in the release",
    },
    Property {
        name: "SseKmsKeyId",
        key: "sse_kms_key_id",
        kind: Kind::Text,
        required: false,
        description: "The KMS key pack encrypts payloads with",
    },
];

/// Whether `event` wakes the worker: a STARTED event of an action of this
/// type, or the schedule.
pub fn is_wake_up(event: &Value) -> bool {
    let scheduled = event["source"] == "aws.events" && event["detail-type"] == "Scheduled Event";
    let started = event["source"] == "aws.codepipeline"
        && event["detail-type"] == "CodePipeline Action Execution State Change"
        && event["detail"]["type"]["owner"] == "Custom"
        && event["detail"]["type"]["provider"] == PROVIDER;
    scheduled || started
}

/// The action type this worker serves.
pub fn action_type() -> ActionTypeId {
    ActionTypeId::builder()
        .category(ActionCategory::Deploy)
        .owner(ActionOwner::Custom)
        .provider(PROVIDER)
        .version(VERSION)
        .build()
        .expect("every field is set")
}

/// The action's configuration as the `pipeline` action's UserParameters,
/// or what is wrong with it (each property named).
pub fn user_parameters(configuration: &HashMap<String, String>) -> Result<Map<String, Value>, String> {
    let mut params = Map::new();
    let mut names: Vec<&String> = configuration.keys().collect();
    names.sort();
    for name in names {
        let text = &configuration[name];
        let Some(p) = PROPERTIES.iter().find(|p| p.name == name.as_str()) else {
            let known: Vec<&str> = PROPERTIES.iter().map(|p| p.name).collect();
            return Err(format!(
                "the action's configuration has `{}`, which the {PROVIDER} action does not take (it takes {})",
                name.chars().take(64).collect::<String>(),
                known.join(", ")
            ));
        };
        let shown = || text.chars().take(200).collect::<String>();
        let value = match p.kind {
            Kind::Text => json!(text),
            Kind::Number => match text.trim().parse::<u32>() {
                Ok(n) => json!(n),
                Err(_) => return Err(format!("{} must be a whole number, not `{}`", p.name, shown())),
            },
            Kind::Boolean => match text.trim() {
                "true" => json!(true),
                "false" => json!(false),
                _ => return Err(format!("{} must be true or false, not `{}`", p.name, shown())),
            },
            Kind::Object => match serde_json::from_str::<Value>(text) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err(format!("{} must be a JSON object, not `{}`", p.name, shown())),
            },
        };
        params.insert(p.key.to_owned(), value);
    }
    for p in PROPERTIES.iter().filter(|p| p.required) {
        if !params.contains_key(p.key) {
            return Err(format!(
                "the action's configuration needs {} ({})",
                p.name, p.description
            ));
        }
    }
    Ok(params)
}

/// A polled job as the invoke action's job event, which `pipeline` reads;
/// what is wrong with its configuration, if anything.
fn as_job_event(job: &aws_sdk_codepipeline::types::Job) -> (Value, Option<String>) {
    let data = job.data();
    let configuration = data
        .and_then(|d| d.action_configuration())
        .and_then(|c| c.configuration())
        .cloned()
        .unwrap_or_default();
    let (params, problem) = match user_parameters(&configuration) {
        Ok(p) => (p, None),
        Err(e) => (Map::new(), Some(e)),
    };
    let inputs: Vec<Value> = data
        .map(|d| d.input_artifacts())
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let s3 = a.location().and_then(|l| l.s3_location());
            json!({"name": a.name(), "revision": a.revision(),
                   "location": {"type": "S3", "s3Location": {
                       "bucketName": s3.map(|s| s.bucket_name()), "objectKey": s3.map(|s| s.object_key())}}})
        })
        .collect();
    let creds = data.and_then(|d| d.artifact_credentials());
    let mut body = json!({
        "actionConfiguration": {"configuration": {"UserParameters": Value::Object(params).to_string()}},
        "inputArtifacts": inputs,
        "outputArtifacts": [],
        "artifactCredentials": {
            "accessKeyId": creds.map(|c| c.access_key_id()),
            "secretAccessKey": creds.map(|c| c.secret_access_key()),
            "sessionToken": creds.map(|c| c.session_token()),
        },
    });
    if let Some(t) = data.and_then(|d| d.continuation_token()) {
        body["continuationToken"] = json!(t);
    }
    let event = json!({"CodePipeline.job": {"id": job.id(), "accountId": job.account_id(), "data": body}});
    (event, problem)
}

/// Takes the jobs waiting for this action type and works each one step.
pub async fn handle(ctx: &Context, _wake_up: Value) -> Result<Value, FunctionError> {
    let polled = ctx
        .codepipeline()
        .poll_for_jobs()
        .action_type_id(action_type())
        .max_batch_size(BATCH)
        .send()
        .await
        .map_err(aws::err(format!("poll for {PROVIDER} jobs")))?;
    let mut answers = Vec::new();
    let mut unreported = Vec::new();
    for job in polled.jobs() {
        let (Some(id), Some(nonce)) = (job.id(), job.nonce()) else {
            continue;
        };
        match ctx
            .codepipeline()
            .acknowledge_job()
            .job_id(id)
            .nonce(nonce)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_invalid_nonce_exception() || se.is_job_not_found_exception()) =>
            {
                // Another worker has it (or it ended): not ours to work.
                tracing::info!(job = id, "acknowledged elsewhere; skipped");
                answers.push(json!({"job": id, "skipped": "acknowledged by another worker"}));
                continue;
            }
            // Left queued: the next wake-up polls it again.
            Err(e) => return Err(aws::classify(&format!("acknowledge job {id}"), e).into()),
        }
        let (event, problem) = as_job_event(job);
        let (parsed, parse_problem) = codepipeline::parse(ctx, event)?;
        // One job that cannot be reported on does not keep the others of
        // the batch from being worked; the invocation fails afterwards.
        match crate::pipeline::work(ctx, parsed, problem.or(parse_problem)).await {
            Ok(answer) => answers.push(json!({"job": id, "answer": answer})),
            Err(e) => {
                tracing::error!(job = id, error = %e, "a job could not be reported on");
                unreported.push(format!("{id}: {e}"));
            }
        }
    }
    if !unreported.is_empty() {
        return Err(FunctionError::Phase(porter_core::phase::PhaseError::Retryable(
            format!(
                "{} acknowledged job(s) could not be reported on: {}",
                unreported.len(),
                unreported.join("; ")
            ),
        )));
    }
    Ok(json!({"action": "worked", "jobs": answers}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn properties_become_the_invoke_actions_user_parameters() {
        let p = user_parameters(&config(&[
            ("Environment", "staging"),
            ("Keep", "2"),
            ("WaitForLease", "true"),
            ("Rollout", r#"{"bake_seconds": 60}"#),
        ]))
        .unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"environment": "staging", "keep": 2, "wait_for_lease": true, "rollout": {"bake_seconds": 60}})
        );
    }

    #[test]
    fn a_bad_property_is_named_with_what_it_takes() {
        let e = |pairs: &[(&str, &str)]| user_parameters(&config(pairs)).unwrap_err();
        assert!(e(&[("Environment", "s"), ("Keep", "many")]).contains("Keep must be a whole number, not `many`"));
        assert!(e(&[("Environment", "s"), ("WaitForLease", "yes")]).contains("WaitForLease must be true or false"));
        assert!(e(&[("Environment", "s"), ("Rollout", "[1]")]).contains("Rollout must be a JSON object"));
        assert!(e(&[("Environment", "s"), ("Regions", "x")]).contains("does not take (it takes Environment, Keep"));
        assert!(e(&[("Keep", "1")]).contains("needs Environment"));
    }

    #[test]
    fn only_this_action_types_events_and_the_schedule_wake_the_worker() {
        let started = |provider: &str| {
            json!({"source": "aws.codepipeline", "detail-type": "CodePipeline Action Execution State Change",
                   "detail": {"state": "STARTED", "type": {"owner": "Custom", "category": "Deploy", "provider": provider, "version": "1"}}})
        };
        assert!(is_wake_up(&started("Porter")));
        assert!(!is_wake_up(&started("Other")));
        assert!(is_wake_up(
            &json!({"source": "aws.events", "detail-type": "Scheduled Event"})
        ));
        assert!(!is_wake_up(&json!({"CodePipeline.job": {"id": "x"}})));
    }
}
