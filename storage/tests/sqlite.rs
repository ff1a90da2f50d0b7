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
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    holmes_storage::testsuite::instances_roundtrip_and_group_into_services(store.clone()).await;
    let before = store.list_services(0).await.unwrap();
    drop(store);
    let reopened = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(reopened.list_services(0).await.unwrap(), before);
}
