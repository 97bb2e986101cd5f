//! pack: source → validated config + payload tarball + manifest, uploaded
//! content-addressed with SSE-KMS.
//!
//! The tarball is deterministic (sorted entries, zero times and owners), so
//! the same source always has the same sha256 and the same S3 keys, and a
//! re-run finds every object already there and uploads nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aws::{self, Aws};
use crate::config::{self, Config};
use crate::phase::PhaseError;
use crate::plan;
use crate::release::{Manifest, Provenance, Release, S3Object};

/// Where the source comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A zip in S3, as CodePipeline hands a source artifact over.
    S3 { bucket: String, key: String },
    /// A folder on this machine (CLI and local stack).
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackInput {
    pub environment: String,
    pub source: Source,
    #[serde(default)]
    pub provenance: Provenance,
    /// A container image built by the pipeline's build stage, if any.
    #[serde(default)]
    pub image: Option<String>,
    /// The pipeline's artifact bucket. Without one, the payload goes to the
    /// first region's `s3_bucket`, through that region's deployment role.
    #[serde(default)]
    pub artifact_bucket: Option<String>,
    /// The KMS key for the artifact bucket; the bucket's default otherwise.
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
}

/// The deploy state machine's input: pack's input, and what the later
/// phases take. Every field is present (null when unset) because the
/// state machine reads each by path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployInput {
    #[serde(flatten)]
    pub pack: PackInput,
    /// Unpromoted stacks prune keeps.
    #[serde(default)]
    pub keep: u32,
}

/// What pack did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Packed {
    pub release: Release,
    /// The keys written by this run; empty when everything was there.
    pub uploaded: Vec<String>,
}

/// A source folder made ready: its tarball and its config.
pub struct Prepared {
    pub config: Config,
    pub tarball: Vec<u8>,
    pub sha256: String,
}

/// Reads a zip (as CodePipeline stores source artifacts) into a new folder.
pub fn unzip(bytes: &[u8], into: &Path) -> Result<(), PhaseError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| PhaseError::Invalid(format!("the source artifact is not a readable zip: {e}")))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| PhaseError::Invalid(format!("the source zip is damaged at entry {i}: {e}")))?;
        let Some(rel) = entry.enclosed_name() else {
            return Err(PhaseError::Invalid(format!(
                "the source zip holds an unsafe path `{}`; rebuild the artifact",
                entry.name()
            )));
        };
        let dest = into.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&dest).map_err(io("create", &dest))?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| PhaseError::Invalid(format!("the source zip entry `{}` cannot be read: {e}", entry.name())))?;
        std::fs::write(&dest, &data).map_err(io("write", &dest))?;
        #[cfg(unix)]
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode & 0o777));
        }
    }
    Ok(())
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PhaseError + 'a {
    move |e| PhaseError::Aws(format!("cannot {what} {}: {e}", path.display()))
}

/// Validates the config and builds the tarball; no AWS involved.
pub fn prepare(
    root: &Path,
    environment: &str,
    image: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Prepared, PhaseError> {
    let (file, repo_root) = config::locate(root);
    let loaded = config::load_file(&file, &repo_root, lookup).map_err(|e| {
        PhaseError::Invalid(format!(
            "cannot read {}: {e}; the source must hold the service's .porter/config",
            file.display()
        ))
    })?;
    let config = loaded.deployable().map_err(PhaseError::Invalid)?;
    let env = config.environment(environment).map_err(PhaseError::Invalid)?;
    if let Some(w) = plan::active_blackout(env, chrono::Utc::now()) {
        return Err(blackout(environment, w));
    }
    let start = repo_root.join("start");
    if image.is_none() && !is_executable(&start) {
        return Err(PhaseError::Invalid(format!(
            "{} has no executable `start` at its root and no container image was given: add a `start` script that runs the service (chmod +x), or pass the image the build stage made",
            repo_root.display()
        )));
    }
    let tarball = tarball(&repo_root)?;
    let sha256 = hex::encode(Sha256::digest(&tarball));
    Ok(Prepared {
        config,
        tarball,
        sha256,
    })
}

pub fn blackout(environment: &str, w: &config::BlackoutWindow) -> PhaseError {
    PhaseError::Blackout(format!(
        "environment `{environment}` is in a blackout window ({} to {}); deploy after it ends or change blackout_windows in .porter/config",
        w.start_time, w.end_time
    ))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// A tar of the folder that depends on content only.
pub fn tarball(root: &Path) -> Result<Vec<u8>, PhaseError> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| {
            !matches!(
                e.file_name().to_str(),
                Some(".git" | ".porter-tmp" | "target" | "node_modules")
            )
        })
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    let mut builder = tar::Builder::new(Vec::new());
    for path in files {
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let data = std::fs::read(&path).map_err(io("read", &path))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(if is_executable(&path) { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder
            .append_data(&mut header, rel, data.as_slice())
            .map_err(|e| PhaseError::Invalid(format!("cannot add {} to the payload: {e}", rel.display())))?;
    }
    let mut out = builder
        .into_inner()
        .map_err(|e| PhaseError::Invalid(format!("cannot finish the payload: {e}")))?;
    out.flush().ok();
    Ok(out)
}

/// Zips a folder the way a pipeline's source stage would, keeping the
/// executable bits (the `start` script needs its own).
pub fn zip_folder(root: &Path) -> Result<Vec<u8>, PhaseError> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| !matches!(e.file_name().to_str(), Some(".git" | "target" | "node_modules")))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for path in files {
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().to_string();
        let mode = if is_executable(&path) { 0o755 } else { 0o644 };
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(mode);
        let data = std::fs::read(&path).map_err(io("read", &path))?;
        w.start_file(rel.as_str(), opts)
            .and_then(|_| w.write_all(&data).map_err(Into::into))
            .map_err(|e| PhaseError::Invalid(format!("cannot zip {rel}: {e}")))?;
    }
    let cursor = w
        .finish()
        .map_err(|e| PhaseError::Invalid(format!("cannot finish the zip: {e}")))?;
    Ok(cursor.into_inner())
}

/// Runs pack: prepares the source and uploads what is not there yet.
pub async fn pack(aws: &Aws, input: &PackInput, source_root: &Path) -> Result<Packed, PhaseError> {
    let prepared = prepare(
        source_root,
        &input.environment,
        input.image.as_deref(),
        &config::process_env,
    )?;
    upload(aws, input, prepared).await
}

/// Fetches an S3 source zip with `s3` (in CodePipeline, a client holding the
/// job's artifact credentials) and unpacks it into `into`.
pub async fn fetch_zip(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, into: &Path) -> Result<(), PhaseError> {
    let obj = s3.get_object().bucket(bucket).key(key).send().await.map_err(|e| {
        match aws::classify(&format!("read source artifact s3://{bucket}/{key}"), e) {
            PhaseError::Aws(m) if m.contains("NoSuchKey") => PhaseError::Invalid(format!(
                "{m}: the source artifact is missing; check the pipeline's source stage"
            )),
            other => other,
        }
    })?;
    let bytes = obj
        .body
        .collect()
        .await
        .map_err(|e| PhaseError::Retryable(format!("reading s3://{bucket}/{key} was cut off: {e}")))?
        .into_bytes();
    unzip(&bytes, into)
}

async fn upload(aws: &Aws, input: &PackInput, prepared: Prepared) -> Result<Packed, PhaseError> {
    let Prepared {
        config,
        tarball,
        sha256,
    } = prepared;
    let env = config.environment(&input.environment).map_err(PhaseError::Invalid)?;
    let first = env
        .regions
        .first()
        .ok_or_else(|| PhaseError::Invalid("the environment has no regions".into()))?;
    let (s3, bucket, kms) = match &input.artifact_bucket {
        Some(b) => (aws.s3(), b.clone(), input.sse_kms_key_id.clone()),
        None => {
            let clients = aws
                .region(
                    &first.name,
                    &first.role_arn,
                    &format!("porter-pack-{}", config.service_name),
                )
                .await?;
            (clients.s3, first.s3_bucket.clone(), first.sse_kms_key_id.clone())
        }
    };
    let version = sha256[..12].to_string();
    let revision = input
        .provenance
        .commit
        .as_deref()
        .map(|c| c.chars().take(7).collect())
        .unwrap_or_else(|| version.clone());
    let prefix = format!(
        "porter-deployment/{}/{}/{}/{}",
        config.service_name, env.name, revision, sha256
    );
    let object = |suffix: &str| S3Object {
        bucket: bucket.clone(),
        key: format!("{prefix}{suffix}"),
    };
    let release = Release {
        service: config.service_name.clone(),
        environment: env.name.clone(),
        version: version.clone(),
        revision: revision.clone(),
        sha256: sha256.clone(),
        image: input.image.clone(),
        payload: object(".tar"),
        manifest: object(".manifest.json"),
        config: object(".config.json"),
        record: object(".release.json"),
        regions: env.regions.iter().map(|r| r.name.clone()).collect(),
    };
    let manifest = Manifest {
        service: release.service.clone(),
        environment: release.environment.clone(),
        version,
        revision,
        sha256: sha256.clone(),
        provenance: input.provenance.clone(),
        build_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        image: input.image.clone(),
    };
    let store = Store {
        s3: &s3,
        kms: kms.as_deref(),
    };
    let mut uploaded = Vec::new();
    let json = |v: &dyn erased::Json| v.to_bytes();
    for (obj, bytes) in [
        (&release.payload, tarball),
        (&release.manifest, json(&manifest)),
        (&release.config, json(&config)),
        (&release.record, json(&release)),
    ] {
        if store.put_if_absent(obj, bytes, &sha256).await? {
            uploaded.push(obj.key.clone());
        }
    }
    tracing::info!(service = %release.service, version = %release.version, uploaded = uploaded.len(), "packed");
    Ok(Packed { release, uploaded })
}

mod erased {
    /// Lets one closure serialize the differently typed records.
    pub trait Json {
        fn to_bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_bytes(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).expect("records serialize")
        }
    }
}

/// Writes objects with SSE-KMS, never twice.
pub struct Store<'a> {
    pub s3: &'a aws_sdk_s3::Client,
    pub kms: Option<&'a str>,
}

impl Store<'_> {
    /// Uploads unless the key exists; true when it uploaded. Keys are
    /// content-addressed, so an existing key already holds these bytes.
    pub async fn put_if_absent(&self, obj: &S3Object, bytes: Vec<u8>, sha256: &str) -> Result<bool, PhaseError> {
        if exists(self.s3, obj).await? {
            return Ok(false);
        }
        let mut put = self
            .s3
            .put_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .body(ByteStream::from(bytes))
            .metadata("porter-sha256", sha256)
            .server_side_encryption(ServerSideEncryption::AwsKms);
        if let Some(key) = self.kms {
            put = put.ssekms_key_id(key);
        }
        put.send().await.map_err(aws::err(format!("upload {}", obj.url())))?;
        Ok(true)
    }
}

pub async fn exists(s3: &aws_sdk_s3::Client, obj: &S3Object) -> Result<bool, PhaseError> {
    match s3.head_object().bucket(&obj.bucket).key(&obj.key).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(false),
        Err(e) => Err(aws::classify(&format!("look for {}", obj.url()), e)),
    }
}

/// Reads a JSON record (the release, the resolved config) from S3.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    s3: &aws_sdk_s3::Client,
    obj: &S3Object,
) -> Result<T, PhaseError> {
    let out = s3
        .get_object()
        .bucket(&obj.bucket)
        .key(&obj.key)
        .send()
        .await
        .map_err(|e| match aws::classify(&format!("read {}", obj.url()), e) {
            PhaseError::Aws(m) if m.contains("NoSuchKey") => {
                PhaseError::Invalid(format!("{m}: the object is missing; run pack for this release again"))
            }
            other => other,
        })?;
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| PhaseError::Retryable(format!("reading {} was cut off: {e}", obj.url())))?
        .into_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| PhaseError::Invalid(format!("{} is not a record porter wrote: {e}", obj.url())))
}

/// pack from its input alone: a folder, or a zip in S3 read with the
/// caller's own credentials (Step Functions). CodePipeline's front door
/// reads its zip with the job's credentials and calls [`pack`] instead.
pub async fn run(aws: &Aws, input: &PackInput) -> Result<Packed, PhaseError> {
    match &input.source {
        Source::Path(path) => pack(aws, input, path).await,
        Source::S3 { bucket, key } => {
            let dir = tempfile::tempdir().map_err(|e| PhaseError::Retryable(format!("no scratch space: {e}")))?;
            fetch_zip(&aws.s3(), bucket, key, dir.path()).await?;
            pack(aws, input, dir.path()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarball_depends_on_content_only() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("b.txt"), "b").unwrap();
        std::fs::write(a.path().join("a.txt"), "a").unwrap();
        let first = tarball(a.path()).unwrap();
        // Touch a file: same content, new mtime.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(a.path().join("a.txt"), "a").unwrap();
        assert_eq!(first, tarball(a.path()).unwrap());
        std::fs::write(a.path().join("a.txt"), "changed").unwrap();
        assert_ne!(first, tarball(a.path()).unwrap());
    }

    #[test]
    fn zip_with_unsafe_paths_is_refused() {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            w.start_file("../evil", zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"x").unwrap();
            w.finish().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let err = unzip(buf.get_ref(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("unsafe path"), "{err}");
    }

    #[test]
    fn a_broken_zip_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = unzip(b"not a zip", dir.path()).unwrap_err();
        assert!(matches!(err, PhaseError::Invalid(_)));
        assert!(err.to_string().contains("not a readable zip"));
    }
}
