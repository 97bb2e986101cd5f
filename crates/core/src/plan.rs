//! Pure decisions: blackout windows, which instances move at cutover, which
//! stacks prune deletes. No AWS here, so every rule has a unit test.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::config::{BlackoutWindow, Environment};

/// The active blackout window, if any. A window whose times do not parse or
/// whose start is after its end counts as active, as in porter: a broken
/// window must stop deploys rather than let them through.
pub fn active_blackout(env: &Environment, now: DateTime<Utc>) -> Option<&BlackoutWindow> {
    env.blackout_windows.iter().find(|w| {
        let start = DateTime::parse_from_rfc3339(&w.start_time);
        let end = DateTime::parse_from_rfc3339(&w.end_time);
        match (start, end) {
            (Ok(s), Ok(e)) => s > e || (now >= s && now <= e),
            _ => true,
        }
    })
}

/// The error a phase answers while a blackout window is active.
pub fn blackout(environment: &str, w: &BlackoutWindow) -> crate::phase::PhaseError {
    crate::phase::PhaseError::Blackout(format!(
        "environment `{environment}` is in a blackout window ({} to {}); deploy after it ends or change blackout_windows in .porter/config",
        w.start_time, w.end_time
    ))
}

/// The instance moves of one load balancer at cutover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutover {
    /// New instances not yet registered.
    pub register: Vec<String>,
    /// Registered instances that are not the new stack's: the old release.
    pub deregister: Vec<String>,
}

pub fn cutover(registered: &[String], new: &[String]) -> Cutover {
    let registered: BTreeSet<&String> = registered.iter().collect();
    let new_set: BTreeSet<&String> = new.iter().collect();
    Cutover {
        register: new_set.difference(&registered).map(|s| s.to_string()).collect(),
        deregister: registered.difference(&new_set).map(|s| s.to_string()).collect(),
    }
}

/// A stack as prune sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSummary {
    pub stack_id: String,
    pub stack_name: String,
    pub status: String,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrunePlan {
    /// Oldest first.
    pub delete: Vec<StackSummary>,
    /// With the reason each one stays.
    pub keep: Vec<(StackSummary, &'static str)>,
}

/// Why prune keeps the stack the live one replaced.
pub const ROLLBACK_TARGET: &str = "the rollback target";

/// Deletes the unpromoted stacks, oldest first, keeping the newest `keep` of
/// them. Never the promoted stack, never the one just deployed, never the
/// rollback target, never one whose status is still in progress, never one
/// already deleted. `protected`: the promoted stack and the release's own;
/// `rollback`: the stacks the promoted ones replaced.
pub fn prune(stacks: &[StackSummary], protected: &[String], rollback: &[String], keep: usize) -> PrunePlan {
    let mut plan = PrunePlan::default();
    let mut candidates = Vec::new();
    for s in stacks {
        if s.status == "DELETE_COMPLETE" {
            continue;
        }
        if protected.contains(&s.stack_id) || protected.contains(&s.stack_name) {
            plan.keep.push((s.clone(), "promoted or just deployed"));
        } else if rollback.contains(&s.stack_id) || rollback.contains(&s.stack_name) {
            plan.keep.push((s.clone(), ROLLBACK_TARGET));
        } else if s.status.ends_with("_IN_PROGRESS") {
            plan.keep.push((s.clone(), "still in progress"));
        } else {
            candidates.push(s.clone());
        }
    }
    // Newest first, so the first `keep` are the ones to keep.
    candidates.sort_by_key(|s| std::cmp::Reverse(s.created));
    for (i, s) in candidates.into_iter().enumerate() {
        if i < keep {
            plan.keep.push((s, "kept by --keep"));
        } else {
            plan.delete.push(s);
        }
    }
    plan.delete.sort_by_key(|s| s.created);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn env(windows: &[(&str, &str)]) -> Environment {
        Environment {
            name: "prod".into(),
            instance_type: "t3.micro".into(),
            rollout: Default::default(),
            stack_creation: Default::default(),
            blackout_windows: windows
                .iter()
                .map(|(s, e)| BlackoutWindow {
                    start_time: s.to_string(),
                    end_time: e.to_string(),
                })
                .collect(),
            regions: vec![],
        }
    }

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, 12, 0, 0).unwrap()
    }

    #[test]
    fn blackout_is_active_only_inside_the_window() {
        let e = env(&[("2026-12-24T00:00:00Z", "2026-12-26T00:00:00Z")]);
        assert!(active_blackout(&e, at(25)).is_some());
        assert!(active_blackout(&e, at(23)).is_none());
        assert!(active_blackout(&e, at(27)).is_none());
    }

    #[test]
    fn broken_or_inverted_windows_count_as_active() {
        assert!(active_blackout(&env(&[("not a time", "2026-12-26T00:00:00Z")]), at(1)).is_some());
        assert!(active_blackout(&env(&[("2026-12-26T00:00:00Z", "2026-12-24T00:00:00Z")]), at(1)).is_some());
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cutover_registers_new_and_removes_everything_else() {
        let c = cutover(&ids(&["i-old1", "i-old2", "i-new1"]), &ids(&["i-new1", "i-new2"]));
        assert_eq!(c.register, ids(&["i-new2"]));
        assert_eq!(c.deregister, ids(&["i-old1", "i-old2"]));
    }

    #[test]
    fn cutover_when_already_done_moves_nothing() {
        let c = cutover(&ids(&["i-new1"]), &ids(&["i-new1"]));
        assert!(c.register.is_empty() && c.deregister.is_empty());
    }

    fn stack(name: &str, status: &str, day: u32) -> StackSummary {
        StackSummary {
            stack_id: format!("arn:{name}"),
            stack_name: name.into(),
            status: status.into(),
            created: at(day),
        }
    }

    /// `r1` to `r{n}`, complete, `r{d}` created on day `d`.
    fn complete(n: u32) -> Vec<StackSummary> {
        (1..=n).map(|d| stack(&format!("r{d}"), "CREATE_COMPLETE", d)).collect()
    }

    /// The names of the stacks `plan` deletes, in its order.
    fn deleted(plan: &PrunePlan) -> Vec<&str> {
        plan.delete.iter().map(|s| s.stack_name.as_str()).collect()
    }

    /// Whether `plan` keeps the stack `name` for the reason `why`.
    fn keeps(plan: &PrunePlan, name: &str, why: &str) -> bool {
        plan.keep
            .iter()
            .any(|(s, reason)| s.stack_name == name && *reason == why)
    }

    #[test]
    fn prune_deletes_oldest_first_and_spares_promoted_and_in_progress() {
        let stacks: Vec<_> = [
            ("r3", "CREATE_COMPLETE", 3),
            ("r1", "CREATE_COMPLETE", 1),
            ("r4", "CREATE_IN_PROGRESS", 4),
            ("r2", "ROLLBACK_COMPLETE", 2),
            ("r5", "CREATE_COMPLETE", 5),
            ("r0", "DELETE_COMPLETE", 6),
        ]
        .into_iter()
        .map(|(name, status, day)| stack(name, status, day))
        .collect();
        let plan = prune(&stacks, &ids(&["arn:r5"]), &[], 0);
        assert_eq!(deleted(&plan), vec!["r1", "r2", "r3"]);
        assert_eq!(plan.keep.len(), 2);
    }

    #[test]
    fn prune_keeps_the_newest_n_unpromoted() {
        let plan = prune(&complete(3), &ids(&["r3"]), &[], 1);
        assert_eq!(deleted(&plan), vec!["r1"]);
        assert!(keeps(&plan, "r2", "kept by --keep"));
    }

    #[test]
    fn prune_keeps_the_rollback_target_besides_keep() {
        let stacks = complete(4);
        // r4 live, r2 the one it replaced (a rollback went back once), r3
        // the newest other: keep 1 keeps r3 and deletes only r1; r2 stays
        // whether the rollback names its id or its name.
        for (rollback, keep, want) in [("arn:r2", 1, vec!["r1"]), ("r2", 0, vec!["r1", "r3"])] {
            let plan = prune(&stacks, &ids(&["r4"]), &ids(&[rollback]), keep);
            assert_eq!(deleted(&plan), want, "rollback {rollback}, keep {keep}");
            assert!(
                keeps(&plan, "r2", "the rollback target"),
                "rollback {rollback}, keep {keep}"
            );
        }
    }
}
