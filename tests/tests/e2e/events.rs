//! Every sample in events/ is one a function really takes.

use porter_core::{pack, promote, provision, prune};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_sample_event_parses_as_what_its_function_takes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if !name.ends_with(".json") {
            continue;
        }
        let v = load(&name);
        match name.as_str() {
            n if n.starts_with("pack") => {
                serde_json::from_value::<pack::PackInput>(v).unwrap();
            }
            n if n.starts_with("provision") => {
                serde_json::from_value::<provision::ProvisionInput>(v).unwrap();
            }
            n if n.starts_with("promote") => {
                serde_json::from_value::<promote::PromoteInput>(v).unwrap();
            }
            n if n.starts_with("prune") => {
                serde_json::from_value::<prune::PruneInput>(v).unwrap();
            }
            n if n.starts_with("codepipeline-job") => {
                let job = serde_json::from_value::<aws_lambda_events::event::codepipeline_job::CodePipelineJobEvent>(v)
                    .unwrap();
                assert!(job.code_pipeline_job.id.is_some(), "{n}");
            }
            n if n.starts_with("codecommit-trigger") => {
                let settings = porter_lambda::trigger::Settings::new(Some("hello".into()), "^feature/.+$", "").unwrap();
                let requests = porter_lambda::trigger::read(&settings, v).unwrap();
                assert!(!requests.is_empty(), "{n}");
            }
            n if n.starts_with("lease") => {
                serde_json::from_value::<porter_core::lease::Request>(v).unwrap();
            }
            n if n.starts_with("notify") => {
                let request: porter_lambda::notify::Request = serde_json::from_value(v).unwrap();
                let notice = porter_lambda::notify::notice(&request, &Default::default());
                assert_eq!((notice.event, notice.phase), ("failed", Some("provision")), "{n}");
            }
            n if n.starts_with("hooks") => {
                let input: porter_core::hooks::HooksInput = serde_json::from_value(v).unwrap();
                assert_eq!(input.points, ["post_pack", "pre_provision"], "{n}");
            }
            n if n.starts_with("codepipeline-action") => {
                assert!(porter_lambda::job_worker::is_wake_up(&v), "{n}");
                assert!(!porter_lambda::pipeline_stopped::is_state_change(&v), "{n}");
            }
            n if n.starts_with("codepipeline-execution") => {
                assert!(porter_lambda::pipeline_stopped::is_state_change(&v), "{n}");
                assert!(
                    v["detail"]["execution-id"].is_string() && v["detail"]["state"].is_string(),
                    "{n}"
                );
            }
            n if n.starts_with("abort") => {
                assert!(porter_lambda::abort::is_request(&v), "{n}");
                assert!(v["abort"]["execution"].as_str().unwrap().contains(":execution:"), "{n}");
            }
            n if n.starts_with("states-execution") => {
                assert!(porter_lambda::abort::is_execution_status(&v), "{n}");
                assert!(!porter_lambda::abort::is_request(&v), "{n}");
                assert_eq!(v["detail"]["status"], "ABORTED", "{n}");
            }
            n if n.starts_with("codecommit") || n.starts_with("schedule") => {
                assert!(v["detail-type"].is_string() && v["source"].is_string(), "{n}");
            }
            "statemachine-input.json" => {
                let input: pack::DeployInput = serde_json::from_value(v.clone()).unwrap();
                // The state machine reads every field by path: each one its
                // Pack state reads, and `keep`, must be written.
                let written = serde_json::to_value(&input).unwrap();
                let asl: Value = serde_json::from_str(
                    &std::fs::read_to_string(dir.join("../statemachines/deploy.asl.json")).unwrap(),
                )
                .unwrap();
                let payload = asl["States"]["Pack"]["Parameters"]["Payload"].as_object().unwrap();
                let mut read: Vec<&str> = payload
                    .values()
                    .filter_map(|p| p.as_str()?.strip_prefix("$."))
                    .collect();
                assert!(read.contains(&"variables"), "Pack reads the variables");
                read.push("keep");
                // ...and what the lease reads from the input (not from pack's output).
                let lease = asl["States"]["TakeLease"]["Parameters"]["Payload"].as_object().unwrap();
                read.extend(
                    lease
                        .values()
                        .filter_map(|p| p.as_str()?.strip_prefix("$."))
                        .filter(|p| !p.starts_with("packed.")),
                );
                assert!(read.contains(&"wait_for_lease"), "TakeLease reads wait_for_lease");
                for key in read {
                    assert!(written.get(key).is_some(), "DeployInput does not write `{key}`");
                    // A path the input lacks fails the execution at once.
                    assert!(
                        v.get(key).is_some(),
                        "the sample lacks `{key}`, which the state machine reads"
                    );
                }
            }
            other => panic!("events/{other} is not used by any test: give it a case here"),
        }
        checked += 1;
    }
    assert_eq!(checked, 23, "every sample has a case");
}

/// A hooks step as the state machine hands it over: first, resuming with
/// the state it left pending, and on the failure path with the whole
/// execution state, from which it reads the failing phase.
#[test]
fn hooks_step_reads_input_state_and_failure() {
    let first = load("hooks-after-pack.json");
    let (input, state) = porter_lambda::hooks_event(first.clone()).unwrap();
    assert_eq!(input.points, ["post_pack", "pre_provision"]);
    assert!(state.is_none());

    let mut resumed = first.clone();
    resumed["state"] = serde_json::json!({"next": 1, "builds": [{"hook": "post_pack[0]", "build": "p:1"}]});
    let (_, state) = porter_lambda::hooks_event(resumed).unwrap();
    assert_eq!(state.unwrap().builds[0].build, "p:1");

    let mut after = first.clone();
    after.as_object_mut().unwrap().remove("points");
    after["after_failure"] = load("notify-failed.json")["state"].clone();
    let (input, _) = porter_lambda::hooks_event(after).unwrap();
    assert_eq!((input.points, input.failed), (vec!["post_provision".to_owned()], true));

    let mut unknown = first;
    unknown["colour"] = "red".into();
    assert!(
        porter_lambda::hooks_event(unknown).is_err(),
        "unknown fields are refused"
    );
}
