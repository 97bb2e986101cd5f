//! provision: one CloudFormation stack per release per region, all regions
//! at once, with a resumable wait for CREATE_COMPLETE.
//!
//! Stack names are derived from the release, so a re-run (a retried Lambda,
//! a re-delivered job) finds the stack it created and adopts it: moto, like
//! a careless client, would otherwise answer AlreadyExists.

use std::collections::BTreeMap;

use aws_sdk_cloudformation::types::{Capability, OnFailure, StackStatus, Tag};
use serde::{Deserialize, Serialize};

use crate::aws::{self, Aws, RegionClients};
use crate::config::{Region, StackOnFailure};
use crate::phase::{stack_wait, PhaseError, PhaseResult, Step};
use crate::release::S3Object;
use crate::store;
use crate::target::{each_region, Deployment, Target};
use crate::template::{self, PayloadLocation, RenderContext};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionInput {
    #[serde(flatten)]
    pub target: Target,
    /// Recorded on the stacks (the Step Functions execution, the job).
    #[serde(default)]
    pub execution: Option<String>,
    #[serde(default)]
    pub state: Option<ProvisionState>,
}

/// Per region: the stack being waited on and how often it was checked.
pub type ProvisionState = BTreeMap<String, Waiting>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub stack_id: String,
    pub checks: u32,
    #[serde(default)]
    pub done: bool,
    /// Seconds since CloudFormation began the stack, at the last check.
    #[serde(default)]
    pub age_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRef {
    pub stack_id: String,
    pub stack_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provisioned {
    pub stacks: BTreeMap<String, StackRef>,
}

pub async fn run(aws: &Aws, input: ProvisionInput) -> PhaseResult<ProvisionState, Provisioned> {
    let dep = Deployment::load(aws, &input.target).await?;
    if let Some(execution) = input.execution.as_deref() {
        crate::lease::check_fence(aws, &dep.release.service, &dep.release.environment, execution).await?;
    }
    let regions = dep.pinned_regions(aws, &input.target).await?;
    let previous = input.state.unwrap_or_default();
    if previous.is_empty() {
        dep.check_blackout()?;
    }
    let execution = input.execution.as_deref().unwrap_or("manual");
    let dep = &dep;
    let previous = &previous;
    let results = each_region(regions, |region| async move {
        match previous.get(&region.name) {
            Some(w) if w.done => Ok(w.clone()),
            Some(w) => check(dep, &dep.clients(aws, region, "provision").await?, region, w.clone()).await,
            None => start(aws, dep, region, execution).await,
        }
    })
    .await?;

    let stack_name = dep.stack_name();
    let total = results.len();
    let finished = results.values().filter(|w| w.done).count();
    if finished == total {
        let stacks = results
            .into_iter()
            .map(|(r, w)| {
                (
                    r,
                    StackRef {
                        stack_id: w.stack_id,
                        stack_name: stack_name.clone(),
                    },
                )
            })
            .collect();
        return Ok(Step::Done {
            output: Provisioned { stacks },
        });
    }
    let waiting: Vec<&str> = results
        .iter()
        .filter(|(_, w)| !w.done)
        .map(|(r, _)| r.as_str())
        .collect();
    let wait = results
        .values()
        .filter(|w| !w.done)
        .map(|w| stack_wait(w.checks.saturating_sub(1)))
        .min()
        .unwrap_or(5);
    Ok(Step::Pending {
        progress: format!(
            "stack {stack_name}: {finished}/{total} regions complete; waiting on {}",
            waiting.join(", ")
        ),
        percent: (10 + 80 * finished / total.max(1)) as u8,
        state: results,
        wait_seconds: wait,
    })
}

/// First call in a region: ship the payload, create (or adopt) the stack,
/// and check it at once: a stack that completes fast costs no wait at all.
async fn start(aws: &Aws, dep: &Deployment, region: &Region, execution: &str) -> Result<Waiting, PhaseError> {
    let clients = dep.clients(aws, region, "provision").await?;
    // Each load balancer must be this service's before anything is made.
    let mut serving = None;
    for elb in &region.elbs {
        let tags = crate::balancer::check_owner(&clients, elb, &dep.release.service, &dep.release.environment).await?;
        crate::balancer::check_fits(&clients, elb, region).await?;
        serving = serving.or_else(|| {
            tags.get(crate::promote::PROMOTED_TAG)
                .filter(|s| !s.is_empty())
                .cloned()
        });
    }
    let stack_name = dep.stack_name();
    let stack_id = match find_stack(&clients, &stack_name, execution).await? {
        Some(id) => {
            tracing::info!(region = %region.name, stack = %stack_name, "adopting the stack an earlier run created");
            id
        }
        None => {
            let payload = ship_payload(aws, dep, &clients, region).await?;
            let ctx = RenderContext {
                elb_security_groups: crate::balancer::security_groups(&clients, &region.elbs).await?,
                live_capacity: match &serving {
                    Some(stack) => live_capacity(&clients, stack).await,
                    None => None,
                },
            };
            let env = dep.environment()?;
            let body = template::render(&dep.config, env, region, &dep.release, &payload, &ctx);
            template::check_user_data(&body, &stack_name, &region.name).map_err(PhaseError::Invalid)?;
            match create_stack(dep, &clients, region, &stack_name, body, execution).await {
                // A retried CreateStack (a lost answer) whose first try
                // made the stack: the name carries the release's version,
                // so it is this release's stack. AWS answers such a retry
                // from its request token; not every endpoint does.
                Err(PhaseError::StackFailed { reason, .. }) if reason.contains("AlreadyExists") => {
                    match find_stack(&clients, &stack_name, execution).await? {
                        Some(id) => id,
                        None => {
                            return Err(PhaseError::Retryable(format!(
                                "stack {stack_name} in {} was said to exist but cannot be found: {reason}",
                                region.name
                            )))
                        }
                    }
                }
                other => other?,
            }
        }
    };
    check(
        dep,
        &clients,
        region,
        Waiting {
            stack_id,
            checks: 0,
            done: false,
            age_seconds: 0,
        },
    )
    .await
}

/// The stack of this name that is not deleted, if any. A failed one kept
/// by `stack_creation.on_failure` from another deploy is not adopted: the
/// name is taken until it is deleted, and this deploy says so.
async fn find_stack(clients: &RegionClients, name: &str, execution: &str) -> Result<Option<String>, PhaseError> {
    match clients.cloudformation.describe_stacks().stack_name(name).send().await {
        Ok(out) => {
            let live = out
                .stacks()
                .iter()
                .find(|s| s.stack_status() != Some(&StackStatus::DeleteComplete));
            let refuse = |reason: String| PhaseError::StackFailed {
                region: clients.region.clone(),
                stack: name.to_owned(),
                reason,
            };
            // A stack of this name on its way out (or stuck there) is not
            // this release's to adopt: creating again waits for it to go.
            if let Some(s) = live.filter(|s| {
                matches!(
                    s.stack_status(),
                    Some(StackStatus::DeleteInProgress | StackStatus::DeleteFailed)
                )
            }) {
                return Err(refuse(format!(
                    "a stack of this name is {}: {}; delete it (or wait until it is gone), then deploy again",
                    s.stack_status().map(|st| st.as_str()).unwrap_or_default(),
                    s.stack_status_reason().unwrap_or("no reason given")
                )));
            }
            if let Some(s) = live.filter(|s| {
                matches!(
                    s.stack_status(),
                    Some(
                        StackStatus::CreateFailed
                            | StackStatus::RollbackInProgress
                            | StackStatus::RollbackComplete
                            | StackStatus::RollbackFailed
                    )
                ) && !s
                    .tags()
                    .iter()
                    .any(|t| t.key() == Some("porter:execution") && t.value() == Some(execution))
            }) {
                return Err(refuse(format!(
                    "a failed stack of this release is kept from an earlier deploy ({}: {}; stack_creation.on_failure kept it to debug): delete it (aws cloudformation delete-stack --stack-name {name} --region {}) or deploy another version",
                    s.stack_status().map(|st| st.as_str()).unwrap_or_default(),
                    s.stack_status_reason().unwrap_or("no reason given"),
                    clients.region
                )));
            }
            Ok(live.and_then(|s| s.stack_id().map(str::to_owned)))
        }
        Err(e)
            if e.as_service_error()
                .and_then(|se| se.meta().message())
                .is_some_and(|m| m.contains("does not exist")) =>
        {
            Ok(None)
        }
        Err(e) => Err(aws::classify(&format!("describe stack {name}"), e)),
    }
}

/// The region of the bucket pack wrote the payload to: one of the
/// environment's region buckets (pack without an artifact bucket), else
/// the installation's artifact bucket, in the caller's own region.
fn payload_region(aws: &Aws, dep: &Deployment, bucket: &str) -> Result<String, PhaseError> {
    let env = dep.environment()?;
    if let Some(r) = env.regions.iter().find(|r| r.s3_bucket == bucket) {
        return Ok(r.name.clone());
    }
    aws.home_region().map(str::to_owned).ok_or_else(|| {
        PhaseError::Invalid(format!(
            "the payload's bucket {bucket} is not a region bucket of {}, and no home region is set (AWS_REGION) to find it in",
            env.name
        ))
    })
}

/// Copies the payload into the region's bucket, where the instances read it.
async fn ship_payload(
    aws: &Aws,
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
) -> Result<PayloadLocation, PhaseError> {
    let src = &dep.release.payload;
    // Read where the payload lives: S3 answers a request signed for
    // another region than the bucket's with a redirect the SDK does not
    // follow. The copy below goes to the destination's region, as S3's
    // CopyObject wants.
    let home = payload_region(aws, dep, &src.bucket)?;
    store::verify_payload(&clients.s3_in(&home), &dep.release).await?;
    let dest = S3Object {
        bucket: region.s3_bucket.clone(),
        key: src.key.clone(),
    };
    if dest != *src && !store::exists(&clients.s3, &dest).await? {
        let mut copy = clients
            .s3
            .copy_object()
            .copy_source(format!("{}/{}", src.bucket, src.key))
            .bucket(&dest.bucket)
            .key(&dest.key)
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms);
        if let Some(k) = &region.sse_kms_key_id {
            copy = copy.ssekms_key_id(k);
        }
        copy.send()
            .await
            .map_err(aws::err(format!("copy the payload to {}", dest.url())))?;
    }
    Ok(PayloadLocation {
        bucket: dest.bucket,
        key: dest.key,
        sha256: dep.release.sha256.clone(),
    })
}

/// The desired capacity of the serving stack's Auto Scaling groups, or
/// `None` when it cannot be read (a stack deleted by hand): the new fleet
/// then starts at the config's count.
async fn live_capacity(clients: &RegionClients, stack_id: &str) -> Option<u32> {
    let groups = crate::promote::stack_groups(clients, stack_id).await.ok()?;
    let described = crate::promote::describe_groups(clients, &groups).await.ok()?;
    let total: i32 = described.iter().filter_map(|g| g.desired_capacity()).sum();
    u32::try_from(total).ok().filter(|n| *n > 0)
}

/// The largest `TemplateBody` CloudFormation takes, in bytes.
pub const TEMPLATE_BODY_LIMIT: usize = 51_200;

/// Where a large template goes: under the templates prefix of the region's
/// bucket (release instances may not write there), keyed by the release's
/// version and the template's own SHA-256, so a new version, or the same
/// version rendered with other values, never reuses another's template.
pub fn template_object(bucket: &str, release: &crate::release::Release, region: &str, sha256: &str) -> S3Object {
    S3Object {
        bucket: bucket.to_owned(),
        key: format!(
            "{TEMPLATES_PREFIX}/{}/{}/{}/{region}/{sha256}.template.json",
            release.service, release.environment, release.version
        ),
    }
}

/// The prefix of the region buckets that holds large templates.
pub const TEMPLATES_PREFIX: &str = "porter-templates";

/// Uploads a large template and answers its `TemplateURL`: the regional
/// endpoint of the bucket's region (the global one refuses buckets of
/// regions launched since 2019), pinned to the object version it checked
/// when the bucket keeps versions. What S3 holds is checked against what
/// was rendered before CloudFormation is pointed at it.
async fn upload_template(
    clients: &RegionClients,
    region: &Region,
    release: &crate::release::Release,
    body: Vec<u8>,
) -> Result<String, PhaseError> {
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(&body));
    let obj = template_object(&region.s3_bucket, release, &region.name, &sha256);
    let stored = store::Store {
        s3: &clients.s3,
        kms: region.sse_kms_key_id.as_deref(),
    }
    .put_checked(&obj, body, &sha256)
    .await?;
    Ok(template_url(&obj, &region.name, stored.version_id.as_deref()))
}

/// A regional S3 URL of `obj` in `region` (its partition's domain), as
/// CloudFormation's `TemplateURL` wants it.
pub fn template_url(obj: &S3Object, region: &str, version_id: Option<&str>) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let url = format!("https://{}.s3.{region}.{domain}/{}", obj.bucket, obj.key);
    match version_id {
        Some(v) => format!("{url}?versionId={}", percent_encode(v)),
        None => url,
    }
}

/// A query value with everything but RFC 3986's unreserved characters
/// percent-encoded.
fn percent_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn create_stack(
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
    stack_name: &str,
    body: serde_json::Value,
    execution: &str,
) -> Result<String, PhaseError> {
    let r = &dep.release;
    let env_stack = dep.environment()?.stack_creation;
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let body = serde_json::to_string(&body).expect("templates serialize");
    let mut create = clients
        .cloudformation
        .create_stack()
        .stack_name(stack_name)
        .capabilities(Capability::CapabilityIam)
        .on_failure(match env_stack.on_failure {
            StackOnFailure::Delete => OnFailure::Delete,
            StackOnFailure::Rollback => OnFailure::Rollback,
            StackOnFailure::DoNothing => OnFailure::DoNothing,
        })
        .timeout_in_minutes(i32::try_from(env_stack.timeout_minutes).unwrap_or(i32::MAX))
        .client_request_token(format!("porter-{}", r.version))
        .tags(tag("porter:service", &r.service))
        .tags(tag("porter:environment", &r.environment))
        .tags(tag("porter:version", &r.version))
        .tags(tag("porter:revision", &r.revision))
        .tags(tag("porter:execution", execution));
    // CloudFormation takes at most 51,200 bytes inline; larger templates
    // (big stack_definition_path overrides) go through the region's bucket.
    if body.len() <= TEMPLATE_BODY_LIMIT {
        create = create.template_body(body);
    } else {
        create = create.template_url(upload_template(clients, region, r, body.into_bytes()).await?);
    }
    let out = create
        .send()
        .await
        .map_err(|e| match aws::classify(&format!("create stack {stack_name}"), e) {
            PhaseError::Aws(m) | PhaseError::Invalid(m) => PhaseError::StackFailed {
                region: region.name.clone(),
                stack: stack_name.to_owned(),
                reason: m,
            },
            other => other,
        })?;
    let id = out.stack_id().unwrap_or(stack_name).to_owned();
    tracing::info!(region = %region.name, stack = %stack_name, "stack created");
    Ok(id)
}

/// Reads the stack's status and decides: done, wait, or failed.
async fn check(
    dep: &Deployment,
    clients: &RegionClients,
    region: &Region,
    mut w: Waiting,
) -> Result<Waiting, PhaseError> {
    let out = clients
        .cloudformation
        .describe_stacks()
        .stack_name(&w.stack_id)
        .send()
        .await
        .map_err(aws::err(format!("describe stack {}", w.stack_id)))?;
    let stack = out.stacks().first().ok_or_else(|| PhaseError::StackFailed {
        region: region.name.clone(),
        stack: w.stack_id.clone(),
        reason: "the stack is gone".into(),
    })?;
    let status = stack.stack_status().cloned().unwrap_or(StackStatus::CreateInProgress);
    w.checks += 1;
    if let Some(created) = stack
        .creation_time()
        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
    {
        w.age_seconds = created.elapsed().map(|d| d.as_secs()).unwrap_or_default();
    }
    match status {
        StackStatus::CreateComplete | StackStatus::UpdateComplete => {
            w.done = true;
            Ok(w)
        }
        StackStatus::CreateInProgress | StackStatus::ReviewInProgress => Ok(w),
        other => {
            let mut reason = failure_reason(clients, &w.stack_id, other.as_str(), stack.stack_status_reason()).await;
            let kept = dep.environment()?.stack_creation.on_failure;
            if kept != StackOnFailure::Delete {
                reason.push_str(&format!(
                    "; the stack is kept to debug it (stack_creation.on_failure: {}): it serves nothing, the next deploy's prune deletes it, and this version cannot be deployed again until it is gone",
                    kept.as_str()
                ));
            }
            Err(PhaseError::StackFailed {
                region: region.name.clone(),
                stack: dep.stack_name(),
                reason,
            })
        }
    }
}

/// The first resource that failed and why; CloudFormation lists events
/// newest first, so the root cause is the last failure in the list.
pub async fn failure_reason(
    clients: &RegionClients,
    stack_id: &str,
    status: &str,
    stack_reason: Option<&str>,
) -> String {
    let events = clients
        .cloudformation
        .describe_stack_events()
        .stack_name(stack_id)
        .send()
        .await;
    let first_failure = events.ok().and_then(|out| {
        out.stack_events()
            .iter()
            .rev()
            .find(|e| {
                e.resource_status().is_some_and(|s| s.as_str().ends_with("_FAILED"))
                    && e.physical_resource_id() != Some(stack_id)
                    && e.resource_type() != Some("AWS::CloudFormation::Stack")
            })
            .map(|e| {
                format!(
                    "{} ({}) {}: {}",
                    e.logical_resource_id().unwrap_or("?"),
                    e.resource_type().unwrap_or("?"),
                    e.resource_status().map(|s| s.as_str()).unwrap_or("?"),
                    e.resource_status_reason().unwrap_or("no reason given")
                )
            })
    });
    match (first_failure, stack_reason) {
        (Some(f), _) => format!("{status}; first failure: {f}"),
        (None, Some(r)) => format!("{status}: {r}"),
        (None, None) => format!("{status} (CloudFormation gave no reason)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_templates_are_keyed_by_version_and_content_at_a_regional_url() {
        let mut release = crate::release::Release::sample("b");
        release.service = "web".into();
        release.environment = "prod".into();
        let a = template_object("bkt", &release, "eu-south-2", "aa");
        assert_eq!(
            a.key,
            format!(
                "porter-templates/web/prod/{}/eu-south-2/aa.template.json",
                release.version
            )
        );
        // Another version, or other content, never lands on the same key.
        assert_ne!(template_object("bkt", &release, "eu-south-2", "bb").key, a.key);
        release.version = "ffffffffffff".into();
        assert_ne!(template_object("bkt", &release, "eu-south-2", "aa").key, a.key);
        assert_eq!(
            template_url(&a, "eu-south-2", None),
            format!("https://bkt.s3.eu-south-2.amazonaws.com/{}", a.key)
        );
        assert_eq!(
            template_url(&a, "cn-north-1", Some("3/L4kqtJl+x=")),
            format!(
                "https://bkt.s3.cn-north-1.amazonaws.com.cn/{}?versionId=3%2FL4kqtJl%2Bx%3D",
                a.key
            )
        );
    }
}
