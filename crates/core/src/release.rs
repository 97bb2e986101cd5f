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
            bucket: bucket.to_string(),
            key: key.to_string(),
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
    pub rollout: crate::config::Rollout,
    /// The tarball.
    pub payload: S3Object,
    pub manifest: S3Object,
    /// The resolved config (JSON), so later phases never need the source.
    pub config: S3Object,
    /// This record itself: a CodePipeline action can pass `s3://...` of it.
    pub record: S3Object,
    pub regions: Vec<String>,
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
        let patched = BTreeMap::from([("us-east-1".to_string(), "ami-0123456789abcdef0".to_string())]);
        let ami = version_of("p", "c", None, &patched);
        let other = BTreeMap::from([("us-east-1".to_string(), "ami-0fedcba9876543210".to_string())]);
        assert!(base != image && base != ami && ami != version_of("p", "c", None, &other));
        assert_eq!(ami, version_of("p", "c", None, &patched));
    }
}
