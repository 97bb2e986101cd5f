//! `make bench`: provision's schedule of checks (`phase::stack_wait`) for a
//! stack held `HOLD` seconds and for one that takes 10 minutes, and the
//! transitions a 10-minute stack adds to a deploy measured with the held one.
//!
//! Usage: waits HOLD [MEASURED_TRANSITIONS REGIONS]

use porter_core::phase::stack_wait;

/// The wait states of one region's provision loop: Wait, the step, its Choice.
const TRANSITIONS_PER_WAIT: u64 = 3;

/// The ages at which provision checks a stack until it sees it complete
/// after `seconds`: the first check at once, then one after each wait.
fn checks(seconds: u64) -> Vec<u64> {
    let mut at = vec![0];
    let mut age = 0;
    while age < seconds {
        age += stack_wait(at.len() as u32 - 1, age) as u64;
        at.push(age);
    }
    at
}

fn line(at: &[u64]) -> String {
    at.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("whole numbers: HOLD [MEASURED REGIONS]"))
        .collect();
    let hold = *args.first().expect("HOLD seconds");
    let held = checks(hold);
    let ten = checks(600);
    let waits = |c: &[u64]| c.len() as u64 - 1;
    println!(
        "    provision checks a {hold} s stack at {} s: {} waits",
        line(&held),
        waits(&held)
    );
    println!(
        "    a 10-minute stack at {} s: {} waits, {} transitions per region in provision's loop ({TRANSITIONS_PER_WAIT} a wait, 2 for the first check)",
        line(&ten),
        waits(&ten),
        2 + TRANSITIONS_PER_WAIT * waits(&ten)
    );
    if let [_, measured, regions] = args[..] {
        let more = regions * TRANSITIONS_PER_WAIT * (waits(&ten) - waits(&held));
        println!(
            "    derived: a deploy to {regions} regions whose stacks take 10 minutes: {measured} + {more} = {} transitions, {} per region",
            measured + more,
            (measured + more) / regions
        );
    }
}
