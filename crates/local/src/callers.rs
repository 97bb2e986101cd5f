//! Who makes each call the front receives, and whether their role lets
//! them: IAM, as AWS evaluates it for porter's functions.
//!
//! In AWS each function runs as its own role. On the local stack every
//! function runs in the invoke host, so each calls with an access key of
//! its own ([`access_key`]), by which the front knows it. A deployment
//! role session a function gets from `sts:AssumeRole` is known by the
//! access key moto answers with: the front reads it from the answer.
//! Their statements are the template's (`roles.json`, which
//! `scripts/dump_roles.py` renders from `infra/template.yaml`). Every
//! other key — the CLI's, the bootstrap's, the job simulator's, the
//! instances' and the local stack's own reads ("testing") — is not
//! checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::iam::{self, Decision};
use crate::iam_request::{Call, Need, Protocol};

/// The roles of `infra/template.yaml`, rendered for the local stack.
const ROLES: &str = include_str!("roles.json");

/// The key a function calls the local stack with.
pub fn access_key(function: &str) -> String {
    format!("PORTERLOCAL{}", function.to_ascii_uppercase())
}

/// A role's statements as rendered.
#[derive(Debug)]
pub struct Role {
    /// The role's name (`porter-pack`).
    pub name: String,
    pub statements: Vec<Value>,
    pub boundary: Option<Vec<Value>>,
}

/// Every role of `roles.json` by its key (`pack`, ..., `deployment`), and
/// the account they were rendered in.
#[derive(Debug)]
pub struct Roles {
    pub account: String,
    pub by_key: HashMap<String, Role>,
}

impl Roles {
    pub fn parse(text: &str) -> Result<Roles, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("roles.json: {e}"))?;
        let account = doc["account"].as_str().ok_or("roles.json: no account")?.to_owned();
        let mut by_key = HashMap::new();
        for (key, r) in doc["roles"].as_object().ok_or("roles.json: no roles")? {
            let name = r["arn"]
                .as_str()
                .and_then(|a| a.rsplit('/').next())
                .unwrap_or(key)
                .to_owned();
            let list = |v: &Value| v.as_array().cloned();
            by_key.insert(
                key.clone(),
                Role {
                    name,
                    statements: list(&r["statements"]).unwrap_or_default(),
                    boundary: list(&r["boundary"]),
                },
            );
        }
        if !by_key.contains_key("deployment") {
            return Err("roles.json: no deployment role".into());
        }
        Ok(Roles { account, by_key })
    }

    /// The template's roles, as committed.
    pub fn rendered() -> &'static Roles {
        static ROLES_ONCE: OnceLock<Roles> = OnceLock::new();
        ROLES_ONCE
            .get_or_init(|| Roles::parse(ROLES).expect("crates/local/src/roles.json is what dump_roles.py writes"))
    }
}

/// A checked caller: a function's own role, or a session of the
/// deployment role a function assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key of its role in `roles.json`.
    pub role: String,
    /// The session's name: the function's name for a function, as Lambda
    /// names it; the name given at AssumeRole for a deployment session.
    pub session: String,
    /// The account the session is in (the assumed role's).
    pub account: String,
    /// Session tags, which policy variables in resources may name.
    pub tags: Vec<(String, String)>,
}

/// The checked callers the front knows, by access key.
#[derive(Debug, Clone)]
pub struct Callers {
    roles: &'static Roles,
    sessions: Arc<Mutex<HashMap<String, Principal>>>,
    /// Off: nothing is checked (`PORTER_LOCAL_IAM=off`).
    on: bool,
}

impl Default for Callers {
    fn default() -> Callers {
        Callers::new(Roles::rendered())
    }
}

impl Callers {
    pub fn new(roles: &'static Roles) -> Callers {
        let mut sessions = HashMap::new();
        for key in roles.by_key.keys().filter(|k| *k != "deployment") {
            sessions.insert(
                access_key(key),
                Principal {
                    role: key.clone(),
                    session: roles.by_key[key].name.clone(),
                    account: roles.account.clone(),
                    tags: Vec::new(),
                },
            );
        }
        Callers {
            roles,
            sessions: Arc::new(Mutex::new(sessions)),
            on: std::env::var("PORTER_LOCAL_IAM").map_or(true, |v| v != "off"),
        }
    }

    /// The checked caller who signed this request, if any.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Principal> {
        if !self.on {
            return None;
        }
        let key = signing_key(headers)?;
        self.sessions.lock().expect("sessions lock").get(&key).cloned()
    }

    /// `None` when `who` may make the call; else AWS's answer refusing it
    /// (or, for a call the local stack does not know, an error that says
    /// so, as no test should pass a call unchecked).
    pub fn refuse(&self, who: &Principal, call: &Call<'_>) -> Option<Response> {
        let needs = match call.needs() {
            Ok(n) => n,
            Err(unknown) => return Some(unknown_call(who, &unknown)),
        };
        let role = self.roles.by_key.get(&who.role)?;
        let in_account = |list: &[Value]| -> Vec<Value> {
            if who.account == self.roles.account {
                return list.to_vec();
            }
            // The same role in another account (docs/deploy-sam-and-cdk.md,
            // "Cross-account"): its resources are that account's.
            let text = serde_json::to_string(list).unwrap_or_default();
            let moved = text.replace(&format!(":{}:", self.roles.account), &format!(":{}:", who.account));
            serde_json::from_str(&moved).unwrap_or_default()
        };
        let statements = with_tags(&in_account(&role.statements), &who.tags);
        let boundary = role.boundary.as_deref().map(|b| with_tags(&in_account(b), &who.tags));
        for need in &needs {
            let decision = iam::evaluate(&statements, boundary.as_deref(), &need.action, &need.resource);
            if decision != Decision::Allow {
                return Some(denied(call, &self.arn_of(who), need, decision));
            }
        }
        None
    }

    /// Learns the session of an AssumeRole that `who` made, from the
    /// request (its role, name and tags) and moto's answer (its key).
    pub fn learn_session(&self, who: &Principal, request: &[u8], answer: &str) {
        let form: Vec<(String, String)> = form_urlencoded::parse(request).into_owned().collect();
        let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let Some(key) = roxmltree::Document::parse(answer)
            .ok()
            .and_then(|d| crate::query::text(d.root(), "AccessKeyId").map(str::to_owned))
        else {
            return;
        };
        let role_arn = get("RoleArn").unwrap_or_default();
        let keys = crate::wire::form_list(&form, "Tags.member.", ".Key");
        let values = crate::wire::form_list(&form, "Tags.member.", ".Value");
        let session = Principal {
            // The only role the functions assume: the deployment role, in
            // this account or (the same role) in another.
            role: "deployment".into(),
            session: get("RoleSessionName").unwrap_or_default(),
            account: role_arn.split(':').nth(4).unwrap_or(&who.account).to_owned(),
            tags: keys.into_iter().zip(values).collect(),
        };
        self.sessions.lock().expect("sessions lock").insert(key, session);
    }

    fn arn_of(&self, who: &Principal) -> String {
        let role = self
            .roles
            .by_key
            .get(&who.role)
            .map_or(who.role.as_str(), |r| r.name.as_str());
        format!("arn:aws:sts::{}:assumed-role/{role}/{}", who.account, who.session)
    }
}

/// The access key id of a SigV4 `Authorization` header.
fn signing_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    Some(cred.split('/').next()?.to_owned())
}

/// Statements with `${aws:PrincipalTag/KEY}` as the session's tag where
/// it has one (the rest the evaluator reads as any value).
fn with_tags(statements: &[Value], tags: &[(String, String)]) -> Vec<Value> {
    if tags.is_empty() {
        return statements.to_vec();
    }
    let mut text = serde_json::to_string(statements).unwrap_or_default();
    for (k, v) in tags {
        text = text.replace(&format!("${{aws:PrincipalTag/{k}}}"), v);
    }
    serde_json::from_str(&text).unwrap_or_default()
}

/// AWS's AccessDenied, in the shape of the service's protocol.
fn denied(call: &Call<'_>, principal: &str, need: &Need, decision: Decision) -> Response {
    let on = if need.resource == "*" {
        String::new()
    } else {
        format!(" on resource: {}", need.resource)
    };
    let why = match decision {
        Decision::ExplicitDeny => "with an explicit deny in an identity-based policy".to_owned(),
        _ => format!("because no identity-based policy allows the {} action", need.action),
    };
    let message = format!(
        "User: {principal} is not authorized to perform: {}{on} {why}",
        need.action
    );
    tracing::warn!(principal, action = %need.action, resource = %need.resource, "local IAM: access denied");
    let escaped = crate::wire::xml_escape(&message);
    // Each protocol's own shape of AccessDenied, as AWS answers it.
    let (status, content_type, body) = match call.protocol() {
        Protocol::S3 => (
            StatusCode::FORBIDDEN,
            "application/xml".to_owned(),
            if call.method == axum::http::Method::HEAD {
                String::new()
            } else {
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{escaped}</Message><RequestId>porter-local</RequestId><HostId>porter-local</HostId></Error>")
            },
        ),
        Protocol::Query => {
            // SNS names it AuthorizationError; the other Query services AccessDenied.
            let code = match call.service {
                "sns" => "AuthorizationError",
                _ => "AccessDenied",
            };
            let body = format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{escaped}</Message></Error><RequestId>porter-local</RequestId></ErrorResponse>");
            (StatusCode::FORBIDDEN, "text/xml".to_owned(), body)
        }
        Protocol::Json => {
            let kind = match call.service {
                "dynamodb" => "com.amazonaws.dynamodb.v20120810#AccessDeniedException",
                _ => "AccessDeniedException",
            };
            let content_type = call
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/x-amz-json-1.1")
                .to_owned();
            let body = serde_json::json!({"__type": kind, "message": message}).to_string();
            (StatusCode::BAD_REQUEST, content_type, body)
        }
    };
    (status, [("content-type", content_type)], body).into_response()
}

/// A call of a checked caller that the local stack cannot map to IAM:
/// refused, loudly, so that it is mapped before anything relies on it.
fn unknown_call(who: &Principal, what: &str) -> Response {
    let message = format!(
        "porter local: the IAM check does not know the call {what} (made by {}); map it in crates/local/src/iam_request.rs",
        who.session
    );
    tracing::error!(%message);
    (StatusCode::NOT_IMPLEMENTED, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, Uri};

    fn roles() -> &'static Roles {
        Roles::rendered()
    }

    fn signed(key: &str, service: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0")
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn every_function_has_a_role_and_the_deployment_role_is_rendered() {
        let r = roles();
        for f in porter_lambda::Function::ALL {
            let role = r
                .by_key
                .get(f.name())
                .unwrap_or_else(|| panic!("no role for {}", f.name()));
            assert_eq!(role.name, format!("porter-{}", f.name()));
            assert!(!role.statements.is_empty());
        }
        assert_eq!(r.by_key["deployment"].name, "porter-deployment");
        assert_eq!(r.account, crate::names::ACCOUNT);
    }

    #[test]
    fn a_function_is_known_by_its_key_and_testing_is_not_checked() {
        let callers = Callers::new(roles());
        let who = callers.identify(&signed(&access_key("promote"), "s3")).unwrap();
        assert_eq!((who.role.as_str(), who.session.as_str()), ("promote", "porter-promote"));
        assert_eq!(callers.identify(&signed("testing", "s3")), None);
        assert_eq!(callers.identify(&HeaderMap::new()), None);
    }

    fn refusal(
        callers: &Callers,
        who: &Principal,
        service: &str,
        method: Method,
        uri: &str,
        headers: HeaderMap,
        body: &str,
    ) -> Option<(StatusCode, String)> {
        let uri: Uri = uri.parse().unwrap();
        let call = Call {
            service,
            region: "us-east-1",
            account: &who.account,
            method: &method,
            uri: &uri,
            headers: &headers,
            body: body.as_bytes(),
        };
        let resp = callers.refuse(who, &call)?;
        let status = resp.status();
        let body = futures::executor::block_on(axum::body::to_bytes(resp.into_body(), usize::MAX)).unwrap();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// A lease-table call (`DynamoDB_20120810.{operation}`) by `who`,
    /// refused: its status and body.
    fn lease_refusal(callers: &Callers, who: &Principal, operation: &str) -> (StatusCode, String) {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-target",
            format!("DynamoDB_20120810.{operation}").parse().unwrap(),
        );
        h.insert("content-type", "application/x-amz-json-1.0".parse().unwrap());
        let table = r#"{"TableName":"porter-leases"}"#;
        refusal(callers, who, "dynamodb", Method::POST, "/", h, table).expect("refused")
    }

    #[test]
    fn a_call_outside_the_role_is_refused_in_the_services_own_shape() {
        let callers = Callers::new(roles());
        let pack = callers.identify(&signed(&access_key("pack"), "s3")).unwrap();
        // pack writes releases, never continuations' neighbours elsewhere.
        assert_eq!(
            refusal(
                &callers,
                &pack,
                "s3",
                Method::PUT,
                "/porter-local-artifacts/porter-deployment/x.tgz",
                HeaderMap::new(),
                ""
            ),
            None
        );
        let (status, body) = refusal(
            &callers,
            &pack,
            "s3",
            Method::PUT,
            "/porter-local-artifacts/elsewhere/x",
            HeaderMap::new(),
            "",
        )
        .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
        assert!(
            body.contains("User: arn:aws:sts::123456789012:assumed-role/porter-pack/porter-pack is not authorized to perform: s3:PutObject on resource: arn:aws:s3:::porter-local-artifacts/elsewhere/x because no identity-based policy allows the s3:PutObject action"),
            "{body}"
        );
        // A JSON service: pack has no lease table rights.
        let (status, body) = lease_refusal(&callers, &pack, "GetItem");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["__type"], "com.amazonaws.dynamodb.v20120810#AccessDeniedException");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("dynamodb:GetItem on resource: arn:aws:dynamodb:us-east-1:123456789012:table/porter-leases"));
        // A Query service: pack never assumes the deployment role.
        let (status, body) = refusal(
            &callers,
            &pack,
            "sts",
            Method::POST,
            "/",
            HeaderMap::new(),
            "Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fporter-deployment",
        )
        .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body.contains("<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"),
            "{body}"
        );
        // ... which provision may.
        let provision = callers.identify(&signed(&access_key("provision"), "sts")).unwrap();
        assert_eq!(refusal(&callers, &provision, "sts", Method::POST, "/", HeaderMap::new(), "Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fporter-deployment&Tags.member.1.Key=porter%3Aservice&Tags.member.1.Value=web"), None);
    }

    #[test]
    fn a_deployment_session_is_known_by_the_key_sts_answered_and_checked_as_the_deployment_role() {
        let callers = Callers::new(roles());
        let promote = callers.identify(&signed(&access_key("promote"), "sts")).unwrap();
        let request = "Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A210987654321%3Arole%2Fporter-deployment&RoleSessionName=porter-promote-web&Tags.member.1.Key=porter%3Aservice&Tags.member.1.Value=web";
        let answer = "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        callers.learn_session(&promote, request.as_bytes(), answer);
        let session = callers
            .identify(&signed("ASIAEXAMPLE", "elasticloadbalancing"))
            .unwrap();
        assert_eq!(session.role, "deployment");
        assert_eq!(session.account, "210987654321");
        assert_eq!(session.tags, vec![("porter:service".to_owned(), "web".to_owned())]);
        // The deployment role registers instances with load balancers of its account ...
        let register = "Action=RegisterInstancesWithLoadBalancer&Version=2012-06-01&LoadBalancerName=web";
        assert_eq!(
            refusal(
                &callers,
                &session,
                "elasticloadbalancing",
                Method::POST,
                "/",
                HeaderMap::new(),
                register
            ),
            None
        );
        // ... and takes no lease: that is the lease function's.
        let (_, body) = lease_refusal(&callers, &session, "PutItem");
        assert!(body.contains("User: arn:aws:sts::210987654321:assumed-role/porter-deployment/porter-promote-web is not authorized to perform: dynamodb:PutItem on resource: arn:aws:dynamodb:us-east-1:210987654321:table/porter-leases"), "{body}");
    }

    #[test]
    fn a_role_without_a_statement_refuses_what_it_granted() {
        // The template's provision role, less its lease fence read.
        let mut roles = Roles::parse(ROLES).unwrap();
        let provision = roles.by_key.get_mut("provision").unwrap();
        provision.statements.retain(|s| s["Sid"] != "ReadLeaseFence");
        let roles: &'static Roles = Box::leak(Box::new(roles));
        let callers = Callers::new(roles);
        let who = callers.identify(&signed(&access_key("provision"), "dynamodb")).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-amz-target", "DynamoDB_20120810.GetItem".parse().unwrap());
        let body = r#"{"TableName":"porter-leases"}"#;
        let (status, text) = refusal(&callers, &who, "dynamodb", Method::POST, "/", h.clone(), body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            text.contains("porter-provision/porter-provision is not authorized to perform: dynamodb:GetItem"),
            "{text}"
        );
        // The template as rendered grants it.
        let full = Callers::new(Roles::rendered());
        assert_eq!(refusal(&full, &who, "dynamodb", Method::POST, "/", h, body), None);
    }

    #[test]
    fn an_unknown_call_of_a_checked_caller_fails_loudly() {
        let callers = Callers::new(roles());
        let lease = callers.identify(&signed(&access_key("lease"), "dynamodb")).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-amz-target", "DynamoDB_20120810.DeleteTable".parse().unwrap());
        let (status, text) = refusal(&callers, &lease, "dynamodb", Method::POST, "/", h, "{}").unwrap();
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
        assert!(
            text.contains("dynamodb DeleteTable") && text.contains("iam_request.rs"),
            "{text}"
        );
    }
}
