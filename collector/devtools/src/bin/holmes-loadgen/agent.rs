//! The simulated agents: what each sends (the profiles encoded before the run), and how
//! it counts what the collector acknowledges.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use holmes_devtools::synthetic::{mix, ProfileFactory};
use holmes_proto::native::stream::{StreamEncoder, STREAM_HEADER};
use holmes_proto::native::NativeProfile;
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, Metric, MetricSeries, MetricWindow,
    ProfileChunk, ProfileFormat, ProfileKind, Sample,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{unix_nanos, Cli, Tally};

/// The form the simulated agents send their profiles in.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The agent's stream form (each stack defined once per stream), as the agent sends
    /// it to a collector that reads it: each simulated agent encodes with its own
    /// stream's tables.
    Stream,
    /// `holmes.v1.NativeProfile`, self-contained, as the agent sends it to older
    /// collectors.
    Native,
    /// Gzipped pprof, as foreign clients and older agents send it.
    Pprof,
}

/// Captures made before the run, in the form the agents send (the stream form is
/// encoded as it goes out, by each agent's own stream).
pub(crate) struct Pool {
    profiles: Vec<Vec<u8>>,
    natives: Vec<NativeProfile>,
    format: Format,
}

impl Pool {
    /// `size` captures (at least one) spread over the fleet's builds.
    pub(crate) fn new(factory: &ProfileFactory, size: usize, format: Format) -> Self {
        let now = unix_nanos();
        let (mut profiles, mut natives) = (Vec::new(), Vec::new());
        for i in 0..size.max(1) {
            let seed = mix(i as u64 + 1);
            let capture = factory.capture(seed, now, i, mix(seed));
            match format {
                Format::Stream => natives.push(capture.native),
                Format::Native => profiles.push(capture.native.encode()),
                Format::Pprof => profiles.push(capture.pprof_gzip),
            }
        }
        Pool {
            profiles,
            natives,
            format,
        }
    }

    /// The capture for `seed`, as bytes and their format: in the stream form through
    /// `stream` (self-contained when it is too big for a stream's tables).
    fn pick(&self, seed: u64, stream: &mut StreamEncoder) -> (Vec<u8>, ProfileFormat) {
        match self.format {
            Format::Stream => {
                let i = (seed % self.natives.len().max(1) as u64) as usize;
                match self.natives.get(i) {
                    Some(native) if StreamEncoder::fits(native) => {
                        (stream.encode(native), ProfileFormat::NativeStream)
                    }
                    Some(native) => (native.encode(), ProfileFormat::Native),
                    None => (Vec::new(), ProfileFormat::Native),
                }
            }
            Format::Native | Format::Pprof => {
                let i = (seed % self.profiles.len().max(1) as u64) as usize;
                let bytes = self.profiles.get(i).cloned().unwrap_or_default();
                let format = if matches!(self.format, Format::Pprof) {
                    ProfileFormat::PprofGzip
                } else {
                    ProfileFormat::Native
                };
                (bytes, format)
            }
        }
    }
}

/// A message in flight: its sequence number, what it was, when it was sent.
struct InFlight {
    seq: u64,
    what: Sent,
    at: Instant,
}

enum Sent {
    Window,
    Trigger,
    /// The last chunk of a profile.
    Profile,
    /// A chunk that is not the last.
    Chunk,
}

fn hello(service: &str, instance: usize) -> Hello {
    Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: service.to_owned(),
        instance_id: format!("{service}-{instance:03}"),
        host: format!("node-{:02}", instance % 16),
        pid: 1000 + instance as u32,
        labels: [("region".to_owned(), "eu-west-1".to_owned())].into(),
        agent_version: "loadgen".to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: unix_nanos(),
        collect_interval: Duration::from_secs(1),
        rules_version: 0,
        executable: None,
        debuginfo_upload: false,
    }
}

/// One second of metrics: calm, or spiking.
fn window(now: u64, spiking: bool, seed: u64) -> MetricWindow {
    let jitter = (mix(seed) % 1000) as f64 / 1000.0;
    let cpu = if spiking { 92.0 } else { 18.0 + 6.0 * jitter };
    let series = [
        (Metric::CpuPercent, cpu),
        (Metric::MemoryPercent, 41.0 + jitter),
        (Metric::RssBytes, 850e6 + 10e6 * jitter),
        (Metric::Threads, 42.0),
        (Metric::Tasks, 900.0 + 100.0 * jitter),
    ]
    .into_iter()
    .map(|(metric, value)| MetricSeries {
        metric,
        samples: vec![Sample {
            unix_nanos: now,
            value,
        }],
    })
    .collect();
    MetricWindow { series }
}

pub(crate) struct Agent {
    pub(crate) service: String,
    pub(crate) instance: usize,
    pub(crate) seed: u64,
}

/// Runs one agent until `until`; records into `tally`.
pub(crate) async fn run_agent(
    cli: Arc<Cli>,
    agent: Agent,
    pool: Arc<Pool>,
    tally: Arc<Mutex<Tally>>,
    start: Instant,
    until: Instant,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(cli.ingest.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", cli.ingest))?;
    let (tx, rx) = mpsc::channel(cli.in_flight.max(1) * 2);
    let first = AgentMessage {
        seq: 0,
        body: AgentBody::Hello(hello(&agent.service, agent.instance)),
    };
    tx.send(pb::AgentMessage::from(&first)).await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &cli.token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let response = IngestClient::new(channel)
        .connect(request)
        .await
        .context("the collector refused the stream")?;
    if matches!(pool.format, Format::Stream) && response.metadata().get(STREAM_HEADER).is_none() {
        bail!("the collector does not read the agent's stream form (no `{STREAM_HEADER}` header on connect); send --format native");
    }
    let mut inbound = response.into_inner();
    // The stream's tables, bounded as the agent bounds its own.
    let mut stream = StreamEncoder::sender();
    let mut seq = 0u64;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let offset = Duration::from_millis(mix(agent.seed) % 1000);
    tokio::time::sleep(offset).await;
    let mut second = 0u64;
    // Instances of one service spike together (within a second), as a fleet does.
    let spike_secs = cli.spike_every.as_secs().max(2);
    loop {
        // Acks first, without waiting, then room to send.
        loop {
            let ack = if in_flight.len() >= cli.in_flight.max(1) {
                Some(
                    tokio::time::timeout(Duration::from_secs(60), inbound.message())
                        .await
                        .context("no ack within 60 s")??,
                )
            } else {
                match tokio::time::timeout(Duration::from_millis(1), inbound.message()).await {
                    Ok(m) => Some(m?),
                    Err(_) => None,
                }
            };
            let Some(ack) = ack else { break };
            let Some(raw) = ack else {
                bail!("the collector closed the stream")
            };
            answered(raw, &mut in_flight, &tally);
        }
        if Instant::now() >= until {
            break;
        }
        // Acknowledgements as they come until the next second, so that each is timed
        // when it arrives.
        loop {
            tokio::select! {
                _ = tick.tick() => break,
                next = inbound.message() => {
                    let Some(raw) = next? else {
                        bail!("the collector closed the stream")
                    };
                    answered(raw, &mut in_flight, &tally);
                }
            }
        }
        second += 1;
        let now = unix_nanos();
        let spiking = second % spike_secs == 0;
        let mut out: Vec<(AgentBody, Sent)> = vec![(
            AgentBody::MetricWindow(window(now, spiking, agent.seed ^ second)),
            Sent::Window,
        )];
        if spiking {
            let event_id = format!("{:016x}{:016x}", mix(agent.seed ^ now), mix(now));
            out.push((
                AgentBody::Trigger(holmes_devtools::soak::honest::trigger(
                    event_id.clone(),
                    now,
                )),
                Sent::Trigger,
            ));
            tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sent
                .insert(event_id.clone(), (agent.service.clone(), Instant::now()));
            for extra in 0..=cli.extra_profiles {
                let profile_seed = mix(agent.seed ^ now ^ extra as u64);
                let (encoded, format) = pool.pick(profile_seed, &mut stream);
                let profile_id = format!("{:016x}{:016x}", mix(profile_seed), mix(!profile_seed));
                let pieces: Vec<&[u8]> = encoded.chunks(holmes_proto::MAX_CHUNK_BYTES).collect();
                for (index, piece) in pieces.iter().enumerate() {
                    let last = index + 1 == pieces.len();
                    out.push((
                        AgentBody::ProfileChunk(ProfileChunk {
                            profile_id: profile_id.clone(),
                            event_id: event_id.clone(),
                            kind: ProfileKind::Cpu,
                            chunk_index: index as u32,
                            chunk_count: pieces.len() as u32,
                            total_bytes: encoded.len() as u64,
                            data: piece.to_vec(),
                            started_unix_nanos: now,
                            duration: Duration::from_secs(2),
                            error: None,
                            labels: [("phase".to_owned(), "trigger".to_owned())].into(),
                            format,
                        }),
                        if last { Sent::Profile } else { Sent::Chunk },
                    ));
                }
            }
        }
        for (body, what) in out {
            seq += 1;
            tx.send(pb::AgentMessage::from(&AgentMessage { seq, body }))
                .await
                .context("the stream to the collector ended")?;
            in_flight.push_back(InFlight {
                seq,
                what,
                at: Instant::now(),
            });
        }
        let _ = start;
    }
    // Drain: everything sent acknowledged, for at most the grace period.
    let deadline = Instant::now() + cli.grace;
    while !in_flight.is_empty() && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), inbound.message()).await {
            Ok(Ok(Some(raw))) => answered(raw, &mut in_flight, &tally),
            Ok(Ok(None)) => bail!("the collector closed the stream"),
            Ok(Err(status)) => bail!("stream error: {status}"),
            Err(_) => break,
        }
    }
    if !in_flight.is_empty() {
        bail!(
            "{} messages of {} not acknowledged within {:?} after the run",
            in_flight.len(),
            agent.service,
            cli.grace
        );
    }
    drop(tx);
    Ok(())
}

/// Takes one message of the collector: an acknowledgement settles what it covers, a
/// skip (the capture budget) is counted. The profiles it names were sent already: this
/// agent sends a spike's profile right behind its trigger.
fn answered(raw: pb::CollectorMessage, in_flight: &mut VecDeque<InFlight>, tally: &Mutex<Tally>) {
    match CollectorMessage::try_from(raw) {
        Ok(CollectorMessage::Ack { seq: acked }) => settle(in_flight, acked, tally),
        Ok(CollectorMessage::SkipProfiles(skip)) => {
            tally.lock().unwrap_or_else(|p| p.into_inner()).skips_told +=
                skip.kinds.len().max(1) as u64;
        }
        _ => {}
    }
}

fn settle(in_flight: &mut VecDeque<InFlight>, acked: u64, tally: &Mutex<Tally>) {
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    while in_flight.front().is_some_and(|m| m.seq <= acked) {
        let Some(m) = in_flight.pop_front() else {
            break;
        };
        match m.what {
            Sent::Window => t.windows_acked += 1,
            Sent::Trigger => {
                t.triggers_acked += 1;
                t.stored.push(m.at.elapsed());
            }
            Sent::Profile => t.profiles_acked += 1,
            Sent::Chunk => {}
        }
    }
}
