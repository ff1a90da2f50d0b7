//! Incident query benchmark: a store filled with a week of a fleet's trigger events,
//! incidents and profiles, queried through a real collector's HTTP API, once per backend.
//!
//! ```text
//! cargo bench -p holmes-collector --bench incidents                        # full size
//! HOLMES_BENCH_QUICK=1 cargo bench -p holmes-collector --bench incidents   # 10x smaller
//! deploy/dev/bench.sh incidents [--quick]                                  # with a throw-away ClickHouse
//! ```
//!
//! The data: 100 services × 20 instances; 100,000 incidents over the last 7 days (a
//! third fleet-wide over 3–6 instances, the rest on one instance; those still active
//! and ~2 % of the others open, the rest resolved), each of 10 trigger events a few
//! seconds to a minute apart: 1,000,000 trigger events, inserted in batches of 10,000.
//! One profile per incident (100,000, a ~3 KB gzip blob each, of the kind that explains
//! the incident's metric, for its first event), inserted 500 at a time; the profiles of
//! 1,000 incidents also get normalized contents, and those incidents their suspects,
//! computed and stored as the collector does when an incident changes (so that their
//! details read suspects, a fingerprint and the earlier incidents that share it).
//! `HOLMES_BENCH_QUICK=1` makes everything 10x smaller.
//!
//! Measured through `ApiClient` against a collector started on the filled store:
//! 300 incident lists of one service (`since=7d`, then `since=24h`; default limit 200),
//! 200 details of random incidents, 100 details of incidents with profile contents, and
//! the same list straight from the store (no HTTP) and `GET /healthz` as baselines. Prints
//! p50/p90/p99/max in ms. ClickHouse runs when `HOLMES_TEST_CLICKHOUSE_URL` is set;
//! `HOLMES_BENCH_BACKENDS=sqlite|clickhouse` runs only one. Nothing is asserted.
//!
//! Incidents are written through `upsert_incident`, concurrently, as the collector does
//! (the ClickHouse store batches them into one `INSERT` per table).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holmes_cli::api_client::ApiClient;
use holmes_collector::config::Config;
use holmes_collector::incident::evidence;
use holmes_collector::Server;
use holmes_proto::{Metric, ProfileKind, RuleConfig, Sample, TriggerReason};
use holmes_storage::clickhouse::{ClickHouseConfig, ClickHouseStore};
use holmes_storage::sqlite::SqliteStore;
use holmes_storage::{
    IncidentQuery, IncidentRecord, IncidentStatus, Location, ProfileContents, ProfileHeader,
    ProfileRecord, ProfileSample, Severity, StackFrame, Store, TriggerRecord, ValueType,
};
use tokio::task::JoinSet;

const SEC: u64 = 1_000_000_000;
const DAY: u64 = 86_400 * SEC;
const SERVICES: usize = 100;
const INSTANCES: usize = 20;
const EVENTS_PER_INCIDENT: usize = 10;
const TRIGGER_BATCH: usize = 10_000;
const CONCURRENT: usize = 500;
const STACK_POOL: usize = 400;
const STACKS_PER_PROFILE: usize = 60;

#[derive(Debug, Clone, Copy)]
struct Params {
    incidents: usize,
    contents_incidents: usize,
    list_queries: usize,
    detail_queries: usize,
    contents_queries: usize,
}

impl Params {
    fn from_env() -> Params {
        let quick = std::env::var("HOLMES_BENCH_QUICK").is_ok_and(|v| v == "1")
            || std::env::args().any(|a| a == "--quick");
        if quick {
            Params {
                incidents: 10_000,
                contents_incidents: 100,
                list_queries: 300,
                detail_queries: 200,
                contents_queries: 100,
            }
        } else {
            Params {
                incidents: 100_000,
                contents_incidents: 1_000,
                list_queries: 300,
                detail_queries: 200,
                contents_queries: 100,
            }
        }
    }
}

/// SplitMix64: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hex128(seed: u64) -> String {
    format!(
        "{:016x}{:016x}",
        mix(seed),
        mix(seed ^ 0x5555_aaaa_1234_5678)
    )
}

fn service_name(s: usize) -> String {
    format!("svc-{s:03}")
}

fn instance_name(s: usize, i: usize) -> String {
    format!("svc-{s:03}-{i:02}")
}

fn kind_for(metric: Metric) -> ProfileKind {
    match metric {
        Metric::CpuPercent | Metric::CpuThrottledPercent => ProfileKind::Cpu,
        Metric::Threads => ProfileKind::Threads,
        Metric::Tasks => ProfileKind::Tasks,
        _ => ProfileKind::Heap,
    }
}

/// One generated incident and the times and instances of its events.
struct Gen {
    record: IncidentRecord,
    /// (event id, instance, time), oldest first.
    events: Vec<(String, String, u64)>,
}

fn generate(params: &Params, now: u64) -> Vec<Gen> {
    let mut rng = Rng(42);
    let start = now - 7 * DAY;
    let mut out = Vec::with_capacity(params.incidents);
    for n in 0..params.incidents {
        let s = n % SERVICES;
        let service = service_name(s);
        let metric = match rng.below(100) {
            0..=49 => Metric::CpuPercent,
            50..=59 => Metric::MemoryPercent,
            60..=69 => Metric::HeapBytes,
            70..=84 => Metric::Threads,
            _ => Metric::Tasks,
        };
        let fleet = rng.chance(33);
        let width = if fleet { 3 + rng.below(4) as usize } else { 1 };
        let mut instances: Vec<String> = Vec::new();
        while instances.len() < width {
            let name = instance_name(s, rng.below(INSTANCES as u64) as usize);
            if !instances.contains(&name) {
                instances.push(name);
            }
        }
        let mut t = start + rng.below(7 * DAY - 20 * 60 * SEC);
        let mut events = Vec::with_capacity(EVENTS_PER_INCIDENT);
        for j in 0..EVENTS_PER_INCIDENT {
            if j > 0 {
                t += (1 + rng.below(60)) * SEC + rng.below(SEC);
            }
            let id = hex128((n * EVENTS_PER_INCIDENT + j) as u64);
            let inst = instances[j % instances.len()].clone();
            events.push((id, inst, t));
        }
        let first = events[0].2;
        let last = events[EVENTS_PER_INCIDENT - 1].2;
        let open = last + 5 * 60 * SEC > now || rng.chance(2);
        instances.sort();
        let mut event_ids: Vec<String> = events.iter().map(|e| e.0.clone()).collect();
        event_ids.sort();
        out.push(Gen {
            record: IncidentRecord {
                incident_id: hex128(0xdead_0000_0000 + n as u64),
                service,
                metric,
                severity: if fleet {
                    Severity::Fleet
                } else {
                    Severity::Instance
                },
                status: if open {
                    IncidentStatus::Open
                } else {
                    IncidentStatus::Resolved
                },
                first_event_unix_nanos: first,
                last_event_unix_nanos: last,
                resolved_unix_nanos: (!open).then_some(last + 5 * 60 * SEC),
                instances,
                event_ids,
                related: Vec::new(),
                skipped_captures: 0,
                version: if open { 1 } else { 2 },
            },
            events,
        });
    }
    // About 5 % relate to an incident of the neighbouring service close in time.
    for n in 0..out.len() {
        if rng.chance(5) && n + 1 < out.len() {
            let other = out[n + 1].record.incident_id.clone();
            out[n].record.related.push(other);
        }
    }
    out
}

fn trigger(g: &Gen, j: usize, rng: &mut Rng) -> TriggerRecord {
    let (id, inst, t) = &g.events[j];
    let metric = g.record.metric;
    let window = (0..10u64)
        .map(|k| Sample {
            unix_nanos: t - (10 - k) * SEC,
            value: 40.0 + (rng.below(200) as f64) / 10.0,
        })
        .collect();
    TriggerRecord {
        service: g.record.service.clone(),
        instance_id: inst.clone(),
        event_id: id.clone(),
        metric: Some(metric),
        reason: if rng.chance(50) {
            TriggerReason::Diff
        } else {
            TriggerReason::Abs
        },
        current: 85.0 + (rng.below(150) as f64) / 10.0,
        window,
        rule: Some(RuleConfig {
            metric,
            enabled: true,
            min: 10.0,
            diff: 25.0,
            abs: 80.0,
            max: 0.0,
            cooldown: Duration::from_secs(60),
            window: 10,
        }),
        unix_nanos: *t,
        request_id: None,
    }
}

/// A ~3 KB gzip blob standing in for a captured pprof profile.
fn profile_blob() -> Vec<u8> {
    let mut rng = Rng(7);
    let mut text = Vec::new();
    while text.len() < 12_000 {
        let _ = writeln!(
            text,
            "app::handler_{}::process;tokio::runtime::task::poll;{:x}",
            rng.below(300),
            rng.next()
        );
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&text).unwrap();
    enc.finish().unwrap()
}

/// A stack of the pool: its frames, leaf first.
type Stack = Vec<StackFrame>;

/// Incident `g`'s profile: with `contents`, or (the others) as a collector keeping
/// originals stores a profile it could not decode: the bytes only.
fn profile(g: &Gen, n: usize, blob: &[u8], contents: Option<ProfileContents>) -> ProfileRecord {
    let (event, inst, t) = &g.events[0];
    ProfileRecord {
        profile_id: hex128(0xbeef_0000_0000 + n as u64),
        event_id: event.clone(),
        service: g.record.service.clone(),
        instance_id: inst.clone(),
        kind: kind_for(g.record.metric),
        started_unix_nanos: t.saturating_sub(30 * SEC),
        duration: Duration::from_secs(30),
        labels: BTreeMap::from([("phase".to_owned(), "pre-trigger".to_owned())]),
        error: None,
        size_bytes: blob.len() as u64,
        format: holmes_proto::ProfileFormat::PprofGzip,
        original: contents.is_none().then(|| blob.to_vec()),
        contents,
    }
}

fn stack_pool() -> Vec<Stack> {
    let mut rng = Rng(99);
    (0..STACK_POOL)
        .map(|k| {
            let depth = 8 + rng.below(12) as usize;
            (0..depth)
                .map(|d| {
                    StackFrame::new(
                        if d == 0 {
                            format!("app::module_{}::work_{k}", k % 40)
                        } else {
                            format!("app::layer_{}::call_{}", d, rng.below(30))
                        },
                        format!("src/module_{}.rs", k % 40),
                        10 + rng.below(400) as u32,
                    )
                })
                .collect()
        })
        .collect()
}

/// Contents of up to [`STACKS_PER_PROFILE`] stacks of the pool, each frame a symbolic
/// location.
fn contents(pool: &[Stack], seed: u64) -> ProfileContents {
    let mut rng = Rng(seed);
    let mut picked: Vec<usize> = (0..STACKS_PER_PROFILE)
        .map(|_| rng.below(STACK_POOL as u64) as usize)
        .collect();
    picked.sort_unstable();
    picked.dedup();
    let mut c = ProfileContents {
        header: ProfileHeader {
            sample_types: vec![
                ValueType::new("samples", "count"),
                ValueType::new("cpu", "nanoseconds"),
            ],
            period_type: ValueType::new("cpu", "nanoseconds"),
            period: 10_000_000,
            ..ProfileHeader::default()
        },
        label_sets: vec![Vec::new()],
        ..ProfileContents::default()
    };
    let mut locations: std::collections::HashMap<&StackFrame, u32> = Default::default();
    for &k in &picked {
        let stack = pool[k]
            .iter()
            .map(|f| {
                *locations.entry(f).or_insert_with(|| {
                    c.locations.push(Location::Symbolic(vec![f.clone()]));
                    c.locations.len() as u32 - 1
                })
            })
            .collect();
        c.stacks.push(stack);
        let n = 1 + rng.below(50) as i64;
        c.samples.push(ProfileSample {
            stack: c.stacks.len() as u32 - 1,
            values: vec![n, n * 10_000_000],
            labels: 0,
        });
    }
    c
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{n:>9} in {:>7.1} s = {:>9.0}/s",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64()
    )
}

/// Runs `f` on every item, `CONCURRENT` at a time.
async fn concurrently<T, F, Fut>(items: Vec<T>, f: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = JoinSet::new();
    for item in items {
        if set.len() >= CONCURRENT {
            set.join_next().await.unwrap().unwrap();
        }
        set.spawn(f(item));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

async fn fill(store: &Arc<dyn Store>, params: &Params, gens: &[Gen]) {
    let mut rng = Rng(1234);
    // Trigger events, 10,000 at a time.
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(TRIGGER_BATCH);
    let mut total = 0;
    for g in gens {
        for j in 0..EVENTS_PER_INCIDENT {
            batch.push(trigger(g, j, &mut rng));
            if batch.len() == TRIGGER_BATCH {
                store
                    .insert_triggers(&batch)
                    .await
                    .expect("insert triggers");
                total += batch.len();
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        store
            .insert_triggers(&batch)
            .await
            .expect("insert triggers");
        total += batch.len();
    }
    println!("  trigger events  {}", rate(total, t0.elapsed()));

    // Incidents.
    let t0 = Instant::now();
    // Concurrently: the ClickHouse store batches them into one INSERT per table.
    let records: Vec<IncidentRecord> = gens.iter().map(|g| g.record.clone()).collect();
    let writer = Arc::clone(store);
    concurrently(records, move |r| {
        let store = Arc::clone(&writer);
        async move { store.upsert_incident(&r).await.expect("upsert incident") }
    })
    .await;
    println!("  incidents       {}", rate(gens.len(), t0.elapsed()));

    // Profiles: those of some incidents with normalized contents, the others as bytes.
    let blob = profile_blob();
    let pool = stack_pool();
    let every = (gens.len() / params.contents_incidents.max(1)).max(1);
    let t0 = Instant::now();
    let records: Vec<ProfileRecord> = gens
        .iter()
        .enumerate()
        .map(|(n, g)| {
            let c = (n % every == 0).then(|| contents(&pool, mix(n as u64)));
            profile(g, n, &blob, c)
        })
        .collect();
    let count = records.len();
    {
        let store = Arc::clone(store);
        concurrently(records, move |p| {
            let store = Arc::clone(&store);
            async move { store.insert_profile(&p).await.expect("insert profile") }
        })
        .await;
    }
    println!(
        "  profiles        {}  ({} B each, 1 in {every} with contents)",
        rate(count, t0.elapsed()),
        blob.len()
    );

    // The suspects of the incidents with contents, as the collector computes and stores
    // them when an incident changes.
    let t0 = Instant::now();
    let with_contents: Vec<IncidentRecord> = gens
        .iter()
        .step_by(every)
        .map(|g| g.record.clone())
        .collect();
    let count = with_contents.len();
    {
        let store = Arc::clone(store);
        concurrently(with_contents, move |record| {
            let store = Arc::clone(&store);
            async move {
                let computed =
                    evidence::compute(store.as_ref(), &record, record.last_event_unix_nanos)
                        .await
                        .expect("compute suspects");
                if let Some(suspects) = computed {
                    store
                        .put_incident_suspects(&suspects)
                        .await
                        .expect("store suspects");
                }
            }
        })
        .await;
    }
    println!("  suspects        {}", rate(count, t0.elapsed()));
}

struct Stats {
    name: String,
    ms: Vec<f64>,
    note: String,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
}

async fn measure(
    server: &Server,
    store: &Arc<dyn Store>,
    params: &Params,
    gens: &[Gen],
    now: u64,
) -> Vec<Stats> {
    let client = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let mut rng = Rng(777);
    let mut out = Vec::new();
    // Warm-up: connection, caches.
    for s in 0..5 {
        client
            .incidents(Some(&service_name(s)), "7d", None)
            .await
            .unwrap();
    }

    let mut ms = Vec::new();
    for _ in 0..params.list_queries {
        let t = Instant::now();
        client.get_raw("/healthz").await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out.push(Stats {
        name: "GET /healthz (baseline)".into(),
        ms,
        note: String::new(),
    });

    for since in ["7d", "24h"] {
        let mut ms = Vec::new();
        let mut listed = 0;
        for _ in 0..params.list_queries {
            let service = service_name(rng.below(SERVICES as u64) as usize);
            let t = Instant::now();
            let r = client.incidents(Some(&service), since, None).await.unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            listed += r.incidents.len();
        }
        out.push(Stats {
            name: format!("list one service since={since}"),
            note: format!("{:.0} incidents/answer", listed as f64 / ms.len() as f64),
            ms,
        });
    }

    let mut ms = Vec::new();
    let mut listed = 0;
    for _ in 0..params.list_queries {
        let service = service_name(rng.below(SERVICES as u64) as usize);
        let t = Instant::now();
        let r = store
            .query_incidents(&IncidentQuery {
                service: Some(service),
                status: None,
                since_unix_nanos: now - 7 * DAY,
                until_unix_nanos: now + SEC,
                limit: 200,
            })
            .await
            .unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        listed += r.len();
    }
    out.push(Stats {
        name: "store.query_incidents 7d (no HTTP)".into(),
        note: format!("{:.0} incidents/answer", listed as f64 / ms.len() as f64),
        ms,
    });

    let every = (gens.len() / params.contents_incidents.max(1)).max(1);
    for (name, count, with_contents) in [
        ("detail, random incident", params.detail_queries, false),
        (
            "detail, incident with contents",
            params.contents_queries,
            true,
        ),
    ] {
        let mut ms = Vec::new();
        let (mut triggers, mut profiles, mut suspects, mut earlier) = (0, 0, 0, 0);
        for _ in 0..count {
            let mut n = rng.below(gens.len() as u64) as usize;
            if with_contents {
                n -= n % every;
            }
            let t = Instant::now();
            let d = client.incident(&gens[n].record.incident_id).await.unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            triggers += d.triggers.len();
            profiles += d.profiles.len();
            suspects += d.suspects.len();
            earlier += d.earlier.len();
        }
        let per = |x: usize| x as f64 / count.max(1) as f64;
        out.push(Stats {
            name: name.into(),
            note: format!(
                "{:.1} triggers, {:.1} profiles, {:.1} suspects, {:.1} earlier incidents/answer",
                per(triggers),
                per(profiles),
                per(suspects),
                per(earlier)
            ),
            ms,
        });
    }
    out
}

fn print_table(backend: &str, stats: &[Stats]) {
    println!(
        "\n  {:<36} {:>5} {:>8} {:>8} {:>8} {:>8}  {backend}",
        "query", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for s in stats {
        println!(
            "  {:<36} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}",
            s.name,
            s.ms.len(),
            s.pct(50.0),
            s.pct(90.0),
            s.pct(99.0),
            s.pct(100.0),
            s.note
        );
    }
}

async fn run(backend: &str, params: &Params, gens: &[Gen], now: u64) {
    println!("\n== {backend}");
    let dir = tempfile::tempdir().unwrap();
    let database = format!("holmes_bench_incidents_{}", std::process::id());
    let url = std::env::var("HOLMES_TEST_CLICKHOUSE_URL").ok();
    let store: Arc<dyn Store> = if backend == "clickhouse" {
        let url = url.clone().unwrap();
        Arc::new(
            ClickHouseStore::open(&ClickHouseConfig {
                database: database.clone(),
                ..ClickHouseConfig::new(url)
            })
            .await
            .expect("open ClickHouse"),
        )
    } else {
        Arc::new(SqliteStore::open(&dir.path().join("store")).expect("open SQLite"))
    };
    let ch = (backend == "clickhouse").then(|| (url.as_deref().unwrap(), database.as_str()));
    let t0 = Instant::now();
    fill(&store, params, gens).await;
    println!("  filled in {:.1} s", t0.elapsed().as_secs_f64());

    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("collector"),
        ..Config::default()
    };
    let t0 = Instant::now();
    let server = Server::start_with_store(&config, Arc::clone(&store))
        .await
        .expect("collector starts");
    println!(
        "  collector started in {:.2} s (rebuilds open incidents from the store)",
        t0.elapsed().as_secs_f64()
    );
    let stats = measure(&server, &store, params, gens, now).await;
    print_table(backend, &stats);
    server.shutdown().await;
    if let Some((url, database)) = ch {
        if std::env::var("HOLMES_BENCH_KEEP_DB").as_deref() == Ok("1") {
            println!("  kept database {database}");
        } else {
            let client = clickhouse::Client::default().with_url(url);
            let _ = client
                .query(&format!("DROP DATABASE IF EXISTS {database}"))
                .execute()
                .await;
        }
    }
}

fn main() {
    let params = Params::from_env();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let only = std::env::var("HOLMES_BENCH_BACKENDS").ok();
    let wants = |b: &str| only.as_deref().is_none_or(|o| o == b);
    println!(
        "incident bench: {} services x {} instances, {} incidents, {} trigger events, {} profiles ({} with contents)",
        SERVICES,
        INSTANCES,
        params.incidents,
        params.incidents * EVENTS_PER_INCIDENT,
        params.incidents,
        params.contents_incidents
    );
    let gens = generate(&params, now);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if wants("sqlite") {
        rt.block_on(run("sqlite", &params, &gens, now));
    }
    if wants("clickhouse") {
        if std::env::var("HOLMES_TEST_CLICKHOUSE_URL").is_ok() {
            rt.block_on(run("clickhouse", &params, &gens, now));
        } else {
            println!("\n== clickhouse: skipped (HOLMES_TEST_CLICKHOUSE_URL is not set)");
        }
    }
}
