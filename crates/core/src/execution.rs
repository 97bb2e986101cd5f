//! One reading of a deploy execution: its input, the steps it has finished
//! and its output, typed. The `pipeline` action, `porter deploy`, `status`
//! and `history` all read executions through this module, so they cannot
//! drift apart; the state names are the ones `statemachines/deploy.asl.json`
//! uses.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::pack::{DeployInput, Source};
use crate::phase::{Phase, Step};
use crate::promote::{Promoted, RegionPromoted};
use crate::provision::Provisioned;
use crate::prune::{Pruned, RegionPruned};
use crate::release::Release;

/// The error an abort stops an execution with: its undo (the promote
/// function's, on the infra's rule for aborted executions) puts back what
/// it cut over and deletes the stacks its release made.
pub const ABORTED: &str = "Aborted";

/// The error `porter abort --keep-stacks` stops an execution with: the
/// same undo, which keeps the release's stacks (to debug them).
pub const ABORTED_KEEP_STACKS: &str = "AbortedKeepStacks";

/// State names of the deploy state machine that readers look for.
pub mod state {
    pub const PACK: &str = "Pack";
    /// The alarm gate's reads of a wave's bake: when it starts, then
    /// after each stretch.
    pub const GATE: [&str; 2] = ["ArmGate", "CheckGate"];
    /// Each regional phase is one call for all its regions (a wave's, for
    /// promote), then calls that resume the regions still pending.
    pub const PROVISION: [&str; 2] = ["Provision", "ProvisionResume"];
    pub const PROMOTE: [&str; 2] = ["PromoteWave", "PromoteResume"];
    pub const PRUNE: [&str; 2] = ["Prune", "PruneResume"];

    /// The states that call a regional phase; none for pack, which
    /// [`PACK`] names alone.
    pub fn of(phase: super::Phase) -> &'static [&'static str] {
        match phase {
            super::Phase::Pack => &[],
            super::Phase::Provision => &PROVISION,
            super::Phase::Promote => &PROMOTE,
            super::Phase::Prune => &PRUNE,
        }
    }

    /// The regional phase a state calls.
    pub fn regional_phase(state: &str) -> Option<super::Phase> {
        super::Phase::REGIONAL.into_iter().find(|p| of(*p).contains(&state))
    }
}

/// What one finished state of an execution says, for a person watching.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Packed(Box<Release>),
    Waiting {
        phase: Phase,
        wait_seconds: u32,
        /// The phase's own line: it names the regions still pending.
        progress: String,
    },
    Provisioned {
        region: String,
        stack_name: String,
    },
    Promoted {
        region: String,
        promoted: RegionPromoted,
    },
    Pruned {
        region: String,
        pruned: RegionPruned,
    },
    /// A read of a wave's bake (when it starts, and after each stretch):
    /// what it watches and how long it has left.
    Baking(Bake),
}

/// One read of a wave's bake, from the gate's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Bake {
    pub regions: Vec<String>,
    /// The bake after the wave's canaries, not its full cutover.
    pub canary: bool,
    pub bake_seconds: u32,
    pub baked: u32,
    /// The wait before the next read (0 when the bake is over).
    pub next_wait: u32,
    pub done: bool,
    /// The alarms read, as `name in region`.
    pub alarms: Vec<String>,
}

impl Bake {
    /// Seconds of the bake left.
    pub fn left(&self) -> u32 {
        self.bake_seconds.saturating_sub(self.baked)
    }

    /// The bake `since` seconds after this read, by the reader's own
    /// clock: what a follower prints between the gate's reads.
    pub fn still(&self, since: u32) -> String {
        let what = if self.canary { "canaries of" } else { "wave" };
        format!(
            "{:<9} {what} {}: baking, about {} s left ({} s since the last read)",
            "bake",
            self.regions.join(", "),
            self.left().saturating_sub(since),
            since
        )
    }

    fn line(&self) -> String {
        let what = if self.canary { "canaries of" } else { "wave" };
        let watching = if self.alarms.is_empty() {
            "no alarms".to_owned()
        } else {
            format!("alarms {}", self.alarms.join(", "))
        };
        let regions = self.regions.join(", ");
        if self.done {
            format!(
                "{:<9} {what} {regions}: baked {} s watching {watching}: passed",
                "bake", self.bake_seconds
            )
        } else {
            format!(
                "{:<9} {what} {regions}: baking, {} of {} s done, {} s left, watching {watching}; next read in {} s",
                "bake",
                self.baked,
                self.bake_seconds,
                self.left(),
                self.next_wait
            )
        }
    }
}

#[derive(Deserialize)]
struct PackExit {
    packed: PackedRelease,
}

#[derive(Deserialize)]
struct PackedRelease {
    release: Release,
}

/// A regional call's step in its state's output: `$.<phase>.result`, for
/// all the regions of the call.
fn step_in(phase: Phase, output: &Value) -> Option<&Value> {
    output.get(phase.name())?.get("result")
}

impl Progress {
    /// Reads a `StateExited` event (its state name and output): nothing
    /// for states that say nothing of progress, or an output it cannot
    /// read; one entry per region a finished phase call covered.
    pub fn read(state: &str, output: &str) -> Vec<Progress> {
        Progress::try_read(state, output).unwrap_or_default()
    }

    fn try_read(state: &str, output: &str) -> Option<Vec<Progress>> {
        if state == state::PACK {
            let exit: PackExit = serde_json::from_str(output).ok()?;
            return Some(vec![Progress::Packed(Box::new(exit.packed.release))]);
        }
        if state::GATE.contains(&state) {
            return Some(vec![Progress::Baking(Progress::read_bake(output)?)]);
        }
        let phase = state::regional_phase(state)?;
        let output: Value = serde_json::from_str(output).ok()?;
        let step = step_in(phase, &output)?;
        // The call's output when it finished, else its wait and its line.
        fn done<O: serde::de::DeserializeOwned>(step: &Value) -> Option<Result<O, (u32, String)>> {
            Some(match Step::<Value, O>::deserialize(step).ok()? {
                Step::Done { output } => Ok(output),
                Step::Pending {
                    wait_seconds, progress, ..
                } => Err((wait_seconds, progress)),
            })
        }
        // A line per region the call covered.
        fn per_region<T>(by_region: BTreeMap<String, T>, line: fn(String, T) -> Progress) -> Vec<Progress> {
            by_region.into_iter().map(|(r, v)| line(r, v)).collect()
        }
        let finished = match phase {
            Phase::Pack => return None,
            Phase::Provision => done::<Provisioned>(step)?.map(|o| {
                per_region(o.stacks, |region, s| Progress::Provisioned {
                    region,
                    stack_name: s.stack_name,
                })
            }),
            Phase::Promote => done::<Promoted>(step)?
                .map(|o| per_region(o.regions, |region, promoted| Progress::Promoted { region, promoted })),
            Phase::Prune => done::<Pruned>(step)?
                .map(|o| per_region(o.regions, |region, pruned| Progress::Pruned { region, pruned })),
        };
        Some(finished.unwrap_or_else(|(wait_seconds, progress)| {
            vec![Progress::Waiting {
                phase,
                wait_seconds,
                progress,
            }]
        }))
    }

    /// A gate state's output: the wave's item (its regions, whether it is
    /// the canaries' bake, the release and its rollout) with the gate's
    /// answer.
    fn read_bake(output: &str) -> Option<Bake> {
        #[derive(Deserialize)]
        struct Item {
            wave: Vec<String>,
            #[serde(default)]
            canary: bool,
            release: Release,
            gate: Gate,
        }
        #[derive(Deserialize)]
        struct Gate {
            #[serde(default)]
            armed: Option<Vec<crate::gate::Reading>>,
            #[serde(default)]
            baked: u32,
            #[serde(default)]
            next_wait: u32,
            #[serde(default)]
            done: bool,
        }
        let item: Item = serde_json::from_str(output).ok()?;
        let mut alarms: Vec<String> = item
            .gate
            .armed
            .unwrap_or_default()
            .into_iter()
            .map(|r| format!("{} in {}", r.alarm, r.region))
            .collect();
        alarms.sort();
        Some(Bake {
            regions: item.wave,
            canary: item.canary,
            bake_seconds: item.release.rollout.bake_seconds,
            baked: item.gate.baked,
            next_wait: item.gate.next_wait,
            done: item.gate.done,
            alarms,
        })
    }

    /// One line for a person watching a deploy.
    pub fn line(&self) -> String {
        match self {
            Progress::Baking(bake) => bake.line(),
            Progress::Packed(r) => format!(
                "{:<9} packed {} release {} for {}",
                "pack",
                r.service,
                r.version,
                r.regions.join(", ")
            ),
            Progress::Waiting {
                phase,
                wait_seconds,
                progress,
            } => format!("{:<9} waiting {wait_seconds}s: {progress}", phase.name()),
            Progress::Provisioned { region, stack_name } => {
                format!("{:<9} {region:<10} stack {stack_name} CREATE_COMPLETE", "provision")
            }
            Progress::Promoted { region, promoted } if !promoted.canaries.is_empty() => format!(
                "{:<9} {region:<10} {} canary: {} serving beside the previous release",
                "promote",
                promoted.stack_name,
                promoted.canaries.join(", ")
            ),
            Progress::Promoted { region, promoted } => format!(
                "{:<9} {region:<10} {} promoted: {} instance(s) serving, {} previous instance(s) taken out",
                "promote",
                promoted.stack_name,
                promoted.elbs.iter().map(|e| e.in_service.len()).sum::<usize>(),
                promoted.deregistered.len()
            ),
            Progress::Pruned { region, pruned } if pruned.deleted.is_empty() => {
                format!("{:<9} {region:<10} nothing to delete", "prune")
            }
            Progress::Pruned { region, pruned } => {
                format!("{:<9} {region:<10} deleted {}", "prune", pruned.deleted_line())
            }
        }
    }
}

/// How far an execution has come, from its finished states: one line and
/// a percentage (CodePipeline shows both while the action runs).
pub fn summary<'a>(events: impl IntoIterator<Item = &'a Progress>) -> (String, u8) {
    let mut regions = None;
    let mut done: BTreeMap<Phase, usize> = BTreeMap::new();
    // The last read of a bake, while it goes on: the summary says so.
    let mut baking: Option<&Bake> = None;
    for p in events {
        let phase = match p {
            Progress::Packed(r) => {
                regions = Some(r.regions.len());
                continue;
            }
            Progress::Baking(b) => {
                baking = (!b.done).then_some(b);
                continue;
            }
            // A canary step is not yet the region's cutover.
            Progress::Waiting { .. } => continue,
            Progress::Promoted { promoted, .. } if !promoted.canaries.is_empty() => continue,
            Progress::Provisioned { .. } => Phase::Provision,
            Progress::Promoted { .. } => Phase::Promote,
            Progress::Pruned { .. } => Phase::Prune,
        };
        *done.entry(phase).or_default() += 1;
    }
    let Some(regions) = regions else {
        return ("packing".into(), 5);
    };
    let r = regions.max(1);
    let count = |phase| done.get(&phase).copied().unwrap_or(0);
    let parts: Vec<String> = Phase::REGIONAL
        .iter()
        .map(|&p| format!("{} {}/{regions}", p.name(), count(p)))
        .collect();
    let finished: usize = Phase::REGIONAL.iter().map(|&p| count(p).min(r)).sum();
    let bake = baking
        .map(|b| format!("; baking {}: {} s left", b.regions.join(", "), b.left()))
        .unwrap_or_default();
    (
        format!("pack done; {} regions{bake}", parts.join(", ")),
        (10 + 85 * finished / (3 * r)) as u8,
    )
}

/// An execution's failure cause for a person: a Lambda error object the
/// state machine passed on as it was (`{"errorMessage": ..., "errorType":
/// ...}`, wherever it sits in the cause) becomes its message. Anything else
/// is kept as it is.
pub fn readable_cause(cause: &str) -> String {
    let mut out = String::with_capacity(cause.len());
    let mut rest = cause;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let mut values = serde_json::Deserializer::from_str(&rest[at..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) if v.get("errorMessage").and_then(|m| m.as_str()).is_some() => {
                out.push_str(v["errorMessage"].as_str().unwrap_or_default());
                rest = &rest[at + values.byte_offset()..];
            }
            _ => {
                out.push('{');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What a deploy did in one region, from its output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionReport {
    pub stack_name: String,
    pub stack_id: String,
    /// The first ELB's DNS name.
    pub dns_name: Option<String>,
    pub in_service: Vec<String>,
    /// The previous release's instances that cutover took out.
    pub taken_out: Vec<String>,
    /// The first stacks prune deleted ([`crate::prune::NAMES_LISTED`]).
    pub deleted: Vec<String>,
    /// How many more it deleted.
    pub deleted_more: usize,
    /// Kept by prune as what a rollback goes back to.
    pub rollback: Vec<String>,
    /// The release was serving here already: nothing changed.
    pub already_live: bool,
}

/// A successful deploy's output (the `Deployed` state's).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub release: Release,
    pub regions: BTreeMap<String, RegionReport>,
}

#[derive(Deserialize)]
struct Output {
    release: Release,
    /// Promote's regions, wave by wave.
    #[serde(default)]
    waves: Vec<WaveItem>,
    #[serde(default)]
    pruned: BTreeMap<String, RegionPruned>,
}

#[derive(Deserialize)]
struct WaveItem {
    promoted: BTreeMap<String, RegionPromoted>,
}

impl Report {
    pub fn parse(output: &str) -> Result<Report, String> {
        let out: Output =
            serde_json::from_str(output).map_err(|e| format!("the deploy's output is not one porter writes: {e}"))?;
        let mut regions: BTreeMap<String, RegionReport> = BTreeMap::new();
        for (region, p) in out.waves.into_iter().flat_map(|w| w.promoted) {
            let r = regions.entry(region).or_default();
            r.dns_name = p.elbs.iter().find_map(|e| e.dns_name.clone());
            r.in_service = p.elbs.into_iter().flat_map(|e| e.in_service).collect();
            r.stack_name = p.stack_name;
            r.stack_id = p.stack_id;
            r.taken_out = p.deregistered;
            r.already_live = p.already_live;
        }
        for (region, p) in out.pruned {
            let r = regions.entry(region).or_default();
            r.deleted_more = p.deleted_more;
            r.deleted = p.deleted;
            r.rollback = p.rollback;
        }
        Ok(Report {
            release: out.release,
            regions,
        })
    }

    /// Whether the release was serving in every region already (a deploy
    /// of nothing new: the weekly build when neither source nor image
    /// changed).
    pub fn nothing_changed(&self) -> bool {
        !self.regions.is_empty() && self.regions.values().all(|r| r.already_live)
    }

    /// One line for the end of a deploy.
    pub fn summary(&self) -> String {
        if self.nothing_changed() {
            format!(
                "release {} was already live in every region ({}): nothing changed",
                self.release.version,
                self.release.regions.join(", ")
            )
        } else {
            format!(
                "deployed release {} to {} region(s)",
                self.release.version,
                self.release.regions.len()
            )
        }
    }

    /// CodePipeline output variables: the release, and per region the
    /// promoted stack's name (as the phase actions give it) and ARN, and
    /// the load balancer's DNS name.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let r = &self.release;
        let mut vars = BTreeMap::from([
            ("version".to_owned(), r.version.clone()),
            ("revision".to_owned(), r.revision.clone()),
            ("sha256".to_owned(), r.sha256.clone()),
            ("release".to_owned(), r.record.url()),
        ]);
        for (region, p) in &self.regions {
            vars.insert(format!("stack_{region}"), p.stack_name.clone());
            vars.insert(format!("stack_id_{region}"), p.stack_id.clone());
            if let Some(dns) = &p.dns_name {
                vars.insert(format!("elb_dns_{region}"), dns.clone());
            }
        }
        vars
    }
}

/// What an execution was asked to do, from its input.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// A deploy of new source.
    Deploy {
        environment: String,
        commit: Option<String>,
    },
    /// A release packed before, promoted again: the rollback.
    Rollback { environment: String, version: String },
}

impl Intent {
    /// `None` when the input is not a deploy's (another state machine's).
    pub fn read(input: &str) -> Option<Intent> {
        let i: DeployInput = serde_json::from_str(input).ok()?;
        Some(match i.pack.source {
            Source::Release { version, .. } => Intent::Rollback {
                environment: i.pack.environment,
                version,
            },
            _ => Intent::Deploy {
                environment: i.pack.environment,
                commit: i.pack.provenance.commit,
            },
        })
    }

    pub fn environment(&self) -> &str {
        match self {
            Intent::Deploy { environment, .. } | Intent::Rollback { environment, .. } => environment,
        }
    }
}

/// The phase a failed deploy had reached, read from the state machine's
/// state at its failure path: what the state holds says how far it got
/// (`packed`, `lease`, provision's call done, `waves`). A hook's failure
/// is the hooks'. `None` while nothing failed.
pub fn phase_reached(state: &Value) -> Option<&'static str> {
    state.get("failure")?;
    Some(if state["failure"]["Error"] == "HookFailed" {
        "hooks"
    } else if state["packed"]["release"].is_null() {
        "pack"
    } else if state.get("lease").is_none() {
        "lease"
    } else if state["provision"]["result"]["status"] != "done" {
        "provision"
    } else if state.get("waves").is_none() {
        "promote"
    } else {
        "prune"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release() -> Value {
        let obj = |k: &str| json!({"bucket": "b", "key": k});
        json!({"service": "web", "environment": "prod", "version": "0123456789ab", "revision": "abc1234",
               "sha256": "s", "config_sha256": "c", "payload": obj("p"), "manifest": obj("m"),
               "config": obj("c"), "record": obj("r"), "regions": ["us-east-1", "eu-west-1"]})
    }

    #[test]
    fn a_deploy_output_reads_into_one_report_per_region_with_stack_names_not_arns() {
        let promoted = json!({"us-east-1": {
            "stack_id": "arn:aws:cloudformation:us-east-1:1:stack/web-prod-0123456789ab/x",
            "stack_name": "web-prod-0123456789ab",
            "elbs": [{"name": "e", "dns_name": "e.elb", "in_service": ["i-1", "i-2"]}],
            "deregistered": ["i-0"]}});
        let pruned = json!({"us-east-1": {"deleted": ["old"], "kept": ["prev"], "rollback": ["prev"]}});
        let output = json!({"release": release(), "waves": [{"promoted": promoted}], "pruned": pruned});
        let report = Report::parse(&output.to_string()).unwrap();
        let r = &report.regions["us-east-1"];
        assert_eq!(r.in_service, ["i-1", "i-2"]);
        assert_eq!(r.taken_out, ["i-0"]);
        assert_eq!(r.rollback, ["prev"]);
        let vars = report.variables();
        assert_eq!(vars["stack_us-east-1"], "web-prod-0123456789ab");
        assert!(vars["stack_id_us-east-1"].starts_with("arn:"));
        assert_eq!(vars["elb_dns_us-east-1"], "e.elb");
        assert_eq!(vars["release"], "s3://b/r");
        assert!(Report::parse("{\"release\": 1}")
            .unwrap_err()
            .contains("not one porter writes"));
    }

    #[test]
    fn progress_reads_each_phase_call_as_a_line_per_region_and_counts_regions_done() {
        let packed = Progress::read("Pack", &json!({"packed": {"release": release()}}).to_string());
        assert!(packed[0]
            .line()
            .contains("packed web release 0123456789ab for us-east-1, eu-west-1"));
        let pending = json!({"provision": {"result": {"status": "pending", "state": {},
            "wait_seconds": 10, "progress": "1/2 regions complete; waiting on us-east-1", "percent": 50}}});
        let waiting = Progress::read("ProvisionResume", &pending.to_string());
        assert_eq!(
            waiting.iter().map(Progress::line).collect::<Vec<_>>(),
            ["provision waiting 10s: 1/2 regions complete; waiting on us-east-1"]
        );
        let stack = |r: &str| json!({"stack_id": format!("arn:{r}"), "stack_name": "web-prod-0123456789ab"});
        let done = json!({"provision": {"result": {"status": "done", "output":
            {"stacks": {"us-east-1": stack("us-east-1"), "eu-west-1": stack("eu-west-1")}}}}});
        let provisioned = Progress::read("Provision", &done.to_string());
        assert_eq!(
            provisioned.iter().map(Progress::line).collect::<Vec<_>>(),
            [
                "provision eu-west-1  stack web-prod-0123456789ab CREATE_COMPLETE",
                "provision us-east-1  stack web-prod-0123456789ab CREATE_COMPLETE"
            ]
        );
        assert_eq!(Progress::read("LeaseTaken?", "{}"), []);
        assert_eq!(Progress::read("PromoteWave", "not json"), []);
        assert_eq!(
            Progress::read("Prune", "{\"prune\": {\"result\": {\"status\": \"odd\"}}}"),
            []
        );

        assert_eq!(summary([]).0, "packing");
        let (line, percent) = summary(packed.iter().chain(&waiting).chain(&provisioned[..1]));
        assert_eq!(line, "pack done; provision 1/2, promote 0/2, prune 0/2 regions");
        assert_eq!(percent, 10 + 85 / 6);
        let (line, _) = summary(packed.iter().chain(&provisioned));
        assert_eq!(line, "pack done; provision 2/2, promote 0/2, prune 0/2 regions");
    }

    /// A bake says what it does: each read of the gate is a line, with
    /// its wave, its time left and the alarms it watches.
    #[test]
    fn each_read_of_a_bake_is_a_line_and_the_summary_says_it_bakes() {
        let mut r = release();
        r["rollout"] = json!({"bake_seconds": 600, "alarms": ["errors"]});
        let armed = json!([{"region": "us-east-1", "alarm": "errors", "state": "OK", "updated_ms": 1}]);
        let read = |state: &str, baked: u32, done: bool| {
            Progress::read(
                state,
                &json!({"release": r, "wave": ["us-east-1"], "canary": false,
                        "gate": {"armed": armed, "baked": baked, "next_wait": if done {0} else {60}, "done": done}})
                .to_string(),
            )
        };
        let started = read("ArmGate", 0, false);
        assert_eq!(
            started[0].line(),
            "bake      wave us-east-1: baking, 0 of 600 s done, 600 s left, watching alarms errors in us-east-1; next read in 60 s"
        );
        let later = read("CheckGate", 540, false);
        let packed = Progress::read("Pack", &json!({"packed": {"release": release()}}).to_string());
        let (line, _) = summary(packed.iter().chain(&started).chain(&later));
        assert!(line.ends_with("; baking us-east-1: 60 s left"), "{line}");
        let passed = read("CheckGate", 600, true);
        assert!(passed[0].line().ends_with("passed"), "{}", passed[0].line());
        let (line, _) = summary(packed.iter().chain(&later).chain(&passed));
        assert!(!line.contains("baking"), "{line}");
    }

    #[test]
    fn the_phase_a_failure_reached_is_read_from_what_the_state_holds() {
        let failure = json!({"Error": "StackFailed", "Cause": "x"});
        let packed = json!({"release": release()});
        let pending = json!({"result": {"status": "pending"}});
        let done = json!({"result": {"status": "done"}});
        for (state, reached) in [
            (json!({"packed": {}, "failure": failure}), Some("pack")),
            (json!({"packed": packed, "failure": failure}), Some("lease")),
            (
                json!({"packed": packed, "lease": {}, "failure": failure}),
                Some("provision"),
            ),
            (
                json!({"packed": packed, "lease": {}, "provision": pending, "failure": failure}),
                Some("provision"),
            ),
            (
                json!({"packed": packed, "lease": {}, "provision": done, "failure": failure}),
                Some("promote"),
            ),
            (
                json!({"packed": packed, "lease": {}, "provision": done, "waves": [], "failure": failure}),
                Some("prune"),
            ),
            (
                json!({"packed": packed, "failure": {"Error": "HookFailed"}}),
                Some("hooks"),
            ),
            (json!({"packed": packed, "lease": {}}), None),
        ] {
            assert_eq!(phase_reached(&state), reached, "{state}");
        }
    }

    #[test]
    fn a_lambda_error_in_a_cause_reads_as_its_message() {
        let cause = r#"promote failed in us-east-1: {"errorMessage":"alarm gate in us-east-1: alarm errors is in ALARM","errorType":"GateFailed"} Every region the release reached serves the release it replaced again."#;
        assert_eq!(
            readable_cause(cause),
            "promote failed in us-east-1: alarm gate in us-east-1: alarm errors is in ALARM Every region the release reached serves the release it replaced again."
        );
        for kept in ["no JSON here", "{\"other\": 1} and {broken", "{"] {
            assert_eq!(readable_cause(kept), kept);
        }
    }

    #[test]
    fn the_input_says_deploy_or_rollback() {
        let deploy = json!({"environment": "prod", "source": {"s3": {"bucket": "b", "key": "k"}},
            "provenance": {"commit": "abc"}, "keep": 0, "wait_for_lease": false});
        assert_eq!(
            Intent::read(&deploy.to_string()),
            Some(Intent::Deploy {
                environment: "prod".into(),
                commit: Some("abc".into())
            })
        );
        let rollback =
            json!({"environment": "prod", "source": {"release": {"service": "web", "version": "0123456789ab"}}});
        assert_eq!(
            Intent::read(&rollback.to_string()),
            Some(Intent::Rollback {
                environment: "prod".into(),
                version: "0123456789ab".into()
            })
        );
        assert_eq!(Intent::read("{}"), None);
    }
}
