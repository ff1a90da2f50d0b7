//! The Store conformance suite against the embedded SQLite backend.

use holmes_storage::sqlite::SqliteStore;
use holmes_storage::Store;

async fn fresh() -> Option<SqliteStore> {
    // Keep the directory: the store must outlive this function.
    let dir = tempfile::tempdir().unwrap().keep();
    Some(SqliteStore::open(&dir).unwrap())
}

holmes_storage::store_conformance_tests!(fresh());

#[tokio::test]
async fn data_and_numbers_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    holmes_storage::testsuite::instances_roundtrip_and_group_into_services(store.clone()).await;
    holmes_storage::testsuite::stacks_are_stored_once_per_service(store.clone()).await;
    let before = store.list_services(0).await.unwrap();
    let stacks = store.stack_count("checkout").await.unwrap();
    let epoch = store.numbering_epoch();
    drop(store);
    let reopened = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(reopened.list_services(0).await.unwrap(), before);
    assert!(reopened.numbering_epoch() > epoch);
    // The same stacks again from a new writer: found by id, not numbered anew.
    same_stacks_again(&reopened).await;
    assert_eq!(reopened.stack_count("checkout").await.unwrap(), stacks);
}

/// Stores a profile of build `b1` (whose stacks the suite's stack case stored) under a
/// new id.
async fn same_stacks_again(store: &impl Store) {
    use holmes_storage::testsuite::{cpu_contents, profile_id, record};
    let p = record(
        "checkout",
        "checkout-9",
        &profile_id(77),
        "e",
        1_795_651_200_000_000_000,
        Some(cpu_contents("b1", 3)),
    );
    store.insert_profile(&p).await.unwrap();
}

/// What the store acknowledges is durable: commits are `synchronous = FULL` unless told
/// otherwise, and writes waiting together share a commit (one `fsync` for many).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_durable_and_share_commits() {
    use holmes_storage::sqlite::Synchronous;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.synchronous().await.unwrap(), Synchronous::Full);
    let before = store.commits();
    // Another process holds the database: the writes queue up meanwhile, and then go
    // in groups.
    let other =
        rusqlite::Connection::open(dir.path().join(holmes_storage::sqlite::DB_FILE)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..400u64 {
        let store = store.clone();
        writes.spawn(async move {
            store
                .insert_metrics(&[holmes_storage::MetricPoint {
                    service: "s".to_owned(),
                    instance_id: format!("i{i}"),
                    metric: holmes_proto::Metric::CpuPercent,
                    unix_nanos: 1_795_651_200_000_000_000,
                    value: 1.0,
                }])
                .await
        });
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    other.execute_batch("COMMIT").unwrap();
    while let Some(r) = writes.join_next().await {
        r.unwrap().unwrap();
    }
    let commits = store.commits() - before;
    assert!(commits < 400, "400 writes in {commits} commits");
    let normal = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(normal.path(), Synchronous::Normal).unwrap();
    assert_eq!(store.synchronous().await.unwrap(), Synchronous::Normal);
}
