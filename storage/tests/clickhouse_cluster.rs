//! The cluster schema (`<table>_local` + `Distributed` tables) against a real server.
//!
//! `deploy/dev/clickhouse.sh` configures its server with a cluster `holmes_test` of
//! itself (one shard, one replica, no ZooKeeper), so the store runs here with plain
//! local tables, no `ON CLUSTER`, and every query and insert going through the
//! Distributed tables: the whole conformance suite, plus a check that the cluster
//! schema is column for column and key for key what the migrations build. Replicated
//! engines and distributed DDL need ZooKeeper and are checked as DDL text only (unit
//! tests of `clickhouse/cluster.rs`). Skipped, like storage/tests/clickhouse.rs, with
//! `HOLMES_TEST_SKIP_CLICKHOUSE=1`.

use std::sync::atomic::{AtomicU32, Ordering};

use holmes_storage::clickhouse::{ClickHouseConfig, ClickHouseStore, ClusterConfig};
use holmes_storage::{Store, StoreError};

static NEXT: AtomicU32 = AtomicU32::new(0);

const CLUSTER: &str = "holmes_test";

fn url() -> Option<String> {
    match std::env::var("HOLMES_TEST_CLICKHOUSE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("HOLMES_TEST_SKIP_CLICKHOUSE").as_deref() == Ok("1") => None,
        Err(_) => panic!(
            "HOLMES_TEST_CLICKHOUSE_URL is not set: run deploy/dev/test.sh, or set HOLMES_TEST_SKIP_CLICKHOUSE=1"
        ),
    }
}

fn database(kind: &str) -> String {
    format!(
        "holmes_{kind}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A cluster configuration on a database of its own.
fn config() -> Option<ClickHouseConfig> {
    let mut config = ClickHouseConfig::new(url()?);
    config.database = database("cluster");
    config.cluster = Some(ClusterConfig {
        replicated: false,
        on_cluster: false,
        ..ClusterConfig::new(CLUSTER)
    });
    Some(config)
}

async fn fresh() -> Option<ClickHouseStore> {
    Some(ClickHouseStore::open(&config()?).await.unwrap())
}

holmes_storage::store_conformance_tests!(fresh());

fn client(url: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
        .with_compression(clickhouse::Compression::None)
}

#[derive(clickhouse::Row, serde::Deserialize, Debug, PartialEq)]
struct TableRow {
    name: String,
    engine: String,
    engine_full: String,
}

async fn tables(url: &str, database: &str) -> Vec<TableRow> {
    client(url)
        .query(
            "SELECT name, engine, engine_full FROM system.tables WHERE database = ? ORDER BY name",
        )
        .bind(database)
        .fetch_all()
        .await
        .unwrap()
}

async fn columns(url: &str, database: &str, table: &str) -> Vec<(String, String)> {
    client(url)
        // In column order (18.16 has no `position` column to sort by).
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
        .bind(database)
        .bind(table)
        .fetch_all()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_cluster_schema_is_the_migrated_schema() {
    let Some(url) = url() else { return };
    let single = ClickHouseConfig {
        database: database("single"),
        ..ClickHouseConfig::new(&url)
    };
    ClickHouseStore::open(&single).await.unwrap();
    let cluster = config().unwrap();
    ClickHouseStore::open(&cluster).await.unwrap();

    // The migration lock is not part of the schema: a cluster's is created at once.
    let migrated: Vec<TableRow> = tables(&url, &single.database)
        .await
        .into_iter()
        .filter(|t| t.name != "schema_lock")
        .collect();
    let clustered = tables(&url, &cluster.database).await;
    assert!(migrated.len() >= 11, "{migrated:?}");
    assert_eq!(clustered.len(), migrated.len() * 2, "{clustered:?}");
    for table in &migrated {
        let local = clustered
            .iter()
            .find(|t| t.name == format!("{}_local", table.name))
            .unwrap_or_else(|| panic!("no {}_local", table.name));
        // Same engine, version column, partition key, sorting key and settings.
        assert_eq!(local.engine_full, table.engine_full, "{}", table.name);
        let distributed = clustered
            .iter()
            .find(|t| t.name == table.name)
            .unwrap_or_else(|| panic!("no distributed {}", table.name));
        assert_eq!(distributed.engine, "Distributed", "{}", table.name);
        assert!(
            distributed.engine_full.contains(&format!("'{CLUSTER}'")),
            "{}",
            distributed.engine_full
        );
        let want = columns(&url, &single.database, &table.name).await;
        assert!(!want.is_empty());
        assert_eq!(
            columns(&url, &cluster.database, &local.name).await,
            want,
            "{}",
            table.name
        );
        assert_eq!(
            columns(&url, &cluster.database, &table.name).await,
            want,
            "{}",
            table.name
        );
    }
}

#[tokio::test]
async fn reopening_a_cluster_database_keeps_its_data() {
    let Some(config) = config() else { return };
    let store = ClickHouseStore::open(&config).await.unwrap();
    holmes_storage::testsuite::instances_roundtrip_and_group_into_services(store).await;
    let reopened = ClickHouseStore::open(&config).await.unwrap();
    assert_eq!(reopened.list_services(0).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_single_server_database_is_not_taken_for_a_cluster_one() {
    let Some(mut config) = config() else { return };
    let cluster = config.cluster.take();
    ClickHouseStore::open(&config).await.unwrap();
    config.cluster = cluster;
    let err = ClickHouseStore::open(&config).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Migration { message, .. } if message.contains("single-server schema")),
        "{err}"
    );
}
