//! Alert hooks against real local HTTP receivers: payloads and filters per hook kind,
//! order per incident, retries against a receiver that fails first, permanent refusals,
//! a restart that loses no alert and sends none twice, and a full outbox that holds
//! incident changes back instead of dropping their alerts.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::receiver::Receiver;
use axum::http::StatusCode;
use holmes_collector::alert::{AlertError, AlertKind, Alerter, AlertsConfig, OutboxStats};
use holmes_collector::Config;
use holmes_proto::Metric;
use holmes_proto::ProfileKind;
use holmes_storage::{
    Comparison, IncidentRecord, IncidentStatus, IncidentSuspects, Severity, SuspectRecord,
};
use tokio::sync::watch;

fn incident(id: &str, service: &str, severity: Severity, version: u64) -> IncidentRecord {
    let base = 1_764_126_720_000_000_000; // 2025-11-26T03:12:00Z
    IncidentRecord {
        incident_id: id.to_owned(),
        service: service.to_owned(),
        metric: Metric::CpuPercent,
        severity,
        status: IncidentStatus::Open,
        first_event_unix_nanos: base,
        last_event_unix_nanos: base + 30_000_000_000,
        resolved_unix_nanos: None,
        instances: match severity {
            Severity::Instance => vec!["checkout-1".to_owned()],
            Severity::Fleet => vec!["checkout-1".to_owned(), "checkout-2".to_owned()],
        },
        event_ids: vec!["e1".to_owned(), "e2".to_owned()],
        related: vec![],
        skipped_captures: 0,
        version,
    }
}

/// Suspects of incident `id` as the collector stores them: the culprit against healthy
/// controls, then two more.
fn suspects(id: &str) -> IncidentSuspects {
    let s = |function: &str, sick_share: f64, comparison_share: f64| SuspectRecord {
        function: function.to_owned(),
        sick_share,
        comparison_share,
    };
    IncidentSuspects {
        incident_id: id.to_owned(),
        service: "checkout".to_owned(),
        kind: ProfileKind::Cpu,
        comparison: Comparison::Controls,
        sick_profiles: 2,
        comparison_profiles: 3,
        computed_unix_nanos: 1_764_126_760_000_000_000,
        suspects: vec![
            s("checkout::pricing::recompute_all", 0.61, 0.02),
            s("checkout::serve", 0.7, 0.3),
            s("checkout::db::query", 0.05, 0.03),
            s("checkout::fourth", 0.01, 0.0),
        ],
    }
}

fn resolved(mut i: IncidentRecord) -> IncidentRecord {
    i.status = IncidentStatus::Resolved;
    i.resolved_unix_nanos = Some(i.last_event_unix_nanos + 300_000_000_000);
    i.version += 1;
    i
}

/// The `[alerts]` section parsed from TOML, as a config file spells it.
fn alerts_config(toml: &str) -> AlertsConfig {
    let config = Config::from_toml(toml, Path::new("alerts.toml")).unwrap();
    config.validate().unwrap();
    config.alerts
}

async fn stats_when(
    alerter: &Alerter,
    what: &str,
    done: impl Fn(OutboxStats) -> bool,
) -> OutboxStats {
    crate::support::eventually(Duration::from_secs(20), what, || async {
        let stats = alerter.stats().await.unwrap();
        done(stats).then_some(stats)
    })
    .await
}

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[tokio::test]
async fn each_hook_gets_its_alerts_in_order_with_its_payload() {
    let webhook = Receiver::start(0, StatusCode::OK).await;
    let slack = Receiver::start(0, StatusCode::OK).await;
    let pagerduty = Receiver::start(0, StatusCode::OK).await;
    let alertmanager = Receiver::start(0, StatusCode::OK).await;
    let config = alerts_config(&format!(
        r#"
        [alerts]
        base_url = "https://holmes.example.com/"
        retry_initial = "20ms"

        [[alerts.hooks]]
        name = "ops"
        kind = "webhook"
        url = "{}"
        headers = {{ Authorization = "Bearer hook-token" }}

        [[alerts.hooks]]
        name = "slack-checkout"
        kind = "slack"
        url = "{}"
        services = ["checkout"]

        [[alerts.hooks]]
        name = "pager"
        kind = "pagerduty"
        url = "{}"
        routing_key = "R0UT1NG-KEY"
        min_severity = "fleet"

        [[alerts.hooks]]
        name = "am"
        kind = "alertmanager"
        url = "{}"
        services = ["checkout"]
        "#,
        webhook.url("/hooks/holmes"),
        slack.url("/services/T0/B0/x"),
        pagerduty.url("/v2/enqueue"),
        alertmanager.url("/api/v2/alerts"),
    ));
    let dir = tempfile::tempdir().unwrap();
    let (_close, closing) = watch::channel(false);
    let alerter = Alerter::start(&config, dir.path(), None, closing).unwrap();

    // Queued back to back: each hook must still hear open, escalate, the culprit
    // named, resolve in order. The suspects are computed after the escalation; the
    // resolve carries them too.
    let opened = incident(A, "checkout", Severity::Instance, 1);
    let escalated = incident(A, "checkout", Severity::Fleet, 2);
    let done = resolved(escalated.clone());
    let named = suspects(A);
    alerter
        .notify(AlertKind::Opened, &opened, None)
        .await
        .unwrap();
    alerter
        .notify(AlertKind::Escalated, &escalated, None)
        .await
        .unwrap();
    alerter
        .notify(AlertKind::Suspects, &escalated, Some(&named))
        .await
        .unwrap();
    // Computed again with the same top suspect (a restart, new profiles): not twice.
    let mut again = named.clone();
    again.computed_unix_nanos += 5_000_000_000;
    alerter
        .notify(AlertKind::Suspects, &escalated, Some(&again))
        .await
        .unwrap();
    alerter
        .notify(AlertKind::Resolved, &done, Some(&named))
        .await
        .unwrap();
    let cart = incident(B, "cart", Severity::Instance, 1);
    alerter
        .notify(AlertKind::Opened, &cart, None)
        .await
        .unwrap();

    // ops: 5, slack (checkout only): 4, pager (fleet only): 3, alertmanager
    // (checkout only): 4.
    let stats = stats_when(&alerter, "every alert delivered", |s| s.pending == 0).await;
    assert_eq!(
        stats,
        OutboxStats {
            pending: 0,
            delivered: 16,
            failed: 0
        }
    );

    let link = format!("https://holmes.example.com/ui/incidents/{A}");
    let ops = webhook.accepted();
    assert_eq!(ops.len(), 5, "{ops:#?}");
    let events_of = |id: &str| -> Vec<String> {
        ops.iter()
            .filter(|r| r.body["incident"]["id"] == id)
            .map(|r| r.body["event"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        events_of(A),
        ["opened", "escalated", "suspects", "resolved"]
    );
    assert_eq!(events_of(B), ["opened"]);
    for r in &ops {
        assert_eq!(r.path, "/hooks/holmes");
        assert_eq!(r.headers["authorization"], "Bearer hook-token");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            r.headers["x-holmes-alert-id"],
            r.body["alert_id"].as_str().unwrap()
        );
    }
    let first = ops.iter().find(|r| r.body["incident"]["id"] == A).unwrap();
    assert_eq!(first.body["url"], link.as_str());
    let i = &first.body["incident"];
    assert_eq!(i["service"], "checkout");
    assert_eq!(i["metric"], "cpu");
    assert_eq!(i["severity"], "instance");
    assert_eq!(i["status"], "open");
    assert_eq!(i["first_event"], "2025-11-26T03:12:00.000Z");
    assert_eq!(i["last_event"], "2025-11-26T03:12:30.000Z");
    assert_eq!(i["instances"], serde_json::json!(["checkout-1"]));
    assert_eq!(i["event_ids"], serde_json::json!(["e1", "e2"]));
    assert_eq!(i["related"], serde_json::json!([]));
    assert_eq!(first.body["suspects"], serde_json::Value::Null, "none yet");
    let last = ops.iter().rfind(|r| r.body["incident"]["id"] == A).unwrap();
    assert_eq!(last.body["incident"]["status"], "resolved");
    assert_eq!(last.body["incident"]["severity"], "fleet");
    // The culprit in the page: the top suspects with their evidence.
    let page = ops.iter().find(|r| r.body["event"] == "suspects").unwrap();
    for body in [&page.body, &last.body] {
        let s = &body["suspects"];
        assert_eq!(s["kind"], "cpu");
        assert_eq!(s["comparison"], "controls");
        assert_eq!(s["sick_profiles"], 2);
        assert_eq!(s["comparison_profiles"], 3);
        let top = s["top"].as_array().unwrap();
        assert_eq!(top.len(), 3, "the top three: {s}");
        assert_eq!(top[0]["function"], "checkout::pricing::recompute_all");
        assert_eq!(top[0]["sick_share"], 0.61);
        assert_eq!(top[0]["comparison_share"], 0.02);
        assert_eq!(
            body["top_suspect"],
            "checkout::pricing::recompute_all (61% of CPU vs 2% on healthy instances)"
        );
    }

    let slack = slack.accepted();
    let texts: Vec<&str> = slack
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    for (text, event) in
        texts
            .iter()
            .zip(["opened", "escalated", "named its top suspect", "resolved"])
    {
        assert!(
            text.contains("checkout: ") && text.contains(event),
            "{text}"
        );
        assert!(
            text.contains(&format!("<{link}|")) && !text.contains('\n'),
            "{text}"
        );
    }
    assert!(
        texts[0].contains("instance incident on cpu opened (instance checkout-1)"),
        "{}",
        texts[0]
    );
    let named_line =
        "top suspect: checkout::pricing::recompute_all (61% of CPU vs 2% on healthy instances)";
    assert!(!texts[1].contains("top suspect"), "{}", texts[1]);
    for text in &texts[2..] {
        assert!(text.contains(named_line), "{text}");
    }

    let pd = pagerduty.accepted();
    assert_eq!(pd.len(), 3, "{pd:#?}");
    let (trigger, culprit, resolve) = (&pd[0].body, &pd[1].body, &pd[2].body);
    assert_eq!(pd[0].path, "/v2/enqueue");
    assert_eq!(trigger["routing_key"], "R0UT1NG-KEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], A);
    assert_eq!(trigger["payload"]["source"], "checkout");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["timestamp"], "2025-11-26T03:12:30.000Z");
    assert!(trigger["payload"]["summary"]
        .as_str()
        .unwrap()
        .contains("escalated"));
    assert_eq!(trigger["payload"]["custom_details"]["id"], A);
    assert_eq!(
        trigger["payload"]["custom_details"]["suspects"],
        serde_json::Value::Null
    );
    // The culprit updates the same PagerDuty incident (same dedup key).
    assert_eq!(culprit["event_action"], "trigger");
    assert_eq!(culprit["dedup_key"], A);
    let details = &culprit["payload"]["custom_details"];
    assert_eq!(details["id"], A);
    assert_eq!(
        details["suspects"]["top"][0]["function"],
        "checkout::pricing::recompute_all"
    );
    assert_eq!(details["suspects"]["comparison"], "controls");
    assert!(
        culprit["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains(named_line),
        "{culprit}"
    );
    assert_eq!(trigger["links"][0]["href"], link.as_str());
    assert_eq!(resolve["routing_key"], "R0UT1NG-KEY");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], A);

    // Alertmanager keeps its annotation, now with the evidence.
    let am = alertmanager.accepted();
    assert_eq!(am.len(), 4, "{am:#?}");
    let annotation =
        |i: usize, alert: usize| am[i].body[alert]["annotations"]["top_suspect"].clone();
    assert_eq!(annotation(0, 0), serde_json::Value::Null);
    assert_eq!(
        annotation(2, 0),
        "checkout::pricing::recompute_all (61% of CPU vs 2% on healthy instances)"
    );
    assert_eq!(am[2].body[0]["labels"]["severity"], "fleet");
    assert_eq!(annotation(3, 0), annotation(2, 0));

    // The routing key is added at delivery, never written to the outbox.
    let file = std::fs::read(dir.path().join(holmes_collector::alert::OUTBOX_FILE)).unwrap();
    assert!(!file.windows(11).any(|w| w == b"R0UT1NG-KEY"));
}

#[tokio::test]
async fn a_failing_receiver_gets_its_alerts_after_retries_and_a_refusal_is_final() {
    let flaky = Receiver::start(2, StatusCode::INTERNAL_SERVER_ERROR).await;
    let limited = Receiver::start(1, StatusCode::TOO_MANY_REQUESTS).await;
    let refusing = Receiver::start(usize::MAX, StatusCode::BAD_REQUEST).await;
    let config = alerts_config(&format!(
        r#"
        [alerts]
        retry_initial = "50ms"
        retry_max = "200ms"

        [[alerts.hooks]]
        name = "flaky"
        kind = "webhook"
        url = "{}"

        [[alerts.hooks]]
        name = "limited"
        kind = "slack"
        url = "{}"

        [[alerts.hooks]]
        name = "refusing"
        kind = "webhook"
        url = "{}"
        "#,
        flaky.url("/"),
        limited.url("/"),
        refusing.url("/"),
    ));
    let dir = tempfile::tempdir().unwrap();
    let (_close, closing) = watch::channel(false);
    let alerter = Alerter::start(
        &config,
        dir.path(),
        Some("http://127.0.0.1:7071".to_owned()),
        closing,
    )
    .unwrap();
    let open = incident(A, "checkout", Severity::Instance, 1);
    alerter
        .notify(AlertKind::Opened, &open, None)
        .await
        .unwrap();
    alerter
        .notify(AlertKind::Resolved, &resolved(open), None)
        .await
        .unwrap();

    let stats = stats_when(&alerter, "retries to end", |s| s.pending == 0).await;
    // The refusing hook's open is final; its resolve then goes (and is refused) too.
    assert_eq!(
        stats,
        OutboxStats {
            pending: 0,
            delivered: 4,
            failed: 2
        }
    );

    let got = flaky.got();
    let answers: Vec<(u16, &str)> = got
        .iter()
        .map(|r| (r.answered, r.body["event"].as_str().unwrap()))
        .collect();
    assert_eq!(
        answers,
        [
            (500, "opened"),
            (500, "opened"),
            (202, "opened"),
            (202, "resolved")
        ],
        "the resolve waits for its open's retries"
    );
    assert_eq!(got[0].body, got[2].body, "a retry sends the same alert");
    assert_eq!(
        got[0].body["url"],
        format!("http://127.0.0.1:7071/ui/incidents/{A}")
    );

    let limited: Vec<u16> = limited.got().iter().map(|r| r.answered).collect();
    assert_eq!(limited, [429, 202, 202]);
    let refused: Vec<u16> = refusing.got().iter().map(|r| r.answered).collect();
    assert_eq!(refused, [400, 400], "a 400 is not retried");
}

#[tokio::test]
async fn a_restart_loses_no_alert_and_sends_none_twice() {
    // The receiver is down while the first alerter runs.
    let addr = crate::support::free_addr();
    let toml = format!(
        r#"
        [alerts]
        retry_initial = "50ms"
        retry_max = "100ms"

        [[alerts.hooks]]
        name = "pager"
        kind = "pagerduty"
        url = "http://{addr}/v2/enqueue"
        routing_key = "k"
        "#
    );
    let config = alerts_config(&toml);
    let dir = tempfile::tempdir().unwrap();
    let open = incident(A, "checkout", Severity::Fleet, 1);

    let (close, closing) = watch::channel(false);
    let first = Alerter::start(&config, dir.path(), None, closing).unwrap();
    first.notify(AlertKind::Opened, &open, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        first.stats().await.unwrap().pending,
        1,
        "nothing listens yet"
    );
    close.send(true).unwrap();
    first.stopped().await;
    drop(first);

    let receiver = Receiver::start_on(addr, 0, StatusCode::OK).await;
    let (_close, closing) = watch::channel(false);
    let second = Alerter::start(&config, dir.path(), None, closing).unwrap();
    stats_when(
        &second,
        "the queued alert delivered after the restart",
        |s| s.delivered == 1,
    )
    .await;
    // The correlator replays the same change after its restart: nothing new is sent.
    second.notify(AlertKind::Opened, &open, None).await.unwrap();
    second
        .notify(AlertKind::Resolved, &resolved(open.clone()), None)
        .await
        .unwrap();
    stats_when(&second, "the resolve delivered", |s| s.delivered == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let actions: Vec<String> = receiver
        .got()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.body["event_action"].as_str().unwrap(),
                r.body["dedup_key"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(actions, [format!("trigger {A}"), format!("resolve {A}")]);
    assert_eq!(
        second.stats().await.unwrap(),
        OutboxStats {
            pending: 0,
            delivered: 2,
            failed: 0
        }
    );
}

#[tokio::test]
async fn a_full_outbox_holds_incident_changes_back_until_room_frees_and_loses_none() {
    // Nothing listens at the hook's address yet: every delivery fails and is retried,
    // so the two pending alerts fill the outbox.
    let addr = crate::support::free_addr();
    let toml = |name: &str| {
        format!(
            "[alerts]\nmax_pending = 2\nretry_initial = \"20ms\"\nretry_max = \"100ms\"\n[[alerts.hooks]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"http://{addr}/\"\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (close, closing) = watch::channel(false);
    let alerter = Alerter::start(&alerts_config(&toml("ops")), dir.path(), None, closing).unwrap();
    for id in [A, B] {
        alerter
            .notify(
                AlertKind::Opened,
                &incident(id, "checkout", Severity::Instance, 1),
                None,
            )
            .await
            .unwrap();
    }
    const C: &str = "cccccccccccccccccccccccccccccccc";
    let third = incident(C, "checkout", Severity::Instance, 1);
    // The third change waits for room instead of being dropped: it cannot be queued
    // while the hook is unreachable, whatever the machine's speed.
    let waiting = tokio::spawn({
        let alerter = alerter.clone();
        let third = third.clone();
        async move { alerter.notify(AlertKind::Opened, &third, None).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a change was queued or dropped while the outbox was full: {:?}",
        alerter.stats().await.unwrap()
    );
    assert_eq!(alerter.stats().await.unwrap().pending, 2);

    // The hook comes up: the first two are delivered, which makes room for the third.
    let hook = Receiver::start_on(addr, 0, StatusCode::OK).await;
    waiting.await.unwrap().unwrap();
    stats_when(&alerter, "all three alerts delivered", |s| s.delivered == 3).await;
    let mut incidents: Vec<String> = hook
        .accepted()
        .iter()
        .map(|r| r.body["incident"]["id"].as_str().unwrap().to_owned())
        .collect();
    incidents.sort();
    incidents.dedup();
    assert_eq!(incidents, [A, B, C]);

    close.send(true).unwrap();
    alerter.stopped().await;
}

#[tokio::test]
async fn the_outbox_is_bounded_and_unconfigured_hooks_are_dropped() {
    let addr = crate::support::free_addr();
    let toml = |name: &str| {
        format!(
            "[alerts]\nmax_pending = 2\n[[alerts.hooks]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"http://{addr}/\"\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (close, closing) = watch::channel(false);
    let alerter = Alerter::start(&alerts_config(&toml("ops")), dir.path(), None, closing).unwrap();
    for id in [A, B] {
        alerter
            .notify(
                AlertKind::Opened,
                &incident(id, "checkout", Severity::Instance, 1),
                None,
            )
            .await
            .unwrap();
    }
    let third = incident(
        "cccccccccccccccccccccccccccccccc",
        "checkout",
        Severity::Instance,
        1,
    );
    // Closing: a change that would wait for room gives up, naming the bound.
    close.send(true).unwrap();
    let err = alerter
        .notify(AlertKind::Opened, &third, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AlertError::OutboxFull { pending: 2, max: 2 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("alerts.max_pending = 2"), "{err}");
    alerter.stopped().await;

    // Renamed hook: the old name's pending alerts are failed, not sent somewhere else.
    let (_close, closing) = watch::channel(false);
    let renamed = Alerter::start(&alerts_config(&toml("ops2")), dir.path(), None, closing).unwrap();
    assert_eq!(
        renamed.stats().await.unwrap(),
        OutboxStats {
            pending: 0,
            delivered: 0,
            failed: 2
        }
    );
    renamed
        .notify(AlertKind::Opened, &third, None)
        .await
        .unwrap();

    // No hooks: nothing to do, and no file.
    let empty = tempfile::tempdir().unwrap();
    let (_c, closing) = watch::channel(false);
    let off = Alerter::start(&AlertsConfig::default(), empty.path(), None, closing).unwrap();
    assert!(!off.enabled());
    off.notify(AlertKind::Opened, &third, None).await.unwrap();
    Alerter::disabled()
        .notify(AlertKind::Resolved, &third, None)
        .await
        .unwrap();
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
}

#[tokio::test]
async fn a_hook_that_never_answers_times_out_and_is_given_up() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let config = alerts_config(&format!(
        "[alerts]\nretry_initial = \"50ms\"\nretry_max = \"100ms\"\nrequest_timeout = \"100ms\"\ngive_up_after = \"1s\"\n\
         [[alerts.hooks]]\nname = \"silent\"\nkind = \"webhook\"\nurl = \"http://{addr}/\"\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let (_close, closing) = watch::channel(false);
    let alerter = Alerter::start(&config, dir.path(), None, closing).unwrap();
    let started = std::time::Instant::now();
    alerter
        .notify(
            AlertKind::Opened,
            &incident(A, "checkout", Severity::Instance, 1),
            None,
        )
        .await
        .unwrap();
    stats_when(&alerter, "the alert given up", |s| s.failed == 1).await;
    // Given up after about its second (not the default day); generous for a loaded
    // machine.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        connections.load(Ordering::SeqCst) >= 2,
        "retried before giving up"
    );
    let conn =
        rusqlite::Connection::open(dir.path().join(holmes_collector::alert::OUTBOX_FILE)).unwrap();
    let error: String = conn
        .query_row("SELECT last_error FROM alerts", [], |r| r.get(0))
        .unwrap();
    assert!(
        error.starts_with("given up after ") && error.contains("no answer within 100ms"),
        "{error}"
    );
}
