//! The Store conformance suite against a real ClickHouse server.
//!
//! The server is the one `deploy/dev/test.sh` starts; it exports its HTTP URL as
//! `HOLMES_TEST_CLICKHOUSE_URL`. Each test gets its own database. Run without that
//! variable, these tests fail unless `HOLMES_TEST_SKIP_CLICKHOUSE=1` says to skip them.

use std::sync::atomic::{AtomicU32, Ordering};

use holmes_storage::clickhouse::{ClickHouseConfig, ClickHouseStore};
use holmes_storage::Store;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A configuration for a database of its own, or `None` when ClickHouse is skipped.
fn config() -> Option<ClickHouseConfig> {
    let Ok(url) = std::env::var("HOLMES_TEST_CLICKHOUSE_URL") else {
        if std::env::var("HOLMES_TEST_SKIP_CLICKHOUSE").as_deref() == Ok("1") {
            return None;
        }
        panic!("HOLMES_TEST_CLICKHOUSE_URL is not set: run deploy/dev/test.sh, or set HOLMES_TEST_SKIP_CLICKHOUSE=1");
    };
    let mut config = ClickHouseConfig::new(url);
    config.database = format!(
        "holmes_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Some(config)
}

async fn fresh() -> Option<ClickHouseStore> {
    Some(ClickHouseStore::open(&config()?).await.unwrap())
}

holmes_storage::store_conformance_tests!(fresh());

#[tokio::test]
async fn reopening_an_existing_database_keeps_its_data() {
    let Some(config) = config() else { return };
    let store = ClickHouseStore::open(&config).await.unwrap();
    holmes_storage::testsuite::instances_roundtrip_and_group_into_services(store).await;
    let reopened = ClickHouseStore::open(&config).await.unwrap();
    assert_eq!(reopened.list_services(0).await.unwrap().len(), 2);
}

#[tokio::test]
async fn detects_the_server_version() {
    let Some(store) = fresh().await else { return };
    let version = store.server_version();
    assert!(version.major >= 18, "{version:?}");
}
