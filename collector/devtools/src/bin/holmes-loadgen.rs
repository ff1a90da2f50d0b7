//! `holmes-loadgen`: a simulated fleet against a running collector.
//!
//! N agents (`--services` × `--instances`) speak `holmes.v1` over gRPC as the agent does:
//! `Hello`, a `MetricWindow` every second (CPU, memory, RSS, threads, tasks), and, every
//! `--spike-every`, a CPU spike on every instance of a service at once: a `TriggerEvent`
//! followed by its CPU profile (1000 samples of a realistic Rust service's stacks,
//! `holmes_devtools::synthetic`), in the agent's own form (`--format native`, the default)
//! or as gzipped pprof. Each agent keeps at most `--in-flight` messages unacknowledged,
//! like the agent's bounded spool.
//!
//! The profiles are encoded before the agents start (a pool of `--pool` captures of the
//! fleet's builds, each sent under its own ids and times): a real agent captures on its
//! own machine, so the simulated ones must not spend the measured machine's CPU at the
//! moment of a spike. A trigger goes out the moment its spike is seen, before its
//! profiles, as the agent sends it.
//!
//! It reports sustained throughput (profiles, samples, metric windows and trigger events
//! acknowledged per second), trigger → stored latency (send → ack), trigger → incident
//! latency (send → the event listed in an incident by the query API, polled; triggers of
//! the first `--warmup` apart, a fresh store's first stacks), suspect-ready
//! latency (an incident's first trigger sent → its suspects stored, polled), the captures
//! the incidents skipped by the fleet's capture budget and how many the agents were told
//! to skip, and the collector processes' memory (`--collector-pid`, peak RSS). `--json`
//! prints the same as one JSON object, for scripts (`deploy/dev/loadgen.sh`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use holmes_cli::api_client::{ApiClient, ClientOptions};
use holmes_devtools::synthetic::{mix, ProfileFactory, SAMPLES_PER_PROFILE};
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, Metric, MetricSeries, MetricWindow,
    ProfileChunk, ProfileFormat, ProfileKind, Sample, TriggerEvent, TriggerReason,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "holmes-loadgen",
    version,
    about = "Simulated agents against a running Holmes collector: throughput, latency, memory"
)]
struct Cli {
    /// The collector's gRPC ingest endpoint (an `all` or `ingest` node).
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    ingest: String,
    /// The query API polled for incidents (an `all` or `process` node).
    #[arg(long, default_value = "http://127.0.0.1:7071")]
    query: String,
    /// Services simulated.
    #[arg(long, default_value_t = 5)]
    services: usize,
    /// Instances (agents) per service.
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// How long the agents send.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    duration: Duration,
    /// How often each service spikes (every instance fires a trigger and sends a profile).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    spike_every: Duration,
    /// Extra CPU profiles per agent per spike (periodic captures), sent after the trigger's.
    #[arg(long, default_value_t = 0)]
    extra_profiles: usize,
    /// Distinct stacks per service the profiles are drawn from.
    #[arg(long, default_value_t = 4000)]
    stacks: usize,
    /// The form profiles are sent in: `native` (the agent's own) or `pprof` (gzipped).
    #[arg(long, value_enum, default_value_t = Format::Native)]
    format: Format,
    /// Distinct captures encoded before the run, sent in turn (each with its own ids).
    #[arg(long, default_value_t = 64)]
    pool: usize,
    /// Unacknowledged messages an agent keeps in flight at most.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Triggers sent in the first this-long (a fresh store: every stack written for the
    /// first time, caches and the broker's consumer group cold) are timed apart: the
    /// trigger → incident latencies reported are those after it, the warm-up's worst
    /// is reported on its own.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    warmup: Duration,
    /// How long to wait after the agents stop for the last incidents.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    grace: Duration,
    /// Ingest token (`authorization: Bearer`), if the collector requires one.
    #[arg(long, env = "HOLMES_TOKEN")]
    token: Option<String>,
    /// Query API token, if the API requires one.
    #[arg(long, env = "HOLMES_API_TOKEN")]
    api_token: Option<String>,
    /// Collector processes whose memory to report (repeat for several).
    #[arg(long = "collector-pid")]
    collector_pids: Vec<u32>,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The form the simulated agents send their profiles in.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `holmes.v1.NativeProfile`, as the agent sends it.
    Native,
    /// Gzipped pprof, as foreign clients and older agents send it.
    Pprof,
}

/// Profiles encoded before the run, in the form the agents send.
struct Pool {
    profiles: Vec<Vec<u8>>,
    format: ProfileFormat,
}

impl Pool {
    /// `size` captures (at least one) spread over the fleet's builds.
    fn new(factory: &ProfileFactory, size: usize, format: Format) -> Self {
        let now = unix_nanos();
        let profiles = (0..size.max(1))
            .map(|i| {
                let seed = mix(i as u64 + 1);
                let capture = factory.capture(seed, now, i, mix(seed));
                match format {
                    Format::Native => capture.native.encode(),
                    Format::Pprof => capture.pprof_gzip,
                }
            })
            .collect();
        let format = match format {
            Format::Native => ProfileFormat::Native,
            Format::Pprof => ProfileFormat::PprofGzip,
        };
        Pool { profiles, format }
    }

    /// The capture for `seed`.
    fn pick(&self, seed: u64) -> &[u8] {
        let i = (seed % self.profiles.len() as u64) as usize;
        self.profiles.get(i).map_or(&[], Vec::as_slice)
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What every agent records; shared.
#[derive(Default)]
struct Tally {
    /// Event id → when its trigger was sent.
    sent: HashMap<String, (String, Instant)>,
    /// Send → ack of trigger events.
    stored: Vec<Duration>,
    profiles_acked: u64,
    windows_acked: u64,
    triggers_acked: u64,
    /// Captures the collector told agents not to send (`SkipProfiles`, by kind).
    skips_told: u64,
    errors: Vec<String>,
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

struct Agent {
    service: String,
    instance: usize,
    seed: u64,
}

/// Runs one agent until `until`; records into `tally`.
async fn run_agent(
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
    let mut inbound = IngestClient::new(channel)
        .connect(request)
        .await
        .context("the collector refused the stream")?
        .into_inner();
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
                AgentBody::Trigger(TriggerEvent {
                    event_id: event_id.clone(),
                    metric: Some(Metric::CpuPercent),
                    reason: TriggerReason::Diff,
                    current: 92.0,
                    window: (0..10)
                        .map(|i| Sample {
                            unix_nanos: now - (9 - i) * 1_000_000_000,
                            value: if i == 9 { 92.0 } else { 20.0 },
                        })
                        .collect(),
                    rule: None,
                    unix_nanos: now,
                    planned: vec![ProfileKind::Cpu],
                    request_id: None,
                }),
                Sent::Trigger,
            ));
            tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sent
                .insert(event_id.clone(), (agent.service.clone(), Instant::now()));
            for extra in 0..=cli.extra_profiles {
                let profile_seed = mix(agent.seed ^ now ^ extra as u64);
                let encoded = pool.pick(profile_seed);
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
                            format: pool.format,
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

/// What [`watch_incidents`] saw.
#[derive(Default)]
struct Watched {
    /// Trigger sent → listed in an incident.
    to_incident: Vec<Duration>,
    /// Trigger sent → listed in an incident, for triggers sent during the warm-up.
    warmup_to_incident: Vec<Duration>,
    /// Triggers never listed.
    missing: usize,
    /// An incident's first trigger sent → its suspects stored.
    to_suspects: Vec<Duration>,
    /// Incidents whose suspects were never stored.
    without_suspects: usize,
    /// Incidents seen.
    incidents: usize,
    /// Captures skipped by the budget, summed over the incidents.
    skipped_captures: u64,
}

/// Polls the query API until every trigger sent is listed in an incident and every
/// incident has its suspects (or the run and its grace period end).
async fn watch_incidents(
    cli: Arc<Cli>,
    services: Vec<String>,
    tally: Arc<Mutex<Tally>>,
    since: String,
    sending_until: Instant,
    warm_from: Instant,
) -> anyhow::Result<Watched> {
    let client = ApiClient::with_options(
        &cli.query,
        &ClientOptions {
            token: cli.api_token.clone(),
            ..ClientOptions::default()
        },
    )?;
    let mut seen: HashSet<String> = HashSet::new();
    let (mut latencies, mut warming) = (Vec::new(), Vec::new());
    // Incident id → when its first trigger was sent, until its suspects are stored.
    let mut awaiting: HashMap<String, Instant> = HashMap::new();
    let mut ready: HashSet<String> = HashSet::new();
    let mut to_suspects = Vec::new();
    let mut skipped: HashMap<String, u64> = HashMap::new();
    let give_up = sending_until + cli.grace;
    loop {
        for service in &services {
            let list = match client.incidents(Some(service), &since, None).await {
                Ok(list) => list,
                Err(err) => {
                    tracing::warn!(service, error = %err, "cannot list incidents");
                    continue;
                }
            };
            let now = Instant::now();
            let t = tally.lock().unwrap_or_else(|p| p.into_inner());
            for incident in &list.incidents {
                skipped.insert(incident.incident_id.clone(), incident.skipped_captures);
                for id in &incident.event_ids {
                    let Some((_, at)) = t.sent.get(id) else {
                        continue;
                    };
                    if !seen.contains(id) {
                        let latency = now.saturating_duration_since(*at);
                        if *at < warm_from {
                            warming.push(latency);
                        } else {
                            latencies.push(latency);
                        }
                        seen.insert(id.clone());
                    }
                    if !ready.contains(&incident.incident_id) {
                        let first = awaiting.entry(incident.incident_id.clone()).or_insert(*at);
                        *first = (*first).min(*at);
                    }
                }
            }
        }
        let pending: Vec<(String, Instant)> =
            awaiting.iter().map(|(id, at)| (id.clone(), *at)).collect();
        for (id, first) in pending {
            match client.incident(&id).await {
                Ok(detail) if detail.suspects_computed.is_some() => {
                    to_suspects.push(first.elapsed());
                    awaiting.remove(&id);
                    ready.insert(id);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(incident = %id, error = %err, "cannot read the incident")
                }
            }
        }
        let missing = {
            let t = tally.lock().unwrap_or_else(|p| p.into_inner());
            t.sent.keys().filter(|id| !seen.contains(*id)).count()
        };
        let done = missing == 0 && awaiting.is_empty();
        if Instant::now() >= give_up || (Instant::now() >= sending_until && done) {
            return Ok(Watched {
                to_incident: latencies,
                warmup_to_incident: warming,
                missing,
                to_suspects,
                without_suspects: awaiting.len(),
                incidents: skipped.len(),
                skipped_captures: skipped.values().sum(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resident set size now and at its peak, bytes, of a process.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Arc::new(Cli::parse());
    if cli.services == 0 || cli.instances == 0 {
        bail!("--services and --instances must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Arc<Cli>) -> anyhow::Result<()> {
    let factory = ProfileFactory::new(cli.stacks);
    let pool = Arc::new(Pool::new(&factory, cli.pool, cli.format));
    drop(factory);
    let services: Vec<String> = (0..cli.services).map(|s| format!("svc-{s:02}")).collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let since =
        humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(5)).to_string();
    let start = Instant::now();
    let until = start + cli.duration;
    let mut agents = tokio::task::JoinSet::new();
    for (s, service) in services.iter().enumerate() {
        for instance in 0..cli.instances {
            let agent = Agent {
                service: service.clone(),
                instance,
                seed: mix((s * 10_000 + instance) as u64 + 1),
            };
            agents.spawn(run_agent(
                Arc::clone(&cli),
                agent,
                Arc::clone(&pool),
                Arc::clone(&tally),
                start,
                until,
            ));
        }
    }
    let watcher = tokio::spawn(watch_incidents(
        Arc::clone(&cli),
        services.clone(),
        Arc::clone(&tally),
        since,
        until,
        start + cli.warmup,
    ));
    // Memory of the collector processes, sampled every second while agents run.
    let pids = cli.collector_pids.clone();
    let sampler = tokio::spawn(async move {
        let mut peak: HashMap<u32, u64> = HashMap::new();
        while Instant::now() < until {
            for &pid in &pids {
                if let Some((rss, _)) = memory(pid) {
                    let p = peak.entry(pid).or_insert(0);
                    *p = (*p).max(rss);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        peak
    });
    let mut failures = Vec::new();
    while let Some(done) = agents.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(err)) => failures.push(format!("{err:#}")),
            Err(err) => failures.push(err.to_string()),
        }
    }
    let sending = start
        .elapsed()
        .min(cli.duration)
        .max(Duration::from_secs(1));
    let acked_at = start.elapsed();
    let mut watched = watcher.await??;
    let peak = sampler.await?;
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    t.errors.extend(failures);
    t.stored.sort();
    watched.to_incident.sort();
    watched.to_suspects.sort();
    let (to_incident, missing) = (&watched.to_incident, watched.missing);
    let secs = acked_at.as_secs_f64().max(sending.as_secs_f64());
    let profiles_per_s = t.profiles_acked as f64 / secs;
    let memory: Vec<(u32, u64, u64)> = cli
        .collector_pids
        .iter()
        .map(|&pid| {
            let (rss, hwm) = memory(pid).unwrap_or((0, 0));
            (pid, peak.get(&pid).copied().unwrap_or(rss).max(rss), hwm)
        })
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if cli.json {
        let value = serde_json::json!({
            "agents": cli.services * cli.instances,
            "services": cli.services,
            "seconds": secs,
            "profiles_acked": t.profiles_acked,
            "profiles_per_s": profiles_per_s,
            "samples_per_s": profiles_per_s * SAMPLES_PER_PROFILE as f64,
            "windows_per_s": t.windows_acked as f64 / secs,
            "triggers_sent": t.sent.len(),
            "triggers_acked": t.triggers_acked,
            "trigger_stored_p50_ms": ms(percentile(&t.stored, 0.5)),
            "trigger_stored_p99_ms": ms(percentile(&t.stored, 0.99)),
            "trigger_incident_p50_ms": ms(percentile(to_incident, 0.5)),
            "trigger_incident_p99_ms": ms(percentile(to_incident, 0.99)),
            "warmup_trigger_incident_max_ms": ms(watched.warmup_to_incident.iter().max().copied().unwrap_or_default()),
            "triggers_without_incident": missing,
            "incidents": watched.incidents,
            "trigger_suspects_p50_ms": ms(percentile(&watched.to_suspects, 0.5)),
            "trigger_suspects_p99_ms": ms(percentile(&watched.to_suspects, 0.99)),
            "incidents_without_suspects": watched.without_suspects,
            "captures_skipped_by_budget": watched.skipped_captures,
            "captures_agents_told_to_skip": t.skips_told,
            "collectors": memory.iter().map(|(pid, rss, hwm)| serde_json::json!({
                "pid": pid, "rss_peak_bytes": rss, "vm_hwm_bytes": hwm,
            })).collect::<Vec<_>>(),
            "errors": t.errors,
        });
        println!("{value}");
    } else {
        println!(
            "{} agents ({} services x {}), {:.0} s: {} profiles acknowledged, {:.1} profiles/s, {:.0} samples/s, {:.1} metric windows/s",
            cli.services * cli.instances,
            cli.services,
            cli.instances,
            secs,
            t.profiles_acked,
            profiles_per_s,
            profiles_per_s * SAMPLES_PER_PROFILE as f64,
            t.windows_acked as f64 / secs
        );
        println!(
            "trigger -> stored (ack): p50 {:.0} ms, p99 {:.0} ms ({} of {} acknowledged)",
            ms(percentile(&t.stored, 0.5)),
            ms(percentile(&t.stored, 0.99)),
            t.triggers_acked,
            t.sent.len()
        );
        println!(
            "trigger -> incident (listed by the query API): p50 {:.0} ms, p99 {:.0} ms after the {:?} warm-up (its worst {:.0} ms); {} triggers in no incident",
            ms(percentile(to_incident, 0.5)),
            ms(percentile(to_incident, 0.99)),
            cli.warmup,
            ms(watched.warmup_to_incident.iter().max().copied().unwrap_or_default()),
            missing
        );
        println!(
            "first trigger -> suspects stored: p50 {:.0} ms, p99 {:.0} ms over {} incidents; {} without suspects",
            ms(percentile(&watched.to_suspects, 0.5)),
            ms(percentile(&watched.to_suspects, 0.99)),
            watched.incidents,
            watched.without_suspects
        );
        println!(
            "capture budget: {} captures skipped by the incidents, {} the agents were told to skip",
            watched.skipped_captures, t.skips_told
        );
        for (pid, rss, hwm) in &memory {
            println!(
                "collector pid {pid}: peak RSS during the run {:.0} MiB (VmHWM {:.0} MiB)",
                *rss as f64 / 1048576.0,
                *hwm as f64 / 1048576.0
            );
        }
        for e in &t.errors {
            println!("error: {e}");
        }
    }
    if !t.errors.is_empty() {
        bail!("{} agents failed", t.errors.len());
    }
    Ok(())
}
