//! The conformance suite every [`Store`] backend must pass.
//!
//! A backend's test file calls [`store_conformance_tests!`](crate::store_conformance_tests)
//! with an async expression that yields a fresh, empty store; each case becomes its own
//! test. The cases assert what a user of the collector would see.

use std::collections::BTreeMap;

use std::time::Duration;

use holmes_proto::{Metric, ProfileKind, RuleConfig, Sample, TriggerReason};

use crate::{
    IncidentQuery, IncidentRecord, IncidentStatus, InstanceInfo, MetricPoint, MetricQuery,
    ProfileContents, ProfileMeta, ProfileQuery, ProfileRecord, Severity, Stack, StackFrame,
    StackSample, Store, TriggerQuery, TriggerRecord,
};

mod control;
pub use control::*;

const SEC: u64 = 1_000_000_000;
/// 2026-11-26T00:00:00Z, a realistic timestamp.
const T0: u64 = 1_795_651_200 * SEC;

fn instance(service: &str, id: &str, last_seen: u64) -> InstanceInfo {
    InstanceInfo {
        service: service.to_owned(),
        instance_id: id.to_owned(),
        host: format!("host-{id}"),
        pid: 4242,
        labels: [
            ("region".to_owned(), "eu-west-1".to_owned()),
            ("version".to_owned(), "1.2.3 (rc: 4)".to_owned()),
        ]
        .into(),
        agent_version: "0.1.0".to_owned(),
        started_at_unix_nanos: T0 - 60 * SEC,
        last_seen_unix_nanos: last_seen,
    }
}

fn point(service: &str, id: &str, metric: Metric, ts: u64, value: f64) -> MetricPoint {
    MetricPoint {
        service: service.to_owned(),
        instance_id: id.to_owned(),
        metric,
        unix_nanos: ts,
        value,
    }
}

fn query(service: &str, metric: Metric, since: u64, until: u64) -> MetricQuery {
    MetricQuery {
        service: service.to_owned(),
        metric,
        since_unix_nanos: since,
        until_unix_nanos: until,
        limit: 10_000,
    }
}

/// A new store knows no services.
pub async fn empty_store_lists_nothing(store: impl Store) {
    assert!(store.list_services(0).await.unwrap().is_empty());
    assert!(store.list_instances("checkout").await.unwrap().is_empty());
    let points = store
        .query_metrics(&query("checkout", Metric::CpuPercent, 0, u64::MAX / 2))
        .await
        .unwrap();
    assert!(points.is_empty());
    let triggers = store
        .query_triggers(&trigger_query("checkout", None, 0, u64::MAX / 2))
        .await
        .unwrap();
    assert!(triggers.is_empty());
    let profiles = store
        .query_profiles(&profile_query("checkout", 0, u64::MAX / 2))
        .await
        .unwrap();
    assert!(profiles.is_empty());
    assert_eq!(store.get_profile(&profile_id(1)).await.unwrap(), None);
}

/// Instances come back exactly as written, grouped into services.
pub async fn instances_roundtrip_and_group_into_services(store: impl Store) {
    let a = instance("checkout", "checkout-a", T0 + 5 * SEC);
    let b = instance("checkout", "checkout-b", T0 + 7 * SEC);
    let mut c = instance("cart", "cart-0", T0 + 3 * SEC);
    c.labels = BTreeMap::new();
    for i in [&b, &c, &a] {
        store.upsert_instance(i).await.unwrap();
    }
    let services = store.list_services(0).await.unwrap();
    let summary: Vec<(&str, u64, u64)> = services
        .iter()
        .map(|s| (s.service.as_str(), s.instances, s.last_seen_unix_nanos))
        .collect();
    assert_eq!(
        summary,
        vec![("cart", 1, T0 + 3 * SEC), ("checkout", 2, T0 + 7 * SEC)]
    );
    assert_eq!(store.list_instances("checkout").await.unwrap(), vec![a, b]);
    assert_eq!(store.list_instances("cart").await.unwrap(), vec![c]);
}

/// A newer sighting replaces an instance's details; an older one changes nothing.
pub async fn upsert_keeps_the_newest_sighting(store: impl Store) {
    let first = instance("checkout", "checkout-a", T0 + 10 * SEC);
    store.upsert_instance(&first).await.unwrap();
    let mut stale = first.clone();
    stale.host = "stale-host".to_owned();
    stale.last_seen_unix_nanos = T0 + 5 * SEC;
    store.upsert_instance(&stale).await.unwrap();
    assert_eq!(
        store.list_instances("checkout").await.unwrap(),
        vec![first.clone()]
    );
    let mut newer = first.clone();
    newer.pid = 777;
    newer.last_seen_unix_nanos = T0 + 20 * SEC;
    store.upsert_instance(&newer).await.unwrap();
    assert_eq!(store.list_instances("checkout").await.unwrap(), vec![newer]);
    let services = store.list_services(0).await.unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].instances, 1);
}

/// Only instances seen since the cut-off count as active; the service stays listed.
pub async fn services_count_only_active_instances(store: impl Store) {
    store
        .upsert_instance(&instance("checkout", "old", T0))
        .await
        .unwrap();
    store
        .upsert_instance(&instance("checkout", "live", T0 + 600 * SEC))
        .await
        .unwrap();
    store
        .upsert_instance(&instance("gone", "x", T0))
        .await
        .unwrap();
    let services = store.list_services(T0 + 300 * SEC).await.unwrap();
    let summary: Vec<(&str, u64)> = services
        .iter()
        .map(|s| (s.service.as_str(), s.instances))
        .collect();
    assert_eq!(summary, vec![("checkout", 1), ("gone", 0)]);
    assert_eq!(services[1].last_seen_unix_nanos, T0);
}

/// Metric queries return one service's one metric in `[since, until)`, by instance and time.
pub async fn metrics_filter_by_service_metric_and_range(store: impl Store) {
    let mut points = Vec::new();
    for s in 0..10u64 {
        points.push(point(
            "checkout",
            "b",
            Metric::CpuPercent,
            T0 + s * SEC,
            s as f64,
        ));
        points.push(point(
            "checkout",
            "a",
            Metric::CpuPercent,
            T0 + s * SEC,
            100.0 + s as f64,
        ));
        points.push(point("checkout", "a", Metric::RssBytes, T0 + s * SEC, 1e9));
        points.push(point("cart", "a", Metric::CpuPercent, T0 + s * SEC, 50.0));
    }
    store.insert_metrics(&points).await.unwrap();
    let got = store
        .query_metrics(&query(
            "checkout",
            Metric::CpuPercent,
            T0 + 2 * SEC,
            T0 + 5 * SEC,
        ))
        .await
        .unwrap();
    let expected = vec![
        point("checkout", "a", Metric::CpuPercent, T0 + 2 * SEC, 102.0),
        point("checkout", "a", Metric::CpuPercent, T0 + 3 * SEC, 103.0),
        point("checkout", "a", Metric::CpuPercent, T0 + 4 * SEC, 104.0),
        point("checkout", "b", Metric::CpuPercent, T0 + 2 * SEC, 2.0),
        point("checkout", "b", Metric::CpuPercent, T0 + 3 * SEC, 3.0),
        point("checkout", "b", Metric::CpuPercent, T0 + 4 * SEC, 4.0),
    ];
    assert_eq!(got, expected);
    let mut limited = query("checkout", Metric::RssBytes, T0, T0 + 100 * SEC);
    limited.limit = 4;
    assert_eq!(store.query_metrics(&limited).await.unwrap().len(), 4);
    let none = store
        .query_metrics(&query("checkout", Metric::Threads, T0, T0 + 100 * SEC))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// A point written twice (an agent resending after a lost ack) is stored once.
pub async fn resent_points_are_stored_once(store: impl Store) {
    let points: Vec<MetricPoint> = (0..5u64)
        .map(|s| point("checkout", "a", Metric::CpuPercent, T0 + s * SEC, s as f64))
        .collect();
    store.insert_metrics(&points).await.unwrap();
    store.insert_metrics(&points[2..]).await.unwrap();
    let got = store
        .query_metrics(&query("checkout", Metric::CpuPercent, T0, T0 + 10 * SEC))
        .await
        .unwrap();
    assert_eq!(got, points);
}

/// Values that look like SQL reach the store as data, not as statements.
pub async fn hostile_values_are_data(store: impl Store) {
    let mut i = instance("checkout", "a", T0);
    i.host = "'); DROP TABLE instances; --".to_owned();
    i.labels
        .insert("note".to_owned(), "\\' \" ? ?fields \n\t".to_owned());
    store.upsert_instance(&i).await.unwrap();
    assert_eq!(store.list_instances("checkout").await.unwrap(), vec![i]);
    let got = store
        .query_metrics(&query("x' OR '1'='1", Metric::CpuPercent, 0, u64::MAX / 2))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(store.list_services(0).await.unwrap().len(), 1);
    let mut t = trigger("checkout", "a", "'); DROP TABLE triggers; --", T0);
    t.request_id = Some("? ?fields \\' \"".to_owned());
    store
        .insert_triggers(std::slice::from_ref(&t))
        .await
        .unwrap();
    let got = store
        .query_triggers(&trigger_query("checkout", None, T0, T0 + SEC))
        .await
        .unwrap();
    assert_eq!(got, vec![t]);
    let none = store
        .query_triggers(&trigger_query("x' OR '1'='1", None, 0, u64::MAX / 2))
        .await
        .unwrap();
    assert!(none.is_empty());
}

fn cpu_rule() -> RuleConfig {
    RuleConfig {
        metric: Metric::CpuPercent,
        enabled: true,
        min: 10.0,
        diff: 25.0,
        abs: 70.0,
        max: 0.0,
        cooldown: Duration::from_millis(60_250),
        window: 10,
    }
}

/// A CPU trigger of `instance` with a small window and its rule.
fn trigger(service: &str, instance: &str, event_id: &str, ts: u64) -> TriggerRecord {
    TriggerRecord {
        service: service.to_owned(),
        instance_id: instance.to_owned(),
        event_id: event_id.to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 91.25,
        window: (0..3u64)
            .map(|i| Sample {
                unix_nanos: ts - (2 - i) * SEC,
                value: 20.5 + 30.0 * i as f64,
            })
            .collect(),
        rule: Some(cpu_rule()),
        unix_nanos: ts,
        request_id: None,
    }
}

fn trigger_query(service: &str, metric: Option<Metric>, since: u64, until: u64) -> TriggerQuery {
    TriggerQuery {
        service: service.to_owned(),
        metric,
        since_unix_nanos: since,
        until_unix_nanos: until,
        limit: 10_000,
    }
}

/// Rust prints floats with the shortest text that parses back to the same bits (and
/// `-0.0` as such), so equal `Debug` text means equal records, NaN included.
fn exact(triggers: &[TriggerRecord]) -> String {
    format!("{triggers:#?}")
}

/// Trigger events come back exactly as written: every field, with or without a metric,
/// rule or request id, and awkward numbers bit for bit.
pub async fn triggers_roundtrip_exactly(store: impl Store) {
    let mut fired = trigger("checkout", "checkout-a", "ev-1", T0 + 10 * SEC);
    fired.reason = TriggerReason::Diff;
    fired.current = 0.1 + 0.2;
    fired.window = vec![
        Sample {
            unix_nanos: T0 + 7 * SEC + 1,
            value: 1e-300,
        },
        Sample {
            unix_nanos: T0 + 8 * SEC,
            value: f64::MAX,
        },
        Sample {
            unix_nanos: T0 + 9 * SEC,
            value: -0.0,
        },
        Sample {
            unix_nanos: T0 + 10 * SEC,
            value: 0.1 + 0.2,
        },
    ];
    let mut rule = cpu_rule();
    rule.metric = Metric::Threads;
    rule.enabled = false;
    rule.min = 5e-324;
    rule.diff = 33.3;
    rule.abs = f64::INFINITY;
    rule.max = 99.999;
    rule.window = 1_000;
    fired.rule = Some(rule);
    let requested = TriggerRecord {
        service: "checkout".to_owned(),
        instance_id: "checkout-b".to_owned(),
        event_id: "ev-2".to_owned(),
        metric: None,
        reason: TriggerReason::Requested,
        current: 0.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: T0 + 20 * SEC,
        request_id: Some("req-7".to_owned()),
    };
    let mut odd = trigger("checkout", "checkout-a", "ev-3", T0 + 30 * SEC);
    odd.current = -0.0;
    odd.window[0].value = f64::NAN;
    odd.window[1].value = f64::NEG_INFINITY;
    odd.request_id = Some(String::new());
    if let Some(rule) = odd.rule.as_mut() {
        rule.max = f64::NAN;
    }
    store
        .insert_triggers(&[odd.clone(), requested.clone(), fired.clone()])
        .await
        .unwrap();
    let got = store
        .query_triggers(&trigger_query("checkout", None, T0, T0 + 60 * SEC))
        .await
        .unwrap();
    odd.request_id = None;
    assert_eq!(exact(&got), exact(&[fired, requested, odd]));
    assert_eq!(got[2].current.to_bits(), (-0.0f64).to_bits());
    assert!(got[2].window[0].value.is_nan());
}

/// A trigger written again (an agent resending after a lost ack) is stored once.
pub async fn resent_triggers_are_stored_once(store: impl Store) {
    let a = trigger("checkout", "checkout-a", "ev-a", T0 + SEC);
    let b = trigger("checkout", "checkout-a", "ev-b", T0 + 2 * SEC);
    let c = trigger("checkout", "checkout-a", "ev-c", T0 + 3 * SEC);
    store
        .insert_triggers(&[a.clone(), b.clone()])
        .await
        .unwrap();
    store
        .insert_triggers(&[b.clone(), c.clone(), c.clone()])
        .await
        .unwrap();
    store
        .insert_triggers(std::slice::from_ref(&a))
        .await
        .unwrap();
    let got = store
        .query_triggers(&trigger_query("checkout", None, T0, T0 + 10 * SEC))
        .await
        .unwrap();
    assert_eq!(got, vec![a, b, c]);
}

/// Trigger queries return one service's events in `[since, until)`, of one metric if
/// asked, at most `limit`.
pub async fn triggers_filter_by_service_metric_and_range(store: impl Store) {
    let mut all = Vec::new();
    for s in 0..10u64 {
        let mut t = trigger("checkout", "checkout-a", &format!("cpu-{s}"), T0 + s * SEC);
        t.current = s as f64;
        all.push(t);
        let mut mem = trigger("checkout", "checkout-b", &format!("mem-{s}"), T0 + s * SEC);
        mem.metric = Some(Metric::MemoryPercent);
        all.push(mem);
        all.push(trigger("cart", "cart-0", &format!("cpu-{s}"), T0 + s * SEC));
    }
    let mut requested = trigger("checkout", "checkout-a", "req", T0 + 4 * SEC);
    requested.metric = None;
    requested.reason = TriggerReason::Requested;
    requested.rule = None;
    all.push(requested.clone());
    store.insert_triggers(&all).await.unwrap();

    let cpu = store
        .query_triggers(&trigger_query(
            "checkout",
            Some(Metric::CpuPercent),
            T0 + 2 * SEC,
            T0 + 5 * SEC,
        ))
        .await
        .unwrap();
    let ids: Vec<&str> = cpu.iter().map(|t| t.event_id.as_str()).collect();
    assert_eq!(ids, ["cpu-2", "cpu-3", "cpu-4"]);
    assert!(cpu.iter().all(|t| t.service == "checkout"));
    assert_eq!(cpu[1].current, 3.0);

    let any = store
        .query_triggers(&trigger_query("checkout", None, T0 + 4 * SEC, T0 + 5 * SEC))
        .await
        .unwrap();
    let ids: Vec<&str> = any.iter().map(|t| t.event_id.as_str()).collect();
    assert_eq!(ids, ["cpu-4", "mem-4", "req"]);
    assert_eq!(any[2], requested);

    let mut limited = trigger_query("checkout", None, T0, T0 + 100 * SEC);
    limited.limit = 4;
    let first = store.query_triggers(&limited).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|t| t.event_id.as_str()).collect();
    assert_eq!(ids, ["cpu-0", "mem-0", "cpu-1", "mem-1"]);

    let threads = store
        .query_triggers(&trigger_query(
            "checkout",
            Some(Metric::Threads),
            T0,
            T0 + 100 * SEC,
        ))
        .await
        .unwrap();
    assert!(threads.is_empty());
    let cart = store
        .query_triggers(&trigger_query("cart", None, T0, T0 + 100 * SEC))
        .await
        .unwrap();
    assert_eq!(cart.len(), 10);
    let empty_range = store
        .query_triggers(&trigger_query("checkout", None, T0 + 3 * SEC, T0 + 3 * SEC))
        .await
        .unwrap();
    assert!(empty_range.is_empty());
}

/// Trigger events are sorted by time, then by event id, whatever order they came in.
pub async fn triggers_sort_by_time_then_event_id(store: impl Store) {
    let late = trigger("checkout", "checkout-a", "a-late", T0 + 5 * SEC);
    let z = trigger("checkout", "checkout-a", "z", T0 + 2 * SEC);
    let m = trigger("checkout", "checkout-c", "m", T0 + 2 * SEC);
    let b = trigger("checkout", "checkout-b", "b", T0 + 2 * SEC);
    let early = trigger("checkout", "checkout-z", "zz-early", T0 + SEC);
    store
        .insert_triggers(&[late.clone(), z.clone()])
        .await
        .unwrap();
    store
        .insert_triggers(&[m.clone(), b.clone(), early.clone()])
        .await
        .unwrap();
    let got = store
        .query_triggers(&trigger_query("checkout", None, T0, T0 + 10 * SEC))
        .await
        .unwrap();
    assert_eq!(got, vec![early, b, m, z, late]);
}

/// A 32-hex-digit profile id, as agents make them.
fn profile_id(n: u64) -> String {
    format!("{:016x}{n:016x}", 0x5eed_u64)
}

/// A small CPU profile of `instance` for event `event_id`, started at `started`.
fn profile(service: &str, instance: &str, id: &str, event_id: &str, started: u64) -> ProfileRecord {
    ProfileRecord {
        profile_id: id.to_owned(),
        event_id: event_id.to_owned(),
        service: service.to_owned(),
        instance_id: instance.to_owned(),
        kind: ProfileKind::Cpu,
        started_unix_nanos: started,
        duration: Duration::from_secs(10),
        labels: BTreeMap::new(),
        error: None,
        data: format!("\x1f\u{8b} profile {id}").into_bytes(),
    }
}

fn profile_query(service: &str, since: u64, until: u64) -> ProfileQuery {
    ProfileQuery {
        service: service.to_owned(),
        event_id: None,
        kind: None,
        since_unix_nanos: since,
        until_unix_nanos: until,
        limit: 10_000,
    }
}

/// Profiles come back exactly as written: 3 MiB holding every byte value in every
/// position, an empty profile, and a failed capture without data; listed without their
/// bytes but with their size.
pub async fn profiles_roundtrip_exactly(store: impl Store) {
    let mut big = profile(
        "checkout",
        "checkout-a",
        &profile_id(1),
        "ev-1",
        T0 + SEC + 7,
    );
    big.kind = ProfileKind::Heap;
    big.duration = Duration::new(30, 123_456_789);
    big.labels = [
        ("phase".to_owned(), "pre-trigger".to_owned()),
        (
            "note".to_owned(),
            "'); DROP TABLE profiles; -- ? ?fields \\ \" \n\t\0".to_owned(),
        ),
    ]
    .into();
    // 3 MiB: every byte value, shifted by one per 256-byte block so that no value keeps
    // its offset, with NUL runs and invalid UTF-8 along the way.
    big.data = (0..3 * 1024 * 1024usize)
        .map(|i| (i + i / 256) as u8)
        .collect();
    let mut failed = profile(
        "checkout",
        "checkout-b",
        &profile_id(2),
        "ev-1",
        T0 + 2 * SEC,
    );
    failed.kind = ProfileKind::Threads;
    failed.duration = Duration::ZERO;
    failed.error = Some("cannot walk the stack of thread 7: permission denied".to_owned());
    failed.data = Vec::new();
    let mut empty = profile(
        "checkout",
        "checkout-a",
        &profile_id(3),
        "ev-2",
        T0 + 3 * SEC,
    );
    empty.kind = ProfileKind::Tasks;
    empty.data = Vec::new();
    empty.error = Some(String::new());
    for p in [&empty, &failed, &big] {
        store.insert_profile(p).await.unwrap();
    }
    empty.error = None;

    for p in [&big, &failed, &empty] {
        let got = store.get_profile(&p.profile_id).await.unwrap();
        let got = got.unwrap_or_else(|| panic!("profile {} is stored", p.profile_id));
        // Compared apart so that a failure does not print megabytes.
        assert!(
            got.data == p.data,
            "the bytes of {} come back exactly",
            p.profile_id
        );
        assert_eq!(got.meta(), p.meta());
    }
    let listed = store
        .query_profiles(&profile_query("checkout", T0, T0 + 60 * SEC))
        .await
        .unwrap();
    assert_eq!(listed, vec![big.meta(), failed.meta(), empty.meta()]);
    assert_eq!(listed[0].size_bytes, 3 * 1024 * 1024);
    assert_eq!(listed[1].size_bytes, 0);
}

/// A profile written again (an agent resending after a lost ack) is stored once.
pub async fn resent_profiles_are_stored_once(store: impl Store) {
    let a = profile("checkout", "checkout-a", &profile_id(1), "ev-1", T0 + SEC);
    let b = profile("checkout", "checkout-a", &profile_id(2), "ev-1", T0 + SEC);
    for p in [&a, &b, &a, &a, &b] {
        store.insert_profile(p).await.unwrap();
    }
    let listed = store
        .query_profiles(&profile_query("checkout", T0, T0 + 10 * SEC))
        .await
        .unwrap();
    assert_eq!(listed, vec![a.meta(), b.meta()]);
    assert_eq!(store.get_profile(&a.profile_id).await.unwrap(), Some(a));
}

/// Profile queries return one service's profiles started in `[since, until)`, of one
/// event and kind if asked, by start time then profile id, at most `limit`; an unknown
/// id finds nothing.
pub async fn profiles_filter_by_service_event_kind_and_range(store: impl Store) {
    let mut all: Vec<ProfileRecord> = Vec::new();
    for s in 0..6u64 {
        // Two profiles per second; ids chosen so that id order differs from insert order.
        let mut cpu = profile(
            "checkout",
            "checkout-a",
            &profile_id(100 + s),
            &format!("ev-{}", s / 2),
            T0 + s * SEC,
        );
        cpu.kind = ProfileKind::Cpu;
        let mut heap = profile(
            "checkout",
            "checkout-b",
            &profile_id(50 + s),
            &format!("ev-{}", s / 2),
            T0 + s * SEC,
        );
        heap.kind = ProfileKind::Heap;
        all.push(cpu);
        all.push(heap);
        all.push(profile(
            "cart",
            "cart-0",
            &profile_id(200 + s),
            &format!("ev-{}", s / 2),
            T0 + s * SEC,
        ));
    }
    for p in all.iter().rev() {
        store.insert_profile(p).await.unwrap();
    }
    let ids = |found: &[ProfileMeta]| -> Vec<String> {
        found.iter().map(|p| p.profile_id.clone()).collect()
    };

    let range = store
        .query_profiles(&profile_query("checkout", T0 + 2 * SEC, T0 + 4 * SEC))
        .await
        .unwrap();
    assert_eq!(
        ids(&range),
        [
            profile_id(52),
            profile_id(102),
            profile_id(53),
            profile_id(103)
        ]
    );
    assert!(range.iter().all(|p| p.service == "checkout"));

    let mut by_event = profile_query("checkout", T0, T0 + 100 * SEC);
    by_event.event_id = Some("ev-1".to_owned());
    let found = store.query_profiles(&by_event).await.unwrap();
    assert_eq!(
        ids(&found),
        [
            profile_id(52),
            profile_id(102),
            profile_id(53),
            profile_id(103)
        ]
    );

    by_event.kind = Some(ProfileKind::Heap);
    let found = store.query_profiles(&by_event).await.unwrap();
    assert_eq!(ids(&found), [profile_id(52), profile_id(53)]);

    let mut by_kind = profile_query("checkout", T0, T0 + 100 * SEC);
    by_kind.kind = Some(ProfileKind::Cpu);
    by_kind.limit = 4;
    let found = store.query_profiles(&by_kind).await.unwrap();
    assert_eq!(
        ids(&found),
        [
            profile_id(100),
            profile_id(101),
            profile_id(102),
            profile_id(103)
        ]
    );
    by_kind.kind = Some(ProfileKind::Threads);
    assert!(store.query_profiles(&by_kind).await.unwrap().is_empty());

    let mut limited = profile_query("checkout", T0, T0 + 100 * SEC);
    limited.limit = 3;
    let found = store.query_profiles(&limited).await.unwrap();
    assert_eq!(
        ids(&found),
        [profile_id(50), profile_id(100), profile_id(51)]
    );

    let mut unknown_event = profile_query("checkout", T0, T0 + 100 * SEC);
    unknown_event.event_id = Some("x' OR '1'='1".to_owned());
    assert!(store
        .query_profiles(&unknown_event)
        .await
        .unwrap()
        .is_empty());
    let cart = store
        .query_profiles(&profile_query("cart", T0, T0 + 100 * SEC))
        .await
        .unwrap();
    assert_eq!(cart.len(), 6);
    let empty_range = store
        .query_profiles(&profile_query("checkout", T0 + 3 * SEC, T0 + 3 * SEC))
        .await
        .unwrap();
    assert!(empty_range.is_empty());

    // By id alone, whichever service it belongs to.
    let cart_profile = store.get_profile(&profile_id(203)).await.unwrap();
    assert_eq!(
        cart_profile.as_ref(),
        all.iter().find(|p| p.profile_id == profile_id(203))
    );
    assert_eq!(store.get_profile(&profile_id(999)).await.unwrap(), None);
    assert_eq!(store.get_profile("").await.unwrap(), None);
    assert_eq!(store.get_profile("x' OR '1'='1").await.unwrap(), None);
}

fn frame(function: &str, file: &str, line: u32) -> StackFrame {
    StackFrame {
        function: function.to_owned(),
        file: file.to_owned(),
        line,
    }
}

/// A CPU profile of `service` whose samples use stacks `a`, `b`, `a` (labelled by
/// thread), so stack `a` is shared by two samples.
fn contents(service: &str, id: &str, started: u64, a: &Stack, b: &Stack) -> ProfileContents {
    let sample = |stack: &Stack, n: i64, thread: &str| StackSample {
        stack_id: stack.stack_id,
        values: vec![n, n * 10_000_000],
        labels: vec![("thread".to_owned(), thread.to_owned())],
    };
    ProfileContents {
        profile_id: id.to_owned(),
        service: service.to_owned(),
        started_unix_nanos: started,
        sample_types: vec![
            ("samples".to_owned(), "count".to_owned()),
            ("cpu".to_owned(), "nanoseconds".to_owned()),
        ],
        stacks: vec![a.clone(), b.clone()],
        samples: vec![
            sample(a, 7, "worker-1"),
            sample(b, 1, "main"),
            sample(a, 3, "worker-2"),
        ],
    }
}

fn stacks_ab() -> (Stack, Stack) {
    let a = Stack::new(vec![
        frame("shop::render_price_table", "src/render.rs", 42),
        frame("shop::handle", "src/main.rs", 7),
        frame("std::rt::lang_start", "", 0),
    ]);
    let b = Stack::new(vec![
        frame(
            "core::ptr::drop_in_place<alloc::vec::Vec<u8>>",
            "/rustc/x/ptr.rs",
            523,
        ),
        frame("shop::handle", "src/main.rs", 9),
    ]);
    (a, b)
}

/// A profile's normalized contents read back exactly: sample types, samples in order
/// with values and labels, each stack once with all its frames.
pub async fn profile_contents_roundtrip_exactly(store: impl Store) {
    let (a, b) = stacks_ab();
    let c = contents("checkout", &profile_id(1), T0, &a, &b);
    store.insert_profile_contents(&c).await.unwrap();
    assert_eq!(
        store.get_profile_contents(&profile_id(1)).await.unwrap(),
        Some(c)
    );
    assert_eq!(
        store.get_profile_contents(&profile_id(2)).await.unwrap(),
        None
    );
    assert_eq!(
        store.get_profile_contents("x' OR '1'='1").await.unwrap(),
        None
    );
    // Names are data, whatever their characters; an empty profile is a profile.
    let odd = Stack::new(vec![frame(
        "<T as Tr>::f'\\\"\n\t\u{0}",
        "c:\\src\\ä.rs",
        u32::MAX,
    )]);
    let mut hostile = contents("checkout", &profile_id(3), T0 + SEC, &odd, &odd);
    hostile.stacks = vec![odd.clone()];
    hostile.samples[0].values = vec![i64::MIN, i64::MAX];
    hostile.samples[0]
        .labels
        .push(("thread".to_owned(), String::new()));
    store.insert_profile_contents(&hostile).await.unwrap();
    assert_eq!(
        store.get_profile_contents(&profile_id(3)).await.unwrap(),
        Some(hostile)
    );
    let empty = ProfileContents {
        profile_id: profile_id(4),
        service: "checkout".to_owned(),
        started_unix_nanos: T0,
        sample_types: vec![("threads".to_owned(), "count".to_owned())],
        stacks: Vec::new(),
        samples: Vec::new(),
    };
    store.insert_profile_contents(&empty).await.unwrap();
    assert_eq!(
        store.get_profile_contents(&profile_id(4)).await.unwrap(),
        Some(empty)
    );
}

/// Stacks shared by profiles of several services and instances, and contents resent
/// after a lost ack, read back as stored once: each profile has exactly its samples.
pub async fn shared_stacks_and_resent_contents_are_stored_once(store: impl Store) {
    let (a, b) = stacks_ab();
    let c = Stack::new(vec![frame("cart::add", "src/cart.rs", 1)]);
    let first = contents("checkout", &profile_id(1), T0, &a, &b);
    let second = contents("checkout", &profile_id(2), T0 + 86_400 * SEC, &a, &c);
    let third = contents("cart", &profile_id(3), T0 + 5 * SEC, &c, &b);
    for p in [&first, &second, &third, &first, &second] {
        store.insert_profile_contents(p).await.unwrap();
    }
    for p in [&first, &second, &third] {
        assert_eq!(
            store
                .get_profile_contents(&p.profile_id)
                .await
                .unwrap()
                .as_ref(),
            Some(p)
        );
    }
}

/// Contents may leave out stacks stored with earlier profiles (the ingest does so for
/// those [`Store::has_stack`] knows): they read back with every stack their samples
/// use. A store never claims a stack it has not written.
pub async fn contents_may_leave_out_stacks_stored_before(store: impl Store) {
    let (a, b) = stacks_ab();
    let c = Stack::new(vec![frame("cart::add", "src/cart.rs", 1)]);
    assert!(!store.has_stack(a.stack_id));
    store
        .insert_profile_contents(&contents("checkout", &profile_id(1), T0, &a, &b))
        .await
        .unwrap();
    assert!(!store.has_stack(c.stack_id));
    let full = contents("checkout", &profile_id(2), T0 + SEC, &a, &c);
    let mut lean = full.clone();
    lean.stacks.retain(|s| s.stack_id != a.stack_id);
    store.insert_profile_contents(&lean).await.unwrap();
    assert_eq!(
        store.get_profile_contents(&profile_id(2)).await.unwrap(),
        Some(full)
    );
}

/// Retention: the days before the cutoff's day go — metric samples, trigger events,
/// profiles with their contents — and what is at or after the cutoff stays.
pub async fn expiry_removes_old_days_and_keeps_the_rest(store: impl Store) {
    let cutoff = T0 + 10 * 86_400 * SEC + 3_600 * SEC;
    let old = cutoff - 3 * 86_400 * SEC;
    let new = cutoff + SEC;
    store
        .insert_metrics(&[
            point("checkout", "a", Metric::CpuPercent, old, 1.0),
            point("checkout", "a", Metric::CpuPercent, new, 2.0),
        ])
        .await
        .unwrap();
    store
        .insert_triggers(&[
            trigger("checkout", "a", "old-event", old),
            trigger("checkout", "a", "new-event", new),
        ])
        .await
        .unwrap();
    let (a, b) = stacks_ab();
    for (n, at) in [(1, old), (2, new)] {
        store
            .insert_profile_contents(&contents("checkout", &profile_id(n), at, &a, &b))
            .await
            .unwrap();
        store
            .insert_profile(&profile("checkout", "a", &profile_id(n), "new-event", at))
            .await
            .unwrap();
    }
    store.expire_before(cutoff).await.unwrap();

    let points = store
        .query_metrics(&query("checkout", Metric::CpuPercent, 0, u64::MAX / 2))
        .await
        .unwrap();
    assert_eq!(
        points.iter().map(|p| p.unix_nanos).collect::<Vec<_>>(),
        vec![new]
    );
    let triggers = store
        .query_triggers(&trigger_query("checkout", None, 0, u64::MAX / 2))
        .await
        .unwrap();
    assert_eq!(
        triggers
            .iter()
            .map(|t| t.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["new-event"]
    );
    let profiles = store
        .query_profiles(&profile_query("checkout", 0, u64::MAX / 2))
        .await
        .unwrap();
    assert_eq!(
        profiles
            .iter()
            .map(|p| p.profile_id.clone())
            .collect::<Vec<_>>(),
        vec![profile_id(2)]
    );
    assert_eq!(store.get_profile(&profile_id(1)).await.unwrap(), None);
    assert_eq!(
        store.get_profile_contents(&profile_id(1)).await.unwrap(),
        None
    );
    assert!(store.get_profile(&profile_id(2)).await.unwrap().is_some());
    let kept = store
        .get_profile_contents(&profile_id(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.samples.len(), 3);
    // Running it again finds nothing more to do.
    store.expire_before(cutoff).await.unwrap();
    assert_eq!(
        store
            .query_profiles(&profile_query("checkout", 0, u64::MAX / 2))
            .await
            .unwrap()
            .len(),
        1
    );
}

fn incident(
    service: &str,
    n: u64,
    first: u64,
    status: IncidentStatus,
    version: u64,
) -> IncidentRecord {
    IncidentRecord {
        incident_id: profile_id(n),
        service: service.to_owned(),
        metric: Metric::CpuPercent,
        severity: Severity::Instance,
        status,
        first_event_unix_nanos: first,
        last_event_unix_nanos: first + 30 * SEC,
        resolved_unix_nanos: (status == IncidentStatus::Resolved).then_some(first + 330 * SEC),
        instances: vec![format!("{service}-0")],
        event_ids: vec![format!("ev-{n}-a")],
        related: Vec::new(),
        version,
    }
}

fn incident_query(service: Option<&str>, status: Option<IncidentStatus>) -> IncidentQuery {
    IncidentQuery {
        service: service.map(str::to_owned),
        status,
        since_unix_nanos: 0,
        until_unix_nanos: u64::MAX / 2,
        limit: 100,
    }
}

/// Incidents: every field reads back; a higher version replaces a lower one, never the
/// other way round, and filters see only the newest version (an incident that resolved
/// is not listed as open).
pub async fn incidents_keep_their_newest_version(store: impl Store) {
    let mut first = incident("checkout", 1, T0, IncidentStatus::Open, 1);
    store.upsert_incident(&first).await.unwrap();
    assert_eq!(
        store.get_incident(&profile_id(1)).await.unwrap().as_ref(),
        Some(&first)
    );
    // Escalated: another instance joined.
    first.severity = Severity::Fleet;
    first.instances.push("checkout-1".to_owned());
    first.event_ids.push("ev-1-b".to_owned());
    first.related = vec![profile_id(2)];
    first.version = 2;
    store.upsert_incident(&first).await.unwrap();
    // A stale copy arriving late changes nothing.
    store
        .upsert_incident(&incident("checkout", 1, T0, IncidentStatus::Open, 1))
        .await
        .unwrap();
    assert_eq!(
        store.get_incident(&profile_id(1)).await.unwrap().as_ref(),
        Some(&first)
    );
    let mut resolved = first.clone();
    resolved.status = IncidentStatus::Resolved;
    resolved.resolved_unix_nanos = Some(T0 + 400 * SEC);
    resolved.version = 3;
    store.upsert_incident(&resolved).await.unwrap();
    assert_eq!(
        store
            .query_incidents(&incident_query(
                Some("checkout"),
                Some(IncidentStatus::Open)
            ))
            .await
            .unwrap(),
        Vec::<IncidentRecord>::new()
    );
    assert_eq!(
        store
            .query_incidents(&incident_query(Some("checkout"), None))
            .await
            .unwrap(),
        vec![resolved.clone()]
    );
    assert_eq!(store.get_incident(&profile_id(9)).await.unwrap(), None);
    assert_eq!(store.get_incident("x' OR '1'='1").await.unwrap(), None);
}

/// Incident lists filter by service, status and time overlap, newest first, limited.
pub async fn incidents_filter_by_service_status_and_time(store: impl Store) {
    let all = [
        incident("checkout", 1, T0, IncidentStatus::Resolved, 1),
        incident("checkout", 2, T0 + 3_600 * SEC, IncidentStatus::Open, 1),
        incident("checkout", 3, T0 + 7_200 * SEC, IncidentStatus::Open, 1),
        incident("cart", 4, T0 + 3_600 * SEC, IncidentStatus::Open, 1),
    ];
    for i in &all {
        store.upsert_incident(i).await.unwrap();
    }
    let ids = |list: Vec<IncidentRecord>| -> Vec<String> {
        list.into_iter().map(|i| i.incident_id).collect()
    };
    let checkout = store
        .query_incidents(&incident_query(Some("checkout"), None))
        .await
        .unwrap();
    assert_eq!(
        ids(checkout),
        vec![profile_id(3), profile_id(2), profile_id(1)]
    );
    let open = store
        .query_incidents(&incident_query(None, Some(IncidentStatus::Open)))
        .await
        .unwrap();
    assert_eq!(ids(open), vec![profile_id(3), profile_id(4), profile_id(2)]);
    // Overlap: incident 2 spans [T0+1h, T0+1h+30s]; a range starting 10 s into it finds it.
    let mut q = incident_query(Some("checkout"), None);
    q.since_unix_nanos = T0 + 3_610 * SEC;
    q.until_unix_nanos = T0 + 3_620 * SEC;
    assert_eq!(
        ids(store.query_incidents(&q).await.unwrap()),
        vec![profile_id(2)]
    );
    q.since_unix_nanos = T0 + 3_631 * SEC;
    q.until_unix_nanos = T0 + 7_200 * SEC;
    assert!(store.query_incidents(&q).await.unwrap().is_empty());
    let mut limited = incident_query(None, None);
    limited.limit = 2;
    assert_eq!(store.query_incidents(&limited).await.unwrap().len(), 2);
}

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async expression
/// that returns `Some(fresh empty store)`, or `None` when the backend's server is
/// deliberately absent (the case then passes as skipped, having said so).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            empty_store_lists_nothing,
            instances_roundtrip_and_group_into_services,
            upsert_keeps_the_newest_sighting,
            services_count_only_active_instances,
            metrics_filter_by_service_metric_and_range,
            resent_points_are_stored_once,
            hostile_values_are_data,
            triggers_roundtrip_exactly,
            resent_triggers_are_stored_once,
            triggers_filter_by_service_metric_and_range,
            triggers_sort_by_time_then_event_id,
            profiles_roundtrip_exactly,
            resent_profiles_are_stored_once,
            profiles_filter_by_service_event_kind_and_range,
            profile_contents_roundtrip_exactly,
            shared_stacks_and_resent_contents_are_stored_once,
            contents_may_leave_out_stacks_stored_before,
            expiry_removes_old_days_and_keeps_the_rest,
            incidents_keep_their_newest_version,
            incidents_filter_by_service_status_and_time,
            rule_changes_are_versioned_with_their_history,
            pauses_share_the_version_sequence,
            capture_requests_roundtrip_and_list_newest_first,
            capture_dispatches_and_outcomes_are_kept_per_node_and_instance,
            agent_reports_keep_the_latest,
            control_nodes_are_listed_when_seen_since,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(store) = $make.await else {
                    eprintln!("skipped: no store for {}", stringify!($case));
                    return;
                };
                $crate::testsuite::$case(store).await;
            }
        )*
    };
}
