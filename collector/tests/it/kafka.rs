//! The Kafka pipeline against a real Kafka-protocol broker (tansu, started by
//! `deploy/dev/kafka.sh`; `deploy/dev/test.sh` exports `HOLMES_TEST_KAFKA_BROKERS`): an
//! ingest collector and a process collector on loopback, real gRPC agents, the SQLite
//! store, a real webhook receiver.
//!
//! Without `HOLMES_TEST_KAFKA_BROKERS` these tests say they are skipped, except in CI
//! (`CI` set) or with `HOLMES_TEST_REQUIRE_KAFKA=1`, where that is a failure.
#![cfg(feature = "kafka")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::raw_agent::{hello, profile_chunks, RawAgent};
use crate::support::receiver::Receiver;
use crate::support::{eventually, free_addr};
use axum::http::StatusCode;
use holmes_agent::{Holmes, ProfileKind};
use holmes_cli::api_client::ApiClient;
use holmes_collector::config::{Config, Role};
use holmes_collector::process::kafka::KafkaConfig;
use holmes_collector::Server;
use holmes_proto::{AgentBody, CollectorMessage, Metric, TriggerEvent, TriggerReason};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The test broker, or `None` (skipped) when there is none and none is required.
pub(crate) fn brokers() -> Option<String> {
    if let Ok(b) = std::env::var("HOLMES_TEST_KAFKA_BROKERS") {
        return Some(b);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    let required = std::env::var("HOLMES_TEST_REQUIRE_KAFKA").as_deref() == Ok("1");
    assert!(
        !ci && !required,
        "HOLMES_TEST_KAFKA_BROKERS is not set: run deploy/dev/test.sh (or eval \"$(deploy/dev/kafka.sh start)\")"
    );
    eprintln!(
        "skipped: HOLMES_TEST_KAFKA_BROKERS is not set (deploy/dev/kafka.sh starts a broker)"
    );
    None
}

/// A `[kafka]` section on a topic and group of this test alone, with group settings
/// that make a join take seconds.
pub(crate) fn kafka_section(brokers: &str, name: &str) -> KafkaConfig {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let unique = format!("{name}-{}-{n}", std::process::id());
    KafkaConfig {
        brokers: Some(brokers.to_owned()),
        topic: format!("holmes-test-{unique}"),
        group_id: format!("holmes-test-{unique}"),
        partitions: 3,
        produce_timeout: Duration::from_secs(3),
        session_timeout: Duration::from_secs(6),
        heartbeat_interval: Duration::from_millis(500),
        ..KafkaConfig::default()
    }
}

pub(crate) fn role_config(role: Role, dir: &Path, kafka: &KafkaConfig) -> Config {
    let mut config = crate::support::config(crate::support::Backend::Sqlite, dir).unwrap();
    config.role = role;
    config.kafka = kafka.clone();
    config
}

fn trigger(event_id: &str, unix_nanos: u64) -> AgentBody {
    trigger_planning(event_id, unix_nanos, Vec::new())
}

/// A CPU trigger whose agent captures `planned` for it.
fn trigger_planning(event_id: &str, unix_nanos: u64, planned: Vec<ProfileKind>) -> AgentBody {
    AgentBody::Trigger(TriggerEvent {
        event_id: event_id.to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 97.0,
        window: Vec::new(),
        rule: None,
        unix_nanos,
        planned,
        request_id: None,
    })
}

fn now_nanos() -> u64 {
    holmes_collector::clock::unix_nanos_now()
}

/// Sends `body` as message `seq` and waits for its ack; the time it took.
async fn send_acked(agent: &mut RawAgent, seq: u64, body: AgentBody) -> Duration {
    let started = Instant::now();
    agent.send(seq, body).await;
    loop {
        match agent.next().await {
            CollectorMessage::Ack { seq: acked } if acked >= seq => return started.elapsed(),
            _ => {}
        }
    }
}

/// The process collector is up once it has joined the group: the first event sent to
/// it is processed. Returns how long that took.
async fn first_event_processed(api: &ApiClient, service: &str) -> Duration {
    let started = Instant::now();
    eventually(
        Duration::from_secs(60),
        "the first trigger processed",
        || async {
            let t = api.triggers(service, "1h").await.ok()?;
            (!t.triggers.is_empty()).then_some(())
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_go_through_kafka_to_one_fleet_incident_its_controls_and_its_capture_budget() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let kafka = kafka_section(&brokers, "roundtrip");
    let started = Instant::now();
    let ingest = Server::start(&role_config(Role::Ingest, dir.path(), &kafka))
        .await
        .expect("the ingest collector starts");
    // The processor, which owns the service's incidents, keeps one CPU capture of them.
    let mut processing = role_config(Role::Process, dir.path(), &kafka);
    processing.incidents.max_profiles_per_incident = 1;
    let process = Server::start(&processing)
        .await
        .expect("the process collector starts");
    eprintln!("both roles started in {:?}", started.elapsed());
    let api = ApiClient::new(&format!("http://{}", process.http_addr())).unwrap();

    // Three instances of one service fire within seconds of each other, each sending
    // its CPU profile right behind its trigger.
    let base = now_nanos();
    let mut latencies = Vec::new();
    let factory = holmes_devtools::synthetic::ProfileFactory::new(20);
    // A fourth instance stays healthy: the processor asks it as a control, through the
    // ingest node it is connected to.
    let mut healthy =
        RawAgent::connect(ingest.grpc_addr(), hello("checkout", "checkout-3", vec![])).await;
    let mut agents = Vec::new();
    for i in 0..3u64 {
        let mut agent = RawAgent::connect(
            ingest.grpc_addr(),
            hello("checkout", &format!("checkout-{i}"), vec![]),
        )
        .await;
        let event = format!("ev-checkout-{i}");
        let at = base + i * 1_000_000_000;
        agent
            .send(1, trigger_planning(&event, at, vec![ProfileKind::Cpu]))
            .await;
        let profile = factory.cpu_profile(i, at);
        let id = format!("{:032x}", 0xcafe_0000 + i);
        let chunks = profile_chunks(&id, &event, ProfileKind::Cpu, at, &profile, 1 << 20);
        let ack = send_acked(&mut agent, 2, AgentBody::ProfileChunk(chunks[0].clone())).await;
        latencies.push(ack);
        agents.push(agent);
    }
    eprintln!("trigger → ack through the broker: {latencies:?}");
    let join = first_event_processed(&api, "checkout").await;
    eprintln!("first trigger processed {join:?} after its ack (group join included)");

    let incident = eventually(Duration::from_secs(30), "one fleet incident", || async {
        let list = api.incidents(Some("checkout"), "1h", None).await.ok()?;
        let i = list.incidents.first()?;
        (list.incidents.len() == 1 && i.instances.len() == 3).then(|| i.clone())
    })
    .await;
    assert_eq!(incident.severity, "fleet");
    assert_eq!(incident.status, "open");
    let asked = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let CollectorMessage::CaptureRequest(request) = healthy.next().await {
                return request;
            }
        }
    })
    .await
    .expect("the healthy instance is asked as a control");
    assert_eq!(asked.purpose, holmes_proto::CapturePurpose::Control);
    assert_eq!(asked.kinds, [ProfileKind::Cpu]);
    assert_eq!(
        asked.incident_id.as_deref(),
        Some(incident.incident_id.as_str())
    );
    let window = asked
        .window
        .expect("a CPU control covers the sick pre-trigger window");
    assert_eq!(
        window.end_unix_nanos, base,
        "up to the incident's first trigger"
    );
    assert_eq!(
        incident.event_ids,
        ["ev-checkout-0", "ev-checkout-1", "ev-checkout-2"]
    );
    // The capture budget holds on the processor: the first instance's profile is
    // stored, the other two are counted and not stored.
    eventually(Duration::from_secs(30), "two captures skipped", || async {
        let list = api.incidents(Some("checkout"), "1h", None).await.ok()?;
        (list.incidents.first()?.skipped_captures == 2).then_some(())
    })
    .await;
    // The two agents beyond the budget, connected to the ingest node, are told not to
    // send those profiles: the processor stores its decision, the ingest node's control
    // loop hands it on.
    for (i, agent) in agents.iter_mut().enumerate().skip(1) {
        let skip = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let CollectorMessage::SkipProfiles(skip) = agent.next().await {
                    return skip;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("checkout-{i} is told what the budget skips"));
        assert_eq!(
            skip,
            holmes_proto::SkipProfiles {
                event_id: format!("ev-checkout-{i}"),
                kinds: vec![ProfileKind::Cpu],
            }
        );
    }
    // The kept profile is stored after its trigger was correlated (the processor's
    // second pass over the batch, or a later batch).
    let stored = eventually(Duration::from_secs(30), "the kept profile", || async {
        let p = api.profiles("checkout", "1h").await.ok()?.profiles;
        (!p.is_empty()).then_some(p)
    })
    .await;
    // Nothing else arrives meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored_now = api.profiles("checkout", "1h").await.unwrap().profiles;
    assert_eq!(stored_now.len(), stored.len(), "{stored_now:?}");
    assert_eq!(
        stored
            .iter()
            .map(|p| p.instance.as_str())
            .collect::<Vec<_>>(),
        ["checkout-0"],
        "{stored:?}"
    );
    let told_first = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let CollectorMessage::SkipProfiles(skip) = agents[0].next().await {
                return skip;
            }
        }
    })
    .await;
    assert!(
        told_first.is_err(),
        "the kept capture is not skipped: {told_first:?}"
    );
    // The same resent (the agent missed an ack) changes nothing.
    let mut again =
        RawAgent::connect(ingest.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    send_acked(&mut again, 1, trigger("ev-checkout-0", base)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list = api.incidents(Some("checkout"), "1h", None).await.unwrap();
    assert_eq!(list.incidents.len(), 1);
    assert_eq!(list.incidents[0].event_ids.len(), 3);
    assert_eq!(
        api.triggers("checkout", "1h").await.unwrap().triggers.len(),
        3
    );
    // The ingest node answers queries too (same store).
    let ingest_api = ApiClient::new(&format!("http://{}", ingest.http_addr())).unwrap();
    assert_eq!(
        ingest_api
            .incidents(Some("checkout"), "1h", None)
            .await
            .unwrap()
            .incidents
            .len(),
        1
    );
    ingest.shutdown().await;
    process.shutdown().await;
}

/// A `holmes-collector serve --role process` child process.
struct Processor {
    child: std::process::Child,
}

impl Processor {
    fn spawn(config_file: &Path) -> Processor {
        let child = Command::new(env!("CARGO_BIN_EXE_holmes-collector"))
            .args(["serve", "--config"])
            .arg(config_file)
            .env("RUST_LOG", "info")
            .env_remove("HOLMES_ROLE")
            .env_remove("HOLMES_KAFKA_BROKERS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("holmes-collector runs");
        Processor { child }
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown, no final commit.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn processor_toml(
    dir: &Path,
    http: std::net::SocketAddr,
    kafka: &KafkaConfig,
    hook: &str,
) -> PathBuf {
    let text = format!(
        r#"role = "process"
data_dir = "{data}"
http_addr = "{http}"

[incidents]
window = "2m"
quiet = "10m"

[alerts]
retry_initial = "100ms"
retry_max = "500ms"

[[alerts.hooks]]
name = "oncall"
kind = "webhook"
url = "{hook}"

[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{group}"
partitions = {partitions}
session_timeout = "{session}"
heartbeat_interval = "{heartbeat}"
"#,
        data = dir.display(),
        brokers = kafka.brokers.as_deref().unwrap(),
        topic = kafka.topic,
        group = kafka.group_id,
        partitions = kafka.partitions,
        session = humantime::format_duration(kafka.session_timeout),
        heartbeat = humantime::format_duration(kafka.heartbeat_interval),
    );
    let path = dir.join("process.toml");
    std::fs::write(&path, text).unwrap();
    Config::from_file(&path).unwrap().validate().unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_mid_stream_loses_nothing_and_pages_once() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let kafka = kafka_section(&brokers, "killed");
    let webhook = Receiver::start(0, StatusCode::OK).await;
    let ingest = Server::start(&role_config(Role::Ingest, dir.path(), &kafka))
        .await
        .expect("the ingest collector starts");
    let http = free_addr();
    let config_file = processor_toml(dir.path(), http, &kafka, &webhook.url("/hook"));
    let api = ApiClient::new(&format!("http://{http}")).unwrap();
    let first = Processor::spawn(&config_file);

    // Five services, three instances each; each instance fires four times, a round every
    // few hundred ms. The processor is killed after the second round and a new one
    // started after the third.
    let services: Vec<String> = (0..5).map(|i| format!("svc{i}")).collect();
    let mut agents = BTreeMap::new();
    for s in &services {
        for i in 0..3 {
            let agent =
                RawAgent::connect(ingest.grpc_addr(), hello(s, &format!("{s}-{i}"), vec![])).await;
            agents.insert((s.clone(), i), agent);
        }
    }
    let base = now_nanos();
    let mut sent = 0usize;
    let mut first = Some(first);
    let mut second = None;
    for round in 0..4u64 {
        for ((s, i), agent) in agents.iter_mut() {
            let ts = base + round * 2_000_000_000 + *i as u64 * 100_000_000;
            send_acked(agent, round + 1, trigger(&format!("{s}-{i}-r{round}"), ts)).await;
            sent += 1;
        }
        if round == 0 {
            first_event_processed(&api, "svc0").await;
        }
        if round == 1 {
            // Give it a moment to be in the middle of this round, then kill it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            first.take().unwrap().kill();
            eprintln!("processor killed after round {round}");
        }
        if round == 2 {
            second = Some(Processor::spawn(&config_file));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sent, 60);

    // Every trigger stored once; one incident per service holding all twelve events.
    let restarted = Instant::now();
    for s in &services {
        eventually(
            Duration::from_secs(60),
            &format!("all triggers of {s}"),
            || async {
                let list = api.incidents(Some(s), "1h", None).await.ok()?;
                let i = list.incidents.first()?;
                (i.event_ids.len() == 12).then_some(())
            },
        )
        .await;
        let list = api.incidents(Some(s), "1h", None).await.unwrap();
        assert_eq!(list.incidents.len(), 1, "{s}: {:?}", list.incidents);
        assert_eq!(list.incidents[0].severity, "fleet");
        assert_eq!(api.triggers(s, "1h").await.unwrap().triggers.len(), 12);
    }
    eprintln!(
        "backlog processed {:?} after the restart",
        restarted.elapsed()
    );
    // Each incident paged once when it opened and once for each instance that joined
    // it as a fleet incident (the second and the third), never twice for one change:
    // the alert outbox and the incidents survive the kill. The fifteen pages may take a
    // while on a loaded machine; a page sent twice would come after them, so a moment
    // more is given for it to show.
    eventually(Duration::from_secs(60), "fifteen pages", || async {
        (webhook.accepted().len() >= 15).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = webhook.accepted();
    let alert_ids: Vec<&str> = got
        .iter()
        .map(|r| r.body["alert_id"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = alert_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        alert_ids.len(),
        "an alert sent twice: {alert_ids:?}"
    );
    let mut pages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &got {
        let id = r.body["incident"]["id"].as_str().unwrap().to_owned();
        pages
            .entry(id)
            .or_default()
            .push(r.body["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(pages.len(), 5, "{pages:?}");
    for events in pages.values() {
        assert_eq!(events, &["opened", "escalated", "escalated"], "{pages:?}");
    }
    drop(second);
    ingest.shutdown().await;
}

/// A broker of this test alone (it is stopped and started again).
struct OwnBroker {
    brokers: String,
    dir: String,
}

fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev/kafka.sh")
}

impl OwnBroker {
    fn run(command: &str, dir: Option<&str>) -> Vec<(String, String)> {
        crate::support::dev_script("kafka.sh", command, "HOLMES_KAFKA_DIR", dir)
    }

    fn start() -> OwnBroker {
        let vars = OwnBroker::run("start", None);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        OwnBroker {
            brokers: get("HOLMES_TEST_KAFKA_BROKERS").expect("brokers"),
            dir: get("HOLMES_KAFKA_DIR").expect("a folder"),
        }
    }

    fn kill(&self) {
        let pid = std::fs::read_to_string(format!("{}/pid", self.dir)).unwrap();
        let pid = pid.trim().to_owned();
        Command::new("kill").args(["-9", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "tansu {pid} did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(kafka_script())
            .arg("stop")
            .env("HOLMES_KAFKA_DIR", &self.dir)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_keep_their_data_while_the_broker_is_down() {
    // Runs where the suite has a broker: it starts one of its own from the same binary.
    if brokers().is_none() {
        return;
    }
    let broker = tokio::task::spawn_blocking(OwnBroker::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = kafka_section(&broker.brokers, "outage");
    // The broker comes back empty (tansu's memory storage): notice the topic again soon.
    kafka.client.insert(
        "topic.metadata.refresh.interval.ms".to_owned(),
        "1000".to_owned(),
    );
    let ingest = Server::start(&role_config(Role::Ingest, dir.path(), &kafka))
        .await
        .unwrap();
    let process = Server::start(&role_config(Role::Process, dir.path(), &kafka))
        .await
        .unwrap();
    let api = ApiClient::new(&format!("http://{}", process.http_addr())).unwrap();
    let agent = Holmes::builder()
        .service("outage")
        .instance("outage-0")
        .collector(format!("http://{}", ingest.grpc_addr()))
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    eventually(Duration::from_secs(60), "first points", || async {
        let m = api.metrics("outage", "rss", "5m").await.ok()?;
        (m.series.first()?.points.len() >= 5).then_some(())
    })
    .await;
    // Everything before the outage is processed (the broker keeps nothing over a restart).
    let before_outage = agent.stats().queued_seq;
    eventually(Duration::from_secs(60), "the agent caught up", || async {
        (agent.stats().acked_seq >= before_outage).then_some(())
    })
    .await;

    let down = Instant::now();
    tokio::task::spawn_blocking({
        let (brokers, dir) = (broker.brokers.clone(), broker.dir.clone());
        move || {
            let b = OwnBroker { brokers, dir };
            b.kill();
            std::mem::forget(b);
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let event_id = agent.capture_now(&[ProfileKind::Threads]).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        agent.stats().unacked > 0,
        "the agent holds what the broker did not take: {:?}",
        agent.stats()
    );
    let broker_dir = broker.dir.clone();
    tokio::task::spawn_blocking(move || OwnBroker::run("restart", Some(&broker_dir)))
        .await
        .unwrap();
    // An empty broker: the topic is made again, as an operator would on a new cluster.
    holmes_collector::process::kafka::topic::ensure_topic(&kafka)
        .await
        .expect("the topic is created again");
    let outage = down.elapsed();
    eprintln!("the broker was down for {outage:?}");

    crate::support::outage_backlog_arrives(
        &api,
        &agent,
        &event_id,
        outage,
        Duration::from_secs(60),
    )
    .await;
    let trigger_ids: Vec<String> = api
        .triggers("outage", "5m")
        .await
        .unwrap()
        .triggers
        .into_iter()
        .map(|t| t.event_id)
        .collect();
    assert!(trigger_ids.contains(&event_id), "{trigger_ids:?}");
    agent.stop();
    ingest.shutdown().await;
    process.shutdown().await;
    drop(broker);
}

/// Events a processor cannot store do not block the partition behind them: an event
/// that is not a pipeline event at all, and (on the current ClickHouse) one the store
/// refuses every time — a metric window over 150 days, more partitions than one insert
/// may touch, let through by a wide `max_clock_skew` — are parked with the reason and
/// their bytes, and the events after them are processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_parked_and_the_rest_flows() {
    use holmes_proto::{MetricSeries, MetricWindow, Sample};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let kafka = kafka_section(&brokers, "poison");
    let current = std::env::var("HOLMES_TEST_CLICKHOUSE_CURRENT_URL").is_ok();
    let backend = if current {
        crate::support::Backend::ClickHouseCurrent
    } else {
        crate::support::Backend::Sqlite
    };
    let mut config = crate::support::config(backend, dir.path()).unwrap();
    config.kafka = kafka.clone();
    config.max_clock_skew = Duration::from_secs(400 * 86_400);
    let ingest = Server::start(&Config {
        role: Role::Ingest,
        ..config.clone()
    })
    .await
    .unwrap();
    let process = Server::start(&Config {
        role: Role::Process,
        ..config.clone()
    })
    .await
    .unwrap();
    let store = holmes_collector::server::open_store(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", process.http_addr())).unwrap();

    // Garbage on the topic, where pipeline events go.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&kafka.topic)
                .key("checkout")
                .payload(&b"\x08\xff\xff not a pipeline event"[..]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut agent =
        RawAgent::connect(ingest.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    let now = now_nanos();
    let mut seq = 1;
    if current {
        let day = 86_400 * 1_000_000_000u64;
        let window = MetricWindow {
            series: vec![MetricSeries {
                metric: Metric::CpuPercent,
                samples: (0..150)
                    .map(|d| Sample {
                        unix_nanos: now - d * day,
                        value: 1.0,
                    })
                    .collect(),
            }],
        };
        send_acked(&mut agent, seq, AgentBody::MetricWindow(window)).await;
        seq += 1;
    }
    send_acked(&mut agent, seq, trigger("ev-after-the-poison", now)).await;
    // Behind the refused window in its partition: processed once that is parked.
    eventually(
        Duration::from_secs(180),
        "the trigger after the poison",
        || async {
            let t = api.triggers("checkout", "1h").await.ok()?;
            (!t.triggers.is_empty()).then_some(())
        },
    )
    .await;
    let parked = eventually(Duration::from_secs(120), "the poison parked", || async {
        let parked = store.parked_events(10).await.ok()?;
        (parked.len() == 1 + usize::from(current)).then_some(parked)
    })
    .await;
    let garbage = parked
        .iter()
        .find(|p| p.error.starts_with("undecodable event"))
        .expect("the garbage is parked");
    assert_eq!(garbage.payload, b"\x08\xff\xff not a pipeline event");
    assert!(garbage
        .source
        .starts_with(&format!("kafka:{}/", kafka.topic)));
    if current {
        let refused = parked
            .iter()
            .find(|p| p.error.starts_with("not stored after"))
            .expect("the window the store refuses is parked");
        assert_eq!(refused.service, "checkout");
        assert!(refused.error.contains("partitions"), "{}", refused.error);
    }
    ingest.shutdown().await;
    process.shutdown().await;
}
