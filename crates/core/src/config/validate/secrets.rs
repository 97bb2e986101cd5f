//! `secrets`: where each lives, and the variable names it may not take.

use super::*;

pattern!(ssm_name_re, r"^[A-Za-z0-9/_.-]{1,2048}$");

/// Variables a secret may not set. A secret reaches only the service's
/// own process (or the Docker client that hands it to the container),
/// never the boot script's shell; these names would still steer how that
/// process is found and started (its PATH, its loader, the Docker
/// client, proxies, AWS credentials), so they stay refused as a second
/// line of defence.
pub(super) fn reserved_variable(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "IFS",
        "SHELL",
        "ENV",
        "CDPATH",
        "GLOBIGNORE",
        "SHELLOPTS",
        "PS4",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SERVICE_PID",
        "VALUE",
        "OK",
        "BAD",
        "CODE",
    ];
    const PREFIXES: &[&str] = &[
        "AWS_", "LD_", "BASH", "PYTHON", "PERL", "RUBY", "NODE_", "JAVA_", "DOCKER_", "CURL_", "GIT_", "PORTER_",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&upper.as_str())
        || PREFIXES.iter().any(|p| upper.starts_with(p))
        // http_proxy, HTTPS_PROXY, no_proxy, ALL_PROXY ...
        || upper.ends_with("_PROXY")
}

/// `secrets:` of an environment or a region: a mapping of environment
/// variable to `secretsmanager:NAME` or `ssm:NAME`, each name under the
/// service's and environment's own prefix. `Some(empty)` when absent,
/// `None` when any entry is wrong (each is reported).
pub(super) fn check_secrets(c: &mut Checker<'_>, parent: &Node, path: &str) -> Option<Vec<Secret>> {
    let what = "secrets, each `VARIABLE: secretsmanager:NAME` or `VARIABLE: ssm:NAME`";
    let Some((_, entries, spath)) = c.section(parent, path, "secrets", what)? else {
        return Some(Vec::new());
    };
    let mut secrets = Vec::new();
    let mut ok = true;
    let mut seen = HashSet::new();
    for (k, v) in entries {
        let Some(variable) = k.as_str() else {
            c.error(k, &spath, "keys must be plain environment variable names");
            ok = false;
            continue;
        };
        let vpath = join(&spath, variable);
        if !seen.insert(variable.to_owned()) {
            c.error(k, &vpath, format!("`{variable}` is set twice; keep one"));
            ok = false;
            continue;
        }
        let why = "is not an environment variable name (a letter or `_`, then letters, digits and `_`, at most 128)";
        if !c.key_matching(k, &vpath, variable, variable_re(), why) {
            ok = false;
            continue;
        }
        if reserved_variable(variable) {
            c.error(
                k,
                &vpath,
                format!("`{variable}` would change how the instance boots (PATH, the shell, proxies, AWS_*, LD_*, PYTHON*, DOCKER_*, PORTER_*, the boot script's own names); give the service another name for it"),
            );
            ok = false;
            continue;
        }
        let Some(reference) = v.as_str().filter(|_| !v.is_null()) else {
            c.error(
                v,
                &vpath,
                format!("expected `secretsmanager:NAME` or `ssm:NAME`, found {}", v.kind()),
            );
            ok = false;
            continue;
        };
        let parsed = match reference.split_once(':') {
            Some(("secretsmanager", name)) if secretsmanager_name_re().is_match(name) => {
                Some((SecretStore::SecretsManager, name))
            }
            Some(("ssm", name)) if ssm_name_re().is_match(name) && !name.contains("//") => {
                Some((SecretStore::Ssm, name))
            }
            Some(("secretsmanager", _)) => {
                c.error(v, &vpath, "a Secrets Manager secret name is 1 to 512 letters, digits and `/_+=.@-` (a name, not an ARN: the secret is read in the deploy's own account and region)");
                None
            }
            Some(("ssm", _)) => {
                c.error(v, &vpath, "an SSM parameter name is 1 to 2048 letters, digits and `/_.-` (a name, not an ARN: the parameter is read in the deploy's own account and region)");
                None
            }
            _ => {
                c.error(
                    v,
                    &vpath,
                    "expected `secretsmanager:NAME` or `ssm:NAME`: a reference to where the value lives, never the value itself",
                );
                None
            }
        };
        let Some((store, name)) = parsed else {
            ok = false;
            continue;
        };
        if let (Some(service), Some(environment)) = (&c.service, &c.environment) {
            let prefix = Secret::required_prefix(store, service, environment);
            if !name.starts_with(&prefix) || name.len() == prefix.len() {
                c.error(
                    v,
                    &vpath,
                    format!(
                        "`{name}` is not under `{prefix}`: a service's instances may read only their own environment's secrets (the release boundary allows nothing outside porter/); store it as `{prefix}...`"
                    ),
                );
                ok = false;
                continue;
            }
        }
        secrets.push(Secret {
            variable: variable.to_owned(),
            store,
            name: name.to_owned(),
        });
    }
    ok.then_some(secrets)
}
