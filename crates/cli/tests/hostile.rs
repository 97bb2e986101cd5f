//! The hostile service repositories of `tests/hostile/` (issue 32): each
//! case is a folder an attacker who can push a branch could write (a
//! `.porter/config`, its overlays, links), with an `expect.json` saying
//! what `porter validate` or `porter render` must answer: refused or
//! accepted, what the output must say (the file, the key or JSON path,
//! why) and what it must never print (a secret's value). Every case runs,
//! and one failure lists every case that did not get its answer, so a run
//! shows each gap at once rather than the first.
//!
//! The binary runs as a person runs it: in the case's folder, with the
//! default path, and an environment holding only PATH, HOME and the case's
//! own variables (nothing of the test runner's shell can leak into it, or
//! be mistaken for a leak).

use std::io::Seek;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A guard against a hang, not a speed target (the fuzzer's config-budget
/// target and its figures hold the budget): a case takes a fraction of a
/// second, so one still running after this is stuck.
const HANG_LIMIT: Duration = Duration::from_secs(120);

/// Fewer cases than this means the folder was not found or was emptied:
/// the suite must not pass by finding nothing.
const FEWEST_CASES: usize = 30;

/// The keys an `expect.json` may hold; any other is a typo that would
/// otherwise weaken a case silently.
const KEYS: &[&str] = &["attack", "command", "args", "vars", "outcome", "contains", "absent"];

/// One case's `expect.json`.
#[derive(Debug)]
struct Expect {
    command: String,
    args: Vec<String>,
    vars: Vec<(String, String)>,
    refused: bool,
    contains: Vec<String>,
    absent: Vec<String>,
    limit: Duration,
}

/// What one run of the binary came to.
#[derive(Debug)]
struct Run {
    /// `None` when it was stopped for taking longer than the case allows.
    status: Option<ExitStatus>,
    /// Standard output and standard error, interleaved as written.
    output: String,
    took: Duration,
}

fn cases_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hostile")
}

fn strings(v: Option<&Value>, key: &str) -> Result<Vec<String>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{key}` holds {i}, not a string"))
            })
            .collect(),
        Some(other) => Err(format!("`{key}` is {other}, not a list of strings")),
    }
}

fn parse_expect(text: &str) -> Result<Expect, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("expect.json is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("expect.json is not an object")?;
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "expect.json has an unknown key `{k}` (known: {})",
            KEYS.join(", ")
        ));
    }
    if obj
        .get("attack")
        .and_then(Value::as_str)
        .is_none_or(|a| a.trim().is_empty())
    {
        return Err("expect.json needs `attack`: one line saying what the case tries".to_owned());
    }
    let command = match obj.get("command").and_then(Value::as_str) {
        Some(c @ ("validate" | "render")) => c.to_owned(),
        other => return Err(format!("`command` must be validate or render, found {other:?}")),
    };
    let refused = match obj.get("outcome").and_then(Value::as_str) {
        Some("refused") => true,
        Some("accepted") => false,
        other => return Err(format!("`outcome` must be refused or accepted, found {other:?}")),
    };
    let vars: Vec<(String, String)> = match obj.get("vars") {
        None => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(|| format!("`vars.{k}` is not a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("`vars` is {other}, not an object of strings")),
    };
    let contains = strings(obj.get("contains"), "contains")?;
    if refused && contains.is_empty() {
        return Err("a refused case must say what the refusal says (`contains`)".to_owned());
    }
    Ok(Expect {
        command,
        args: strings(obj.get("args"), "args")?,
        vars,
        refused,
        contains,
        absent: strings(obj.get("absent"), "absent")?,
        limit: HANG_LIMIT,
    })
}

/// Runs the case's command in its folder (validate and render write
/// nothing), stopping it past the case's time limit.
fn run(dir: &Path, expect: &Expect) -> Result<Run, String> {
    let mut sink = tempfile::tempfile().map_err(|e| format!("no temporary file: {e}"))?;
    let err_sink = sink
        .try_clone()
        .map_err(|e| format!("cannot share the output file: {e}"))?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_porter"));
    cmd.current_dir(dir)
        .env_clear()
        .arg(&expect.command)
        .args(&expect.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            sink.try_clone()
                .map_err(|e| format!("cannot share the output file: {e}"))?,
        ))
        .stderr(Stdio::from(err_sink));
    for name in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.envs(expect.vars.iter().map(|(k, v)| (k, v)));
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("porter does not start: {e}"))?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("cannot wait for porter: {e}"))? {
            break Some(status);
        }
        if started.elapsed() > expect.limit {
            // Ours, started above: stopped by its own handle.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let mut bytes = Vec::new();
    sink.rewind()
        .and_then(|()| std::io::Read::read_to_end(&mut sink, &mut bytes))
        .map_err(|e| format!("cannot read porter's output: {e}"))?;
    Ok(Run {
        status,
        output: String::from_utf8_lossy(&bytes).into_owned(),
        took,
    })
}

/// What is wrong with `run` for `expect`; empty when the case got its
/// answer. A refusal is exit status 1: 2 is a usage error (the case is
/// wrong), 101 a panic and a signal a crash, neither of which refuses
/// anything on purpose.
fn problems(expect: &Expect, run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    match run.status {
        None => out.push(format!("still running after {} s; stopped", expect.limit.as_secs())),
        Some(status) => {
            let code = status.code();
            if expect.refused && code != Some(1) {
                out.push(format!("expected a refusal (exit status 1), got {status}"));
            }
            if !expect.refused && code != Some(0) {
                out.push(format!("expected it accepted (exit status 0), got {status}"));
            }
        }
    }
    for s in &expect.contains {
        if !run.output.contains(s.as_str()) {
            out.push(format!("the output does not say {s:?}"));
        }
    }
    for s in &expect.absent {
        if run.output.contains(s.as_str()) {
            out.push(format!("the output prints {s:?}, which it must never"));
        }
    }
    out
}

/// The end of a long output is where the verdict is; the start names the
/// first findings. Both, with the middle cut.
fn shown(output: &str) -> String {
    const KEEP: usize = 1500;
    if output.len() <= 2 * KEEP {
        return output.to_owned();
    }
    let head_end = (0..=KEEP).rev().find(|i| output.is_char_boundary(*i)).unwrap_or(0);
    let tail_start = (output.len() - KEEP..=output.len())
        .find(|i| output.is_char_boundary(*i))
        .unwrap_or(output.len());
    format!(
        "{}\n[... {} bytes ...]\n{}",
        &output[..head_end],
        tail_start - head_end,
        &output[tail_start..]
    )
}

fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|entry| entry.expect("a readable folder entry").path())
        .filter(|p| p.join("expect.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Every case under `tests/hostile/`, each run through the binary; one
/// panic lists every case that did not get its answer.
#[test]
fn every_hostile_repository_gets_its_answer() {
    let root = cases_root();
    let dirs = case_dirs(&root);
    assert!(
        dirs.len() >= FEWEST_CASES,
        "found {} cases under {}; expected at least {FEWEST_CASES}",
        dirs.len(),
        root.display()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(dir.join("expect.json")) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: cannot read expect.json: {e}"));
                continue;
            }
        };
        let expect = match parse_expect(&text) {
            Ok(x) => x,
            Err(why) => {
                failures.push(format!("{name}: {why}"));
                continue;
            }
        };
        let outcome = match run(dir, &expect) {
            Ok(r) => r,
            Err(why) => {
                failures.push(format!("{name}: {why}"));
                continue;
            }
        };
        let wrong = problems(&expect, &outcome);
        if !wrong.is_empty() {
            let mut command = vec!["porter".to_owned(), expect.command.clone()];
            command.extend(expect.args.iter().cloned());
            let vars: Vec<String> = expect.vars.iter().map(|(k, _)| k.clone()).collect();
            failures.push(format!(
                "{name}: `{}` (in tests/hostile/{name}{}; {:.1} s)\n  - {}\n  output:\n{}",
                command.join(" "),
                if vars.is_empty() {
                    String::new()
                } else {
                    format!(", with {}", vars.join(", "))
                },
                outcome.took.as_secs_f64(),
                wrong.join("\n  - "),
                shown(&outcome.output)
                    .lines()
                    .map(|l| format!("    | {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases did not get their answer:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

/// The checks of one case's answer, on answers made up here: a crash is
/// never taken for a refusal, and a printed secret fails even a refusal.
#[test]
fn a_crash_or_a_leak_is_not_a_refusal() {
    let expect = parse_expect(
        r#"{"attack": "x", "command": "validate", "outcome": "refused",
            "contains": ["why"], "absent": ["s3cr3t"]}"#,
    )
    .expect("a well-formed expect.json");
    let answer = |status: Option<ExitStatus>, output: &str| Run {
        status,
        output: output.to_owned(),
        took: Duration::ZERO,
    };
    let exit = |code: i32| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("exit {code}"))
            .status()
            .expect("sh runs")
    };
    assert_eq!(problems(&expect, &answer(Some(exit(1)), "why")), Vec::<String>::new());
    assert_eq!(problems(&expect, &answer(Some(exit(101)), "why")).len(), 1, "a panic");
    assert_eq!(
        problems(&expect, &answer(Some(exit(2)), "why")).len(),
        1,
        "a usage error"
    );
    assert_eq!(problems(&expect, &answer(None, "why")).len(), 1, "a hang");
    assert_eq!(
        problems(&expect, &answer(Some(exit(1)), "why s3cr3t")).len(),
        1,
        "a leak"
    );
    assert_eq!(
        problems(&expect, &answer(Some(exit(1)), "")).len(),
        1,
        "no reason given"
    );
    assert!(
        parse_expect(r#"{"attack": "x", "command": "validate", "outcome": "refused", "contians": ["y"]}"#).is_err()
    );
}
