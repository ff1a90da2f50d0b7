//! Time to capture, per kind: from the capture request to the profile on disk, in a
//! fresh process each time (the first capture of a process is the one a 3 a.m. incident
//! gets, and it loads the debug info to symbolize the local dump). Also what the agent
//! costs at start (resident memory and CPU time), the memory the first capture adds, and
//! what is left of it once the agent gave the debug info back (30 s without captures).
//!
//! Build it with debug info, as a host should be built (`[profile.profiling]`):
//! `cargo bench -p holmes-agent --bench captures --profile profiling`
//! (HOLMES_BENCH_RUNS processes per kind and setting, default 5).
//!
//! The host: a worker spinning in `spin_in_the_pricing_loop`, 16 threads parked in
//! `wait_for_the_inventory_lock`, 64 MiB kept by `keep_the_catalogue_in_memory`, and a
//! current-thread tokio runtime with 100 tasks; the agent has default settings but no
//! rules (only the requested capture runs) and writes to a temporary dump folder. Tasks
//! dumps need the `taskdump` build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, ProfileKind, Rule};

#[global_allocator]
static ALLOC: holmes_agent::SamplingAllocator = holmes_agent::SamplingAllocator::system();

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `RssAnon` and `RssFile` of this process, KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

#[inline(never)]
fn spin_in_the_pricing_loop() {
    let mut x = 1u64;
    loop {
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

#[inline(never)]
fn wait_for_the_inventory_lock(gate: &Barrier) {
    gate.wait();
    std::thread::sleep(Duration::from_secs(3600));
}

#[inline(never)]
fn keep_the_catalogue_in_memory() -> Vec<u8> {
    std::hint::black_box(vec![7u8; 64 << 20])
}

/// Profiles of `kind` in `dir`, oldest first.
fn profiles(dir: &Path, kind: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    n.starts_with(&format!("{kind}.")) && n.ends_with(".pb.gz")
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found
}

/// One child process: start the host and the agent, capture `kind` once, report.
fn child(kind: ProfileKind) {
    let dir = std::env::temp_dir().join(format!("holmes-bench-captures-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (anon0, file0) = rss_kib();
    let cpu0 = cpu_time();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Rules off: the host's spinning thread would fire the CPU rule after the warm-up, and
    // that capture would use (and keep) the debug info the idle figure waits to see
    // given back.
    let mut builder = Holmes::from_env()
        .expect("settings")
        .service("bench")
        .dump_dir(&dir)
        .tokio_runtime(runtime.handle().clone());
    for metric in [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::Threads,
        Metric::Tasks,
        Metric::HeapPercent,
    ] {
        builder = builder.rule(metric, Rule::new().enabled(false));
    }
    let agent = builder.start().expect("agent starts");
    // The host is set up afterwards, so that its own memory and CPU are not counted in
    // the start-up cost.
    std::thread::sleep(Duration::from_millis(1000));
    let start_cpu = cpu_time() - cpu0;
    let (anon1, file1) = rss_kib();
    let gate = Arc::new(Barrier::new(17));
    for _ in 0..16 {
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || wait_for_the_inventory_lock(&gate));
    }
    gate.wait();
    let catalogue = keep_the_catalogue_in_memory();
    std::thread::spawn(move || {
        runtime.block_on(async {
            for _ in 0..100 {
                tokio::spawn(std::future::pending::<()>());
            }
            std::future::pending::<()>().await
        })
    });
    std::thread::spawn(spin_in_the_pricing_loop);
    // The flight recorder fills a little.
    std::thread::sleep(Duration::from_millis(1500));
    let (anon1b, file1b) = rss_kib();

    let t0 = Instant::now();
    agent.capture_now(&[kind]).expect("capture accepted");
    let wanted = if kind == ProfileKind::Cpu { 2 } else { 1 };
    let mut times = Vec::new();
    while times.len() < wanted && t0.elapsed() < Duration::from_secs(10) {
        let n = profiles(&dir, kind.as_str()).len();
        while times.len() < n.min(wanted) {
            times.push(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (anon2, file2) = rss_kib();
    // The debug info is given back after 30 s without captures (checked on a sample).
    std::thread::sleep(Duration::from_secs(32));
    let (anon3, file3) = rss_kib();
    let ms: Vec<String> = times
        .iter()
        .map(|t| format!("{:.1}", t.as_secs_f64() * 1e3))
        .collect();
    // A kind this build cannot capture reports a failure instead of a file.
    println!(
        "ms={} start_cpu_ms={:.1} start_anon_kib={} start_file_kib={} capture_anon_kib={} capture_file_kib={} idle_anon_kib={} idle_file_kib={}",
        ms.join(","),
        start_cpu.as_secs_f64() * 1e3,
        anon1.saturating_sub(anon0),
        file1.saturating_sub(file0),
        anon2.saturating_sub(anon1b),
        file2.saturating_sub(file1b),
        anon3.saturating_sub(anon1b),
        file3.saturating_sub(file1b),
    );
    drop(catalogue);
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(0);
}

fn kind_named(name: &str) -> Option<ProfileKind> {
    [
        ProfileKind::Cpu,
        ProfileKind::Heap,
        ProfileKind::Threads,
        ProfileKind::Tasks,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
}

/// One child's report: numbers by key.
type Report = Vec<(String, Vec<f64>)>;

/// Runs one child and reads its report.
fn run_child(kind: ProfileKind) -> Option<Report> {
    let out = Command::new(std::env::current_exe().ok()?)
        .env("HOLMES_BENCH_ROLE", kind.as_str())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("ms="))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.split(',').filter_map(|x| x.parse().ok()).collect(),
                )
            })
            .collect(),
    )
}

fn summary(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "n/a (needs the taskdump build)".to_owned();
    }
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    format!(
        "{:.0} / {:.0} / {:.0}",
        values[0],
        median,
        values[values.len() - 1]
    )
}

fn main() {
    if let Ok(role) = std::env::var("HOLMES_BENCH_ROLE") {
        if let Some(kind) = kind_named(&role) {
            child(kind);
        }
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("HOLMES_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rows = [
        ("cpu pre-trigger", ProfileKind::Cpu, 0),
        ("cpu complete (2 s)", ProfileKind::Cpu, 1),
        ("heap", ProfileKind::Heap, 0),
        ("threads", ProfileKind::Threads, 0),
        ("tasks", ProfileKind::Tasks, 0),
    ];
    let mut results: Vec<(ProfileKind, Vec<Report>)> = Vec::new();
    for kind in [
        ProfileKind::Cpu,
        ProfileKind::Heap,
        ProfileKind::Threads,
        ProfileKind::Tasks,
    ] {
        // Without task dumps built in, a tasks request writes no tasks profile.
        if kind == ProfileKind::Tasks && !cfg!(feature = "taskdump") {
            continue;
        }
        let reports = (0..runs).filter_map(|_| run_child(kind)).collect();
        results.push((kind, reports));
    }
    let pick = |kind: ProfileKind, key: &str, index: usize| -> Vec<f64> {
        results
            .iter()
            .filter(|(k, _)| *k == kind)
            .flat_map(|(_, runs)| runs.iter())
            .filter_map(|fields| {
                fields
                    .iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| v.get(index).copied())
            })
            .collect()
    };
    println!("\ntime from capture request to profile on disk, ms (min / median / max of {runs} fresh processes):");
    println!("| capture | first in process |");
    println!("|---|---|");
    for (label, kind, index) in rows {
        println!("| {label} | {} |", summary(pick(kind, "ms", index)));
    }
    let all = |key: &str| -> Vec<f64> {
        [
            ProfileKind::Cpu,
            ProfileKind::Heap,
            ProfileKind::Threads,
            ProfileKind::Tasks,
        ]
        .into_iter()
        .flat_map(|k| pick(k, key, 0))
        .collect()
    };
    println!("\nstart-up (agent start to 1 s later), first capture, and 32 s later, KiB or ms (min / median / max):");
    println!("| | |");
    println!("|---|---|");
    for (label, key) in [
        ("process CPU time at start, ms", "start_cpu_ms"),
        ("RssAnon added at start, KiB", "start_anon_kib"),
        ("RssFile added at start, KiB", "start_file_kib"),
        (
            "RssAnon added by the first capture, KiB",
            "capture_anon_kib",
        ),
        (
            "RssFile added by the first capture, KiB",
            "capture_file_kib",
        ),
        (
            "RssAnon still added 32 s later (debug info given back), KiB",
            "idle_anon_kib",
        ),
        ("RssFile still added 32 s later, KiB", "idle_file_kib"),
    ] {
        println!("| {label} | {} |", summary(all(key)));
    }
}
