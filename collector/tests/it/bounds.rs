//! Resource bounds per agent and per token, and checks of what identifies an agent's
//! data: a hostile client is refused with a clear status and counted in
//! `holmes_ingest_refused_total`, and the collector keeps serving the others.

use crate::support::raw_agent::{hello, ConnectOptions, RawAgent};
use crate::support::Backend;
use holmes_cli::api_client::ApiClient;
use holmes_proto::{AgentBody, CollectorMessage, Metric, ProfileKind, TriggerEvent, TriggerReason};
use holmes_storage::TriggerQuery;
use tonic::Code;

const NO_OPTIONS: ConnectOptions = ConnectOptions {
    token: None,
    ca_pem: None,
    compression: None,
};


/// The collector's `holmes_ingest_refused_total{reason}` (0 when never counted).
async fn refused(http: std::net::SocketAddr, reason: &str) -> u64 {
    let api = ApiClient::new(&format!("http://{http}")).unwrap();
    let text = String::from_utf8(api.get_raw("/metrics").await.unwrap().to_vec()).unwrap();
    let series = format!("holmes_ingest_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn trigger(event_id: &str, request_id: Option<&str>) -> AgentBody {
    AgentBody::Trigger(TriggerEvent {
        event_id: event_id.to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 99.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        planned: vec![ProfileKind::Cpu],
        request_id: request_id.map(str::to_owned),
    })
}

/// Host names, agent versions, event and request ids are bounded and printable: a
/// 512 KiB event id (which would push an alert body over PagerDuty's limit), a host
/// with terminal escapes or a kilobyte-long version end the stream naming the value,
/// and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_unprintable_ids_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let (grpc, http) = (server.grpc_addr(), server.http_addr());
    let before = refused(http, "invalid_id").await;

    let mut long_host = hello("checkout", "i-1", vec![]);
    long_host.host = "h".repeat(300);
    let s = RawAgent::try_connect(grpc, long_host, &NO_OPTIONS)
        .await
        .err()
        .expect("refused");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message()
            .ends_with("is 300 characters long, the limit is 253"),
        "{s:?}"
    );
    assert!(s.message().starts_with("invalid hello: host "), "{s:?}");

    let mut escapes = hello("checkout", "i-1", vec![]);
    escapes.host = "web-1\u{1b}[2J".to_owned();
    let s = RawAgent::try_connect(grpc, escapes, &NO_OPTIONS)
        .await
        .err()
        .expect("refused");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(
        s.message(),
        "invalid hello: host \"web-1\\u{1b}[2J\" has the character '\\u{1b}'; use only printable ASCII without spaces"
    );

    let mut version = hello("checkout", "i-1", vec![]);
    version.agent_version = "9".repeat(1024);
    let s = RawAgent::try_connect(grpc, version, &NO_OPTIONS)
        .await
        .err()
        .expect("refused");
    assert!(
        s.message()
            .starts_with("invalid hello: agent version \"9999"),
        "{s:?}"
    );
    assert!(s
        .message()
        .ends_with("is 1024 characters long, the limit is 64"));

    // A good hello, then a trigger whose event id is 512 KiB.
    let mut agent = RawAgent::connect(grpc, hello("checkout", "i-1", vec![])).await;
    agent.send(1, trigger(&"e".repeat(512 * 1024), None)).await;
    let s = agent.next_error().await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message()
            .ends_with("is 524288 characters long, the limit is 128"),
        "{}",
        &s.message()[..200.min(s.message().len())]
    );
    assert!(s.message().starts_with("invalid trigger: event id \"eeee"));
    // And one whose request id has a slash.
    let mut agent = RawAgent::connect(grpc, hello("checkout", "i-1", vec![])).await;
    agent.send(1, trigger("ev-1", Some("../../x"))).await;
    let s = agent.next_error().await;
    assert_eq!(
        s.message(),
        "invalid trigger: request id \"../../x\" has the character '/'; use only A-Z a-z 0-9 . _ -"
    );

    // An honest trigger is still welcome, and is the only one stored.
    let mut agent = RawAgent::connect(grpc, hello("checkout", "i-1", vec![])).await;
    agent.send(1, trigger("ev-good", None)).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 1 });
    let stored = server
        .store()
        .query_triggers(&TriggerQuery {
            service: "checkout".to_owned(),
            metric: None,
            since_unix_nanos: 0,
            until_unix_nanos: u64::MAX,
            limit: 100,
        })
        .await
        .unwrap();
    let ids: Vec<&str> = stored.iter().map(|t| t.event_id.as_str()).collect();
    assert_eq!(ids, ["ev-good"]);
    // Every refusal counted (other tests in this process may add theirs).
    assert!(refused(http, "invalid_id").await >= before + 5);
    server.shutdown().await;
}

