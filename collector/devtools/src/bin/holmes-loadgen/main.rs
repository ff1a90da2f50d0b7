//! `holmes-loadgen`: a simulated fleet against a running collector.
//!
//! N agents (`--services` × `--instances`) speak `holmes.v1` over gRPC as the agent does:
//! `Hello`, a `MetricWindow` every second (CPU, memory, RSS, threads, tasks), and, every
//! `--spike-every`, a CPU spike on every instance of a service at once: a `TriggerEvent`
//! followed by its CPU profile (1000 samples of a realistic Rust service's stacks,
//! `holmes_devtools::synthetic`), in the agent's stream form (`--format stream`, the
//! default: each stack defined once per stream, on the streams the collector offers it;
//! self-contained on the others, as the agent does), self-contained (`--format native`)
//! or as gzipped pprof. Each agent keeps at most `--in-flight` messages unacknowledged,
//! like the agent's bounded spool.
//!
//! The profiles are captured before the agents start (a pool of `--pool` captures of the
//! fleet's builds, each sent under its own ids and times): a real agent captures on its
//! own machine, so the simulated ones must not spend the measured machine's CPU at the
//! moment of a spike. The stream form alone is encoded as it goes out, by each agent
//! against its own stream's tables, as the agent's sender does. A trigger goes out the moment its spike is seen, before its
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

mod agent;
mod incidents;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Parser;
use holmes_devtools::soak::collector::CollectorProcess;
use holmes_devtools::synthetic::{mix, ProfileFactory, SAMPLES_PER_PROFILE};

use agent::{run_agent, Agent, Format, Pool};
use incidents::watch_incidents;

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
    /// The form profiles are sent in: `stream` (the agent's stream form, each stack
    /// defined once per stream, as the agent sends to a collector that reads it),
    /// `native` (the agent's self-contained form) or `pprof` (gzipped).
    #[arg(long, value_enum, default_value_t = Format::Stream)]
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
    /// Agents sending the stream form (`--format stream`) that the collector did not
    /// offer it on connect: they sent self-contained profiles.
    streams_not_offered: u64,
    /// Streams the collector ended for want of room (RESOURCE_EXHAUSTED), each opened
    /// again with what it had not acknowledged.
    reconnects: u64,
    errors: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    holmes_devtools::init_logging(std::io::stderr);
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
                if let Some((rss, _)) = CollectorProcess::memory_of(pid) {
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
            let (rss, hwm) = CollectorProcess::memory_of(pid).unwrap_or((0, 0));
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
            "streams_not_offered_stream_form": t.streams_not_offered,
            "reconnects": t.reconnects,
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
        if matches!(cli.format, Format::Stream) {
            println!(
                "stream form: not offered on {} streams (their agents sent self-contained profiles); {} streams ended by the collector for want of room and opened again",
                t.streams_not_offered, t.reconnects
            );
        }
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
