//! Clients that misbehave get a clear gRPC status, and the collector keeps serving the
//! agents that behave.

use std::time::Duration;

use crate::support::{eventually, Backend};
use bytes::{Buf, BufMut};
use holmes_agent::Holmes;
use holmes_proto::pb;
use holmes_proto::pb::ingest_client::IngestClient;
use tokio::io::AsyncWriteExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

fn hello(version: u32, service: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        seq: 0,
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            protocol_version: version,
            service: service.to_owned(),
            instance_id: "bad-client".to_owned(),
            ..Default::default()
        })),
    }
}

/// Opens a stream that sends `messages` and reports how the collector answered.
async fn open(addr: std::net::SocketAddr, messages: Vec<pb::AgentMessage>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = IngestClient::new(channel);
    let outbound = tokio_stream::iter(messages);
    match client.connect(outbound).await {
        Err(status) => status,
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return tonic::Status::ok("stream ended"),
                    Err(status) => return status,
                }
            }
        }
    }
}

/// Sends raw bytes as gRPC messages, bypassing protobuf encoding.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn send_garbage(addr: std::net::SocketAddr, bytes: Vec<u8>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/holmes.v1.Ingest/Connect");
    let request = tonic::Request::new(tokio_stream::iter(vec![bytes]));
    match grpc.streaming(request, path, RawCodec).await {
        Err(status) => status,
        Ok(_) => panic!("garbage was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_get_clear_statuses_and_good_agents_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let addr = server.grpc_addr();
    let good = Holmes::builder()
        .service("checkout")
        .instance("good-0")
        .collector(format!("http://{addr}"))
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the good agent's first ack",
        || async { (good.stats().acked_seq >= 1).then_some(()) },
    )
    .await;

    let s = open(addr, vec![hello(7, "checkout")]).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert_eq!(
        s.message(),
        "unsupported protocol version 7; this collector speaks version 1"
    );

    let s = open(addr, vec![hello(1, "check out!")]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message()
            .contains("invalid hello: service \"check out!\""),
        "{s:?}"
    );

    let heartbeat_first = pb::AgentMessage {
        seq: 0,
        body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat::default())),
    };
    let s = open(addr, vec![heartbeat_first]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(s.message(), "the first message must be hello");

    let s = open(addr, vec![]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(s.message(), "stream ended before hello");

    // A metric window with an unknown metric, after a valid hello.
    let bad_window = pb::AgentMessage {
        seq: 1,
        body: Some(pb::agent_message::Body::MetricWindow(pb::MetricWindow {
            series: vec![pb::MetricSeries {
                metric: 4242,
                samples: vec![],
            }],
        })),
    };
    let s = open(addr, vec![hello(1, "checkout"), bad_window]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message()
            .contains("series.metric has the unknown value 4242"),
        "{s:?}"
    );

    // Larger than the 4 MiB message limit.
    let mut huge = hello(1, "checkout");
    if let Some(pb::agent_message::Body::Hello(h)) = huge.body.as_mut() {
        h.host = "x".repeat(5 * 1024 * 1024);
    }
    let s = open(addr, vec![huge]).await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("too large"), "{s:?}");

    // Bytes that are not protobuf at all.
    let s = send_garbage(addr, vec![0xff; 64]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().starts_with("malformed message from agent"),
        "{s:?}"
    );

    // Not even HTTP/2: a raw TCP client writing junk, then hanging up.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\x01\x02garbage")
        .await
        .unwrap();
    drop(raw);

    // The good agent never noticed, and a new agent is welcome.
    let acked = good.stats().acked_seq;
    eventually(
        Duration::from_secs(30),
        "the good agent to keep being acked",
        || async { (good.stats().acked_seq >= acked + 3).then_some(()) },
    )
    .await;
    assert_eq!(
        good.stats().connections,
        1,
        "the good agent's stream was never cut"
    );
    let late = Holmes::builder()
        .service("checkout")
        .instance("late-1")
        .collector(format!("http://{addr}"))
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the late agent's first ack",
        || async { (late.stats().acked_seq >= 1).then_some(()) },
    )
    .await;
    late.stop();
    good.stop();
    server.shutdown().await;
}

/// An agent whose clock is wrong (or whose data is crafted): metric points dated 1970
/// and 2200 are dropped, a trigger event and a profile dated outside `max_clock_skew` are
/// stored at the collector's time (the profile labelled with the agent's value), and
/// everything dated right is stored as sent — one window spread over centuries makes no
/// partitions at all. On SQLite and on ClickHouse.
async fn timestamps_far_from_the_collector_s_clock_are_refused_or_clamped(
    backend: crate::support::Backend,
) {
    use crate::support::raw_agent::{hello, profile_chunks, RawAgent};
    use holmes_collector::clock::unix_nanos_now;
    use holmes_proto::{
        AgentBody, CollectorMessage, Metric, MetricSeries, MetricWindow, ProfileKind, Sample,
        TriggerEvent, TriggerReason,
    };
    const SEC: u64 = 1_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let Some(mut config) = crate::support::config(backend, dir.path()) else {
        return;
    };
    config.max_clock_skew = Duration::from_secs(3600);
    let server = holmes_collector::Server::start(&config).await.unwrap();
    let api =
        holmes_cli::api_client::ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let mut agent = RawAgent::connect(server.grpc_addr(), hello("clock", "clock-0", vec![])).await;
    let now = unix_nanos_now();
    let (past, future) = (SEC, 7_258_118_400 * SEC); // 1970-01-01T00:00:01Z, 2200-01-01
    let window = MetricWindow {
        series: vec![MetricSeries {
            metric: Metric::CpuPercent,
            samples: [past, now - 30 * SEC, future]
                .into_iter()
                .chain((0..500).map(|d| past + d * 86_400 * SEC))
                .map(|unix_nanos| Sample {
                    unix_nanos,
                    value: 1.0,
                })
                .collect(),
        }],
    };
    agent.send(1, AgentBody::MetricWindow(window)).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 1 });
    let trigger = TriggerEvent {
        event_id: "ev-future".to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 99.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: future,
        planned: vec![ProfileKind::Cpu],
        request_id: None,
    };
    agent.send(2, AgentBody::Trigger(trigger)).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 2 });
    let profile = holmes_devtools::synthetic::ProfileFactory::new(20).cpu_profile(1, past);
    let id = "0000000000000000000000000000c10c";
    let chunks = profile_chunks(id, "ev-future", ProfileKind::Cpu, past, &profile, 1 << 20);
    agent
        .send(3, AgentBody::ProfileChunk(chunks[0].clone()))
        .await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 3 });

    let cpu = api.metrics("clock", "cpu", "2h").await.unwrap();
    let points: Vec<u64> = cpu
        .series
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.unix_ms)
        .collect();
    assert_eq!(
        points,
        vec![(now - 30 * SEC) / 1_000_000],
        "only the point dated right"
    );
    let triggers = api.triggers("clock", "2h").await.unwrap().triggers;
    assert_eq!(triggers.len(), 1);
    let at = triggers[0].unix_ms * 1_000_000;
    assert!(
        at >= now - 60 * SEC && at <= unix_nanos_now(),
        "stored at the collector's time"
    );
    let profiles = api.profiles("clock", "2h").await.unwrap().profiles;
    assert_eq!(profiles.len(), 1);
    assert_eq!(
        profiles[0].labels.get("holmes.agent_started_unix_nanos"),
        Some(&past.to_string()),
        "the agent's time is kept as a label"
    );
    assert_eq!(profiles[0].error, None);
    server.shutdown().await;
}

crate::support::on_every_server!(timestamps_far_from_the_collector_s_clock_are_refused_or_clamped);
