//! The Store conformance suite against real ClickHouse servers: Debian's 18.16 (the
//! oldest the schema supports) and a current one (26.9, from PyPI's chdb-core).
//!
//! `deploy/dev/test.sh` starts both and exports their HTTP URLs as
//! `HOLMES_TEST_CLICKHOUSE_URL` (18.16) and `HOLMES_TEST_CLICKHOUSE_CURRENT_URL` (26.9).
//! Each test gets its own database. Run without a variable, the tests of that server
//! fail unless `HOLMES_TEST_SKIP_CLICKHOUSE=1` says to skip them.

use std::sync::atomic::{AtomicU32, Ordering};

use holmes_storage::clickhouse::{ClickHouseConfig, ClickHouseStore};
use holmes_storage::Store;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A configuration for a database of its own on the server `variable` names, or `None`
/// when ClickHouse is skipped.
fn config(variable: &str) -> Option<ClickHouseConfig> {
    let Ok(url) = std::env::var(variable) else {
        if std::env::var("HOLMES_TEST_SKIP_CLICKHOUSE").as_deref() == Ok("1") {
            return None;
        }
        panic!(
            "{variable} is not set: run deploy/dev/test.sh, or set HOLMES_TEST_SKIP_CLICKHOUSE=1"
        );
    };
    let mut config = ClickHouseConfig::new(url);
    config.database = format!(
        "holmes_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Some(config)
}

async fn fresh(variable: &str) -> Option<ClickHouseStore> {
    Some(ClickHouseStore::open(&config(variable)?).await.unwrap())
}

/// The suite and the server-specific checks, once per server.
macro_rules! on_server {
    ($module:ident, $variable:literal) => {
        mod $module {
            use super::*;

            holmes_storage::store_conformance_tests!(fresh($variable));

            #[tokio::test]
            async fn reopening_an_existing_database_keeps_its_data_and_numbers() {
                let Some(config) = config($variable) else {
                    return;
                };
                let store = ClickHouseStore::open(&config).await.unwrap();
                holmes_storage::testsuite::instances_roundtrip_and_group_into_services(
                    store.clone(),
                )
                .await;
                holmes_storage::testsuite::stacks_are_stored_once_per_service(store.clone()).await;
                let stacks = store.stack_count("checkout").await.unwrap();
                let reopened = ClickHouseStore::open(&config).await.unwrap();
                assert_eq!(reopened.list_services(0).await.unwrap().len(), 2);
                assert_ne!(reopened.numbering_epoch(), store.numbering_epoch());
                // The same stacks again from a new writer: found by id, not numbered anew.
                same_stacks_again(&reopened).await;
                assert_eq!(reopened.stack_count("checkout").await.unwrap(), stacks);
            }

            /// One agent's rows that a server refuses (dates over 150 days: more
            /// partitions than one insert may touch on ClickHouse 19 and later) fail
            /// that agent's write only; the agents whose rows shared its batch are
            /// stored.
            #[tokio::test]
            async fn a_bad_row_fails_its_writer_only() {
                use holmes_proto::Metric;
                use holmes_storage::{MetricPoint, MetricQuery};
                let Some(store) = fresh($variable).await else {
                    return;
                };
                const DAY: u64 = 86_400_000_000_000;
                let t0 = 1_795_651_200_000_000_000u64;
                let point = |service: &str, at: u64| MetricPoint {
                    service: service.to_owned(),
                    instance_id: "i".to_owned(),
                    metric: Metric::CpuPercent,
                    unix_nanos: at,
                    value: 1.0,
                };
                let bad: Vec<MetricPoint> = (0..150).map(|d| point("bad", t0 - d * DAY)).collect();
                let goods: Vec<Vec<MetricPoint>> = (0..5)
                    .map(|i| vec![point(&format!("good-{i}"), t0)])
                    .collect();
                // All at once, so that they share one batch.
                let mut writes = tokio::task::JoinSet::new();
                for g in goods {
                    let store = store.clone();
                    writes.spawn(async move { store.insert_metrics(&g).await });
                }
                let bad_result = store.insert_metrics(&bad).await;
                while let Some(r) = writes.join_next().await {
                    r.unwrap().unwrap();
                }
                for i in 0..5 {
                    let got = store
                        .query_metrics(&MetricQuery {
                            service: format!("good-{i}"),
                            metric: Metric::CpuPercent,
                            since_unix_nanos: 0,
                            until_unix_nanos: u64::MAX / 2,
                            limit: 10,
                        })
                        .await
                        .unwrap();
                    assert_eq!(got.len(), 1, "good-{i} is stored");
                }
                if store.server_version().major >= 19 {
                    assert!(
                        bad_result.is_err(),
                        "the server refuses 150 partitions in one insert"
                    );
                }
            }

            /// LZ4 on the HTTP interface: the crate reads LZ4 answers only, so the store
            /// asks for them (`network_compression_method = lz4`: chdb's server answers
            /// in ZSTD otherwise, "incorrect magic number"), and a probe at open falls
            /// back to no compression where even that fails.
            #[tokio::test]
            async fn lz4_is_probed_before_it_is_used() {
                use holmes_storage::clickhouse::{lz4_client, probe};
                let Some(config) = config($variable) else {
                    return;
                };
                let store = ClickHouseStore::open(&config).await.unwrap();
                if !store.server_version().supports_lz4() {
                    assert!(!store.uses_lz4());
                    return;
                }
                let plain = clickhouse::Client::default()
                    .with_url(&config.url)
                    .with_validation(false);
                probe(&lz4_client(plain.clone())).await.unwrap();
                // A server answering in another method is what the probe catches.
                let zstd = lz4_client(plain).with_option("network_compression_method", "zstd");
                let err = probe(&zstd).await.unwrap_err();
                assert!(err.contains("magic"), "{err}");
                assert!(store.uses_lz4());
                holmes_storage::testsuite::profiles_roundtrip(store).await;
            }

            #[tokio::test]
            async fn detects_the_server_version() {
                let Some(store) = fresh($variable).await else {
                    return;
                };
                let version = store.server_version();
                assert!(version.major >= 18, "{version:?}");
                assert_eq!(store.uses_lz4(), version.supports_lz4());
            }
        }
    };
}

on_server!(server_18_16, "HOLMES_TEST_CLICKHOUSE_URL");
on_server!(server_current, "HOLMES_TEST_CLICKHOUSE_CURRENT_URL");

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

/// The schema main wrote before the normalized layout, at version 4 (triggers and
/// profiles still sorted by id, so that migration 5's rebuild runs too), with what the
/// collector then stored: trigger events, profiles with their original bytes and their
/// decoded contents, stacks by 64-bit hash, a refused profile.
const OLD_SCHEMA: &[&str] = &[
    "CREATE TABLE schema_migrations (version UInt32, applied_at UInt64) ENGINE = MergeTree ORDER BY version",
    "INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0), (4, 0)",
    "CREATE TABLE instances (service String, instance_id String, host String, pid UInt32,
        label_keys Array(String), label_values Array(String), agent_version String,
        started_at UInt64, last_seen UInt64)
     ENGINE = ReplacingMergeTree(last_seen) ORDER BY (service, instance_id)",
    "CREATE TABLE metric_samples (day Date, service String, metric String, instance_id String,
        ts UInt64, value Float64)
     ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, metric, instance_id, ts)",
    "CREATE TABLE triggers (day Date, service String, event_id String, instance_id String,
        ts UInt64, metric String, reason String, current_value Float64, window_ts Array(UInt64),
        window_values Array(Float64), has_rule UInt8, rule_metric String, rule_enabled UInt8,
        rule_min Float64, rule_diff Float64, rule_abs Float64, rule_max Float64,
        rule_cooldown_ms UInt64, rule_window UInt32, request_id String)
     ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, event_id)",
    "CREATE TABLE profiles (day Date, service String, profile_id String, event_id String,
        instance_id String, kind String, started UInt64, duration_ns UInt64,
        label_keys Array(String), label_values Array(String), error String, size_bytes UInt64,
        data String)
     ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id)
     SETTINGS index_granularity = 8",
    "CREATE TABLE profiles_by_id (profile_id String, service String, day Date)
     ENGINE = ReplacingMergeTree ORDER BY profile_id",
    "CREATE TABLE stacks (stack_id UInt64, functions Array(String), files Array(String),
        lines Array(UInt32)) ENGINE = ReplacingMergeTree ORDER BY stack_id",
    "CREATE TABLE profile_contents (day Date, service String, profile_id String, started UInt64,
        type_names Array(String), type_units Array(String))
     ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id)",
    "CREATE TABLE profile_samples (day Date, service String, profile_id String, idx UInt32,
        stack_id UInt64, vals Array(Int64), label_keys Array(String), label_values Array(String))
     ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id, idx)",
    "INSERT INTO triggers VALUES ('2026-11-26', 'shop', 'ev-1', 'shop-0', 1795651200000000000,
        'cpu', 'abs', 91.5, [1795651199000000000], [20.5], 1, 'cpu', 1, 10, 25, 70, 0, 60000,
        10, '')",
    "INSERT INTO stacks VALUES
        (11, ['shop::render', 'shop::handle', 'main'], ['src/r.rs', 'src/h.rs', 'src/main.rs'], [42, 7, 1]),
        (22, ['shop::handle', 'main'], ['src/h.rs', 'src/main.rs'], [9, 1])",
    "INSERT INTO profiles VALUES
        ('2026-11-26', 'shop', '000000000000000000000000000000a1', 'ev-1', 'shop-0', 'cpu',
         1795651200000000001, 10000000000, ['phase'], ['trigger'], '', 4, 'gza1'),
        ('2026-11-26', 'shop', '000000000000000000000000000000a2', 'ev-1', 'shop-1', 'cpu',
         1795651200000000002, 10000000000, ['phase'], ['trigger'], '', 6, '\\0\\xff\\x1fa2'),
        ('2026-11-26', 'shop', '000000000000000000000000000000b1', 'ev-1', 'shop-1', 'heap',
         1795651200000000003, 0, [], [], 'refused by the collector: too deep', 0, '')",
    "INSERT INTO profile_contents VALUES
        ('2026-11-26', 'shop', '000000000000000000000000000000a1', 1795651200000000001, ['samples', 'cpu'], ['count', 'nanoseconds']),
        ('2026-11-26', 'shop', '000000000000000000000000000000a2', 1795651200000000002, ['samples', 'cpu'], ['count', 'nanoseconds'])",
    "INSERT INTO profile_samples VALUES
        ('2026-11-26', 'shop', '000000000000000000000000000000a1', 0, 11, [3, 30000000], ['thread'], ['w1']),
        ('2026-11-26', 'shop', '000000000000000000000000000000a1', 1, 22, [1, 10000000], ['thread'], ['main']),
        ('2026-11-26', 'shop', '000000000000000000000000000000a1', 2, 11, [2, 20000000], ['thread'], ['w2']),
        ('2026-11-26', 'shop', '000000000000000000000000000000a2', 0, 22, [5, 50000000], [], [])",
];

/// A database of `variable`'s server holding [`OLD_SCHEMA`].
async fn old_database(variable: &str) -> Option<ClickHouseConfig> {
    let config = config(variable)?;
    let client = clickhouse::Client::default()
        .with_url(&config.url)
        .with_validation(false)
        .with_compression(clickhouse::Compression::None);
    client
        .query(&format!("CREATE DATABASE {}", config.database))
        .execute()
        .await
        .unwrap();
    let client = client.with_database(&config.database);
    for sql in OLD_SCHEMA {
        client.query(sql).execute().await.unwrap();
    }
    Some(config)
}

/// What the old store held reads back from the migrated one: every profile, its
/// download byte for byte (the original), its contents; the trigger events.
async fn assert_migrated(store: &ClickHouseStore) {
    use holmes_storage::{ProfileQuery, TriggerQuery};
    let listed = store
        .query_profiles(&ProfileQuery {
            service: "shop".to_owned(),
            event_id: None,
            kind: None,
            since_unix_nanos: 0,
            until_unix_nanos: u64::MAX / 2,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    let a1 = store
        .get_profile("shop", "000000000000000000000000000000a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a1.original.as_deref(), Some(&b"gza1"[..]));
    assert_eq!(a1.labels.get("phase").map(String::as_str), Some("trigger"));
    let c = a1.contents.unwrap();
    let samples: Vec<(Vec<String>, Vec<i64>)> = c
        .samples
        .iter()
        .map(|s| {
            (
                c.stack_frames(s.stack)
                    .into_iter()
                    .map(|f| format!("{}:{}:{}", f.function, f.file, f.line))
                    .collect(),
                s.values.clone(),
            )
        })
        .collect();
    let render = vec![
        "shop::render:src/r.rs:42".to_owned(),
        "shop::handle:src/h.rs:7".to_owned(),
        "main:src/main.rs:1".to_owned(),
    ];
    let handle = vec![
        "shop::handle:src/h.rs:9".to_owned(),
        "main:src/main.rs:1".to_owned(),
    ];
    assert_eq!(
        samples,
        vec![
            (render.clone(), vec![3, 30_000_000]),
            (handle.clone(), vec![1, 10_000_000]),
            (render, vec![2, 20_000_000]),
        ]
    );
    let a2 = store
        .get_profile("shop", "000000000000000000000000000000a2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a2.original.as_deref(), Some(&b"\0\xff\x1fa2"[..]));
    let b1 = store
        .get_profile("shop", "000000000000000000000000000000b1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b1.error.as_deref(),
        Some("refused by the collector: too deep")
    );
    assert_eq!(b1.contents, None);
    let triggers = store
        .query_triggers(&TriggerQuery {
            service: "shop".to_owned(),
            metric: None,
            since_unix_nanos: 0,
            until_unix_nanos: u64::MAX / 2,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].current, 91.5);
    // The control plane's tables, created after the storage model's: a pause records
    // and reads back.
    let pause = holmes_storage::PauseEdit {
        scope: "shop".to_owned(),
        until_unix_nanos: 2_000_000_000_000_000_000,
        reason: "deploy".to_owned(),
    };
    let by = holmes_storage::ChangedBy {
        author: "alice".to_owned(),
        note: String::new(),
        unix_nanos: 1_900_000_000_000_000_000,
    };
    let version = store.change_pause(&pause, &by).await.unwrap();
    assert_eq!(store.control_version().await.unwrap(), version);
    let pauses = store.pauses().await.unwrap();
    assert_eq!(pauses.len(), 1);
    assert_eq!(pauses[0].edit, pause);
}

macro_rules! migrations_on_server {
    ($module:ident, $variable:literal) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn an_old_store_is_migrated_without_losing_profiles() {
                let Some(config) = old_database($variable).await else {
                    return;
                };
                let store = ClickHouseStore::open(&config).await.unwrap();
                assert_migrated(&store).await;
                // Both profiles' stacks once.
                assert_eq!(store.stack_count("shop").await.unwrap(), 2);
            }

            #[tokio::test]
            async fn two_collectors_opening_an_old_store_at_once_migrate_it_once() {
                let Some(config) = old_database($variable).await else {
                    return;
                };
                let (a, b) = tokio::join!(
                    ClickHouseStore::open(&config),
                    ClickHouseStore::open(&config)
                );
                let (a, b) = (a.unwrap(), b.unwrap());
                assert_ne!(a.numbering_epoch(), b.numbering_epoch());
                assert_migrated(&a).await;
                assert_migrated(&b).await;
            }
        }
    };
}

migrations_on_server!(migrations_18_16, "HOLMES_TEST_CLICKHOUSE_URL");
migrations_on_server!(migrations_current, "HOLMES_TEST_CLICKHOUSE_CURRENT_URL");
