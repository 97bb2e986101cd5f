//! How a deploy or rollback runs, and how its end is printed: shared by
//! the commands against AWS and those against the local stack.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use porter_ops::follow::Outcome;

/// How a deploy or rollback runs.
#[derive(Args, Debug, Clone)]
pub(crate) struct Run {
    /// Unpromoted stacks prune keeps.
    #[arg(long, default_value_t = 0)]
    pub keep: u32,
    /// When another deploy of this service and environment runs, wait for
    /// it instead of failing at once.
    #[arg(long)]
    pub wait_for_lease: bool,
    /// This deploy's bake after each wave, over the environment's rollout.
    #[arg(long)]
    pub bake_seconds: Option<u32>,
    /// A CloudWatch alarm to watch in each region of a wave (repeat for
    /// more), instead of the environment's rollout alarms.
    #[arg(long = "alarm")]
    pub alarms: Vec<String>,
    /// Canary instances per region, registered beside the serving fleet
    /// and baked before each wave's full cutover (0: none).
    #[arg(long = "canary-instances")]
    pub canary_instances: Option<u32>,
    /// A secret-like variable (`*TOKEN*`, `*SECRET*`, `*_KEY`, AWS
    /// credentials ...) the config names, to send from this shell: without
    /// it such a variable stays here (repeat for more).
    #[arg(long = "var", value_name = "NAME")]
    pub vars: Vec<String>,
    /// This deploy's waves, over the environment's (`rollback --fast`:
    /// every region in one).
    #[arg(skip)]
    pub waves: Option<Vec<Vec<String>>>,
}

impl Run {
    /// The rollout override the flags ask for, if any.
    pub(crate) fn rollout(&self) -> Option<porter_core::config::RolloutOverride> {
        let any = self.bake_seconds.is_some()
            || !self.alarms.is_empty()
            || self.canary_instances.is_some()
            || self.waves.is_some();
        any.then(|| porter_core::config::RolloutOverride {
            waves: self.waves.clone(),
            bake_seconds: self.bake_seconds,
            alarms: (!self.alarms.is_empty()).then(|| self.alarms.clone()),
            canary_instances: self.canary_instances,
        })
    }
}

/// Prints how a deploy or rollback ended; the exit code says the same.
pub(crate) fn report(outcome: &Outcome, verb: &str) -> ExitCode {
    let mut out = std::io::stdout();
    if !outcome.succeeded {
        let (error, cause) = outcome.error.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "\nFAILED after {:.1}s, {} state transitions\n  error: {error}\n  cause: {cause}",
            outcome.wall.as_secs_f64(),
            outcome.transitions
        );
        return ExitCode::FAILURE;
    }
    let release = outcome.release.as_ref();
    if !outcome.regions.is_empty() && outcome.regions.values().all(|r| r.already_live) {
        // The weekly build of an unchanged source on an unchanged image.
        let _ = writeln!(
            out,
            "\nrelease {} was already live in every region: nothing changed ({:.1}s, {} state transitions)",
            release.map_or("?", |r| r.version.as_str()),
            outcome.wall.as_secs_f64(),
            outcome.transitions
        );
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "\n{verb} {} release {} in {:.1}s using {} state transitions and {} Lambda invocations",
        release.map_or("?", |r| r.service.as_str()),
        release.map_or("?", |r| r.version.as_str()),
        outcome.wall.as_secs_f64(),
        outcome.transitions,
        outcome.invocations
    );
    for (region, r) in &outcome.regions {
        let _ = writeln!(
            out,
            "  {region:<10} promoted {}  InService: {}",
            r.stack_name,
            r.in_service.join(", ")
        );
        if !r.taken_out.is_empty() {
            let _ = writeln!(
                out,
                "  {:<10} cut over {} previous instance(s) out: {}",
                "",
                r.taken_out.len(),
                r.taken_out.join(", ")
            );
        }
        if !r.deleted.is_empty() {
            let deleted = porter_core::prune::named_and_counted(&r.deleted, r.deleted_more);
            let _ = writeln!(out, "  {:<10} pruned   {deleted}", "");
        }
        if !r.rollback.is_empty() {
            let _ = writeln!(
                out,
                "  {:<10} kept     {} (the rollback target)",
                "",
                r.rollback.join(", ")
            );
        }
    }
    ExitCode::SUCCESS
}
