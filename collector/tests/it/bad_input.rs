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
