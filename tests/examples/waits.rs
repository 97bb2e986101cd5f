//! `make bench`: provision's checks of a stack (`phase::stack_wait`), how
//! late each one notices the stack's end, and what the checks cost: for a
//! stack held `HOLD` seconds, and for stacks of 1, 10 and 20 minutes.
//!
//! Usage: waits HOLD

use porter_core::phase::stack_wait;

/// The states of provision's loop per wait: Wait, the call (for every
/// region still pending at once), its Choice.
const TRANSITIONS_PER_WAIT: u64 = 3;
/// Step Functions (standard) per state transition, in US dollars: $0.025
/// per 1,000.
const DOLLARS_PER_TRANSITION: f64 = 0.025 / 1000.0;
/// Lambda per call of provision's resume (about 100 ms at 128 MB, arm64:
/// $0.20 per million requests and $0.0000133334 per GB-second).
const DOLLARS_PER_CALL: f64 = 0.20 / 1_000_000.0 + 0.1 * 0.125 * 0.000_013_333_4;

/// The ages at which provision checks a stack until it sees it end
/// after `seconds`: the first check at once, then one after each wait.
fn checks(seconds: u64) -> Vec<u64> {
    let mut at = vec![0];
    let mut age = 0;
    while age < seconds {
        age += u64::from(stack_wait(at.len() as u32 - 1));
        at.push(age);
    }
    at
}

fn main() {
    let hold: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("HOLD: whole seconds"))
        .expect("HOLD seconds");
    for seconds in [hold, 60, 600, 1200] {
        let at = checks(seconds);
        let waits = at.len() as u64 - 1;
        let lag = at.last().copied().unwrap_or(0) - seconds;
        let transitions = 2 + TRANSITIONS_PER_WAIT * waits;
        let cost = (transitions as f64).mul_add(DOLLARS_PER_TRANSITION, waits as f64 * DOLLARS_PER_CALL);
        println!(
            "    a {seconds} s stack: noticed {lag} s after it ends; {waits} waits, {transitions} transitions in provision's loop however many regions, about ${cost:.4} per deploy"
        );
    }
}
