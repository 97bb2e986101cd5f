//! pack: source → validated config + payload tarball + manifest, uploaded
//! content-addressed with SSE-KMS.
//!
//! The tarball is deterministic (sorted entries, zero times and owners), so
//! the same source always has the same sha256 and the same S3 keys, and a
//! re-run finds every object already there and uploads nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aws::{self, Aws};
use crate::config::{self, Config};
use crate::phase::PhaseError;
use crate::plan;
use crate::release::{Manifest, Provenance, Release, S3Object, Steps};
use crate::store::{exists, read_json, verify_payload, Store};

/// Where the source comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A zip in S3, as CodePipeline hands a source artifact over.
    S3 { bucket: String, key: String },
    /// A folder on this machine (CLI and local stack).
    Path(PathBuf),
    /// A release packed before, read back from the artifact bucket by its
    /// version: what a rollback deploys again.
    Release { service: String, version: String },
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
    /// What `${VAR}` in `.porter/config` expands to. Only these: a function
    /// never expands its own environment (its credentials live there), so
    /// whoever starts a deploy hands the variables in (UserParameters or
    /// the state machine input `variables`; the CLI passes the ones the
    /// config names from its shell).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The SSM parameter naming the machine image to boot (in every
    /// region), resolved into the release. The function's own setting
    /// (`PORTER_IMAGE_PARAMETER`), never the input's.
    #[serde(skip)]
    pub image_parameter: Option<String>,
    /// Existing resources outside a release stack that overlays may name
    /// (a shared security group, an SNS topic, a KMS key): the
    /// installation's list (`PORTER_ALLOWED_REFERENCES`), never the input's.
    #[serde(skip)]
    pub allowed_references: Vec<String>,
    /// This deploy's rollout, over the environment's (`rollout:`).
    #[serde(default)]
    pub rollout: Option<config::RolloutOverride>,
    /// The most the rollout may bake in all, when whoever follows the
    /// deploy cannot wait forever (the `pipeline` function: a CodePipeline
    /// action runs at most 24 hours). A longer rollout is refused here,
    /// before anything changes, rather than stopped half way.
    #[serde(default)]
    pub longest_bake_seconds: Option<u32>,
}

/// The rollout `input` asks of `env`, checked.
fn rollout_plan(env: &config::Environment, input: &PackInput) -> Result<config::Rollout, PhaseError> {
    let plan = env.rollout_plan(input.rollout.as_ref())?;
    if let Some(limit) = input.longest_bake_seconds {
        let baking = plan.baking_seconds();
        if baking > u64::from(limit) {
            return Err(PhaseError::Invalid(format!(
                "the rollout bakes {baking} s in all ({} wave(s) of {} s{}), more than the {limit} s this deploy may take to bake (a CodePipeline action runs at most 24 hours): bake less, use fewer waves, or deploy with `porter deploy`",
                plan.waves.len(),
                plan.bake_seconds,
                if plan.canary { ", twice with canaries" } else { "" }
            )));
        }
    }
    Ok(plan)
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
    /// When another deploy of the service and environment holds the lease:
    /// wait for it (true) or fail at once (false).
    #[serde(default)]
    pub wait_for_lease: bool,
}

/// What pack did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Packed {
    pub release: Release,
    /// The keys written by this run; empty when everything was there.
    pub uploaded: Vec<String>,
}

/// A source folder made ready: its tarball and its config.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    pub tarball: Vec<u8>,
    pub sha256: String,
}

/// The most entries a source zip or a payload may hold.
pub const MAX_ENTRIES: usize = 20_000;
/// The most bytes a source zip may unpack to, and a payload may hold: well
/// inside a Lambda's default 512 MB of /tmp, and far beyond a service's code.
pub const MAX_UNPACKED: u64 = 256 * 1024 * 1024;

/// Reads a zip (as CodePipeline stores source artifacts) into a new folder.
/// The zip is repository content: entries are capped in number and in
/// unpacked size (counted as read, not as the headers claim), and a path
/// or link that would land outside `into` is refused.
pub fn unzip(bytes: &[u8], into: &Path) -> Result<(), PhaseError> {
    unzip_within(bytes, into, MAX_ENTRIES, MAX_UNPACKED)
}

fn unzip_within(bytes: &[u8], into: &Path, max_entries: usize, max_unpacked: u64) -> Result<(), PhaseError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| PhaseError::Invalid(format!("the source artifact is not a readable zip: {e}")))?;
    if archive.len() > max_entries {
        return Err(PhaseError::Invalid(format!(
            "the source zip holds {} entries; at most {max_entries} are unpacked. Leave build output and dependencies out of the source",
            archive.len()
        )));
    }
    let mut unpacked: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| PhaseError::Invalid(format!("the source zip is damaged at entry {i}: {e}")))?;
        let Some(rel) = entry.enclosed_name() else {
            return Err(PhaseError::Invalid(format!(
                "the source zip holds an unsafe path `{}`; rebuild the artifact",
                entry.name()
            )));
        };
        // A symbolic link (S_IFLNK) could point anywhere; a source has no need of one.
        if entry.unix_mode().is_some_and(|m| m & 0o170000 == 0o120000) {
            return Err(PhaseError::Invalid(format!(
                "the source zip holds a symbolic link `{}`; links are not unpacked, put the file itself in the repository",
                entry.name()
            )));
        }
        let dest = into.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&dest).map_err(io("create", &dest))?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let name = entry.name().to_owned();
        let mode = entry.unix_mode();
        let mut data = Vec::new();
        entry
            .take(max_unpacked - unpacked + 1)
            .read_to_end(&mut data)
            .map_err(|e| PhaseError::Invalid(format!("the source zip entry `{name}` cannot be read: {e}")))?;
        unpacked += data.len() as u64;
        if unpacked > max_unpacked {
            return Err(PhaseError::Invalid(format!(
                "the source zip unpacks to more than {} MiB (at `{name}`); leave build output and dependencies out of the source",
                max_unpacked / (1024 * 1024)
            )));
        }
        std::fs::write(&dest, &data).map_err(io("write", &dest))?;
        #[cfg(unix)]
        if let Some(mode) = mode {
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
    let config = loaded.deployable().map_err(PhaseError::from)?;
    let env = config.environment(environment).map_err(PhaseError::from)?;
    if let Some(image) = image {
        crate::image::ImageRef::parse(image).map_err(|e| PhaseError::Invalid(format!("image: {e}")))?;
    }
    if let Some(w) = plan::active_blackout(env, chrono::Utc::now()) {
        return Err(plan::blackout(environment, w));
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
    if files.len() > MAX_ENTRIES {
        return Err(PhaseError::Invalid(format!(
            "{} holds {} files; a payload holds at most {MAX_ENTRIES}. Leave build output and dependencies out of the source",
            root.display(),
            files.len()
        )));
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut total: u64 = 0;
    for path in files {
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let data = std::fs::read(&path).map_err(io("read", &path))?;
        total += data.len() as u64;
        if total > MAX_UNPACKED {
            return Err(PhaseError::Invalid(format!(
                "the payload would be larger than {} MiB (at {}); leave build output and dependencies out of the source",
                MAX_UNPACKED / (1024 * 1024),
                rel.display()
            )));
        }
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
        &|name: &str| input.variables.get(name).cloned(),
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
    let bytes = crate::store::body(obj.body, &format!("s3://{bucket}/{key}"))
        .await?
        .into_bytes();
    unzip(&bytes, into)
}

/// Refuses an overlay that names an existing resource outside its stack
/// the installation has not allowed.
fn overlay_references(env: &config::Environment, allowed: &[String]) -> Result<(), PhaseError> {
    let mut refused = Vec::new();
    for region in &env.regions {
        let Some(def) = &region.stack_definition else { continue };
        for e in crate::overlay::check_external(&def.template, allowed) {
            refused.push(format!("`{}` at {}: `{}`", def.path, e.path, e.value));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    refused.sort();
    refused.dedup();
    Err(PhaseError::Invalid(format!(
        "the overlay names resources outside its stack that this installation does not allow: {}; an administrator lists the ones releases may use in the infra's AllowedExternalReferences",
        refused.join("; ")
    )))
}

async fn upload(aws: &Aws, input: &PackInput, prepared: Prepared) -> Result<Packed, PhaseError> {
    let Prepared {
        config,
        tarball,
        sha256,
    } = prepared;
    let env = config.environment(&input.environment).map_err(PhaseError::from)?;
    let first = env
        .regions
        .first()
        .ok_or_else(|| PhaseError::Invalid("the environment has no regions".into()))?;
    overlay_references(env, &input.allowed_references)?;
    // Refused here, before anything is written, rather than at provision.
    let regions: Vec<_> = env.regions.iter().collect();
    crate::pins::check(aws, &config.service_name, &env.name, &regions).await?;
    let (s3, bucket, kms) = match &input.artifact_bucket {
        Some(b) => (aws.s3(), b.clone(), input.sse_kms_key_id.clone()),
        None => {
            let clients = aws
                .region(
                    &first.name,
                    &first.role_arn,
                    &format!("porter-pack-{}", config.service_name),
                    &crate::pins::session_tags(&config.service_name, &env.name),
                )
                .await?;
            (clients.s3, first.s3_bucket.clone(), first.sse_kms_key_id.clone())
        }
    };
    let config_json = serde_json::to_vec_pretty(&config).expect("the config serializes");
    let config_sha256 = hex::encode(Sha256::digest(&config_json));
    let images = match &input.image_parameter {
        Some(name) => machine_images(aws, name, &regions).await?,
        None => BTreeMap::new(),
    };
    let version = crate::release::version_of(&sha256, &config_sha256, input.image.as_deref(), &images);
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
    // The config and the record depend on the config too: the same payload
    // packed with other variables is another release.
    let with_config = |suffix: &str| object(&format!(".{}{suffix}", &config_sha256[..16]));
    let release = Release {
        service: config.service_name.clone(),
        environment: env.name.clone(),
        version: version.clone(),
        revision: revision.clone(),
        sha256: sha256.clone(),
        config_sha256: config_sha256.clone(),
        image: input.image.clone(),
        images,
        rollout: rollout_plan(env, input)?,
        steps: Steps::of(&config),
        payload: object(".tar"),
        manifest: object(".manifest.json"),
        config: with_config(".config.json"),
        record: S3Object {
            bucket: bucket.clone(),
            key: record_key(&config.service_name, &env.name, &version),
        },
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
    if store.put_payload(&release.payload, tarball, &sha256).await? {
        uploaded.push(release.payload.key.clone());
    }
    let json = |v: &dyn erased::Json| v.to_bytes();
    for (obj, bytes) in [
        (&release.manifest, json(&manifest)),
        (&release.config, config_json),
        (&release.record, json(&release)),
    ] {
        if store.put_if_absent(obj, bytes, &sha256).await? {
            uploaded.push(obj.key.clone());
        }
    }
    tracing::info!(service = %release.service, version = %release.version, uploaded = uploaded.len(), "packed");
    Ok(Packed { release, uploaded })
}

/// The machine image each region boots today, from the image parameter.
async fn machine_images(
    aws: &Aws,
    parameter: &str,
    regions: &[&config::Region],
) -> Result<BTreeMap<String, String>, PhaseError> {
    let mut images = BTreeMap::new();
    for r in regions {
        let out = aws
            .ssm_in(&r.name)
            .get_parameter()
            .name(parameter)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_parameter_not_found() => PhaseError::Invalid(format!(
                    "the machine image parameter {parameter} does not exist in {}; set the stack's ImageParameter to one that names an image there",
                    r.name
                )),
                _ => aws::classify(&format!("read the machine image parameter {parameter} in {}", r.name), e),
            })?;
        let value = out.parameter().and_then(|p| p.value()).unwrap_or_default();
        let ok = value
            .strip_prefix("ami-")
            .is_some_and(|h| (8..=17).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(PhaseError::Invalid(format!(
                "the machine image parameter {parameter} in {} holds `{}`, not an image id (ami-...)",
                r.name,
                aws::clip(value, 40)
            )));
        }
        images.insert(r.name.clone(), value.to_owned());
    }
    Ok(images)
}

mod erased {
    /// Lets one closure serialize the differently typed records.
    pub(super) trait Json {
        fn to_bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_bytes(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).expect("records serialize")
        }
    }
}

/// Where a release's record lives: by version, so that a rollback names
/// only the version.
pub fn record_key(service: &str, environment: &str, version: &str) -> String {
    format!("porter-deployment/{service}/{environment}/releases/{version}.json")
}

/// A release packed before, made ready to deploy again: its record read
/// back from the artifact bucket, and its config and payload checked
/// against it. Nothing is written.
pub async fn recall(aws: &Aws, input: &PackInput, service: &str, version: &str) -> Result<Packed, PhaseError> {
    let well_formed = |s: &str, ok: fn(char) -> bool| !s.is_empty() && s.len() <= 64 && s.chars().all(ok);
    if !crate::release::is_version(version) {
        return Err(PhaseError::Invalid(format!(
            "`source.release.version` must be a release version ({} hex digits), not `{}`",
            crate::release::VERSION_LEN,
            version.chars().take(80).collect::<String>()
        )));
    }
    for (field, value) in [("source.release.service", service), ("environment", &input.environment)] {
        if !well_formed(value, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(PhaseError::Invalid(format!(
                "`{field}` must be a name (letters, digits, `-`, `_`), not `{}`",
                value.chars().take(80).collect::<String>()
            )));
        }
    }
    if let crate::pins::Pinning::Pinned {
        service: Some(pinned), ..
    } = aws.pinning()
    {
        if pinned != service {
            return Err(PhaseError::AccessDenied(format!(
                "this deployment deploys service {pinned}, not {service}"
            )));
        }
    }
    let bucket = input.artifact_bucket.clone().ok_or_else(|| {
        PhaseError::Invalid("a release is read back from the artifact bucket: name `artifact_bucket`".into())
    })?;
    let obj = S3Object {
        bucket,
        key: record_key(service, &input.environment, version),
    };
    let s3 = aws.s3();
    if !exists(&s3, &obj).await? {
        return Err(PhaseError::Invalid(format!(
            "there is no release {version} of {service} in {}: {} is missing; `porter history` lists the releases deployed there",
            input.environment,
            obj.url()
        )));
    }
    let release: Release = read_json(&s3, &obj).await?;
    if release.service != service || release.environment != input.environment || release.version != version {
        return Err(PhaseError::Invalid(format!(
            "{} names release {} of {} in {}, not the one it is filed under; pack it again",
            obj.url(),
            release.version,
            release.service,
            release.environment
        )));
    }
    // The config it was packed with (checked against its sha256) says
    // which regions it deploys to; the pins must still allow each.
    let target = crate::target::Target {
        release: crate::release::ReleaseRef::Inline(Box::new(release.clone())),
        region: None,
        regions: Vec::new(),
    };
    let dep = crate::target::Deployment::load(aws, &target).await?;
    let regions = dep.regions(&target)?;
    crate::pins::check(aws, service, &input.environment, &regions).await?;
    verify_payload(&s3, &release).await?;
    // This deploy's rollout, not the one the release first had.
    let mut release = release;
    release.rollout = rollout_plan(dep.environment()?, input)?;
    tracing::info!(service, version, "recalled a packed release");
    Ok(Packed {
        release,
        uploaded: Vec::new(),
    })
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
        Source::Release { service, version } => recall(aws, input, service, version).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_that_is_not_a_plain_reference_is_refused_before_anything_is_packed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".porter")).unwrap();
        std::fs::write(
            dir.path().join(".porter/config"),
            "service_name: web\nenvironments:\n- name: prod\n  role_arn: arn:aws:iam::123456789012:role/d\n  regions:\n  - name: us-west-2\n    s3_bucket: web-bucket\n    azs: [{name: us-west-2a}]\n    containers: [{name: api, inet_port: 3000}]\n",
        )
        .unwrap();
        let e = prepare(dir.path(), "prod", Some("r.example.com/web:1;$(reboot)"), &|_| None).expect_err("refused");
        assert_eq!(e.error_type(), "Invalid");
        assert!(
            e.to_string().contains("image:") && e.to_string().contains("not a container image reference"),
            "{e}"
        );
        assert!(prepare(dir.path(), "prod", Some("r.example.com/web:1"), &|_| None).is_ok());
    }

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

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            for (name, data) in entries {
                w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
                w.write_all(data).unwrap();
            }
            w.finish().unwrap();
        }
        buf.into_inner()
    }

    #[test]
    fn zip_caps_count_entries_and_bytes_as_read() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 4096];
        let many = zip_of(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        let err = unzip_within(&many, dir.path(), 2, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("holds 3 entries; at most 2"), "{err}");
        // Deflate turns 8 KiB of zeros into a few bytes: the cap is on what
        // comes out, counted while reading.
        let big = zip_of(&[("a", &zeros), ("b", &zeros)]);
        assert!(big.len() < 1024);
        let err = unzip_within(&big, dir.path(), 10, 6000).unwrap_err();
        assert!(matches!(err, PhaseError::Invalid(_)));
        assert!(err.to_string().contains("at `b`"), "{err}");
        unzip_within(&big, dir.path(), 10, 8192).unwrap();
    }

    #[test]
    fn zip_with_a_symbolic_link_is_refused() {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            w.add_symlink("config", "/etc/passwd", zip::write::SimpleFileOptions::default())
                .unwrap();
            w.finish().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let err = unzip(buf.get_ref(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("symbolic link `config`"), "{err}");
        assert!(!dir.path().join("config").exists());
    }

    #[test]
    fn a_broken_zip_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = unzip(b"not a zip", dir.path()).unwrap_err();
        assert!(matches!(err, PhaseError::Invalid(_)));
        assert!(err.to_string().contains("not a readable zip"));
    }
}
