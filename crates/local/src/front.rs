//! The local stack's AWS endpoint: every call goes on to moto, except what
//! moto cannot answer truthfully once instances run —
//!
//! - ELB `DescribeInstanceHealth` and `DescribeTargetHealth`, answered
//!   from the load balancers' own health checks ([`Balancers`]);
//! - CloudFormation `DescribeStacks`, where a stack whose resources have a
//!   `CreationPolicy` is complete only once its instances signalled success,
//!   and rolled back on a failure signal or a timeout ([`Signals`]).
//!
//! Every region a call names is watched for instances to boot, and where
//! AWS is stricter than moto the front answers as AWS does ([`strict`]);
//! a call a function makes is refused unless its role allows it, as IAM
//! would ([`Callers`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::callers::Callers;
use crate::elb::Balancers;
use crate::iam_request::Call;
use crate::instances::Fleet;
use crate::signals::{self, Policy, Verdict};
use crate::strict::{self, BucketRegions};
use crate::wire::{form_list, form_value, xml_escape};

#[derive(Debug, Clone)]
pub struct Front {
    moto: String,
    fleet: Fleet,
    balancers: Balancers,
    client: reqwest::Client,
    /// Each stack's signal policies, read once from its template.
    policies: Arc<Mutex<HashMap<String, Vec<Policy>>>>,
    /// Stacks the local stack rolled back: (resource, reason).
    failed: Arc<Mutex<HashMap<String, (String, String)>>>,
    /// What each stack's CreateStack asked done should it fail
    /// (`OnFailure`), by region and stack name; moto ignores it.
    on_failure: Arc<Mutex<HashMap<(String, String), OnFailure>>>,
    buckets: BucketRegions,
    /// Who calls, and what their roles allow.
    callers: Callers,
}

impl Front {
    pub fn new(moto: &str, fleet: Fleet, balancers: Balancers) -> Front {
        Front {
            moto: moto.to_owned(),
            fleet,
            balancers,
            client: reqwest::Client::new(),
            policies: Arc::default(),
            failed: Arc::default(),
            on_failure: Arc::default(),
            buckets: BucketRegions::default(),
            callers: Callers::default(),
        }
    }

    /// IAM's refusal of a call a function's role (or its deployment
    /// session's) does not allow; `None` lets the call through, as it does
    /// every call of a caller that is not checked.
    pub fn refused(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        let who = self.callers.identify(headers)?;
        let (region, service) = credential_scope(headers)?;
        let call = Call {
            service: &service,
            region: &region,
            account: &who.account,
            method,
            uri,
            headers,
            body,
        };
        self.callers.refuse(&who, &call)
    }

    /// An AssumeRole of a checked caller, passed on; the session it gets is
    /// checked as the role it assumed.
    async fn assume_role(&self, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Option<Response> {
        let who = self.callers.identify(headers)?;
        let resp = self.forward(method, uri, headers, body.clone()).await;
        let (parts, text) = match answer_text(resp).await {
            Ok(read) => read,
            Err(resp) => return Some(resp),
        };
        self.callers.learn_session(&who, &body, &text);
        Some(Response::from_parts(parts, axum::body::Body::from(text)))
    }

    pub fn moto(&self) -> &str {
        &self.moto
    }

    pub fn balancers(&self) -> &Balancers {
        &self.balancers
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Answers one AWS call.
    pub async fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let scope = credential_scope(&headers).or_else(|| query_scope(&uri));
        if let Some((region, "s3")) = scope.as_ref().map(|(r, s)| (r.as_str(), s.as_str())) {
            if let Some(refused) = self.s3_in_its_region(&method, &uri, region).await {
                return refused;
            }
        }
        if let Some(refused) = self.refused(&method, &uri, &headers, &body) {
            return refused;
        }
        if let Some((region, service)) = &scope {
            if matches!(
                service.as_str(),
                "ec2" | "autoscaling" | "cloudformation" | "elasticloadbalancing"
            ) {
                self.fleet.watch(region);
            }
        }
        let action = (method == Method::POST).then(|| form_action(&headers, &body)).flatten();
        match (scope.as_ref().map(|(_, s)| s.as_str()), action.as_deref()) {
            (Some("sts"), Some("AssumeRole")) => {
                if let Some(r) = self.assume_role(method.clone(), &uri, &headers, body.clone()).await {
                    return r;
                }
            }
            (Some("elasticloadbalancing"), Some("DescribeInstanceHealth")) if self.balancers.active() => {
                let region = scope.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
                if let Some(r) = self.instance_health(&region, &body).await {
                    return r;
                }
            }
            (Some("elasticloadbalancing"), Some("DescribeTargetHealth")) if self.balancers.active() => {
                let region = scope.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
                if let Some(r) = self.target_health(&region, &body).await {
                    return r;
                }
            }
            (Some("autoscaling"), Some(a)) if MOTO_DEREGISTERS_OTHERS.contains(&a) => {
                let region = scope.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
                let group = form_value(&body, "AutoScalingGroupName").unwrap_or_default();
                // No load balancer reads moto until the others are back.
                let _settling = self.balancers.hold_reads(&region).await;
                let before = self.registrations(&region).await;
                let resp = self.forward(method, &uri, &headers, body).await;
                if resp.status().is_success() {
                    self.keep_other_groups(&region, &group, before).await;
                }
                return resp;
            }
            (Some("cloudformation"), Some("CreateStack")) => {
                let region = scope.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
                if let Some(problem) = self.create_stack_problem(&region, &body).await {
                    return strict::validation_error(&problem);
                }
                let name = form_value(&body, "StackName").unwrap_or_default();
                self.on_failure
                    .lock()
                    .expect("on_failure lock")
                    .insert((region, name), OnFailure::asked(&body));
            }
            (Some("cloudformation"), Some("DescribeStacks")) if self.fleet.running() => {
                let region = scope.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
                let resp = self.forward(method, &uri, &headers, body).await;
                return self.judge_stacks(&region, resp).await;
            }
            (Some("cloudformation"), Some("DescribeStackEvents")) if self.fleet.running() => {
                let region = scope.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
                let resp = self.forward(method, &uri, &headers, body).await;
                return self.time_completions(&region, resp).await;
            }
            _ => {}
        }
        self.forward(method, &uri, &headers, body).await
    }

    /// S3's redirect for a call signed for another region than its
    /// bucket's; `None` lets the call through.
    async fn s3_in_its_region(&self, method: &Method, uri: &Uri, region: &str) -> Option<Response> {
        let (bucket, on_bucket) = strict::s3_bucket(uri)?;
        if on_bucket && (*method == Method::PUT || *method == Method::DELETE) && uri.query().is_none() {
            // CreateBucket or DeleteBucket: the region may change.
            self.buckets.forget(&bucket);
        }
        if strict::any_region(method, uri, on_bucket) {
            return None;
        }
        let home = self.buckets.region_of(&self.client, &self.moto, &bucket).await?;
        (home != region).then(|| strict::permanent_redirect(&bucket, &home, *method == Method::HEAD))
    }

    /// What CloudFormation would refuse in this CreateStack, read from its
    /// template as moto would read it.
    async fn create_stack_problem(&self, region: &str, body: &[u8]) -> Option<String> {
        let template_body = form_value(body, "TemplateBody");
        let url = form_value(body, "TemplateURL");
        let target = url.as_deref().and_then(strict::template_url);
        let bucket_region = match &target {
            Some((bucket, _, _)) => self.buckets.region_of(&self.client, &self.moto, bucket).await,
            None => None,
        };
        if let Some(p) = strict::create_stack_problem(
            region,
            template_body.as_deref(),
            url.as_deref(),
            bucket_region.as_deref(),
        ) {
            return Some(p);
        }
        let text = match (template_body, target) {
            (Some(b), _) => b,
            (None, Some((bucket, key, _))) => {
                let resp = self
                    .client
                    .get(format!("{}/{bucket}/{key}", self.moto))
                    .send()
                    .await
                    .ok()?;
                resp.text().await.ok()?
            }
            (None, None) => return None,
        };
        let template: serde_json::Value = serde_json::from_str(&text).ok()?;
        let stack_name = form_value(body, "StackName").unwrap_or_default();
        strict::user_data_problem(&template, &stack_name, region)
    }

    /// Passes the call to moto as it came.
    pub async fn forward(&self, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let method = Method::from_bytes(method.as_str().as_bytes()).unwrap_or(Method::POST);
        let mut req = self.client.request(method, format!("{}{path}", self.moto)).body(body);
        for (k, v) in headers.iter() {
            if !matches!(
                k.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding"
            ) {
                req = req.header(k.as_str(), v.as_bytes());
            }
        }
        match req.send().await {
            Ok(resp) => {
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut out_headers = HeaderMap::new();
                for (k, v) in resp.headers() {
                    if matches!(k.as_str(), "content-length" | "connection" | "transfer-encoding") {
                        continue;
                    }
                    if let (Ok(k), Ok(v)) = (
                        axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
                        axum::http::HeaderValue::from_bytes(v.as_bytes()),
                    ) {
                        out_headers.append(k, v);
                    }
                }
                let bytes = resp.bytes().await.unwrap_or_default();
                (status, out_headers, bytes).into_response()
            }
            Err(e) => (StatusCode::BAD_GATEWAY, format!("moto did not answer: {e}")).into_response(),
        }
    }

    /// Each load balancer's registered instances.
    async fn registrations(&self, region: &str) -> HashMap<String, Vec<String>> {
        let sdk = self.fleet.configs().get(region).await;
        let elb = aws_sdk_elasticloadbalancing::Client::new(&sdk);
        let Ok(out) = elb.describe_load_balancers().send().await else {
            return HashMap::new();
        };
        out.load_balancer_descriptions()
            .iter()
            .filter_map(|d| {
                let ids = d
                    .instances()
                    .iter()
                    .filter_map(|i| i.instance_id())
                    .map(str::to_owned)
                    .collect();
                Some((d.load_balancer_name()?.to_owned(), ids))
            })
            .collect()
    }

    /// Registers again the instances of other groups that moto took out of
    /// a load balancer when `group` changed: moto keeps an ELB's instances
    /// equal to one attached group's, where AWS lets several groups (the
    /// serving release and the one being promoted) share it.
    async fn keep_other_groups(&self, region: &str, group: &str, before: HashMap<String, Vec<String>>) {
        let after = self.registrations(region).await;
        let (members, attached) = group_of(&self.moto, region, group).await;
        let sdk = self.fleet.configs().get(region).await;
        let elb = aws_sdk_elasticloadbalancing::Client::new(&sdk);
        // Only the load balancers of the group changed: moto touches no
        // other, and an instance that left another one meanwhile (a cutover
        // deregistering the release it replaced) must stay out.
        for (name, was) in before.into_iter().filter(|(name, _)| attached.contains(name)) {
            let now = after.get(&name).cloned().unwrap_or_default();
            let dropped: Vec<String> = was
                .into_iter()
                .filter(|id| !now.contains(id) && !members.contains(id))
                .collect();
            if dropped.is_empty() {
                continue;
            }
            let instances = dropped
                .iter()
                .map(|id| {
                    aws_sdk_elasticloadbalancing::types::Instance::builder()
                        .instance_id(id)
                        .build()
                })
                .collect();
            let _ = elb
                .register_instances_with_load_balancer()
                .load_balancer_name(&name)
                .set_instances(Some(instances))
                .send()
                .await;
        }
    }

    async fn instance_health(&self, region: &str, body: &[u8]) -> Option<Response> {
        let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let name = form_value(body, "LoadBalancerName")?;
        let asked = form_list(&form, "Instances.member.", ".InstanceId");
        let states = self.balancers.instance_health(region, &name, &asked).await?;
        let mut members = String::new();
        for (id, h) in states {
            members.push_str(&format!(
                "<member><InstanceId>{}</InstanceId><State>{}</State><ReasonCode>{}</ReasonCode><Description>{}</Description></member>",
                xml_escape(&id),
                h.state,
                h.reason_code,
                xml_escape(&h.description)
            ));
        }
        let xml = format!(
            r#"<DescribeInstanceHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/"><DescribeInstanceHealthResult><InstanceStates>{members}</InstanceStates></DescribeInstanceHealthResult><ResponseMetadata><RequestId>porter-local</RequestId></ResponseMetadata></DescribeInstanceHealthResponse>"#
        );
        Some((StatusCode::OK, [("content-type", "text/xml")], xml).into_response())
    }

    /// DescribeTargetHealth from the local checks: moto calls every
    /// target healthy the moment it registers.
    async fn target_health(&self, region: &str, body: &[u8]) -> Option<Response> {
        let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let arn = form_value(body, "TargetGroupArn")?;
        // arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID
        let name = arn
            .split(':')
            .nth(5)?
            .strip_prefix("targetgroup/")?
            .split('/')
            .next()?
            .to_owned();
        let asked = form_list(&form, "Targets.member.", ".Id");
        let states = self.balancers.target_health(region, &name, &asked).await?;
        let mut members = String::new();
        for (id, port, t) in states {
            let reason = t
                .reason
                .map(|r| {
                    format!(
                        "<Reason>{r}</Reason><Description>{}</Description>",
                        xml_escape(&t.description)
                    )
                })
                .unwrap_or_default();
            members.push_str(&format!(
                "<member><Target><Id>{}</Id><Port>{port}</Port></Target><HealthCheckPort>{port}</HealthCheckPort><TargetHealth><State>{}</State>{reason}</TargetHealth></member>",
                xml_escape(&id),
                t.state
            ));
        }
        let xml = format!(
            r#"<DescribeTargetHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><DescribeTargetHealthResult><TargetHealthDescriptions>{members}</TargetHealthDescriptions></DescribeTargetHealthResult><ResponseMetadata><RequestId>porter-local</RequestId></ResponseMetadata></DescribeTargetHealthResponse>"#
        );
        Some((StatusCode::OK, [("content-type", "text/xml")], xml).into_response())
    }

    /// Rewrites the status of each stack moto calls CREATE_COMPLETE whose
    /// signals are not all in (CREATE_IN_PROGRESS) or include a failure or
    /// came too late (ROLLBACK_COMPLETE, with the reason).
    async fn judge_stacks(&self, region: &str, resp: Response) -> Response {
        let (parts, text) = match answer_text(resp).await {
            Ok(read) => read,
            Err(resp) => return resp,
        };
        let stacks = match stacks_in(&text) {
            Some(s) => s,
            None => return Response::from_parts(parts, axum::body::Body::from(text)),
        };
        let mut edits = Vec::new();
        for s in stacks {
            if s.status != "CREATE_COMPLETE" {
                continue;
            }
            let verdict = self.verdict(region, &s).await;
            let (status, reason) = match verdict {
                Verdict::Complete => continue,
                Verdict::Waiting => ("CREATE_IN_PROGRESS", None),
                Verdict::Failed { resource, reason } => (
                    self.on_failure_of(region, &s.name).failed_status(),
                    Some(format!(
                        "The following resource(s) failed to create: [{resource}]. {resource}: {reason}"
                    )),
                ),
            };
            let member = rewrite_member(&text[s.range.clone()], status, reason.as_deref());
            edits.push((s.range, member));
        }
        edited(parts, text, edits)
    }

    /// moto stamps a stack's CREATE_COMPLETE event with its creation time;
    /// a stack that waited for its signals completed when the last came.
    async fn time_completions(&self, region: &str, resp: Response) -> Response {
        let (parts, text) = match answer_text(resp).await {
            Ok(read) => read,
            Err(resp) => return resp,
        };
        let edits = stack_completions(&text)
            .into_iter()
            .filter_map(|(stack, range)| {
                let at = self.fleet.signals().completed_at(region, &stack)?;
                Some((
                    range,
                    aws_smithy_types::DateTime::from(at)
                        .fmt(aws_smithy_types::date_time::Format::DateTime)
                        .ok()?,
                ))
            })
            .collect();
        edited(parts, text, edits)
    }

    async fn verdict(&self, region: &str, stack: &StackSeen) -> Verdict {
        if let Some((resource, reason)) = self.failed.lock().expect("failed lock").get(&stack.id).cloned() {
            return Verdict::Failed { resource, reason };
        }
        let known = self.policies.lock().expect("policies lock").get(&stack.id).cloned();
        let policies = match known {
            Some(p) => p,
            None => {
                let Some(p) = self.read_policies(region, &stack.id).await else {
                    return Verdict::Complete;
                };
                self.policies
                    .lock()
                    .expect("policies lock")
                    .insert(stack.id.clone(), p.clone());
                p
            }
        };
        if policies.is_empty() {
            return Verdict::Complete;
        }
        let created = stack.created.unwrap_or_else(SystemTime::now);
        let verdict = self
            .fleet
            .signals()
            .judge(region, &stack.name, &policies, created, SystemTime::now());
        if let Verdict::Failed { resource, reason } = &verdict {
            self.failed
                .lock()
                .expect("failed lock")
                .insert(stack.id.clone(), (resource.clone(), reason.clone()));
            // As CloudFormation would: a rollback or a delete stops the
            // group's instances; DO_NOTHING keeps them, to debug.
            let asked = self.on_failure_of(region, &stack.name);
            if asked != OnFailure::DoNothing {
                if let Some(group) = self.physical_id(region, &stack.id, resource).await {
                    self.fleet.stop_group(region, &group).await;
                }
            }
            if asked == OnFailure::Delete {
                let sdk = self.fleet.configs().get(region).await;
                let cfn = aws_sdk_cloudformation::Client::new(&sdk);
                if let Err(e) = cfn.delete_stack().stack_name(&stack.id).send().await {
                    tracing::warn!(stack = %stack.id, error = %e, "the local stack could not delete a failed stack");
                }
            }
        }
        verdict
    }

    fn on_failure_of(&self, region: &str, stack: &str) -> OnFailure {
        self.on_failure
            .lock()
            .expect("on_failure lock")
            .get(&(region.to_owned(), stack.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    async fn read_policies(&self, region: &str, stack_id: &str) -> Option<Vec<Policy>> {
        let sdk = self.fleet.configs().get(region).await;
        let cfn = aws_sdk_cloudformation::Client::new(&sdk);
        let out = cfn.get_template().stack_name(stack_id).send().await.ok()?;
        let body = out.template_body()?;
        let template: serde_json::Value = serde_json::from_str(body).ok()?;
        Some(signals::policies(&template))
    }

    async fn physical_id(&self, region: &str, stack_id: &str, resource: &str) -> Option<String> {
        let sdk = self.fleet.configs().get(region).await;
        let cfn = aws_sdk_cloudformation::Client::new(&sdk);
        let out = cfn
            .describe_stack_resource()
            .stack_name(stack_id)
            .logical_resource_id(resource)
            .send()
            .await
            .ok()?;
        out.stack_resource_detail()?.physical_resource_id().map(str::to_owned)
    }
}

/// What CloudFormation does with a stack whose creation fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum OnFailure {
    /// CreateStack's default.
    #[default]
    Rollback,
    Delete,
    DoNothing,
}

impl OnFailure {
    /// As a CreateStack asked: `OnFailure`, or `DisableRollback=true`.
    fn asked(body: &[u8]) -> OnFailure {
        match form_value(body, "OnFailure").as_deref() {
            Some("DELETE") => OnFailure::Delete,
            Some("DO_NOTHING") => OnFailure::DoNothing,
            Some(_) => OnFailure::Rollback,
            None if form_value(body, "DisableRollback").as_deref() == Some("true") => OnFailure::DoNothing,
            None => OnFailure::Rollback,
        }
    }

    /// The status a failed stack shows first.
    fn failed_status(self) -> &'static str {
        match self {
            OnFailure::Rollback => "ROLLBACK_COMPLETE",
            OnFailure::Delete => "DELETE_IN_PROGRESS",
            OnFailure::DoNothing => "CREATE_FAILED",
        }
    }
}

/// Auto Scaling calls after which moto makes every load balancer the
/// group is attached to hold that group's instances only.
const MOTO_DEREGISTERS_OTHERS: &[&str] = &[
    "AttachLoadBalancers",
    "AttachInstances",
    "SetDesiredCapacity",
    "UpdateAutoScalingGroup",
];

/// The instances of Auto Scaling group `group` as moto has them.
/// A group's instances and the classic load balancers it is attached to,
/// as moto has them.
async fn group_of(moto: &str, region: &str, group: &str) -> (Vec<String>, Vec<String>) {
    let Ok(xml) = crate::query::describe_group(moto, region, group).await else {
        return Default::default();
    };
    let Ok(doc) = roxmltree::Document::parse(&xml) else {
        return Default::default();
    };
    let texts = |nodes: &mut dyn Iterator<Item = roxmltree::Node<'_, '_>>| -> Vec<String> {
        nodes.filter_map(|n| n.text()).map(str::to_owned).collect()
    };
    let instances = texts(&mut doc.descendants().filter(|n| n.has_tag_name("InstanceId")));
    let balancers = texts(
        &mut doc
            .descendants()
            .filter(|n| n.has_tag_name("LoadBalancerNames"))
            .flat_map(|n| n.children().filter(|c| c.has_tag_name("member"))),
    );
    (instances, balancers)
}

/// (region, service) from a SigV4 `Authorization` header.
fn credential_scope(headers: &HeaderMap) -> Option<(String, String)> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    let mut parts = cred.split('/');
    let (_key, _date, region, service) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((region.to_owned(), service.to_owned()))
}

/// (region, service) from a presigned URL's `X-Amz-Credential`.
fn query_scope(uri: &Uri) -> Option<(String, String)> {
    let cred = form_value(uri.query()?.as_bytes(), "X-Amz-Credential")?;
    let mut parts = cred.split('/');
    let (_key, _date, region, service) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((region.to_owned(), service.to_owned()))
}

/// The `Action` of a Query-protocol call.
fn form_action(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let ct = headers.get("content-type")?.to_str().ok()?;
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    form_value(body, "Action")
}

struct StackSeen {
    id: String,
    name: String,
    status: String,
    created: Option<SystemTime>,
    range: std::ops::Range<usize>,
}

/// The stacks of a DescribeStacks answer, with where each sits in the text.
fn stacks_in(xml: &str) -> Option<Vec<StackSeen>> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let stacks = doc.descendants().find(|n| n.has_tag_name("Stacks"))?;
    Some(
        stacks
            .children()
            .filter(|n| n.has_tag_name("member"))
            .filter_map(|m| {
                let get = |tag: &str| crate::query::child_text(m, tag).map(str::to_owned);
                Some(StackSeen {
                    id: get("StackId")?,
                    name: get("StackName")?,
                    status: get("StackStatus")?,
                    created: get("CreationTime").and_then(|t| {
                        aws_smithy_types::DateTime::from_str(&t, aws_smithy_types::date_time::Format::DateTime)
                            .ok()
                            .and_then(|d| SystemTime::try_from(d).ok())
                    }),
                    range: m.range(),
                })
            })
            .collect(),
    )
}

/// The text of a successful answer of moto's, to rewrite; any other answer
/// as it came.
async fn answer_text(resp: Response) -> Result<(axum::http::response::Parts, String), Response> {
    if !resp.status().is_success() {
        return Err(resp);
    }
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Ok((parts, String::from_utf8_lossy(&bytes).into_owned())),
        Err(_) => Err((StatusCode::BAD_GATEWAY, "reading moto's answer").into_response()),
    }
}

/// The answer with each range of `text` replaced.
fn edited(
    mut parts: axum::http::response::Parts,
    mut text: String,
    mut edits: Vec<(std::ops::Range<usize>, String)>,
) -> Response {
    // Back to front, so earlier ranges stay where they are.
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    for (range, with) in edits {
        text.replace_range(range, &with);
    }
    parts.headers.remove("content-length");
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// In a DescribeStackEvents answer, each stack's own CREATE_COMPLETE event:
/// the stack's name and where its timestamp's text sits.
fn stack_completions(xml: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("member"))
        .filter(|m| {
            crate::query::child_text(*m, "ResourceType") == Some("AWS::CloudFormation::Stack")
                && crate::query::child_text(*m, "ResourceStatus") == Some("CREATE_COMPLETE")
        })
        .filter_map(|m| {
            let stack = crate::query::child_text(m, "StackName")?.to_owned();
            let stamp = m.children().find(|c| c.has_tag_name("Timestamp"))?.first_child()?;
            Some((stack, stamp.range()))
        })
        .collect()
}

/// One `<member>` of DescribeStacks with another status (and reason); a
/// stack not yet complete has no outputs.
fn rewrite_member(member: &str, status: &str, reason: Option<&str>) -> String {
    let mut out = strip_element(member, "StackStatusReason");
    if status != "CREATE_COMPLETE" {
        out = strip_element(&out, "Outputs");
    }
    let Some(start) = out.find("<StackStatus>") else {
        return out;
    };
    let Some(len) = out[start..].find("</StackStatus>") else {
        return out;
    };
    let end = start + len + "</StackStatus>".len();
    let mut replacement = format!("<StackStatus>{status}</StackStatus>");
    if let Some(r) = reason {
        replacement.push_str(&format!("<StackStatusReason>{}</StackStatusReason>", xml_escape(r)));
    }
    out.replace_range(start..end, &replacement);
    out
}

fn strip_element(text: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    match (text.find(&open), text.find(&close)) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &text[..a], &text[b + close.len()..]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_credential_scope() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20261130/eu-west-1/elasticloadbalancing/aws4_request, SignedHeaders=host, Signature=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            credential_scope(&h),
            Some(("eu-west-1".into(), "elasticloadbalancing".into()))
        );
        assert_eq!(credential_scope(&HeaderMap::new()), None);
    }

    #[test]
    fn finds_each_stacks_own_completion_event() {
        let xml = r#"<DescribeStackEventsResponse><DescribeStackEventsResult><StackEvents>
<member><StackName>a</StackName><ResourceType>AWS::CloudFormation::Stack</ResourceType><ResourceStatus>CREATE_COMPLETE</ResourceStatus><Timestamp>2026-11-30T04:00:00Z</Timestamp></member>
<member><StackName>a</StackName><ResourceType>AWS::AutoScaling::AutoScalingGroup</ResourceType><ResourceStatus>CREATE_COMPLETE</ResourceStatus><Timestamp>2026-11-30T04:00:00Z</Timestamp></member>
<member><StackName>a</StackName><ResourceType>AWS::CloudFormation::Stack</ResourceType><ResourceStatus>CREATE_IN_PROGRESS</ResourceStatus><Timestamp>2026-11-30T04:00:00Z</Timestamp></member>
</StackEvents></DescribeStackEventsResult></DescribeStackEventsResponse>"#;
        let found = stack_completions(xml);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "a");
        assert_eq!(&xml[found[0].1.clone()], "2026-11-30T04:00:00Z");
        assert!(xml[..found[0].1.start].ends_with("CREATE_COMPLETE</ResourceStatus><Timestamp>"));
    }

    #[test]
    fn a_waiting_stack_is_in_progress_and_a_failed_one_says_why() {
        let xml = r#"<DescribeStacksResponse><DescribeStacksResult><Stacks>
<member><StackId>arn:1</StackId><StackName>a</StackName><CreationTime>2026-11-30T04:00:00Z</CreationTime><StackStatus>CREATE_COMPLETE</StackStatus><Outputs><member><OutputKey>X</OutputKey></member></Outputs></member>
<member><StackId>arn:2</StackId><StackName>b</StackName><StackStatus>CREATE_COMPLETE</StackStatus></member>
</Stacks></DescribeStacksResult></DescribeStacksResponse>"#;
        let stacks = stacks_in(xml).unwrap();
        assert_eq!(stacks.len(), 2);
        assert_eq!(stacks[0].name, "a");
        assert!(stacks[0].created.is_some() && stacks[1].created.is_none());
        let first = &xml[stacks[0].range.clone()];
        let waiting = rewrite_member(first, "CREATE_IN_PROGRESS", None);
        assert!(waiting.contains("<StackStatus>CREATE_IN_PROGRESS</StackStatus>") && !waiting.contains("Outputs"));
        let failed = rewrite_member(first, "ROLLBACK_COMPLETE", Some("start <exited> 1"));
        assert!(
            failed.contains("<StackStatusReason>start &lt;exited&gt; 1</StackStatusReason>"),
            "{failed}"
        );
        assert!(roxmltree::Document::parse(&failed).is_ok());
    }
}
