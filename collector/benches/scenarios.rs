//! Onset → named profile at a real collector, for the agent's scenario examples
//! (agent/README.md, "Scenarios"), next to onset → profile on disk measured in the same
//! run.
//!
//! ```text
//! cargo build --profile profiling -p holmes-agent --examples
//! cargo bench --profile profiling -p holmes-collector --bench scenarios
//! ```
//!
//! Each scenario example (built as a host should build: optimized, line tables, frame
//! pointers) runs as its own process with the agent's defaults, and `GET /bug` starts
//! its bug; the onset is that request. Three ways, one after the other in each round so
//! that they share the machine's load:
//! - `disk`: no collector; until the profile's file is in the dump folder (what
//!   `agent/tests/scenarios.rs` times);
//! - `ci`: a collector started for the run, on SQLite in a temporary folder, holding the
//!   example's debug info uploaded as CI uploads it (`PUT /api/v1/debuginfo/{build_id}`,
//!   the blob `holmes debuginfo upload` sends) before the process starts;
//! - `restarted` (not by default): as `ci`, with the collector restarted after the
//!   upload, so that the first profile loads the debug info;
//! - `agent`: a collector started for the run with an empty store; the example's agent
//!   uploads its own debug info when the collector asks (the first process of a build,
//!   at the default `HOLMES_DEBUGINFO_RATE`).
//!
//! With a collector, the time runs until the profile is listed by the collector's HTTP
//! API and its top list (`GET .../profiles/{id}/top`) names the culprit, as a user would
//! read it; the complete CPU profile of `cpu_burn` (whose culprit is usually over before
//! the trigger) until it is listed. The API is polled every 20 ms, the dump folder every
//! 10 ms. Prints each run and min / median / max per scenario and way, with the load
//! average. Nothing is asserted; a profile missing after 120 s is reported as such.
//!
//! `HOLMES_SCENARIO_BIN_DIR` (default: `examples/` of this bench's profile folder),
//! `RUST_LOG` (the collector's log, off by default),
//! `HOLMES_BENCH_RUNS` (3), `HOLMES_BENCH_WAYS` (`disk,ci,agent`; also `restarted`),
//! `HOLMES_BENCH_SCENARIOS` (all: `thread_explosion,deadlock,alloc_spike,cpu_burn`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use holmes_cli::api_client::ApiClient;
use holmes_collector::config::Config;
use holmes_collector::Server;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// How long a profile is waited for.
const TIMEOUT: Duration = Duration::from_secs(120);

/// One profile a scenario is timed to.
struct Row {
    /// As the README's table names it.
    name: &'static str,
    /// `cpu`, `heap` or `threads`.
    kind: &'static str,
    /// The `phase` label of a CPU profile.
    phase: Option<&'static str>,
    /// The function the profile must name; `None`: listed is enough.
    culprit: Option<&'static str>,
    /// The sample type the culprit is looked for in.
    sample_type: Option<&'static str>,
}

struct Scenario {
    example: &'static str,
    service: &'static str,
    rows: &'static [Row],
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        example: "thread_explosion",
        service: "thread-explosion",
        rows: &[Row {
            name: "thread explosion",
            kind: "threads",
            phase: None,
            culprit: Some("call_the_slow_inventory_service"),
            sample_type: None,
        }],
    },
    Scenario {
        example: "deadlock",
        service: "deadlock",
        rows: &[Row {
            name: "deadlock pile-up",
            kind: "threads",
            phase: None,
            culprit: Some("transfer_between_accounts"),
            sample_type: None,
        }],
    },
    Scenario {
        example: "alloc_spike",
        service: "alloc-spike",
        rows: &[Row {
            name: "1 GiB allocation spike",
            kind: "heap",
            phase: None,
            culprit: Some("build_the_full_export"),
            sample_type: Some("inuse_space"),
        }],
    },
    Scenario {
        example: "cpu_burn",
        service: "cpu-burn",
        rows: &[
            Row {
                name: "CPU burn: pre-trigger profile",
                kind: "cpu",
                phase: Some("pre-trigger"),
                culprit: Some("render_price_table"),
                sample_type: None,
            },
            Row {
                name: "CPU burn: complete 2 s profile",
                kind: "cpu",
                phase: Some("post-trigger"),
                culprit: None,
                sample_type: None,
            },
        ],
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    Disk,
    Ci,
    Restarted,
    Agent,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Disk => "disk",
            Way::Ci => "ci",
            Way::Restarted => "restarted",
            Way::Agent => "agent",
        }
    }
}

/// A running example, killed on drop.
struct Example {
    child: tokio::process::Child,
    port: u16,
    /// The dump folder (`dump/`) and the log, removed on drop unless kept.
    dir: Option<tempfile::TempDir>,
    folder: PathBuf,
    /// Its stderr (the agent's log), for a run that goes wrong.
    log: PathBuf,
}

impl Example {
    async fn start(exe: &Path, env: &[(&str, String)]) -> Example {
        let dump = tempfile::tempdir().unwrap();
        let log = dump.path().join("stderr.log");
        let mut command = tokio::process::Command::new(exe);
        // A dump folder beside a collector would have the agent name local copies too.
        if !env.iter().any(|(k, _)| *k == "HOLMES_COLLECTOR") {
            command.env("HOLMES_DUMP_DIR", dump.path().join("dump"));
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs: {e}", exe.display()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut port = 0;
        // The example prints "warm" (its rule windows full), then listens.
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(p) = line.strip_prefix("listening on http://127.0.0.1:") {
                port = p.trim().parse().unwrap();
                break;
            }
        }
        assert!(port > 0, "{} listens; see {}", exe.display(), log.display());
        Example {
            child,
            port,
            folder: dump.path().to_owned(),
            dir: Some(dump),
            log,
        }
    }

    /// Starts the bug; returns the onset.
    async fn trigger(&self) -> Instant {
        let onset = Instant::now();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        s.write_all(b"GET /bug HTTP/1.0\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert!(reply.contains("bug started"), "{reply}");
        onset
    }

    /// Onset → each row's profile file in the dump folder.
    async fn on_disk(&self, rows: &[Row], onset: Instant) -> Vec<Option<Duration>> {
        let folder = self.folder.join("dump");
        let mut times = vec![None; rows.len()];
        while onset.elapsed() < TIMEOUT && times.iter().any(Option::is_none) {
            let files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            for (row, time) in rows.iter().zip(times.iter_mut()) {
                if time.is_some() {
                    continue;
                }
                let found = files.iter().any(|p| {
                    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    n.starts_with(&format!("{}.", row.kind))
                        && n.ends_with(".pb.gz")
                        && row.phase.is_none_or(|phase| has_label_value(p, phase))
                });
                if found {
                    *time = Some(onset.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        times
    }
}

impl Example {
    /// Keeps the folder with the log, and says where it is.
    fn keep(&mut self) {
        if let Some(dir) = self.dir.take() {
            eprintln!("  (log kept: {})", self.log.display());
            let _ = dir.keep();
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Whether the gzip pprof file at `path` holds the string `value` (a label value such
/// as `pre-trigger` is in its string table).
fn has_label_value(path: &Path, value: &str) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut bytes = Vec::new();
    if flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .is_err()
    {
        return false; // still being written
    }
    bytes.windows(value.len()).any(|w| w == value.as_bytes())
}

/// Whether a function name is `culprit`, with or without its path.
fn is(function: &str, culprit: &str) -> bool {
    function == culprit || function.ends_with(&format!("::{culprit}"))
}

/// A collector on loopback, on SQLite in `data`.
async fn collector(data: &Path) -> Server {
    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.to_owned(),
        ..Config::default()
    };
    Server::start(&config).await.expect("collector starts")
}

/// Onset → each row's profile listed by the collector (of `instance`) and, if the row
/// names a culprit, naming it in its top list.
async fn at_collector(
    api: &ApiClient,
    service: &str,
    instance: &str,
    rows: &[Row],
    onset: Instant,
) -> Vec<Option<Duration>> {
    let mut times = vec![None; rows.len()];
    while onset.elapsed() < TIMEOUT && times.iter().any(Option::is_none) {
        let listed = api
            .profiles(service, "10m")
            .await
            .map(|l| l.profiles)
            .unwrap_or_default();
        for (row, time) in rows.iter().zip(times.iter_mut()) {
            if time.is_some() {
                continue;
            }
            let candidates = listed.iter().filter(|p| {
                p.instance == instance
                    && p.kind == row.kind
                    && p.error.is_none()
                    && row.phase.is_none_or(|phase| {
                        p.labels.get("phase").map(String::as_str) == Some(phase)
                    })
            });
            for profile in candidates {
                let named = match row.culprit {
                    None => true,
                    Some(culprit) => api
                        .top(service, &profile.profile_id, row.sample_type, 500)
                        .await
                        .is_ok_and(|t| t.functions.iter().any(|f| is(&f.function, culprit))),
                };
                if named {
                    *time = Some(onset.elapsed());
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times
}

/// One run of `scenario` the way `way`; returns each row's time.
async fn run(scenario: &Scenario, exe: &Path, way: Way, round: usize) -> Vec<Option<Duration>> {
    if way == Way::Disk {
        let mut example = Example::start(exe, &[]).await;
        let onset = example.trigger().await;
        let times = example.on_disk(scenario.rows, onset).await;
        if times.iter().any(Option::is_none) {
            example.keep();
        }
        return times;
    }
    let data = tempfile::tempdir().unwrap();
    let mut server = collector(data.path()).await;
    let mut api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let blob = holmes_symbolize::UploadBlob::from_elf_file(exe).unwrap();
    let build_id = blob
        .build_id()
        .expect("the example has a build id")
        .to_owned();
    if matches!(way, Way::Ci | Way::Restarted) {
        let uploaded = Instant::now();
        let answer = api
            .upload_debuginfo(&build_id, blob.to_vec().unwrap())
            .await
            .expect("CI uploads the debug info");
        eprintln!(
            "  ci: {} bytes of debug info uploaded in {:.2} s",
            answer.bytes,
            uploaded.elapsed().as_secs_f64()
        );
    }
    if way == Way::Restarted {
        // The upload was before this collector started: nothing of it is loaded.
        server.shutdown().await;
        server = collector(data.path()).await;
        api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    }
    let instance = format!("{}-{}-{round}", scenario.example, way.name());
    let started = Instant::now();
    let mut example = Example::start(
        exe,
        &[
            ("HOLMES_COLLECTOR", format!("http://{}", server.grpc_addr())),
            ("HOLMES_INSTANCE", instance.clone()),
        ],
    )
    .await;
    if way == Way::Agent {
        let done = server
            .store()
            .debuginfo_status(&build_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.complete());
        eprintln!(
            "  agent: {} bytes of debug info; upload {} {:.2} s after the process started",
            blob.len(),
            if done { "complete" } else { "not complete" },
            started.elapsed().as_secs_f64()
        );
    }
    let onset = example.trigger().await;
    let times = at_collector(&api, scenario.service, &instance, scenario.rows, onset).await;
    if times.iter().any(Option::is_none) {
        example.keep();
    }
    drop(example);
    server.shutdown().await;
    times
}

/// The 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn examples_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOLMES_SCENARIO_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // This bench runs as <target>/<profile>/deps/scenarios-<hash>.
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("examples"))
        .expect("the bench runs from <target>/<profile>/deps")
}

fn list(var: &str) -> Option<Vec<String>> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the arguments. The
    // collector's log with RUST_LOG (e.g. `holmes_collector::symbolize=info`).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = examples_dir();
    let runs: usize = std::env::var("HOLMES_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let ways: Vec<Way> = match list("HOLMES_BENCH_WAYS") {
        Some(names) => [Way::Disk, Way::Ci, Way::Restarted, Way::Agent]
            .into_iter()
            .filter(|w| names.iter().any(|n| n == w.name()))
            .collect(),
        None => vec![Way::Disk, Way::Ci, Way::Agent],
    };
    let only = list("HOLMES_BENCH_SCENARIOS");
    let scenarios: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|n| n == s.example))
        })
        .collect();
    for s in &scenarios {
        let exe = dir.join(s.example);
        if !exe.is_file() {
            eprintln!(
                "{} is missing: cargo build --profile profiling -p holmes-agent --examples, and HOLMES_SCENARIO_BIN_DIR=<that target>/profiling/examples",
                exe.display()
            );
            std::process::exit(2);
        }
    }
    eprintln!(
        "scenarios from {}, {runs} rounds, ways {:?}, load {:.1}",
        dir.display(),
        ways.iter().map(|w| w.name()).collect::<Vec<_>>(),
        loadavg()
    );
    let mut times: BTreeMap<(&str, Way), Vec<Option<Duration>>> = BTreeMap::new();
    let mut loads = Vec::new();
    for round in 0..runs {
        for scenario in &scenarios {
            let exe = dir.join(scenario.example);
            for &way in &ways {
                loads.push(loadavg());
                let got = run(scenario, &exe, way, round).await;
                for (row, t) in scenario.rows.iter().zip(got) {
                    eprintln!(
                        "round {round} {:<32} {:<5} {}  (load {:.1})",
                        row.name,
                        way.name(),
                        t.map_or("none within 120 s".to_owned(), |t| format!(
                            "{:.2} s",
                            t.as_secs_f64()
                        )),
                        loadavg()
                    );
                    times.entry((row.name, way)).or_default().push(t);
                }
            }
        }
    }
    println!(
        "\nonset -> profile, seconds, min / median / max ({runs} runs; 1-minute load {:.1} to {:.1})",
        loads.iter().copied().fold(f64::INFINITY, f64::min),
        loads.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "{:<32} {}",
        "scenario",
        ways.iter()
            .map(|w| format!("{:<20}", w.name()))
            .collect::<String>()
    );
    for scenario in &scenarios {
        for row in scenario.rows {
            let mut line = format!("{:<32} ", row.name);
            for &way in &ways {
                let all = times.get(&(row.name, way)).cloned().unwrap_or_default();
                let mut got: Vec<f64> = all.iter().flatten().map(Duration::as_secs_f64).collect();
                got.sort_by(f64::total_cmp);
                let cell = if got.is_empty() {
                    "-".to_owned()
                } else {
                    let missing = all.len() - got.len();
                    format!(
                        "{:.2} / {:.2} / {:.2}{}",
                        got[0],
                        got[got.len() / 2],
                        got[got.len() - 1],
                        if missing > 0 {
                            format!(" ({missing} missing)")
                        } else {
                            String::new()
                        }
                    )
                };
                line.push_str(&format!("{cell:<20}"));
            }
            println!("{line}");
        }
    }
}
