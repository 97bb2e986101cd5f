//! What a repository cannot decide: which deployment role and which regions
//! an environment may use, which service this porter deploys, and which
//! load balancers belong to that service.
//!
//! A service's `.porter/config` is read from whatever branch was pushed, so
//! everything in it that reaches into an account is checked against facts
//! kept outside the repository:
//!
//! - **Environment pins**, one SSM parameter per environment under a path
//!   (`/porter/environments/` by default): `{"regions": {"us-west-2":
//!   {"role_arn": "arn:aws:iam::…:role/porter-deployment"}}}`. Written by an
//!   administrator, read by the phase functions. SSM rather than a template
//!   parameter because environments belong to the account, not to one
//!   service's porter stack: every service deploying to `production` reads
//!   the same pin, an administrator changes it without redeploying anything,
//!   IAM decides who may write it, and the local stack keeps its pins the
//!   same way (its bootstrap writes them into moto).
//! - **The service**: the infra's `ServiceName` parameter. A branch naming
//!   another service would otherwise act, through the deployment role's
//!   tag-scoped rights, on that service's stacks and load balancers.
//! - **Load balancer ownership**: the ELB's own tags `porter:service` and
//!   `porter:environment`, set by whoever created it (the local bootstrap
//!   does). Only ELBs tagged for this service and environment get instances.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::aws::{self, Aws, RegionClients};
use crate::config::Region;
use crate::phase::PhaseError;

// Defined in their own module, which `aws` uses too (an `Aws` carries its
// pinning): found here, with the pins they govern.
pub use crate::pinning::{Pinning, DEFAULT_PATH};
/// ELB and stack tags that say whose they are.
pub const SERVICE_TAG: &str = "porter:service";
pub const ENVIRONMENT_TAG: &str = "porter:environment";
/// An SSM parameter holds at most 8 KB (advanced: 8 KB too for GetParameter
/// answers we accept); anything larger is not a pin.
const MAX_PIN_BYTES: usize = 8 * 1024;

/// One environment's pin, as an administrator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentPin {
    pub regions: BTreeMap<String, RegionPin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPin {
    pub role_arn: String,
}

/// The parameter name of `environment`'s pin under `path`.
pub fn parameter_name(path: &str, environment: &str) -> String {
    format!("{}/{environment}", path.trim_end_matches('/'))
}

/// Refuses a deploy of `service` to `environment` in `regions` unless the
/// pins allow each region with exactly the role the config names.
pub async fn check(aws: &Aws, service: &str, environment: &str, regions: &[&Region]) -> Result<(), PhaseError> {
    let Pinning::Pinned { path, service: pinned } = aws.pinning() else {
        return Ok(());
    };
    if let Some(pinned) = pinned {
        if pinned != service {
            return Err(PhaseError::AccessDenied(format!(
                "this porter deploys the service `{pinned}`, and the config names `{service}`: service_name in .porter/config must be `{pinned}` (the infra's ServiceName parameter pins it)"
            )));
        }
    }
    let name = parameter_name(path, environment);
    let pin = read(aws, &name, environment).await?;
    for region in regions {
        allows(&pin, &name, environment, &region.name, &region.role_arn)?;
    }
    Ok(())
}

/// One region against its environment's pin.
pub fn allows(
    pin: &EnvironmentPin,
    parameter: &str,
    environment: &str,
    region: &str,
    role_arn: &str,
) -> Result<(), PhaseError> {
    let Some(allowed) = pin.regions.get(region) else {
        return Err(PhaseError::AccessDenied(format!(
            "environment `{environment}` is not pinned to region {}: it may deploy only to {} ({parameter}); an administrator adds a region there, a repository cannot",
            region,
            pin.regions.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    if allowed.role_arn != role_arn {
        return Err(PhaseError::AccessDenied(format!(
            "environment `{environment}` deploys to {region} as {}, and the config names role_arn {role_arn}: use the pinned role ({parameter})",
            allowed.role_arn
        )));
    }
    Ok(())
}

async fn read(aws: &Aws, name: &str, environment: &str) -> Result<EnvironmentPin, PhaseError> {
    let out = aws.ssm().get_parameter().name(name).send().await.map_err(|e| {
        if e.as_service_error().is_some_and(|se| se.is_parameter_not_found()) {
            PhaseError::AccessDenied(format!(
                "environment `{environment}` is not pinned: there is no SSM parameter {name}. An administrator writes it, e.g. {{\"regions\": {{\"us-west-2\": {{\"role_arn\": \"arn:aws:iam::ACCOUNT:role/porter-deployment\"}}}}}} (docs/security-model.md, \"Environments are pinned outside the repository\")"
            ))
        } else {
            aws::classify(&format!("read the pin of environment `{environment}` ({name})"), e)
        }
    })?;
    let value = out.parameter().and_then(|p| p.value()).unwrap_or_default();
    parse(value, name)
}

/// Reads a pin's JSON; an administrator's typo is named, not guessed at.
pub fn parse(value: &str, name: &str) -> Result<EnvironmentPin, PhaseError> {
    if value.len() > MAX_PIN_BYTES {
        return Err(PhaseError::Invalid(format!(
            "the pin {name} is {} bytes; a pin is at most {MAX_PIN_BYTES}",
            value.len()
        )));
    }
    serde_json::from_str(value).map_err(|e| {
        PhaseError::Invalid(format!(
            "the pin {name} is not {{\"regions\": {{\"REGION\": {{\"role_arn\": \"ARN\"}}}}}}: {e}; an administrator fixes it"
        ))
    })
}

/// Refuses a load balancer that is not tagged for this service and
/// environment: a config cannot borrow another service's ELB. Its tags,
/// when it is the service's.
pub async fn check_elb_owner(
    clients: &RegionClients,
    elb: &str,
    service: &str,
    environment: &str,
) -> Result<BTreeMap<String, String>, PhaseError> {
    let tags = elb_tags(clients, elb).await?;
    owned(
        |k| tags.get(k).map(String::as_str),
        "load balancer",
        elb,
        service,
        environment,
        &clients.region,
    )?;
    Ok(tags)
}

/// The session tags a deployment role is assumed with: the release's
/// service and environment, which its policy compares with resource tags.
pub fn session_tags<'a>(service: &'a str, environment: &'a str) -> [(&'static str, &'a str); 2] {
    [(SERVICE_TAG, service), (ENVIRONMENT_TAG, environment)]
}

/// A load balancer's tags.
pub async fn elb_tags(clients: &RegionClients, elb: &str) -> Result<BTreeMap<String, String>, PhaseError> {
    let out = clients
        .elb
        .describe_tags()
        .load_balancer_names(elb)
        .send()
        .await
        .map_err(aws::err(format!("read the tags of load balancer {elb}")))?;
    Ok(out
        .tag_descriptions()
        .iter()
        .flat_map(|d| d.tags())
        .map(|t| (t.key().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect())
}

/// Whether the tags (`tag` looks one up by key) name this service and
/// environment.
pub fn owned<'a>(
    tag: impl Fn(&str) -> Option<&'a str>,
    what: &str,
    name: &str,
    service: &str,
    environment: &str,
    region: &str,
) -> Result<(), PhaseError> {
    let found = (tag(SERVICE_TAG), tag(ENVIRONMENT_TAG));
    if found == (Some(service), Some(environment)) {
        return Ok(());
    }
    let shown = |v: Option<&str>| v.map_or("no tag".to_owned(), |v| format!("`{v}`"));
    Err(PhaseError::AccessDenied(format!(
        "{what} {name} in {region} is not {service}'s in {environment}: its {SERVICE_TAG} is {} and its {ENVIRONMENT_TAG} {}; whoever owns it tags it {SERVICE_TAG}={service}, {ENVIRONMENT_TAG}={environment} to let this service use it",
        shown(found.0),
        shown(found.1)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_allows_its_regions_with_its_role_only() {
        let pin = parse(
            r#"{"regions": {"us-west-2": {"role_arn": "arn:aws:iam::1:role/porter-deployment"}}}"#,
            "/p/staging",
        )
        .unwrap();
        let role = "arn:aws:iam::1:role/porter-deployment";
        assert!(allows(&pin, "/p/staging", "staging", "us-west-2", role).is_ok());

        let e = allows(&pin, "/p/staging", "staging", "eu-west-1", role).unwrap_err();
        assert_eq!(e.error_type(), "AccessDenied");
        assert!(
            e.to_string().contains("eu-west-1") && e.to_string().contains("us-west-2"),
            "{e}"
        );

        let e = allows(&pin, "/p/staging", "staging", "us-west-2", "arn:aws:iam::2:role/admin").unwrap_err();
        assert!(e.to_string().contains("arn:aws:iam::2:role/admin"), "{e}");
    }

    #[test]
    fn a_malformed_pin_is_named() {
        for bad in ["", "{}", r#"{"regions": {"us-west-2": {"role": "x"}}}"#, "[1]"] {
            let e = parse(bad, "/p/prod").unwrap_err();
            assert!(e.to_string().contains("/p/prod"), "{e}");
        }
        assert!(parse(&" ".repeat(MAX_PIN_BYTES + 1), "/p/prod").is_err());
    }

    #[test]
    fn ownership_needs_both_tags() {
        let mut tags = BTreeMap::new();
        tags.insert(SERVICE_TAG, "hello");
        let lookup = |tags: &BTreeMap<&'static str, &'static str>| {
            let tags = tags.clone();
            move |k: &str| tags.get(k).copied()
        };
        assert!(owned(lookup(&tags), "load balancer", "lb", "hello", "staging", "us-west-2").is_err());
        tags.insert(ENVIRONMENT_TAG, "staging");
        assert!(owned(lookup(&tags), "load balancer", "lb", "hello", "staging", "us-west-2").is_ok());
        let e = owned(lookup(&tags), "load balancer", "lb", "other", "staging", "us-west-2").unwrap_err();
        assert_eq!(e.error_type(), "AccessDenied");
        assert!(e.to_string().contains("`hello`"), "{e}");
    }

    #[test]
    fn parameter_names_join_cleanly() {
        assert_eq!(
            parameter_name("/porter/environments/", "prod"),
            "/porter/environments/prod"
        );
        assert_eq!(parameter_name("/x", "prod"), "/x/prod");
    }
}
