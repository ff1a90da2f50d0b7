//! What the agent costs a host: CPU time and resident memory of the same idle-ish host
//! process with and without the agent, measured in one run, alternating.
//!
//! `cargo bench -p holmes-agent --bench overhead` (HOLMES_BENCH_SECS per run, default 20;
//! HOLMES_BENCH_RUNS pairs, default 3). The agent runs as configured by default: 1 s
//! interval, 100 ms memory fast path, all five rules, the CPU flight recorder on, no
//! collector (local dump mode, as the Go library runs). A second measurement runs a busy
//! host (a fixed amount of work on one core) to price the flight recorder's signals.

use std::process::Command;
use std::time::{Duration, Instant};

/// CPU time of the whole process, to the nanosecond (getrusage counts in scheduler
/// ticks here, too coarse for a cost this small).
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The host: a service that wakes every 10 ms to do a little work.
fn host(with_agent: bool, secs: u64) {
    let dir = std::env::temp_dir().join(format!("holmes-bench-{}", std::process::id()));
    let agent = with_agent.then(|| {
        holmes_agent::Holmes::builder()
            .service("bench")
            .dump_dir(&dir)
            .start()
            .expect("agent starts")
    });
    // Let start-up settle, then measure a steady state.
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut acc = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        for i in 0..1_000u64 {
            acc = std::hint::black_box(acc.wrapping_add(i));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu = cpu_time() - cpu0;
    let wall = t0.elapsed();
    println!(
        "cpu_ns={} wall_ns={} rss_kib={}",
        cpu.as_nanos(),
        wall.as_nanos(),
        rss_kib()
    );
    if let Some(a) = agent {
        a.stop();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A busy host: one thread does a fixed amount of work; the flight recorder samples it
/// at 19 Hz the whole time. Reports the CPU time the work took.
fn busy(with_agent: bool) {
    let dir = std::env::temp_dir().join(format!("holmes-bench-{}", std::process::id()));
    let agent = with_agent.then(|| {
        holmes_agent::Holmes::builder()
            .service("bench")
            .dump_dir(&dir)
            .start()
            .expect("agent starts")
    });
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut x = 1u64;
    for _ in 0..3_000_000_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x);
    let cpu = cpu_time() - cpu0;
    println!(
        "cpu_ns={} wall_ns={} rss_kib={}",
        cpu.as_nanos(),
        t0.elapsed().as_nanos(),
        rss_kib()
    );
    if let Some(a) = agent {
        a.stop();
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn measure(with_agent: bool, secs: u64) -> (f64, f64, f64) {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env(
            "HOLMES_BENCH_ROLE",
            match (with_agent, secs) {
                (true, 0) => "busy-agent",
                (false, 0) => "busy-plain",
                (true, _) => "agent",
                (false, _) => "plain",
            },
        )
        .env("HOLMES_BENCH_SECS", secs.to_string())
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu_ns="))
        .expect("child reports");
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .expect("field")
    };
    (field("cpu_ns="), field("wall_ns="), field("rss_kib="))
}

fn main() {
    let secs: u64 = std::env::var("HOLMES_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    match std::env::var("HOLMES_BENCH_ROLE").as_deref() {
        Ok("agent") => return host(true, secs),
        Ok("plain") => return host(false, secs),
        Ok("busy-agent") => return busy(true),
        Ok("busy-plain") => return busy(false),
        _ => {}
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: u32 = std::env::var("HOLMES_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (mut plain_cpu, mut agent_cpu, mut plain_rss, mut agent_rss, mut wall) =
        (0.0, 0.0, 0.0, 0.0, 0.0);
    for run in 1..=runs {
        let (pc, pw, pr) = measure(false, secs);
        let (ac, aw, ar) = measure(true, secs);
        println!(
            "run {run}: without agent cpu {:.3}% rss {:.1} MiB | with agent cpu {:.3}% rss {:.1} MiB",
            pc / pw * 100.0,
            pr / 1024.0,
            ac / aw * 100.0,
            ar / 1024.0
        );
        plain_cpu += pc;
        agent_cpu += ac;
        plain_rss += pr;
        agent_rss += ar;
        wall += (pw + aw) / 2.0;
    }
    let n = f64::from(runs);
    let added_core_percent = (agent_cpu - plain_cpu) / wall * 100.0;
    println!("\nagent overhead over {runs} pairs of {secs}s runs (1 s interval, 100 ms memory fast path, 5 rules):");
    println!(
        "  cpu: {:.4}% of one core added (host {:.4}% -> {:.4}%, ratio {:.3}x)",
        added_core_percent,
        plain_cpu / wall * 100.0,
        agent_cpu / wall * 100.0,
        agent_cpu / plain_cpu
    );
    println!(
        "  rss: {:+.2} MiB added (host {:.2} MiB -> {:.2} MiB, ratio {:.3}x)",
        (agent_rss - plain_rss) / n / 1024.0,
        plain_rss / n / 1024.0,
        agent_rss / n / 1024.0,
        agent_rss / plain_rss
    );

    // A busy host: the flight recorder takes 19 signals per CPU second all along.
    let (mut busy_plain, mut busy_agent) = (0.0, 0.0);
    for _ in 0..runs {
        busy_plain += measure(false, 0).0;
        busy_agent += measure(true, 0).0;
    }
    println!(
        "  busy host (one core of fixed work, flight recorder sampling it): cpu {:.3} s -> {:.3} s, ratio {:.4}x ({:+.3}% of one core)",
        busy_plain / n / 1e9,
        busy_agent / n / 1e9,
        busy_agent / busy_plain,
        (busy_agent - busy_plain) / busy_plain * 100.0
    );
}
