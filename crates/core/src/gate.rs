//! The alarm gate of a rollout: after a wave's cutover the alarms of
//! `rollout.alarms` are read in each region of the wave (through the
//! region's deployment role: a state machine's own CloudWatch integration
//! sees only its own region), once when the bake starts ("armed"), then
//! after each stretch of the bake, which is a Wait. While alarms or
//! canaries are watched a stretch is [`WATCH_SECONDS`], so an alarm that
//! fires early in a long bake rolls the release back within a minute
//! instead of at the bake's end (CloudWatch evaluates alarms per minute at
//! best: reading more often would find nothing new); a rollout whose bakes
//! would read more often than the execution's history holds stretches
//! them ([`crate::limits::bake_stretch`]); with nothing to watch the bake
//! is one Wait.
//!
//! The gate fails when an alarm is in ALARM at either read, or when an
//! alarm that was OK when armed has changed state since (its state-updated
//! time is later): it fired and cleared, or lost its data, between the two
//! reads, and the release is not given the benefit of the doubt.
//! INSUFFICIENT_DATA does not fail the gate (AWS starts new alarms there,
//! and a metric with no data yet says nothing against the release); it is
//! reported as not judged. An alarm missing in a region is an error of the
//! config, found at the first read.
//!
//! After a canary step the gate also reads the canaries' health at each
//! ELB: a canary that is not InService (its service stopped answering, its
//! instance stopped or was replaced) fails the gate, naming it.

use serde::{Deserialize, Serialize};

use crate::aws;
use crate::phase::PhaseError;
use crate::promote;
use crate::target::{each_region, Deployment, Target};

/// One alarm as read in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    pub region: String,
    pub alarm: String,
    /// OK, ALARM or INSUFFICIENT_DATA.
    pub state: String,
    /// When the state last changed, in milliseconds since the epoch.
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateInput {
    #[serde(flatten)]
    pub target: Target,
    /// The readings when the bake started; none for the first read.
    #[serde(default)]
    pub armed: Option<Vec<Reading>>,
    /// The wave's canaries serve: check they are still InService.
    #[serde(default)]
    pub canary: bool,
    /// Seconds of the bake done before the Wait that just ended.
    #[serde(default)]
    pub baked: u32,
    /// The Wait that just ended.
    #[serde(default)]
    pub waited: u32,
    /// The execution baking: a bake of an execution that lost its deploy
    /// lease (an abort, a takeover) ends at its next read.
    #[serde(default)]
    pub execution: Option<String>,
}

/// The longest stretch of a bake between two reads while something is
/// watched.
pub const WATCH_SECONDS: u32 = 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gated {
    pub readings: Vec<Reading>,
    /// Alarms with no data yet, which the gate did not judge.
    pub not_judged: Vec<String>,
    /// The readings the bake is judged against (the first read's).
    pub armed: Vec<Reading>,
    /// Seconds of the bake done.
    pub baked: u32,
    /// The next stretch of the bake (0 when it is done).
    pub next_wait: u32,
    /// The bake is over and passed.
    pub done: bool,
}

/// The next stretch of a `bake`-second bake with `baked` done, in a
/// rollout of `bakes` bakes: the rest, or while something is watched at
/// most [`WATCH_SECONDS`], stretched so that every read of every bake
/// stays inside the execution's history ([`crate::limits::bake_stretch`]).
pub fn next_wait(bake: u32, baked: u32, watched: bool, bakes: u64) -> u32 {
    let rest = bake.saturating_sub(baked);
    if watched {
        rest.min(crate::limits::bake_stretch(bake, bakes, WATCH_SECONDS))
    } else {
        rest
    }
}

pub async fn run(aws: &aws::Aws, input: GateInput) -> Result<Gated, PhaseError> {
    let dep = Deployment::load(aws, &input.target).await?;
    if let Some(execution) = &input.execution {
        crate::lease::check_fence(aws, &dep.release.service, &dep.release.environment, execution).await?;
    }
    let regions = dep.pinned_regions(aws, &input.target).await?;
    let (dep, canary) = (&dep, input.canary);
    let per_region = each_region(regions, |region| async move {
        let alarms = dep.release.rollout.alarms_in(&region.name);
        if alarms.is_empty() && !canary {
            return Ok(Vec::new());
        }
        let clients = dep.clients(aws, region, "promote").await?;
        if canary {
            canaries_in_service(dep, &clients, region).await?;
        }
        read(&clients.cloudwatch, &region.name, alarms).await
    })
    .await?;
    let readings: Vec<Reading> = per_region.into_values().flatten().collect();
    decide(input.armed.as_deref(), &readings)?;
    let not_judged = readings
        .iter()
        .filter(|r| r.state == "INSUFFICIENT_DATA")
        .map(|r| format!("{} in {}", r.alarm, r.region))
        .collect();
    let watched = canary || !readings.is_empty();
    let bake = dep.release.rollout.bake_seconds;
    // The first read is always followed by another, even after no bake.
    let (armed, baked, done) = match input.armed {
        None => (readings.clone(), 0, false),
        Some(armed) => {
            let baked = input.baked.saturating_add(input.waited).min(bake);
            (armed, baked, baked >= bake)
        }
    };
    Ok(Gated {
        readings,
        not_judged,
        armed,
        baked,
        next_wait: if done {
            0
        } else {
            next_wait(bake, baked, watched, dep.release.rollout.bakes())
        },
        done,
    })
}

/// Fails the gate when a canary is no longer InService at one of the
/// region's ELBs, or fewer are registered than the rollout asked for. The
/// canaries are what an ELB holds besides the serving release's instances
/// (the full cutover has not happened): so a canary that died is still
/// judged, as the ELB still lists it until it is taken out.
async fn canaries_in_service(
    dep: &Deployment,
    clients: &aws::RegionClients,
    region: &crate::config::Region,
) -> Result<(), PhaseError> {
    let wanted = dep.release.rollout.canary_in(&region.name) as usize;
    if wanted == 0 {
        return Ok(());
    }
    let failed = |reason: String| PhaseError::GateFailed {
        region: region.name.clone(),
        reason,
    };
    let ours = dep.stack_name();
    for elb in &region.elbs {
        let tags = crate::balancer::tags(clients, elb).await?;
        if tags.get(promote::PROMOTED_NAME_TAG) == Some(&ours) {
            // The release serves here already (deployed again with nothing
            // new): it had no canaries to judge.
            continue;
        }
        let serving = match tags.get(promote::PROMOTED_TAG) {
            Some(stack) if !stack.is_empty() => promote::stack_instances(clients, stack).await.unwrap_or_default(),
            _ => Vec::new(),
        };
        let canaries: Vec<String> = crate::balancer::registered(clients, elb)
            .await?
            .into_iter()
            .filter(|i| !serving.contains(i))
            .collect();
        if canaries.is_empty() {
            return Err(failed(format!(
                "no canary is registered with {elb} any more: it was taken out"
            )));
        }
        let health = crate::balancer::health(clients, elb, &canaries).await?;
        if let Some(h) = health.iter().find(|h| !h.serving) {
            return Err(failed(format!("canary {}", h.describe(elb))));
        }
    }
    Ok(())
}

async fn read(cw: &aws_sdk_cloudwatch::Client, region: &str, alarms: &[String]) -> Result<Vec<Reading>, PhaseError> {
    let mut found = Vec::new();
    // DescribeAlarms takes up to 100 names at a time.
    for chunk in alarms.chunks(100) {
        let out = cw
            .describe_alarms()
            .set_alarm_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(aws::err(format!("read the alarms in {region}")))?;
        for a in out.metric_alarms() {
            found.push(Reading {
                region: region.to_owned(),
                alarm: a.alarm_name().unwrap_or_default().to_owned(),
                state: a.state_value().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                updated_ms: a.state_updated_timestamp().map_or(0, |t| t.to_millis().unwrap_or(0)),
            });
        }
    }
    for name in alarms {
        if !found.iter().any(|r| &r.alarm == name) {
            return Err(PhaseError::Invalid(format!(
                "rollout.alarms names `{name}`, which is not an alarm in {region}; create it there or take it out of the rollout"
            )));
        }
    }
    Ok(found)
}

/// The gate's verdict on `now`, given the readings when it was armed.
pub fn decide(armed: Option<&[Reading]>, now: &[Reading]) -> Result<(), PhaseError> {
    for r in now {
        let fail = |reason: String| {
            Err(PhaseError::GateFailed {
                region: r.region.clone(),
                reason,
            })
        };
        if r.state == "ALARM" {
            return fail(format!("alarm {} is in ALARM", r.alarm));
        }
        let before = armed
            .into_iter()
            .flatten()
            .find(|b| b.region == r.region && b.alarm == r.alarm);
        if let Some(b) = before {
            if b.state == "OK" && r.updated_ms > b.updated_ms {
                return fail(format!(
                    "alarm {} left OK during the bake and is {} again: it fired and cleared (or lost its data) while the release baked",
                    r.alarm, r.state
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(alarm: &str, state: &str, updated_ms: i64) -> Reading {
        Reading {
            region: "us-east-1".into(),
            alarm: alarm.into(),
            state: state.into(),
            updated_ms,
        }
    }

    #[test]
    fn an_alarm_in_alarm_fails_the_gate_naming_it_and_the_region() {
        let e = decide(None, &[r("errors", "OK", 1), r("latency", "ALARM", 5)]).unwrap_err();
        assert_eq!(e.error_type(), "GateFailed");
        assert_eq!(e.to_string(), "alarm gate in us-east-1: alarm latency is in ALARM");
    }

    #[test]
    fn an_alarm_that_fired_and_cleared_during_the_bake_fails_it() {
        let armed = [r("errors", "OK", 10)];
        assert!(decide(Some(&armed), &[r("errors", "OK", 10)]).is_ok());
        let e = decide(Some(&armed), &[r("errors", "OK", 99)]).unwrap_err();
        assert!(e.to_string().contains("fired and cleared"), "{e}");
    }

    #[test]
    fn a_watched_bake_is_read_at_least_once_a_minute_and_an_unwatched_one_waits_once() {
        assert_eq!(next_wait(600, 0, true, 1), WATCH_SECONDS);
        assert_eq!(next_wait(600, 570, true, 1), 30);
        assert_eq!(next_wait(600, 0, false, 1), 600);
        assert_eq!(next_wait(4, 0, true, 1), 4);
        assert_eq!(next_wait(0, 0, true, 1), 0);
        // A day's bake in 16 bakes is read far less often than each minute.
        assert!(next_wait(86_400, 0, true, 16) > 10 * WATCH_SECONDS);
    }

    #[test]
    fn insufficient_data_is_not_judged_and_data_arriving_is_fine() {
        let armed = [r("errors", "INSUFFICIENT_DATA", 10)];
        assert!(decide(Some(&armed), &[r("errors", "OK", 50)]).is_ok());
        assert!(decide(None, &[r("errors", "INSUFFICIENT_DATA", 10)]).is_ok());
    }
}
