//! The conformance suite every [`Store`] backend must pass.
//!
//! A backend's test file calls [`store_conformance_tests!`](crate::store_conformance_tests)
//! with an async expression that yields a fresh, empty store; each case becomes its own
//! test. The cases assert what a user of the collector would see.

use std::collections::BTreeMap;

use std::time::Duration;

use holmes_proto::{Metric, RuleConfig, Sample, TriggerReason};

use crate::{
    IncidentQuery, IncidentRecord, IncidentStatus, InstanceInfo, MetricPoint, MetricQuery,
    Severity, Store, TriggerQuery, TriggerRecord,
};

mod control;
mod debuginfo;
mod merge;
mod profiles;
mod retention;
mod suspects;

pub use control::*;
pub use debuginfo::*;
pub use merge::*;
pub use profiles::*;
pub use retention::*;
pub use suspects::*;

use profiles::profile_query;

const SEC: u64 = 1_000_000_000;
/// 2026-11-26T00:00:00Z, a realistic timestamp.
const T0: u64 = 1_795_651_200 * SEC;

pub(crate) fn instance(service: &str, id: &str, last_seen: u64) -> InstanceInfo {
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

pub(crate) fn point(service: &str, id: &str, metric: Metric, ts: u64, value: f64) -> MetricPoint {
    MetricPoint {
        service: service.to_owned(),
        instance_id: id.to_owned(),
        metric,
        unix_nanos: ts,
        value,
    }
}

pub(crate) fn query(service: &str, metric: Metric, since: u64, until: u64) -> MetricQuery {
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
    assert_eq!(
        store.get_profile("checkout", &profile_id(1)).await.unwrap(),
        None
    );
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
pub(crate) fn trigger(service: &str, instance: &str, event_id: &str, ts: u64) -> TriggerRecord {
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

pub(crate) fn trigger_query(
    service: &str,
    metric: Option<Metric>,
    since: u64,
    until: u64,
) -> TriggerQuery {
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

pub(crate) fn incident(
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
        skipped_captures: 0,
        version,
    }
}

pub(crate) fn incident_query(
    service: Option<&str>,
    status: Option<IncidentStatus>,
) -> IncidentQuery {
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
/// is not listed as open); the captures it skipped by the budget come back with it.
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
    first.skipped_captures = 150;
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
            profiles_roundtrip,
            resent_profiles_are_stored_once,
            profile_ids_are_scoped_to_their_service,
            profiles_read_together,
            profiles_merge_by_stack,
            stacks_are_stored_once_per_service,
            symbols_name_native_locations,
            hostile_profile_contents_are_data,
            parked_events_read_back,
            profiles_filter_by_service_event_kind_and_range,
            expiry_removes_old_days_and_keeps_the_rest,
            expiry_keeps_what_kept_profiles_refer_to,
            stacks_named_by_key_read_back_and_outlive_expiry,
            stacks_new_to_a_scope_are_known_by_their_locations,
            incidents_keep_their_newest_version,
            incidents_filter_by_service_status_and_time,
            incident_suspects_keep_the_latest_computation,
            incidents_are_found_by_fingerprint,
            debuginfo_uploads_resume_and_complete,
            debuginfo_claims_have_one_holder,
            unsymbolized_offsets_shrink_as_symbols_arrive,
            rule_changes_are_versioned_with_their_history,
            pauses_share_the_version_sequence,
            capture_requests_roundtrip_and_list_newest_first,
            capture_dispatches_and_outcomes_are_kept_per_node_and_instance,
            skip_notices_are_read_since_a_time_once_per_event,
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
