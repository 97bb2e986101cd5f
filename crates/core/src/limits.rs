//! How long the names porter makes may be, and how much of a Step
//! Functions history a deploy may use. A leaf: `validate` checks a config
//! against these before `release` and `template` make the names, and the
//! gate and the lease shape their waits by them.

/// Hex digits in a release version.
pub const VERSION_LEN: usize = 12;

/// CloudFormation's limit on a stack name.
pub const MAX_STACK_NAME: usize = 128;

/// Step Functions fails an execution outright at this many history events:
/// no Catch runs, so nothing is rolled back and the lease is not given
/// back. Every wait loop of the deploy state machine is shaped to stay
/// well inside it.
pub const HISTORY_EVENTS: u64 = 25_000;

/// Events one read of a bake costs: its Wait (entered, exited), the
/// gate's Task (entered, scheduled, started, succeeded, exited) and the
/// Choice after it (entered, exited).
pub const EVENTS_PER_BAKE_READ: u64 = 9;

/// What a deploy's bakes may spend of the history, all waves together.
pub const BAKE_EVENTS: u64 = 14_000;

/// Events one ask for the lease costs (the Task, the Choice, the Wait).
pub const EVENTS_PER_LEASE_ASK: u64 = 9;

/// What waiting for the lease may spend of the history.
pub const LEASE_WAIT_EVENTS: u64 = 3_000;

/// The rest of a deploy, at its largest: pack, the lease, provision's and
/// prune's calls and waits, promote's calls, hooks, notices and the undo.
/// Provision and prune wait on CloudFormation with waits that grow (their
/// own history is a few hundred events even for an hour's stack).
pub const OTHER_EVENTS: u64 = 6_000;

/// The longest stretch between two reads of a bake of `bake_seconds` in a
/// rollout of `bakes` bakes (waves, twice with canaries), such that all the
/// reads together stay inside [`BAKE_EVENTS`]: at least `floor` (a minute:
/// CloudWatch judges alarms per minute at best). A day's bake in one wave
/// is read every 1.6 minutes; in eight waves with canaries, every 12.
pub fn bake_stretch(bake_seconds: u32, bakes: u64, floor: u32) -> u32 {
    let reads = BAKE_EVENTS / EVENTS_PER_BAKE_READ;
    // Each bake reads once more than its stretches: when it is armed.
    let per_bake = (reads / bakes.max(1)).saturating_sub(1).max(1);
    let stretch = u64::from(bake_seconds).div_ceil(per_bake);
    u32::try_from(stretch).unwrap_or(u32::MAX).max(floor)
}

/// The history events a rollout's bakes use at most: each bake's arming
/// read, and a read after each stretch.
pub fn bake_events(bake_seconds: u32, bakes: u64, floor: u32) -> u64 {
    if bakes == 0 {
        return 0;
    }
    let stretch = u64::from(bake_stretch(bake_seconds, bakes, floor).max(1));
    let reads = 1 + u64::from(bake_seconds).div_ceil(stretch);
    bakes * reads * EVENTS_PER_BAKE_READ
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rollout `validate` allows (a day's bake, a wave per region of
    /// the largest environment, canaries) stays inside the history, with
    /// the lease wait and the rest of the deploy at their largest.
    #[test]
    fn no_allowed_rollout_comes_near_the_history_limit() {
        for waves in [1u64, 2, 8, 34] {
            for canary in [false, true] {
                let bakes = waves * if canary { 2 } else { 1 };
                for bake in [0, 60, 3_600, 86_400] {
                    let used = bake_events(bake, bakes, 60);
                    assert!(
                        used <= BAKE_EVENTS + bakes * 2 * EVENTS_PER_BAKE_READ,
                        "{waves} {canary} {bake}: {used}"
                    );
                    assert!(
                        used + LEASE_WAIT_EVENTS + OTHER_EVENTS < HISTORY_EVENTS,
                        "{waves} waves, canary {canary}, bake {bake}: {used}"
                    );
                }
            }
        }
        // Short bakes keep their minute.
        assert_eq!(bake_stretch(600, 1, 60), 60);
        // A day in one wave: read about every two minutes, not every one.
        assert!((60..=120).contains(&bake_stretch(86_400, 1, 60)));
    }
}
