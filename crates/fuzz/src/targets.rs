//! The fuzz targets: each takes one input, runs it through the code that
//! reads that kind of untrusted input, and checks what must hold besides
//! "no panic". `Ok(true)` means the input got past the first parser (it is
//! kept to mutate further), `Err` names a broken property.

use std::collections::BTreeSet;
use std::path::PathBuf;

use porter_core::lease;
use porter_core::{config, pack, promote, provision, prune};
use porter_lambda::token::{self, Binding};
use porter_lambda::{codepipeline, notify, trigger, Context};
use serde_json::Value;

/// A value the config target's variables hold: it must never appear in a
/// message unless the input itself holds it.
const SECRET: &str = "s3cr3t-planted-VALUE";
/// The token target's key.
const KEY: [u8; 32] = [7; 32];

pub(crate) struct Target {
    pub name: &'static str,
    pub seeds: Vec<Vec<u8>>,
    /// Seeds are JSON: structural mutations apply too.
    pub json: bool,
    pub max_len: usize,
    /// The most heap one input may take, when the target has a budget of
    /// its own (the run's `--memory-mib` otherwise): going past it aborts
    /// the child, which reports the input.
    pub memory_mib_per_input: Option<usize>,
    /// How many ordinary inputs one of this target's costs: it runs the
    /// run's `--inputs` divided by this, so a short run stays short.
    pub input_weight: u64,
    pub run: fn(&Fixture, &[u8]) -> Result<bool, String>,
}

/// What the targets share, made once per run.
pub(crate) struct Fixture {
    repo: tempfile::TempDir,
    config_file: PathBuf,
    ctx: Context,
    trigger: trigger::Settings,
    job_event: Value,
    bindings: Vec<Binding>,
    /// (binding index, value) of every token sealed as a seed.
    sealed: BTreeSet<(usize, String)>,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let repo = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir_all(repo.path().join(".porter")).expect("a folder");
        let config_file = repo.path().join(".porter/config");
        // Offline: nothing here calls AWS; the clients only have to exist.
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let aws = porter_core::aws::Aws::unpinned(sdk);
        // CodePipeline nowhere: a fuzzed job must never reach a service.
        let codepipeline = aws_sdk_codepipeline::Client::from_conf(
            aws_sdk_codepipeline::config::Builder::from(aws.sdk_config())
                .endpoint_url("http://127.0.0.1:9")
                .build(),
        );
        let ctx = Context::new(aws).with_codepipeline(codepipeline);
        let trigger = trigger::Settings::new(
            Some("porter-pipeline".into()),
            "^(feature|release)/.+$",
            "porter-pipeline",
        )
        .expect("the default pattern")
        .with_branch_environments("dev");
        let job_event = serde_json::from_str(include_str!("../../../events/codepipeline-job-provision.json"))
            .expect("the sample job event");
        let bindings = vec![
            Binding {
                function: "provision".into(),
                environment: "staging".into(),
                release: Some("s3://bucket/porter-deployment/hello/staging/r.release.json".into()),
                origin: Some("hello-pipeline/e1/Staging/Deploy".into()),
            },
            Binding {
                function: "pipeline".into(),
                environment: "production".into(),
                release: None,
                origin: None,
            },
        ];
        let values = [
            r#"{"us-west-2":{"stack_id":"arn:aws:cloudformation:us-west-2:1:stack/a/b","checks":1,"done":false}}"#,
            "s3://porter-local-artifacts/porter-continuations/abc.json 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "arn:aws:states:us-east-1:123456789012:execution:porter-deploy:job-1",
        ];
        let sealed = (0..bindings.len())
            .flat_map(|b| values.iter().map(move |v| (b, v.to_string())))
            .collect();
        Fixture {
            repo,
            config_file,
            ctx,
            trigger,
            job_event,
            bindings,
            sealed,
        }
    }
}

pub(crate) fn all(fx: &Fixture) -> Vec<Target> {
    let text = |s: &str| s.as_bytes().to_vec();
    let events = [
        include_str!("../../../events/codecommit-created.json"),
        include_str!("../../../events/codecommit-deleted.json"),
        include_str!("../../../events/codecommit-updated.json"),
        include_str!("../../../events/codecommit-trigger-push.json"),
        include_str!("../../../events/codecommit-trigger-test.json"),
        include_str!("../../../events/codepipeline-job-continuation.json"),
        include_str!("../../../events/codepipeline-job-first.json"),
        include_str!("../../../events/codepipeline-job-provision.json"),
        include_str!("../../../events/pack-missing-source.json"),
        include_str!("../../../events/pack.json"),
        include_str!("../../../events/promote-rollback.json"),
        include_str!("../../../events/provision.json"),
        include_str!("../../../events/prune.json"),
        include_str!("../../../events/schedule-weekly.json"),
        include_str!("../../../events/statemachine-input.json"),
        include_str!("../../../events/lease-take.json"),
        include_str!("../../../events/lease-give.json"),
    ];
    let tokens: Vec<Vec<u8>> = fx
        .sealed
        .iter()
        .map(|(b, v)| text(&token::seal(&KEY, &fx.bindings[*b], v)))
        .chain([text("porter1."), text("porter1.e30.AAAA"), text("")])
        .collect();
    vec![
        Target {
            name: "config",
            seeds: vec![
                text(include_str!("../../../examples/hello-service/.porter/config")),
                text(CONFIG_WITH_EVERYTHING),
                text("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"),
                text(&"[".repeat(80)),
            ],
            json: false,
            // Past the loader's own 256 KiB cap, so the cap is tried too.
            max_len: 300 * 1024,
            memory_mib_per_input: None,
            input_weight: 1,
            run: config_target,
        },
        Target {
            name: "config-budget",
            // Each seed is a recipe (see `budget_config`): a shape and its
            // sizes, mutated like any bytes.
            seeds: (0..SHAPES).map(|shape| vec![shape, 0xff, 0xff, 0x40, 0x7f]).collect(),
            json: false,
            max_len: 64,
            memory_mib_per_input: Some(BUDGET_MIB),
            // Each input is up to 256 KiB of YAML to validate.
            input_weight: 100,
            run: config_budget_target,
        },
        Target {
            name: "events",
            seeds: events.iter().map(|e| text(e)).collect(),
            json: true,
            max_len: 128 * 1024,
            memory_mib_per_input: None,
            input_weight: 1,
            run: events_target,
        },
        Target {
            name: "user-parameters",
            seeds: vec![
                text(r#"{"environment": "staging"}"#),
                text(
                    r#"{"environment": "staging", "release": "s3://b/porter-deployment/x.release.json", "keep": 2, "regions": ["us-west-2"], "variables": {"TOKEN": "abcdefgh-not-echoed"}}"#,
                ),
                text(
                    r#"{"environment": "production", "repository": "hello", "branch": "main", "image": "1.dkr.ecr.us-east-1.amazonaws.com/x:1", "sse_kms_key_id": "arn:aws:kms:us-east-1:1:key/x"}"#,
                ),
                text(""),
            ],
            json: true,
            max_len: 64 * 1024,
            memory_mib_per_input: None,
            input_weight: 1,
            run: user_parameters_target,
        },
        Target {
            name: "tokens",
            seeds: tokens,
            json: false,
            max_len: 16 * 1024,
            memory_mib_per_input: None,
            input_weight: 1,
            run: tokens_target,
        },
    ]
}

const CONFIG_WITH_EVERYTHING: &str = "\
service_name: svc-api
porter_version: v5.3.0
_c: &C
  name: web
  topology: inet
  inet_port: 3000
  health_check: {method: GET, path: /health}
environments:
- name: dev
  role_arn: arn:aws:iam::123456789012:role/porter-deployment
  instance_type: m5.large
  stack_definition_path: .porter/overlay.json
  blackout_windows:
  - {start_time: 2026-12-24T00:00:00Z, end_time: 2026-12-26T00:00:00Z}
  regions:
  - name: us-west-2
    vpc_id: vpc-0a1b2c3d
    s3_bucket: svc-${SECRET}
    sse_kms_key_id: arn:aws:kms:us-west-2:123456789012:key/abc
    elb: svc-dev
    instance_count: 2
    key_pair_name: ${UNSET}
    azs:
    - {name: us-west-2a, subnet_id: subnet-0a1b2c3d}
    containers:
    - <<: *C
";

fn config_target(fx: &Fixture, input: &[u8]) -> Result<bool, String> {
    let text = String::from_utf8_lossy(input);
    let lookup = |name: &str| (name == "SECRET").then(|| SECRET.to_owned());
    let loaded = config::load_str(&text, &fx.config_file, fx.repo.path(), &lookup);
    let parsed = !loaded.diagnostics.iter().any(|d| d.message.contains("not valid YAML"));
    let messages: Vec<String> = loaded.located().map(|l| l.to_string()).collect();
    if !text.contains(SECRET) {
        if let Some(m) = messages.iter().find(|m| m.contains(SECRET)) {
            return Err(format!("a message repeats a variable's value: {m}"));
        }
    }
    let _ = loaded.deployable();
    Ok(parsed)
}

/// What one config of at most 256 KiB may cost to validate, whatever its
/// shape: issue 32's budget is 100 MB with the debug build.
const BUDGET_MIB: usize = 100;

/// The shapes `budget_config` builds.
const SHAPES: u8 = 6;

/// A config of up to the loader's 256 KiB built from the shapes that make
/// a parser's cost grow faster than the file: the input is a recipe (a
/// shape, then sizes and filler bytes), so mutations explore sizes and
/// mixes rather than mostly breaking the YAML.
fn budget_config(recipe: &[u8]) -> String {
    let at = |i: usize| recipe.get(i).copied().unwrap_or(0) as usize;
    // Sizes from the recipe, scaled so the whole stays near the cap.
    let big = 1 + at(1) * 900; // up to ~230 KB of one scalar or key
    let copies = 1 + at(2) * 40; // up to ~10,000 aliases
    let width = 1 + at(3) * 40; // up to ~10,000 keys in a mapping
    let filler = recipe.get(5..).filter(|f| !f.is_empty()).unwrap_or(b"x");
    let fill = |n: usize| -> String {
        filler
            .iter()
            .map(|b| if b.is_ascii_alphanumeric() { *b as char } else { 'k' })
            .cycle()
            .take(n)
            .collect()
    };
    let mut out = String::from("service_name: budget\n");
    match at(0) % SHAPES as usize {
        // An alias of a large scalar, repeated: one node, many bytes.
        0 => {
            out.push_str(&format!("_big: &b \"{}\"\nenvironments:\n", fill(big)));
            for _ in 0..copies {
                out.push_str("- {name: *b}\n");
            }
        }
        // An unknown large key, aliased many times: "did you mean" once
        // per copy.
        1 => {
            out.push_str(&format!(
                "environments:\n- &e {{name: dev, {}: 1, regions: []}}\n",
                fill(big)
            ));
            for _ in 0..copies {
                out.push_str("- *e\n");
            }
        }
        // Merge keys over a large mapping, many times.
        2 => {
            out.push_str("_m: &m {");
            for i in 0..width {
                out.push_str(&format!("k{i}: {i}, "));
            }
            out.push_str("name: dev}\nenvironments:\n");
            for _ in 0..copies {
                out.push_str("- {<<: *m}\n");
            }
        }
        // Merges of merges: each mapping merges the one before.
        3 => {
            out.push_str(&format!("_m0: &m0 {{{}: 1}}\n", fill(big.min(4096))));
            for i in 1..copies.min(2000) {
                out.push_str(&format!("_m{i}: &m{i} {{<<: *m{}, k{i}: {i}}}\n", i - 1));
            }
        }
        // Nested aliases: each level doubles (the node budget's case),
        // with long scalars at the bottom.
        4 => {
            out.push_str(&format!("_l0: &l0 [\"{}\", \"{}\"]\n", fill(big / 2), fill(big / 2)));
            for i in 1..(2 + at(2) % 40) {
                out.push_str(&format!("_l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}]\n", p = i - 1));
            }
        }
        // Many distinct unknown long keys: each is clipped before it is
        // compared or printed.
        _ => {
            let key = fill(1 + at(1) * 4);
            for i in 0..copies {
                out.push_str(&format!("{key}{i}: 1\n"));
            }
        }
    }
    // Over the cap the loader refuses at once; clip to just under it so
    // the shapes themselves are what is measured.
    if out.len() > porter_core::yaml::MAX_BYTES {
        let mut cut = porter_core::yaml::MAX_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Validates a config built by `budget_config`: it must finish within the
/// target's heap budget (the child aborts past it) and say nothing of a
/// variable's value; the run's figures show the slowest input's time.
fn config_budget_target(fx: &Fixture, input: &[u8]) -> Result<bool, String> {
    let text = budget_config(input);
    let lookup = |_: &str| None;
    let loaded = config::load_str(&text, &fx.config_file, fx.repo.path(), &lookup);
    for message in loaded.located().map(|l| l.to_string()) {
        // Keys are clipped in messages: a message never carries a whole
        // large key or scalar back.
        if message.len() > 4096 {
            return Err(format!(
                "a message of {} bytes (keys and values must be clipped): {}…",
                message.len(),
                message.chars().take(200).collect::<String>()
            ));
        }
    }
    Ok(!loaded.diagnostics.iter().any(|d| d.message.contains("not valid YAML")))
}

fn events_target(fx: &Fixture, input: &[u8]) -> Result<bool, String> {
    let Ok(v) = serde_json::from_slice::<Value>(input) else {
        return Ok(false);
    };
    let _ = serde_json::from_value::<pack::PackInput>(v.clone());
    let _ = serde_json::from_value::<provision::ProvisionInput>(v.clone());
    let _ = serde_json::from_value::<promote::PromoteInput>(v.clone());
    let _ = serde_json::from_value::<prune::PruneInput>(v.clone());
    let _ = serde_json::from_value::<lease::Request>(v.clone());
    let _ = serde_json::from_value::<porter_core::hooks::HooksInput>(v.clone());
    // A notice is read from whatever state the state machine hands over.
    if let Ok(request) = serde_json::from_value::<notify::Request>(v.clone()) {
        let n = notify::notice(&request, &notify::Settings::default());
        let _ = (n.text(), n.slack_keys());
    }
    let _ = porter_core::execution::phase_reached(&v);
    let _ = trigger::read(&fx.trigger, v.clone());
    if codepipeline::is_job(&v) {
        job(fx, v)?;
    }
    Ok(true)
}

/// Everything a phase reads from a job before it calls AWS.
fn job(fx: &Fixture, event: Value) -> Result<(), String> {
    let Ok((job, _problem)) = codepipeline::parse(&fx.ctx, event) else {
        return Ok(());
    };
    let _ = job.environment();
    let _ = job.string_param("release");
    let _ = job.u32_param("keep");
    let _ = job.binding("provision");
    if let Err(e) = job.variables_param() {
        // Values are never repeated, only names.
        let values: Vec<&str> = match job.params.get("variables") {
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(_, v)| v.as_str())
                .filter(|v| v.len() >= 8 && !m.keys().any(|k| k.contains(v)))
                .collect(),
            _ => vec![],
        };
        let message = e.to_string();
        if let Some(v) = values.iter().find(|v| message.contains(*v)) {
            return Err(format!("a variables error repeats the value `{v}`: {message}"));
        }
    }
    Ok(())
}

fn user_parameters_target(fx: &Fixture, input: &[u8]) -> Result<bool, String> {
    let params = String::from_utf8_lossy(input);
    let mut event = fx.job_event.clone();
    if let Some(slot) = event.pointer_mut("/CodePipeline.job/data/actionConfiguration/configuration/UserParameters") {
        *slot = Value::String(params.to_string());
    }
    job(fx, event)?;
    Ok(serde_json::from_str::<Value>(&params).is_ok())
}

fn tokens_target(fx: &Fixture, input: &[u8]) -> Result<bool, String> {
    let token = String::from_utf8_lossy(input);
    let mut opened = false;
    for (i, binding) in fx.bindings.iter().enumerate() {
        if let Ok(value) = token::open(&KEY, binding, &token) {
            opened = true;
            if !fx.sealed.contains(&(i, value.clone())) {
                return Err(format!(
                    "a token opened for {binding:?} with a value never sealed for it: {value:?}"
                ));
            }
        }
    }
    Ok(opened || token.starts_with("porter1."))
}
