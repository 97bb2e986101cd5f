//! `hooks` and `slack`.

use super::*;

pattern!(hook_name_re, r"^[a-z][a-z0-9_]{0,63}$");

/// The longest hook command: a script belongs in the repository.
pub(super) const MAX_HOOK_COMMAND: usize = 4096;

/// `hooks:`: each hook name to a list of hooks, each with either porter's
/// `dockerfile:` or this product's `command:`.
pub(super) fn check_hooks(c: &mut Checker<'_>, root: &Node) -> Option<BTreeMap<String, Vec<Hook>>> {
    let Some((_, entries, _)) = c.section(root, "", "hooks", "hooks by name (pre_provision: [...], ...)")? else {
        return Some(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in entries {
        let Some(name) = k.as_str() else {
            c.error(k, "hooks", "hook names must be plain names");
            ok = false;
            continue;
        };
        let path = join("hooks", name);
        let why = "is not a hook name (lowercase letters, digits and `_`, like pre_provision)";
        if !c.key_matching(k, &path, name, hook_name_re(), why) {
            ok = false;
            continue;
        }
        if !DEPLOY_HOOKS.contains(&name) && name != EC2_BOOTSTRAP {
            let near = closest(name, DEPLOY_HOOKS)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            c.report(
                Severity::Warning,
                k,
                &path,
                format!("`{name}` is a hook of the service's own{near}: a deploy runs only pre_/post_ of pack, provision, promote and prune, and ec2_bootstrap"),
            );
        }
        if v.is_null() {
            continue;
        }
        let Some(items) = c.list(v, &path, "hooks") else {
            ok = false;
            continue;
        };
        let mut hooks = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match check_hook(c, item, &format!("{path}[{i}]"), name) {
                Some(h) => hooks.push(h),
                None => ok = false,
            }
        }
        out.insert(name.to_owned(), hooks);
    }
    ok.then_some(out)
}

pub(super) fn check_hook(c: &mut Checker<'_>, node: &Node, path: &str, name: &str) -> Option<Hook> {
    let entries = c.mapping(node, path, "a hook")?;
    c.keys_acted_on(
        entries,
        path,
        &[
            "dockerfile",
            "command",
            "repo",
            "ref",
            "environment",
            "concurrent",
            "run_condition",
        ],
    );
    let mut ok = true;
    let dockerfile = c.string(node, "dockerfile", path, false);
    let command = c.string(node, "command", path, false);
    let repo = c.string(node, "repo", path, false).map(|(r, _)| r);
    let git_ref = c.string(node, "ref", path, false);
    if let (Some((_, n)), None) = (&git_ref, &repo) {
        c.error(
            n,
            &join(path, "ref"),
            "`ref` names a revision of `repo`; give the repo too",
        );
        ok = false;
    }
    let run = match (dockerfile, command) {
        (Some((_, n)), Some(_)) => {
            c.error(
                n,
                &join(path, "dockerfile"),
                "give `dockerfile:` or `command:`, not both",
            );
            None
        }
        (Some((file, n)), None) => {
            let escapes = Path::new(&file)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
            if escapes || file.is_empty() {
                c.error(
                    n,
                    &join(path, "dockerfile"),
                    format!("`{file}` must be a path inside the repository, relative to its root, without `..`"),
                );
                None
            } else {
                Some(HookRun::Dockerfile(file))
            }
        }
        (None, Some((cmd, n))) => {
            if cmd.trim().is_empty() || cmd.len() > MAX_HOOK_COMMAND {
                c.error(n, &join(path, "command"), format!("a command is 1 to {MAX_HOOK_COMMAND} characters; put a longer one in a script in the repository"));
                None
            } else {
                Some(HookRun::Command(cmd))
            }
        }
        // A plugin without one builds its repository's own Dockerfile.
        (None, None) if repo.is_some() => Some(HookRun::Dockerfile("Dockerfile".into())),
        (None, None) => {
            c.error(node, path, "a hook needs `dockerfile:` (porter's: built and run in Docker) or `command:` (run in the repository root)");
            None
        }
    };
    let concurrent = match c.string(node, "concurrent", path, false) {
        None => false,
        Some((t, _)) if ["true", "yes"].contains(&t.as_str()) => true,
        Some((t, _)) if ["false", "no"].contains(&t.as_str()) => false,
        Some((t, n)) => {
            c.error(
                n,
                &join(path, "concurrent"),
                format!("expected true or false, found `{t}`"),
            );
            ok = false;
            false
        }
    };
    let run_condition = match c.string(node, "run_condition", path, false) {
        None => RunCondition::Pass,
        Some((t, n)) => match t.as_str() {
            "pass" => RunCondition::Pass,
            "fail" => {
                if name.starts_with("pre_") || name == EC2_BOOTSTRAP {
                    c.report(
                        Severity::Warning,
                        n,
                        &join(path, "run_condition"),
                        format!("this hook never runs: {name} runs before anything it could follow has failed"),
                    );
                }
                RunCondition::Fail
            }
            "always" => RunCondition::Always,
            _ => {
                c.error(
                    n,
                    &join(path, "run_condition"),
                    format!("`{t}` is not a run condition; expected pass, fail or always"),
                );
                ok = false;
                RunCondition::Pass
            }
        },
    };
    let mut environment = BTreeMap::new();
    if let Some(env) = node.get("environment").filter(|n| !n.is_null()) {
        let epath = join(path, "environment");
        match c.mapping(
            env,
            &epath,
            "variables (`NAME: value`, or `NAME:` to pass the deploy's own)",
        ) {
            None => ok = false,
            Some(vars) => {
                for (k, v) in vars {
                    let Some(var) = k.as_str().filter(|v| variable_re().is_match(v)) else {
                        c.error(
                            k,
                            &epath,
                            "expected an environment variable name (a letter or `_`, then letters, digits and `_`)",
                        );
                        ok = false;
                        continue;
                    };
                    if var.starts_with("PORTER_") {
                        c.error(
                            k,
                            &join(&epath, var),
                            format!("`{var}`: PORTER_ variables are the release's facts, which porter sets"),
                        );
                        ok = false;
                        continue;
                    }
                    let value = if v.is_null() {
                        None
                    } else {
                        v.as_str().map(str::to_owned)
                    };
                    if !v.is_null() && value.is_none() {
                        c.error(
                            v,
                            &join(&epath, var),
                            format!("expected a single value, found {}", v.kind()),
                        );
                        ok = false;
                        continue;
                    }
                    environment.insert(var.to_owned(), value);
                }
            }
        }
    }
    let run = run?;
    ok.then_some(Hook {
        run,
        repo,
        git_ref: git_ref.map(|(r, _)| r),
        environment,
        concurrent,
        run_condition,
    })
}

/// `slack:`: porter's webhook keys, each `secretsmanager:NAME` of a secret
/// under the service's `porter/SERVICE/notifications/`. A URL in clear is a
/// credential anyone who reads the repository can post with: it is not
/// used, and each one gets a warning saying where to put it.
pub(super) fn check_slack(c: &mut Checker<'_>, root: &Node) -> Option<BTreeMap<String, String>> {
    let Some((_, entries, _)) = c.section(root, "", "slack", "webhooks, each `KEY: secretsmanager:NAME`")? else {
        return Some(BTreeMap::new());
    };
    c.keys(entries, "slack", SLACK_KEYS, false);
    let prefix = c.service.as_deref().map(webhook_prefix);
    let mut out = BTreeMap::new();
    let mut ok = true;
    let mut in_clear = Vec::new();
    for (k, v) in entries {
        let Some(key) = k.as_str().filter(|k| SLACK_KEYS.contains(k)) else {
            continue; // reported by `keys`
        };
        let path = join("slack", key);
        if v.is_null() {
            continue;
        }
        let Some(value) = v.as_str() else {
            c.error(v, &path, format!("expected `secretsmanager:NAME`, found {}", v.kind()));
            ok = false;
            continue;
        };
        let store_as = prefix.clone().unwrap_or_else(|| "porter/SERVICE/notifications/".into());
        if value.starts_with("https://") || value.starts_with("http://") {
            in_clear.push((key, v));
            continue;
        }
        match value.strip_prefix("secretsmanager:") {
            Some(name)
                if secretsmanager_name_re().is_match(name)
                    && prefix
                        .as_deref()
                        .is_none_or(|p| name.starts_with(p) && name.len() > p.len()) =>
            {
                out.insert(key.to_owned(), name.to_owned());
            }
            Some(name) => {
                c.error(
                    v,
                    &path,
                    format!("`{name}` is not a secret under `{store_as}`, the only place the notify function may read webhook URLs from"),
                );
                ok = false;
            }
            None => {
                c.error(
                    v,
                    &path,
                    format!("expected `secretsmanager:{store_as}NAME`: the secret that holds the webhook URL"),
                );
                ok = false;
            }
        }
    }
    // One warning for every URL in clear; the URLs themselves are never
    // repeated: each is the credential.
    if let Some((first, node)) = in_clear.first() {
        let keys: Vec<&str> = in_clear.iter().map(|(k, _)| *k).collect();
        let store_as = prefix.unwrap_or_else(|| "porter/SERVICE/notifications/".into());
        c.report(
            Severity::Warning,
            node,
            &join("slack", first),
            format!(
                "{} {} written in clear, so not used: anyone who can read the repository can post with a webhook URL. Store each in Secrets Manager as `{store_as}NAME` and write `secretsmanager:{store_as}NAME`",
                keys.join(", "),
                if keys.len() == 1 { "is a webhook URL" } else { "are webhook URLs" }
            ),
        );
    }
    ok.then_some(out)
}
