//! Continuation tokens that carry their own proof.
//!
//! CodePipeline hands a continuation token back on the next call under a
//! new job id, so the token is all there is to go on, and it is untrusted
//! input like the rest of the event. Every token this product issues is
//! sealed: `porter1.<body>.<mac>`, where the body names what it was issued
//! for (the function, and the action's environment and release) and the
//! MAC is HMAC-SHA256 over the body under a key only the functions read.
//! A token that is not sealed, sealed under another key, altered, or
//! issued for another function, environment or release is refused.
//!
//! The key: 32 random bytes, made by the first function that needs one and
//! kept in the artifact bucket at [`KEY_KEY`] (SSE-KMS, readable by the
//! function roles only). A conditional create (`If-None-Match: *`) makes
//! two first calls agree on one key. Deleting the object rotates it;
//! tokens in flight then fail their jobs, saying so.

use std::io::Read;

use aws_sdk_s3::primitives::ByteStream;
use porter_core::aws;
use porter_core::phase::PhaseError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Context;

/// Where the functions keep the token key in the artifact bucket.
pub const KEY_KEY: &str = "porter-continuations/token-key";
const PREFIX: &str = "porter1.";

/// What a token is good for: the action that may hand it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The function that issued it (`provision`, `pipeline`, ...).
    pub function: String,
    /// The action's `environment`.
    pub environment: String,
    /// The action's `release`, for the phases that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The job's pipeline, execution, stage and action, as CodePipeline
    /// said them: a token is good only for the action that issued it, in
    /// the same pipeline execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(flatten)]
    binding: Binding,
    /// The state, or a pointer to it, or an execution ARN.
    value: String,
}

fn b64(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seals `value` for `binding` under `key`.
pub fn seal(key: &[u8], binding: &Binding, value: &str) -> String {
    let body = serde_json::to_vec(&Body {
        binding: binding.clone(),
        value: value.to_owned(),
    })
    .expect("a token body serializes");
    let body = b64(&body);
    let mac = b64(&hmac(key, body.as_bytes()));
    format!("{PREFIX}{body}.{mac}")
}

fn refused(why: &str) -> PhaseError {
    PhaseError::Invalid(format!(
        "the continuation token was not issued here for this action ({why}); it is not used. Retry the pipeline action to start over"
    ))
}

/// The value sealed in `token`, if it was sealed under `key` for exactly
/// `expected`.
pub fn open(key: &[u8], expected: &Binding, token: &str) -> Result<String, PhaseError> {
    let rest = token
        .strip_prefix(PREFIX)
        .ok_or_else(|| refused("it is not a sealed porter token"))?;
    let (body, mac) = rest.split_once('.').ok_or_else(|| refused("it has no seal"))?;
    let mac = aws_smithy_types::base64::decode(mac).map_err(|_| refused("its seal is not readable"))?;
    if !same(&hmac(key, body.as_bytes()), &mac) {
        return Err(refused("its seal does not match: altered, or sealed under another key"));
    }
    let body = aws_smithy_types::base64::decode(body).map_err(|_| refused("its body is not readable"))?;
    let body: Body = serde_json::from_slice(&body).map_err(|_| refused("its body is not readable"))?;
    if body.binding != *expected {
        return Err(refused(&format!(
            "it was issued to the {} function for environment `{}`{}",
            body.binding.function,
            body.binding.environment,
            body.binding
                .release
                .as_deref()
                .map(|r| format!(" and release {r}"))
                .unwrap_or_default()
                + &body
                    .binding
                    .origin
                    .as_deref()
                    .map(|o| format!(", in pipeline execution and action {o}"))
                    .unwrap_or_default()
        )));
    }
    Ok(body.value)
}

/// The token key, read from (or, the first time, made in) the artifact
/// bucket, then kept for the life of the process.
pub async fn key(ctx: &Context) -> Result<Vec<u8>, PhaseError> {
    if let Some(k) = ctx.token_key.get() {
        return Ok(k.clone());
    }
    let bucket = ctx.artifact_bucket.as_deref().ok_or_else(|| {
        PhaseError::Invalid(
            "ARTIFACT_BUCKET is not set, so continuation tokens cannot be sealed; deploy the function with infra/template.yaml"
                .into(),
        )
    })?;
    let s3 = ctx.aws.s3();
    let key = match read_key(&s3, bucket).await? {
        Some(k) => k,
        None => {
            let fresh = random_key()?;
            let put = s3
                .put_object()
                .bucket(bucket)
                .key(KEY_KEY)
                .if_none_match("*")
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .body(ByteStream::from(hex::encode(&fresh).into_bytes()))
                .send()
                .await;
            match put {
                Ok(_) => fresh,
                // Another first call won: use its key.
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => read_key(&s3, bucket)
                    .await?
                    .ok_or_else(|| PhaseError::Retryable("the token key vanished while being made".into()))?,
                Err(e) => return Err(aws::classify(&format!("make the token key s3://{bucket}/{KEY_KEY}"), e)),
            }
        }
    };
    let _ = ctx.token_key.set(key.clone());
    Ok(key)
}

async fn read_key(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Option<Vec<u8>>, PhaseError> {
    match s3.get_object().bucket(bucket).key(KEY_KEY).send().await {
        Ok(out) => {
            let bytes = porter_core::store::body(out.body, "the token key").await?.into_bytes();
            let key = hex::decode(bytes.as_ref())
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| {
                    PhaseError::Invalid(format!(
                        "s3://{bucket}/{KEY_KEY} is not a token key; delete it and a new one is made"
                    ))
                })?;
            Ok(Some(key))
        }
        Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
        Err(e) => Err(aws::classify(&format!("read the token key s3://{bucket}/{KEY_KEY}"), e)),
    }
}

fn random_key() -> Result<Vec<u8>, PhaseError> {
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| PhaseError::Retryable(format!("no randomness for a token key: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(function: &str, environment: &str) -> Binding {
        Binding {
            function: function.into(),
            environment: environment.into(),
            release: Some("s3://b/r.json".into()),
            origin: None,
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_sealed_token_opens_only_for_its_action_and_key() {
        let key = [7u8; 32];
        let b = binding("provision", "staging");
        let token = seal(&key, &b, r#"{"us-west-2": {"checks": 1}}"#);
        assert_eq!(open(&key, &b, &token).unwrap(), r#"{"us-west-2": {"checks": 1}}"#);

        let other_key = [8u8; 32];
        let cases = [
            (open(&other_key, &b, &token), "does not match"),
            (
                open(&key, &binding("promote", "staging"), &token),
                "issued to the provision function",
            ),
            (
                open(&key, &binding("provision", "production"), &token),
                "for environment `staging`",
            ),
            (
                open(&key, &b, r#"{"us-west-2": {"checks": 1}}"#),
                "not a sealed porter token",
            ),
            // A token of an earlier pipeline execution of the same
            // environment, handed to a job of another.
            (
                open(
                    &key,
                    &Binding {
                        origin: Some("p/exec-2/Deploy/Deploy".into()),
                        ..b.clone()
                    },
                    &seal(
                        &key,
                        &Binding {
                            origin: Some("p/exec-1/Deploy/Deploy".into()),
                            ..b.clone()
                        },
                        "x",
                    ),
                ),
                "in pipeline execution and action p/exec-1",
            ),
            (
                open(&key, &b, "arn:aws:states:us-east-1:1:execution:m:x"),
                "not a sealed porter token",
            ),
        ];
        for (result, needle) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.error_type(), "Invalid");
            assert!(err.to_string().contains("not issued here"), "{err}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        // One character changed anywhere in the body or the seal.
        for at in [PREFIX.len() + 3, token.len() - 3] {
            let mut altered = token.clone().into_bytes();
            altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(altered).unwrap();
            assert!(open(&key, &b, &altered).is_err(), "altered at {at}");
        }
    }
}
