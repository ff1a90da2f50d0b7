//! A hand-driven agent: a raw tonic client on the ingest stream, for tests that need to
//! send exact messages and see exactly what the collector answers.

use std::net::SocketAddr;
use std::time::Duration;

use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, ProfileChunk, ProfileKind,
};
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
        rules_version: 0,
        executable: None,
        debuginfo_upload: false,
    }
}

/// `data` as the agent sends a profile: chunks of at most `chunk_bytes`, each with the
/// same metadata (a 10 s capture started at `started`, labelled `phase=trigger`).
pub(crate) fn profile_chunks(
    profile_id: &str,
    event_id: &str,
    kind: ProfileKind,
    started: u64,
    data: &[u8],
    chunk_bytes: usize,
) -> Vec<ProfileChunk> {
    let pieces: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(chunk_bytes).collect()
    };
    let count = pieces.len() as u32;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| ProfileChunk {
            profile_id: profile_id.to_owned(),
            event_id: event_id.to_owned(),
            kind,
            chunk_index: i as u32,
            chunk_count: count,
            total_bytes: data.len() as u64,
            data: piece.to_vec(),
            started_unix_nanos: started,
            duration: Duration::from_secs(10),
            error: None,
            labels: [("phase".to_owned(), "trigger".to_owned())].into(),
            format: holmes_proto::ProfileFormat::PprofGzip,
        })
        .collect()
}

/// How a raw agent connects, beyond the address.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectOptions {
    /// Sent as `authorization: Bearer <token>`.
    pub(crate) token: Option<String>,
    /// PEM CA to trust: connects with `https://` when set.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Compression of what the agent sends.
    pub(crate) compression: Option<tonic::codec::CompressionEncoding>,
}

impl RawAgent {
    /// Opens a stream to the collector at `addr` and sends `hello` on it.
    pub(crate) async fn connect(addr: SocketAddr, hello: Hello) -> RawAgent {
        RawAgent::try_connect(addr, hello, &ConnectOptions::default())
            .await
            .expect("the collector accepts the hello")
    }

    /// Like [`RawAgent::connect`] with `options`; the status if the collector refuses
    /// the stream.
    pub(crate) async fn try_connect(
        addr: SocketAddr,
        hello: Hello,
        options: &ConnectOptions,
    ) -> Result<RawAgent, tonic::Status> {
        let scheme = if options.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
        if let Some(ca) = &options.ca_pem {
            endpoint = endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                )
                .unwrap();
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
        let (outbound, rx) = mpsc::channel(16);
        let first = AgentMessage {
            seq: 0,
            body: AgentBody::Hello(hello),
        };
        outbound.send(pb::AgentMessage::from(&first)).await.unwrap();
        let mut client = IngestClient::new(channel);
        if let Some(encoding) = options.compression {
            client = client.send_compressed(encoding);
        }
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &options.token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let inbound = client.connect(request).await?.into_inner();
        Ok(RawAgent { outbound, inbound })
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

    /// The next message from the collector if one comes within `wait`, `None` if none
    /// does.
    pub(crate) async fn next_within(&mut self, wait: Duration) -> Option<CollectorMessage> {
        let raw = tokio::time::timeout(wait, self.inbound.message())
            .await
            .ok()?
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        Some(CollectorMessage::try_from(raw).expect("a valid collector message"))
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
