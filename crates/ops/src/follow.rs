//! Starting a deploy execution and following it to its end, a line per
//! finished step, in whichever account the client points at.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use porter_core::execution::{Bake, Progress, RegionReport, Report};
use porter_core::pack::DeployInput;
use porter_core::release::Release;

use crate::one_line;

/// How a deploy execution ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub execution_arn: String,
    pub succeeded: bool,
    /// The release deployed, when the execution succeeded.
    pub release: Option<Release>,
    pub regions: BTreeMap<String, RegionReport>,
    /// The error name and cause, when it did not.
    pub error: Option<(String, String)>,
    pub transitions: usize,
    /// Lambda invocations the execution scheduled (a retry is another).
    pub invocations: usize,
    pub wall: Duration,
}

/// What a person's deploy from a folder hands the state machine: the
/// source, the folder as its provenance, the `${VAR}`s the config names
/// from the shell, and the installation's artifact bucket and key.
pub fn input_from_folder(
    environment: &str,
    source: porter_core::pack::Source,
    repo: &std::path::Path,
    installation: &crate::account::Installation,
    asked: &Asked,
) -> DeployInput {
    use porter_core::config;
    DeployInput {
        pack: porter_core::pack::PackInput {
            environment: environment.to_owned(),
            source,
            provenance: porter_core::release::Provenance {
                repository: Some(repo.display().to_string()),
                branch: None,
                commit: None,
            },
            image: None,
            artifact_bucket: Some(installation.artifact_bucket.clone()),
            sse_kms_key_id: installation.artifact_key.clone(),
            variables: config::shell_variables(&config::locate(repo).0, &asked.vars),
            image_parameter: None,
            allowed_references: Vec::new(),
            rollout: asked.rollout.clone(),
            longest_bake_seconds: None,
        },
        keep: asked.keep,
        wait_for_lease: asked.wait_for_lease,
    }
}

/// What a person asks of a deploy beyond its source.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// Unpromoted stacks prune keeps.
    pub keep: u32,
    /// Wait for another deploy's lease instead of failing at once.
    pub wait_for_lease: bool,
    /// This deploy's rollout over the environment's.
    pub rollout: Option<porter_core::config::RolloutOverride>,
    /// Secret-like variables to send from the shell (`--var`).
    pub vars: Vec<String>,
}

/// Starts the deploy state machine with `input`; the execution's ARN.
pub async fn start(sfn: &aws_sdk_sfn::Client, machine: &str, name: &str, input: &DeployInput) -> Result<String> {
    let out = sfn
        .start_execution()
        .state_machine_arn(machine)
        .name(name)
        .input(serde_json::to_string(input)?)
        .send()
        .await
        .map_err(|e| one_line(&format!("start the deploy state machine {machine}"), e))?;
    Ok(out.execution_arn().to_owned())
}

/// An execution name for a deploy or rollback started by hand: the
/// service, the environment and the time, within Step Functions' 80.
pub fn execution_name(service: &str, environment: &str, kind: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = format!("{service}-{environment}-{kind}-{millis}");
    let keep = name.len().saturating_sub(80);
    name[keep..].to_string()
}

/// The longest a follower stays silent: a bake of hours, or a stack that
/// takes its time, still gets a line a minute.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// What a follower prints when nothing new happened for [`HEARTBEAT`]: a
/// bake says how long it has left, by the follower's own clock from its
/// last read (no extra read of the state machine's), anything else how
/// long since its last line, and that line's phase.
#[derive(Debug)]
struct Heartbeat {
    last_line: Instant,
    last: Option<String>,
    bake: Option<(Bake, Instant)>,
}

impl Heartbeat {
    fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            last_line: now,
            last: None,
            bake: None,
        }
    }

    /// A line was printed for `p` at `now`.
    fn saw(&mut self, p: &Progress, line: &str, now: Instant) {
        self.last_line = now;
        // Its phase only: a heartbeat never repeats a step's own words.
        self.last = line.split_whitespace().next().map(str::to_owned);
        self.bake = match p {
            Progress::Baking(b) if !b.done => Some((b.clone(), now)),
            _ => None,
        };
    }

    /// The line to print at `now`, if the follower has been silent long.
    fn due(&mut self, now: Instant) -> Option<String> {
        if now.duration_since(self.last_line) < HEARTBEAT {
            return None;
        }
        let quiet = now.duration_since(self.last_line).as_secs();
        self.last_line = now;
        Some(match (&self.bake, &self.last) {
            (Some((bake, read_at)), _) => bake.still(now.duration_since(*read_at).as_secs() as u32),
            (None, Some(phase)) => format!("{:<9} running, {quiet} s since the last line ({phase})", "still"),
            (None, None) => format!(
                "{:<9} {quiet} s since the deploy started; nothing has finished yet",
                "still"
            ),
        })
    }
}

/// Follows an execution until it ends, writing a line per finished step
/// (and one at least every [`HEARTBEAT`] while nothing finishes).
pub async fn follow(
    sfn: &aws_sdk_sfn::Client,
    arn: &str,
    started: Instant,
    limit: Duration,
    poll: Duration,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let mut seen = 0usize;
    let mut transitions = 0usize;
    let mut invocations = 0usize;
    let deadline = Instant::now() + limit;
    let mut heartbeat = Heartbeat::new(Instant::now());
    let described = loop {
        // Status first, then history: once the status is final, the history
        // read after it holds every event.
        let d = crate::describe_execution(sfn, arn).await?;
        let events = history(sfn, arn).await?;
        for e in events.iter().skip(seen) {
            if entered(e) {
                transitions += 1;
            }
            if invoked(e) {
                invocations += 1;
            }
            for p in exited(e) {
                let line = p.line();
                writeln!(out, "{line}")?;
                heartbeat.saw(&p, &line, Instant::now());
            }
        }
        seen = events.len();
        if let Some(line) = heartbeat.due(Instant::now()) {
            writeln!(out, "{line}")?;
        }
        if d.status().as_str() != "RUNNING" {
            break d;
        }
        if Instant::now() > deadline {
            bail!(
                "the execution is still running after {} minutes: {arn} (it goes on; `porter status` shows where it is)",
                limit.as_secs() / 60
            );
        }
        tokio::time::sleep(poll).await;
    };
    outcome_from(&described, arn, (transitions, invocations), started.elapsed())
}

/// Reads a finished execution: its report or error, its transitions and
/// invocations.
pub async fn outcome_of(sfn: &aws_sdk_sfn::Client, arn: &str, wall: Duration) -> Result<Outcome> {
    let described = crate::describe_execution(sfn, arn).await?;
    let events = history(sfn, arn).await?;
    let counts = (
        events.iter().filter(|e| entered(e)).count(),
        events.iter().filter(|e| invoked(e)).count(),
    );
    outcome_from(&described, arn, counts, wall)
}

fn outcome_from(
    described: &aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput,
    arn: &str,
    (transitions, invocations): (usize, usize),
    wall: Duration,
) -> Result<Outcome> {
    let succeeded = described.status().as_str() == "SUCCEEDED";
    let report = if succeeded {
        Some(
            Report::parse(described.output().unwrap_or_default())
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("execution {arn} succeeded"))?,
        )
    } else {
        None
    };
    let error = (!succeeded).then(|| {
        (
            described.error().unwrap_or(described.status().as_str()).to_owned(),
            porter_core::execution::readable_cause(described.cause().unwrap_or("no cause given")),
        )
    });
    let (release, regions) = match report {
        Some(r) => (Some(r.release), r.regions),
        None => (None, BTreeMap::new()),
    };
    Ok(Outcome {
        execution_arn: arn.to_owned(),
        succeeded,
        release,
        regions,
        error,
        transitions,
        invocations,
        wall,
    })
}

pub use porter_core::history::exited;
use porter_core::history::{entered, invoked};

/// Every event of an execution, oldest first.
pub async fn history(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<Vec<aws_sdk_sfn::types::HistoryEvent>> {
    Ok(porter_core::history::events(sfn, arn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bake(baked: u32, done: bool) -> Bake {
        Bake {
            regions: vec!["us-west-2".into(), "us-east-1".into()],
            canary: false,
            bake_seconds: 3600,
            baked,
            next_wait: 900,
            done,
            alarms: vec!["errors in us-west-2".into()],
        }
    }

    #[test]
    fn a_long_bake_gets_a_line_a_minute_with_the_time_left_by_the_followers_clock() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(t0);
        assert_eq!(
            h.due(t0 + Duration::from_secs(59)),
            None,
            "quiet for less than a minute"
        );
        let started = Progress::Baking(bake(0, false));
        h.saw(&started, &started.line(), t0 + Duration::from_secs(10));
        assert_eq!(h.due(t0 + Duration::from_secs(69)), None);
        assert_eq!(
            h.due(t0 + Duration::from_secs(70)).as_deref(),
            Some("bake      wave us-west-2, us-east-1: baking, about 3540 s left (60 s since the last read)")
        );
        assert_eq!(
            h.due(t0 + Duration::from_secs(100)),
            None,
            "a minute after the last line, not the read"
        );
        assert_eq!(
            h.due(t0 + Duration::from_secs(130)).as_deref(),
            Some("bake      wave us-west-2, us-east-1: baking, about 3480 s left (120 s since the last read)")
        );
        // The bake passed: what follows says how long since its last line.
        let passed = Progress::Baking(bake(3600, true));
        h.saw(&passed, &passed.line(), t0 + Duration::from_secs(140));
        let line = h.due(t0 + Duration::from_secs(200)).unwrap();
        assert_eq!(line, "still     running, 60 s since the last line (bake)");
    }

    #[test]
    fn nothing_finished_yet_still_says_so_each_minute() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(t0);
        let line = h.due(t0 + Duration::from_secs(61)).unwrap();
        assert!(line.contains("61 s since the deploy started"), "{line}");
    }
}
