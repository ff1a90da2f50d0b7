//! The honest agents: protocol clients speaking `holmes.v1` through holmes-proto's gRPC
//! client, as `holmes-loadgen`'s do — `Hello`, a metric window every second and, every
//! `spike_every`, a CPU spike on every instance of a service at once: a trigger event
//! and its CPU profile (1000 samples, `synthetic::ProfileFactory`, one chunk). Like the
//! agent, each keeps what the collector has not acknowledged and, when its stream
//! breaks, reconnects and sends it again; what it sent is written down in a [`Ledger`]
//! for the exactly-once checks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, Metric, MetricSeries, MetricWindow,
    ProfileChunk, ProfileKind, Sample, TriggerEvent, TriggerReason,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{lock, unix_nanos};
use crate::synthetic::{mix, ProfileFactory};

/// What the honest agents sent and what the collector acknowledged.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Event id → service, of every trigger sent.
    pub triggers: BTreeMap<String, String>,
    /// Profile id → (service, bytes), of every profile sent.
    pub profiles: BTreeMap<String, (String, u64)>,
    /// Metric windows sent.
    pub windows: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Streams that broke and were opened again.
    pub reconnects: u64,
    /// Why streams broke.
    pub breaks: Vec<String>,
}

/// One honest agent.
#[derive(Debug, Clone)]
pub struct HonestAgent {
    /// Its service.
    pub service: String,
    /// Its instance id.
    pub instance: String,
    /// Its service's ingest token.
    pub token: String,
    /// Seeds its jitter and profiles.
    pub seed: u64,
}

/// How honest agents behave.
#[derive(Debug, Clone)]
pub struct HonestPlan {
    /// The collector's gRPC endpoint (`http://host:port`).
    pub endpoint: String,
    /// How often a service spikes.
    pub spike_every: Duration,
    /// How long to wait for the last acknowledgements after sending stops.
    pub grace: Duration,
}

/// A message kept until it is acknowledged.
struct Pending {
    body: AgentBody,
}

fn hello(agent: &HonestAgent) -> Hello {
    Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: agent.service.clone(),
        instance_id: agent.instance.clone(),
        host: format!("node-{:02}", agent.seed % 16),
        pid: 1000 + (agent.seed % 30_000) as u32,
        labels: [("zone".to_owned(), "a".to_owned())].into(),
        agent_version: "holmes-soak".to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: unix_nanos(),
        collect_interval: Duration::from_secs(1),
        rules_version: 0,
        executable: None,
        debuginfo_upload: false,
    }
}

/// One second of metrics: calm, or spiking.
pub(crate) fn window(now: u64, spiking: bool) -> MetricWindow {
    let cpu = if spiking { 95.0 } else { 20.0 };
    MetricWindow {
        series: [
            (Metric::CpuPercent, cpu),
            (Metric::RssBytes, 300e6),
            (Metric::Threads, 24.0),
        ]
        .into_iter()
        .map(|(metric, value)| MetricSeries {
            metric,
            samples: vec![Sample {
                unix_nanos: now,
                value,
            }],
        })
        .collect(),
    }
}

/// A CPU trigger event at `now`: 95 % against a window of 20 % (soak and load agents).
pub fn trigger(event_id: String, now: u64) -> TriggerEvent {
    TriggerEvent {
        event_id,
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Diff,
        current: 95.0,
        window: (0..10u64)
            .map(|i| Sample {
                unix_nanos: now.saturating_sub((9 - i) * 1_000_000_000),
                value: if i == 9 { 95.0 } else { 20.0 },
            })
            .collect(),
        rule: None,
        unix_nanos: now,
        planned: vec![ProfileKind::Cpu],
        request_id: None,
    }
}

/// A whole profile in one chunk.
pub(crate) fn profile_chunk(
    profile_id: String,
    event_id: String,
    data: Vec<u8>,
    started_unix_nanos: u64,
) -> ProfileChunk {
    ProfileChunk {
        profile_id,
        event_id,
        kind: ProfileKind::Cpu,
        chunk_index: 0,
        chunk_count: 1,
        total_bytes: data.len() as u64,
        data,
        started_unix_nanos,
        duration: Duration::from_secs(2),
        error: None,
        labels: BTreeMap::new(),
        format: holmes_proto::ProfileFormat::PprofGzip,
    }
}

/// An open agent stream: where to send, what comes back.
pub(crate) struct Stream {
    pub(crate) tx: mpsc::Sender<pb::AgentMessage>,
    pub(crate) inbound: tonic::Streaming<pb::CollectorMessage>,
}

/// Opens an agent stream to `endpoint` (from `local`, when set) with `hello` first.
pub(crate) async fn open(
    endpoint: &str,
    local: Option<std::net::IpAddr>,
    token: &str,
    hello: Hello,
    buffer: usize,
) -> anyhow::Result<Stream> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .local_address(local)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))?;
    let (tx, rx) = mpsc::channel(buffer.max(1));
    tx.send(pb::AgentMessage::from(&AgentMessage {
        seq: 0,
        body: AgentBody::Hello(hello),
    }))
    .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let inbound = IngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .connect(request)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(Stream { tx, inbound })
}

/// Runs `agent` until `until`, then until everything it sent is acknowledged (at most
/// `plan.grace` more).
pub async fn run(
    plan: Arc<HonestPlan>,
    agent: HonestAgent,
    factory: Arc<ProfileFactory>,
    ledger: Arc<Mutex<Ledger>>,
    until: Instant,
) -> anyhow::Result<()> {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::time::sleep(Duration::from_millis(mix(agent.seed) % 1000)).await;
    let spike_secs = plan.spike_every.as_secs().max(2);
    let mut second = 0u64;
    let give_up = until + plan.grace;
    'streams: loop {
        let mut stream = match open(&plan.endpoint, None, &agent.token, hello(&agent), 512).await {
            Ok(s) => s,
            Err(err) => {
                if Instant::now() >= give_up {
                    bail!("{}: cannot reconnect: {err:#}", agent.instance);
                }
                note_break(&ledger, &agent, &format!("{err:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Everything not acknowledged on the last stream goes again, in order.
        let mut seq = 0u64;
        let mut in_flight: VecDeque<(u64, Pending)> = VecDeque::new();
        let mut resend = std::mem::take(&mut pending);
        while let Some(p) = resend.pop_front() {
            seq += 1;
            let failed = send(&stream, seq, &p.body).await.is_err();
            in_flight.push_back((seq, p));
            if failed {
                pending.extend(in_flight.drain(..).map(|(_, p)| p));
                pending.extend(resend);
                continue 'streams;
            }
        }
        loop {
            let sending = Instant::now() < until;
            if !sending && in_flight.is_empty() {
                return Ok(());
            }
            if !sending && Instant::now() >= give_up {
                bail!(
                    "{}: {} messages not acknowledged {:?} after the run",
                    agent.instance,
                    in_flight.len(),
                    plan.grace
                );
            }
            let next = tokio::select! {
                m = stream.inbound.message() => Some(m),
                _ = tick.tick(), if sending => None,
                () = tokio::time::sleep(Duration::from_secs(1)), if !sending => continue,
            };
            match next {
                Some(Ok(Some(raw))) => {
                    if let Ok(CollectorMessage::Ack { seq: acked }) =
                        CollectorMessage::try_from(raw)
                    {
                        let mut n = 0;
                        while in_flight.front().is_some_and(|(s, _)| *s <= acked) {
                            in_flight.pop_front();
                            n += 1;
                        }
                        lock(&ledger).acked += n;
                    }
                }
                Some(Ok(None)) | Some(Err(_)) => {
                    let why = match next {
                        Some(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                        _ => "the collector closed the stream".to_owned(),
                    };
                    note_break(&ledger, &agent, &why);
                    pending.extend(in_flight.drain(..).map(|(_, p)| p));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue 'streams;
                }
                None => {
                    second += 1;
                    let now = unix_nanos();
                    let spiking = second % spike_secs == 0;
                    let mut out = vec![AgentBody::MetricWindow(window(now, spiking))];
                    if spiking {
                        let event_id = format!("{:016x}{:016x}", mix(agent.seed ^ now), mix(now));
                        let profile_seed = mix(agent.seed ^ now ^ 0x5eed);
                        let data = factory.cpu_profile(profile_seed, now);
                        let profile_id =
                            format!("{:016x}{:016x}", mix(profile_seed), mix(!profile_seed));
                        {
                            let mut l = lock(&ledger);
                            l.triggers.insert(event_id.clone(), agent.service.clone());
                            l.profiles.insert(
                                profile_id.clone(),
                                (agent.service.clone(), data.len() as u64),
                            );
                        }
                        out.push(AgentBody::Trigger(trigger(event_id.clone(), now)));
                        out.push(AgentBody::ProfileChunk(profile_chunk(
                            profile_id, event_id, data, now,
                        )));
                    }
                    lock(&ledger).windows += 1;
                    for body in out {
                        seq += 1;
                        let failed = send(&stream, seq, &body).await.is_err();
                        in_flight.push_back((seq, Pending { body }));
                        if failed {
                            note_break(&ledger, &agent, "the stream to the collector ended");
                            pending.extend(in_flight.drain(..).map(|(_, p)| p));
                            continue 'streams;
                        }
                    }
                }
            }
        }
    }
}

async fn send(stream: &Stream, seq: u64, body: &AgentBody) -> anyhow::Result<()> {
    stream
        .tx
        .send(pb::AgentMessage::from(&AgentMessage {
            seq,
            body: body.clone(),
        }))
        .await
        .context("the stream to the collector ended")
}

fn note_break(ledger: &Mutex<Ledger>, agent: &HonestAgent, why: &str) {
    let mut l = lock(ledger);
    l.reconnects += 1;
    if l.breaks.len() < 20 {
        l.breaks.push(format!("{}: {why}", agent.instance));
    }
}
