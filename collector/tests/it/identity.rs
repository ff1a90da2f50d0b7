//! Identity over real gRPC: the same code path in processes of one build is one stack,
//! whatever ASLR did (pprof with mapping-relative offsets, and the agent's own form);
//! and a profile id is its service's — another service reusing it touches nothing of
//! the first. On SQLite and on ClickHouse.

use std::sync::Arc;

use crate::support::raw_agent::{hello, profile_chunks, RawAgent};
use crate::support::Backend;
use holmes_cli::api_client::ApiClient;
use holmes_collector::clock::unix_nanos_now;
use holmes_collector::config::StoreKind;
use holmes_collector::Server;
use holmes_devtools::synthetic::{ProfileFactory, FLEET};
use holmes_proto::{AgentBody, CollectorMessage, ProfileFormat, ProfileKind};
use holmes_storage::clickhouse::{ClickHouseConfig, ClickHouseStore};
use holmes_storage::sqlite::SqliteStore;
use holmes_storage::Store;

const SEC: u64 = 1_000_000_000;

/// A collector and the store it writes (to read what it stored).
async fn start(backend: Backend, dir: &std::path::Path) -> Option<(Server, Arc<dyn Store>)> {
    let config = crate::support::config(backend, dir)?;
    let store: Arc<dyn Store> = match config.store {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(&config.data_dir).unwrap()),
        StoreKind::Clickhouse => {
            let mut ch = ClickHouseConfig::new(config.clickhouse.url.clone().unwrap());
            ch.database = config.clickhouse.database.clone();
            Arc::new(ClickHouseStore::open(&ch).await.unwrap())
        }
    };
    let server = Server::start_with_store(&config, Arc::clone(&store))
        .await
        .unwrap();
    Some((server, store))
}

/// Sends one profile on a stream of its own; waits for its acknowledgement.
async fn send(
    server: &Server,
    service: &str,
    instance: &str,
    id: &str,
    format: ProfileFormat,
    data: &[u8],
) {
    let mut agent = RawAgent::connect(server.grpc_addr(), hello(service, instance, vec![])).await;
    let started = unix_nanos_now() - 30 * SEC;
    let mut chunks = profile_chunks(id, "ev-1", ProfileKind::Cpu, started, data, 4 << 20);
    chunks[0].format = format;
    agent
        .send(1, AgentBody::ProfileChunk(chunks.remove(0)))
        .await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 1 });
}

async fn processes_of_one_build_share_their_stacks(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, store)) = start(backend, dir.path()).await else {
        return;
    };
    let factory = ProfileFactory::new(300);
    // The same samples from two processes of one build: other absolute addresses.
    let a = factory.capture(1, 0, 0, 1111);
    let b = factory.capture(1, 0, 0, 2222);
    assert_ne!(
        a.pprof_gzip, b.pprof_gzip,
        "the processes' addresses differ"
    );
    send(
        &server,
        "orders",
        "orders-0",
        &format!("{:032x}", 1),
        ProfileFormat::PprofGzip,
        &a.pprof_gzip,
    )
    .await;
    let after_one = store.stack_count("orders").await.unwrap();
    assert!(after_one > 100, "{after_one} stacks");
    send(
        &server,
        "orders",
        "orders-1",
        &format!("{:032x}", 2),
        ProfileFormat::PprofGzip,
        &b.pprof_gzip,
    )
    .await;
    assert_eq!(store.stack_count("orders").await.unwrap(), after_one);
    // The same again in the agent's own form: the frames pprof had symbolized are named
    // frames there, not native ones, so these are other stacks — once more, once.
    send(
        &server,
        "orders",
        "orders-2",
        &format!("{:032x}", 3),
        ProfileFormat::Native,
        &a.native.encode(),
    )
    .await;
    let with_native = store.stack_count("orders").await.unwrap();
    assert!(with_native > after_one);
    send(
        &server,
        "orders",
        "orders-3",
        &format!("{:032x}", 4),
        ProfileFormat::Native,
        &b.native.encode(),
    )
    .await;
    assert_eq!(store.stack_count("orders").await.unwrap(), with_native);
    // Another build's executable frames are other locations: new stacks.
    let other_build = factory.capture(1, 0, 1, 1111);
    assert_ne!(FLEET[0].build_id, FLEET[1].build_id);
    send(
        &server,
        "orders",
        "orders-4",
        &format!("{:032x}", 5),
        ProfileFormat::Native,
        &other_build.native.encode(),
    )
    .await;
    assert!(store.stack_count("orders").await.unwrap() > with_native);
    // Every instance's flame graph root is the same: one tree, not one per process.
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let svg = api.service_flamegraph("orders", "cpu", "1h").await.unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(
        svg.contains("5 cpu profiles"),
        "{}",
        &svg[..300.min(svg.len())]
    );
    server.shutdown().await;
}

crate::support::on_each_backend!(processes_of_one_build_share_their_stacks);

async fn profile_ids_belong_to_their_service(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, _store)) = start(backend, dir.path()).await else {
        return;
    };
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let factory = ProfileFactory::new(100);
    let id = "0123456789abcdef0123456789abcdef";
    let victim = factory.capture(7, 0, 0, 1).native.encode();
    send(
        &server,
        "checkout",
        "checkout-0",
        id,
        ProfileFormat::Native,
        &victim,
    )
    .await;
    let before = (
        api.download_profile("checkout", id).await.unwrap(),
        api.top("checkout", id, None, 100).await.unwrap(),
        api.profile_flamegraph("checkout", id).await.unwrap(),
    );
    // Another service sends a profile under the same id, with other contents.
    let intruder = factory.capture(99, 0, 2, 5).pprof_gzip;
    send(
        &server,
        "intruder",
        "x-0",
        id,
        ProfileFormat::PprofGzip,
        &intruder,
    )
    .await;
    let after = (
        api.download_profile("checkout", id).await.unwrap(),
        api.top("checkout", id, None, 100).await.unwrap(),
        api.profile_flamegraph("checkout", id).await.unwrap(),
    );
    assert!(before.0 == after.0, "the victim's download is untouched");
    assert_eq!(before.1, after.1, "its top functions too");
    assert!(before.2 == after.2, "and its flame graph");
    // Each service has its own profile under that id.
    let theirs = api.top("intruder", id, None, 100).await.unwrap();
    assert_ne!(theirs, after.1);
    let listed = api.profiles("checkout", "1h").await.unwrap().profiles;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].instance, "checkout-0");
    server.shutdown().await;
}

crate::support::on_each_backend!(profile_ids_belong_to_their_service);
