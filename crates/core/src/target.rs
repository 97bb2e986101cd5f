//! What provision, promote and prune share: the release they act on, the
//! regions they act in, and running one step per region at once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aws::{Aws, RegionClients};
use crate::config::{Config, Environment, Region};
use crate::phase::PhaseError;
use crate::pins;
use crate::plan;
use crate::release::{Release, ReleaseRef, S3Object};
use crate::store;

/// The common part of every regional phase's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Pack's output, inline or as `s3://` of its record.
    pub release: ReleaseRef,
    /// One region (a state machine Map item)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// ...or several; neither means every region of the environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

/// The release a reference names: pack's output as it is, or the record
/// an `s3://` pointer names, read (its config is not: see
/// [`Deployment::load`]).
pub async fn release_of<'r>(aws: &Aws, release: &'r ReleaseRef) -> Result<Cow<'r, Release>, PhaseError> {
    match release {
        ReleaseRef::Inline(r) => Ok(Cow::Borrowed(r.as_ref())),
        ReleaseRef::Pointer(url) => {
            let obj = S3Object::parse_url(url).ok_or_else(|| {
                PhaseError::Invalid(format!(
                    "`release` must be pack's output or s3://bucket/key of its record, not `{url}`"
                ))
            })?;
            Ok(Cow::Owned(store::read_json(&aws.s3(), &obj).await?))
        }
    }
}

/// A release with its resolved config, ready to act on.
#[derive(Debug)]
pub struct Deployment {
    pub release: Release,
    pub config: Config,
}

impl Deployment {
    pub async fn load(aws: &Aws, target: &Target) -> Result<Deployment, PhaseError> {
        let release = release_of(aws, &target.release).await?.into_owned();
        let bytes = store::read_bytes(&aws.s3(), &release.config).await?;
        let found = hex::encode(Sha256::digest(&bytes));
        if release.config_sha256.is_empty() {
            return Err(PhaseError::Invalid(format!(
                "release {} has no sha256 of its config (a record from before integrity checks); pack it again",
                release.version
            )));
        }
        if found != release.config_sha256 {
            return Err(PhaseError::Invalid(format!(
                "the resolved config {} is not the one release {} was packed with: its sha256 is {found}, the release says {}; it changed after pack, so pack again",
                release.config.url(),
                release.version,
                release.config_sha256
            )));
        }
        let config: Config = store::parse_json(&release.config, &bytes)?;
        Ok(Deployment { release, config })
    }

    pub fn environment(&self) -> Result<&Environment, PhaseError> {
        self.config
            .environment(&self.release.environment)
            .map_err(PhaseError::from)
    }

    /// The regions the target names, checked against the environment.
    pub fn regions(&self, target: &Target) -> Result<Vec<&Region>, PhaseError> {
        let env = self.environment()?;
        let names: Vec<&String> = match (&target.region, target.regions.is_empty()) {
            (Some(r), _) => vec![r],
            (None, false) => target.regions.iter().collect(),
            (None, true) => return Ok(env.regions.iter().collect()),
        };
        names
            .into_iter()
            .map(|n| env.region(n).map_err(PhaseError::from))
            .collect()
    }

    /// The target's regions, once the pins allow each of them: call this
    /// before acting anywhere.
    pub async fn pinned_regions(&self, aws: &Aws, target: &Target) -> Result<Vec<&Region>, PhaseError> {
        let regions = self.regions(target)?;
        pins::check(aws, &self.release.service, &self.release.environment, &regions).await?;
        Ok(regions)
    }

    /// Refuses to start while a blackout window is active.
    pub fn check_blackout(&self) -> Result<(), PhaseError> {
        let env = self.environment()?;
        match plan::active_blackout(env, chrono::Utc::now()) {
            Some(w) => Err(plan::blackout(&env.name, w)),
            None => Ok(()),
        }
    }

    pub fn stack_name(&self) -> String {
        crate::template::stack_name(&self.release.service, &self.release.environment, &self.release.version)
    }

    pub async fn clients(&self, aws: &Aws, region: &Region, phase: &str) -> Result<RegionClients, PhaseError> {
        aws.region(
            &region.name,
            &region.role_arn,
            &format!("porter-{phase}-{}", self.release.service),
            &pins::session_tags(&self.release.service, &self.release.environment),
        )
        .await
        .map_err(|e| e.in_region(&region.name))
    }
}

/// Runs `step` for every region at once and collects the results by region.
/// The first error (by region name) wins; its message names its region.
pub async fn each_region<'a, T, F, Fut>(regions: Vec<&'a Region>, step: F) -> Result<BTreeMap<String, T>, PhaseError>
where
    F: Fn(&'a Region) -> Fut,
    Fut: Future<Output = Result<T, PhaseError>>,
{
    let names: Vec<String> = regions.iter().map(|r| r.name.clone()).collect();
    let results = futures::future::join_all(regions.into_iter().map(step)).await;
    let mut out = BTreeMap::new();
    for (name, result) in names.into_iter().zip(results) {
        out.insert(name.clone(), result.map_err(|e| e.in_region(&name))?);
    }
    Ok(out)
}

/// The earliest second since the epoch, for timeouts that survive resumes.
pub fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}
