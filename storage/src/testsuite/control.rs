//! Conformance cases of the control plane: central rules and their history, pauses,
//! capture requests with their dispatches and outcomes, agents' reports, nodes.

use std::time::Duration;

use holmes_proto::{
    CapturePurpose, CaptureRefusal, Metric, ProfileKind, RefusalReason, RuleRefusal, TimeWindow,
};

use super::{SEC, T0};
use crate::{
    AgentReport, CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord,
    ChangedBy, ControlNode, PauseEdit, RuleEdit, SkipNotice, Store,
};

fn by(author: &str, at: u64) -> ChangedBy {
    ChangedBy {
        author: author.to_owned(),
        note: format!("note of {author}: 'quotes', \"and\" ünïcode\n"),
        unix_nanos: at,
    }
}

fn edit(service: &str, selector: &str, metric: Metric, text: Option<&str>) -> RuleEdit {
    RuleEdit {
        service: service.to_owned(),
        selector: selector.to_owned(),
        metric,
        text: text.map(str::to_owned),
    }
}

/// Rule changes get increasing versions, the latest of each (service, selector, metric)
/// is in force (a deletion included), and the history lists every change newest first.
pub async fn rule_changes_are_versioned_with_their_history(store: impl Store) {
    assert_eq!(store.control_version().await.unwrap(), 0);
    assert!(store.rules_in_force(None).await.unwrap().is_empty());
    let v1 = store
        .change_rules(
            &[
                edit(
                    "checkout",
                    "",
                    Metric::Threads,
                    Some("min=1,abs=1,window=2"),
                ),
                edit(
                    "checkout",
                    "",
                    Metric::CpuPercent,
                    Some("abs=90,cooldown=2m"),
                ),
            ],
            &by("alice", T0),
        )
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let v2 = store
        .change_rules(
            &[edit(
                "checkout",
                "zone=a",
                Metric::CpuPercent,
                Some("abs=95"),
            )],
            &by("bob", T0 + SEC),
        )
        .await
        .unwrap();
    let v3 = store
        .change_rules(
            &[edit("checkout", "", Metric::CpuPercent, None)],
            &by("carol", T0 + 2 * SEC),
        )
        .await
        .unwrap();
    let v4 = store
        .change_rules(
            &[edit("cart", "", Metric::MemoryPercent, Some("off"))],
            &by("dave", T0 + 3 * SEC),
        )
        .await
        .unwrap();
    assert_eq!((v2, v3, v4), (2, 3, 4));
    assert_eq!(store.control_version().await.unwrap(), 4);

    let in_force = store.rules_in_force(Some("checkout")).await.unwrap();
    let seen: Vec<(&str, Metric, Option<&str>, u64)> = in_force
        .iter()
        .map(|c| {
            (
                c.edit.selector.as_str(),
                c.edit.metric,
                c.edit.text.as_deref(),
                c.version,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("", Metric::CpuPercent, None, 3),
            ("", Metric::Threads, Some("min=1,abs=1,window=2"), 1),
            ("zone=a", Metric::CpuPercent, Some("abs=95"), 2),
        ]
    );
    assert_eq!(in_force[0].by, by("carol", T0 + 2 * SEC));
    let all = store.rules_in_force(None).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].edit.service, "cart");

    let history = store.rule_history("checkout", 100).await.unwrap();
    let seen: Vec<(u64, &str, Metric, Option<&str>, &str)> = history
        .iter()
        .map(|c| {
            (
                c.version,
                c.edit.selector.as_str(),
                c.edit.metric,
                c.edit.text.as_deref(),
                c.by.author.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (3, "", Metric::CpuPercent, None, "carol"),
            (2, "zone=a", Metric::CpuPercent, Some("abs=95"), "bob"),
            (
                1,
                "",
                Metric::CpuPercent,
                Some("abs=90,cooldown=2m"),
                "alice"
            ),
            (
                1,
                "",
                Metric::Threads,
                Some("min=1,abs=1,window=2"),
                "alice"
            ),
        ]
    );
    assert_eq!(history[3].by, by("alice", T0));
    assert_eq!(store.rule_history("checkout", 2).await.unwrap().len(), 2);
    assert!(store.rule_history("nobody", 10).await.unwrap().is_empty());
}

/// Pauses take versions from the same sequence as rules; the latest of each scope is
/// listed, a lifted one included.
pub async fn pauses_share_the_version_sequence(store: impl Store) {
    assert!(store.pauses().await.unwrap().is_empty());
    store
        .change_rules(
            &[edit("checkout", "", Metric::CpuPercent, Some("abs=90"))],
            &by("alice", T0),
        )
        .await
        .unwrap();
    let pause = |scope: &str, until: u64, reason: &str| PauseEdit {
        scope: scope.to_owned(),
        until_unix_nanos: until,
        reason: reason.to_owned(),
    };
    let v2 = store
        .change_pause(&pause("checkout", T0 + 600 * SEC, "deploy"), &by("bob", T0))
        .await
        .unwrap();
    let v3 = store
        .change_pause(
            &pause("", T0 + 3600 * SEC, "known incident"),
            &by("carol", T0),
        )
        .await
        .unwrap();
    let v4 = store
        .change_pause(&pause("checkout", 0, ""), &by("dave", T0 + SEC))
        .await
        .unwrap();
    assert_eq!((v2, v3, v4), (2, 3, 4));
    assert_eq!(store.control_version().await.unwrap(), 4);
    let pauses = store.pauses().await.unwrap();
    assert_eq!(pauses.len(), 2, "{pauses:?}");
    assert_eq!(pauses[0].edit, pause("", T0 + 3600 * SEC, "known incident"));
    assert_eq!(
        (pauses[0].version, pauses[0].by.clone()),
        (3, by("carol", T0))
    );
    assert_eq!(pauses[1].edit, pause("checkout", 0, ""));
    assert_eq!(pauses[1].version, 4);
    let v5 = store
        .change_rules(
            &[edit("checkout", "", Metric::CpuPercent, None)],
            &by("erin", T0 + 2 * SEC),
        )
        .await
        .unwrap();
    assert_eq!(v5, 5, "rules continue after the pauses' versions");
}

fn request(id: u64, service: &str, at: u64) -> CaptureRequestRecord {
    CaptureRequestRecord {
        request_id: format!("{id:032x}"),
        service: service.to_owned(),
        selector: String::new(),
        instance_id: None,
        kinds: vec![ProfileKind::Cpu],
        purpose: CapturePurpose::Operator,
        cpu_duration: None,
        window: None,
        incident_id: None,
        by: by("alice", at),
    }
}

/// Capture requests read back exactly, once however often they are stored, and list
/// newest first by service and time.
pub async fn capture_requests_roundtrip_and_list_newest_first(store: impl Store) {
    let full = CaptureRequestRecord {
        selector: "version=1.4.2,zone=a".to_owned(),
        instance_id: Some("checkout-0".to_owned()),
        kinds: vec![ProfileKind::Threads, ProfileKind::Cpu, ProfileKind::Heap],
        purpose: CapturePurpose::Control,
        cpu_duration: Some(Duration::from_millis(2500)),
        window: Some(TimeWindow {
            start_unix_nanos: T0 - 10 * SEC,
            end_unix_nanos: T0,
        }),
        incident_id: Some("807789e54d10bbd7c31adf7600973f20".to_owned()),
        ..request(1, "checkout", T0 + SEC)
    };
    let a = request(2, "checkout", T0 + 2 * SEC);
    let b = request(3, "cart", T0 + 3 * SEC);
    let mut alert = request(4, "checkout", T0 + 4 * SEC);
    alert.purpose = CapturePurpose::Alert;
    for r in [&full, &a, &b, &a, &alert] {
        store.insert_capture_request(r).await.unwrap();
    }
    assert_eq!(
        store
            .get_capture_request(&full.request_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&full)
    );
    assert_eq!(
        store
            .get_capture_request(&format!("{:032x}", 99))
            .await
            .unwrap(),
        None
    );
    let q = |service: Option<&str>, since: u64, until: u64, limit: u64| CaptureRequestQuery {
        service: service.map(str::to_owned),
        since_unix_nanos: since,
        until_unix_nanos: until,
        limit,
    };
    let ids = |list: Vec<CaptureRequestRecord>| -> Vec<String> {
        list.into_iter().map(|r| r.request_id).collect()
    };
    assert_eq!(
        ids(store
            .capture_requests(&q(Some("checkout"), 0, u64::MAX / 2, 10))
            .await
            .unwrap()),
        vec![
            alert.request_id.clone(),
            a.request_id.clone(),
            full.request_id.clone()
        ]
    );
    assert_eq!(
        ids(store
            .capture_requests(&q(None, T0 + 2 * SEC, T0 + 4 * SEC, 10))
            .await
            .unwrap()),
        vec![b.request_id.clone(), a.request_id.clone()]
    );
    assert_eq!(
        store
            .capture_requests(&q(None, 0, u64::MAX / 2, 2))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .capture_requests(&q(Some("checkout"), 0, u64::MAX / 2, 10))
            .await
            .unwrap()[0],
        alert
    );
}

/// Skip notices read back from a time on, oldest first, one per event (a resent notice
/// is kept once), at most the limit asked; retention drops the days before its cutoff.
pub async fn skip_notices_are_read_since_a_time_once_per_event(store: impl Store) {
    const DAY: u64 = 86_400 * SEC;
    let notice = |event: &str, instance: &str, kinds: &[ProfileKind], at: u64| SkipNotice {
        event_id: event.to_owned(),
        service: "checkout".to_owned(),
        instance_id: instance.to_owned(),
        kinds: kinds.to_vec(),
        unix_nanos: at,
    };
    let old = notice("e0", "i-0", &[ProfileKind::Cpu], T0 - 2 * DAY);
    let a = notice("e1", "i-1", &[ProfileKind::Cpu, ProfileKind::Heap], T0);
    let b = notice("e2", "i-2", &[ProfileKind::Threads], T0 + SEC);
    let c = notice("e3", "i-1", &[ProfileKind::Tasks], T0 + 2 * SEC);
    store
        .insert_skip_notices(&[c.clone(), a.clone()])
        .await
        .unwrap();
    store
        .insert_skip_notices(&[b.clone(), a.clone(), old.clone()])
        .await
        .unwrap();
    store.insert_skip_notices(&[]).await.unwrap();
    assert_eq!(
        store.skip_notices(T0, 100).await.unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );
    assert_eq!(
        store.skip_notices(T0 + SEC, 100).await.unwrap(),
        vec![b.clone(), c.clone()]
    );
    assert_eq!(store.skip_notices(T0, 2).await.unwrap(), vec![a.clone(), b]);
    assert_eq!(
        store.skip_notices(T0 - 3 * DAY, 1).await.unwrap(),
        vec![old]
    );
    store.expire_before(T0 - DAY).await.unwrap();
    let kept = store.skip_notices(0, 100).await.unwrap();
    assert_eq!(kept.len(), 3, "the notice two days old is gone: {kept:?}");
    assert_eq!(kept[0], a);
    assert_eq!(kept[2], c);
}

/// Which agents each node asked, and what each agent answered: a later record of one
/// node (or instance) replaces its earlier one.
pub async fn capture_dispatches_and_outcomes_are_kept_per_node_and_instance(store: impl Store) {
    let (r1, r2) = (format!("{:032x}", 1), format!("{:032x}", 2));
    let dispatch = |request: &str, node: &str, instances: &[&str], at: u64| CaptureDispatch {
        request_id: request.to_owned(),
        node_id: node.to_owned(),
        instances: instances.iter().map(|i| (*i).to_owned()).collect(),
        unix_nanos: at,
    };
    store
        .record_capture_dispatch(&dispatch(&r1, "node-b", &[], T0))
        .await
        .unwrap();
    store
        .record_capture_dispatch(&dispatch(&r1, "node-a", &["x", "y"], T0))
        .await
        .unwrap();
    store
        .record_capture_dispatch(&dispatch(&r1, "node-a", &["x", "y", "z"], T0 + SEC))
        .await
        .unwrap();
    store
        .record_capture_dispatch(&dispatch(&r2, "node-a", &["q"], T0))
        .await
        .unwrap();
    assert_eq!(
        store
            .capture_dispatches(&[r1.clone(), r2.clone()])
            .await
            .unwrap(),
        vec![
            dispatch(&r1, "node-a", &["x", "y", "z"], T0 + SEC),
            dispatch(&r1, "node-b", &[], T0),
            dispatch(&r2, "node-a", &["q"], T0),
        ]
    );
    assert!(store.capture_dispatches(&[]).await.unwrap().is_empty());

    let captured = CaptureOutcomeRecord {
        request_id: r1.clone(),
        service: "checkout".to_owned(),
        instance_id: "x".to_owned(),
        event_id: Some("e1".to_owned()),
        captured: vec![ProfileKind::Cpu, ProfileKind::Threads],
        refused: Vec::new(),
        unix_nanos: T0 + 2 * SEC,
    };
    let refused = CaptureOutcomeRecord {
        instance_id: "y".to_owned(),
        event_id: None,
        captured: Vec::new(),
        refused: vec![
            CaptureRefusal {
                kind: ProfileKind::Cpu,
                reason: RefusalReason::RateLimited,
                detail: "asked 3s ago; one per 30s: 'x', \"y\"\n".to_owned(),
            },
            CaptureRefusal {
                kind: ProfileKind::Threads,
                reason: RefusalReason::Other,
                detail: String::new(),
            },
        ],
        ..captured.clone()
    };
    let mut first = refused.clone();
    first.refused.truncate(1);
    first.unix_nanos = T0 + SEC;
    for o in [&captured, &first, &refused] {
        store.record_capture_outcome(o).await.unwrap();
    }
    assert_eq!(
        store
            .capture_outcomes(std::slice::from_ref(&r1))
            .await
            .unwrap(),
        vec![captured, refused]
    );
    assert!(store.capture_outcomes(&[r2]).await.unwrap().is_empty());
}

/// An agent's latest report is kept; an older one changes nothing.
pub async fn agent_reports_keep_the_latest(store: impl Store) {
    let report = AgentReport {
        service: "checkout".to_owned(),
        instance_id: "checkout-0".to_owned(),
        node_id: "node-a".to_owned(),
        connected: true,
        rules_version: 3,
        refused: vec![RuleRefusal {
            metric: Metric::CpuPercent,
            reason: "cooldown 0s is below the agent's floor of 10s (HOLMES_MIN_PUSHED_COOLDOWN)"
                .to_owned(),
        }],
        unix_nanos: T0 + 10 * SEC,
    };
    store.record_agent_report(&report).await.unwrap();
    let older = AgentReport {
        rules_version: 1,
        refused: Vec::new(),
        unix_nanos: T0 + 5 * SEC,
        ..report.clone()
    };
    store.record_agent_report(&older).await.unwrap();
    let other = AgentReport {
        instance_id: "checkout-1".to_owned(),
        node_id: "node-b".to_owned(),
        refused: Vec::new(),
        ..report.clone()
    };
    store.record_agent_report(&other).await.unwrap();
    let cart = AgentReport {
        service: "cart".to_owned(),
        ..other.clone()
    };
    store.record_agent_report(&cart).await.unwrap();
    assert_eq!(
        store.agent_reports("checkout").await.unwrap(),
        vec![report.clone(), other.clone()]
    );
    let gone = AgentReport {
        connected: false,
        unix_nanos: T0 + 20 * SEC,
        ..report
    };
    store.record_agent_report(&gone).await.unwrap();
    assert_eq!(
        store.agent_reports("checkout").await.unwrap(),
        vec![gone, other]
    );
    assert_eq!(store.agent_reports("cart").await.unwrap(), vec![cart]);
    assert!(store.agent_reports("nobody").await.unwrap().is_empty());
}

/// Nodes are listed when seen since the time asked; an older sighting changes nothing.
pub async fn control_nodes_are_listed_when_seen_since(store: impl Store) {
    let node = |id: &str, agents: u64, seen: u64| ControlNode {
        node_id: id.to_owned(),
        agents,
        seen_unix_nanos: seen,
    };
    store
        .record_control_node(&node("a", 3, T0 + 10 * SEC))
        .await
        .unwrap();
    store
        .record_control_node(&node("b", 5, T0 + 20 * SEC))
        .await
        .unwrap();
    store
        .record_control_node(&node("a", 9, T0 + 5 * SEC))
        .await
        .unwrap();
    assert_eq!(
        store.control_nodes(0).await.unwrap(),
        vec![node("a", 3, T0 + 10 * SEC), node("b", 5, T0 + 20 * SEC)]
    );
    assert_eq!(
        store.control_nodes(T0 + 15 * SEC).await.unwrap(),
        vec![node("b", 5, T0 + 20 * SEC)]
    );
    store
        .record_control_node(&node("a", 4, T0 + 30 * SEC))
        .await
        .unwrap();
    assert_eq!(
        store.control_nodes(T0 + 15 * SEC).await.unwrap(),
        vec![node("a", 4, T0 + 30 * SEC), node("b", 5, T0 + 20 * SEC)]
    );
}
