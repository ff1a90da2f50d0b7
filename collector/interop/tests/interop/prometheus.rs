//! A real Prometheus server (Debian's `prometheus`, 2.42 here) scrapes the collector's
//! `/metrics` with the API token, and the series are read back through Prometheus's
//! query API.

use std::collections::BTreeMap;
use std::time::Duration;

use holmes_collector::auth::Secret;
use holmes_proto::{TriggerEvent, TriggerReason};

use crate::support::{self, collector, eventually, free_port, get_json, http, Daemon, RawAgent};

const TOKEN: &str = "interop-api-token";

/// The value of the first series `query` returns in Prometheus at `base`.
async fn query(base: &str, query: &str) -> Option<f64> {
    let url = format!(
        "{base}/api/v1/query?query={}",
        query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let answer = get_json(&url, &[]).await?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_collector() {
    let Some(prometheus) = support::tool("prometheus", "HOLMES_TEST_REQUIRE_PROMETHEUS") else {
        return;
    };
    let (server, _data) = collector(|c| c.auth.api_token = Some(Secret::new(TOKEN))).await;
    let target = server.http_addr();
    // Without the token, /metrics is refused like the API.
    let (status, _) = http("GET", &format!("http://{target}/metrics"), &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(status, 401);

    // Something to count: an agent connected, a trigger and a profile from it.
    let mut agent = RawAgent::connect(server.grpc_addr(), "shop", "shop-1", BTreeMap::new()).await;
    let now = holmes_collector::clock::unix_nanos_now();
    let event_id = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    agent
        .trigger(TriggerEvent {
            event_id: event_id.to_owned(),
            metric: None,
            reason: TriggerReason::Requested,
            current: 0.0,
            window: Vec::new(),
            rule: None,
            unix_nanos: now,
            planned: Vec::new(),
            request_id: None,
        })
        .await;
    agent
        .profile(
            "00112233445566778899aabbccddeeff",
            event_id,
            now,
            support::cpu_pprof(&[(&["shop::work", "main"], 10)], now),
        )
        .await;
    let (status, _) = http(
        "GET",
        &format!("http://{target}/api/v1/services"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: holmes\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: [\"{target}\"]\n",
            token_file.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let daemon = Daemon::start(
        &prometheus,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        dir.path(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(
        Duration::from_secs(90),
        "Prometheus to scrape the collector",
        || async {
            query(&base, "up{job=\"holmes\"}")
                .await
                .filter(|v| *v == 1.0)
        },
    )
    .await;
    assert_eq!(up, 1.0, "{}", daemon.output());
    let read = |q: &'static str| {
        let base = base.clone();
        async move { eventually(Duration::from_secs(30), q, || query(&base, q)).await }
    };
    assert!(read("holmes_agents_connected").await >= 1.0);
    assert!(read("holmes_profiles_ingested_total{source=\"agent\",kind=\"cpu\"}").await >= 1.0);
    assert!(read("holmes_ingest_messages_total{type=\"trigger\"}").await >= 1.0);
    assert!(read("holmes_ingest_received_bytes_total{source=\"agent\"}").await > 0.0);
    assert!(read("holmes_store_write_duration_seconds_count{op=\"profile\"}").await >= 1.0);
    assert!(
        read("holmes_http_request_duration_seconds_count{route=\"/api/v1/services\",code=\"200\"}")
            .await
            >= 1.0
    );
    // Prometheus's own scrapes are requests too, by their route.
    assert!(read("holmes_http_request_duration_seconds_count{route=\"/metrics\"}").await >= 1.0);
    drop(agent);
    server.shutdown().await;
}
