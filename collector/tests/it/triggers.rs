//! Trigger events: sent by an agent, acknowledged, stored once however often they are
//! resent, and read back through the HTTP API and the `holmes` CLI — on SQLite and on
//! ClickHouse.

use crate::support::{cli_time, holmes_cli, split_timed_row};

use std::time::Duration;

use crate::support::raw_agent::{hello, RawAgent};
use crate::support::Backend;
use holmes_api::{PointJson, RuleJson, TriggerJson, TriggersJson};
use holmes_cli::api_client::{ApiClient, ApiClientError};
use holmes_collector::clock::{rfc3339, unix_nanos_now};
use holmes_proto::{
    AgentBody, CollectorMessage, Metric, ProfileKind, RuleConfig, Sample, TriggerEvent,
    TriggerReason,
};

const SEC: u64 = 1_000_000_000;

fn cpu_trigger(fired_at: u64) -> TriggerEvent {
    TriggerEvent {
        event_id: "checkout-0-cpu-1".to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 92.0,
        window: vec![
            Sample {
                unix_nanos: fired_at - 2 * SEC,
                value: 20.5,
            },
            Sample {
                unix_nanos: fired_at - SEC,
                value: 40.0,
            },
            Sample {
                unix_nanos: fired_at,
                value: 92.0,
            },
        ],
        rule: Some(RuleConfig {
            metric: Metric::CpuPercent,
            enabled: true,
            min: 10.0,
            diff: f64::INFINITY,
            abs: 90.0,
            max: 0.0,
            cooldown: Duration::from_secs(120),
            window: 3,
        }),
        unix_nanos: fired_at,
        planned: vec![ProfileKind::Cpu],
        request_id: None,
    }
}

fn point(unix_nanos: u64, value: f64) -> PointJson {
    PointJson {
        ts: rfc3339(unix_nanos),
        unix_ms: unix_nanos / 1_000_000,
        value,
    }
}

async fn api_error(api: &ApiClient, path: &str) -> (u16, String) {
    match api.get::<TriggersJson>(path).await {
        Err(ApiClientError::Api { status, message }) => (status, message),
        other => panic!("{path}: expected an API error, got {other:?}"),
    }
}

async fn triggers_are_stored_once_and_come_back(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = crate::support::start(backend, dir.path()).await else {
        return;
    };
    let api_url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&api_url).unwrap();
    // Nanosecond timestamps that are not whole milliseconds.
    let fired_at = unix_nanos_now() - 3 * SEC + 123_456;
    let requested_at = fired_at + SEC;

    let mut agent =
        RawAgent::connect(server.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    let fired = cpu_trigger(fired_at);
    // The same event twice under two sequence numbers, as after a lost ack: both are
    // acknowledged, one is stored.
    agent.send(1, AgentBody::Trigger(fired.clone())).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 1 });
    agent.send(2, AgentBody::Trigger(fired.clone())).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 2 });
    let requested = TriggerEvent {
        event_id: "checkout-0-req-1".to_owned(),
        metric: None,
        reason: TriggerReason::Requested,
        current: 0.0,
        window: vec![],
        rule: None,
        unix_nanos: requested_at,
        planned: vec![ProfileKind::Threads],
        request_id: Some("req-1".to_owned()),
    };
    agent.send(3, AgentBody::Trigger(requested)).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 3 });

    let got = api.triggers("checkout", "5m").await.unwrap();
    let expected = vec![
        TriggerJson {
            event_id: "checkout-0-cpu-1".to_owned(),
            instance: "checkout-0".to_owned(),
            metric: Some("cpu".to_owned()),
            reason: "abs".to_owned(),
            current: 92.0,
            ts: rfc3339(fired_at),
            unix_ms: fired_at / 1_000_000,
            window: vec![
                point(fired_at - 2 * SEC, 20.5),
                point(fired_at - SEC, 40.0),
                point(fired_at, 92.0),
            ],
            rule: Some(RuleJson {
                enabled: true,
                min: 10.0,
                diff: None,
                abs: Some(90.0),
                max: 0.0,
                cooldown_ms: 120_000,
                window: 3,
            }),
            request_id: None,
        },
        TriggerJson {
            event_id: "checkout-0-req-1".to_owned(),
            instance: "checkout-0".to_owned(),
            metric: None,
            reason: "requested".to_owned(),
            current: 0.0,
            ts: rfc3339(requested_at),
            unix_ms: requested_at / 1_000_000,
            window: vec![],
            rule: None,
            request_id: Some("req-1".to_owned()),
        },
    ];
    assert_eq!(got.service, "checkout");
    assert_eq!(got.triggers, expected);

    // Filters and limits.
    let cpu: TriggersJson = api
        .get("/api/v1/services/checkout/triggers?since=5m&metric=cpu")
        .await
        .unwrap();
    assert_eq!(cpu.triggers, expected[..1]);
    let first: TriggersJson = api
        .get("/api/v1/services/checkout/triggers?since=5m&limit=1")
        .await
        .unwrap();
    assert_eq!(first.triggers, expected[..1]);
    let until = rfc3339(requested_at).replace('+', "%2B");
    let before: TriggersJson = api
        .get(&format!(
            "/api/v1/services/checkout/triggers?since=5m&until={until}"
        ))
        .await
        .unwrap();
    assert_eq!(before.triggers, expected[..1]);
    let none = api.triggers("checkout", "1s").await.unwrap();
    assert!(none.triggers.is_empty(), "{none:?}");

    // Bad requests.
    let base = "/api/v1/services/checkout/triggers";
    let (status, message) = api_error(&api, "/api/v1/services/cart/triggers").await;
    assert_eq!(
        (status, message.as_str()),
        (404, "unknown service \"cart\"")
    );
    let (status, message) = api_error(&api, &format!("{base}?metric=cpu%25")).await;
    assert_eq!(status, 400);
    assert!(message.contains("unknown metric \"cpu%\""), "{message}");
    let (status, message) = api_error(&api, &format!("{base}?since=yesterday")).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("since: \"yesterday\""), "{message}");
    let (status, message) = api_error(&api, &format!("{base}?limit=0")).await;
    assert_eq!(
        (status, message.as_str()),
        (400, "limit \"0\" is not a positive number")
    );
    // A limit no store should try to honour is bounded, not passed on.
    let (status, message) = api_error(&api, &format!("{base}?limit={}", u64::MAX)).await;
    assert_eq!(
        (status, message.as_str()),
        (400, "limit 18446744073709551615 is more than 100000")
    );
    let (status, _) = api_error(&api, "/api/v1/services/check%20out/triggers").await;
    assert_eq!(status, 400);

    // Through the CLI, as a script would use it and as a person would read it.
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "--json",
        "triggers",
        "--service",
        "checkout",
        "--since",
        "5m",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let parsed: TriggersJson = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed.triggers, expected);
    let out = holmes_cli(&["--api", &api_url, "triggers", "--service", "checkout"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("checkout triggers since "), "{text}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        ["TIME", "INSTANCE", "METRIC", "REASON", "CURRENT", "WINDOW"],
        "{text}"
    );
    // Times in UTC (the test's TZ) with how long ago.
    let (fired_time, fired_row) = split_timed_row(lines[2]);
    assert!(
        fired_time.starts_with(&cli_time(&rfc3339(fired_at))),
        "{text}"
    );
    assert_eq!(
        fired_row,
        ["checkout-0", "cpu", "abs", "92.0%", "20.5%→92.0%", "▁▃█"],
        "{text}"
    );
    let (requested_time, requested_row) = split_timed_row(lines[3]);
    assert!(
        requested_time.starts_with(&cli_time(&rfc3339(requested_at))),
        "{text}"
    );
    assert_eq!(
        requested_row,
        ["checkout-0", "-", "requested", "-", "-"],
        "{text}"
    );
    assert_eq!(lines.len(), 4, "{text}");
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "triggers",
        "--service",
        "checkout",
        "--since",
        "1s",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("no triggers in this range"));

    server.shutdown().await;
}

crate::support::on_each_backend!(triggers_are_stored_once_and_come_back);

/// A trigger without a sequence number cannot be acknowledged: the stream is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_without_a_sequence_number_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let mut agent =
        RawAgent::connect(server.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    agent
        .send(0, AgentBody::Trigger(cpu_trigger(unix_nanos_now())))
        .await;
    let status = agent.next_error().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "trigger event without a sequence number");
    server.shutdown().await;
}
