//! Hooks: the service's own steps around each phase (porter's `hooks:`).
//!
//! The deploy state machine calls this step between the phases with the
//! hooks due there (`pre_pack` before pack; `post_pack` and
//! `pre_provision` after it; and so on; on a failure, the failed phase's
//! `post_` hooks with `run_condition: fail` or `always`). Hooks run in
//! their list's order, a run of `concurrent: true` neighbours at once; the
//! first that fails stops the deploy with its name and the end of its
//! output.
//!
//! Hooks are repository code, so untrusted, and they never run inside a
//! function: in AWS each is a CodeBuild build of the hooks project, whose
//! role has no deploy, IAM or artifact-write rights (the step starts the
//! builds and resumes until they end); on the local stack each is a
//! process run as an unprivileged user in a copy of the repository. A
//! `dockerfile:` hook needs a Docker engine: CodeBuild has one (the hooks
//! project runs privileged); the local stack has none, so there it is
//! skipped with a warning, or fails the deploy when asked to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::aws::Aws;
use crate::config::{self, Config, Hook, HookRun};
use crate::pack::{self, Source};
use crate::phase::{PhaseError, PhaseResult, Step};
use crate::release::ReleaseRef;
use crate::target::{Deployment, Target};

/// How long the step waits between looks at running builds.
const POLL_SECONDS: u32 = 15;
/// How much of a failed hook's output its error carries.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 1500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksInput {
    /// The hooks due here, in order (`post_pack`, `pre_provision`).
    pub points: Vec<String>,
    /// Whether the phase before failed: the failure path's `post_` hooks.
    #[serde(default)]
    pub failed: bool,
    /// The deploy's source: the repository the hooks run in.
    pub source: Source,
    pub environment: String,
    /// The deploy's variables: what a hook's `NAME:` without a value gets.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Pack's output, once there is one (its checked config is used).
    #[serde(default)]
    pub release: Option<ReleaseRef>,
    /// Promote's waves, once the release is cut over: what serves where,
    /// which the hooks after promote (a smoke test) are told.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WavePromoted>,
    /// The state machine execution whose step this is, from the lease on
    /// (the hooks before pack run before it takes one): a step of an
    /// execution that no longer holds the lease runs nothing more.
    #[serde(default)]
    pub execution: Option<String>,
}

/// One wave of promote, as the state machine keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WavePromoted {
    pub promoted: BTreeMap<String, crate::promote::RegionPromoted>,
}

/// Builds started for the group being run, and how far the step is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HooksState {
    /// The next group to run, counted over all the points' groups.
    pub next: usize,
    /// The builds of group `next - 1` still to be seen ending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<Started>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ran: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub hook: String,
    pub build: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HooksDone {
    /// Each hook that ran, as `post_pack[0]`.
    pub ran: Vec<String>,
    /// Each hook that did not, and why.
    pub skipped: Vec<String>,
}

/// Where hooks run.
#[derive(Debug, Clone)]
pub enum Runner {
    /// AWS: a build of this CodeBuild project per hook.
    CodeBuild { project: String },
    /// Processes on this machine: the local stack's runner
    /// (`porter_local::hook_runner`), which no function links.
    Processes(std::sync::Arc<dyn RunGroup>),
}

/// Runs one group of hooks (they run at once) in the repository at `root`
/// on this machine: the hooks that ran and those skipped, with why, or
/// the first that failed.
pub trait RunGroup: std::fmt::Debug + Send + Sync {
    fn run_group<'a>(&'a self, root: &'a Path, group: &'a [Job]) -> futures::future::BoxFuture<'a, GroupRun>;
}

/// The hooks of a group that ran and those skipped (with why), or the
/// first that failed.
pub type GroupRun = Result<(Vec<String>, Vec<String>), PhaseError>;

/// One hook, ready to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// `post_pack[1]`: the hook's name and its place in the list.
    pub label: String,
    pub hook: Hook,
    pub env: BTreeMap<String, String>,
}

pub async fn run(
    aws: &Aws,
    runner: &Runner,
    input: &HooksInput,
    state: Option<HooksState>,
) -> PhaseResult<HooksState, HooksDone> {
    let mut state = state.unwrap_or_default();
    if let Some(bad) = input
        .points
        .iter()
        .find(|p| !config::DEPLOY_HOOKS.contains(&p.as_str()))
    {
        return Err(PhaseError::Invalid(format!(
            "`{bad}` is not a hook a deploy runs (expected one of: {})",
            config::DEPLOY_HOOKS.join(", ")
        )));
    }
    if let Err(lost) = fence(aws, input).await {
        // Its builds would go on after the deploy: they stop with it.
        if let (Runner::CodeBuild { .. }, false) = (runner, state.builds.is_empty()) {
            let codebuild = aws_sdk_codebuild::Client::new(aws.sdk_config());
            let ids: Vec<String> = state.builds.iter().map(|b| b.build.clone()).collect();
            let stopped = stop_builds(&codebuild, &ids).await;
            return Err(PhaseError::Invalid(format!(
                "{lost}; its hooks' builds: {}",
                stopped.join("; ")
            )));
        }
        return Err(lost);
    }
    if matches!(input.source, Source::Release { .. }) {
        // A packed release deployed again (a rollback) has no repository.
        return Ok(Step::Done {
            output: HooksDone {
                ran: Vec::new(),
                skipped: vec!["every hook: a release deployed again has no repository to run hooks in".into()],
            },
        });
    }
    if matches!(runner, Runner::CodeBuild { .. }) && !state.builds.is_empty() {
        // A poll of running builds needs nothing of the release: the config
        // is read again only once a group has ended and the next is due.
        let codebuild = aws_sdk_codebuild::Client::new(aws.sdk_config());
        if let Some(progress) = codebuild_check(&codebuild, &mut state).await? {
            return Ok(Step::Pending {
                state,
                wait_seconds: POLL_SECONDS,
                progress,
                percent: 0,
            });
        }
    }
    let workspace = Workspace::open(aws, runner, input).await?;
    let groups = groups(&workspace.config, input, &workspace.facts);
    if groups.is_empty() {
        return Ok(Step::Done {
            output: HooksDone::default(),
        });
    }
    match runner {
        Runner::Processes(runner) => {
            let root = workspace
                .root
                .as_deref()
                .expect("the local runner opens the repository");
            for group in &groups[state.next.min(groups.len())..] {
                let (ran, skipped) = runner.run_group(root, group).await?;
                state.ran.extend(ran);
                state.skipped.extend(skipped);
            }
            Ok(Step::Done {
                output: HooksDone {
                    ran: state.ran,
                    skipped: state.skipped,
                },
            })
        }
        Runner::CodeBuild { project } => {
            let Source::S3 { bucket, key } = &input.source else {
                return Err(PhaseError::Invalid(
                    "hooks in CodeBuild need the deploy's source as a zip in S3 (a pipeline's source artifact)".into(),
                ));
            };
            let codebuild = aws_sdk_codebuild::Client::new(aws.sdk_config());
            let Some(group) = groups.get(state.next) else {
                return Ok(Step::Done {
                    output: HooksDone {
                        ran: state.ran,
                        skipped: state.skipped,
                    },
                });
            };
            for job in group {
                let build = codebuild_start(&codebuild, project, bucket, key, job).await?;
                state.builds.push(Started {
                    hook: job.label.clone(),
                    build,
                });
            }
            state.next += 1;
            let names: Vec<&str> = group.iter().map(|j| j.label.as_str()).collect();
            Ok(Step::Pending {
                state,
                wait_seconds: POLL_SECONDS,
                progress: format!("hooks: running {}", names.join(", ")),
                percent: 0,
            })
        }
    }
}

/// The fence (as the phases'): a step of an execution that lost its
/// deploy lease to an abort or a takeover refuses to run hooks. Only a
/// step that names its execution and follows pack is fenced: before pack
/// no lease is held.
async fn fence(aws: &Aws, input: &HooksInput) -> Result<(), PhaseError> {
    let (Some(execution), Some(release), Some(_)) = (&input.execution, &input.release, aws.fence()) else {
        return Ok(());
    };
    // Only who it is: the config is read (and checked) once the fence
    // lets the step go on.
    let release = crate::target::release_of(aws, release).await?;
    crate::lease::check_fence(aws, &release.service, &release.environment, execution).await
}

/// Stops hook builds (an abort's, or a fenced step's): per build, what
/// became of it. Best effort: a build that cannot be stopped is said, and
/// one that has ended already is left as it ended.
pub async fn stop_builds(codebuild: &aws_sdk_codebuild::Client, ids: &[String]) -> Vec<String> {
    let mut said = Vec::new();
    for id in ids {
        match codebuild.stop_build().id(id).send().await {
            Ok(out) => {
                let status = out
                    .build_value()
                    .and_then(|b| b.build_status())
                    .map_or("unknown", |s| s.as_str());
                said.push(format!("{id} {}", status.to_lowercase()));
            }
            Err(e) => said.push(format!(
                "{id} not stopped ({})",
                crate::aws::classify("stop the build", e)
            )),
        }
    }
    said
}

/// Stops the hook builds an execution's history says it left running
/// ([`crate::history::running_hook_builds`]): an abort's first step.
pub async fn stop_left_running(aws: &Aws, events: &[aws_sdk_sfn::types::HistoryEvent]) -> Vec<String> {
    let builds = crate::history::running_hook_builds(events);
    if builds.is_empty() {
        return Vec::new();
    }
    stop_builds(&aws_sdk_codebuild::Client::new(aws.sdk_config()), &builds).await
}

/// The release's facts, as every hook sees them.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub service: String,
    pub environment: String,
    pub version: Option<String>,
    pub regions: Vec<String>,
    pub stack: Option<String>,
    pub elbs: Vec<String>,
    /// After promote: the release's instances in service, `REGION:ID`.
    pub instances: Vec<String>,
    /// After promote: each load balancer's DNS name, `REGION:NAME`.
    pub elb_dns_names: Vec<String>,
}

impl Facts {
    /// What serves where after promote's `waves`: each region's instances
    /// in service and its load balancers' DNS names (the last wave that
    /// touched a region says).
    fn promoted(&mut self, waves: &[WavePromoted]) {
        let mut last: BTreeMap<&str, &crate::promote::RegionPromoted> = BTreeMap::new();
        for wave in waves {
            for (region, promoted) in &wave.promoted {
                last.insert(region, promoted);
            }
        }
        for (region, promoted) in last {
            for elb in &promoted.elbs {
                for id in &elb.in_service {
                    let entry = format!("{region}:{id}");
                    if !self.instances.contains(&entry) {
                        self.instances.push(entry);
                    }
                }
                if let Some(dns) = &elb.dns_name {
                    self.elb_dns_names.push(format!("{region}:{dns}"));
                }
            }
        }
    }
}

/// The config the hooks come from, and (for the local runner) the
/// repository they run in.
struct Workspace {
    config: Config,
    facts: Facts,
    root: Option<PathBuf>,
    /// Holds a fetched source until the step ends.
    _scratch: Option<tempfile::TempDir>,
}

impl Workspace {
    async fn open(aws: &Aws, runner: &Runner, input: &HooksInput) -> Result<Workspace, PhaseError> {
        let local = matches!(runner, Runner::Processes(_));
        let (root, scratch) = match &input.source {
            Source::Path(p) => (Some(p.clone()), None),
            Source::S3 { bucket, key } if local || input.release.is_none() => {
                let dir = tempfile::tempdir().map_err(|e| PhaseError::Retryable(format!("no scratch space: {e}")))?;
                pack::fetch_zip(&aws.s3(), bucket, key, dir.path()).await?;
                (Some(dir.path().to_path_buf()), Some(dir))
            }
            _ => (None, None),
        };
        // After pack, its checked config; before, the source's own, read
        // as pack reads it.
        let (config, version, regions) = match &input.release {
            Some(release) => {
                let target = Target {
                    release: release.clone(),
                    region: None,
                    regions: Vec::new(),
                };
                let d = Deployment::load(aws, &target).await?;
                (d.config, Some(d.release.version), d.release.regions)
            }
            None => {
                let root = root.as_deref().expect("a source before pack is read into a folder");
                let (file, repo) = config::locate(root);
                let lookup = |name: &str| input.variables.get(name).cloned();
                let loaded = config::load_file(&file, &repo, &lookup).map_err(|e| {
                    PhaseError::Invalid(format!(
                        "cannot read {}: {e}; the source must hold the service's .porter/config",
                        file.display()
                    ))
                })?;
                let config = loaded.deployable().map_err(PhaseError::from)?;
                (config, None, Vec::new())
            }
        };
        let env = config.environment(&input.environment).map_err(PhaseError::from)?;
        let regions = if regions.is_empty() {
            env.regions.iter().map(|r| r.name.clone()).collect()
        } else {
            regions
        };
        let elbs = env
            .regions
            .iter()
            .flat_map(|r| r.elbs.iter().map(move |e| format!("{}:{}", r.name, e.name)))
            .collect();
        let mut facts = Facts {
            service: config.service_name.clone(),
            environment: env.name.clone(),
            stack: version
                .as_deref()
                .map(|v| crate::template::stack_name(&config.service_name, &env.name, v)),
            version,
            regions,
            elbs,
            instances: Vec::new(),
            elb_dns_names: Vec::new(),
        };
        facts.promoted(&input.waves);
        Ok(Workspace {
            config,
            facts,
            root,
            _scratch: scratch,
        })
    }
}

/// The hooks due, as groups run one after the other: each a hook alone,
/// or a run of concurrent neighbours.
pub fn groups(config: &Config, input: &HooksInput, facts: &Facts) -> Vec<Vec<Job>> {
    let mut out: Vec<Vec<Job>> = Vec::new();
    for point in &input.points {
        let Some(hooks) = config.hooks.get(point) else { continue };
        // A pre_ hook's phase has not run: it cannot have failed.
        let failed = input.failed && point.starts_with("post_");
        let mut last_concurrent = false;
        for (i, hook) in hooks.iter().enumerate() {
            if !hook.run_condition.runs(failed) {
                last_concurrent = false;
                continue;
            }
            let job = Job {
                label: format!("{point}[{i}]"),
                hook: hook.clone(),
                env: environment(hook, facts, &input.variables, point, failed),
            };
            match out.last_mut() {
                Some(group) if hook.concurrent && last_concurrent => group.push(job),
                _ => out.push(vec![job]),
            }
            last_concurrent = hook.concurrent;
        }
    }
    out
}

/// What a hook's process sees: the release's facts as `PORTER_*`, then
/// the variables its `environment:` names.
pub fn environment(
    hook: &Hook,
    facts: &Facts,
    variables: &BTreeMap<String, String>,
    point: &str,
    failed: bool,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PORTER_SERVICE".into(), facts.service.clone());
    // porter's own names, beside this product's, so porter's hooks run as
    // they are.
    env.insert("PORTER_SERVICE_NAME".into(), facts.service.clone());
    env.insert("PORTER_ENVIRONMENT".into(), facts.environment.clone());
    env.insert("PORTER_REGIONS".into(), facts.regions.join(","));
    env.insert("PORTER_HOOK".into(), point.to_owned());
    env.insert("PORTER_PHASE_FAILED".into(), failed.to_string());
    env.insert("PORTER_ELBS".into(), facts.elbs.join(","));
    // After promote, where the release serves: a smoke test's targets.
    if !facts.instances.is_empty() {
        env.insert("PORTER_INSTANCES".into(), facts.instances.join(","));
    }
    if !facts.elb_dns_names.is_empty() {
        env.insert("PORTER_ELB_DNS_NAMES".into(), facts.elb_dns_names.join(","));
    }
    if let Some(v) = &facts.version {
        env.insert("PORTER_VERSION".into(), v.clone());
        env.insert("PORTER_SERVICE_VERSION".into(), v.clone());
    }
    if let Some(s) = &facts.stack {
        env.insert("PORTER_STACK".into(), s.clone());
    }
    for (name, value) in &hook.environment {
        if let Some(v) = value.clone().or_else(|| variables.get(name).cloned()) {
            env.insert(name.clone(), v);
        }
    }
    env
}

/// The end of a hook's output: what its error carries.
pub fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    let text = lines[start..].join("\n");
    if text.len() <= TAIL_BYTES {
        return text;
    }
    let mut cut = text.len() - TAIL_BYTES;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &text[cut..])
}

/// The buildspec of one hook. What the repository wrote goes in as
/// variables the fixed commands quote, never spliced into them; a
/// `command:` is the repository's own shell, run as it is.
pub fn buildspec(job: &Job) -> (String, Vec<(String, String)>) {
    let mut vars: Vec<(String, String)> = job.env.clone().into_iter().collect();
    let mut commands = Vec::new();
    if let Some(repo) = &job.hook.repo {
        vars.push(("PORTER_HOOK_REPO".into(), repo.clone()));
        vars.push(("PORTER_HOOK_REF".into(), job.hook.git_ref.clone().unwrap_or_default()));
        commands.push(
            r#"git clone --depth 1 ${PORTER_HOOK_REF:+--branch "$PORTER_HOOK_REF"} "$PORTER_HOOK_REPO" /tmp/porter-plugin"#.to_owned(),
        );
    }
    let context = if job.hook.repo.is_some() {
        "/tmp/porter-plugin"
    } else {
        "$CODEBUILD_SRC_DIR"
    };
    match &job.hook.run {
        HookRun::Command(cmd) => {
            if job.hook.repo.is_some() {
                commands.push(format!("cd {context}"));
            }
            commands.push(cmd.clone());
        }
        HookRun::Dockerfile(file) => {
            vars.push(("PORTER_HOOK_DOCKERFILE".into(), file.clone()));
            let pass: String = job.env.keys().map(|k| format!(" -e {k}")).collect();
            commands.push(format!(
                r#"docker build -t porter-hook -f "{context}/$PORTER_HOOK_DOCKERFILE" "{context}""#
            ));
            commands.push(format!(
                r#"docker run --rm -v "$CODEBUILD_SRC_DIR:/repo_root"{pass} porter-hook"#
            ));
        }
    }
    let spec = serde_json::json!({
        "version": "0.2",
        "phases": {"build": {"commands": commands}}
    });
    (spec.to_string(), vars)
}

async fn codebuild_start(
    codebuild: &aws_sdk_codebuild::Client,
    project: &str,
    bucket: &str,
    key: &str,
    job: &Job,
) -> Result<String, PhaseError> {
    use aws_sdk_codebuild::types::{EnvironmentVariable, EnvironmentVariableType, SourceType};
    let (spec, vars) = buildspec(job);
    let vars: Vec<EnvironmentVariable> = vars
        .into_iter()
        .map(|(name, value)| {
            EnvironmentVariable::builder()
                .name(name)
                .value(value)
                .r#type(EnvironmentVariableType::Plaintext)
                .build()
                .expect("name and value are set")
        })
        .collect();
    let out = codebuild
        .start_build()
        .project_name(project)
        .source_type_override(SourceType::S3)
        .source_location_override(format!("{bucket}/{key}"))
        .buildspec_override(spec)
        .set_environment_variables_override(Some(vars))
        .privileged_mode_override(matches!(job.hook.run, HookRun::Dockerfile(_)))
        .send()
        .await
        .map_err(|e| crate::aws::classify(&format!("starting hook {} in CodeBuild", job.label), e))?;
    out.build_value
        .and_then(|b| b.id)
        .ok_or_else(|| PhaseError::Aws(format!("CodeBuild started hook {} without a build id", job.label)))
}

/// Looks at the running builds (`state.builds`): `Some(progress)` while any runs, an error
/// for the first that failed, `None` once all succeeded.
pub async fn codebuild_check(
    codebuild: &aws_sdk_codebuild::Client,
    state: &mut HooksState,
) -> Result<Option<String>, PhaseError> {
    use aws_sdk_codebuild::types::StatusType;
    let ids: Vec<String> = state.builds.iter().map(|b| b.build.clone()).collect();
    let out = codebuild
        .batch_get_builds()
        .set_ids(Some(ids))
        .send()
        .await
        .map_err(|e| crate::aws::classify("reading the hooks' builds", e))?;
    let mut running = Vec::new();
    for started in &state.builds {
        let Some(build) = out.builds().iter().find(|b| b.id() == Some(started.build.as_str())) else {
            return Err(PhaseError::Aws(format!(
                "CodeBuild has no build {} (hook {})",
                started.build, started.hook
            )));
        };
        match build.build_status() {
            Some(StatusType::Succeeded) => {}
            Some(StatusType::InProgress) | None => running.push(started.hook.clone()),
            Some(other) => {
                // The failed phase's own words: CodeBuild's context for it.
                let why: Vec<String> = build
                    .phases()
                    .iter()
                    .filter(|p| p.phase_status().is_some_and(|s| *s != StatusType::Succeeded))
                    .flat_map(|p| p.contexts().iter().filter_map(|c| c.message().map(str::to_owned)))
                    .collect();
                return Err(PhaseError::HookFailed {
                    hook: started.hook.clone(),
                    reason: format!(
                        "CodeBuild build {} ended {}{}",
                        started.build,
                        other.as_str(),
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", tail(&why.join("\n")))
                        }
                    ),
                });
            }
        }
    }
    if running.is_empty() {
        state.ran.extend(state.builds.drain(..).map(|b| b.hook));
        Ok(None)
    } else {
        Ok(Some(format!("hooks: waiting for {}", running.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunCondition;

    fn hook(cmd: &str, concurrent: bool, run_condition: RunCondition) -> Hook {
        Hook {
            run: HookRun::Command(cmd.into()),
            repo: None,
            git_ref: None,
            environment: BTreeMap::from([("TOKEN".into(), None), ("FIXED".into(), Some("1".into()))]),
            concurrent,
            run_condition,
        }
    }

    fn input(points: &[&str], failed: bool) -> HooksInput {
        HooksInput {
            points: points.iter().map(|p| p.to_string()).collect(),
            failed,
            source: Source::Path("/nonexistent".into()),
            environment: "staging".into(),
            variables: BTreeMap::from([("TOKEN".into(), "t0k".into()), ("OTHER".into(), "x".into())]),
            release: None,
            waves: Vec::new(),
            execution: None,
        }
    }

    /// The hooks after promote learn where the release serves: each
    /// region's instances in service (from the last wave that touched it)
    /// and its load balancers' DNS names.
    #[test]
    fn hooks_after_promote_are_told_where_the_release_serves() {
        let region = |ids: &[&str], dns: &str| crate::promote::RegionPromoted {
            stack_id: "arn:s".into(),
            stack_name: "web-staging-1".into(),
            elbs: vec![crate::promote::ElbState {
                name: "web".into(),
                dns_name: Some(dns.into()),
                in_service: ids.iter().map(|i| (*i).to_owned()).collect(),
            }],
            deregistered: Vec::new(),
            already_live: false,
            canaries: Vec::new(),
        };
        let waves = vec![
            WavePromoted {
                promoted: BTreeMap::from([("us-west-2".into(), region(&["i-1", "i-2"], "web-1.elb.amazonaws.com"))]),
            },
            WavePromoted {
                promoted: BTreeMap::from([("us-east-1".into(), region(&["i-3"], "web-2.elb.amazonaws.com"))]),
            },
        ];
        let mut facts = Facts::default();
        facts.promoted(&waves);
        let h = hook("./smoke", false, RunCondition::Pass);
        let env = environment(&h, &facts, &BTreeMap::new(), "post_promote", false);
        assert_eq!(env["PORTER_INSTANCES"], "us-east-1:i-3,us-west-2:i-1,us-west-2:i-2");
        assert_eq!(
            env["PORTER_ELB_DNS_NAMES"],
            "us-east-1:web-2.elb.amazonaws.com,us-west-2:web-1.elb.amazonaws.com"
        );
        // Before promote there is nothing to say.
        let env = environment(&h, &Facts::default(), &BTreeMap::new(), "pre_provision", false);
        assert!(!env.contains_key("PORTER_INSTANCES") && !env.contains_key("PORTER_ELB_DNS_NAMES"));
    }

    #[test]
    fn concurrent_neighbours_run_together_and_run_condition_follows_the_phase() {
        let mut config: Config = serde_json::from_value(serde_json::json!({
            "service_name": "web", "porter_version": null, "environments": []
        }))
        .unwrap();
        config.hooks.insert(
            "post_pack".into(),
            vec![
                hook("a", false, RunCondition::Pass),
                hook("b", true, RunCondition::Pass),
                hook("c", true, RunCondition::Always),
                hook("d", false, RunCondition::Fail),
                hook("e", true, RunCondition::Pass),
            ],
        );
        config
            .hooks
            .insert("pre_provision".into(), vec![hook("f", false, RunCondition::Fail)]);
        let facts = Facts {
            service: "web".into(),
            environment: "staging".into(),
            ..Facts::default()
        };
        let labels = |failed| -> Vec<Vec<String>> {
            groups(&config, &input(&["post_pack", "pre_provision"], failed), &facts)
                .iter()
                .map(|g| g.iter().map(|j| j.label.clone()).collect())
                .collect()
        };
        assert_eq!(
            labels(false),
            [
                vec!["post_pack[0]"],
                vec!["post_pack[1]", "post_pack[2]"],
                vec!["post_pack[4]"]
            ]
        );
        assert_eq!(labels(true), [vec!["post_pack[2]"], vec!["post_pack[3]"]]);
        let job = &groups(&config, &input(&["post_pack"], false), &facts)[0][0];
        assert_eq!(
            job.env["TOKEN"], "t0k",
            "a name without a value gets the deploy's variable"
        );
        assert_eq!(job.env["FIXED"], "1");
        assert_eq!(job.env["PORTER_HOOK"], "post_pack");
        assert!(!job.env.contains_key("OTHER"), "only the variables the hook names");
    }

    #[test]
    fn a_buildspec_quotes_what_the_repository_wrote_through_variables() {
        let mut h = hook("make check", false, RunCondition::Pass);
        h.run = HookRun::Dockerfile("hooks/x; rm -rf /".into());
        h.repo = Some("https://example.com/plugins.git".into());
        h.git_ref = Some("v1".into());
        let job = Job {
            label: "pre_pack[0]".into(),
            hook: h,
            env: BTreeMap::from([("PORTER_SERVICE".into(), "web".into())]),
        };
        let (spec, vars) = buildspec(&job);
        assert!(!spec.contains("rm -rf") && !spec.contains("example.com"), "{spec}");
        assert!(vars.contains(&("PORTER_HOOK_DOCKERFILE".into(), "hooks/x; rm -rf /".into())));
        let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
        let commands = spec["phases"]["build"]["commands"].as_array().unwrap();
        assert_eq!(commands.len(), 3, "{commands:?}");
        assert!(commands[2].as_str().unwrap().contains("-e PORTER_SERVICE"));
    }

    #[test]
    fn a_failure_keeps_the_end_of_the_output() {
        let out: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&out);
        assert!(t.starts_with("line 80") && t.ends_with("line 99"), "{t}");
        assert!(tail(&"x".repeat(5000)).len() <= TAIL_BYTES + 3);
    }
}
