//! `.porter/config`: the typed model and its loader.
//!
//! Loading validates everything at once and returns every finding with its
//! line, column and key path. A finding is an [`Severity::Error`] (the file
//! is wrong), a [`Severity::Warning`] (porter has the key, this product does
//! not act on it), or [`Severity::Incomplete`] (a valid config that cannot be
//! deployed as it is, such as porter's `TODO` placeholders): `porter validate`
//! passes on the last two, deploying refuses the last one.

mod error;
pub mod model;
#[cfg(test)]
mod tests;
mod validate;

pub use error::ConfigError;
pub use model::*;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::yaml;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    /// Valid, but not deployable as written (a placeholder, a missing file).
    Incomplete,
    Warning,
}

/// One finding about the config, positioned in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub line: usize,
    pub col: usize,
    /// The key path, e.g. `environments[0].regions[1].azs[0].subnet_id`.
    pub path: String,
    pub message: String,
}

/// A diagnostic with the file it belongs to, ready to print.
#[derive(Debug)]
pub struct Located<'a> {
    pub file: &'a Path,
    pub diagnostic: &'a Diagnostic,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diagnostic;
        let label = match d.severity {
            Severity::Error => "error",
            Severity::Incomplete => "not deployable",
            Severity::Warning => "warning",
        };
        let path = if d.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", d.path)
        };
        write!(
            f,
            "{}:{}:{}: {label}: {path}{}",
            self.file.display(),
            d.line,
            d.col,
            d.message
        )
    }
}

/// The outcome of reading a config file: the config when it has no errors,
/// and every finding either way.
#[derive(Debug)]
pub struct Loaded {
    pub file: PathBuf,
    pub config: Option<Config>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn located(&self) -> impl Iterator<Item = Located<'_>> {
        self.diagnostics.iter().map(|d| Located {
            file: &self.file,
            diagnostic: d,
        })
    }

    /// The config if it can be deployed: no errors and nothing incomplete.
    /// Otherwise one message listing every blocking finding.
    pub fn deployable(self) -> Result<Config, ConfigError> {
        let findings: Vec<String> = self
            .located()
            .filter(|l| l.diagnostic.severity != Severity::Warning)
            .map(|l| l.to_string())
            .collect();
        match self.config {
            Some(config) if findings.is_empty() => Ok(config),
            _ => Err(ConfigError::NotDeployable {
                file: self.file,
                findings,
            }),
        }
    }
}

/// Reads the repository's config. `repo_root` is where `stack_definition_path`s
/// are resolved from; `lookup` answers `${VAR}`.
pub fn load_file(file: &Path, repo_root: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> std::io::Result<Loaded> {
    let text = std::fs::read_to_string(file)?;
    Ok(load_str(&text, file, repo_root, lookup))
}

/// Like [`load_file`] with the text already in hand (a zip entry, a test).
pub fn load_str(text: &str, file: &Path, repo_root: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Loaded {
    // Every value a `${VAR}` brought in, so that no finding repeats it.
    let used = std::cell::RefCell::new(Vec::<(String, String)>::new());
    let recording = |name: &str| {
        let value = lookup(name);
        if let Some(v) = &value {
            used.borrow_mut().push((name.to_owned(), v.clone()));
        }
        value
    };
    let (config, mut diagnostics) = match yaml::load(text, &recording) {
        Err(problems) => (
            None,
            problems
                .into_iter()
                .map(|p| Diagnostic {
                    severity: Severity::Error,
                    line: p.mark.line,
                    col: p.mark.col,
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        ),
        Ok(root) => validate::validate(&root, repo_root),
    };
    let config = match config {
        Some(c) => {
            // The typed config keeps no positions: a finding points at
            // the first line that writes what it is about.
            let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).map_or(1, |i| i + 1);
            let leaks = secrets_in_names(&c, &used.borrow());
            for (path, variable) in &leaks {
                diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    line: line_of(&format!("${{{variable}}}")),
                    col: 1,
                    path: path.clone(),
                    message: if path.starts_with(&format!("hooks.{EC2_BOOTSTRAP}[")) {
                        format!(
                            "holds the value of ${{{variable}}}, a secret by its name: an ec2_bootstrap hook is written into the instances' boot script, which is part of the template; name the value under `secrets:` (the service reads it at start) or use another variable"
                        )
                    } else {
                        format!(
                            "holds the value of ${{{variable}}}, a secret by its name: a secret may not be part of a name or the template (they reach stack names, S3 keys, tags, alarms and logs); only a hook's `environment:` may carry one, or name it under `secrets:`"
                        )
                    },
                });
            }
            let references = dynamic_references(&c);
            for path in &references {
                diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    line: line_of("{{resolve:"),
                    col: 1,
                    path: path.clone(),
                    message: "holds `{{resolve:`, a CloudFormation dynamic reference: CloudFormation would resolve it with the deployment role's rights where the value lands in the template; write the value itself, or name a secret under `secrets:`".to_owned(),
                });
            }
            (leaks.is_empty() && references.is_empty()).then_some(c)
        }
        None => None,
    };
    for d in &mut diagnostics {
        d.message = redact(&d.message, &used.borrow());
        d.path = redact(&d.path, &used.borrow());
    }
    Loaded {
        file: file.to_path_buf(),
        config,
        diagnostics,
    }
}

/// Whether a variable's name says it holds a secret: `*SECRET*`,
/// `*TOKEN*`, `*PASSWORD*`, `*CREDENTIAL*`, `*_KEY`, and AWS's own
/// credential variables. Its value is refused in any name the config
/// makes, and the CLI sends it only when its caller names it.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    says_secret(&n)
        || n.ends_with("_KEY")
        || matches!(
            n.as_str(),
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN"
        )
}

/// Where a secret-like variable's value may go: a hook's `environment:`
/// values, which reach only the hook's own build as variables. Anything
/// else in a config becomes a name (of stacks, buckets, keys, tags,
/// alarms, pipelines), part of the template or the boot script, or a line
/// of a build's log. `ec2_bootstrap` hooks are written into the boot
/// script, so their environment is no place for one either.
fn may_hold_secret(path: &str) -> bool {
    path.starts_with("hooks.")
        && !path.starts_with(&format!("hooks.{EC2_BOOTSTRAP}["))
        && path.contains("].environment.")
}

/// A key pair's name is no secret, whatever the variable that holds it is
/// called: porter's own configs write `key_pair_name: ${SSH_KEY}`. Only
/// the `*_KEY` rule is waived there; `*SECRET*`, `*TOKEN*` and the rest
/// still refuse.
fn key_pair_variable(path: &str, variable: &str) -> bool {
    path.ends_with(".key_pair_name") && {
        let n = variable.to_ascii_uppercase();
        !says_secret(&n) && !n.starts_with("AWS_")
    }
}

/// Whether an upper-cased variable name holds a word that says secret.
fn says_secret(upper: &str) -> bool {
    ["SECRET", "TOKEN", "PASSWORD", "CREDENTIAL"]
        .iter()
        .any(|w| upper.contains(w))
}

/// Calls `f` with the key path and text of every string in `config`, but
/// an overlay's template (checked by its own rules; nothing in it is
/// expanded).
fn each_string(config: &Config, f: &mut dyn FnMut(&str, &str)) {
    fn walk(v: &serde_json::Value, path: &str, f: &mut dyn FnMut(&str, &str)) {
        match v {
            serde_json::Value::String(s) => f(path, s),
            serde_json::Value::Object(o) => {
                for (k, child) in o.iter().filter(|(k, _)| *k != "template") {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(child, &p, f);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), f);
                }
            }
            _ => {}
        }
    }
    walk(&serde_json::to_value(config).unwrap_or_default(), "", f);
}

/// Each place in `config` that holds the value of a secret-like variable
/// where no secret may go: (the key path, the variable), each once.
fn secrets_in_names(config: &Config, used: &[(String, String)]) -> Vec<(String, String)> {
    let mut secrets: Vec<&(String, String)> = used
        .iter()
        .filter(|(name, value)| is_secret_name(name) && value.len() >= REDACT_MIN)
        .collect();
    // A variable written in several places is recorded once per place.
    secrets.sort();
    secrets.dedup();
    let mut found = Vec::new();
    if secrets.is_empty() {
        return found;
    }
    each_string(config, &mut |path, text| {
        if may_hold_secret(path) {
            return;
        }
        for (name, value) in &secrets {
            if text.contains(value.as_str()) && !key_pair_variable(path, name) {
                found.push((path.to_owned(), name.clone()));
            }
        }
    });
    found.dedup();
    found
}

/// Each place in `config` that holds a CloudFormation dynamic reference
/// (`{{resolve:...}}`): CloudFormation would resolve it where the value
/// lands in the template, reading a secret or parameter with the
/// deployment role's rights and possibly echoing it in a stack event.
fn dynamic_references(config: &Config) -> Vec<String> {
    let mut found = Vec::new();
    each_string(config, &mut |path, text| {
        if !may_hold_secret(path) && text.contains("{{resolve:") {
            found.push(path.to_owned());
        }
    });
    found
}

/// `message` with every expanded variable's value shown as `${NAME}`: a
/// value may be a secret (the variable is the user's to choose), and
/// findings travel into logs, execution causes and CodePipeline. Findings
/// clip and escape what they quote, so a value is also found escaped
/// (`\'`, `\n`) and as its start: any run of at least
/// [`REDACT_CLIPPED`] bytes of it, or all of a shorter value.
fn redact(message: &str, used: &[(String, String)]) -> String {
    let mut values: Vec<(&str, Vec<String>)> = Vec::new();
    for (name, value) in used.iter().filter(|(_, v)| v.len() >= REDACT_MIN) {
        let mut forms = vec![
            value.clone(),
            value.escape_default().to_string(),
            value.escape_debug().to_string(),
        ];
        forms.dedup();
        values.push((name, forms));
    }
    // Longest first, so a value that contains another is hidden whole.
    values.sort_by_key(|(_, forms)| std::cmp::Reverse(forms[0].len()));
    values.dedup();
    let mut out = message.to_owned();
    for (name, forms) in values {
        out = hide(&out, &forms, name);
    }
    out
}

/// Values shorter than this are left in messages: too common to hide
/// (`1`, `us`), too short to be a secret.
const REDACT_MIN: usize = 4;

/// The fewest bytes of a value's start that count as the value when a
/// finding clipped it.
const REDACT_CLIPPED: usize = 12;

/// `text` with each run that is one of a value's `forms`, or a start of
/// one of at least [`REDACT_CLIPPED`] bytes, written `${name}`; where
/// several match, the longest run goes.
fn hide(text: &str, forms: &[String], name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        let run = forms
            .iter()
            .filter_map(|form| {
                let mut common = rest.bytes().zip(form.bytes()).take_while(|(a, b)| a == b).count();
                while !rest.is_char_boundary(common) {
                    common -= 1;
                }
                (common >= form.len().min(REDACT_CLIPPED)).then_some(common)
            })
            .max();
        match run {
            Some(n) => {
                out.push_str(&format!("${{{name}}}"));
                rest = &rest[n..];
            }
            None => {
                out.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
        }
    }
    out
}

/// The process environment, for `${VAR}` expansion.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The shell variables a config's `${VAR}`s name, with their values: what
/// the CLI hands a deploy as its `variables` (the functions expand nothing
/// else). Unset ones are left out; loading the config reports them.
pub fn shell_variables(file: &Path, named: &[String]) -> BTreeMap<String, String> {
    let used = std::cell::RefCell::new(BTreeMap::new());
    let recording = |name: &str| {
        // A secret-like variable (a credential in the caller's shell) goes
        // only where its caller sends it by name (`--var NAME`).
        if is_secret_name(name) && !named.iter().any(|n| n == name) {
            return None;
        }
        let value = process_env(name);
        if let Some(v) = &value {
            used.borrow_mut().insert(name.to_owned(), v.clone());
        }
        value
    };
    if let Ok(text) = std::fs::read_to_string(file) {
        let _ = yaml::load(&text, &recording);
    }
    used.into_inner()
}

/// Finds the config and the repository root for a path given on the command
/// line: a config file itself, a `.porter` folder, or a repository folder.
pub fn locate(path: &Path) -> (PathBuf, PathBuf) {
    // `.porter`'s parent is "", which names no folder: the repository is
    // then the current one, said as ".".
    let folder = |p: Option<&Path>| match p {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.is_dir() {
        if path.file_name().is_some_and(|n| n == ".porter") {
            return (path.join("config"), folder(path.parent()));
        }
        return (path.join(".porter").join("config"), path.to_path_buf());
    }
    let root = match path.parent() {
        Some(dir) if dir.file_name().is_some_and(|n| n == ".porter") => folder(dir.parent()),
        dir => folder(dir),
    };
    (path.to_path_buf(), root)
}
