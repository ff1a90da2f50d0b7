//! Retention with a real collector: trigger events, metric samples, profiles,
//! incidents and instances older than `retention_days` disappear once the collector
//! runs, and so do the stacks only those profiles used; recent ones stay, whole. On
//! SQLite and on ClickHouse 18.16 and current (whose old day partitions are dropped).

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
use holmes_storage::testsuite::{cpu_contents, profile_id, record};
use holmes_storage::MetricPoint;
use holmes_storage::{
    IncidentRecord, IncidentStatus, InstanceInfo, Location, ProfileSample, Severity, StackFrame,
    Store, TriggerRecord,
};

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
    // An instance seen recently stays, one last seen long ago goes.
    for (instance, last_seen) in [("checkout-0", recent), ("checkout-gone", old)] {
        store
            .upsert_instance(&InstanceInfo {
                service: "checkout".to_owned(),
                instance_id: instance.to_owned(),
                host: "host".to_owned(),
                pid: 1,
                labels: Default::default(),
                agent_version: "0.1.0".to_owned(),
                started_at_unix_nanos: old,
                last_seen_unix_nanos: last_seen,
            })
            .await
            .unwrap();
    }
    // Profiles: the old one with a stack of its own besides those it shares with the
    // recent one.
    let mut only_old = cpu_contents("b1", 2);
    only_old
        .locations
        .push(Location::Symbolic(vec![StackFrame::new(
            "checkout::legacy",
            "src/legacy.rs",
            3,
        )]));
    only_old.stacks.push(vec![5, 2]);
    only_old.samples.push(ProfileSample {
        stack: 3,
        values: vec![1, 10_000_000],
        labels: 1,
    });
    store
        .insert_profile(&record(
            "checkout",
            "checkout-0",
            &profile_id(1),
            "old",
            old,
            Some(only_old),
        ))
        .await
        .unwrap();
    store
        .insert_profile(&record(
            "checkout",
            "checkout-0",
            &profile_id(2),
            "recent",
            recent,
            Some(cpu_contents("b1", 3)),
        ))
        .await
        .unwrap();
    assert_eq!(store.stack_count("checkout").await.unwrap(), 4);
    let incident = |n: u64, at: u64| IncidentRecord {
        incident_id: profile_id(100 + n),
        service: "checkout".to_owned(),
        metric: Metric::CpuPercent,
        severity: Severity::Instance,
        status: IncidentStatus::Resolved,
        first_event_unix_nanos: at,
        last_event_unix_nanos: at,
        resolved_unix_nanos: Some(at),
        instances: vec!["checkout-0".to_owned()],
        event_ids: vec![format!("ev-{n}")],
        related: Vec::new(),
        skipped_captures: 0,
        version: 1,
    };
    store.upsert_incident(&incident(1, old)).await.unwrap();
    store.upsert_incident(&incident(2, recent)).await.unwrap();
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

    let server = Server::start_with_store(&config, Arc::clone(&store))
        .await
        .unwrap();
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
    let profiles = api.profiles("checkout", "30d").await.unwrap().profiles;
    let ids: Vec<&str> = profiles.iter().map(|p| p.profile_id.as_str()).collect();
    assert_eq!(ids, [profile_id(2).as_str()]);
    // The recent profile is whole: its stacks (one shared with the old one) stay.
    let top = api.top("checkout", &profile_id(2), None, 10).await.unwrap();
    assert_eq!((top.samples, top.stacks), (4, 3));
    // What ClickHouse deletes by mutation goes a moment later.
    eventually(
        Duration::from_secs(60),
        "the old incident, instance and the old profile's own stack removed",
        || async {
            let incidents = api.incidents(Some("checkout"), "30d", None).await.ok()?;
            let instances = api.instances("checkout").await.ok()?;
            let stacks = store.stack_count("checkout").await.ok()?;
            (incidents.incidents.len() == 1 && instances.len() == 1 && stacks == 3).then_some(())
        },
    )
    .await;
    let incidents = api.incidents(Some("checkout"), "30d", None).await.unwrap();
    assert_eq!(incidents.incidents[0].incident_id, profile_id(102));
    assert_eq!(
        api.instances("checkout").await.unwrap()[0].instance,
        "checkout-0"
    );
    server.shutdown().await;
}

crate::support::on_every_server!(old_days_are_removed);
