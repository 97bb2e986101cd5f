//! `make bench`: provision's schedule of checks (`phase::stack_wait`) for a
//! stack held `HOLD` seconds and for one that takes 10 minutes (the first
//! deploy, and one after a 10-minute stack), and the transitions a
//! 10-minute stack adds to a deploy measured with the held one.
//!
//! Usage: waits HOLD [MEASURED_TRANSITIONS REGIONS]

use porter_core::phase::stack_wait;

/// The states of provision's loop per wait: Wait, the call (for every
/// region still pending at once), its Choice.
const TRANSITIONS_PER_WAIT: u64 = 3;

/// The ages at which provision checks a stack until it sees it complete
/// after `seconds`: the first check at once, then one after each wait.
fn checks(seconds: u64, expected: u64) -> Vec<u64> {
    let mut at = vec![0];
    let mut age = 0;
    while age < seconds {
        age += stack_wait(at.len() as u32 - 1, age, expected) as u64;
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
    let held = checks(hold, 0);
    let ten = checks(600, 0);
    let ten_again = checks(600, 600);
    let waits = |c: &[u64]| c.len() as u64 - 1;
    println!(
        "    provision checks a {hold} s stack at {} s: {} waits",
        line(&held),
        waits(&held)
    );
    for (what, at) in [("the first", &ten), ("after a 10-minute one", &ten_again)] {
        println!(
            "    a 10-minute stack, {what}, at {} s: {} waits, {} transitions in provision's loop, however many regions ({TRANSITIONS_PER_WAIT} a wait, 2 for the first check)",
            line(at),
            waits(at),
            2 + TRANSITIONS_PER_WAIT * waits(at)
        );
    }
    if let [_, measured, regions] = args[..] {
        for (what, at) in [("the first", &ten), ("after a 10-minute one", &ten_again)] {
            let more = TRANSITIONS_PER_WAIT as i64 * (waits(at) as i64 - waits(&held) as i64);
            let total = measured as i64 + more;
            println!(
                "    derived: a deploy to {regions} regions whose stacks take 10 minutes, {what}: {measured} {} {} = {total} transitions, {} per region",
                if more < 0 { '-' } else { '+' },
                more.abs(),
                total / regions as i64
            );
        }
    }
}
