//! One JSON POST to a webhook (Slack's incoming webhooks), for `notify`.
//!
//! The URL is a credential: no error here repeats it. It must be `https`
//! to a host the platform allows; plain `http` only to a loopback host the
//! platform allows (the local stack's receiver). Slack is not AWS, so this
//! client trusts the system's roots, read when the first webhook is
//! posted, not at every cold start.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// Why a post did not go through, in words that hold no URL (nor its path,
/// which is the credential).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the secret does not hold a URL")]
    NotUrl,
    #[error("its host {host} is not one webhooks may go to (PORTER_WEBHOOK_HOSTS: {})", allowed.join(", "))]
    HostNotAllowed { host: String, allowed: Vec<String> },
    #[error("the URL must be https")]
    NotHttps,
    /// The request could not be made or sent (no roots, no connection, no
    /// answer in time).
    #[error("{0}")]
    Unsent(String),
    #[error("{host} answered HTTP {status}: {text}")]
    Refused { host: String, status: u16, text: String },
}

pub async fn post(url: &str, allowed: &[String], body: &str, timeout: Duration) -> Result<(), WebhookError> {
    let uri: hyper::Uri = url.parse().map_err(|_| WebhookError::NotUrl)?;
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    let authority = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    if !allowed.iter().any(|a| *a == host || *a == authority) {
        return Err(WebhookError::HostNotAllowed {
            host,
            allowed: allowed.to_vec(),
        });
    }
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if loopback => {}
        _ => return Err(WebhookError::NotHttps),
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| WebhookError::Unsent(format!("no trusted roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let request = hyper::Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| WebhookError::Unsent(format!("cannot make the request: {e}")))?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| WebhookError::Unsent(format!("no answer within {}s", timeout.as_secs())))?
        .map_err(|e| WebhookError::Unsent(format!("cannot reach {host}: {}", porter_core::aws::error_chain(&e))))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Err(WebhookError::Refused {
        host,
        status: status.as_u16(),
        text: porter_core::aws::clip(text.trim(), 200).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_an_allowed_host_over_https_or_loopback_http_is_posted_to_and_no_error_repeats_the_url() {
        let allowed = vec!["hooks.slack.com".to_owned(), "127.0.0.1:9".to_owned()];
        let t = Duration::from_secs(1);
        let secret_url = "https://evil.example.com/services/T0/B0/SECRETTOKEN";
        let why = post(secret_url, &allowed, "{}", t).await.unwrap_err();
        assert!(matches!(&why, WebhookError::HostNotAllowed { host, .. } if host == "evil.example.com"));
        let why = why.to_string();
        assert!(
            why.contains("not one webhooks may go to") && !why.contains("SECRETTOKEN"),
            "{why}"
        );
        let why = post("http://hooks.slack.com/services/SECRETTOKEN", &allowed, "{}", t)
            .await
            .unwrap_err();
        assert_eq!(why, WebhookError::NotHttps);
        let why = why.to_string();
        assert!(why.contains("must be https") && !why.contains("SECRETTOKEN"), "{why}");
        let why = post("not a url SECRETTOKEN", &allowed, "{}", t).await.unwrap_err();
        assert_eq!(why, WebhookError::NotUrl);
        assert!(!why.to_string().contains("SECRETTOKEN"), "{why}");
        // Loopback over http is allowed when listed: port 9 (discard)
        // refuses, and the error says so without the path.
        let why = post("http://127.0.0.1:9/SECRETTOKEN", &allowed, "{}", t)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("cannot reach 127.0.0.1") && !why.contains("SECRETTOKEN"),
            "{why}"
        );
    }
}
