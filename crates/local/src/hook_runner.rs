//! The local stack's hook runner: each `command:` hook a process on this
//! machine, in a copy of the repository, as `nobody` when porter runs as
//! root, with the hook's variables only. In AWS hooks are CodeBuild
//! builds; this code is never linked into a function.

use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use porter_core::config::HookRun;
use porter_core::hooks::{self, GroupRun, Job, RunGroup};
use porter_core::phase::PhaseError;

/// How long a local hook may run: inside the local host's 300 s for one
/// call of the step, which runs all its hooks.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(240);

/// Hooks as processes; a `dockerfile:` hook is skipped with a warning (the
/// local stack has no Docker engine) unless `require_docker` makes it a
/// failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct Processes {
    pub require_docker: bool,
}

impl RunGroup for Processes {
    fn run_group<'a>(&'a self, root: &'a Path, group: &'a [Job]) -> BoxFuture<'a, GroupRun> {
        Box::pin(run_group(root, group, self.require_docker))
    }
}

async fn run_group(root: &Path, group: &[Job], require_docker: bool) -> GroupRun {
    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    let mut runs = Vec::new();
    for job in group {
        match &job.hook.run {
            HookRun::Dockerfile(file) if require_docker => {
                return Err(PhaseError::HookFailed {
                    hook: job.label.clone(),
                    reason: format!("it builds {file} with Docker, and the local stack has no Docker engine (run it in AWS, where it is a CodeBuild build, or give it `command:`)"),
                });
            }
            HookRun::Dockerfile(file) => {
                tracing::warn!(hook = %job.label, "skipped: a dockerfile hook needs a Docker engine");
                skipped.push(format!(
                    "{}: builds {file} with Docker, and the local stack has no Docker engine",
                    job.label
                ));
            }
            HookRun::Command(_) if job.hook.repo.is_some() => {
                skipped.push(format!(
                    "{}: its files come from another repository, which the local stack does not fetch",
                    job.label
                ));
            }
            HookRun::Command(cmd) => runs.push(run_one(root, job, cmd)),
        }
    }
    for (job, result) in futures::future::join_all(runs).await {
        result.map_err(|reason| PhaseError::HookFailed {
            hook: job.label.clone(),
            reason,
        })?;
        ran.push(job.label.clone());
    }
    Ok((ran, skipped))
}

/// The user local hooks run as when porter runs as root.
const UNPRIVILEGED: (u32, u32) = (65534, 65534);

/// Runs one `command:` hook in a copy of the repository, as `nobody` when
/// this process is root, with the hook's variables only.
async fn run_one<'j>(root: &Path, job: &'j Job, command: &str) -> (&'j Job, Result<(), String>) {
    let result = async {
        let scratch = tempfile::tempdir().map_err(|e| format!("no scratch space: {e}"))?;
        let repo = scratch.path().join("repo");
        copy_tree(root, &repo).map_err(|e| format!("cannot copy the repository: {e}"))?;
        let as_root = running_as_root();
        let mut cmd = if as_root {
            hand_over(scratch.path(), UNPRIVILEGED)
                .map_err(|e| format!("cannot hand the copy to the hook's user: {e}"))?;
            let mut c = tokio::process::Command::new("setpriv");
            c.args([
                "--reuid",
                &UNPRIVILEGED.0.to_string(),
                "--regid",
                &UNPRIVILEGED.1.to_string(),
                "--clear-groups",
                "--",
                "bash",
                "-c",
                command,
            ]);
            c
        } else {
            let mut c = tokio::process::Command::new("bash");
            c.args(["-c", command]);
            c
        };
        cmd.current_dir(&repo)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", scratch.path())
            .env("LANG", "C.UTF-8")
            .envs(&job.env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
        let out = tokio::time::timeout(LOCAL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| format!("still running after {} s, so it was stopped", LOCAL_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot wait for it: {e}"))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        for line in text.lines() {
            tracing::info!(hook = %job.label, "{line}");
        }
        if out.status.success() {
            Ok(())
        } else {
            let code = out
                .status
                .code()
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "killed".into());
            Err(format!("{code}; its output ends: {}", hooks::tail(&text)))
        }
    }
    .await;
    (job, result)
}

/// Whether this process runs as root (the owner of its own /proc entry).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Gives the scratch folder and everything in it to `(uid, gid)`.
fn hand_over(dir: &Path, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.map_err(std::io::Error::other)?;
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Copies a repository's files (not its links out, not `.git`).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
    {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).map_err(std::io::Error::other)?;
        let dest = to.join(rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
