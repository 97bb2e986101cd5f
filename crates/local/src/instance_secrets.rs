//! What an instance's `aws secretsmanager get-secret-value` and `aws ssm
//! get-parameter` get on the local stack: the value from moto, but only
//! where the instance's own role would let it read it in AWS. moto checks
//! no IAM, so the local stack reads the role of the instance profile its
//! launch template names and matches that role's Allow statements, the
//! way a service that reaches past its references is refused in AWS.
//! Deny statements, conditions and the permissions boundary are not
//! evaluated: the release stack's own policy is what scopes a service.

use anyhow::{Context, Result};
use aws_config::SdkConfig;

use crate::query;

/// The store a reference lives in, as the `aws` CLI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    SecretsManager,
    Ssm,
}

impl Store {
    pub fn parse(s: &str) -> Option<Store> {
        match s {
            "secretsmanager" => Some(Store::SecretsManager),
            "ssm" => Some(Store::Ssm),
            _ => None,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Store::SecretsManager => "secretsmanager:GetSecretValue",
            Store::Ssm => "ssm:GetParameter",
        }
    }
}

/// Why a read gave no value: the words the `aws` CLI would print.
#[derive(Debug)]
pub enum Refused {
    AccessDenied(String),
    NotFound(String),
    Failed(String),
}

/// Reads `name` from `store` for an instance of Auto Scaling group `group`.
pub async fn read(
    moto: &str,
    sdk: &SdkConfig,
    region: &str,
    group: &str,
    store: Store,
    name: &str,
) -> Result<String, Refused> {
    let failed = |e: anyhow::Error| Refused::Failed(format!("{e:#}"));
    let (account, statements) = instance_role_statements(moto, region, group).await.map_err(failed)?;
    let arn = match store {
        Store::SecretsManager => match secrets_manager(moto, region, "DescribeSecret", name).await {
            Ok(v) => v["ARN"].as_str().unwrap_or_default().to_owned(),
            Err(e) => return Err(e.into()),
        },
        Store::Ssm => format!(
            "arn:aws:ssm:{region}:{account}:parameter/{}",
            name.trim_start_matches('/')
        ),
    };
    if !allows(&statements, store.action(), &arn) {
        return Err(Refused::AccessDenied(format!(
            "An error occurred (AccessDeniedException): the instance's role is not authorized to perform {} on resource {arn}",
            store.action()
        )));
    }
    match store {
        Store::SecretsManager => match secrets_manager(moto, region, "GetSecretValue", name).await {
            Ok(v) => Ok(v["SecretString"].as_str().unwrap_or_default().to_owned()),
            Err(e) => Err(e.into()),
        },
        Store::Ssm => {
            let ssm = aws_sdk_ssm::Client::new(sdk);
            match ssm.get_parameter().name(name).with_decryption(true).send().await {
                Ok(out) => Ok(out.parameter.and_then(|p| p.value).unwrap_or_default()),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => Err(Refused::NotFound(
                    format!("An error occurred (ParameterNotFound) when calling the GetParameter operation: {name}"),
                )),
                Err(e) => Err(Refused::Failed(
                    porter_core::aws::clip(&format!("{e:?}"), 300).to_string(),
                )),
            }
        }
    }
}

/// Stores `value` at `name` in moto (`porter local secret`, the tests):
/// what an administrator puts in Secrets Manager or SSM in a real account.
pub async fn put(moto: &str, sdk: &SdkConfig, region: &str, store: Store, name: &str, value: &str) -> Result<()> {
    match store {
        Store::SecretsManager => {
            let body = serde_json::json!({"SecretId": name, "Name": name, "SecretString": value});
            match secrets_manager_call(moto, region, "CreateSecret", &body).await {
                Err(CallError::Service { kind, .. }) if kind == "ResourceExistsException" => {
                    secrets_manager_call(moto, region, "PutSecretValue", &body).await?;
                }
                created => {
                    created?;
                }
            }
        }
        Store::Ssm => {
            aws_sdk_ssm::Client::new(sdk)
                .put_parameter()
                .name(name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .overwrite(true)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(porter_core::aws::describe(&format!("storing {name} in {region}"), &e)))?;
        }
    }
    Ok(())
}

/// Why a Secrets Manager call gave no answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// The call did not reach moto, or its answer could not be read.
    #[error("{0:#}")]
    Transport(#[from] anyhow::Error),
    /// The service's own refusal, as the AWS CLI prints it; it never holds
    /// a value.
    #[error("An error occurred ({kind}) when calling the {action} operation: {message}")]
    Service {
        action: String,
        kind: String,
        message: String,
    },
}

impl From<CallError> for Refused {
    fn from(e: CallError) -> Refused {
        match e {
            CallError::Transport(_) => Refused::Failed(e.to_string()),
            CallError::Service { .. } => Refused::NotFound(e.to_string()),
        }
    }
}

/// A Secrets Manager call (JSON protocol) naming one secret.
async fn secrets_manager(moto: &str, region: &str, action: &str, name: &str) -> Result<serde_json::Value, CallError> {
    secrets_manager_call(moto, region, action, &serde_json::json!({"SecretId": name})).await
}

async fn secrets_manager_call(
    moto: &str,
    region: &str,
    action: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, CallError> {
    let resp = reqwest::Client::new()
        .post(format!("{moto}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("secretsmanager.{action}"))
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/secretsmanager/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("secretsmanager {action} in {region}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let kind = body["__type"].as_str().unwrap_or("Error");
    Err(CallError::Service {
        action: action.to_owned(),
        kind: kind.rsplit('#').next().unwrap_or(kind).to_owned(),
        message: body["message"]
            .as_str()
            .or(body["Message"].as_str())
            .unwrap_or("no message")
            .to_owned(),
    })
}

/// The account and the Allow statements of the role an instance of
/// `group` runs with: the instance profile its launch template names, as
/// EC2 hands it to the instance in AWS.
async fn instance_role_statements(moto: &str, region: &str, group: &str) -> Result<(String, Vec<serde_json::Value>)> {
    let xml = query::describe_group(moto, region, group).await?;
    let doc = roxmltree::Document::parse(&xml).context("DescribeAutoScalingGroups answer")?;
    let template = doc
        .descendants()
        .find(|n| n.has_tag_name("LaunchTemplate"))
        .with_context(|| format!("Auto Scaling group {group} has no launch template"))?;
    let id = query::child_text(template, "LaunchTemplateId")
        .unwrap_or_default()
        .to_owned();
    let version = query::child_text(template, "Version").unwrap_or("$Default").to_owned();
    let xml = query::call(
        moto,
        "ec2",
        "2016-11-15",
        region,
        "DescribeLaunchTemplateVersions",
        &[("LaunchTemplateId", &id), ("LaunchTemplateVersion.1", &version)],
    )
    .await?;
    let doc = roxmltree::Document::parse(&xml).context("DescribeLaunchTemplateVersions answer")?;
    let profile_arn = doc
        .descendants()
        .find(|n| n.tag_name().name().eq_ignore_ascii_case("iamInstanceProfile"))
        .and_then(|p| {
            p.children()
                .find(|n| n.tag_name().name().eq_ignore_ascii_case("arn"))
                .and_then(|n| n.text())
        })
        .with_context(|| format!("launch template {id} gives its instances no instance profile"))?
        .to_owned();
    let profiles = [profile_arn.rsplit('/').next().unwrap_or_default().to_owned()];
    let iam = |action: &'static str, params: Vec<(&'static str, String)>| async move {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        query::call(moto, "iam", "2010-05-08", region, action, &params).await
    };
    let mut account = String::new();
    let mut statements = Vec::new();
    for profile in profiles {
        let xml = iam("GetInstanceProfile", vec![("InstanceProfileName", profile)]).await?;
        let doc = roxmltree::Document::parse(&xml).context("GetInstanceProfile answer")?;
        if let Some(arn) = doc
            .descendants()
            .find(|n| n.has_tag_name("InstanceProfile"))
            .and_then(|p| query::child_text(p, "Arn"))
        {
            account = arn.split(':').nth(4).unwrap_or_default().to_owned();
        }
        let roles: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("Roles"))
            .flat_map(|r| r.children().filter(|n| n.has_tag_name("member")))
            .filter_map(|m| query::child_text(m, "RoleName").map(str::to_owned))
            .collect();
        for role in roles {
            let xml = iam("ListRolePolicies", vec![("RoleName", role.clone())]).await?;
            let doc = roxmltree::Document::parse(&xml).context("ListRolePolicies answer")?;
            let names: Vec<String> = doc
                .descendants()
                .filter(|n| n.has_tag_name("PolicyNames"))
                .flat_map(|p| p.children().filter(|n| n.has_tag_name("member")))
                .filter_map(|m| m.text().map(str::to_owned))
                .collect();
            for policy in names {
                let xml = iam(
                    "GetRolePolicy",
                    vec![("RoleName", role.clone()), ("PolicyName", policy)],
                )
                .await?;
                let doc = roxmltree::Document::parse(&xml).context("GetRolePolicy answer")?;
                let text = query::text(doc.root(), "PolicyDocument").unwrap_or_default();
                let document = policy_document(text);
                match &document["Statement"] {
                    serde_json::Value::Array(list) => statements.extend(list.iter().cloned()),
                    s @ serde_json::Value::Object(_) => statements.push(s.clone()),
                    _ => {}
                }
            }
        }
    }
    Ok((account, statements))
}

/// A policy document as GetRolePolicy returns it: URL-encoded JSON in
/// IAM; moto hands back a role that CloudFormation made with its policy
/// in Python's notation (single quotes), which is read here too. An
/// unreadable document grants nothing.
fn policy_document(text: &str) -> serde_json::Value {
    let decoded = percent_decode(text);
    serde_json::from_str(&decoded)
        .or_else(|_| serde_json::from_str(&decoded.replace('\'', "\"")))
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Whether the instance role's statements allow `action` on `arn`, as
/// IAM decides it ([`crate::iam`]).
fn allows(statements: &[serde_json::Value], action: &str, arn: &str) -> bool {
    crate::iam::evaluate(statements, None, action, arn) == crate::iam::Decision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_an_allow_statement_naming_the_action_and_the_resource_grants() {
        let statements = vec![
            json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}),
            json!({"Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": ["arn:aws:ssm:r:1:parameter/porter/s/e/a"]}),
        ];
        assert!(allows(
            &statements,
            "ssm:GetParameter",
            "arn:aws:ssm:r:1:parameter/porter/s/e/a"
        ));
        assert!(!allows(
            &statements,
            "ssm:GetParameter",
            "arn:aws:ssm:r:1:parameter/porter/s/e/b"
        ));
        assert!(!allows(
            &statements,
            "secretsmanager:GetSecretValue",
            "arn:aws:ssm:r:1:parameter/porter/s/e/a"
        ));
        assert_eq!(policy_document("%7B%22a%22%3A1%7D"), json!({"a": 1}));
        assert_eq!(
            policy_document("{'Statement': [{'Effect': 'Allow'}]}"),
            json!({"Statement": [{"Effect": "Allow"}]})
        );
        assert_eq!(policy_document("not a policy"), json!(null));
    }
}
