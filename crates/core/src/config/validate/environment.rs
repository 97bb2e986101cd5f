//! An environment's own keys: its rollout (waves, bake, canaries,
//! alarms), role and blackout windows.

use super::*;

pattern!(env_name_re, r"^[0-9a-zA-Z]+$");
pattern!(role_arn_re, r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$");
pattern!(instance_type_re, r"^[a-z][a-z0-9-]*\.[a-z0-9]+$");

pub(super) fn check_environment(c: &mut Checker<'_>, env: &Node, path: &str) -> Option<Environment> {
    let entries = c.mapping(env, path, "an environment")?;
    c.keys(entries, path, ENV_KEYS, false);
    let name = c.matching(
        env,
        "name",
        path,
        true,
        env_name_re(),
        "must hold only letters and digits",
    );
    c.environment = name.clone();
    let role_arn = check_role(c, env, path);
    let stack_definition = c.stack_definition(env, path);
    let secrets = check_secrets(c, env, path);
    let instance_count = c.count(env, "instance_count", path).unwrap_or(1);
    let instance_type = match c.string(env, "instance_type", path, false) {
        Some((t, node)) if !instance_type_re().is_match(&t) => {
            c.error(
                node,
                &join(path, "instance_type"),
                format!("`{t}` is not an EC2 instance type like m5.large"),
            );
            None
        }
        Some((t, _)) => Some(t),
        None => Some("m3.medium".to_owned()),
    };
    let blackout_windows = check_blackouts(c, env, path);

    let mut regions = Vec::new();
    let regions_path = join(path, "regions");
    match env.get("regions") {
        None => c.error(
            env,
            &regions_path,
            "`regions` is required: a list with at least one region",
        ),
        Some(node) => {
            if let Some(items) = c.list(node, &regions_path, "regions") {
                if items.is_empty() {
                    c.error(node, &regions_path, "needs at least one region");
                }
                let mut names = HashSet::new();
                for (i, region) in items.iter().enumerate() {
                    let rpath = format!("{regions_path}[{i}]");
                    if let Some((name, node)) = given_name(region) {
                        if !names.insert(name) {
                            c.error(
                                node,
                                &join(&rpath, "name"),
                                format!("region `{name}` is listed twice in this environment"),
                            );
                        }
                    }
                    let inherited = Inherited {
                        role_arn: role_arn.as_deref(),
                        role_arn_given: has_value(env, "role_arn"),
                        stack_definition: stack_definition.as_ref(),
                        instance_count,
                        secrets: secrets.as_deref(),
                    };
                    if let Some(r) = check_region(c, region, &rpath, &inherited) {
                        regions.push(r);
                    }
                }
            }
        }
    }
    let rollout = check_rollout(c, env, path, &regions);
    let stack_creation = check_stack_creation(c, env, path);
    secrets?;
    Some(Environment {
        name: name?,
        instance_type: instance_type?,
        blackout_windows: blackout_windows?,
        regions,
        rollout: rollout?,
        stack_creation: stack_creation?,
    })
}

/// `stack_creation:`: CloudFormation's timeout for a release stack within
/// porter's 15 to 60 minutes, and what it does with one that fails.
pub(super) fn check_stack_creation(c: &mut Checker<'_>, env: &Node, path: &str) -> Option<StackCreation> {
    let what = "stack_creation, with `timeout_minutes` and `on_failure`";
    let Some((node, entries, spath)) = c.section(env, path, "stack_creation", what)? else {
        return Some(StackCreation::default());
    };
    c.keys(entries, &spath, &["timeout_minutes", "on_failure"], false);
    let mut out = StackCreation::default();
    let mut ok = true;
    match c.number_in(
        node,
        "timeout_minutes",
        &spath,
        StackCreation::MIN_TIMEOUT_MINUTES..=StackCreation::MAX_TIMEOUT_MINUTES,
        "whole minutes (porter's bounds; CloudFormation fails the stack after them)",
    ) {
        Ok(Some(m)) => out.timeout_minutes = m,
        Ok(None) => {}
        Err(()) => ok = false,
    }
    if let Some((text, n)) = c.string(node, "on_failure", &spath, false) {
        match text.to_ascii_uppercase().as_str() {
            "DELETE" => out.on_failure = StackOnFailure::Delete,
            "ROLLBACK" => out.on_failure = StackOnFailure::Rollback,
            "DO_NOTHING" => out.on_failure = StackOnFailure::DoNothing,
            _ => {
                c.error(
                    n,
                    &join(&spath, "on_failure"),
                    format!(
                        "expected DELETE (the failed stack goes), ROLLBACK (kept, its resources deleted) or DO_NOTHING (kept with its instances, to debug them), found `{}`",
                        text.chars().take(20).collect::<String>()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `rollout:`: every region of the environment in exactly one wave (when
/// waves are given), a bake of at most a day, alarm names CloudWatch takes.
pub(super) fn check_rollout(c: &mut Checker<'_>, env: &Node, path: &str, regions: &[Region]) -> Option<Rollout> {
    let Some((node, entries, rpath)) = c.section(env, path, "rollout", "a rollout")? else {
        return Some(Rollout::default());
    };
    c.keys(
        entries,
        &rpath,
        &["waves", "bake_seconds", "alarms", "canary_instances"],
        false,
    );
    let mut ok = true;
    let mut waves = Vec::new();
    if let Some(wnode) = node.get("waves").filter(|n| !n.is_null()) {
        let wpath = join(&rpath, "waves");
        let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        let mut placed: HashSet<String> = HashSet::new();
        for (i, wave) in c
            .list(wnode, &wpath, "waves, each a list of regions")?
            .iter()
            .enumerate()
        {
            let ipath = format!("{wpath}[{i}]");
            let Some(items) = c.list(wave, &ipath, "regions") else {
                ok = false;
                continue;
            };
            if items.is_empty() {
                c.error(wave, &ipath, "a wave needs at least one region");
                ok = false;
            }
            let mut names = Vec::new();
            for (j, item) in items.iter().enumerate() {
                let jpath = format!("{ipath}[{j}]");
                let Some(name) = item.as_str() else {
                    c.error(item, &jpath, format!("expected a region name, found {}", item.kind()));
                    ok = false;
                    continue;
                };
                if !known.contains(&name) {
                    c.error(
                        item,
                        &jpath,
                        format!(
                            "`{name}` is not a region of this environment (its regions: {})",
                            known.join(", ")
                        ),
                    );
                    ok = false;
                } else if !placed.insert(name.to_owned()) {
                    c.error(item, &jpath, format!("region `{name}` is in two waves; keep it in one"));
                    ok = false;
                }
                names.push(name.to_owned());
            }
            waves.push(names);
        }
        let missing: Vec<&str> = known.iter().copied().filter(|r| !placed.contains(*r)).collect();
        if ok && !missing.is_empty() {
            c.error(
                wnode,
                &wpath,
                format!("every region must be in a wave; {} is in none", missing.join(", ")),
            );
            ok = false;
        }
    }
    let bake_seconds = match c.string(node, "bake_seconds", &rpath, false) {
        None => 0,
        Some((text, n)) => match text.parse::<u32>() {
            Ok(s) if s <= MAX_BAKE_SECONDS => s,
            _ => {
                c.error(
                    n,
                    &join(&rpath, "bake_seconds"),
                    format!("expected a whole number of seconds from 0 to {MAX_BAKE_SECONDS}, found `{text}`"),
                );
                ok = false;
                0
            }
        },
    };
    let own = check_canary_and_alarms(c, node, &rpath)?;
    let canary_instances = own.canary_instances.unwrap_or_default();
    // A region with a canary of its own is checked with that region.
    for r in regions.iter().filter(|r| r.rollout.canary_instances.is_none()) {
        if canary_instances > r.instance_count {
            c.error(
                node.get("canary_instances").unwrap_or(node),
                &join(&rpath, "canary_instances"),
                format!(
                    "{canary_instances} canaries, but {} launches {} instance(s); ask for at most {}, or set the region's own",
                    r.name, r.instance_count, r.instance_count
                ),
            );
            ok = false;
        }
    }
    ok.then_some(Rollout {
        waves,
        bake_seconds,
        alarms: own.alarms.unwrap_or_default(),
        canary_instances,
        ..Rollout::default()
    })
}

/// `canary_instances` and `alarms`, which an environment's rollout and a
/// region's both take. `None` when either is wrong (each is reported).
pub(super) fn check_canary_and_alarms(c: &mut Checker<'_>, node: &Node, rpath: &str) -> Option<RegionRollout> {
    let mut ok = true;
    let canary_instances =
        c.string(node, "canary_instances", rpath, false)
            .and_then(|(text, n)| match text.parse::<u32>() {
                Ok(k) if k <= 100 => Some(k),
                _ => {
                    c.error(
                        n,
                        &join(rpath, "canary_instances"),
                        format!("expected a whole number of instances from 0 to 100, found `{text}`"),
                    );
                    ok = false;
                    None
                }
            });
    let mut alarms = None;
    if let Some(anode) = node.get("alarms").filter(|n| !n.is_null()) {
        let apath = join(rpath, "alarms");
        let mut names = Vec::new();
        for (i, item) in c.list(anode, &apath, "CloudWatch alarm names")?.iter().enumerate() {
            match item.as_str() {
                Some(a) if is_alarm_name(a) => names.push(a.to_owned()),
                _ => {
                    c.error(
                        item,
                        &format!("{apath}[{i}]"),
                        "expected a CloudWatch alarm name (1 to 255 characters)",
                    );
                    ok = false;
                }
            }
        }
        alarms = Some(names);
    }
    ok.then_some(RegionRollout {
        canary_instances,
        alarms,
    })
}

/// A region's `rollout:`: its own canary and alarms.
pub(super) fn check_region_rollout(
    c: &mut Checker<'_>,
    region: &Node,
    path: &str,
    instance_count: u32,
) -> Option<RegionRollout> {
    let Some((node, entries, rpath)) = c.section(region, path, "rollout", "a region's rollout")? else {
        return Some(RegionRollout::default());
    };
    let mut spanning = false;
    for (k, _) in entries {
        if let Some(key) = k.as_str().filter(|k| matches!(*k, "waves" | "bake_seconds")) {
            c.error(
                k,
                &join(&rpath, key),
                format!("`{key}` spans regions: set it in the environment's rollout; a region sets only canary_instances and alarms"),
            );
            spanning = true;
        }
    }
    c.keys(
        entries,
        &rpath,
        &["canary_instances", "alarms", "waves", "bake_seconds"],
        false,
    );
    let own = check_canary_and_alarms(c, node, &rpath)?;
    if let Some(n) = own.canary_instances.filter(|n| *n > instance_count) {
        c.error(
            node.get("canary_instances").unwrap_or(node),
            &join(&rpath, "canary_instances"),
            format!(
                "{n} canaries, but this region launches {instance_count} instance(s); ask for at most {instance_count}"
            ),
        );
        return None;
    }
    (!spanning).then_some(own)
}

pub(super) fn check_role(c: &mut Checker<'_>, parent: &Node, path: &str) -> Option<String> {
    let (arn, node) = c.string(parent, "role_arn", path, false)?;
    if role_arn_re().is_match(&arn) {
        Some(arn)
    } else {
        c.error(
            node,
            &join(path, "role_arn"),
            format!("`{arn}` is not an IAM role ARN like arn:aws:iam::123456789012:role/porter-deployment"),
        );
        None
    }
}

pub(super) fn check_blackouts(c: &mut Checker<'_>, env: &Node, path: &str) -> Option<Vec<BlackoutWindow>> {
    let bpath = join(path, "blackout_windows");
    let Some(node) = env.get("blackout_windows") else {
        return Some(Vec::new());
    };
    let items = c.list(node, &bpath, "windows with start_time and end_time")?;
    let mut windows = Vec::new();
    let (mappings, mut ok) = c.mappings(items, &bpath, "a window", &["start_time", "end_time"]);
    for (w, wpath) in mappings {
        let mut parse = |key: &str| {
            let (text, node) = c.string(w, key, &wpath, true)?;
            match chrono::DateTime::parse_from_rfc3339(&text) {
                Ok(t) => Some((text, t, node)),
                Err(e) => {
                    c.error(
                        node,
                        &join(&wpath, key),
                        format!("`{text}` is not an RFC3339 time like 2026-12-24T00:00:00Z ({e})"),
                    );
                    None
                }
            }
        };
        let start = parse("start_time");
        let end = parse("end_time");
        match (start, end) {
            (Some((s, st, _)), Some((e, et, enode))) => {
                if st > et {
                    c.error(
                        enode,
                        &join(&wpath, "end_time"),
                        format!("ends ({e}) before it starts ({s})"),
                    );
                    ok = false;
                } else {
                    windows.push(BlackoutWindow {
                        start_time: s,
                        end_time: e,
                    });
                }
            }
            _ => ok = false,
        }
    }
    ok.then_some(windows)
}
