//! Ingest benchmark: simulated agents of one service stream realistic CPU profiles over
//! loopback gRPC into a real in-process collector, once per backend.
//!
//! ```text
//! cargo bench -p holmes-collector --bench ingest                 # full run (minutes)
//! HOLMES_BENCH_QUICK=1 cargo bench -p holmes-collector --bench ingest   # smoke run (seconds)
//! deploy/dev/bench.sh                                            # with a throw-away ClickHouse
//! ```
//!
//! The stream: `HOLMES_BENCH_AGENTS` instances (default 50) of one service send
//! `HOLMES_BENCH_PROFILES` CPU profiles in all (default 1500, a day of captures: their
//! start times are spread over the last 24 hours), each of 1000 samples drawn with
//! Zipf-like popularity from a fixed pool of 4000 stacks 10–40 frames deep, encoded as the
//! agent encodes them (gzipped `profile.proto`: string table, functions, one location per
//! frame, values `[count, nanoseconds]`, a `phase` label). Each agent sends a profile,
//! waits for the acknowledgement that covers it, then sends the next.
//!
//! Reported per backend: profiles/s and samples/s over the run; the CPU seconds of the
//! collector (this process minus the agents' runtime threads, which are counted apart)
//! and of the ClickHouse server (`HOLMES_CH_PID`, as `deploy/dev/clickhouse.sh` exports
//! it), hence profiles/s and samples/s per core; the time from sending a profile's last
//! chunk to its acknowledgement (p50, p99); and the bytes stored per profile, normalized
//! (stacks, samples, heads) and the kept originals, against the raw gzip size. A baseline
//! runs the same profiles through decode + normalize alone. ClickHouse runs when
//! `HOLMES_TEST_CLICKHOUSE_URL` is set and is skipped with a line saying so otherwise.
//! `HOLMES_BENCH_BACKENDS=sqlite|clickhouse` runs only one. Then the same profiles come
//! in as Pyroscope pushes and OTLP exports (`ingest/foreign.rs`; `HOLMES_BENCH_FOREIGN=0`
//! skips it), in a table beside the agent's SQLite row. Nothing is asserted: these are
//! figures to read, on machines too noisy for thresholds.

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

use holmes_collector::config::{Config, StoreKind};
use holmes_collector::process::normalize::{normalize, normalize_new_stacks, Limits};
use holmes_collector::Server;
use holmes_devtools::synthetic::{mix, ProfileFactory, SAMPLES_PER_PROFILE, ZIPF_S};
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::pprof::Profile;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, ProfileChunk, ProfileKind,
};
use holmes_storage::clickhouse::ClickHouseSettings;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Service every simulated agent belongs to.
const SERVICE: &str = "orders";
/// Thread-name prefix of the agents' runtime, so their CPU is counted apart.
const AGENT_THREAD: &str = "bench-agent";

/// What a run is made of.
#[derive(Debug, Clone, Copy)]
struct Params {
    agents: usize,
    profiles: usize,
    pool: usize,
    baseline_profiles: usize,
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
        let (agents, profiles, pool) = if quick {
            (8, 120, 2000)
        } else {
            (50, 1500, 4000)
        };
        let profiles = number("HOLMES_BENCH_PROFILES", profiles);
        Params {
            agents: number("HOLMES_BENCH_AGENTS", agents),
            profiles,
            pool: number("HOLMES_BENCH_POOL", pool),
            baseline_profiles: profiles.min(300),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The day of captures (profiles from holmes_devtools::synthetic)
// ---------------------------------------------------------------------------------------

/// One profile ready to send.
struct GenProfile {
    id: String,
    started_unix_nanos: u64,
    gzip: Vec<u8>,
}

/// The day of captures: `n` profiles, started over the last 24 hours in order.
fn generate(params: &Params) -> (Vec<GenProfile>, usize) {
    let factory = ProfileFactory::new(params.pool);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let day = 86_400_000_000_000u64;
    let first = now - day;
    let step = day / params.profiles as u64;
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
                            let id = format!("{:016x}{:016x}", mix(i as u64), mix(!(i as u64)));
                            let gzip = factory.cpu_profile(i as u64 + 1, started);
                            (
                                i,
                                GenProfile {
                                    id,
                                    started_unix_nanos: started,
                                    gzip,
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
    (out.into_iter().map(Option::unwrap).collect(), functions)
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

/// CPU seconds of the ClickHouse server whose pid `HOLMES_CH_PID` names, if any.
fn clickhouse_cpu() -> Option<f64> {
    let pid = std::env::var("HOLMES_CH_PID").ok()?;
    proc_stat(&format!("/proc/{pid}/stat")).map(|(_, cpu)| cpu)
}

/// CPU used so far: the whole process, the agents' threads, the ClickHouse server.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    process: f64,
    agents: f64,
    clickhouse: Option<f64>,
}

impl CpuMark {
    fn now() -> CpuMark {
        CpuMark {
            process: rusage_secs(libc::RUSAGE_SELF),
            agents: threads_cpu(AGENT_THREAD),
            clickhouse: clickhouse_cpu(),
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

/// Sends the profiles of `indices` one at a time, each once the one before it is
/// acknowledged; returns the time from each profile's last chunk to its ack.
async fn run_agent(
    addr: SocketAddr,
    instance: usize,
    profiles: Arc<Vec<GenProfile>>,
    indices: Vec<usize>,
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
    let mut inbound = IngestClient::new(channel)
        .connect(tonic::Request::new(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let mut seq = 0u64;
    let mut latencies = Vec::with_capacity(indices.len());
    for i in indices {
        let p = &profiles[i];
        let pieces: Vec<&[u8]> = p.gzip.chunks(holmes_proto::MAX_CHUNK_BYTES).collect();
        for (index, piece) in pieces.iter().enumerate() {
            seq += 1;
            let chunk = ProfileChunk {
                profile_id: p.id.clone(),
                event_id: format!("bench-{instance}-{i}"),
                kind: ProfileKind::Cpu,
                chunk_index: index as u32,
                chunk_count: pieces.len() as u32,
                total_bytes: p.gzip.len() as u64,
                data: piece.to_vec(),
                started_unix_nanos: p.started_unix_nanos,
                duration: Duration::from_secs(10),
                error: None,
                labels: [("phase".to_owned(), "trigger".to_owned())].into(),
                format: holmes_proto::ProfileFormat::PprofGzip,
            };
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
// One backend
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    ClickHouse,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::ClickHouse => "ClickHouse",
        }
    }
}

/// Stored bytes by table.
type TableBytes = Vec<(String, u64)>;

struct RunResult {
    backend: Backend,
    profiles: usize,
    wall: Duration,
    collector_cpu: f64,
    agents_cpu: f64,
    clickhouse_cpu: Option<f64>,
    latencies: Vec<Duration>,
    /// Bytes by table as written, and (ClickHouse) after merging every table to one
    /// part per partition.
    bytes: TableBytes,
    merged: Option<TableBytes>,
    parts: Option<(u64, u64)>,
    /// ClickHouse: compressed bytes of each `profile_samples` column, merged.
    sample_columns: TableBytes,
}

fn run_backend(
    backend: Backend,
    params: &Params,
    profiles: &Arc<Vec<GenProfile>>,
    collector_rt: &tokio::runtime::Runtime,
    agent_rt: &tokio::runtime::Runtime,
) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let database = format!("holmes_bench_{}", std::process::id());
    let url = std::env::var("HOLMES_TEST_CLICKHOUSE_URL").ok();
    if backend == Backend::ClickHouse {
        config.store = StoreKind::Clickhouse;
        config.clickhouse = ClickHouseSettings {
            url: url.clone(),
            database: database.clone(),
            ..ClickHouseSettings::default()
        };
        if let Some(ms) = std::env::var("HOLMES_BENCH_BATCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.clickhouse.batch_delay = Duration::from_millis(ms);
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
    let before = CpuMark::now();
    let started = Instant::now();
    let handles: Vec<_> = per_agent
        .into_iter()
        .enumerate()
        .map(|(instance, indices)| {
            agent_rt.spawn(run_agent(addr, instance, Arc::clone(profiles), indices))
        })
        .collect();
    let mut latencies = Vec::with_capacity(profiles.len());
    for h in handles {
        latencies.extend(agent_rt.block_on(h).unwrap());
    }
    let wall = started.elapsed();
    let after = CpuMark::now();
    collector_rt.block_on(server.shutdown());

    let agents_cpu = after.agents - before.agents;
    let clickhouse_cpu = match (backend, before.clickhouse, after.clickhouse) {
        (Backend::ClickHouse, Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let (bytes, merged, parts, sample_columns) = match backend {
        Backend::Sqlite => (sqlite_bytes(dir.path()), None, None, Vec::new()),
        Backend::ClickHouse => {
            let url = url.expect("ClickHouse runs only with a URL");
            let (bytes, merged, parts, columns) =
                collector_rt.block_on(clickhouse_bytes(&url, &database));
            (bytes, Some(merged), Some(parts), columns)
        }
    };
    RunResult {
        backend,
        profiles: profiles.len(),
        wall,
        collector_cpu: (after.process - before.process) - agents_cpu,
        agents_cpu,
        clickhouse_cpu,
        latencies,
        bytes,
        merged,
        parts,
        sample_columns,
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
    parts: u64,
}

/// Bytes on disk of each table as written, then after `OPTIMIZE … FINAL`; and the active
/// parts before and after. Drops the database afterwards.
#[derive(clickhouse::Row, serde::Deserialize)]
struct ColumnRow {
    name: String,
    bytes: u64,
}

/// What [`clickhouse_bytes`] measures: bytes by table as written and merged, active parts
/// before and after merging, and bytes by column of `profile_samples`.
type ClickHouseBytes = (TableBytes, TableBytes, (u64, u64), TableBytes);

async fn clickhouse_bytes(url: &str, database: &str) -> ClickHouseBytes {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
        .with_compression(clickhouse::Compression::None);
    let read = || async {
        let rows: Vec<PartsRow> = client
            .query(
                "SELECT table, toUInt64(sum(bytes_on_disk)) AS bytes, toUInt64(count()) AS parts
                 FROM system.parts WHERE active AND database = ? GROUP BY table ORDER BY table",
            )
            .bind(database)
            .fetch_all()
            .await
            .unwrap();
        let parts = rows.iter().map(|r| r.parts).sum::<u64>();
        (
            rows.into_iter()
                .map(|r| (r.table, r.bytes))
                .collect::<TableBytes>(),
            parts,
        )
    };
    let (written, parts_before) = read().await;
    for (table, _) in &written {
        client
            .query(&format!("OPTIMIZE TABLE {database}.{table} FINAL"))
            .execute()
            .await
            .unwrap();
    }
    let (merged, parts_after) = read().await;
    let columns: Vec<ColumnRow> = client
        .query(
            "SELECT name, toUInt64(data_compressed_bytes) AS bytes FROM system.columns
             WHERE database = ? AND table = 'profile_samples' ORDER BY bytes DESC",
        )
        .bind(database)
        .fetch_all()
        .await
        .unwrap();
    client
        .query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute()
        .await
        .unwrap();
    (
        written,
        merged,
        (parts_before, parts_after),
        columns.into_iter().map(|c| (c.name, c.bytes)).collect(),
    )
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
        format!("{:.1} KiB", bytes / 1024.0)
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

const NORMALIZED: [&str; 3] = ["stacks", "profile_samples", "profile_contents"];

fn table_sum(bytes: &TableBytes, tables: &[&str]) -> u64 {
    bytes
        .iter()
        .filter(|(t, _)| tables.contains(&t.as_str()))
        .map(|(_, b)| b)
        .sum()
}

fn print_bytes(label: &str, bytes: &TableBytes, profiles: usize, raw_per_profile: f64) {
    let n = profiles as f64;
    let per = |b: u64| b as f64 / n;
    let ratio = |b: u64| raw_per_profile / per(b).max(1e-9);
    let normalized = table_sum(bytes, &NORMALIZED);
    let originals = table_sum(bytes, &["profiles"]);
    let total: u64 = bytes.iter().map(|(_, b)| b).sum();
    println!("  {label}");
    for t in NORMALIZED {
        println!(
            "    {t:<34}{:>12} /profile",
            kib(per(table_sum(bytes, &[t])))
        );
    }
    println!(
        "    {:<34}{:>12} /profile   {:>6.1}x smaller than raw gzip",
        "normalized (the three above)",
        kib(per(normalized)),
        ratio(normalized)
    );
    println!(
        "    {:<34}{:>12} /profile   {:>6.1}x",
        "originals kept (profiles)",
        kib(per(originals)),
        ratio(originals)
    );
    println!(
        "    {:<34}{:>12} /profile   {:>6.1}x",
        "everything stored",
        kib(per(total)),
        ratio(total)
    );
}

fn report(params: &Params, raw_total: u64, baseline: Option<(f64, f64)>, runs: &[RunResult]) {
    let samples = SAMPLES_PER_PROFILE as f64;
    let raw_per_profile = raw_total as f64 / params.profiles as f64;
    println!();
    println!(
        "== throughput ({} agents, {} profiles of {SAMPLES_PER_PROFILE} samples each)",
        params.agents, params.profiles
    );
    if let Some((count, cpu)) = baseline {
        println!(
            "  decode + normalize only (one thread): {} profiles/s per core, {} samples/s per core ({count:.0} profiles, {cpu:.2} s CPU)",
            si(count / cpu),
            si(count / cpu * samples),
        );
    }
    for r in runs {
        let n = r.profiles as f64;
        let wall = r.wall.as_secs_f64();
        let mut sorted = r.latencies.clone();
        sorted.sort();
        println!("  {}", r.backend.name());
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
        if let Some(ch) = r.clickhouse_cpu {
            let both = r.collector_cpu + ch;
            println!(
                "    per core, collector + ClickHouse  {:>8} profiles/s  {:>8} samples/s   (server {ch:.2} s CPU during the run)",
                si(n / both),
                si(n / both * samples),
            );
        }
        if let Some((count, cpu)) = baseline {
            let share = (cpu / count) / (r.collector_cpu / n);
            println!(
                "    decode + normalize share of the collector's CPU: {:.0} %",
                share * 100.0
            );
        }
        println!(
            "    last chunk -> ack                 p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&sorted, 0.50).as_secs_f64() * 1e3,
            percentile(&sorted, 0.99).as_secs_f64() * 1e3,
            sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    println!();
    println!(
        "== stored bytes per profile (raw gzip: {} /profile, {} in all)",
        kib(raw_per_profile),
        kib(raw_total as f64)
    );
    for r in runs {
        println!("  {}", r.backend.name());
        match (&r.merged, r.parts) {
            (Some(merged), Some((before, after))) => {
                print_bytes(
                    &format!("as written ({before} active parts)"),
                    &r.bytes,
                    r.profiles,
                    raw_per_profile,
                );
                print_bytes(
                    &format!("after OPTIMIZE ... FINAL ({after} active parts)"),
                    merged,
                    r.profiles,
                    raw_per_profile,
                );
            }
            _ => print_bytes(
                "dbstat, indexes included",
                &r.bytes,
                r.profiles,
                raw_per_profile,
            ),
        }
        let other: Vec<String> = r
            .merged
            .as_ref()
            .unwrap_or(&r.bytes)
            .iter()
            .filter(|(t, _)| !NORMALIZED.contains(&t.as_str()) && t != "profiles")
            .map(|(t, b)| format!("{t} {}", kib(*b as f64)))
            .collect();
        println!("    other tables: {}", other.join(", "));
        if !r.sample_columns.is_empty() {
            let samples = (r.profiles * SAMPLES_PER_PROFILE) as f64;
            let columns: Vec<String> = r
                .sample_columns
                .iter()
                .map(|(c, b)| format!("{c} {:.2}", *b as f64 / samples))
                .collect();
            println!(
                "    profile_samples, bytes per sample by column: {}",
                columns.join(", ")
            );
        }
    }
}

fn main() {
    let params = Params::from_env();
    println!(
        "holmes ingest bench: {} agents of service {SERVICE:?}, {} CPU profiles of {SAMPLES_PER_PROFILE} samples over 24 h, stacks from a pool of {} (10-40 frames, Zipf s={ZIPF_S})",
        params.agents, params.profiles, params.pool
    );
    let t = Instant::now();
    let (profiles, functions) = generate(&params);
    let raw_total: u64 = profiles.iter().map(|p| p.gzip.len() as u64).sum();
    println!(
        "generated in {:.1} s: {functions} functions, {} raw gzip in all",
        t.elapsed().as_secs_f64(),
        kib(raw_total as f64)
    );

    // Baseline: the same bytes through decode + normalize alone, on this thread; then,
    // apart, what two of its steps cost: inflate + protobuf decode, and hashing the stacks.
    let sample = &profiles[..params.baseline_profiles];
    let cpu0 = rusage_secs(libc::RUSAGE_THREAD);
    // As the ingest does: stacks stored with earlier profiles are left out.
    let mut stacks_seen = std::collections::HashSet::new();
    for p in sample {
        let c = normalize_new_stacks(
            &p.gzip,
            Limits::default(),
            &p.id,
            SERVICE,
            p.started_unix_nanos,
            &|id| stacks_seen.contains(&id),
        )
        .expect("a generated profile normalizes");
        assert_eq!(c.samples.len(), SAMPLES_PER_PROFILE);
        stacks_seen.extend(c.stacks.iter().map(|s| s.stack_id));
    }
    let cpu1 = rusage_secs(libc::RUSAGE_THREAD);
    // The same with every stack's frames copied (as before the store's memory of
    // written stacks was consulted); the first 50 kept for the hashing figure below.
    let mut contents = Vec::new();
    for p in sample {
        let c = normalize(
            &p.gzip,
            Limits::default(),
            &p.id,
            SERVICE,
            p.started_unix_nanos,
        )
        .expect("a generated profile normalizes");
        if contents.len() < 50 {
            contents.push(c);
        }
    }
    let cpu2 = rusage_secs(libc::RUSAGE_THREAD);
    for p in sample {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&p.gzip[..]), &mut raw)
            .unwrap();
        std::hint::black_box(Profile::decode(&raw[..]).unwrap());
    }
    let cpu3 = rusage_secs(libc::RUSAGE_THREAD);
    let mut h = 0u64;
    for c in &contents {
        for s in &c.stacks {
            h ^= holmes_storage::stack_id(&s.frames);
        }
    }
    std::hint::black_box(h);
    let cpu4 = rusage_secs(libc::RUSAGE_THREAD);
    let n = sample.len() as f64;
    let baseline = Some((n, (cpu1 - cpu0).max(1e-6)));
    println!(
        "decode + normalize per profile: {:.2} ms CPU (with every stack copied: {:.2} ms), of which inflate + protobuf decode {:.2} ms; stack content hashes from frames {:.2} ms; {} distinct stacks in {} profiles",
        (cpu1 - cpu0) / n * 1e3,
        (cpu2 - cpu1) / n * 1e3,
        (cpu3 - cpu2) / n * 1e3,
        (cpu4 - cpu3) / contents.len().max(1) as f64 * 1e3,
        stacks_seen.len(),
        sample.len(),
    );
    drop(contents);

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
    let only = std::env::var("HOLMES_BENCH_BACKENDS").unwrap_or_default();
    let mut runs = Vec::new();
    for backend in [Backend::Sqlite, Backend::ClickHouse] {
        if !only.is_empty() && !only.to_lowercase().contains(&backend.name().to_lowercase()) {
            continue;
        }
        if backend == Backend::ClickHouse && std::env::var("HOLMES_TEST_CLICKHOUSE_URL").is_err() {
            println!("ClickHouse skipped: HOLMES_TEST_CLICKHOUSE_URL is not set (deploy/dev/bench.sh starts one)");
            continue;
        }
        println!("running {} ...", backend.name());
        runs.push(run_backend(
            backend,
            &params,
            &profiles,
            &collector_rt,
            &agent_rt,
        ));
    }
    report(&params, raw_total, baseline, &runs);
    if std::env::var("HOLMES_BENCH_FOREIGN").as_deref() != Ok("0") {
        let foreign_runs = foreign::run(&params, &profiles, &collector_rt, &agent_rt);
        let agent = runs.iter().find(|r| r.backend == Backend::Sqlite).map(|r| {
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
