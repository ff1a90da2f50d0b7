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
