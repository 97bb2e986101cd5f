//! S3 records: written once with SSE-KMS and a checksum, read back with a
//! size cap, and the payload checked against the release that names it.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;

use crate::aws;
use crate::phase::PhaseError;
use crate::release::{Release, S3Object};

/// Writes objects with SSE-KMS, never twice.
#[derive(Debug)]
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
        self.put(obj, bytes, sha256, None).await.map(|_| true)
    }

    /// Uploads the payload with its SHA-256 as S3's own checksum (S3 checks
    /// the bytes against it and keeps it), unless the key already holds a
    /// payload with exactly that checksum; true when it uploaded. A payload
    /// without it, or with another, is written again.
    pub async fn put_payload(&self, obj: &S3Object, bytes: Vec<u8>, sha256: &str) -> Result<bool, PhaseError> {
        let checksum = checksum_of(sha256);
        if payload_checksum(self.s3, obj).await?.as_deref() == Some(&checksum) {
            return Ok(false);
        }
        self.put(obj, bytes, sha256, Some(checksum)).await.map(|_| true)
    }

    /// Uploads `bytes` with their SHA-256 as S3's checksum, then reads the
    /// object back and checks S3 holds exactly them: what a later reader
    /// (CloudFormation, for a template) gets is what was written.
    pub async fn put_checked(&self, obj: &S3Object, bytes: Vec<u8>, sha256: &str) -> Result<Stored, PhaseError> {
        let checksum = checksum_of(sha256);
        let version_id = self.put(obj, bytes, sha256, Some(checksum.clone())).await?;
        match payload_checksum(self.s3, obj).await? {
            Some(found) if found == checksum => Ok(Stored { version_id }),
            found => Err(PhaseError::Invalid(format!(
                "{} does not hold what was just written to it (S3's SHA-256 {}, written {checksum}); something else writes there",
                obj.url(),
                found.as_deref().unwrap_or("none")
            ))),
        }
    }

    async fn put(
        &self,
        obj: &S3Object,
        bytes: Vec<u8>,
        sha256: &str,
        checksum: Option<String>,
    ) -> Result<Option<String>, PhaseError> {
        let mut put = self
            .s3
            .put_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .body(ByteStream::from(bytes))
            .metadata("porter-sha256", sha256)
            .server_side_encryption(ServerSideEncryption::AwsKms);
        if let Some(c) = checksum {
            put = put
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
                .checksum_sha256(c);
        }
        if let Some(key) = self.kms {
            put = put.ssekms_key_id(key);
        }
        let out = put.send().await.map_err(aws::err(format!("upload {}", obj.url())))?;
        Ok(out.version_id().map(str::to_owned))
    }
}

/// What S3 kept of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The object's version, when the bucket keeps versions.
    pub version_id: Option<String>,
}

/// S3's form of a SHA-256 checksum (base64 of the digest) for a hex digest.
pub fn checksum_of(sha256_hex: &str) -> String {
    aws_smithy_types::base64::encode(hex::decode(sha256_hex).unwrap_or_default())
}

/// The SHA-256 checksum S3 keeps for `obj`: `None` when the object is
/// missing or was stored without one.
pub async fn payload_checksum(s3: &aws_sdk_s3::Client, obj: &S3Object) -> Result<Option<String>, PhaseError> {
    match s3
        .head_object()
        .bucket(&obj.bucket)
        .key(&obj.key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
    {
        Ok(out) => Ok(out.checksum_sha256().map(str::to_owned)),
        Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
        Err(e) => Err(aws::classify(&format!("look for {}", obj.url()), e)),
    }
}

/// Checks, before anything is built from it, that the payload in S3 is
/// the one the release names (S3's own SHA-256 of the stored bytes).
pub async fn verify_payload(s3: &aws_sdk_s3::Client, release: &Release) -> Result<(), PhaseError> {
    let expected = checksum_of(&release.sha256);
    match payload_checksum(s3, &release.payload).await? {
        Some(found) if found == expected => Ok(()),
        found => Err(PhaseError::Invalid(format!(
            "the payload {} is not the one release {} was packed with: {}; it changed after pack, so pack again",
            release.payload.url(),
            release.version,
            match found {
                Some(f) => format!("S3's SHA-256 of it is {f}, the release says {expected}"),
                None => "it is missing or has no SHA-256 checksum".to_owned(),
            }
        ))),
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
    parse_json(obj, &read_bytes(s3, obj).await?)
}

/// A record's bytes as JSON of `T`.
pub fn parse_json<T: serde::de::DeserializeOwned>(obj: &S3Object, bytes: &[u8]) -> Result<T, PhaseError> {
    serde_json::from_slice(bytes)
        .map_err(|e| PhaseError::Invalid(format!("{} is not a record porter wrote: {e}", obj.url())))
}

/// The largest record read back (a release, a resolved config, a
/// continuation state): far above any porter writes.
const MAX_RECORD: usize = 4 * 1024 * 1024;

/// Reads a record's bytes from S3.
pub async fn read_bytes(s3: &aws_sdk_s3::Client, obj: &S3Object) -> Result<Vec<u8>, PhaseError> {
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
    if out.content_length().is_some_and(|n| n > MAX_RECORD as i64) {
        return Err(PhaseError::Invalid(format!(
            "{} is larger than any record porter writes; it is not read",
            obj.url()
        )));
    }
    Ok(body(out.body, &obj.url()).await?.to_vec())
}

/// An object's body, read to the end; `what` names it if the read is cut
/// off (a transient fault: the phase retries).
pub async fn body(stream: ByteStream, what: &str) -> Result<aws_sdk_s3::primitives::AggregatedBytes, PhaseError> {
    stream
        .collect()
        .await
        .map_err(|e| PhaseError::Retryable(format!("reading {what} was cut off: {e}")))
}
