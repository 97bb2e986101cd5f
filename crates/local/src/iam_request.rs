//! What IAM checks for one AWS call: each action it needs and the
//! resource of each, as AWS's Service Authorization Reference defines them
//! (`*` for an action without resource-level permissions), read from the
//! request as the service reads it — `Action=` of a Query call, the
//! `X-Amz-Target` of a JSON call, the method and path of an S3 call.
//!
//! Only the calls porter's functions make are known; any other call of a
//! checked caller is an error here, so that a new call fails its tests
//! until it is mapped, rather than passing unchecked.

use axum::http::{HeaderMap, Method, Uri};
use serde_json::Value;

/// One action on one resource that IAM must allow for the call to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// `service:Operation`, as policies name it.
    pub action: String,
    /// An ARN, or `*`.
    pub resource: String,
}

/// How a service answers, which decides the shape of its AccessDenied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Form-encoded requests, `<ErrorResponse>` XML errors.
    Query,
    /// `X-Amz-Target` requests, `{"__type": ...}` errors.
    Json,
    /// S3: `<Error>` XML.
    S3,
}

/// One call as the front received it.
#[derive(Debug)]
pub struct Call<'a> {
    /// The signing name of the credential scope (`s3`, `monitoring`, ...).
    pub service: &'a str,
    pub region: &'a str,
    /// The account of the caller's credentials: resources of its own.
    pub account: &'a str,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Call<'_> {
    pub fn protocol(&self) -> Protocol {
        if self.service == "s3" {
            Protocol::S3
        } else if self.headers.contains_key("x-amz-target") {
            Protocol::Json
        } else {
            Protocol::Query
        }
    }

    /// What IAM must allow for this call; `Err` names a call the local
    /// stack does not know.
    pub fn needs(&self) -> Result<Vec<Need>, String> {
        match self.protocol() {
            Protocol::S3 => self.s3(),
            Protocol::Json => self.json(),
            Protocol::Query => self.query(),
        }
    }

    fn arn(&self, service: &str, rest: &str) -> String {
        format!("arn:aws:{service}:{}:{}:{rest}", self.region, self.account)
    }

    fn query(&self) -> Result<Vec<Need>, String> {
        let form: Vec<(String, String)> = form_urlencoded::parse(self.body).into_owned().collect();
        let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let list = |prefix: &str, suffix: &str| crate::wire::form_list(&form, prefix, suffix);
        let op = get("Action").ok_or_else(|| format!("{} call without an Action", self.service))?;
        let need = |prefix: &str, resource: String| Need {
            action: format!("{prefix}:{op}"),
            resource,
        };
        let unknown = || Err(format!("{} {op}", self.service));
        let stack = |name: Option<String>| match name {
            Some(n) if n.starts_with("arn:") => n,
            Some(n) => self.arn("cloudformation", &format!("stack/{n}/*")),
            None => "*".to_owned(),
        };
        Ok(match (self.service, op.as_str()) {
            (
                "cloudformation",
                "DescribeStacks"
                | "DescribeStackEvents"
                | "DescribeStackResources"
                | "DescribeStackResource"
                | "DeleteStack"
                | "GetTemplate",
            ) => {
                vec![need("cloudformation", stack(get("StackName")))]
            }
            ("cloudformation", "CreateStack") => {
                let arn = stack(get("StackName"));
                let mut needs = vec![need("cloudformation", arn.clone())];
                // Tags on create are authorized as TagResource too.
                if get("Tags.member.1.Key").is_some() {
                    needs.push(Need {
                        action: "cloudformation:TagResource".into(),
                        resource: arn,
                    });
                }
                if let Some(role) = get("RoleARN") {
                    needs.push(pass_role(role));
                }
                needs
            }
            ("cloudformation", "ValidateTemplate" | "ListStacks") => vec![need("cloudformation", "*".into())],
            ("elasticloadbalancing", _) if get("Version").as_deref() == Some("2015-12-01") => match op.as_str() {
                o if o.starts_with("Describe") => vec![need("elasticloadbalancing", "*".into())],
                "RegisterTargets" | "DeregisterTargets" => {
                    vec![need("elasticloadbalancing", get("TargetGroupArn").unwrap_or_default())]
                }
                "AddTags" | "RemoveTags" => list("ResourceArns.member.", "")
                    .into_iter()
                    .map(|arn| need("elasticloadbalancing", arn))
                    .collect(),
                _ => return unknown(),
            },
            ("elasticloadbalancing", _) => {
                let balancer = |name: String| self.arn("elasticloadbalancing", &format!("loadbalancer/{name}"));
                match op.as_str() {
                    o if o.starts_with("Describe") => vec![need("elasticloadbalancing", "*".into())],
                    "RegisterInstancesWithLoadBalancer" | "DeregisterInstancesFromLoadBalancer" => {
                        vec![need(
                            "elasticloadbalancing",
                            balancer(get("LoadBalancerName").unwrap_or_default()),
                        )]
                    }
                    "AddTags" | "RemoveTags" => list("LoadBalancerNames.member.", "")
                        .into_iter()
                        .map(|n| need("elasticloadbalancing", balancer(n)))
                        .collect(),
                    _ => return unknown(),
                }
            }
            ("autoscaling", o) if o.starts_with("Describe") => vec![need("autoscaling", "*".into())],
            (
                "autoscaling",
                "AttachLoadBalancers"
                | "DetachLoadBalancers"
                | "AttachLoadBalancerTargetGroups"
                | "DetachLoadBalancerTargetGroups"
                | "UpdateAutoScalingGroup"
                | "SetDesiredCapacity",
            ) => {
                let name = get("AutoScalingGroupName").unwrap_or_default();
                vec![need(
                    "autoscaling",
                    self.arn(
                        "autoscaling",
                        &format!("autoScalingGroup:*:autoScalingGroupName/{name}"),
                    ),
                )]
            }
            // CloudWatch signs as `monitoring`; its actions are cloudwatch:.
            ("monitoring", "DescribeAlarms") => {
                let names = list("AlarmNames.member.", "");
                if names.is_empty() {
                    vec![need("cloudwatch", self.arn("cloudwatch", "alarm:*"))]
                } else {
                    names
                        .into_iter()
                        .map(|n| need("cloudwatch", self.arn("cloudwatch", &format!("alarm:{n}"))))
                        .collect()
                }
            }
            ("sns", "Publish") => vec![need(
                "sns",
                get("TopicArn").or_else(|| get("TargetArn")).unwrap_or_default(),
            )],
            // Anyone may ask who they are.
            ("sts", "GetCallerIdentity") => Vec::new(),
            ("sts", "AssumeRole") => {
                let role = get("RoleArn").unwrap_or_default();
                let mut needs = vec![need("sts", role.clone())];
                // Session tags need TagSession on the role as well.
                if get("Tags.member.1.Key").is_some() {
                    needs.push(Need {
                        action: "sts:TagSession".into(),
                        resource: role,
                    });
                }
                needs
            }
            _ => return unknown(),
        })
    }

    fn json(&self) -> Result<Vec<Need>, String> {
        let target = self
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let op = target.rsplit('.').next().unwrap_or_default().to_owned();
        let body: Value = serde_json::from_slice(self.body).unwrap_or_default();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let need = |prefix: &str, resource: String| Need {
            action: format!("{prefix}:{op}"),
            resource,
        };
        let unknown = || Err(format!("{} {op}", self.service));
        Ok(match (self.service, op.as_str()) {
            ("dynamodb", "GetItem" | "PutItem" | "DeleteItem" | "UpdateItem" | "Query") => vec![need(
                "dynamodb",
                self.arn("dynamodb", &format!("table/{}", text(&body["TableName"]))),
            )],
            ("states", "StartExecution" | "DescribeStateMachine" | "ListExecutions") => {
                vec![need("states", text(&body["stateMachineArn"]))]
            }
            ("states", "DescribeExecution" | "GetExecutionHistory" | "StopExecution") => {
                vec![need("states", text(&body["executionArn"]))]
            }
            // A job has no resource type in IAM: it is named by its id only.
            ("codepipeline", "GetJobDetails" | "PutJobSuccessResult" | "PutJobFailureResult" | "AcknowledgeJob") => {
                vec![need("codepipeline", "*".into())]
            }
            ("codepipeline", "PollForJobs") => {
                let t = &body["actionTypeId"];
                vec![need(
                    "codepipeline",
                    self.arn(
                        "codepipeline",
                        &format!(
                            "actiontype:{}/{}/{}/{}",
                            text(&t["owner"]),
                            text(&t["category"]),
                            text(&t["provider"]),
                            text(&t["version"])
                        ),
                    ),
                )]
            }
            ("codepipeline", "GetPipeline" | "DeletePipeline" | "StartPipelineExecution" | "GetPipelineState") => {
                vec![need("codepipeline", self.arn("codepipeline", &text(&body["name"])))]
            }
            ("codepipeline", "ListActionExecutions" | "GetPipelineExecution") => {
                vec![need(
                    "codepipeline",
                    self.arn("codepipeline", &text(&body["pipelineName"])),
                )]
            }
            ("codepipeline", "CreatePipeline" | "UpdatePipeline") => {
                let pipeline = &body["pipeline"];
                let mut needs = vec![need("codepipeline", self.arn("codepipeline", &text(&pipeline["name"])))];
                // Naming the pipeline's role passes it to CodePipeline.
                if let Some(role) = pipeline["roleArn"].as_str() {
                    needs.push(pass_role(role.to_owned()));
                }
                needs
            }
            ("ssm", "GetParameter") => {
                let name = text(&body["Name"]);
                // AWS's public parameters are in no account.
                let account = if name.starts_with("/aws/service/") {
                    ""
                } else {
                    self.account
                };
                let mut needs = vec![need(
                    "ssm",
                    format!(
                        "arn:aws:ssm:{}:{account}:parameter/{}",
                        self.region,
                        name.trim_start_matches('/')
                    ),
                )];
                // A secret read through SSM needs the secret's own grant too.
                if let Some(secret) = name.strip_prefix("/aws/reference/secretsmanager/") {
                    needs.push(Need {
                        action: "secretsmanager:GetSecretValue".into(),
                        resource: self.secret_arn(secret),
                    });
                }
                needs
            }
            ("secretsmanager", "GetSecretValue" | "DescribeSecret") => {
                vec![need("secretsmanager", self.secret_arn(&text(&body["SecretId"])))]
            }
            ("codebuild", "StartBuild") => vec![need(
                "codebuild",
                self.arn("codebuild", &format!("project/{}", text(&body["projectName"]))),
            )],
            ("codebuild", "BatchGetBuilds") => body["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|id| {
                    let project = text(id).split(':').next().unwrap_or_default().to_owned();
                    need("codebuild", self.arn("codebuild", &format!("project/{project}")))
                })
                .collect(),
            _ => return unknown(),
        })
    }

    /// A secret's ARN from its name or ARN; Secrets Manager ends every
    /// ARN with six random characters, which `??????` stands for.
    fn secret_arn(&self, id: &str) -> String {
        if id.starts_with("arn:") {
            id.to_owned()
        } else {
            self.arn("secretsmanager", &format!("secret:{id}-??????"))
        }
    }

    fn s3(&self) -> Result<Vec<Need>, String> {
        let path = self.uri.path().trim_start_matches('/');
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        let key = percent_decode(key);
        let query: Vec<(String, String)> = form_urlencoded::parse(self.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        let has = |k: &str| query.iter().any(|(q, _)| q == k);
        // Query parameters that only shape the answer or the signature.
        let plain = query.iter().all(|(q, _)| {
            matches!(q.as_str(), "x-id" | "versionId" | "uploadId" | "partNumber") || q.starts_with("X-Amz-")
        });
        let need = |action: &str, resource: String| Need {
            action: format!("s3:{action}"),
            resource,
        };
        let object = |b: &str, k: &str| format!("arn:aws:s3:::{b}/{k}");
        let unknown = || Err(format!("s3 {} /{path}?{}", self.method, self.uri.query().unwrap_or("")));
        if bucket.is_empty() {
            return unknown();
        }
        let m = self.method;
        Ok(if key.is_empty() {
            match *m {
                Method::GET if has("location") => vec![need("GetBucketLocation", format!("arn:aws:s3:::{bucket}"))],
                Method::GET | Method::HEAD if !has("versions") && !has("uploads") => {
                    vec![need("ListBucket", format!("arn:aws:s3:::{bucket}"))]
                }
                _ => return unknown(),
            }
        } else if !plain {
            return unknown();
        } else {
            let read = if has("versionId") {
                "GetObjectVersion"
            } else {
                "GetObject"
            };
            match *m {
                Method::GET | Method::HEAD => vec![need(read, object(bucket, &key))],
                Method::PUT | Method::POST => {
                    let mut needs = vec![need("PutObject", object(bucket, &key))];
                    if let Some(source) = self.headers.get("x-amz-copy-source").and_then(|v| v.to_str().ok()) {
                        let source = percent_decode(source.trim_start_matches('/'));
                        let (source, version) = match source.split_once("?versionId=") {
                            Some((s, _)) => (s.to_owned(), "GetObjectVersion"),
                            None => (source, "GetObject"),
                        };
                        needs.push(need(version, format!("arn:aws:s3:::{source}")));
                    }
                    if self.headers.contains_key("x-amz-tagging") {
                        needs.push(need("PutObjectTagging", object(bucket, &key)));
                    }
                    needs
                }
                Method::DELETE => vec![need("DeleteObject", object(bucket, &key))],
                _ => return unknown(),
            }
        })
    }
}

fn pass_role(role: String) -> Need {
    Need {
        action: "iam:PassRole".into(),
        resource: role,
    }
}

/// `%XX` escapes of a path as bytes (`+` stays: it is not a space there).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(
        service: &'a str,
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Call<'a> {
        Call {
            service,
            region: "eu-west-1",
            account: "123456789012",
            method,
            uri,
            headers,
            body,
        }
    }

    fn needs(
        service: &str,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let uri: Uri = uri.parse().unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        call(service, &method, &uri, &h, body.as_bytes())
            .needs()
            .map(|n| n.into_iter().map(|n| (n.action, n.resource)).collect())
    }

    /// Every need of a call, in order, as `needs` answers them.
    /// (action, resource) pairs a call needs, or a request's (header, value) pairs.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn all(pairs: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        Ok(pairs
            .iter()
            .map(|&(action, resource)| (action.to_owned(), resource.to_owned()))
            .collect())
    }

    #[test]
    fn query_calls_name_their_action_and_resource() {
        let tg = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123";
        let register = format!("Action=RegisterTargets&Version=2015-12-01&TargetGroupArn={tg}");
        let role = "arn:aws:iam::1:role/d";
        // (service, body, every need)
        let cases: &[(&str, &str, Pairs<'_>)] = &[
            (
                "cloudformation",
                "Action=DeleteStack&StackName=web-prod-v1&Version=2010-05-15",
                &[(
                    "cloudformation:DeleteStack",
                    "arn:aws:cloudformation:eu-west-1:123456789012:stack/web-prod-v1/*",
                )],
            ),
            (
                "cloudformation",
                "Action=DescribeStacks",
                &[("cloudformation:DescribeStacks", "*")],
            ),
            (
                "elasticloadbalancing",
                "Action=RegisterInstancesWithLoadBalancer&Version=2012-06-01&LoadBalancerName=web",
                &[(
                    "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/web",
                )],
            ),
            (
                "elasticloadbalancing",
                register.as_str(),
                &[("elasticloadbalancing:RegisterTargets", tg)],
            ),
            (
                "elasticloadbalancing",
                "Action=DescribeTargetHealth&Version=2015-12-01",
                &[("elasticloadbalancing:DescribeTargetHealth", "*")],
            ),
            (
                "autoscaling",
                "Action=AttachLoadBalancers&AutoScalingGroupName=g",
                &[(
                    "autoscaling:AttachLoadBalancers",
                    "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/g",
                )],
            ),
            (
                "monitoring",
                "Action=DescribeAlarms&AlarmNames.member.1=errors",
                &[(
                    "cloudwatch:DescribeAlarms",
                    "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:errors",
                )],
            ),
            (
                "sts",
                "Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fd&Tags.member.1.Key=k",
                &[("sts:AssumeRole", role), ("sts:TagSession", role)],
            ),
            ("sts", "Action=GetCallerIdentity", &[]),
        ];
        for &(service, body, want) in cases {
            assert_eq!(
                needs(service, Method::POST, "/", &[], body),
                all(want),
                "{service} {body}"
            );
        }
        let create = needs(
            "cloudformation",
            Method::POST,
            "/",
            &[],
            "Action=CreateStack&StackName=s&Tags.member.1.Key=porter%3Aservice&Tags.member.1.Value=web",
        )
        .unwrap();
        assert_eq!(
            create.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
            ["cloudformation:CreateStack", "cloudformation:TagResource"]
        );
    }

    #[test]
    fn json_calls_name_their_action_and_resource() {
        let target = |t: &'static str| [("x-amz-target", t)];
        // (service, X-Amz-Target, body, every need)
        let cases: &[(&str, &str, &str, Pairs<'_>)] = &[
            (
                "dynamodb",
                "DynamoDB_20120810.GetItem",
                r#"{"TableName":"porter-leases"}"#,
                &[(
                    "dynamodb:GetItem",
                    "arn:aws:dynamodb:eu-west-1:123456789012:table/porter-leases",
                )],
            ),
            (
                "states",
                "AWSStepFunctions.StopExecution",
                r#"{"executionArn":"arn:x"}"#,
                &[("states:StopExecution", "arn:x")],
            ),
            (
                "codepipeline",
                "CodePipeline_20150709.GetJobDetails",
                r#"{"jobId":"1"}"#,
                &[("codepipeline:GetJobDetails", "*")],
            ),
            (
                "ssm",
                "AmazonSSM.GetParameter",
                r#"{"Name":"/porter/environments/prod"}"#,
                &[(
                    "ssm:GetParameter",
                    "arn:aws:ssm:eu-west-1:123456789012:parameter/porter/environments/prod",
                )],
            ),
        ];
        for &(service, t, body, want) in cases {
            assert_eq!(
                needs(service, Method::POST, "/", &target(t), body),
                all(want),
                "{t} {body}"
            );
        }
        // (service, X-Amz-Target, body, the need after the call's own)
        for (service, t, body, (action, resource)) in [
            (
                "codepipeline",
                "CodePipeline_20150709.CreatePipeline",
                r#"{"pipeline":{"name":"p-b","roleArn":"arn:aws:iam::1:role/r"}}"#,
                ("iam:PassRole", "arn:aws:iam::1:role/r"),
            ),
            (
                "ssm",
                "AmazonSSM.GetParameter",
                r#"{"Name":"/aws/reference/secretsmanager/porter/web/notifications/slack"}"#,
                (
                    "secretsmanager:GetSecretValue",
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:porter/web/notifications/slack-??????",
                ),
            ),
        ] {
            let got = needs(service, Method::POST, "/", &target(t), body).unwrap();
            assert_eq!(got[1], (action.to_owned(), resource.to_owned()), "{t} {body}");
        }
        assert!(needs(
            "dynamodb",
            Method::POST,
            "/",
            &target("DynamoDB_20120810.DeleteTable"),
            "{}"
        )
        .unwrap_err()
        .contains("DeleteTable"));
    }

    #[test]
    fn s3_calls_name_the_object_or_the_bucket() {
        // (method, path, headers, every need)
        let cases: &[(Method, &str, Pairs<'_>, Pairs<'_>)] = &[
            (
                Method::GET,
                "/b/porter-deployment/a%20b.tgz?x-id=GetObject",
                &[],
                &[("s3:GetObject", "arn:aws:s3:::b/porter-deployment/a b.tgz")],
            ),
            (Method::HEAD, "/b/k", &[], &[("s3:GetObject", "arn:aws:s3:::b/k")]),
            (
                Method::GET,
                "/b/k?versionId=3",
                &[],
                &[("s3:GetObjectVersion", "arn:aws:s3:::b/k")],
            ),
            (
                Method::GET,
                "/b?list-type=2",
                &[],
                &[("s3:ListBucket", "arn:aws:s3:::b")],
            ),
            (
                Method::PUT,
                "/dst/k?x-id=CopyObject",
                &[("x-amz-copy-source", "src/porter-deployment/p")],
                &[
                    ("s3:PutObject", "arn:aws:s3:::dst/k"),
                    ("s3:GetObject", "arn:aws:s3:::src/porter-deployment/p"),
                ],
            ),
        ];
        for (method, path, headers, want) in cases {
            assert_eq!(
                needs("s3", method.clone(), path, headers, ""),
                all(want),
                "{method} {path}"
            );
        }
        for (method, path) in [(Method::PUT, "/b/k?tagging"), (Method::DELETE, "/b")] {
            assert!(needs("s3", method.clone(), path, &[], "").is_err(), "{method} {path}");
        }
    }
}
