//! Resource bounds per agent and per token, and checks of what identifies an agent's
//! data: a hostile client is refused with a clear status and counted in
//! `holmes_ingest_refused_total`, and the collector keeps serving the others.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::raw_agent::{hello, profile_chunks, ConnectOptions, RawAgent};
use crate::support::{eventually, Backend};
use holmes_cli::api_client::ApiClient;
use holmes_collector::auth::Secret;
use holmes_collector::Server;
use holmes_proto::{AgentBody, CollectorMessage, Metric, ProfileKind, TriggerEvent, TriggerReason};
use holmes_storage::TriggerQuery;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const NO_OPTIONS: ConnectOptions = ConnectOptions {
    token: None,
    ca_pem: None,
    compression: None,
};

/// Opens a stream that the collector must refuse; the status.
async fn refused_stream(
    addr: std::net::SocketAddr,
    hello: holmes_proto::Hello,
    options: &ConnectOptions,
) -> tonic::Status {
    match RawAgent::try_connect(addr, hello, options).await {
        Err(status) => status,
        Ok(_) => panic!("the stream was accepted"),
    }
}

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

/// Agent streams are capped per peer address and in all: one over a cap is refused
/// with RESOURCE_EXHAUSTED before its hello is read, counted, and a stream that ends
/// gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_streams_are_capped_per_peer_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.limits.max_streams_per_peer = 2;
    let server = Server::start(&config).await.unwrap();
    let (grpc, http) = (server.grpc_addr(), server.http_addr());
    let before = refused(http, "too_many_streams_per_peer").await;
    let first = RawAgent::connect(grpc, hello("checkout", "i-1", vec![])).await;
    let _second = RawAgent::connect(grpc, hello("checkout", "i-2", vec![])).await;
    let s = refused_stream(grpc, hello("checkout", "i-3", vec![]), &NO_OPTIONS).await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(
        s.message(),
        "127.0.0.1 has 2 agent streams open, the limit is 2 ([limits] max_streams_per_peer); retry later"
    );
    assert!(refused(http, "too_many_streams_per_peer").await > before);
    drop(first);
    let _third = eventually(Duration::from_secs(30), "a place freed", || async {
        RawAgent::try_connect(grpc, hello("checkout", "i-3", vec![]), &NO_OPTIONS)
            .await
            .ok()
    })
    .await;
    server.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.limits.max_streams = 2;
    let server = Server::start(&config).await.unwrap();
    let grpc = server.grpc_addr();
    let _a = RawAgent::connect(grpc, hello("checkout", "i-1", vec![])).await;
    let _b = RawAgent::connect(grpc, hello("search", "i-1", vec![])).await;
    let s = refused_stream(grpc, hello("billing", "i-1", vec![]), &NO_OPTIONS).await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(
        s.message(),
        "this collector has 2 agent streams open, the limit is 2 ([limits] max_streams); retry later"
    );
    server.shutdown().await;
}

/// An unfinished profile is bounded in size (one profile's worth per stream, not
/// 64 MiB) and in time: a stream that sends chunk 0 and then nothing more ends with
/// RESOURCE_EXHAUSTED after `profile_idle_timeout`, and its chunks are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_profiles_are_bounded_in_bytes_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.max_profile_bytes = 1024 * 1024;
    config.limits.profile_idle_timeout = Duration::from_secs(1);
    let server = Server::start(&config).await.unwrap();
    let (grpc, http) = (server.grpc_addr(), server.http_addr());
    let before = refused(http, "profile_idle").await;

    // Two unfinished profiles that together exceed one profile's limit.
    let mut agent = RawAgent::connect(grpc, hello("checkout", "i-1", vec![])).await;
    let big = vec![7u8; 800 * 1024];
    let a = profile_chunks(
        "0000000000000000000000000000000a",
        "ev-1",
        ProfileKind::Cpu,
        1,
        &big,
        64 * 1024,
    );
    let b = profile_chunks(
        "0000000000000000000000000000000b",
        "ev-1",
        ProfileKind::Heap,
        1,
        &big,
        64 * 1024,
    );
    agent.send(1, AgentBody::ProfileChunk(a[0].clone())).await;
    agent.send(2, AgentBody::ProfileChunk(b[0].clone())).await;
    let s = agent.next_error().await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(
        s.message().starts_with(
            "profile 0000000000000000000000000000000b: unfinished profiles on this stream would hold 1638400 bytes, the limit is 1048576"
        ),
        "{s:?}"
    );

    // Chunk 0, then silence.
    let mut agent = RawAgent::connect(grpc, hello("checkout", "i-1", vec![])).await;
    agent.send(1, AgentBody::ProfileChunk(a[0].clone())).await;
    let s = agent.next_error().await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(
        s.message(),
        "profile 0000000000000000000000000000000a: no chunk for 1s, the limit for an unfinished profile ([limits] profile_idle_timeout); its chunks are dropped, send it again"
    );
    assert!(refused(http, "profile_idle").await > before);

    // A stream without an unfinished profile may stay quiet longer than that.
    let mut quiet = RawAgent::connect(grpc, hello("checkout", "i-2", vec![])).await;
    assert_eq!(quiet.next_within(Duration::from_secs(3)).await, None);
    quiet.send(1, trigger("ev-quiet", None)).await;
    assert_eq!(quiet.next().await, CollectorMessage::Ack { seq: 1 });
    server.shutdown().await;
}

/// An HTTP client that sends half a request head, or nothing, is disconnected after
/// `http_header_timeout` and counted; whole requests are answered as before.
/// A gRPC connection that never says anything is closed after `http_header_timeout`
/// and counted; an agent that speaks at once is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_that_say_nothing_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.limits.http_header_timeout = Duration::from_secs(1);
    let server = Server::start(&config).await.unwrap();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(
            tokio::net::TcpStream::connect(server.grpc_addr())
                .await
                .unwrap(),
        );
    }
    for stream in &mut silent {
        let mut answer = Vec::new();
        // Generous: the collector closes it after 1 s; without the deadline it never would.
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
            .await
            .expect("a silent gRPC connection is still open after 30 s");
        assert!(read.is_err() || answer.is_empty(), "{answer:?}");
    }
    // Each is counted, by its reason.
    eventually(
        Duration::from_secs(30),
        "5 grpc_silent refusals",
        || async { (refused(server.http_addr(), "grpc_silent").await >= 5).then_some(()) },
    )
    .await;
    // An agent is served: its hello is acknowledged.
    let agent =
        RawAgent::connect(server.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    drop(agent);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_that_never_finish_their_headers_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.limits.http_header_timeout = Duration::from_secs(1);
    let server = Server::start(&config).await.unwrap();
    let http = server.http_addr();

    let mut half = tokio::net::TcpStream::connect(http).await.unwrap();
    half.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {http}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(http).await.unwrap();
    for (what, stream) in [("half a request", &mut half), ("nothing", &mut silent)] {
        let mut answer = Vec::new();
        // Generous: the collector cuts it after 1 s; without a deadline it never would.
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("a client that sent {what} is still connected after 30 s"));
        // Closed (hyper may answer 408 first, or reset).
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            read.is_err() || answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{what}: {answer}"
        );
    }
    // Both are counted, by their reason.
    eventually(
        Duration::from_secs(30),
        "2 http_header_timeout refusals",
        || async { (refused(http, "http_header_timeout").await >= 2).then_some(()) },
    )
    .await;

    // A whole request is answered, on a connection that sends it at once.
    let mut whole = tokio::net::TcpStream::connect(http).await.unwrap();
    whole
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), whole.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.shutdown().await;
}

/// Through the `"*"` token an agent may bring new services and instances only up to
/// `max_services` and `max_instances_per_service`; known ones still connect, and a
/// service with its own token is not bounded by them. On SQLite and on ClickHouse.
async fn the_wildcard_token_creates_services_and_instances_within_limits(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut config) = crate::support::config(backend, dir.path()) else {
        return;
    };
    config.auth.ingest_tokens = BTreeMap::from([
        ("*".to_owned(), Secret::new("fleet-token")),
        ("payments".to_owned(), Secret::new("payments-token")),
    ]);
    config.limits.max_services = 2;
    config.limits.max_instances_per_service = 2;
    let server = Server::start(&config).await.unwrap();
    let (grpc, http) = (server.grpc_addr(), server.http_addr());
    let fleet = ConnectOptions {
        token: Some("fleet-token".to_owned()),
        ..NO_OPTIONS
    };
    let payments = ConnectOptions {
        token: Some("payments-token".to_owned()),
        ..NO_OPTIONS
    };
    let connect = |service: &'static str, instance: &'static str, options: &ConnectOptions| {
        let options = options.clone();
        async move { RawAgent::try_connect(grpc, hello(service, instance, vec![]), &options).await }
    };
    let before = refused(http, "too_many_instances").await;
    connect("checkout", "i-1", &fleet).await.unwrap();
    connect("checkout", "i-2", &fleet).await.unwrap();
    let s = connect("checkout", "i-3", &fleet)
        .await
        .err()
        .expect("refused");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(
        s.message(),
        "instance \"i-3\" is new and service \"checkout\" already has 2 instances, the limit for a service without its own token ([limits] max_instances_per_service)"
    );
    assert!(refused(http, "too_many_instances").await > before);
    // A known instance reconnects.
    connect("checkout", "i-1", &fleet).await.unwrap();

    connect("search", "s-1", &fleet).await.unwrap();
    let s = connect("billing", "b-1", &fleet)
        .await
        .err()
        .expect("refused");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(
        s.message(),
        "service \"billing\" is new and this collector already has 2 services, the limit for services without their own token ([limits] max_services)"
    );
    // A service with its own token is not bounded by what the wildcard may create.
    for instance in ["p-1", "p-2", "p-3"] {
        connect("payments", instance, &payments).await.unwrap();
    }
    let services = server.store().list_services(0).await.unwrap();
    let names: Vec<&str> = services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["checkout", "payments", "search"]);
    server.shutdown().await;
}

crate::support::on_each_backend!(the_wildcard_token_creates_services_and_instances_within_limits);
