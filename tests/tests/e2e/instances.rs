//! Instances that run: releases boot their UserData in namespaces, load
//! balancers check them and carry traffic, stacks wait for their signals.
//! Each test needs root on Linux; elsewhere it says why it is skipped.

use std::time::Duration;

use porter_local::deploy::{self, Options};
use porter_local::instances::Mode;
use porter_local::load;
use porter_local::stack::LocalStack;

use crate::statemachine::example;

/// A local stack whose instances run, or `None` (with the reason printed)
/// where namespaces cannot be made.
async fn running_stack() -> Option<LocalStack> {
    let local = LocalStack::start_running(0, 0).await.unwrap();
    if let Mode::Bookkeeping(why) = local.fleet.mode() {
        eprintln!("SKIPPED: instances cannot run here: {why}");
        local.stop().await;
        return None;
    }
    Some(local)
}

async fn deploy(local: &LocalStack, path: &std::path::Path) -> (deploy::Outcome, String) {
    let opts = Options {
        path: path.to_path_buf(),
        environment: "staging".into(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let outcome = deploy::run(&local.moto.endpoint(), &opts, &mut out).await.unwrap();
    (outcome, String::from_utf8(out).unwrap())
}

/// Each region's page, fetched through its load balancer.
async fn pages(local: &LocalStack) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for lb in local.balancers.list() {
        let page = reqwest::get(format!("{}/", lb.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        out.push((lb.region, load::release_of(&page)));
    }
    assert_eq!(out.len(), 2, "one load balancer per region");
    out
}

/// Load through every load balancer while `during` runs.
async fn under_load<F: std::future::Future>(local: &LocalStack, during: F) -> (F::Output, Vec<load::Tally>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runs: Vec<_> = local
        .balancers
        .list()
        .into_iter()
        .map(|lb| {
            let stopped = stopped.clone();
            tokio::spawn(async move { load::drive(&lb.url, 20, Duration::from_secs(300), stopped).await })
        })
        .collect();
    let out = during.await;
    stop.send(true).unwrap();
    let mut tallies = Vec::new();
    for r in runs {
        tallies.push(r.await.unwrap());
    }
    (out, tallies)
}

fn namespaces_left(host_port: u16) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("porter-{host_port}-")))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_cutover_under_load_fails_no_request_and_a_release_that_cannot_start_or_is_unhealthy_never_serves() {
    let Some(local) = running_stack().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "real");

    let (first, log) = deploy(&local, &svc).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);
    for (region, page) in pages(&local).await {
        assert_eq!(page, "release 1", "{region}");
    }

    let html = std::fs::read_to_string(svc.join("index.html")).unwrap();
    std::fs::write(svc.join("index.html"), html.replace("release 1", "release 2")).unwrap();
    let ((second, log), tallies) = under_load(&local, deploy(&local, &svc)).await;
    assert!(second.succeeded, "{:?}\n{log}", second.error);
    for t in &tallies {
        assert!(t.requests > 20, "{t:?}");
        assert_eq!(t.failed, 0, "no request fails during the cutover: {t:?}");
        assert!(
            t.pages.contains_key("release 1") && t.pages.contains_key("release 2"),
            "{t:?}"
        );
    }
    for (region, page) in pages(&local).await {
        assert_eq!(page, "release 2", "{region}");
    }

    // The start script exits: the instance signals why, the stack fails
    // with it, and release 2 keeps every request.
    std::fs::write(svc.join("index.html"), html.replace("release 1", "release 3")).unwrap();
    std::fs::write(
        svc.join("start"),
        "#!/bin/sh\necho 'real: no database configured' >&2\nexit 3\n",
    )
    .unwrap();
    let ((third, log), tallies) = under_load(&local, deploy(&local, &svc)).await;
    assert!(!third.succeeded, "{log}");
    let cause = third
        .error
        .clone()
        .map(|(e, c)| format!("{e}: {c}"))
        .unwrap_or_default();
    assert!(
        cause.contains("exited before it was healthy") && cause.contains("real: no database configured"),
        "the instance's own reason: {cause}"
    );
    for t in &tallies {
        assert_eq!(t.failed, 0, "{t:?}");
        assert_eq!(t.pages.keys().collect::<Vec<_>>(), vec!["release 2"], "{t:?}");
    }
    for (region, page) in pages(&local).await {
        assert_eq!(page, "release 2", "{region}");
    }

    // It starts, but its health check answers 500: it fails saying so,
    // and never gets a request.
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service/start"),
        svc.join("start"),
    )
    .unwrap();
    let serve = std::fs::read_to_string(svc.join("serve.py")).unwrap();
    std::fs::write(
        svc.join("serve.py"),
        serve.replace("send_response(200)", "send_response(500)"),
    )
    .unwrap();
    std::fs::write(svc.join("index.html"), html.replace("release 1", "release 4")).unwrap();
    let ((fourth, log), tallies) = under_load(&local, deploy(&local, &svc)).await;
    assert!(!fourth.succeeded, "{log}");
    let cause = fourth
        .error
        .clone()
        .map(|(e, c)| format!("{e}: {c}"))
        .unwrap_or_default();
    assert!(cause.contains("/health answered HTTP 500 10 times in a row"), "{cause}");
    for t in &tallies {
        assert_eq!(t.failed, 0, "{t:?}");
        assert_eq!(t.pages.keys().collect::<Vec<_>>(), vec!["release 2"], "{t:?}");
    }

    let port = local.host_port;
    local.stop().await;
    assert_eq!(
        namespaces_left(port),
        Vec::<String>::new(),
        "nothing of an instance is left"
    );
}

#[tokio::test]
async fn a_new_instance_killed_before_it_is_healthy_fails_the_deploy_and_the_old_release_serves_on() {
    let Some(local) = running_stack().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let svc = example(dir.path(), "kill");
    let (first, log) = deploy(&local, &svc).await;
    assert!(first.succeeded, "{:?}\n{log}", first.error);
    let serving: Vec<String> = first.regions.values().flat_map(|r| r.in_service.clone()).collect();

    // The service is held back a few seconds, so it can be killed while its
    // instance waits for it to become healthy.
    let html = std::fs::read_to_string(svc.join("index.html")).unwrap();
    std::fs::write(svc.join("index.html"), html.replace("release 1", "release 2")).unwrap();
    std::fs::write(
        svc.join("start"),
        "#!/bin/sh\ncd \"$(dirname \"$0\")\"\nsleep 4\nexec python3 serve.py\n",
    )
    .unwrap();
    let port = local.host_port;
    let killer = tokio::spawn(async move {
        for _ in 0..600 {
            for ns in namespaces_left(port) {
                let instance = ns.trim_start_matches(&format!("porter-{port}-"));
                if !instance.starts_with("i-") || serving.iter().any(|s| s == instance) {
                    continue;
                }
                let pids = std::process::Command::new("ip")
                    .args(["netns", "pids", &ns])
                    .output()
                    .unwrap();
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    // The start script itself: the process the boot watches.
                    if cmd.contains("./start") {
                        std::process::Command::new("kill")
                            .args(["-KILL", pid])
                            .status()
                            .unwrap();
                        return instance.to_string();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no new instance's service was seen starting");
    });
    let ((second, log), tallies) = under_load(&local, deploy(&local, &svc)).await;
    let killed = killer.await.unwrap();
    assert!(!second.succeeded, "{log}");
    let cause = second
        .error
        .clone()
        .map(|(e, c)| format!("{e}: {c}"))
        .unwrap_or_default();
    assert!(
        cause.contains(&killed) && cause.contains("exited before it was healthy"),
        "the killed instance {killed} is named: {cause}"
    );
    for t in &tallies {
        assert_eq!(t.failed, 0, "{t:?}");
        assert_eq!(t.pages.keys().collect::<Vec<_>>(), vec!["release 1"], "{t:?}");
    }
    local.stop().await;
    assert_eq!(namespaces_left(port), Vec::<String>::new());
}
