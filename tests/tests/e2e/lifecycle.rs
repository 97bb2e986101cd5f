//! The four phases against moto: two releases to two regions, cutover,
//! rollback, prune, idempotence, a failing stack, a blackout.

use std::collections::BTreeMap;
use std::path::Path;

use porter_core::aws::{Aws, RegionClients};
use porter_core::balancer;
use porter_core::config::{self, Elb};
use porter_core::pack::{self, PackInput, Source};
use porter_core::phase::PhaseError;
use porter_core::promote::{self, Promoted};
use porter_core::provision::{self, Provisioned};
use porter_core::prune::{self, Pruned};
use porter_core::release::Release;
use porter_core::store;
use porter_e2e::{drive, drive_watching, promote_input, provision_input, prune_input, service, target, Stack};
use porter_local::bootstrap;

const ROLE: &str = "arn:aws:iam::123456789012:role/porter-deployment";
const REGIONS: [&str; 2] = ["us-west-2", "us-east-1"];

fn short(region: &str) -> &'static str {
    match region {
        "us-west-2" => "usw2",
        _ => "use1",
    }
}

/// The service's config; with `net`, each region names its VPC and subnets.
fn config_text(svc: &str, net: Option<&BTreeMap<String, bootstrap::Bootstrapped>>, extra: &str) -> String {
    let mut regions = String::new();
    for r in REGIONS {
        let azs: Vec<String> = match net.and_then(|n| n.get(r)) {
            Some(b) => b
                .subnets
                .iter()
                .zip(["a", "b"])
                .map(|(s, z)| format!("      - {{name: {r}{z}, subnet_id: {s}}}\n"))
                .collect(),
            None => ["a", "b"]
                .iter()
                .map(|z| format!("      - {{name: {r}{z}}}\n"))
                .collect(),
        };
        let vpc = net
            .and_then(|n| n.get(r))
            .map(|b| format!("    vpc_id: {}\n", b.vpc_id))
            .unwrap_or_default();
        regions.push_str(&format!(
            "  - name: {r}\n{vpc}    azs:\n{azs}    s3_bucket: {svc}-{s}-artifacts\n    elb: {svc}-{s}\n    containers:\n    - {{name: web, topology: inet, inet_port: 8080}}\n",
            azs = azs.concat(),
            s = short(r),
        ));
    }
    format!(
        "service_name: {svc}\nporter_version: v5.3.0\nenvironments:\n- name: staging\n  role_arn: {ROLE}\n  instance_count: 2\n  instance_type: t3.micro\n{extra}  regions:\n{regions}"
    )
}

struct Service {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    name: String,
}

/// A fresh moto, and in it the service `name` bootstrapped (see
/// [`bootstrapped`]).
async fn started(name: &str) -> (Stack, Service) {
    let stack = Stack::start().await;
    let svc = bootstrapped(&stack.aws, name, "").await;
    (stack, svc)
}

/// Release `content` of the service packed, provisioned and promoted:
/// the release and its stacks.
async fn deployed(aws: &Aws, svc: &Service, content: &str) -> (Release, Provisioned) {
    let release = pack_release(aws, svc, content).await.release;
    let stacks = provision(aws, &release).await.unwrap();
    promote(aws, &release, None).await.unwrap();
    (release, stacks)
}

/// A service with its account bootstrapped and its config naming the VPCs.
async fn bootstrapped(aws: &Aws, name: &str, extra: &str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let root = service(dir.path(), &config_text(name, None, ""), "release 1");
    let cfg = load(&root);
    let net = bootstrap::environment(aws, name, cfg.environment("staging").unwrap())
        .await
        .unwrap();
    service(dir.path(), &config_text(name, Some(&net), extra), "release 1");
    Service {
        _dir: dir,
        root,
        name: name.to_owned(),
    }
}

fn load(root: &Path) -> config::Config {
    let (file, repo) = config::locate(root);
    let loaded = config::load_file(&file, &repo, &|_| None).unwrap();
    loaded.deployable().unwrap()
}

/// Pack's input for the service's folder, to staging, with `variables`.
fn pack_input(svc: &Service, variables: BTreeMap<String, String>) -> PackInput {
    PackInput {
        environment: "staging".into(),
        source: Source::Path(svc.root.clone()),
        provenance: Default::default(),
        image: None,
        artifact_bucket: None,
        sse_kms_key_id: None,
        variables,
        image_parameter: None,
        allowed_references: Vec::new(),
        rollout: None,
        longest_bake_seconds: None,
    }
}

async fn pack_release(aws: &Aws, svc: &Service, content: &str) -> pack::Packed {
    std::fs::write(svc.root.join("index.html"), content).unwrap();
    pack::run(aws, &pack_input(svc, BTreeMap::new())).await.unwrap()
}

async fn provision(aws: &Aws, release: &Release) -> Result<Provisioned, PhaseError> {
    drive(|state| provision::run(aws, provision_input(release, Some("test"), state))).await
}

async fn promote(aws: &Aws, release: &Release, stack_name: Option<String>) -> Result<Promoted, PhaseError> {
    drive(|state| promote::run(aws, promote_input(release, stack_name.clone(), state))).await
}

async fn prune(aws: &Aws, release: &Release, keep: u32) -> Result<Pruned, PhaseError> {
    drive(|state| prune::run(aws, prune_input(release, keep, state))).await
}

async fn clients(aws: &Aws, region: &str) -> RegionClients {
    aws.region(region, ROLE, "test", &[]).await.unwrap()
}

/// Instance ids registered with the ELB, and their health.
async fn elb_view(aws: &Aws, region: &str, elb: &str) -> (Vec<String>, BTreeMap<String, String>, Option<String>) {
    lb_view(aws, region, &Elb::classic(elb)).await
}

/// Instance ids registered with a load balancer of either kind, their
/// health, and the promoted stack its tag names.
async fn lb_view(aws: &Aws, region: &str, lb: &Elb) -> (Vec<String>, BTreeMap<String, String>, Option<String>) {
    let c = clients(aws, region).await;
    let mut registered = balancer::registered(&c, lb).await.unwrap();
    registered.sort();
    let states = balancer::health(&c, lb, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.instance, h.state))
        .collect();
    let tag = prune::promoted_stack(&c, lb).await.unwrap();
    (registered, states, tag)
}

/// Replaces an object of a release in S3 (as someone with write access
/// to the bucket could).
async fn overwrite(s3: &aws_sdk_s3::Client, obj: &porter_core::release::S3Object, body: Vec<u8>) {
    s3.put_object()
        .bucket(&obj.bucket)
        .key(&obj.key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

/// The live stacks of `svc` in `region` are exactly those of `releases`.
async fn assert_live(aws: &Aws, region: &str, svc: &str, releases: &[&Provisioned]) {
    let mut want: Vec<String> = releases.iter().map(|p| p.stacks[region].stack_name.clone()).collect();
    want.sort();
    assert_eq!(live_stacks(aws, region, svc).await, want, "{region}");
}

/// No region has a live stack of `svc`.
async fn nothing_created(aws: &Aws, svc: &str) {
    for r in REGIONS {
        assert!(live_stacks(aws, r, svc).await.is_empty(), "nothing created in {r}");
    }
}

async fn live_stacks(aws: &Aws, region: &str, svc: &str) -> Vec<String> {
    let c = clients(aws, region).await;
    let mut names: Vec<String> = prune::service_stacks(&c, svc, "staging")
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.status != "DELETE_COMPLETE")
        .map(|s| s.stack_name)
        .collect();
    names.sort();
    names
}

/// Asserts that `stacks` serve in every region: exactly their instances,
/// all InService, and the ELB tag naming them.
async fn assert_serving(aws: &Aws, svc: &str, stacks: &BTreeMap<String, String>) {
    for region in REGIONS {
        let c = clients(aws, region).await;
        let stack_id = &stacks[region];
        let expected = promote::stack_instances(&c, stack_id).await.unwrap();
        assert_eq!(expected.len(), 2, "two instances per region");
        let (registered, health, tag) = elb_view(aws, region, &format!("{svc}-{}", short(region))).await;
        assert_eq!(
            registered, expected,
            "{region}: only the promoted stack's instances are in the ELB"
        );
        for id in &expected {
            assert_eq!(health.get(id).map(String::as_str), Some("InService"), "{region}: {id}");
        }
        assert_eq!(
            tag.as_deref(),
            Some(stack_id.as_str()),
            "{region}: ELB tag names the promoted stack"
        );
    }
}

fn ids(p: &Provisioned) -> BTreeMap<String, String> {
    p.stacks.iter().map(|(r, s)| (r.clone(), s.stack_id.clone())).collect()
}

#[tokio::test]
async fn two_releases_cut_over_roll_back_and_prune() {
    let (stack, svc) = started("hello").await;
    let aws = &stack.aws;
    // A neighbour in the same account: prune must never touch its stacks.
    let other = bootstrapped(aws, "neighbour", "").await;
    let other_release = pack_release(aws, &other, "neighbour 1").await.release;
    provision(aws, &other_release).await.unwrap();

    let r1 = pack_release(aws, &svc, "release 1").await.release;
    let p1 = provision(aws, &r1).await.unwrap();
    assert_eq!(p1.stacks.len(), 2, "a stack in each region");
    promote(aws, &r1, None).await.unwrap();
    assert_serving(aws, &svc.name, &ids(&p1)).await;

    let r2 = pack_release(aws, &svc, "release 2").await.release;
    assert_ne!(r1.version, r2.version, "new content, new release");
    let p2 = provision(aws, &r2).await.unwrap();
    let promoted = promote(aws, &r2, None).await.unwrap();
    assert_serving(aws, &svc.name, &ids(&p2)).await;
    for region in REGIONS {
        let old = promote::stack_instances(&clients(aws, region).await, &p1.stacks[region].stack_id)
            .await
            .unwrap();
        let mut out = promoted.regions[region].deregistered.clone();
        out.sort();
        assert_eq!(out, old, "{region}: release 1's instances were taken out");
    }

    // Rollback: promote release 1's stack again.
    let r1_stack = p1.stacks["us-west-2"].stack_name.clone();
    promote(aws, &r2, Some(r1_stack)).await.unwrap();
    assert_serving(aws, &svc.name, &ids(&p1)).await;

    // Forward again, then prune with keep 0: release 1 is what release 2
    // replaced, the rollback target, and stays.
    promote(aws, &r2, None).await.unwrap();
    let pruned = prune(aws, &r2, 0).await.unwrap();
    for region in REGIONS {
        let p = &pruned.regions[region];
        assert!(p.deleted.is_empty(), "{region}: {:?}", p.deleted);
        assert_eq!(p.rollback, vec![p1.stacks[region].stack_name.clone()]);
        assert_live(aws, region, "hello", &[&p1, &p2]).await;
    }
    assert_serving(aws, &svc.name, &ids(&p2)).await;

    // Release 3 replaces release 2: release 2 becomes the rollback target
    // and release 1 goes.
    let (r3, p3) = deployed(aws, &svc, "release 3").await;
    let pruned = prune(aws, &r3, 0).await.unwrap();
    for region in REGIONS {
        let p = &pruned.regions[region];
        assert_eq!(p.deleted, vec![p1.stacks[region].stack_name.clone()]);
        assert_eq!(p.rollback, vec![p2.stacks[region].stack_name.clone()]);
        assert_live(aws, region, "hello", &[&p2, &p3]).await;
        assert_eq!(
            live_stacks(aws, region, "neighbour").await.len(),
            1,
            "the neighbour's stack stays"
        );
    }
    assert_serving(aws, &svc.name, &ids(&p3)).await;
}

#[tokio::test]
async fn every_phase_run_twice_changes_nothing_the_second_time() {
    let (stack, svc) = started("twice").await;
    let aws = &stack.aws;

    let first = pack_release(aws, &svc, "v1").await;
    assert_eq!(first.uploaded.len(), 4, "payload, manifest, config, record");
    let again = pack_release(aws, &svc, "v1").await;
    assert!(
        again.uploaded.is_empty(),
        "a re-pack uploads nothing: {:?}",
        again.uploaded
    );
    assert_eq!(first.release, again.release);
    let r = first.release;

    let p = provision(aws, &r).await.unwrap();
    let p_again = provision(aws, &r).await.unwrap();
    assert_eq!(p, p_again, "the second provision adopts the same stacks");
    for region in REGIONS {
        assert_eq!(
            live_stacks(aws, region, "twice").await.len(),
            1,
            "{region}: no second stack"
        );
    }

    promote(aws, &r, None).await.unwrap();
    let view: Vec<_> = futures_view(aws, "twice").await;
    let again = promote(aws, &r, None).await.unwrap();
    assert!(
        again.regions.values().all(|p| p.deregistered.is_empty()),
        "nothing moved the second time"
    );
    assert_eq!(view, futures_view(aws, "twice").await);

    let pruned = prune(aws, &r, 0).await.unwrap();
    assert!(
        pruned.regions.values().all(|p| p.deleted.is_empty()),
        "nothing to prune: the only stack is promoted"
    );
    let pruned = prune(aws, &r, 0).await.unwrap();
    assert!(pruned.regions.values().all(|p| p.deleted.is_empty()));
    assert_serving(aws, "twice", &ids(&p)).await;
}

/// Prune with more old stacks than one step deletes: it spreads them over
/// steps, keeps its state small, names a few and counts the rest, and
/// keeps what `keep` and the rollback ask for.
#[tokio::test]
async fn prune_spreads_hundreds_of_deletes_over_steps() {
    let (stack, svc) = started("many").await;
    let aws = &stack.aws;
    let (r, _) = deployed(aws, &svc, "v1").await;

    let old = prune::DELETES_PER_STEP + 30;
    let region = REGIONS[0];
    let cfn = clients(aws, region).await.cloudformation;
    let tag = |k: &str, v: &str| aws_sdk_cloudformation::types::Tag::builder().key(k).value(v).build();
    for i in 0..old {
        cfn.create_stack()
            .stack_name(format!("many-staging-old-{i:04}"))
            .template_body(r#"{"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}"#)
            .tags(tag("porter:service", "many"))
            .tags(tag("porter:environment", "staging"))
            .send()
            .await
            .unwrap();
    }

    let mut steps = 0;
    let pruned = drive_watching(
        |state| prune::run(aws, prune_input(&r, 2, state)),
        |state| {
            steps += 1;
            let bytes = serde_json::to_vec(&state).unwrap().len();
            assert!(bytes < 4_000, "a pending state of {bytes} bytes");
        },
    )
    .await
    .unwrap();
    assert!(
        steps >= 3,
        "{old} stacks take more than one step of deletes, took {steps}"
    );
    let p = &pruned.regions[region];
    assert_eq!(p.deleted_count(), old - 2, "all but the two newest old ones");
    assert_eq!(p.deleted.len(), prune::NAMES_LISTED);
    assert_eq!(p.deleted[0], "many-staging-old-0000", "oldest first");
    assert!(p
        .deleted_line()
        .ends_with(&format!("and {} more", old - 2 - prune::NAMES_LISTED)));
    let mut left = live_stacks(aws, region, "many").await;
    left.retain(|n| n.contains("-old-"));
    assert_eq!(
        left,
        vec![
            format!("many-staging-old-{:04}", old - 2),
            format!("many-staging-old-{:04}", old - 1)
        ],
        "keep 2 keeps the two newest"
    );
    let other = &pruned.regions[REGIONS[1]];
    assert_eq!(other.deleted_count(), 0, "{:?}", other.deleted);
}

async fn futures_view(aws: &Aws, svc: &str) -> Vec<(Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    for region in REGIONS {
        let (registered, _, tag) = elb_view(aws, region, &format!("{svc}-{}", short(region))).await;
        out.push((registered, tag));
    }
    out
}

/// A stack that fails to create is reported (StackFailed, naming the stack
/// and the reason) and nothing is promoted: the release before serves on.
#[tokio::test]
async fn failed_stack_is_reported_and_nothing_promoted() {
    let (stack, svc) = started("failing").await;
    let aws = &stack.aws;
    let (_, p1) = deployed(aws, &svc, "good").await;

    // Release 2 brings a stack definition with a rule from a security
    // group that does not exist: CloudFormation refuses the stack.
    porter_e2e::break_provisioning(
        &svc.root,
        "  instance_count: 2
",
    );
    let r2 = pack_release(aws, &svc, "bad").await.release;
    let err = provision(aws, &r2).await.unwrap_err();
    match &err {
        PhaseError::StackFailed { stack, reason, .. } => {
            assert!(stack.contains(&r2.version), "names the stack: {stack}");
            assert!(reason.contains(porter_e2e::MISSING_GROUP), "says why: {reason}");
        }
        other => panic!("expected StackFailed, got {other:?}"),
    }
    assert_eq!(err.error_type(), "StackFailed");
    // Release 1 still serves everywhere.
    assert_serving(aws, "failing", &ids(&p1)).await;
}

#[tokio::test]
async fn a_blackout_window_refuses_every_phase() {
    let (stack, svc) = started("quiet").await;
    let aws = &stack.aws;

    let text = std::fs::read_to_string(svc.root.join(".porter/config")).unwrap();
    std::fs::write(
        svc.root.join(".porter/config"),
        text.replace(
            "  instance_count: 2\n",
            "  instance_count: 2\n  blackout_windows:\n  - {start_time: '2000-01-01T00:00:00Z', end_time: '2999-01-01T00:00:00Z'}\n",
        ),
    )
    .unwrap();
    std::fs::write(svc.root.join("index.html"), "during").unwrap();
    let input = pack_input(&svc, BTreeMap::new());
    let err = pack::run(aws, &input).await.unwrap_err();
    assert_eq!(err.error_type(), "Blackout");
    assert!(
        err.to_string().contains("2999-01-01T00:00:00Z"),
        "names the window: {err}"
    );

    // A release packed before its window opens: the later phases refuse
    // once it is open. (The stored config cannot be edited instead: it is
    // checked against the release's sha256.)
    let opens = chrono::Utc::now() + chrono::Duration::seconds(3);
    std::fs::write(
        svc.root.join(".porter/config"),
        text.replace(
            "  instance_count: 2\n",
            &format!(
                "  instance_count: 2\n  blackout_windows:\n  - {{start_time: '{}', end_time: '2999-01-01T00:00:00Z'}}\n",
                opens.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
    )
    .unwrap();
    let r = pack::run(aws, &input)
        .await
        .expect("packed before the window opens")
        .release;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(provision(aws, &r).await.unwrap_err().error_type(), "Blackout");
    assert_eq!(promote(aws, &r, None).await.unwrap_err().error_type(), "Blackout");
    assert_eq!(prune(aws, &r, 0).await.unwrap_err().error_type(), "Blackout");
}

/// What pack stored is what provision and promote deploy: a payload or a
/// resolved config changed in S3 after pack is refused before any stack is
/// made, naming the object and what changed.
#[tokio::test]
async fn a_release_changed_after_pack_is_refused() {
    let (stack, svc) = started("integrity").await;
    let aws = &stack.aws;
    let r1 = pack_release(aws, &svc, "release 1").await.release;
    let s3 = aws.s3();

    // The resolved config, edited in place (a role swapped, say).
    let original = store::read_bytes(&s3, &r1.config).await.unwrap();
    let edited = String::from_utf8(original.clone())
        .unwrap()
        .replace("t3.micro", "t3.large");
    assert_ne!(edited.as_bytes(), original.as_slice());
    overwrite(&s3, &r1.config, edited.into_bytes()).await;
    for err in [
        provision(aws, &r1).await.unwrap_err(),
        promote(aws, &r1, None).await.unwrap_err(),
    ] {
        assert_eq!(err.error_type(), "Invalid", "{err}");
        let msg = err.to_string();
        porter_e2e::assert_says(&msg, &r1.config.url());
        porter_e2e::assert_says(&msg, "changed after pack");
    }
    nothing_created(aws, &svc.name).await;
    overwrite(&s3, &r1.config, original).await;

    // The payload, replaced by other bytes.
    overwrite(&s3, &r1.payload, b"not the packed tarball".to_vec()).await;
    let err = provision(aws, &r1).await.unwrap_err();
    assert_eq!(err.error_type(), "Invalid", "{err}");
    let msg = err.to_string();
    porter_e2e::assert_says(&msg, &r1.payload.url());
    porter_e2e::assert_says(&msg, "changed after pack");
    nothing_created(aws, &svc.name).await;

    // Packing again restores the payload, and the release deploys.
    let again = pack_release(aws, &svc, "release 1").await;
    assert_eq!(again.release.version, r1.version);
    assert_eq!(
        again.uploaded,
        vec![r1.payload.key.clone()],
        "only the payload is written again"
    );
    provision(aws, &r1).await.unwrap();
}

/// The same code with another resolved config (here a `${VAR}` handed in
/// with another value) is another release, with a stack of its own: a
/// config change never adopts the old stack. Only the variables handed in
/// expand; the process environment does not.
#[tokio::test]
async fn the_same_code_with_another_config_is_another_release() {
    let (stack, svc) = started("configs").await;
    let aws = &stack.aws;
    porter_e2e::edit_config(&svc.root, "instance_type: t3.micro", "instance_type: ${ITYPE}");
    let pack_with = |itype: Option<&str>| {
        let input = pack_input(
            &svc,
            itype
                .map(|t| [("ITYPE".to_owned(), t.to_owned())].into())
                .unwrap_or_default(),
        );
        async move { pack::run(aws, &input).await }
    };
    let r1 = pack_with(Some("t3.micro")).await.unwrap().release;
    let r2 = pack_with(Some("t3.small")).await.unwrap().release;
    assert_eq!(r1.sha256, r2.sha256, "the payload is the same");
    assert_ne!(r1.version, r2.version, "the release is not");
    assert_ne!(r1.record, r2.record);
    assert_ne!(r1.config_sha256, r2.config_sha256);

    // Set in this process, but not handed in: not expanded, and named.
    std::env::set_var("ITYPE", "t3.nano");
    let err = pack_with(None).await.unwrap_err();
    std::env::remove_var("ITYPE");
    assert_eq!(err.error_type(), "Invalid", "{err}");
    assert!(err.to_string().contains("the variable `ITYPE` is not set"), "{err}");
    assert!(!err.to_string().contains("t3.nano"), "{err}");
}

#[tokio::test]
async fn an_instance_auto_scaling_replaces_in_a_promoted_stack_serves() {
    let (stack, svc) = started("replaced").await;
    let aws = &stack.aws;
    let (_, p1) = deployed(aws, &svc, "release 1").await;

    let region = "us-west-2";
    let c = clients(aws, region).await;
    let before = promote::stack_instances(&c, &p1.stacks[region].stack_id).await.unwrap();
    let gone = before[0].clone();
    c.autoscaling
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&gone)
        .should_decrement_desired_capacity(false)
        .send()
        .await
        .unwrap();
    let after = promote::stack_instances(&c, &p1.stacks[region].stack_id).await.unwrap();
    assert_eq!(after.len(), before.len(), "Auto Scaling replaced it: {after:?}");
    assert!(!after.contains(&gone));
    let (registered, health, _) = elb_view(aws, region, "replaced-usw2").await;
    assert_eq!(
        registered, after,
        "the replacement is registered, the terminated one is not"
    );
    assert!(health.values().all(|s| s == "InService"), "{health:?}");

    // Release 2 takes over: release 1's group is detached, so a
    // replacement there would no longer get traffic.
    let r2 = pack_release(aws, &svc, "release 2").await.release;
    let p2 = provision(aws, &r2).await.unwrap();
    let promoted = promote(aws, &r2, None).await.unwrap();
    let mut out = promoted.regions[region].deregistered.clone();
    out.sort();
    assert_eq!(out, after, "release 1's instances were taken out");
    let new = promote::stack_instances(&c, &p2.stacks[region].stack_id).await.unwrap();
    let (registered, _, _) = elb_view(aws, region, "replaced-usw2").await;
    assert_eq!(registered, new);
}

fn denied<T: std::fmt::Debug>(result: Result<T, PhaseError>, needles: &[&str]) -> String {
    let e = result.expect_err("refused");
    assert_eq!(e.error_type(), "AccessDenied", "{e}");
    let m = e.to_string();
    for n in needles {
        assert!(m.contains(n), "{n:?} not in: {m}");
    }
    m
}

/// What the repository cannot decide (service, role, regions, load
/// balancers, a rollback's stack) is checked against the pins.
#[tokio::test]
async fn pins_decide_what_the_repository_cannot() {
    use porter_core::pins::{self, Pinning};
    let stack = Stack::start().await;
    let svc = bootstrapped(&stack.aws, "pinned", "").await;
    let pinned = |service: &str| {
        stack.aws.clone().with_pinning(Pinning::Pinned {
            path: pins::DEFAULT_PATH.into(),
            service: Some(service.into()),
        })
    };
    let aws = pinned("pinned");

    // What bootstrap pinned and tagged deploys.
    let (r1, _) = deployed(&aws, &svc, "release 1").await;

    // Another service's name in the config.
    let e = pack::run(&pinned("someone-else"), &pack_input(&svc, BTreeMap::new())).await;
    denied(e, &["someone-else", "ServiceName"]);

    // No pin for the environment at all.
    let unpinned = stack.aws.clone().with_pinning(Pinning::Pinned {
        path: "/elsewhere/".into(),
        service: None,
    });
    denied(provision(&unpinned, &r1).await, &["not pinned", "/elsewhere/staging"]);

    // Another role (account) than the pinned one: refused before pack writes.
    let text = std::fs::read_to_string(svc.root.join(".porter/config")).unwrap();
    let other_role = "arn:aws:iam::999999999999:role/admin";
    std::fs::write(svc.root.join(".porter/config"), text.replace(ROLE, other_role)).unwrap();
    denied(
        pack::run(&aws, &pack_input(&svc, BTreeMap::new())).await,
        &[other_role, ROLE, "us-west-2"],
    );
    std::fs::write(svc.root.join(".porter/config"), &text).unwrap();

    // A region the administrator took out of the pin: refused at provision
    // of a release packed before, nothing created there.
    let r2 = pack_release(&aws, &svc, "release 2").await.release;
    let ssm = stack.aws.ssm();
    ssm.put_parameter()
        .name("/porter/environments/staging")
        .value(format!(r#"{{"regions": {{"us-west-2": {{"role_arn": "{ROLE}"}}}}}}"#))
        .overwrite(true)
        .send()
        .await
        .unwrap();
    denied(provision(&aws, &r2).await, &["us-east-1", "not pinned to region"]);
    let stack_name = porter_core::template::stack_name(&r2.service, &r2.environment, &r2.version);
    for region in REGIONS {
        assert!(
            !live_stacks(&stack.aws, region, "pinned").await.contains(&stack_name),
            "{stack_name} was created in {region}"
        );
    }
    bootstrap::pin(&stack.aws, load(&svc.root).environment("staging").unwrap())
        .await
        .unwrap();

    // A load balancer tagged for another service: provision and promote
    // refuse it.
    let elb = clients(&stack.aws, "us-east-1").await.elb;
    let tag_service = |service: &'static str| {
        elb.add_tags()
            .load_balancer_names("pinned-use1")
            .tags(
                aws_sdk_elasticloadbalancing::types::Tag::builder()
                    .key(pins::SERVICE_TAG)
                    .value(service)
                    .build()
                    .unwrap(),
            )
            .send()
    };
    tag_service("other").await.unwrap();
    denied(provision(&aws, &r2).await, &["pinned-use1", "`other`"]);
    denied(promote(&aws, &r1, None).await, &["pinned-use1", "`other`"]);
    let (registered, _, _) = elb_view(&stack.aws, "us-east-1", "pinned-use1").await;
    assert_eq!(registered.len(), 2, "release 1 still serves: {registered:?}");
    tag_service("pinned").await.unwrap();

    // A rollback to a stack that is not this service's.
    let cfn = clients(&stack.aws, "us-west-2").await.cloudformation;
    cfn.create_stack()
        .stack_name("other-staging-0123456789ab")
        .template_body(r#"{"Resources": {"H": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}"#)
        .tags(
            aws_sdk_cloudformation::types::Tag::builder()
                .key(pins::SERVICE_TAG)
                .value("other")
                .build(),
        )
        .tags(
            aws_sdk_cloudformation::types::Tag::builder()
                .key(pins::ENVIRONMENT_TAG)
                .value("staging")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut west_only = target(&r1);
    west_only.region = Some("us-west-2".into());
    let e = promote::run(
        &aws,
        promote::PromoteInput {
            target: west_only,
            ..promote_input(&r1, Some("other-staging-0123456789ab".into()), None)
        },
    )
    .await;
    denied(e, &["other-staging-0123456789ab", "`other`"]);

    // With everything back as pinned, the deploy goes on.
    provision(&aws, &r2).await.unwrap();
    promote(&aws, &r2, None).await.unwrap();
}
