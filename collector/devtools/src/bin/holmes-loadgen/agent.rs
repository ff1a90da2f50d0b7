//! The simulated agents: what each sends (the profiles encoded before the run), and how
//! it counts what the collector acknowledges.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use holmes_devtools::synthetic::{mix, trigger_chunks, ProfileFactory};
use holmes_proto::native::stream::{StreamEncoder, STREAM_HEADER};
use holmes_proto::native::NativeProfile;
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, Metric, MetricSeries, MetricWindow,
    ProfileFormat, Sample,
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
    /// `stream` when the stream has one (self-contained when it has none, as the agent
    /// sends to a collector that did not offer the form, or when the capture is too big
    /// for a stream's tables).
    fn pick(&self, seed: u64, stream: Option<&mut StreamEncoder>) -> (Vec<u8>, ProfileFormat) {
        match self.format {
            Format::Stream => {
                let i = (seed % self.natives.len().max(1) as u64) as usize;
                match (self.natives.get(i), stream) {
                    (Some(native), Some(stream)) if StreamEncoder::fits(native) => {
                        (stream.encode(native), ProfileFormat::NativeStream)
                    }
                    (Some(native), _) => (native.encode(), ProfileFormat::Native),
                    (None, _) => (Vec::new(), ProfileFormat::Native),
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

/// A message in flight: its sequence number, what it was, when it was first sent.
struct InFlight {
    seq: u64,
    what: Sent,
    at: Instant,
}

/// What a message in flight was, with what it takes to send it again on a new stream.
enum Sent {
    Window(AgentBody),
    Trigger(AgentBody),
    /// The last chunk of a profile: the whole profile, were it sent again.
    Profile(ProfileJob),
    /// A chunk that is not the last (sent again with its profile).
    Chunk,
}

/// One profile to send: which capture, under which ids and time.
#[derive(Clone)]
struct ProfileJob {
    seed: u64,
    profile_id: String,
    event_id: String,
    now: u64,
}

impl ProfileJob {
    /// The profile's messages: in the stream form through `stream` when there is one.
    fn messages(&self, pool: &Pool, stream: Option<&mut StreamEncoder>) -> Vec<(AgentBody, Sent)> {
        let (encoded, format) = pool.pick(self.seed, stream);
        let chunks = trigger_chunks(
            &encoded,
            format,
            (&self.profile_id, &self.event_id),
            self.now,
            Duration::from_secs(2),
        );
        let count = chunks.len();
        let mut out = Vec::with_capacity(count);
        for (index, chunk) in chunks.into_iter().enumerate() {
            out.push((
                AgentBody::ProfileChunk(chunk),
                if index + 1 == count {
                    Sent::Profile(self.clone())
                } else {
                    Sent::Chunk
                },
            ));
        }
        out
    }
}

/// One stream to the collector: where to send, what comes back, and the stream form's
/// tables when the collector offered the form on it.
struct Connection {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::CollectorMessage>,
    stream: Option<StreamEncoder>,
}

impl Connection {
    /// Opens a stream and says `Hello`.
    async fn open(
        cli: &Cli,
        channel: &tonic::transport::Channel,
        agent: &Agent,
        pool: &Pool,
        tally: &Mutex<Tally>,
    ) -> anyhow::Result<Connection> {
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
        let response = IngestClient::new(channel.clone())
            .connect(request)
            .await
            .context("the collector refused the stream")?;
        // The stream's tables, bounded as the agent bounds its own; none when the
        // collector does not offer the form on this stream (an older collector, or one
        // whose streams' tables are short of room): the agent then sends its profiles
        // self-contained.
        let offered = response.metadata().get(STREAM_HEADER).is_some();
        let wants = matches!(pool.format, Format::Stream);
        if wants && !offered {
            tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .streams_not_offered += 1;
        }
        Ok(Connection {
            tx,
            inbound: response.into_inner(),
            stream: (wants && offered).then(StreamEncoder::sender),
        })
    }
}

/// What the collector's side of a stream said.
enum Heard {
    Message(pb::CollectorMessage),
    /// The collector ended the stream for want of room (RESOURCE_EXHAUSTED), as it does
    /// when its streams' tables outgrow their budget: the agent reconnects.
    Ended(String),
}

fn heard(next: Result<Option<pb::CollectorMessage>, tonic::Status>) -> anyhow::Result<Heard> {
    match next {
        Ok(Some(m)) => Ok(Heard::Message(m)),
        Ok(None) => bail!("the collector closed the stream"),
        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
            Ok(Heard::Ended(status.message().to_owned()))
        }
        Err(status) => bail!("stream error: {status}"),
    }
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

/// Runs one agent until `until`; records into `tally`. A stream the collector ends for
/// want of room is opened again, and what it had not acknowledged sent again on the new
/// one (a profile whole, in the new stream's form), as the agent's spool does.
pub(crate) async fn run_agent(
    cli: Arc<Cli>,
    agent: Agent,
    pool: Arc<Pool>,
    tally: Arc<Mutex<Tally>>,
    until: Instant,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(cli.ingest.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", cli.ingest))?;
    let conn = Connection::open(&cli, &channel, &agent, &pool, &tally).await?;
    let mut link = Link {
        cli: &cli,
        channel,
        agent: &agent,
        pool: &pool,
        tally: &tally,
        conn,
        in_flight: VecDeque::new(),
        seq: 0,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let offset = Duration::from_millis(mix(agent.seed) % 1000);
    tokio::time::sleep(offset).await;
    let mut second = 0u64;
    // Instances of one service spike together (within a second), as a fleet does.
    let spike_secs = cli.spike_every.as_secs().max(2);
    'run: loop {
        // Acks first, without waiting, then room to send.
        loop {
            let next = if link.in_flight.len() >= cli.in_flight.max(1) {
                Some(
                    tokio::time::timeout(Duration::from_secs(60), link.conn.inbound.message())
                        .await
                        .context("no ack within 60 s")?,
                )
            } else {
                tokio::time::timeout(Duration::from_millis(1), link.conn.inbound.message())
                    .await
                    .ok()
            };
            let Some(next) = next else { break };
            link.take(next).await?;
        }
        if Instant::now() >= until {
            break;
        }
        // Acknowledgements as they come until the next second, so that each is timed
        // when it arrives.
        loop {
            let next = tokio::select! {
                _ = tick.tick() => break,
                next = link.conn.inbound.message() => next,
            };
            if link.take(next).await? {
                continue 'run;
            }
        }
        second += 1;
        let now = unix_nanos();
        let spiking = second % spike_secs == 0;
        let mut out: Vec<(AgentBody, Sent)> = Vec::new();
        let window = AgentBody::MetricWindow(window(now, spiking, agent.seed ^ second));
        out.push((window.clone(), Sent::Window(window)));
        if spiking {
            let event_id = format!("{:016x}{:016x}", mix(agent.seed ^ now), mix(now));
            let trigger = AgentBody::Trigger(holmes_devtools::soak::honest::trigger(
                event_id.clone(),
                now,
            ));
            out.push((trigger.clone(), Sent::Trigger(trigger)));
            tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sent
                .insert(event_id.clone(), (agent.service.clone(), Instant::now()));
            for extra in 0..=cli.extra_profiles {
                let profile_seed = mix(agent.seed ^ now ^ extra as u64);
                let job = ProfileJob {
                    seed: profile_seed,
                    profile_id: format!("{:016x}{:016x}", mix(profile_seed), mix(!profile_seed)),
                    event_id: event_id.clone(),
                    now,
                };
                out.extend(job.messages(&pool, link.conn.stream.as_mut()));
            }
        }
        // Should the stream have ended, its status says why: read next round.
        let _ended = link.send(out, Instant::now()).await;
    }
    // Drain: everything sent acknowledged, for at most the grace period.
    let deadline = Instant::now() + cli.grace;
    while !link.in_flight.is_empty() && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), link.conn.inbound.message()).await {
            Ok(next) => {
                link.take(next).await?;
            }
            Err(_) => break,
        }
    }
    if !link.in_flight.is_empty() {
        bail!(
            "{} messages of {} not acknowledged within {:?} after the run",
            link.in_flight.len(),
            agent.service,
            cli.grace
        );
    }
    Ok(())
}

/// One agent's side of the collector: its stream, what is in flight on it (and on the
/// streams before it, not yet acknowledged), the last sequence number sent.
struct Link<'a> {
    cli: &'a Cli,
    channel: tonic::transport::Channel,
    agent: &'a Agent,
    pool: &'a Pool,
    tally: &'a Mutex<Tally>,
    conn: Connection,
    in_flight: VecDeque<InFlight>,
    seq: u64,
}

impl Link<'_> {
    /// Takes what the collector's side of the stream gave: a message, or the end of the
    /// stream for want of room, after which the stream is opened again (true).
    async fn take(
        &mut self,
        next: Result<Option<pb::CollectorMessage>, tonic::Status>,
    ) -> anyhow::Result<bool> {
        match heard(next)? {
            Heard::Message(raw) => {
                answered(raw, &mut self.in_flight, self.tally);
                Ok(false)
            }
            Heard::Ended(why) => {
                self.reconnect(&why).await?;
                Ok(true)
            }
        }
    }

    /// Sends `out` under the next sequence numbers, each in flight from `at`. Should the
    /// stream have ended, the rest is kept in flight unsent, to go again on the next
    /// stream, and the result says the stream ended.
    async fn send(&mut self, out: Vec<(AgentBody, Sent)>, at: Instant) -> Result<(), StreamEnded> {
        let mut ended = false;
        for (body, what) in out {
            self.seq += 1;
            let seq = self.seq;
            self.in_flight.push_back(InFlight { seq, what, at });
            if !ended {
                let message = pb::AgentMessage::from(&AgentMessage { seq, body });
                ended = self.conn.tx.send(message).await.is_err();
            }
        }
        if ended {
            Err(StreamEnded)
        } else {
            Ok(())
        }
    }

    /// Opens a new stream after the collector ended the last one (`why`), and sends on
    /// it again what the old one had not acknowledged: metric windows and triggers as
    /// they were, profiles whole in the new stream's form. Their latency still counts
    /// from when they were first sent.
    async fn reconnect(&mut self, why: &str) -> anyhow::Result<()> {
        self.tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reconnects += 1;
        tracing::debug!(service = %self.agent.service, instance = self.agent.instance, why, "the collector ended the stream; reconnecting");
        self.conn =
            Connection::open(self.cli, &self.channel, self.agent, self.pool, self.tally).await?;
        for m in std::mem::take(&mut self.in_flight) {
            let out = match m.what {
                Sent::Window(body) => vec![(body.clone(), Sent::Window(body))],
                Sent::Trigger(body) => vec![(body.clone(), Sent::Trigger(body))],
                Sent::Profile(job) => job.messages(self.pool, self.conn.stream.as_mut()),
                Sent::Chunk => Vec::new(),
            };
            self.send(out, m.at)
                .await
                .context("the new stream to the collector ended")?;
        }
        Ok(())
    }
}

/// The stream to the collector ended while sending.
#[derive(Debug)]
struct StreamEnded;

impl std::fmt::Display for StreamEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the stream to the collector ended")
    }
}

impl std::error::Error for StreamEnded {}

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
            Sent::Window(_) => t.windows_acked += 1,
            Sent::Trigger(_) => {
                t.triggers_acked += 1;
                t.stored.push(m.at.elapsed());
            }
            Sent::Profile(_) => t.profiles_acked += 1,
            Sent::Chunk => {}
        }
    }
}
