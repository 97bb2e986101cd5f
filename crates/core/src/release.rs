//! A release: what pack made and every later phase deploys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An object in S3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Object {
    pub bucket: String,
    pub key: String,
}

impl S3Object {
    /// Reads `s3://bucket/key`.
    pub fn parse_url(url: &str) -> Option<S3Object> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/')?;
        (!bucket.is_empty() && !key.is_empty()).then(|| S3Object {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// Where the source came from, recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
}

/// The manifest stored beside the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub service: String,
    pub environment: String,
    pub version: String,
    pub revision: String,
    pub sha256: String,
    pub provenance: Provenance,
    /// RFC3339; the first pack of this content wins, so re-packs change nothing.
    pub build_time: String,
    #[serde(default)]
    pub image: Option<String>,
}

/// Pack's output, and the input of every later phase. Small on purpose: it
/// travels through Step Functions state and CodePipeline variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub service: String,
    pub environment: String,
    /// 12 hex digits naming the payload and the resolved config together
    /// (see [`version_of`]): stack names use it.
    pub version: String,
    /// The commit (short) when known, else the version.
    pub revision: String,
    /// The payload's sha256. Provision checks S3's own SHA-256 of the
    /// payload against it before shipping, and each instance checks what
    /// it downloaded.
    pub sha256: String,
    /// The resolved config's sha256: every later phase checks it before
    /// acting on the config. Empty in a record made before it existed,
    /// which is refused.
    #[serde(default)]
    pub config_sha256: String,
    #[serde(default)]
    pub image: Option<String>,
    /// The machine image (AMI) instances boot, per region, as pack resolved
    /// it from the image parameter: a newer image is a new release, so the
    /// weekly build picks up patches. Empty in a record from before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// How this deploy reaches the regions: waves, bake, alarms (not part
    /// of the version: the same release may be rolled out another way).
    #[serde(default)]
    pub rollout: crate::config::model::Rollout,
    /// The deploy's optional steps this release's config asks for (not part
    /// of the version either).
    #[serde(default)]
    pub steps: Steps,
    /// The tarball.
    pub payload: S3Object,
    pub manifest: S3Object,
    /// The resolved config (JSON), so later phases never need the source.
    pub config: S3Object,
    /// This record itself: a CodePipeline action can pass `s3://...` of it.
    pub record: S3Object,
    pub regions: Vec<String>,
}

/// The optional steps of a deploy that a release's config asks for. The
/// state machine enters only these: each costs state transitions and a
/// Lambda call, and a service with no hooks and no per-phase webhooks
/// should pay for none of them. The deploy's start, end and failure
/// notices, the `pre_pack` hooks (due before any release exists) and the
/// hooks after a failure are not optional here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Steps {
    /// `post_pack` or `pre_provision` hooks.
    pub hooks_after_pack: bool,
    /// `post_provision` or `pre_promote` hooks.
    pub hooks_after_provision: bool,
    /// `post_promote` or `pre_prune` hooks.
    pub hooks_after_promote: bool,
    /// `post_prune` hooks.
    pub hooks_after_prune: bool,
    /// `provision_success_webhook_url`.
    pub notify_provisioned: bool,
    /// `promote_success_webhook_url`.
    pub notify_promoted: bool,
}

/// A record made before steps were recorded takes every step: each does
/// nothing when its config has nothing for it.
impl Default for Steps {
    fn default() -> Steps {
        Steps {
            hooks_after_pack: true,
            hooks_after_provision: true,
            hooks_after_promote: true,
            hooks_after_prune: true,
            notify_provisioned: true,
            notify_promoted: true,
        }
    }
}

impl Steps {
    /// The steps `config` asks for: a hooks step where a hook at one of its
    /// points runs when the phase before it succeeded, a notice where its
    /// webhook is configured.
    pub fn of(config: &crate::config::model::Config) -> Steps {
        let hooks_at = |points: &[&str]| {
            points.iter().any(|p| {
                config
                    .hooks
                    .get(*p)
                    .is_some_and(|hooks| hooks.iter().any(|h| h.run_condition.runs(false)))
            })
        };
        Steps {
            hooks_after_pack: hooks_at(&["post_pack", "pre_provision"]),
            hooks_after_provision: hooks_at(&["post_provision", "pre_promote"]),
            hooks_after_promote: hooks_at(&["post_promote", "pre_prune"]),
            hooks_after_prune: hooks_at(&["post_prune"]),
            notify_provisioned: config.slack.contains_key("provision_success_webhook_url"),
            notify_promoted: config.slack.contains_key("promote_success_webhook_url"),
        }
    }

    /// None asked for: what the template's stand-in releases carry.
    pub fn none() -> Steps {
        Steps {
            hooks_after_pack: false,
            hooks_after_provision: false,
            hooks_after_promote: false,
            hooks_after_prune: false,
            notify_provisioned: false,
            notify_promoted: false,
        }
    }
}

/// A release given inline or as a pointer to its record in S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReleaseRef {
    Inline(Box<Release>),
    Pointer(String),
}

/// A release's version: the payload, the resolved config, the container
/// image and the machine images together, so the same code deployed with
/// another config (another instance count, a `${VAR}` with another value),
/// another container image or onto a patched machine image is a release,
/// and a stack, of its own.
pub fn version_of(
    payload_sha256: &str,
    config_sha256: &str,
    image: Option<&str>,
    images: &BTreeMap<String, String>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut what = format!("{payload_sha256}:{config_sha256}");
    // Added only when present, so releases made before keep their versions.
    if let Some(i) = image {
        what.push_str(&format!(":image={i}"));
    }
    for (region, ami) in images {
        what.push_str(&format!(":{region}={ami}"));
    }
    hex::encode(Sha256::digest(what))[..VERSION_LEN].to_string()
}

/// Whether `s` is a release version: [`VERSION_LEN`] hex digits.
pub fn is_version(s: &str) -> bool {
    s.len() == VERSION_LEN && s.chars().all(|c| c.is_ascii_hexdigit())
}

pub use crate::limits::VERSION_LEN;

#[cfg(test)]
impl Release {
    /// A release for tests: service `web`, environment `prod`, its objects
    /// in `bucket`, no regions and no optional steps.
    pub(crate) fn sample(bucket: &str) -> Release {
        let obj = |key: &str| S3Object {
            bucket: bucket.into(),
            key: key.into(),
        };
        Release {
            service: "web".into(),
            environment: "prod".into(),
            version: "abc123def456".into(),
            revision: "abc1234".into(),
            sha256: "f".repeat(64),
            config_sha256: "e".repeat(64),
            image: None,
            images: BTreeMap::new(),
            rollout: Default::default(),
            steps: Steps::none(),
            payload: obj("p.tar"),
            manifest: obj("m"),
            config: obj("c"),
            record: obj("r"),
            regions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_covers_the_container_and_machine_images_and_keeps_old_versions() {
        let none = BTreeMap::new();
        let base = version_of("p", "c", None, &none);
        // Releases made before images counted keep their version.
        use sha2::{Digest, Sha256};
        assert_eq!(base, hex::encode(Sha256::digest("p:c"))[..VERSION_LEN]);
        let image = version_of("p", "c", Some("r.example.com/web:1"), &none);
        let patched = BTreeMap::from([("us-east-1".to_owned(), "ami-0123456789abcdef0".to_owned())]);
        let ami = version_of("p", "c", None, &patched);
        let other = BTreeMap::from([("us-east-1".to_owned(), "ami-0fedcba9876543210".to_owned())]);
        assert!(base != image && base != ami && ami != version_of("p", "c", None, &other));
        assert_eq!(ami, version_of("p", "c", None, &patched));
    }

    /// A record made before steps were recorded takes every one.
    #[test]
    fn an_old_record_takes_every_step() {
        let release = Release::sample("b");
        let mut record = serde_json::to_value(&release).unwrap();
        record
            .as_object_mut()
            .unwrap()
            .remove("steps")
            .expect("steps are recorded");
        let old: Release = serde_json::from_value(record).unwrap();
        assert_eq!(old.steps, Steps::default());
        assert!(old.steps.hooks_after_pack && old.steps.notify_promoted);
    }
}
