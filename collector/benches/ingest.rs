//! Ingest benchmark: simulated agents of one service stream a realistic day of CPU
//! profiles over loopback gRPC into a real in-process collector, per backend and input
//! format; then the service's flame graph over the day is asked for.
//!
//! ```text
//! cargo bench -p holmes-collector --bench ingest                 # full run (minutes)
//! HOLMES_BENCH_QUICK=1 cargo bench -p holmes-collector --bench ingest   # smoke run (seconds)
//! deploy/dev/bench.sh                                            # with throw-away ClickHouse servers
//! ```
//!
//! The day (`holmes_devtools::synthetic`): `HOLMES_BENCH_AGENTS` instances (default 50)
//! of one service send `HOLMES_BENCH_PROFILES` CPU profiles in all (default 1500, started
//! over the last 24 hours), each of 1000 samples drawn with Zipf-like popularity from a
//! pool of 4000 stacks 10–40 frames deep, down into libc and the vDSO. The fleet runs
//! two binaries, each deployed in two versions over the day, and its processes restart
//! every six hours. Each profile goes in one of three forms: the agent's stream form
//! (each stack defined once per stream, encoded as the agent's sender does it, as it goes
//! out), the agent's self-contained form (`NativeProfile`: every frame as module +
//! offset) or pprof as agents sent before (gzip; the binary's frames symbolized at
//! absolute addresses, libc's and the vDSO's unsymbolized in their mappings). Each agent
//! sends a profile, waits for the acknowledgement that covers it, then sends the next.
//!
//! Runs, each on a fresh store: SQLite (`synchronous = FULL`, the default, and `NORMAL`
//! for what FULL costs), ClickHouse 18.16 (`HOLMES_TEST_CLICKHOUSE_URL`) and a current
//! ClickHouse (`HOLMES_TEST_CLICKHOUSE_CURRENT_URL`), each with every input. Reported per run: profiles/s over the run; CPU seconds of the collector (this
//! process minus the agents' runtime threads, counted apart) and of the ClickHouse
//! server (`HOLMES_CH_PID` / `HOLMES_CHDB_PID`), hence profiles/s per core; last chunk →
//! ack p50/p99; bytes stored per profile by table and in all, against the raw gzip pprof
//! of the same profiles (ClickHouse: as written and after `OPTIMIZE … FINAL`; SQLite:
//! `dbstat`, indexes included); and, after the runs in the agent's forms, the latency of
//! `GET /api/v1/services/orders/flamegraph.svg` over the day (every instance merged).
//! `HOLMES_BENCH_BACKENDS=sqlite,ch18,chcurrent` and
//! `HOLMES_BENCH_INPUTS=stream,native,pprof` select runs. Then the same profiles come in as Pyroscope pushes and OTLP exports
//! (`ingest/foreign.rs`; `HOLMES_BENCH_FOREIGN=0` skips it), in a table beside the
//! agent's SQLite row. Nothing is asserted: these are figures to read, on machines too
//! noisy for thresholds.

// The allocator of the `holmes-collector` binary (its `jemalloc` feature, on by default).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Pyroscope and OTLP clients sending the same profiles (a section of its own).
#[path = "ingest/foreign.rs"]
mod foreign;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holmes_cli::api_client::ApiClient;
use holmes_collector::config::{Config, StoreKind};
use holmes_collector::process::normalize::{normalize, Limits, StreamTables};
use holmes_collector::Server;
use holmes_devtools::synthetic::{
    build_of, mix, process_of, trigger_chunks, ProfileFactory, FLEET, SAMPLES_PER_PROFILE, ZIPF_S,
};
use holmes_proto::native::stream::{StreamEncoder, STREAM_HEADER};
use holmes_proto::native::NativeProfile;
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::{pb, AgentBody, AgentMessage, CollectorMessage, Hello, ProfileFormat};
use holmes_storage::clickhouse::ClickHouseSettings;
use holmes_storage::sqlite::Synchronous;
use holmes_storage::{KnownByKey, KnownStack, LocationByKey, StackByKey, NO_LOCATIONS_KEPT};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Service every simulated agent belongs to.
const SERVICE: &str = "orders";
/// Thread-name prefix of the agents' runtime, so their CPU is counted apart.
const AGENT_THREAD: &str = "bench-agent";
const DAY_NANOS: u64 = 86_400_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Params {
    agents: usize,
    profiles: usize,
    pool: usize,
    flamegraphs: usize,
}

impl Params {
    fn from_env() -> Params {
        let quick = std::env::var("HOLMES_BENCH_QUICK").is_ok_and(|v| v == "1")
            || std::env::args().any(|a| a == "--quick");
        let number = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or(default)
        };
        let (agents, profiles, pool, flamegraphs) = if quick {
            (8, 120, 2000, 3)
        } else {
            (50, 1500, 4000, 10)
        };
        Params {
            agents: number("HOLMES_BENCH_AGENTS", agents),
            profiles: number("HOLMES_BENCH_PROFILES", profiles),
            pool: number("HOLMES_BENCH_POOL", pool),
            flamegraphs,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The day of captures
// ---------------------------------------------------------------------------------------

/// One profile ready to send, in both forms.
struct GenProfile {
    id: String,
    started_unix_nanos: u64,
    native: Vec<u8>,
    pprof: Vec<u8>,
}

/// The day: `n` profiles, started over the last 24 hours in order; profile `i` comes from
/// instance `i % agents`, of the build and process that instance runs at its time.
fn generate(params: &Params) -> (Vec<GenProfile>, usize, u64) {
    let factory = ProfileFactory::new(params.pool);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let first = now - DAY_NANOS;
    let step = DAY_NANOS / params.profiles as u64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out: Vec<Option<GenProfile>> = (0..params.profiles).map(|_| None).collect();
    std::thread::scope(|scope| {
        let factory = &factory;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..params.profiles)
                        .step_by(threads)
                        .map(|i| {
                            let started = first + i as u64 * step;
                            let second = (started - first) / 1_000_000_000;
                            let instance = i % params.agents;
                            let capture = factory.capture(
                                i as u64 + 1,
                                started,
                                build_of(instance, params.agents, second),
                                process_of(instance, second),
                            );
                            let id = format!("{:016x}{:016x}", mix(i as u64), mix(!(i as u64)));
                            (
                                i,
                                GenProfile {
                                    id,
                                    started_unix_nanos: started,
                                    native: capture.native.encode(),
                                    pprof: capture.pprof_gzip,
                                },
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, p) in h.join().unwrap() {
                out[i] = Some(p);
            }
        }
    });
    let functions = factory.functions();
    (
        out.into_iter().map(Option::unwrap).collect(),
        functions,
        first,
    )
}

// ---------------------------------------------------------------------------------------
// CPU accounting
// ---------------------------------------------------------------------------------------

fn timeval_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// User + system CPU seconds of `who` (`RUSAGE_SELF`, `RUSAGE_THREAD`).
fn rusage_secs(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    timeval_secs(ru.ru_utime) + timeval_secs(ru.ru_stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (command name, user + system CPU seconds) from a `/proc/.../stat` file.
fn proc_stat(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime); the split starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / clock_ticks()))
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| proc_stat(&format!("{}/stat", e.path().display())))
        .filter(|(comm, _)| comm.starts_with(prefix))
        .map(|(_, cpu)| cpu)
        .sum()
}

/// CPU seconds of the process whose pid the variable `pid_var` names, if any.
fn server_cpu(pid_var: &str) -> Option<f64> {
    let pid = std::env::var(pid_var).ok()?;
    proc_stat(&format!("/proc/{pid}/stat")).map(|(_, cpu)| cpu)
}

/// CPU used so far: the whole process, the agents' threads, the ClickHouse server.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    process: f64,
    agents: f64,
    server: Option<f64>,
}

impl CpuMark {
    fn now(pid_var: Option<&str>) -> CpuMark {
        CpuMark {
            process: rusage_secs(libc::RUSAGE_SELF),
            agents: threads_cpu(AGENT_THREAD),
            server: pid_var.and_then(server_cpu),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Simulated agents
// ---------------------------------------------------------------------------------------

fn hello(instance: usize) -> Hello {
    Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: SERVICE.to_owned(),
        instance_id: format!("orders-{instance:03}"),
        host: format!("node-{:02}", instance % 12),
        pid: 1000 + instance as u32,
        labels: [("region".to_owned(), "eu-west-1".to_owned())].into(),
        agent_version: "0.1.0".to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: 1,
        collect_interval: Duration::from_secs(1),
        rules_version: 0,
        executable: None,
        debuginfo_upload: false,
    }
}

/// Which form the agents send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// The agent's own form, each profile self-contained (agents before the stream
    /// form, and what an agent sends a collector that does not read it).
    Native,
    /// The agent's stream form: each stack once per stream, as the agent sends it.
    Stream,
    /// gzipped pprof.
    Pprof,
}

impl Input {
    const ALL: [Input; 3] = [Input::Stream, Input::Native, Input::Pprof];

    fn name(self) -> &'static str {
        match self {
            Input::Native => "native",
            Input::Stream => "stream",
            Input::Pprof => "pprof",
        }
    }
}

/// Sends the profiles of `indices` one at a time, each once the one before it is
/// acknowledged; returns the time from each profile's last chunk to its ack.
async fn run_agent(
    addr: SocketAddr,
    instance: usize,
    profiles: Arc<Vec<GenProfile>>,
    indices: Vec<usize>,
    input: Input,
) -> Vec<Duration> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let first = AgentMessage {
        seq: 0,
        body: AgentBody::Hello(hello(instance)),
    };
    tx.send(pb::AgentMessage::from(&first)).await.unwrap();
    let response = IngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .connect(tonic::Request::new(ReceiverStream::new(rx)))
        .await
        .unwrap();
    // As the agent does: the stream form only to a collector that reads it.
    let mut tables = (input == Input::Stream).then(|| {
        assert!(
            response.metadata().contains_key(STREAM_HEADER),
            "the collector reads the stream form"
        );
        StreamEncoder::new()
    });
    let mut inbound = response.into_inner();
    let mut seq = 0u64;
    let mut latencies = Vec::with_capacity(indices.len());
    for i in indices {
        let p = &profiles[i];
        let encoded;
        let (bytes, format) = match (input, &mut tables) {
            (Input::Stream, Some(tables)) => {
                // The agent's sender turns its queued profile into the stream form as
                // it goes out.
                let native = NativeProfile::decode(&p.native).expect("a generated profile");
                encoded = tables.encode(&native);
                (&encoded, ProfileFormat::NativeStream)
            }
            (Input::Pprof, _) => (&p.pprof, ProfileFormat::PprofGzip),
            _ => (&p.native, ProfileFormat::Native),
        };
        let chunks = trigger_chunks(
            bytes,
            format,
            (&p.id, &format!("bench-{instance}-{i}")),
            p.started_unix_nanos,
            Duration::from_secs(10),
        );
        for chunk in chunks {
            seq += 1;
            let msg = AgentMessage {
                seq,
                body: AgentBody::ProfileChunk(chunk),
            };
            tx.send(pb::AgentMessage::from(&msg)).await.unwrap();
        }
        let sent = Instant::now();
        loop {
            let raw = inbound
                .message()
                .await
                .expect("the stream stays healthy")
                .expect("the stream stays open");
            if let CollectorMessage::Ack { seq: acked } = CollectorMessage::try_from(raw).unwrap() {
                if acked >= seq {
                    break;
                }
            }
        }
        latencies.push(sent.elapsed());
    }
    latencies
}

// ---------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------

/// A store to run on.
#[derive(Debug, Clone)]
enum Target {
    Sqlite(Synchronous),
    ClickHouse {
        name: &'static str,
        url: String,
        pid_var: &'static str,
    },
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Sqlite(Synchronous::Full) => "SQLite (synchronous = FULL)".to_owned(),
            Target::Sqlite(Synchronous::Normal) => "SQLite (synchronous = NORMAL)".to_owned(),
            Target::ClickHouse { name, .. } => (*name).to_owned(),
        }
    }
}

/// Stored bytes by table.
type TableBytes = Vec<(String, u64)>;

struct RunResult {
    target: String,
    input: Input,
    profiles: usize,
    wall: Duration,
    collector_cpu: f64,
    agents_cpu: f64,
    server_cpu: Option<f64>,
    latencies: Vec<Duration>,
    /// Bytes by table as written, and (ClickHouse) after merging every table to one
    /// part per partition.
    bytes: TableBytes,
    merged: Option<TableBytes>,
    /// Latencies of the service's flame graph over the day.
    flamegraph: Vec<Duration>,
    /// Profiles and stacks the flame graph merged (from its title).
    flamegraph_size: usize,
}

fn run(
    target: &Target,
    input: Input,
    params: &Params,
    profiles: &Arc<Vec<GenProfile>>,
    first: u64,
    collector_rt: &tokio::runtime::Runtime,
    agent_rt: &tokio::runtime::Runtime,
) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        max_message_bytes: 64 << 20,
        ..Config::default()
    };
    let database = format!("holmes_bench_{}_{}", std::process::id(), input.name());
    let mut pid_var = None;
    match target {
        Target::Sqlite(sync) => config.sqlite.synchronous = *sync,
        Target::ClickHouse {
            url, pid_var: p, ..
        } => {
            config.store = StoreKind::Clickhouse;
            config.clickhouse = ClickHouseSettings {
                url: Some(url.clone()),
                database: database.clone(),
                ..ClickHouseSettings::default()
            };
            if let Some(ms) = std::env::var("HOLMES_BENCH_BATCH_MS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                config.clickhouse.batch_delay = Duration::from_millis(ms);
            }
            pid_var = Some(*p);
        }
    }
    let server = collector_rt
        .block_on(Server::start(&config))
        .expect("the collector starts");
    let addr = server.grpc_addr();

    let mut per_agent: Vec<Vec<usize>> = vec![Vec::new(); params.agents];
    for i in 0..profiles.len() {
        per_agent[i % params.agents].push(i);
    }
    let before = CpuMark::now(pid_var);
    let started = Instant::now();
    let handles: Vec<_> = per_agent
        .into_iter()
        .enumerate()
        .map(|(instance, indices)| {
            agent_rt.spawn(run_agent(
                addr,
                instance,
                Arc::clone(profiles),
                indices,
                input,
            ))
        })
        .collect();
    let mut latencies = Vec::with_capacity(profiles.len());
    for h in handles {
        latencies.extend(agent_rt.block_on(h).unwrap());
    }
    let wall = started.elapsed();
    let after = CpuMark::now(pid_var);

    // The service's flame graph over the day, every instance merged.
    let mut flamegraph = Vec::new();
    let mut flamegraph_size = 0;
    if input != Input::Pprof {
        let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
        let since = holmes_collector::clock::rfc3339(first.saturating_sub(60_000_000_000));
        for _ in 0..params.flamegraphs {
            let t = Instant::now();
            let svg = collector_rt
                .block_on(api.service_flamegraph(SERVICE, "cpu", &since))
                .expect("the service's flame graph");
            flamegraph.push(t.elapsed());
            flamegraph_size = svg.len();
        }
    }
    collector_rt.block_on(server.shutdown());

    let agents_cpu = after.agents - before.agents;
    let server_cpu = match (before.server, after.server) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let (bytes, merged) = match target {
        Target::Sqlite(_) => (sqlite_bytes(dir.path()), None),
        Target::ClickHouse { url, .. } => {
            let (bytes, merged) = collector_rt.block_on(clickhouse_bytes(url, &database));
            (bytes, Some(merged))
        }
    };
    RunResult {
        target: target.name(),
        input,
        profiles: profiles.len(),
        wall,
        collector_cpu: (after.process - before.process) - agents_cpu,
        agents_cpu,
        server_cpu,
        latencies,
        bytes,
        merged,
        flamegraph,
        flamegraph_size,
    }
}

/// Bytes of each table (its indexes included) from SQLite's `dbstat`.
fn sqlite_bytes(data_dir: &std::path::Path) -> TableBytes {
    let conn = rusqlite::Connection::open(data_dir.join(holmes_storage::sqlite::DB_FILE)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d
             LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1 ORDER BY 1",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct PartsRow {
    table: String,
    bytes: u64,
}

/// Bytes on disk of each table as written, then after `OPTIMIZE … FINAL`. Drops the
/// database afterwards.
async fn clickhouse_bytes(url: &str, database: &str) -> (TableBytes, TableBytes) {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
        .with_compression(clickhouse::Compression::None);
    let read = || async {
        let rows: Vec<PartsRow> = client
            .query(
                "SELECT table, toUInt64(sum(bytes_on_disk)) AS bytes
                 FROM system.parts WHERE active AND database = ? GROUP BY table ORDER BY table",
            )
            .bind(database)
            .fetch_all()
            .await
            .unwrap();
        rows.into_iter()
            .map(|r| (r.table, r.bytes))
            .collect::<TableBytes>()
    };
    let written = read().await;
    for (table, _) in &written {
        client
            .query(&format!("OPTIMIZE TABLE {database}.{table} FINAL"))
            .execute()
            .await
            .unwrap();
    }
    let merged = read().await;
    client
        .query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute()
        .await
        .unwrap();
    (written, merged)
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.2} KiB", bytes / 1024.0)
    }
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The tables whose bytes are shown one by one; the rest are summed as "other".
const SHOWN: [&str; 7] = [
    "profiles",
    "profile_ids",
    "stacks",
    "stack_ids",
    "locations",
    "location_ids",
    "metric_samples",
];

fn print_bytes(label: &str, bytes: &TableBytes, profiles: usize, raw_per_profile: f64) {
    let per = |b: u64| b as f64 / profiles as f64;
    let total: u64 = bytes.iter().map(|(_, b)| b).sum();
    let shown: Vec<String> = bytes
        .iter()
        .filter(|(t, b)| SHOWN.contains(&t.as_str()) && *b > 0)
        .map(|(t, b)| format!("{t} {}", kib(per(*b))))
        .collect();
    let other: u64 = bytes
        .iter()
        .filter(|(t, _)| !SHOWN.contains(&t.as_str()))
        .map(|(_, b)| b)
        .sum();
    println!(
        "    {label:<30} everything {:>10} /profile  {:>5.1}x smaller than raw gzip pprof",
        kib(per(total)),
        raw_per_profile / per(total).max(1e-9)
    );
    println!(
        "      {}, other tables {}",
        shown.join(", "),
        kib(per(other))
    );
}

fn report(params: &Params, raw_total: u64, decode: &[(Input, f64)], runs: &[RunResult]) {
    let samples = SAMPLES_PER_PROFILE as f64;
    let raw_per_profile = raw_total as f64 / params.profiles as f64;
    println!();
    println!(
        "== throughput ({} agents, {} profiles of {SAMPLES_PER_PROFILE} samples each)",
        params.agents, params.profiles
    );
    for (input, per_profile) in decode {
        println!(
            "  decode alone ({}): {:.3} ms CPU per profile, {} profiles/s per core",
            input.name(),
            per_profile * 1e3,
            si(1.0 / per_profile)
        );
    }
    for r in runs {
        let n = r.profiles as f64;
        let wall = r.wall.as_secs_f64();
        let mut sorted = r.latencies.clone();
        sorted.sort();
        println!("  {} <- {}", r.target, r.input.name());
        println!(
            "    sustained                         {:>8} profiles/s  {:>8} samples/s   ({:.1} s wall)",
            si(n / wall),
            si(n / wall * samples),
            wall
        );
        println!(
            "    per core of the collector         {:>8} profiles/s  {:>8} samples/s   ({:.2} s CPU; agents apart: {:.2} s)",
            si(n / r.collector_cpu),
            si(n / r.collector_cpu * samples),
            r.collector_cpu,
            r.agents_cpu
        );
        if let Some(server) = r.server_cpu {
            println!(
                "    ClickHouse server CPU              {server:.2} s ({:.2} ms per profile); collector + server: {} profiles/s per core",
                server / n * 1e3,
                si(n / (r.collector_cpu + server)),
            );
        }
        println!(
            "    last chunk -> ack                 p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&sorted, 0.50).as_secs_f64() * 1e3,
            percentile(&sorted, 0.99).as_secs_f64() * 1e3,
            sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
        if !r.flamegraph.is_empty() {
            let mut f = r.flamegraph.clone();
            f.sort();
            println!(
                "    flame graph of the day (all instances) p50 {:.0} ms, max {:.0} ms ({} KiB of SVG)",
                percentile(&f, 0.5).as_secs_f64() * 1e3,
                f.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
                r.flamegraph_size / 1024
            );
        }
    }
    println!();
    println!(
        "== stored bytes per profile (raw gzip pprof: {} /profile, {} in all)",
        kib(raw_per_profile),
        kib(raw_total as f64)
    );
    for r in runs {
        println!("  {} <- {}", r.target, r.input.name());
        match &r.merged {
            Some(merged) => {
                print_bytes("as written", &r.bytes, r.profiles, raw_per_profile);
                print_bytes(
                    "after OPTIMIZE ... FINAL",
                    merged,
                    r.profiles,
                    raw_per_profile,
                );
            }
            None => print_bytes(
                "dbstat, indexes included",
                &r.bytes,
                r.profiles,
                raw_per_profile,
            ),
        }
    }
}

/// CPU seconds per profile of decoding alone (on this thread), for each input.
fn decode_alone(profiles: &[GenProfile], agents: usize) -> Vec<(Input, f64)> {
    // Every profile: the stream form defines less and less as its streams go on.
    let sample = profiles;
    let mut out = Vec::new();
    for input in Input::ALL {
        // The stream form as the bench's agents send it: each agent's share in order,
        // on its own stream (encoded before the clock starts).
        let mut streams: Vec<(StreamEncoder, StreamTables)> = (0..agents)
            .map(|_| (StreamEncoder::new(), StreamTables::new()))
            .collect();
        let mut distinct = 0;
        let sent: Vec<Vec<u8>> = match input {
            Input::Stream => sample
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let native = NativeProfile::decode(&p.native).expect("a generated profile");
                    distinct += native.stacks.len();
                    streams[i % agents].0.encode(&native)
                })
                .collect(),
            _ => Vec::new(),
        };
        if input == Input::Stream {
            let defined: usize = streams.iter().map(|(e, _)| e.stacks()).sum();
            let n = sent.len() as f64;
            println!(
                "  stream form ({} profiles on {agents} streams): {} per profile on the wire; of a profile's {:.0} stacks, {:.0} new to its stream",
                sent.len(),
                kib(sent.iter().map(Vec::len).sum::<usize>() as f64 / n),
                distinct as f64 / n,
                defined as f64 / n
            );
        }
        let cpu0 = rusage_secs(libc::RUSAGE_THREAD);
        for (i, p) in sample.iter().enumerate() {
            let c = match input {
                Input::Native => normalize(ProfileFormat::Native, &p.native, Limits::default()),
                Input::Pprof => normalize(ProfileFormat::PprofGzip, &p.pprof, Limits::default()),
                Input::Stream => {
                    // As the store answers in the steady state: what the stream defined
                    // before is known.
                    let tables = &mut streams[i % agents].1;
                    let before = tables.stacks() as u32;
                    let known = move |_scope: u64,
                                      stacks: &[StackByKey<'_>],
                                      _locations: &[LocationByKey<'_>]|
                          -> KnownByKey {
                        KnownByKey {
                            stacks: stacks
                                .iter()
                                .map(|s| {
                                    (s.key < before).then_some(KnownStack {
                                        num: u64::from(s.key),
                                        day: u32::MAX,
                                    })
                                })
                                .collect(),
                            locations_told: NO_LOCATIONS_KEPT,
                        }
                    };
                    tables.decode(&sent[i], Limits::default(), Some(&known))
                }
            }
            .expect("a generated profile decodes");
            assert_eq!(c.samples.len(), SAMPLES_PER_PROFILE);
        }
        let cpu = rusage_secs(libc::RUSAGE_THREAD) - cpu0;
        out.push((input, cpu / sample.len() as f64));
    }
    out
}

fn main() {
    let params = Params::from_env();
    println!(
        "holmes ingest bench: {} agents of service {SERVICE:?} ({} builds: {}), {} CPU profiles of {SAMPLES_PER_PROFILE} samples over 24 h, stacks from a pool of {} (10-40 frames, Zipf s={ZIPF_S})",
        params.agents,
        FLEET.len(),
        FLEET
            .iter()
            .map(|b| format!("{} {}", b.binary, b.version))
            .collect::<Vec<_>>()
            .join(", "),
        params.profiles,
        params.pool
    );
    let t = Instant::now();
    let (profiles, functions, first) = generate(&params);
    let raw_total: u64 = profiles.iter().map(|p| p.pprof.len() as u64).sum();
    let native_total: u64 = profiles.iter().map(|p| p.native.len() as u64).sum();
    println!(
        "generated in {:.1} s: {functions} functions; raw gzip pprof {} per profile, native {} per profile",
        t.elapsed().as_secs_f64(),
        kib(raw_total as f64 / profiles.len() as f64),
        kib(native_total as f64 / profiles.len() as f64),
    );
    let decode = decode_alone(&profiles, params.agents);

    let collector_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("collector")
        .build()
        .unwrap();
    let agent_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name(AGENT_THREAD)
        .build()
        .unwrap();
    let profiles = Arc::new(profiles);
    let backends = std::env::var("HOLMES_BENCH_BACKENDS").unwrap_or_default();
    let inputs = std::env::var("HOLMES_BENCH_INPUTS").unwrap_or_default();
    let wanted =
        |list: &str, name: &str| list.is_empty() || list.split(',').any(|x| x.trim() == name);
    let mut targets: Vec<(&str, Target)> = vec![
        ("sqlite", Target::Sqlite(Synchronous::Full)),
        ("sqlite-normal", Target::Sqlite(Synchronous::Normal)),
    ];
    for (key, name, var, pid_var) in [
        (
            "ch18",
            "ClickHouse 18.16",
            "HOLMES_TEST_CLICKHOUSE_URL",
            "HOLMES_CH_PID",
        ),
        (
            "chcurrent",
            "ClickHouse 26.9 (chdb)",
            "HOLMES_TEST_CLICKHOUSE_CURRENT_URL",
            "HOLMES_CHDB_PID",
        ),
    ] {
        match std::env::var(var) {
            Ok(url) => targets.push((key, Target::ClickHouse { name, url, pid_var })),
            Err(_) => println!("{name} skipped: {var} is not set (deploy/dev/bench.sh starts one)"),
        }
    }
    let mut runs = Vec::new();
    for (key, target) in &targets {
        // `sqlite` selects both SQLite runs.
        let selected =
            wanted(&backends, key) || (backends.contains("sqlite") && key.starts_with("sqlite"));
        if !selected {
            continue;
        }
        for input in Input::ALL {
            // What synchronous = FULL costs is measured on the stream form only.
            if *key == "sqlite-normal" && input != Input::Stream {
                continue;
            }
            if !wanted(&inputs, input.name()) {
                continue;
            }
            println!("running {} <- {} ...", target.name(), input.name());
            runs.push(run(
                target,
                input,
                &params,
                &profiles,
                first,
                &collector_rt,
                &agent_rt,
            ));
        }
    }
    report(&params, raw_total, &decode, &runs);
    if std::env::var("HOLMES_BENCH_FOREIGN").as_deref() != Ok("0") {
        let foreign_runs = foreign::run(&params, &profiles, &collector_rt, &agent_rt);
        let agent_row = Target::Sqlite(Synchronous::Full).name();
        let agent = runs
            .iter()
            .find(|r| r.target == agent_row && r.input == Input::Stream)
            .map(|r| {
                let mut sorted = r.latencies.clone();
                sorted.sort();
                let n = r.profiles as f64;
                (
                    n / r.wall.as_secs_f64(),
                    n / r.collector_cpu,
                    percentile(&sorted, 0.5),
                    percentile(&sorted, 0.99),
                )
            });
        foreign::report(agent, &foreign_runs);
    }
}
