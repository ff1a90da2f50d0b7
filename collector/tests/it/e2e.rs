//! End to end: a real collector on loopback, a real agent, and the metrics read back
//! through the HTTP API and the `holmes` CLI — on SQLite and on ClickHouse.

use std::time::Duration;

use crate::support::{eventually, holmes_cli, Backend};
use holmes_agent::Holmes;
use holmes_api::MetricsJson;
use holmes_cli::api_client::ApiClient;

async fn metrics_arrive_and_come_back(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = crate::support::start(backend, dir.path()).await else {
        return;
    };
    let api_url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&api_url).unwrap();
    let agent = Holmes::builder()
        .service("checkout")
        .instance("checkout-e2e")
        .label("region", "test")
        .collector(format!("http://{}", server.grpc_addr()))
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(200))
        // stop() waits for the last window's acknowledgement; a loaded machine can take
        // longer than the default 3 s, and the test checks that nothing is lost.
        .flush_timeout(Duration::from_secs(30))
        .start()
        .unwrap();

    // Through the API: CPU, RSS and threads of this very process.
    let rss = eventually(Duration::from_secs(15), "rss points", || async {
        let m = api.metrics("checkout", "rss", "5m").await.ok()?;
        (m.series.first()?.points.len() >= 3).then_some(m)
    })
    .await;
    assert_eq!(rss.unit, "bytes");
    assert_eq!(rss.series.len(), 1);
    assert_eq!(rss.series[0].instance, "checkout-e2e");
    assert!(
        rss.series[0].points.iter().all(|p| p.value > 1e6),
        "{rss:?}"
    );
    let cpu = api.metrics("checkout", "cpu", "5m").await.unwrap();
    assert!(!cpu.series.is_empty());
    assert!(cpu.series[0]
        .points
        .iter()
        .all(|p| (0.0..=100.5).contains(&p.value)));
    let threads = api.metrics("checkout", "threads", "5m").await.unwrap();
    assert!(threads.series[0].points.iter().all(|p| p.value >= 2.0));

    let services = api.services().await.unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].service, "checkout");
    assert_eq!(services[0].instances, 1);
    let instances = api.instances("checkout").await.unwrap();
    assert_eq!(instances[0].pid, std::process::id());
    assert_eq!(
        instances[0].labels.get("region").map(String::as_str),
        Some("test")
    );

    // Through the CLI, as a script would use it and as a person would read it.
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "--json",
        "metrics",
        "--service",
        "checkout",
        "--metric",
        "rss",
        "--since",
        "5m",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let parsed: MetricsJson = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed.series[0].instance, "checkout-e2e");
    assert!(parsed.series[0].points.len() >= 3);
    let out = holmes_cli(&["--api", &api_url, "services"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("checkout"))
        .expect(&text);
    assert_eq!(row.split_whitespace().nth(1), Some("1"), "{text}");
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "metrics",
        "--service",
        "checkout",
        "--metric",
        "cpu",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("checkout-e2e"));

    // stop() flushes: every sampling round is acknowledged and stored, once.
    let stats = agent.stop();
    assert_eq!(stats.unacked, 0, "{stats:?}");
    assert!(stats.acked_seq >= 2, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    let all = api.metrics("checkout", "rss", "5m").await.unwrap();
    assert_eq!(
        all.series[0].points.len() as u64,
        stats.samples,
        "{stats:?}"
    );
    server.shutdown().await;
}

crate::support::on_each_backend!(metrics_arrive_and_come_back);

/// The collector is down when the agent starts, comes up, goes away and comes back on
/// the same address and store: the host never notices, and windows queued while it was
/// down arrive once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rides_out_a_collector_that_is_down_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.grpc_addr = crate::support::free_addr();
    let agent = Holmes::builder()
        .service("cart")
        .instance("cart-0")
        .collector(format!("http://{}", config.grpc_addr))
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(400))
        // stop() sends the last window and waits for its acknowledgement; on a loaded
        // machine that can take longer than the default 3 s, and the test checks that
        // nothing is lost, not how fast.
        .flush_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    // Sampling goes on without a collector, and the windows wait in the outbox.
    let before = eventually(
        Duration::from_secs(20),
        "samples and windows while no collector runs",
        || async {
            let s = agent.stats();
            (s.samples >= 4 && s.unacked >= 2).then_some(s)
        },
    )
    .await;
    assert!(!before.connected, "{before:?}");

    // Windows keep coming every 100 ms, so the outbox is rarely empty at the instant
    // it is looked at: what was queued while the collector was down is delivered
    // once the acknowledgements reach it.
    let queued_while_down = agent.stats().queued_seq;
    assert!(
        queued_while_down >= before.unacked,
        "{queued_while_down} queued, {before:?}"
    );
    let collector_up_ms = now_ms();
    let server = holmes_collector::Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    eventually(Duration::from_secs(60), "the outbox to drain", || async {
        let s = agent.stats();
        (s.connected && s.acked_seq >= queued_while_down).then_some(())
    })
    .await;
    // Every sample taken while the collector was down is delivered.
    let first = eventually(
        Duration::from_secs(30),
        "the samples taken while the collector was down",
        || async {
            let m = api.metrics("cart", "rss", "5m").await.ok()?;
            let taken_while_down = m
                .series
                .first()?
                .points
                .iter()
                // A sample `before` counted may carry the millisecond `collector_up_ms`
                // was read in.
                .filter(|p| p.unix_ms <= collector_up_ms)
                .count() as u64;
            (taken_while_down >= before.samples).then_some(m)
        },
    )
    .await;

    server.shutdown().await;
    eventually(
        Duration::from_secs(20),
        "the agent to notice the collector is gone",
        || async { (!agent.stats().connected).then_some(()) },
    )
    .await;
    let server = holmes_collector::Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let n_before = first.series[0].points.len();
    eventually(
        Duration::from_secs(30),
        "points after the restart",
        || async {
            let s = agent.stats();
            let m = api.metrics("cart", "rss", "5m").await.ok()?;
            (s.connections >= 2 && m.series[0].points.len() > n_before + 5).then_some(())
        },
    )
    .await;
    // No gaps: one point per sampling round up to the last acknowledged window.
    let stats = agent.stop();
    assert_eq!(stats.unacked, 0, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    let all = api.metrics("cart", "rss", "5m").await.unwrap();
    assert_eq!(
        all.series[0].points.len() as u64,
        stats.samples,
        "{stats:?}"
    );
    server.shutdown().await;
}

fn now_ms() -> u64 {
    holmes_collector::clock::unix_nanos_now() / 1_000_000
}

/// With no collector reachable, stop() still returns within its flush timeout.
#[tokio::test]
async fn stop_is_prompt_when_the_collector_is_unreachable() {
    let addr = crate::support::free_addr();
    let agent = Holmes::builder()
        .service("lonely")
        .collector(format!("http://{addr}"))
        .collect_interval(Duration::from_millis(50))
        .flush_timeout(Duration::from_millis(500))
        .start()
        .unwrap();
    eventually(Duration::from_secs(20), "a first sample", || async {
        (agent.stats().samples >= 1).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let stats = agent.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stats.unacked >= 1,
        "unsent data is reported, not hidden: {stats:?}"
    );
}

/// "Capture now": `holmes capture` reaches every connected agent of the service through
/// its stream; the profiles come back answering the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_now_reaches_the_connected_agents() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let api_url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&api_url).unwrap();
    let agent = Holmes::builder()
        .service("checkout")
        .instance("checkout-now")
        .collector(format!("http://{}", server.grpc_addr()))
        .collect_interval(Duration::from_millis(200))
        .send_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    eventually(Duration::from_secs(15), "the agent connected", || async {
        agent.stats().connected.then_some(())
    })
    .await;
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "--json",
        "capture",
        "--service",
        "checkout",
        "--kind",
        "threads",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let asked: holmes_api::control::CaptureJson = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(asked.instances, vec!["checkout-now"]);
    assert_eq!(asked.kinds, vec!["threads"]);
    let profile = eventually(
        Duration::from_secs(30),
        "the requested thread dump",
        || async {
            let triggers = api.triggers("checkout", "5m").await.ok()?;
            let event = triggers
                .triggers
                .iter()
                .find(|t| t.request_id.as_deref() == Some(asked.request_id.as_str()))?
                .event_id
                .clone();
            let profiles = api.profiles("checkout", "5m").await.ok()?;
            profiles
                .profiles
                .into_iter()
                .find(|p| p.event_id == event && p.kind == "threads" && p.error.is_none())
        },
    )
    .await;
    assert_eq!(profile.instance, "checkout-now");
    // A service with no connected agent, and a kind that does not exist: clear errors.
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "capture",
        "--service",
        "cart",
        "--kind",
        "cpu",
    ])
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: no agent of service \"cart\" is connected now (HTTP 404)"
    );
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "capture",
        "--service",
        "checkout",
        "--kind",
        "gpu",
    ])
    .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown profile kind \"gpu\""),
        "{out:?}"
    );
    agent.stop();
    server.shutdown().await;
}
