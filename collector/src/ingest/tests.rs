//! The stream's delivery order, over real gRPC on loopback, with a sink that holds one
//! kind of event until the test lets it go.

use std::sync::Mutex;

use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::pb::ingest_server::IngestServer;
use holmes_proto::{MetricWindow, ProfileChunk, ProfileFormat, ProfileKind, TriggerEvent};
use holmes_storage::sqlite::SqliteStore;
use tokio_stream::wrappers::TcpListenerStream;

use super::*;
use crate::control::ControlConfig;
use crate::ingest::live::LiveAgents;
use crate::process::{PipelineBody, PipelineEvent, PipelineProfile, SinkError};

const WAIT: Duration = Duration::from_secs(10);

/// Records each event as it starts and ends; holds the kind named `held` until released.
struct HeldSink {
    log: Mutex<Vec<String>>,
    held: &'static str,
    release: watch::Receiver<bool>,
}

fn kind(body: &PipelineBody) -> &'static str {
    match body {
        PipelineBody::Metrics(_) => "window",
        PipelineBody::Trigger(_) => "trigger",
        PipelineBody::Profile(_) => "profile",
    }
}

#[async_trait::async_trait]
impl Sink for HeldSink {
    async fn deliver(&self, event: PipelineEvent) -> Result<(), SinkError> {
        let what = kind(&event.body);
        self.push(format!("{what} started"));
        if what == self.held {
            let mut release = self.release.clone();
            let _ = release.wait_for(|go| *go).await;
        }
        self.push(format!("{what} stored"));
        Ok(())
    }
}

impl HeldSink {
    /// A sink holding events of kind `held`, and what releases them.
    fn holding(held: &'static str) -> (Arc<HeldSink>, watch::Sender<bool>) {
        let (release, released) = watch::channel(false);
        let sink = HeldSink {
            log: Mutex::default(),
            held,
            release: released,
        };
        (Arc::new(sink), release)
    }

    fn push(&self, entry: String) {
        self.log.lock().unwrap().push(entry);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    async fn wait_for(&self, entries: &[&str]) {
        let deadline = Instant::now() + WAIT;
        while !entries.iter().all(|e| self.log().iter().any(|l| l == e)) {
            assert!(
                Instant::now() < deadline,
                "never saw {entries:?}: {:?}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An agent's stream to a collector's ingest service, and what the service needs kept.
struct Agent {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: Streaming<pb::CollectorMessage>,
    /// Whether `connect` answered that the collector reads the stream form.
    stream_form: bool,
    _store: tempfile::TempDir,
    _closing: watch::Sender<bool>,
}

/// A collector's ingest service on loopback handing events to `sink`, and an agent's
/// stream to it (its `Hello` sent).
async fn connect(sink: Arc<dyn Sink>) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let live = Arc::new(LiveAgents::default());
    let control = Control::new(
        Arc::clone(&store),
        Arc::clone(&live),
        "test-node".to_owned(),
        true,
        ControlConfig::default(),
    );
    let (closing, closed) = watch::channel(false);
    let service = IngestService::new(store, sink, control, live, closed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let (tx, rx) = mpsc::channel(16);
    let hello = holmes_proto::Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: "checkout".to_owned(),
        instance_id: "checkout-1".to_owned(),
        host: "test-host".to_owned(),
        pid: 1,
        labels: Default::default(),
        agent_version: "0.0.0-test".to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: 1,
        collect_interval: Duration::from_secs(1),
        rules_version: 0,
        executable: None,
        debuginfo_upload: false,
    };
    send(&tx, 0, AgentBody::Hello(hello)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = IngestClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap();
    let stream_form = response.metadata().contains_key(STREAM_HEADER);
    Agent {
        tx,
        inbound: response.into_inner(),
        stream_form,
        _store: dir,
        _closing: closing,
    }
}

async fn send(tx: &mpsc::Sender<pb::AgentMessage>, seq: u64, body: AgentBody) {
    tx.send(pb::AgentMessage::from(&AgentMessage { seq, body }))
        .await
        .unwrap();
}

fn trigger(event_id: &str) -> AgentBody {
    AgentBody::Trigger(TriggerEvent {
        event_id: event_id.to_owned(),
        metric: Some(holmes_proto::Metric::CpuPercent),
        reason: holmes_proto::TriggerReason::Diff,
        current: 90.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: unix_nanos_now(),
        planned: vec![ProfileKind::Cpu],
        request_id: None,
    })
}

fn profile(event_id: &str) -> AgentBody {
    AgentBody::ProfileChunk(ProfileChunk {
        profile_id: "0f".repeat(16),
        event_id: event_id.to_owned(),
        kind: ProfileKind::Cpu,
        chunk_index: 0,
        chunk_count: 1,
        total_bytes: 3,
        data: vec![1, 2, 3],
        started_unix_nanos: unix_nanos_now(),
        duration: Duration::from_secs(1),
        error: None,
        labels: Default::default(),
        format: ProfileFormat::Native,
    })
}

fn window() -> AgentBody {
    AgentBody::MetricWindow(MetricWindow::default())
}

/// The next acknowledgement within `within`, if any.
async fn next_ack(inbound: &mut Streaming<pb::CollectorMessage>, within: Duration) -> Option<u64> {
    loop {
        let raw = tokio::time::timeout(within, inbound.message()).await.ok()?;
        let raw = raw.unwrap().expect("the stream ended");
        if let Ok(CollectorMessage::Ack { seq }) = CollectorMessage::try_from(raw) {
            return Some(seq);
        }
    }
}

/// Waits for the acknowledgement of everything up to `seq`.
async fn acked_through(inbound: &mut Streaming<pb::CollectorMessage>, seq: u64) {
    let mut last = 0;
    while last < seq {
        last = next_ack(inbound, WAIT).await.expect("no ack once stored");
    }
    assert_eq!(last, seq, "acknowledged past what was sent");
}

#[tokio::test]
async fn a_trigger_and_a_window_are_stored_while_the_profile_before_them_is_not_and_acks_wait_for_it(
) {
    let (sink, release) = HeldSink::holding("profile");
    let mut agent = connect(Arc::clone(&sink) as Arc<dyn Sink>).await;
    let (tx, inbound) = (&agent.tx, &mut agent.inbound);
    send(tx, 1, profile(&"e0".repeat(16))).await;
    send(tx, 2, trigger(&"e1".repeat(16))).await;
    send(tx, 3, window()).await;
    sink.wait_for(&["trigger stored", "window stored"]).await;
    assert!(!sink.log().contains(&"profile stored".to_owned()));
    // Nothing is acknowledged past a message that is not durable.
    assert_eq!(next_ack(inbound, Duration::from_millis(300)).await, None);
    release.send(true).unwrap();
    acked_through(inbound, 3).await;
}

#[tokio::test]
async fn a_profile_is_handed_on_once_the_trigger_before_it_is_durable() {
    let (sink, release) = HeldSink::holding("trigger");
    let mut agent = connect(Arc::clone(&sink) as Arc<dyn Sink>).await;
    let (tx, inbound) = (&agent.tx, &mut agent.inbound);
    send(tx, 1, trigger(&"e1".repeat(16))).await;
    send(tx, 2, profile(&"e1".repeat(16))).await;
    send(tx, 3, window()).await;
    // The window passes the held trigger; the profile waits for it.
    sink.wait_for(&["trigger started", "window stored"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(true).unwrap();
    sink.wait_for(&["profile stored"]).await;
    let log = sink.log();
    let at = |entry: &str| log.iter().position(|l| l == entry).unwrap();
    assert!(
        at("trigger stored") < at("profile started"),
        "the profile was handed on before its trigger was stored: {log:?}"
    );
    acked_through(inbound, 3).await;
}

/// Keeps every event as the sink gets it, through the default `deliver_decoded` (what
/// the Kafka sink does: a decoded profile travels on as bytes).
#[derive(Default)]
struct KeepingSink {
    profiles: Mutex<Vec<PipelineProfile>>,
}

#[async_trait::async_trait]
impl Sink for KeepingSink {
    async fn deliver(&self, event: PipelineEvent) -> Result<(), SinkError> {
        if let PipelineBody::Profile(p) = event.body {
            self.profiles.lock().unwrap().push(p);
        }
        Ok(())
    }
}

/// A profile chunk of `data` in `format`.
fn chunk(id: u8, data: Vec<u8>, format: ProfileFormat) -> AgentBody {
    AgentBody::ProfileChunk(ProfileChunk {
        profile_id: format!("{id:02x}").repeat(16),
        event_id: "e0".repeat(16),
        kind: ProfileKind::Cpu,
        chunk_index: 0,
        chunk_count: 1,
        total_bytes: data.len() as u64,
        data,
        started_unix_nanos: unix_nanos_now(),
        duration: Duration::from_secs(1),
        error: None,
        labels: Default::default(),
        format,
    })
}

/// Each sample's frames and values, as a user reads them.
fn seen(c: &holmes_storage::ProfileContents) -> Vec<(Vec<String>, Vec<i64>)> {
    c.samples
        .iter()
        .map(|s| {
            let frames = c.stack_frames(s.stack).into_iter().map(|f| f.function);
            (frames.collect(), s.values.clone())
        })
        .collect()
}

#[tokio::test]
async fn profiles_in_the_stream_form_are_read_with_their_streams_tables_and_travel_on_whole() {
    use holmes_proto::native::stream::StreamEncoder;
    let sink = Arc::new(KeepingSink::default());
    let mut agent = connect(Arc::clone(&sink) as Arc<dyn Sink>).await;
    assert!(agent.stream_form, "connect announces the stream form");
    let (tx, inbound) = (&agent.tx, &mut agent.inbound);
    let mut tables = StreamEncoder::new();
    let first = normalize::test_profile(&[&[0x10, 0x20], &[0x30]]);
    let second = normalize::test_profile(&[&[0x30], &[0x10, 0x40]]);
    // A self-contained profile may come between two in the stream form.
    let plain = normalize::test_profile(&[&[0x50]]);
    let third = normalize::test_profile(&[&[0x10, 0x20], &[0x30], &[0x10, 0x40], &[0x60]]);
    // Encoded in the order they go out, as the agent's sender does.
    let mut sent = vec![
        (1, tables.encode(&first), ProfileFormat::NativeStream),
        (2, plain.encode(), ProfileFormat::Native),
        (3, tables.encode(&second), ProfileFormat::NativeStream),
    ];
    // A sample naming a stack the stream never defined: refused, and the stack it does
    // define stays defined.
    let broken = {
        use prost::Message as _;
        let bytes = tables.encode(&normalize::test_profile(&[&[0x60]]));
        let mut wire = pb::NativeProfile::decode(bytes.as_slice()).unwrap();
        wire.samples[0].stack = 99;
        wire.encode_to_vec()
    };
    sent.push((4, broken, ProfileFormat::NativeStream));
    sent.push((5, tables.encode(&third), ProfileFormat::NativeStream));
    assert!(
        sent[4].1.len() < third.encode().len(),
        "known stacks are not sent again"
    );
    for (seq, data, format) in sent {
        send(tx, seq, chunk(seq as u8, data, format)).await;
    }
    acked_through(inbound, 5).await;
    let got = sink.profiles.lock().unwrap().clone();
    assert_eq!(got.len(), 5);
    let limits = normalize::Limits::default();
    for (p, expected) in got.iter().zip([
        Some(&first),
        Some(&plain),
        Some(&second),
        None,
        Some(&third),
    ]) {
        // What travels on is the agent's self-contained form.
        assert_eq!(p.format, ProfileFormat::Native);
        match expected {
            Some(expected) => {
                assert_eq!(p.error, None);
                let read = normalize::normalize(ProfileFormat::Native, &p.data, limits).unwrap();
                let want = normalize::normalize(ProfileFormat::Native, &expected.encode(), limits)
                    .unwrap();
                assert_eq!(seen(&read), seen(&want));
            }
            None => {
                let error = p.error.as_deref().unwrap_or_default();
                assert!(error.contains("refers to stack 99"), "{error}");
            }
        }
    }
}
