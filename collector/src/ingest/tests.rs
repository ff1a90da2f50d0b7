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

/// A collector's ingest service on loopback, handing events to a sink.
struct Collector {
    addr: std::net::SocketAddr,
    /// What its agent streams' tables hold.
    table_budget: Arc<limits::StreamTableBudget>,
    _store: tempfile::TempDir,
    _closing: watch::Sender<bool>,
}

impl Collector {
    async fn start(sink: Arc<dyn Sink>, limits: &limits::LimitsConfig) -> Collector {
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
        let service = IngestService::new(store, sink, control, live, closed).with_limits(limits);
        let table_budget = Arc::clone(&service.table_budget);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    // As the collector's server: agents send zstd (or gzip).
                    IngestServer::new(service)
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
                )
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Collector {
            addr,
            table_budget,
            _store: dir,
            _closing: closing,
        }
    }

    /// One whose stream tables may hold `limits::MIN_STREAM_TABLE_BYTES`, and the sink
    /// it hands profiles to.
    async fn with_smallest_table_budget() -> (Collector, Arc<KeepingSink>) {
        let limits = limits::LimitsConfig {
            max_stream_table_bytes: limits::MIN_STREAM_TABLE_BYTES,
            ..limits::LimitsConfig::default()
        };
        let sink = Arc::new(KeepingSink::default());
        let collector = Collector::start(Arc::clone(&sink) as Arc<dyn Sink>, &limits).await;
        (collector, sink)
    }

    /// Waits until its streams' tables hold nothing.
    async fn until_no_tables_held(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while self.table_budget.held() > 0 {
            assert!(Instant::now() < deadline, "{what}: still counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An agent's stream to it, as instance `instance` (its `Hello` sent).
    async fn agent(&self, instance: &str) -> Agent {
        let (tx, rx) = mpsc::channel(16);
        let hello = holmes_proto::Hello {
            protocol_version: holmes_proto::PROTOCOL_VERSION,
            service: "checkout".to_owned(),
            instance_id: instance.to_owned(),
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
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
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
            _collector: None,
        }
    }
}

/// An agent's stream to a collector's ingest service.
struct Agent {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: Streaming<pb::CollectorMessage>,
    /// Whether `connect` answered that the collector reads the stream form.
    stream_form: bool,
    /// The collector, when the agent is its only client.
    _collector: Option<Collector>,
}

/// A collector's ingest service on loopback handing events to `sink`, and an agent's
/// stream to it (its `Hello` sent).
async fn connect(sink: Arc<dyn Sink>) -> Agent {
    let collector = Collector::start(sink, &limits::LimitsConfig::default()).await;
    let mut agent = collector.agent("checkout-1").await;
    agent._collector = Some(collector);
    agent
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

/// A profile of `count` stacks `depth` deep, every frame at its own offset from `first`
/// on: all of them new to a stream that saw only offsets below `first`.
fn wide_profile(first: u64, count: usize, depth: usize) -> holmes_proto::native::NativeProfile {
    use holmes_proto::native::{Location, NativeProfile, NativeSample, ValueType};
    let mut p = NativeProfile {
        sample_types: vec![ValueType::new("samples", "count")],
        period_type: ValueType::new("cpu", "nanoseconds"),
        period: 10_000_000,
        time_unix_nanos: 1_700_000_000_000_000_000,
        duration_nanos: 10_000_000_000,
        modules: vec![holmes_proto::Module {
            name: "checkout".into(),
            build_id: "ab12".into(),
        }],
        ..NativeProfile::default()
    };
    for i in 0..count {
        let stack = (0..depth)
            .map(|d| {
                p.locations.push(Location::Native {
                    module: 0,
                    offset: first + (i * depth + d) as u64,
                });
                (p.locations.len() - 1) as u32
            })
            .collect();
        p.stacks.push(stack);
        p.samples.push(NativeSample {
            stack: i as u32,
            values: vec![1],
            labels: Vec::new(),
        });
    }
    p
}

/// How many stacks of a [`wide_profile`] ten deep fill 80-95 % of `max` bytes of stream
/// tables, as the collector's tables hold them (read here with tables of the same kind).
fn stacks_filling(max: u64) -> usize {
    use holmes_proto::native::stream::StreamEncoder;
    let held_after = |count: usize| {
        let mut tables = normalize::StreamTables::new();
        let bytes = StreamEncoder::new().encode(&wide_profile(0, count, 10));
        tables
            .decode(&bytes, normalize::Limits::default(), None)
            .unwrap();
        tables.bytes_held()
    };
    let (mut low, mut high) = (1usize, 1_000usize);
    while held_after(high) < max {
        high *= 2;
    }
    loop {
        let mid = (low + high) / 2;
        match held_after(mid) {
            h if h < max / 100 * 80 => low = mid,
            h if h > max / 100 * 95 => high = mid,
            _ => return mid,
        }
        assert!(
            high - low > 1,
            "no profile size fills 80-95 % of {max} bytes"
        );
    }
}

/// Whether `inbound` ends with an error status within `WAIT`, after acknowledging
/// everything up to `seq`: the status.
async fn ends_after(inbound: &mut Streaming<pb::CollectorMessage>, seq: u64) -> Status {
    let mut last = 0;
    loop {
        let raw = tokio::time::timeout(WAIT, inbound.message())
            .await
            .expect("the stream neither ended nor went on");
        match raw {
            Ok(Some(raw)) => {
                if let Ok(CollectorMessage::Ack { seq }) = CollectorMessage::try_from(raw) {
                    last = seq;
                }
            }
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => {
                assert_eq!(last, seq, "acknowledged before the end: {status:?}");
                return status;
            }
        }
    }
}

#[tokio::test]
async fn the_stream_tables_of_all_agents_are_held_to_the_nodes_budget() {
    use holmes_proto::native::stream::StreamEncoder;
    let (collector, sink) = Collector::with_smallest_table_budget().await;
    let max = limits::MIN_STREAM_TABLE_BYTES;
    // A first profile whose stacks fill 80-95 % of the budget.
    let count = stacks_filling(max);

    let mut first = collector.agent("checkout-1").await;
    assert!(first.stream_form, "an empty budget offers the stream form");
    let mut encoder = StreamEncoder::new();
    let big = encoder.encode(&wide_profile(0, count, 10));
    send(&first.tx, 1, chunk(1, big, ProfileFormat::NativeStream)).await;
    acked_through(&mut first.inbound, 1).await;
    let held = collector.table_budget.held();
    assert!(held >= max / 4 * 3 && held <= max, "held {held} of {max}");

    // Past three quarters of the budget, a new stream is not offered the stream form,
    // and its self-contained profiles are read as ever.
    let mut second = collector.agent("checkout-2").await;
    assert!(
        !second.stream_form,
        "offered the stream form with {held} of {max} held"
    );
    let plain = wide_profile(0, 3, 2).encode();
    send(&second.tx, 1, chunk(2, plain, ProfileFormat::Native)).await;
    acked_through(&mut second.inbound, 1).await;

    // The first stream outgrows the budget: its profile is stored and acknowledged,
    // then the stream ends, naming the setting, and its tables are given back.
    let more = encoder.encode(&wide_profile(1 << 40, count / 2, 10));
    send(&first.tx, 2, chunk(3, more, ProfileFormat::NativeStream)).await;
    let status = ends_after(&mut first.inbound, 2).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_stream_table_bytes"),
        "{status:?}"
    );
    collector
        .until_no_tables_held("the ended stream's tables")
        .await;
    // Its agent reconnects and is offered the stream form again.
    let again = collector.agent("checkout-1").await;
    assert!(again.stream_form, "the budget has room again");

    let got = sink.profiles.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "every acknowledged profile was handed on");
    assert!(got.iter().all(|p| p.error.is_none()));
    let samples: Vec<usize> = got
        .iter()
        .map(|p| {
            normalize::normalize(ProfileFormat::Native, &p.data, normalize::Limits::default())
                .unwrap()
                .samples
                .len()
        })
        .collect();
    assert_eq!(samples, [count, 3, count / 2]);
}

/// A real agent capturing a thread dump now, through `collector`; the profile as the
/// sink got it, once it did.
async fn real_agent_dump(
    collector: &Collector,
    sink: &KeepingSink,
    instance: &str,
) -> (holmes_agent::HolmesHandle, PipelineProfile) {
    let agent = holmes_agent::Holmes::builder()
        .service("checkout")
        .instance(instance)
        .collector(format!("http://{}", collector.addr))
        .collect_interval(Duration::from_millis(200))
        .send_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !agent.stats().connected {
        assert!(
            Instant::now() < deadline,
            "the agent never connected: {:?}",
            agent.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = agent.capture_now(&[ProfileKind::Threads]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = sink
            .profiles
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.event_id == event)
            .cloned();
        if let Some(p) = found {
            return (agent, p);
        }
        assert!(Instant::now() < deadline, "the thread dump never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agents_send_self_contained_profiles_when_the_stream_tables_are_short_of_room() {
    use holmes_proto::native::stream::StreamEncoder;
    let (collector, sink) = Collector::with_smallest_table_budget().await;
    let max = limits::MIN_STREAM_TABLE_BYTES;

    // With room, the agent's stream holds the stacks of what it sent.
    let (agent, dump) = real_agent_dump(&collector, &sink, "checkout-1").await;
    assert_eq!(dump.error, None);
    let agents_share = collector.table_budget.held();
    assert!(agents_share > 0, "the agent's stream holds no tables");
    agent.stop();
    collector
        .until_no_tables_held("the stopped agent's tables")
        .await;

    // Another stream takes 80-95 % of the budget.
    let count = stacks_filling(max);
    let mut filler = collector.agent("search-1").await;
    let big = StreamEncoder::new().encode(&wide_profile(0, count, 10));
    send(&filler.tx, 1, chunk(1, big, ProfileFormat::NativeStream)).await;
    acked_through(&mut filler.inbound, 1).await;
    let held = collector.table_budget.held();
    assert!(held >= max / 4 * 3, "held {held} of {max}");

    // A real agent is then not offered the stream form: its dump arrives whole, and its
    // stream holds nothing.
    let (agent, dump) = real_agent_dump(&collector, &sink, "checkout-2").await;
    assert_eq!(dump.error, None);
    let contents = normalize::normalize(
        ProfileFormat::Native,
        &dump.data,
        normalize::Limits::default(),
    )
    .unwrap();
    assert!(!contents.samples.is_empty());
    assert_eq!(collector.table_budget.held(), held);
    let stats = agent.stop();
    assert_eq!(stats.unacked, 0, "{stats:?}");
}
