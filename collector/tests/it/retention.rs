//! Retention with a real collector: trigger events and metric samples older than
//! `retention_days` disappear once the collector runs; recent ones stay. On SQLite and
//! on ClickHouse (whose old day partitions are dropped).

use std::sync::Arc;
use std::time::Duration;

use crate::support::{eventually, Backend};
use holmes_cli::api_client::ApiClient;
use holmes_collector::clock::unix_nanos_now;
use holmes_collector::config::StoreKind;
use holmes_collector::Server;
use holmes_proto::{Metric, TriggerReason};
use holmes_storage::clickhouse::{ClickHouseConfig, ClickHouseStore};
use holmes_storage::sqlite::SqliteStore;
use holmes_storage::{InstanceInfo, MetricPoint, Store, TriggerRecord};

const DAY: u64 = 86_400 * 1_000_000_000;

fn trigger(event_id: &str, at: u64) -> TriggerRecord {
    TriggerRecord {
        service: "checkout".to_owned(),
        instance_id: "checkout-0".to_owned(),
        event_id: event_id.to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 93.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: at,
        request_id: None,
    }
}

async fn old_days_are_removed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut config) = crate::support::config(backend, dir.path()) else {
        return;
    };
    config.retention_days = 7;
    let store: Arc<dyn Store> = match config.store {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(&config.data_dir).unwrap()),
        StoreKind::Clickhouse => {
            let mut ch = ClickHouseConfig::new(config.clickhouse.url.clone().unwrap());
            ch.database = config.clickhouse.database.clone();
            Arc::new(ClickHouseStore::open(&ch).await.unwrap())
        }
    };
    let now = unix_nanos_now();
    let (old, recent) = (now - 10 * DAY, now - DAY);
    // The service is known by its instance (kept: instances do not expire).
    store
        .upsert_instance(&InstanceInfo {
            service: "checkout".to_owned(),
            instance_id: "checkout-0".to_owned(),
            host: "host".to_owned(),
            pid: 1,
            labels: Default::default(),
            agent_version: "0.1.0".to_owned(),
            started_at_unix_nanos: old,
            last_seen_unix_nanos: recent,
        })
        .await
        .unwrap();
    store
        .insert_triggers(&[trigger("old", old), trigger("recent", recent)])
        .await
        .unwrap();
    let point = |at| MetricPoint {
        service: "checkout".to_owned(),
        instance_id: "checkout-0".to_owned(),
        metric: Metric::CpuPercent,
        unix_nanos: at,
        value: 1.0,
    };
    store
        .insert_metrics(&[point(old), point(recent)])
        .await
        .unwrap();

    let server = Server::start_with_store(&config, store).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let left = eventually(
        Duration::from_secs(20),
        "the old trigger removed",
        || async {
            let t = api.triggers("checkout", "30d").await.ok()?;
            (t.triggers.len() == 1).then_some(t)
        },
    )
    .await;
    assert_eq!(left.triggers[0].event_id, "recent");
    let cpu = api.metrics("checkout", "cpu", "30d").await.unwrap();
    let times: Vec<u64> = cpu.series[0].points.iter().map(|p| p.unix_ms).collect();
    assert_eq!(times, vec![recent / 1_000_000]);
    server.shutdown().await;
}

crate::support::on_each_backend!(old_days_are_removed);
