//! What the agent costs a host, measured side by side with a control process (this same
//! binary, without the agent) in one run, alternating, with a collector configured (a
//! small real one on loopback, run by this bench's parent process, whose own CPU is not
//! counted):
//!
//! - **idle**: a host that wakes every 10 ms to do a little work; CPU added (% of one
//!   core), RSS added (total and anonymous), threads added, and start-up CPU (the
//!   process's CPU from just before `start()` to 2 s after, minus the control's over the
//!   same window);
//! - **per sample**: the flight recorder's handler is the one `SIGPROF` handler, so a
//!   thread 30 frames deep sends itself `SIGPROF` in batches of 256 (the agent thread
//!   drains the signal ring between two batches) and times them; the control does the
//!   same with a handler that does nothing. The difference is the handler's work
//!   (walking the stack, recording it); the control's time is the signal's sending,
//!   delivery and return (an upper bound for a timer's signal, which needs no `tgkill`);
//!   the agent thread's share (moving samples from the ring into the recorder) is its
//!   CPU time over the batches (`/proc/self/task/<tid>/schedstat`) minus its idle rate.
//!   Medians of batches, so a loaded machine's preemptions fall out. (Timing the
//!   difference in a busy host's CPU instead drowns a few µs per sample, 19 samples a
//!   second, in the noise of a shared machine.)
//! - **baseline**: the idle host with baselines every second (`HOLMES_BASELINE_INTERVAL`,
//!   default 15 min): the CPU time and bytes of one baseline (its flight-recorder window,
//!   thread stack counts), as the agent accounts them, and what that costs at the
//!   default interval, next to the idle CPU added.
//!
//! `cargo bench -p holmes-agent --bench overhead` (HOLMES_BENCH_SECS per idle run,
//! default 20; HOLMES_BENCH_RUNS pairs, default 3; medians are reported).

#[path = "../tests/support/collector.rs"]
mod collector;

use std::process::Command;
use std::time::{Duration, Instant};

/// How deep the sampled thread's stack is (plus the harness' frames below it).
const BUSY_DEPTH: u32 = 30;

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the whole process, to the nanosecond.
fn cpu_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// A field of /proc/self/status, in its unit (KiB for memory).
fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Nanoseconds of CPU the agent's own threads (`holmes-*`) have had (schedstat).
fn agent_threads_runtime_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("holmes-"))
        })
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Nanoseconds of CPU the thread named `name` has had (schedstat), if there is one.
fn thread_runtime_ns(name: &str) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(entry.path().join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

fn start_agent(with_agent: bool) -> Option<holmes_agent::HolmesHandle> {
    if !with_agent {
        return None;
    }
    let url = std::env::var("HOLMES_BENCH_COLLECTOR").expect("the parent's collector");
    // HOLMES_* variables of the bench's environment apply, to price other settings.
    Some(
        holmes_agent::Holmes::from_env()
            .expect("valid HOLMES_* settings")
            .service("bench")
            .collector(url)
            .start()
            .expect("agent starts"),
    )
}

/// The idle host: start-up, then a steady state.
fn idle(with_agent: bool, secs: u64) {
    let cpu0 = cpu_time();
    let agent = start_agent(with_agent);
    std::thread::sleep(Duration::from_secs(2));
    let start_cpu = cpu_time() - cpu0;
    let cpu1 = cpu_time();
    let own1 = agent_threads_runtime_ns();
    let t0 = Instant::now();
    let mut acc = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        for i in 0..1_000u64 {
            acc = std::hint::black_box(acc.wrapping_add(i));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu = cpu_time() - cpu1;
    let own = agent_threads_runtime_ns().saturating_sub(own1);
    let wall = t0.elapsed();
    println!(
        "start_cpu_ns={} cpu_ns={} own_ns={own} wall_ns={} rss_kib={} anon_kib={} threads={}",
        start_cpu.as_nanos(),
        cpu.as_nanos(),
        wall.as_nanos(),
        status("VmRSS:"),
        status("RssAnon:"),
        status("Threads:"),
    );
    if let Some(a) = agent {
        a.stop();
    }
}

/// The idle host with baselines every second: what they took, by the agent's account.
fn baselines(secs: u64) {
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let agent = start_agent(true);
    std::thread::sleep(Duration::from_secs(secs));
    let Some(agent) = agent else { return };
    let stats = agent.stats();
    println!(
        "baselines={} baseline_cpu_ns={} baseline_bytes={} cpu_ns={} wall_ns={}",
        stats.baselines,
        stats.baseline_cpu.as_nanos(),
        stats.baseline_bytes,
        (cpu_time() - cpu0).as_nanos(),
        t0.elapsed().as_nanos(),
    );
    agent.stop();
}

/// Signals sent to this thread per batch: half the agent's signal ring, drained by the
/// agent thread (every 100 ms) between two batches.
const BATCH: usize = 256;
/// Batches per run.
const BATCHES: usize = 40;

extern "C" fn ignore(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Sends this thread `BATCHES` batches of `SIGPROF` and times each batch.
#[inline(never)]
fn send_batches() -> Vec<Duration> {
    // SAFETY: plain system calls on this process and thread.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    let mut times = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let t = Instant::now();
        for _ in 0..BATCH {
            // SAFETY: signals this thread with SIGPROF, which has a handler (the agent's,
            // or `ignore` in the control).
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGPROF) };
        }
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(150));
    }
    times
}

/// Recurses `depth` frames, then sends the signals: the stack each sample walks is this
/// deep.
#[inline(never)]
fn deep(depth: u32) -> Vec<Duration> {
    if depth == 0 {
        return send_batches();
    }
    let r = deep(std::hint::black_box(depth - 1));
    std::hint::black_box(r)
}

/// One sample's cost: `SIGPROF` sent to this thread in batches, with the agent's handler
/// (the flight recorder's) or, in the control, a handler that does nothing.
fn signals(with_agent: bool) {
    let agent = start_agent(with_agent);
    if !with_agent {
        // SAFETY: a zeroed sigaction with a handler that does nothing, SA_SIGINFO and
        // an empty mask: what the agent installs, minus the work.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut());
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    // The agent thread's idle rate, before the signals.
    let idle_from = (Instant::now(), thread_runtime_ns("holmes-agent"));
    std::thread::sleep(Duration::from_secs(2));
    let idle_ns = idle_from
        .1
        .zip(thread_runtime_ns("holmes-agent"))
        .map_or(0, |(a, b)| b - a);
    let idle_rate = idle_ns as f64 / idle_from.0.elapsed().as_secs_f64();

    let agent_before = thread_runtime_ns("holmes-agent");
    let t0 = Instant::now();
    let mut batches = deep(BUSY_DEPTH);
    // The drain of the last batch.
    std::thread::sleep(Duration::from_millis(300));
    let wall = t0.elapsed();
    let agent_ns = agent_before
        .zip(thread_runtime_ns("holmes-agent"))
        .map_or(0, |(a, b)| b - a);
    // Noise in the idle rate can make this slightly negative; it is reported as it is.
    let agent_share_ns = agent_ns as f64 - idle_rate * wall.as_secs_f64();
    // The median batch: a batch the scheduler interrupted is an outlier.
    batches.sort();
    let median = batches[batches.len() / 2];
    println!(
        "signal_ns={:.0} agent_ns={:.0} signals={}",
        median.as_nanos() as f64 / BATCH as f64,
        agent_share_ns / (BATCH * BATCHES) as f64,
        BATCH * BATCHES
    );
    if let Some(a) = agent {
        a.stop();
    }
}

/// Runs one child in `role` and reads its report.
fn measure(collector: &str, role: &str, secs: u64) -> Vec<(String, f64)> {
    let mut child = Command::new(std::env::current_exe().expect("own path"));
    if role == "baseline-agent" {
        child.env("HOLMES_BASELINE_INTERVAL", "1s");
    }
    let out = child
        .env("HOLMES_BENCH_ROLE", role)
        .env("HOLMES_BENCH_SECS", secs.to_string())
        .env("HOLMES_BENCH_COLLECTOR", collector)
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("cpu_ns=") || l.contains("signal_ns="))
        .unwrap_or_else(|| panic!("child {role} reports: {text}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

fn field(report: &[(String, f64)], key: &str) -> f64 {
    report
        .iter()
        .find(|(k, _)| k == key)
        .map_or(0.0, |(_, v)| *v)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env_or("HOLMES_BENCH_SECS", 20);
    match std::env::var("HOLMES_BENCH_ROLE").as_deref() {
        Ok("idle-agent") => return idle(true, secs),
        Ok("idle-plain") => return idle(false, secs),
        Ok("signals-agent") => return signals(true),
        Ok("signals-plain") => return signals(false),
        Ok("baseline-agent") => return baselines(secs),
        _ => {}
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = env_or("HOLMES_BENCH_RUNS", 3).max(1);
    let collector = collector::TestCollector::start();

    // Idle, alternating control and agent.
    let (mut cpu, mut own, mut start, mut rss, mut anon, mut threads) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for run in 1..=runs {
        let plain = measure(&collector.url(), "idle-plain", secs);
        let agent = measure(&collector.url(), "idle-agent", secs);
        let rate = |r: &[(String, f64)]| field(r, "cpu_ns") / field(r, "wall_ns") * 100.0;
        let d = |k: &str| field(&agent, k) - field(&plain, k);
        println!(
            "idle run {run}: cpu {:.4}% -> {:.4}% of a core (the agent's threads {:.4}%), rss {:.1} -> {:.1} MiB (anon {:.1} -> {:.1}), threads {} -> {}, start-up cpu {:.1} -> {:.1} ms",
            rate(&plain),
            rate(&agent),
            field(&agent, "own_ns") / field(&agent, "wall_ns") * 100.0,
            field(&plain, "rss_kib") / 1024.0,
            field(&agent, "rss_kib") / 1024.0,
            field(&plain, "anon_kib") / 1024.0,
            field(&agent, "anon_kib") / 1024.0,
            field(&plain, "threads"),
            field(&agent, "threads"),
            field(&plain, "start_cpu_ns") / 1e6,
            field(&agent, "start_cpu_ns") / 1e6,
        );
        cpu.push(rate(&agent) - rate(&plain));
        own.push(field(&agent, "own_ns") / field(&agent, "wall_ns") * 100.0);
        start.push(d("start_cpu_ns") / 1e6);
        rss.push(d("rss_kib") / 1024.0);
        anon.push(d("anon_kib") / 1024.0);
        threads.push(d("threads"));
    }

    // The flight recorder's cost per sample.
    let (mut handler, mut delivery, mut agent_share) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let plain = measure(&collector.url(), "signals-plain", 0);
        let agent = measure(&collector.url(), "signals-agent", 0);
        let work_us = (field(&agent, "signal_ns") - field(&plain, "signal_ns")) / 1e3;
        let kernel_us = field(&plain, "signal_ns") / 1e3;
        let agent_us = field(&agent, "agent_ns") / 1e3;
        println!(
            "sample run {run}: {:.0} signals {BUSY_DEPTH} frames deep; per sample {work_us:.2} µs in the agent's handler (walk and record) + {kernel_us:.2} µs sending, delivering and returning from a signal (a no-op handler) + {agent_us:.2} µs on the agent thread",
            field(&agent, "signals"),
        );
        handler.push(work_us);
        delivery.push(kernel_us);
        agent_share.push(agent_us);
    }
    // Baselines, every second instead of every 15 minutes.
    let (mut per_cpu, mut per_bytes, mut sent) = (Vec::new(), Vec::new(), 0.0);
    for run in 1..=runs {
        let b = measure(&collector.url(), "baseline-agent", secs.clamp(5, 20));
        let n = field(&b, "baselines").max(1.0);
        let cpu_ms = field(&b, "baseline_cpu_ns") / n / 1e6;
        let kib = field(&b, "baseline_bytes") / n / 1024.0;
        println!(
            "baseline run {run}: {} baselines, {cpu_ms:.2} ms CPU and {kib:.1} KiB each",
            field(&b, "baselines")
        );
        per_cpu.push(cpu_ms);
        per_bytes.push(kib);
        sent += field(&b, "baselines");
    }
    let (per_cpu, per_bytes) = (median(per_cpu), median(per_bytes));
    // At the default interval, as a share of a core.
    let every = holmes_agent::DEFAULT_BASELINE_INTERVAL.as_secs_f64();
    let amortized = per_cpu / 1e3 / every * 100.0;

    let (cpu, own, start, rss, anon, threads) = (
        median(cpu),
        median(own),
        median(start),
        median(rss),
        median(anon),
        median(threads),
    );
    let (handler, delivery, agent_share) = (median(handler), median(delivery), median(agent_share));
    let per_sample = handler + delivery + agent_share;
    println!("\nmedians of {runs} runs, with a collector configured, against a control process in the same run:");
    println!("| | Go holmes (reference) | holmes-agent | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| idle CPU added, % of a core | 0.113 | {cpu:.3} (the agent's own threads {own:.3}) | {:.2}x | <= 0.1 |",
        cpu / 0.113
    );
    println!(
        "| RSS added, MiB | 3.2 | {rss:.2} (anonymous {anon:.2}) | {:.2}x | <= 3 |",
        rss / 3.2
    );
    println!("| threads added | — | {threads:.0} | | |");
    println!(
        "| start-up CPU, ms | 4.9 | {start:.1} | {:.2}x | <= 6 |",
        start / 4.9
    );
    println!(
        "| flight recorder, µs per sample end to end | — | {per_sample:.1} ({handler:.1} walking and recording in the handler, {delivery:.1} signal delivery and return, {agent_share:.1} on the agent thread) | | <= 20 |"
    );
    println!(
        "| baseline: CPU per baseline, ms ({sent:.0} measured) | — | {per_cpu:.2} ({per_bytes:.1} KiB sent) | | |"
    );
    println!(
        "| baselines every {:.0} min, % of a core | — | {amortized:.5} ({:.3}x the idle CPU added) | | |",
        every / 60.0,
        amortized / cpu.max(1e-9)
    );
}
