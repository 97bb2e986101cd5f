//! The example service as an instance would run it: its `start`, and the
//! health check a classic ELB makes (only a 200 counts, redirects do not).

use std::time::Duration;

/// The example answers its health check with a 200 and serves its page.
#[tokio::test]
async fn example_answers_health_check_and_serves_page() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(root.join("start"))
        .env("PORT", port.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("the example's start runs");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let mut health = None;
    for _ in 0..100 {
        if let Ok(r) = http.get(url("/health")).send().await {
            health = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = health.expect("the example listens");
    assert_eq!(health.status().as_u16(), 200, "a redirect is a failed ELB check");
    assert_eq!(health.text().await.unwrap(), "ok\n");
    let head = http.head(url("/health")).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let page = http.get(url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("release 1"));
    child.kill().await.unwrap();
}
