//! A hand-driven agent: a raw tonic client on the ingest stream, for tests that need to
//! send exact messages and see exactly what the collector answers.

use std::net::SocketAddr;
use std::time::Duration;

use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::{pb, AgentBody, AgentMessage, CollectorMessage, Hello};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long a test waits for one message from the collector.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// An open stream to a collector.
pub(crate) struct RawAgent {
    outbound: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::CollectorMessage>,
}

/// A valid hello of `service`/`instance` with `rules`.
pub(crate) fn hello(service: &str, instance: &str, rules: Vec<holmes_proto::RuleConfig>) -> Hello {
    Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: service.to_owned(),
        instance_id: instance.to_owned(),
        host: "test-host".to_owned(),
        pid: 4242,
        labels: Default::default(),
        agent_version: "0.0.0-test".to_owned(),
        rules,
        started_at_unix_nanos: 1,
        collect_interval: Duration::from_secs(1),
    }
}

impl RawAgent {
    /// Opens a stream to the collector at `addr` and sends `hello` on it.
    pub(crate) async fn connect(addr: SocketAddr, hello: Hello) -> RawAgent {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (outbound, rx) = mpsc::channel(16);
        let first = AgentMessage {
            seq: 0,
            body: AgentBody::Hello(hello),
        };
        outbound.send(pb::AgentMessage::from(&first)).await.unwrap();
        let inbound = IngestClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await
            .expect("the collector accepts the hello")
            .into_inner();
        RawAgent { outbound, inbound }
    }

    /// Sends one message.
    pub(crate) async fn send(&self, seq: u64, body: AgentBody) {
        let msg = AgentMessage { seq, body };
        self.outbound
            .send(pb::AgentMessage::from(&msg))
            .await
            .expect("the stream is open");
    }

    /// The next message from the collector, failing the test if none comes in time.
    pub(crate) async fn next(&mut self) -> CollectorMessage {
        let raw = tokio::time::timeout(ANSWER_TIMEOUT, self.inbound.message())
            .await
            .expect("the collector answers in time")
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        CollectorMessage::try_from(raw).expect("a valid collector message")
    }

    /// The status the collector ends the stream with, failing the test if it sends a
    /// message or nothing comes in time.
    pub(crate) async fn next_error(&mut self) -> tonic::Status {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.inbound.message())
            .await
            .expect("the collector answers in time")
        {
            Err(status) => status,
            Ok(other) => panic!("expected the stream to end with an error, got {other:?}"),
        }
    }
}
