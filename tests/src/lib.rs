//! Shared fixtures for the end-to-end tests: a moto per test, a service
//! folder on disk, and a driver that runs a phase to its end.

use std::future::Future;
use std::path::{Path, PathBuf};

use porter_core::aws::Aws;
use porter_core::phase::{PhaseError, PhaseResult, Step};
use porter_core::promote::{PromoteInput, PromoteState};
use porter_core::provision::{ProvisionInput, ProvisionState};
use porter_core::prune::{PruneInput, PruneState};
use porter_core::release::{Release, ReleaseRef};
use porter_core::target::Target;
use porter_local::deploy::Outcome;
use porter_local::moto::{self, Moto};

/// A fresh moto with clients pointed at it; moto stops when the stack is
/// dropped (the test's end, or its panic).
#[derive(Debug)]
pub struct Stack {
    pub moto: Moto,
    pub aws: Aws,
}

impl Stack {
    pub async fn start() -> Stack {
        let venv = moto::venv().expect("the virtualenv: run `make venv`");
        let moto = Moto::start(&venv, 0, None).await.expect("moto starts");
        let aws = Aws::unpinned(moto::sdk_config(&moto.endpoint(), "us-east-1").await);
        Stack { moto, aws }
    }
}

/// Calls a phase until it is done, feeding each pending state back in, as
/// the state machine's resume loop does (without the waits: moto completes
/// stacks at once).
pub async fn drive<S, O, F, Fut>(call: F) -> Result<O, PhaseError>
where
    F: FnMut(Option<S>) -> Fut,
    Fut: Future<Output = PhaseResult<S, O>>,
{
    drive_watching(call, |_| ()).await
}

/// [`drive`], with `watch` told of each call's end: the state it left
/// pending, or `None` when the phase is done.
pub async fn drive_watching<S, O, F, Fut>(mut call: F, mut watch: impl FnMut(Option<&S>)) -> Result<O, PhaseError>
where
    F: FnMut(Option<S>) -> Fut,
    Fut: Future<Output = PhaseResult<S, O>>,
{
    let mut state = None;
    for _ in 0..50 {
        match call(state.take()).await? {
            Step::Done { output } => {
                watch(None);
                return Ok(output);
            }
            Step::Pending { state: s, .. } => {
                watch(Some(&s));
                state = Some(s);
            }
        }
    }
    panic!("the phase did not finish in 50 calls")
}

/// Writes a service folder: an executable `start`, a file whose content
/// makes the release, and `.porter/config`.
pub fn service(dir: &Path, config: &str, content: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join(".porter")).unwrap();
    std::fs::write(dir.join(".porter/config"), config).unwrap();
    std::fs::write(dir.join("index.html"), content).unwrap();
    let start = dir.join("start");
    std::fs::write(&start, "#!/bin/sh\nexec python3 -m http.server 8080\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&start, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir.to_path_buf()
}

/// The phases' target for `release`: every region it names.
pub fn target(release: &Release) -> Target {
    Target {
        release: ReleaseRef::Inline(Box::new(release.clone())),
        region: None,
        regions: vec![],
    }
}

/// Provision's input for `release`, as deploy `execution`'s.
pub fn provision_input(release: &Release, execution: Option<&str>, state: Option<ProvisionState>) -> ProvisionInput {
    ProvisionInput {
        target: target(release),
        execution: execution.map(str::to_owned),
        state,
    }
}

/// Promote's input for `release` as a deploy's plain cutover (no canary,
/// no undo, no execution), or the rollback to `stack_name`.
pub fn promote_input(release: &Release, stack_name: Option<String>, state: Option<PromoteState>) -> PromoteInput {
    PromoteInput::cutover(target(release), stack_name, state)
}

/// Prune's input for `release`, keeping `keep` old stacks.
pub fn prune_input(release: &Release, keep: u32, state: Option<PruneState>) -> PruneInput {
    PruneInput {
        target: target(release),
        keep,
        execution: None,
        state,
    }
}

/// Starts a local stack with `options` and copies the example into a
/// folder of its own as service `name`: the stack, the folder (kept while
/// the test runs) and the service's path.
pub async fn started(
    options: porter_local::stack::Options,
    name: &str,
) -> (porter_local::stack::LocalStack, tempfile::TempDir, PathBuf) {
    let local = porter_local::stack::LocalStack::start(options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), name);
    (local, dir, svc)
}

/// Copies the `examples/hello-service` folder to `dir/name` as a service
/// of that name, so that each test deploys its own and nothing is shared.
pub fn example(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service");
    let dest = dir.join(name);
    copy_dir(&src, &dest);
    let cfg = std::fs::read_to_string(dest.join(".porter/config")).unwrap();
    std::fs::write(
        dest.join(".porter/config"),
        cfg.replace("service_name: hello", &format!("service_name: {name}"))
            .replace("hello-", &format!("{name}-")),
    )
    .unwrap();
    dest
}

/// Copies the folder `src` to `dest`, recursively.
pub fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dest.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Replaces `from` (which must be there) with `to` in the service's
/// `.porter/config`.
pub fn edit_config(svc: &Path, from: &str, to: &str) {
    let path = svc.join(".porter/config");
    let cfg = std::fs::read_to_string(&path).unwrap();
    assert!(cfg.contains(from), "the config has no {from:?}");
    std::fs::write(&path, cfg.replace(from, to)).unwrap();
}

/// Adds `text` at the end of the service's `.porter/config`, after a
/// blank line.
pub fn append_config(svc: &Path, text: &str) {
    let path = svc.join(".porter/config");
    let cfg = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{cfg}\n{text}")).unwrap();
}

/// The example's page, from its first release's to `release`'s.
pub fn page_of(svc: &Path, release: &str) {
    let html = std::fs::read_to_string(svc.join("index.html")).unwrap();
    std::fs::write(svc.join("index.html"), html.replace("release 1", release)).unwrap();
}

/// Fails the test, showing `text` whole, unless it contains `part`.
#[track_caller]
pub fn assert_says(text: &str, part: &str) {
    assert!(text.contains(part), "expected `{part}` in:\n{text}");
}

/// The outcome of a deploy that must have succeeded (else its error and
/// log are the panic's message).
pub fn succeeded((outcome, log): (Outcome, String)) -> Outcome {
    assert!(outcome.succeeded, "{:?}\n{log}", outcome.error);
    outcome
}

/// The error name and cause of a deploy that must have failed, and what
/// it printed.
pub fn failed((outcome, log): (Outcome, String)) -> (String, String, String) {
    assert!(!outcome.succeeded, "{log}");
    let (error, cause) = outcome.error.expect("a failed deploy names its error");
    (error, cause, log)
}

/// A plain HTTP client for the local stack's own endpoints.
pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// The security group [`break_provisioning`]'s stacks name, which does
/// not exist: the reason CloudFormation gives names it.
pub const MISSING_GROUP: &str = "sg-0000000000deadbee";

/// Gives the service a stack definition (one its overlay rules allow) with
/// a rule on the stack's own security group from a group that does not
/// exist, so CloudFormation refuses its stacks. The override goes in after
/// `after` (a line of the environment).
pub fn break_provisioning(svc: &Path, after: &str) {
    std::fs::write(
        svc.join(".porter/broken.json"),
        format!(
            r#"{{"Resources": {{"Broken": {{"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {{
                "GroupId": {{"Fn::GetAtt": ["InstanceSecurityGroup", "GroupId"]}},
                "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "SourceSecurityGroupId": "{MISSING_GROUP}"}}}}}}}}"#
        ),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(svc.join(".porter/config")).unwrap();
    assert!(cfg.contains(after), "the config has no line {after:?}");
    std::fs::write(
        svc.join(".porter/config"),
        cfg.replace(after, &format!("{after}  stack_definition_path: .porter/broken.json\n")),
    )
    .unwrap();
}

/// Stores a Secrets Manager secret in moto, as `porter local secret` does.
pub async fn put_secret(endpoint: &str, region: &str, name: &str, value: &str) {
    let sdk = moto::sdk_config(endpoint, region).await;
    porter_local::instance_secrets::put(
        endpoint,
        &sdk,
        region,
        porter_local::instance_secrets::Store::SecretsManager,
        name,
        value,
    )
    .await
    .unwrap();
}

/// Deploys the service folder at `path` to its `staging` environment on
/// the local stack, through the shipped state machine: the outcome and
/// what the deploy printed.
pub async fn deploy_staging(local: &porter_local::stack::LocalStack, path: &Path) -> (Outcome, String) {
    let opts = porter_local::deploy::Options {
        path: path.to_path_buf(),
        environment: "staging".into(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let outcome = porter_local::deploy::run(&local.moto.endpoint(), &opts, &mut out)
        .await
        .unwrap();
    (outcome, String::from_utf8(out).unwrap())
}
