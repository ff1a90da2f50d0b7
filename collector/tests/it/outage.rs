//! ClickHouse goes away under ingest and comes back: the collector retries its writes,
//! acknowledges nothing it has not stored, and the agent keeps what is unacknowledged,
//! so every metric sample and the profile captured during the outage end up stored,
//! once. Runs its own ClickHouse server (started by `deploy/dev/clickhouse.sh`), since
//! it kills it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{eventually, Backend};
use holmes_agent::{Holmes, ProfileKind};
use holmes_cli::api_client::ApiClient;
use holmes_collector::config::StoreKind;
use holmes_collector::Server;
use holmes_storage::clickhouse::ClickHouseSettings;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev/clickhouse.sh")
}

/// A ClickHouse server of this test's own, stopped (and its folder removed) on drop.
struct OwnClickHouse {
    url: String,
    dir: String,
}

impl OwnClickHouse {
    fn run(command: &str, dir: Option<&str>) -> Vec<(String, String)> {
        crate::support::dev_script("clickhouse.sh", command, "HOLMES_CH_DIR", dir)
    }

    fn start() -> Self {
        let vars = Self::run("start", None);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        OwnClickHouse {
            url: get("HOLMES_TEST_CLICKHOUSE_URL").expect("a URL"),
            dir: get("HOLMES_CH_DIR").expect("a folder"),
        }
    }

    fn kill(&self) {
        let pid = std::fs::read_to_string(format!("{}/pid", self.dir)).unwrap();
        let pid = pid.trim();
        Command::new("kill").args(["-9", pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            // A killed child of the script is reparented and reaped by init; wait for it.
            assert!(Instant::now() < deadline, "ClickHouse {pid} did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .env("HOLMES_CH_DIR", &self.dir)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_clickhouse_is_down() {
    // Only where the suite runs ClickHouse tests at all.
    let dir = tempfile::tempdir().unwrap();
    let Some(mut config) = crate::support::config(Backend::ClickHouse, dir.path()) else {
        return;
    };
    let ch = tokio::task::spawn_blocking(OwnClickHouse::start)
        .await
        .unwrap();
    config.store = StoreKind::Clickhouse;
    config.clickhouse = ClickHouseSettings {
        url: Some(ch.url.clone()),
        ..ClickHouseSettings::default()
    };
    let server = Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let agent = Holmes::builder()
        .service("outage")
        .instance("outage-0")
        .collector(format!("http://{}", server.grpc_addr()))
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    eventually(Duration::from_secs(20), "first points", || async {
        let m = api.metrics("outage", "rss", "5m").await.ok()?;
        (m.series.first()?.points.len() >= 5).then_some(())
    })
    .await;

    // Down for 6 s; a capture is asked for in the middle of it.
    let down = Instant::now();
    tokio::task::spawn_blocking({
        let dir = ch.dir.clone();
        let url = ch.url.clone();
        move || OwnClickHouse { url, dir }.kill_without_cleanup()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let event_id = agent.capture_now(&[ProfileKind::Threads]).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.stats().unacked > 0,
        "the agent holds what could not be stored: {:?}",
        agent.stats()
    );
    let ch_dir = ch.dir.clone();
    tokio::task::spawn_blocking(move || OwnClickHouse::run("restart", Some(&ch_dir)))
        .await
        .unwrap();
    let outage = down.elapsed();
    eprintln!("ClickHouse was down for {outage:?}");

    // Everything arrives: the profile of the capture and every metric sample.
    crate::support::outage_backlog_arrives(
        &api,
        &agent,
        &event_id,
        outage,
        Duration::from_secs(60),
    )
    .await;
    agent.stop();
    server.shutdown().await;
    drop(ch);
}

impl OwnClickHouse {
    /// Kills the server but leaves its folder for the restart (no drop cleanup).
    fn kill_without_cleanup(self) {
        self.kill();
        std::mem::forget(self);
    }
}
