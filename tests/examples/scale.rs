//! `make bench`'s scale figures: promote with 200 instances in a region and
//! prune with 1,000 old stacks of the service there, on moto. Prints, per
//! phase, the AWS calls by operation (counted from each request's signed
//! service and action), the invocations it took, the most calls and the
//! largest state of one invocation, and its wall time on moto. Nothing
//! here is pass/fail; the behaviour is tested in `tests/e2e`.
//!
//! Usage: scale [--instances N] [--stacks N]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use porter_core::aws::{Aws, Roots};
use porter_core::pack::{self, PackInput, Source};
use porter_core::promote;
use porter_core::provision;
use porter_core::prune;
use porter_core::release::Release;
use porter_e2e::{drive, drive_watching, promote_input, provision_input, prune_input, service, Stack};
use porter_local::bootstrap;

const ROLE: &str = "arn:aws:iam::123456789012:role/porter-deployment";
const REGION: &str = "us-west-2";
const SERVICE: &str = "scale";
const ZONES: [&str; 2] = ["a", "b"];

/// Calls seen, by `service:Action`.
#[derive(Clone, Debug, Default)]
struct Calls(Arc<Mutex<BTreeMap<String, usize>>>);

impl Calls {
    fn take(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

/// An HTTP client that counts each request, then sends it on.
#[derive(Debug)]
struct Counting {
    inner: SharedHttpClient,
    calls: Calls,
}

#[derive(Debug)]
struct CountingConnector {
    inner: SharedHttpConnector,
    calls: Calls,
}

impl HttpClient for Counting {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(CountingConnector {
            inner: self.inner.http_connector(settings, components),
            calls: self.calls.clone(),
        })
    }
}

impl HttpConnector for CountingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        *self
            .calls
            .0
            .lock()
            .expect("lock")
            .entry(operation(&request))
            .or_default() += 1;
        self.inner.call(request)
    }
}

/// `cloudformation:DescribeStacks`: the service from the signature's
/// credential scope, the action from the Query body or the JSON target.
fn operation(request: &HttpRequest) -> String {
    let header = |name: &str| request.headers().get(name).unwrap_or_default().to_owned();
    let service = header("authorization")
        .split("Credential=")
        .nth(1)
        .and_then(|scope| scope.split('/').nth(3))
        .unwrap_or("?")
        .to_owned();
    let target = header("x-amz-target");
    let action = if let Some((_, action)) = target.split_once('.') {
        action.to_owned()
    } else {
        let body = request.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
        body.split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_owned)
            .unwrap_or_else(|| request.method().to_owned())
    };
    format!("{service}:{action}")
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

fn config(instances: usize, vpc: Option<&bootstrap::Bootstrapped>) -> String {
    let (vpc_line, azs) = match vpc {
        Some(b) => (
            format!("    vpc_id: {}\n", b.vpc_id),
            b.subnets
                .iter()
                .zip(ZONES)
                .map(|(s, z)| format!("      - {{name: {REGION}{z}, subnet_id: {s}}}\n"))
                .collect::<String>(),
        ),
        None => (
            String::new(),
            ZONES
                .iter()
                .map(|z| format!("      - {{name: {REGION}{z}}}\n"))
                .collect(),
        ),
    };
    format!(
        "service_name: {SERVICE}\nporter_version: v5.3.0\nenvironments:\n- name: staging\n  role_arn: {ROLE}\n  instance_count: {instances}\n  instance_type: t3.micro\n  regions:\n  - name: {REGION}\n{vpc_line}    azs:\n{azs}    s3_bucket: {SERVICE}-artifacts\n    elb: {SERVICE}-elb\n    containers:\n    - {{name: web, topology: inet, inet_port: 8080}}\n"
    )
}

/// What one phase cost.
#[derive(Default)]
struct Figures {
    invocations: usize,
    most_calls: usize,
    largest_state: usize,
    calls: BTreeMap<String, usize>,
    wall: Duration,
}

impl Figures {
    fn invocation<S: serde::Serialize>(&mut self, calls: &Calls, pending: Option<&S>) {
        self.invocations += 1;
        let these = calls.take();
        self.most_calls = self.most_calls.max(these.values().sum());
        for (op, n) in these {
            *self.calls.entry(op).or_default() += n;
        }
        if let Some(state) = pending {
            self.largest_state = self.largest_state.max(serde_json::to_vec(state).expect("state").len());
        }
    }

    fn print(&self, title: &str) {
        let total: usize = self.calls.values().sum();
        println!("{title}");
        println!(
            "  {} invocation(s), {total} AWS calls, at most {} in one invocation; largest state between invocations {:.1} KB; {:.1} s on moto",
            self.invocations,
            self.most_calls,
            self.largest_state as f64 / 1e3,
            self.wall.as_secs_f64()
        );
        for (op, n) in &self.calls {
            println!("    {n:>6}  {op}");
        }
    }
}

async fn provisioned(aws: &Aws, release: &Release) {
    drive(|state| provision::run(aws, provision_input(release, None, state)))
        .await
        .expect("provision");
}

/// Promotes `release`, counting its calls.
async fn promoted(aws: &Aws, calls: &Calls, release: &Release, title: &str) -> Figures {
    calls.take();
    let mut figures = Figures::default();
    let started = Instant::now();
    let promoted = drive_watching(
        |state| promote::run(aws, promote_input(release, None, state)),
        |state| figures.invocation(calls, state),
    )
    .await
    .expect("promote");
    figures.wall = started.elapsed();
    let region = &promoted.regions[REGION];
    let in_service: usize = region.elbs.iter().map(|e| e.in_service.len()).sum();
    figures.print(&format!(
        "{title}: {in_service} InService, {} taken out",
        region.deregistered.len()
    ));
    figures
}

#[tokio::main]
async fn main() {
    let instances = arg("--instances", 200);
    let old_stacks = arg("--stacks", 1000);
    let stack = Stack::start().await;
    let calls = Calls::default();
    let counted = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(SharedHttpClient::new(Counting {
            inner: porter_core::aws::http_client(Roots::System),
            calls: calls.clone(),
        }))
        .endpoint_url(stack.moto.endpoint())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "scale",
        ))
        .load()
        .await;
    let aws = &Aws::unpinned(counted);
    let setup = &stack.aws;

    let dir = tempfile::tempdir().expect("temp dir");
    let root = service(dir.path(), &config(instances, None), "release 1");
    let (file, repo) = porter_core::config::locate(&root);
    let cfg = porter_core::config::load_file(&file, &repo, &|_| None)
        .expect("config")
        .deployable()
        .expect("deployable");
    let net = bootstrap::environment(setup, SERVICE, cfg.environment("staging").expect("staging"))
        .await
        .expect("bootstrap");
    // The instances go into moto's default VPC: its subnets are /20s,
    // where two releases of 200 fit (moto fills one subnet of the
    // bootstrapped VPC's /24s).
    let _ = net;
    let input = PackInput {
        environment: "staging".into(),
        source: Source::Path(root.clone()),
        provenance: Default::default(),
        image: None,
        artifact_bucket: None,
        sse_kms_key_id: None,
        variables: Default::default(),
        image_parameter: None,
        allowed_references: Vec::new(),
        rollout: None,
        longest_bake_seconds: None,
    };
    let first = pack::run(setup, &input).await.expect("pack").release;
    provisioned(setup, &first).await;
    println!("== scale: one region, on moto (its calls are counted; AWS's would be the same calls)");
    let first_promote = promoted(
        aws,
        &calls,
        &first,
        &format!("promote, {instances} instances, the first release"),
    )
    .await;
    std::fs::write(root.join("index.html"), "release 2").expect("write");
    let release = pack::run(setup, &input).await.expect("pack").release;
    provisioned(setup, &release).await;
    let cutover = promoted(
        aws,
        &calls,
        &release,
        &format!("promote, {instances} instances replacing {instances}"),
    )
    .await;

    // The old stacks: small ones with the service's tags, as prune finds
    // them (created with moto's own client, not counted).
    let cfn =
        aws_sdk_cloudformation::Client::new(&porter_local::moto::sdk_config(&stack.moto.endpoint(), REGION).await);
    let body = r#"{"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}"#;
    let tag = |k: &str, v: &str| aws_sdk_cloudformation::types::Tag::builder().key(k).value(v).build();
    let creating = Instant::now();
    for i in 0..old_stacks {
        cfn.create_stack()
            .stack_name(format!("{SERVICE}-staging-old-{i:04}"))
            .template_body(body)
            .tags(tag("porter:service", SERVICE))
            .tags(tag("porter:environment", "staging"))
            .send()
            .await
            .expect("create an old stack");
    }
    eprintln!(
        "({old_stacks} old stacks made in {:.1} s)",
        creating.elapsed().as_secs_f64()
    );

    calls.take();
    let mut prune_figures = Figures::default();
    let started = Instant::now();
    let pruned = drive_watching(
        |state| prune::run(aws, prune_input(&release, 0, state)),
        |state| prune_figures.invocation(&calls, state),
    )
    .await
    .expect("prune");
    prune_figures.wall = started.elapsed();
    let region = &pruned.regions[REGION];
    prune_figures.print(&format!(
        "prune, {old_stacks} old stacks ({} deleted, {} named in the result: {} bytes)",
        region.deleted_count(),
        region.deleted.len(),
        serde_json::to_vec(&pruned).expect("output").len()
    ));
    let most = [&first_promote, &cutover, &prune_figures]
        .iter()
        .map(|f| f.most_calls)
        .max()
        .unwrap_or(0);
    println!(
        "  derived: at 100 ms an AWS call, the busiest invocation takes about {:.0} s of the functions' 300 s",
        most as f64 * 0.1
    );
}
