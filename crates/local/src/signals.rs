//! CloudFormation resource signals on the local stack: moto ignores a
//! `CreationPolicy` (its stacks complete at once) and answers SignalResource
//! with a 500. The instances' `cfn-signal` lands here instead, and the
//! front answers a stack's status from these signals and its policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// One signal, as `cfn-signal` sent it.
#[derive(Debug, Clone)]
pub struct Signal {
    pub instance: String,
    pub success: bool,
    pub reason: String,
    /// When it arrived.
    pub at: SystemTime,
}

/// What a resource's `CreationPolicy` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub resource: String,
    pub count: u32,
    pub timeout: Duration,
}

/// Where a stack's creation stands, judged by its signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Complete,
    Waiting,
    /// The resource that failed and why (signal reason or timeout).
    Failed {
        resource: String,
        reason: String,
    },
}

/// Signals received, by (region, stack name, logical resource id).
type Book = HashMap<(String, String, String), Vec<Signal>>;

#[derive(Debug, Clone, Default)]
pub struct Signals(Arc<Mutex<Book>>);

impl Signals {
    pub fn record(&self, region: &str, stack: &str, resource: &str, signal: Signal) {
        self.0
            .lock()
            .expect("signals lock")
            .entry((region.into(), stack.into(), resource.into()))
            .or_default()
            .push(signal);
    }

    pub fn of(&self, region: &str, stack: &str, resource: &str) -> Vec<Signal> {
        self.0
            .lock()
            .expect("signals lock")
            .get(&(region.into(), stack.into(), resource.into()))
            .cloned()
            .unwrap_or_default()
    }

    /// When the stack's last success signal arrived: when CloudFormation
    /// would have completed it. None when it has none.
    pub fn completed_at(&self, region: &str, stack: &str) -> Option<SystemTime> {
        self.0
            .lock()
            .expect("signals lock")
            .iter()
            .filter(|((r, s, _), _)| r == region && s == stack)
            .flat_map(|(_, signals)| signals.iter().filter(|s| s.success).map(|s| s.at))
            .max()
    }

    /// The verdict on a stack moto calls complete, created at `created`.
    pub fn judge(
        &self,
        region: &str,
        stack: &str,
        policies: &[Policy],
        created: SystemTime,
        now: SystemTime,
    ) -> Verdict {
        let mut waiting = false;
        for p in policies {
            let got = self.of(region, stack, &p.resource);
            if let Some(failure) = got.iter().find(|s| !s.success) {
                return Verdict::Failed {
                    resource: p.resource.clone(),
                    reason: format!(
                        "Received FAILURE signal with UniqueId {}: {}",
                        failure.instance,
                        if failure.reason.is_empty() {
                            "no reason given"
                        } else {
                            &failure.reason
                        }
                    ),
                };
            }
            let mut ok: Vec<&str> = got.iter().map(|s| s.instance.as_str()).collect();
            ok.sort_unstable();
            ok.dedup();
            if (ok.len() as u32) < p.count {
                if now.duration_since(created).unwrap_or_default() > p.timeout {
                    return Verdict::Failed {
                        resource: p.resource.clone(),
                        reason: format!(
                            "Failed to receive {} resource signal(s) within the specified duration (received {})",
                            p.count,
                            ok.len()
                        ),
                    };
                }
                waiting = true;
            }
        }
        if waiting {
            Verdict::Waiting
        } else {
            Verdict::Complete
        }
    }
}

/// The `CreationPolicy.ResourceSignal` of each resource of a template.
pub fn policies(template: &Value) -> Vec<Policy> {
    let Some(resources) = template.get("Resources").and_then(Value::as_object) else {
        return Vec::new();
    };
    resources
        .iter()
        .filter_map(|(name, r)| {
            let signal = r.get("CreationPolicy")?.get("ResourceSignal")?;
            let count = match signal.get("Count") {
                Some(Value::Number(n)) => n.as_u64()? as u32,
                Some(Value::String(s)) => s.parse().ok()?,
                None => 1,
                _ => return None,
            };
            let timeout = signal
                .get("Timeout")
                .and_then(Value::as_str)
                .and_then(iso_duration)
                .unwrap_or(Duration::from_secs(300));
            Some(Policy {
                resource: name.clone(),
                count,
                timeout,
            })
        })
        .collect()
}

/// `PT15M`, `PT1H30M`, `PT90S` → a duration (the forms CloudFormation takes).
pub fn iso_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix("PT")?;
    let mut secs = 0u64;
    let mut num = String::new();
    for c in rest.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        secs += n * match c {
            'H' => 3600,
            'M' => 60,
            'S' => 1,
            _ => return None,
        };
    }
    num.is_empty().then_some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(count: u32) -> Vec<Policy> {
        vec![Policy {
            resource: "AutoScalingGroup".into(),
            count,
            timeout: Duration::from_secs(60),
        }]
    }

    fn signal(instance: &str, success: bool, reason: &str) -> Signal {
        Signal {
            instance: instance.into(),
            success,
            reason: reason.into(),
            at: SystemTime::now(),
        }
    }

    #[test]
    fn a_stack_completes_on_enough_distinct_successes_and_fails_on_one_failure() {
        let s = Signals::default();
        let t0 = SystemTime::UNIX_EPOCH;
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.judge("r", "st", &policy(2), t0, t1), Verdict::Waiting);
        s.record("r", "st", "AutoScalingGroup", signal("i-1", true, ""));
        s.record("r", "st", "AutoScalingGroup", signal("i-1", true, ""));
        assert_eq!(
            s.judge("r", "st", &policy(2), t0, t1),
            Verdict::Waiting,
            "one instance twice is one"
        );
        s.record("r", "st", "AutoScalingGroup", signal("i-2", true, ""));
        assert_eq!(s.judge("r", "st", &policy(2), t0, t1), Verdict::Complete);
        assert_eq!(s.judge("r", "other", &policy(2), t0, t1), Verdict::Waiting);

        s.record("r", "bad", "AutoScalingGroup", signal("i-3", false, "start exited 1"));
        match s.judge("r", "bad", &policy(1), t0, t1) {
            Verdict::Failed { resource, reason } => {
                assert_eq!(resource, "AutoScalingGroup");
                assert!(reason.contains("i-3") && reason.contains("start exited 1"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
        let late = t0 + Duration::from_secs(61);
        assert!(
            matches!(s.judge("r", "slow", &policy(1), t0, late), Verdict::Failed { reason, .. } if reason.contains("within the specified duration"))
        );
    }

    #[test]
    fn policies_are_read_from_the_template() {
        let t = json!({"Resources": {
            "AutoScalingGroup": {"CreationPolicy": {"ResourceSignal": {"Count": 3, "Timeout": "PT15M"}}},
            "Other": {"CreationPolicy": {"ResourceSignal": {"Count": "2"}}},
            "Plain": {"Type": "AWS::EC2::SecurityGroup"}
        }});
        let mut got = policies(&t);
        got.sort_by(|a, b| a.resource.cmp(&b.resource));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].count, 3);
        assert_eq!(got[0].timeout, Duration::from_secs(900));
        assert_eq!(got[1].count, 2);
        assert_eq!(iso_duration("PT1H2M3S"), Some(Duration::from_secs(3723)));
        assert_eq!(iso_duration("15M"), None);
        assert_eq!(iso_duration("PT5"), None);
    }
}
