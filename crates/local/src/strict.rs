//! Where the local stack answers as strictly as AWS, though moto would
//! let the call through:
//!
//! - S3 answers a request signed for another region than the bucket's
//!   with `301 PermanentRedirect` and `x-amz-bucket-region` (moto serves
//!   every bucket to every region);
//! - CloudFormation refuses a `TemplateBody` over 51,200 bytes, a
//!   `TemplateURL` that is not an S3 URL of the stack's own region, and a
//!   launch template whose UserData passes EC2's 16 KB (moto creates launch
//!   templates inside its own CloudFormation, so the front checks them at
//!   CreateStack).
//!
//! `docs/local-stack.md` lists what the local stack checks, and how
//! strictly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use porter_core::provision::TEMPLATE_BODY_LIMIT;
use porter_core::template::USER_DATA_LIMIT;

/// Each bucket's region, read from moto once.
#[derive(Debug, Clone, Default)]
pub struct BucketRegions {
    known: Arc<Mutex<HashMap<String, String>>>,
}

impl BucketRegions {
    /// The region of `bucket`, asked of moto (`GetBucketLocation`) the
    /// first time; `None` for a bucket moto does not have.
    pub async fn region_of(&self, client: &reqwest::Client, moto: &str, bucket: &str) -> Option<String> {
        if let Some(r) = self.known.lock().expect("bucket regions").get(bucket) {
            return Some(r.clone());
        }
        let resp = client.get(format!("{moto}/{bucket}?location")).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let text = resp.text().await.ok()?;
        let region = location_constraint(&text)?;
        self.known
            .lock()
            .expect("bucket regions")
            .insert(bucket.to_owned(), region.clone());
        Some(region)
    }

    /// Forgets `bucket` (it was created or deleted).
    pub fn forget(&self, bucket: &str) {
        self.known.lock().expect("bucket regions").remove(bucket);
    }
}

/// The region a `GetBucketLocation` answer names: an empty constraint is
/// us-east-1, `EU` is eu-west-1, as S3 documents.
pub fn location_constraint(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let node = doc
        .descendants()
        .find(|n| n.tag_name().name() == "LocationConstraint")?;
    Some(match node.text().unwrap_or("").trim() {
        "" => "us-east-1".to_owned(),
        "EU" => "eu-west-1".to_owned(),
        r => r.to_owned(),
    })
}

/// An S3 call's bucket (path-style, as clients of a custom endpoint
/// address it) and whether the call is on the bucket itself rather than a
/// key in it.
pub fn s3_bucket(uri: &Uri) -> Option<(String, bool)> {
    let path = uri.path().trim_start_matches('/');
    if path.is_empty() {
        return None;
    }
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b, k),
        None => (path, ""),
    };
    Some((bucket.to_owned(), key.is_empty()))
}

/// Calls S3 answers from any region: creating a bucket (its region is the
/// one it is created in) and asking where a bucket is.
pub fn any_region(method: &Method, uri: &Uri, on_bucket: bool) -> bool {
    let query = uri.query().unwrap_or("");
    on_bucket && (*method == Method::PUT && query.is_empty() || query.split('&').any(|q| q == "location"))
}

/// S3's answer to a request signed for another region than the bucket's.
pub fn permanent_redirect(bucket: &str, bucket_region: &str, head: bool) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(bucket_region) {
        headers.insert("x-amz-bucket-region", v);
    }
    headers.insert("content-type", HeaderValue::from_static("application/xml"));
    // A HEAD answer has no body: the SDK reads the status and the header.
    let body = if head {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><Endpoint>{bucket}.s3.{bucket_region}.amazonaws.com</Endpoint><Bucket>{bucket}</Bucket><RequestId>porter-local</RequestId><HostId>porter-local</HostId></Error>"
        )
    };
    (StatusCode::MOVED_PERMANENTLY, headers, body).into_response()
}

/// CloudFormation's answer to a request it refuses.
pub fn validation_error(message: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>{}</Message></Error><RequestId>porter-local</RequestId></ErrorResponse>",
        crate::wire::xml_escape(message)
    );
    (StatusCode::BAD_REQUEST, [("content-type", "text/xml")], body).into_response()
}

/// Where a `TemplateURL` points: (bucket, key, region of its endpoint), for
/// the forms S3 serves as a template to CloudFormation (virtual-hosted or
/// path-style, regional); `None` for anything else, the global endpoint
/// included.
pub fn template_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let path = path.split('?').next().unwrap_or("");
    let host = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    // bucket.s3.REGION or s3.REGION (path-style), never bare s3.
    let (bucket, region) = match host.split_once(".s3.") {
        Some((bucket, region)) => (bucket.to_owned(), region),
        None => {
            let region = host.strip_prefix("s3.")?;
            let (bucket, key) = path.split_once('/')?;
            if region.contains('.') || bucket.is_empty() {
                return None;
            }
            return Some((bucket.to_owned(), key.to_owned(), region.to_owned()));
        }
    };
    if bucket.is_empty() || region.is_empty() || region.contains('.') || path.is_empty() {
        return None;
    }
    Some((bucket, path.to_owned(), region.to_owned()))
}

/// What CloudFormation refuses in a `CreateStack` before it creates
/// anything: an oversize body, a `TemplateURL` outside the stack's region
/// (`bucket_region` says where its bucket really is), a launch template
/// whose UserData EC2 would refuse.
pub fn create_stack_problem(
    region: &str,
    body: Option<&str>,
    url: Option<&str>,
    bucket_region: Option<&str>,
) -> Option<String> {
    if let Some(b) = body {
        if b.len() > TEMPLATE_BODY_LIMIT {
            return Some(format!(
                "1 validation error detected: Value at 'templateBody' failed to satisfy constraint: Member must have length less than or equal to {TEMPLATE_BODY_LIMIT}"
            ));
        }
    }
    if let Some(u) = url {
        match template_url(u) {
            None => {
                return Some(format!(
                    "TemplateURL must be a regional Amazon S3 URL (https://BUCKET.s3.REGION.amazonaws.com/KEY): {u}"
                ))
            }
            Some((bucket, _, url_region)) => {
                if url_region != region {
                    return Some(format!(
                        "TemplateURL must be an S3 URL in the stack's region {region}, not {url_region}: {u}"
                    ));
                }
                match bucket_region {
                    Some(b) if b != region => {
                        return Some(format!(
                            "S3 error: the bucket {bucket} of TemplateURL is in {b}, not the stack's region {region}"
                        ))
                    }
                    None => {
                        return Some(format!(
                            "TemplateURL must reference a valid S3 object to which you have access: {u}"
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
    None
}

/// The UserData of each launch template in a template, as written: a
/// string, or an `Fn::Sub` of one, inside `Fn::Base64`.
pub fn user_data_problem(template: &serde_json::Value, stack_name: &str, region: &str) -> Option<String> {
    let resources = template.get("Resources")?.as_object()?;
    for (id, r) in resources {
        if r.get("Type").and_then(|t| t.as_str()) != Some("AWS::EC2::LaunchTemplate") {
            continue;
        }
        let Some(data) = r.pointer("/Properties/LaunchTemplateData/UserData") else {
            continue;
        };
        let inner = data.get("Fn::Base64").unwrap_or(data);
        let script = match inner {
            serde_json::Value::String(s) => s.as_str(),
            other => match other.get("Fn::Sub") {
                Some(serde_json::Value::String(s)) => s.as_str(),
                Some(serde_json::Value::Array(a)) => a.first().and_then(|s| s.as_str()).unwrap_or(""),
                _ => continue,
            },
        };
        let bytes = porter_core::template::user_data_bytes(script, stack_name, region);
        if bytes > USER_DATA_LIMIT {
            return Some(format!(
                "Resource {id}: UserData is {bytes} bytes; EC2 takes at most {USER_DATA_LIMIT} bytes (16 KB) before base64 encoding"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_buckets_region_as_s3_writes_it() {
        let xmlns = "http://s3.amazonaws.com/doc/2006-03-01/";
        let at = |c: &str| format!("<LocationConstraint xmlns=\"{xmlns}\">{c}</LocationConstraint>");
        assert_eq!(location_constraint(&at("eu-west-2")).as_deref(), Some("eu-west-2"));
        assert_eq!(location_constraint(&at("")).as_deref(), Some("us-east-1"));
        assert_eq!(location_constraint(&at("EU")).as_deref(), Some("eu-west-1"));
        assert_eq!(location_constraint("<Error/>"), None);
    }

    #[test]
    fn a_template_url_must_be_regional_and_in_the_stacks_region() {
        let ok = "https://b.s3.eu-west-2.amazonaws.com/k/t.json?versionId=x";
        assert_eq!(
            template_url(ok),
            Some(("b".into(), "k/t.json".into(), "eu-west-2".into()))
        );
        assert_eq!(
            template_url("https://s3.eu-west-2.amazonaws.com/b/k.json"),
            Some(("b".into(), "k.json".into(), "eu-west-2".into()))
        );
        for refused in [
            "https://b.s3.amazonaws.com/k.json",
            "http://b.s3.eu-west-2.amazonaws.com/k.json",
            "https://b.s3.eu-west-2.example.com/k.json",
            "https://s3.amazonaws.com/b/k.json",
        ] {
            assert!(
                create_stack_problem("eu-west-2", None, Some(refused), Some("eu-west-2")).is_some(),
                "{refused}"
            );
        }
        assert_eq!(
            create_stack_problem("eu-west-2", None, Some(ok), Some("eu-west-2")),
            None
        );
        let elsewhere = create_stack_problem("us-east-1", None, Some(ok), Some("eu-west-2")).unwrap();
        assert!(elsewhere.contains("stack's region us-east-1"), "{elsewhere}");
        let moved = create_stack_problem("eu-west-2", None, Some(ok), Some("us-east-1")).unwrap();
        assert!(moved.contains("is in us-east-1"), "{moved}");
        let big = "x".repeat(TEMPLATE_BODY_LIMIT + 1);
        assert!(create_stack_problem("eu-west-2", Some(&big), None, None)
            .unwrap()
            .contains("51200"));
        assert_eq!(create_stack_problem("eu-west-2", Some("{}"), None, None), None);
    }

    #[test]
    fn user_data_over_16_kb_is_refused() {
        let lt = |script: String| {
            serde_json::json!({"Resources": {"LT": {"Type": "AWS::EC2::LaunchTemplate",
                "Properties": {"LaunchTemplateData": {"UserData": {"Fn::Base64": {"Fn::Sub": script}}}}}}})
        };
        assert_eq!(
            user_data_problem(&lt("echo ${AWS::Region}".into()), "s", "us-east-1"),
            None
        );
        let why = user_data_problem(&lt("x".repeat(USER_DATA_LIMIT + 1)), "s", "us-east-1").unwrap();
        assert!(why.contains("UserData") && why.contains("16384"), "{why}");
    }

    #[test]
    fn the_bucket_is_the_first_segment_of_a_path_style_call() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(s3_bucket(&uri("/b/k/x")), Some(("b".into(), false)));
        assert_eq!(s3_bucket(&uri("/b?location")), Some(("b".into(), true)));
        assert_eq!(s3_bucket(&uri("/")), None);
        assert!(any_region(&Method::PUT, &uri("/b"), true));
        assert!(any_region(&Method::GET, &uri("/b?location"), true));
        assert!(!any_region(&Method::HEAD, &uri("/b"), true));
        assert!(!any_region(&Method::PUT, &uri("/b/k"), false));
    }
}
