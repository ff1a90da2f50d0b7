//! One instance of the fleet the collector's suspects test starts four of
//! (collector/tests/it/suspects.rs), built as agent/README.md tells hosts to build (the
//! workspace's `profiling` profile: release, line tables, frame pointers). Every
//! instance spends about a fifth of a core in [`background`], which spends its time in
//! the shared helper [`checksum`]; an instance told `FLEET_CULPRIT_AFTER` (e.g. `25s`)
//! then also burns a core in [`culprit`], which spends its time in the same helper. So
//! the helper is busy everywhere, the background function is the same on healthy and
//! sick instances, and only the culprit tells them apart.
//!
//! Its CPU rule fires at 0.4 of one core, as a percentage of the cores CPU % counts
//! (`HOLMES_CPU_CORES`, else the CPUs this process may run on): above the background's
//! fifth, below what the culprit adds, on 2 cores as on 16.
//!
//! With `FLEET_PROBLEM=leak` the problem is memory instead: every instance keeps a ring
//! of 32 MiB of buffers in [`background_buffers`], replacing one every few
//! milliseconds; the sick ones also leak 8 MiB a second (up to 256 MiB) in [`leak`]; both
//! allocate through the shared helper [`fill_buffer`]. The heap rule fires on growth
//! (25% above the window's average), so it holds whatever the machine's memory.
//!
//! The agent is configured from the environment (`HOLMES_COLLECTOR`, `HOLMES_INSTANCE`,
//! ...); the service is `fleet`, or `fleet-leak` for the memory problem. It runs until
//! its parent process goes away.

use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule};

// Heap profiles and the heap metric come from the agent's sampling allocator.
#[global_allocator]
static ALLOC: holmes_agent::SamplingAllocator = holmes_agent::SamplingAllocator::system();

/// The size of one buffer of the memory problem.
const BUFFER: usize = 256 * 1024;
/// Buffers every instance keeps (32 MiB).
const RING: usize = 128;
/// Buffers a sick instance leaks a second (8 MiB), and at most (256 MiB).
const LEAK_PER_SECOND: usize = 32;
const LEAK_AT_MOST: usize = 1024;

/// The background's period: busy a fifth of it, asleep the rest.
const PERIOD: Duration = Duration::from_millis(100);

/// The shared helper: mixes `rounds` numbers (both the background and the culprit
/// spend their time here).
#[inline(never)]
pub fn checksum(rounds: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// What every instance does: about a fifth of a core in [`checksum`], in slices of
/// [`PERIOD`], until `stop` says so.
#[inline(never)]
pub fn background(stop: &dyn Fn() -> bool) {
    while !stop() {
        let started = Instant::now();
        while started.elapsed() < PERIOD / 5 {
            std::hint::black_box(checksum(20_000));
        }
        std::thread::sleep(PERIOD.saturating_sub(started.elapsed()));
    }
}

/// The culprit: a core's worth of [`checksum`] until `stop` says so.
#[inline(never)]
pub fn culprit(stop: &dyn Fn() -> bool) {
    while !stop() {
        std::hint::black_box(checksum(20_000));
    }
}

/// The shared allocation helper of the memory problem: a buffer of [`BUFFER`] bytes
/// filled from `seed`.
#[inline(never)]
pub fn fill_buffer(seed: u8) -> Vec<u8> {
    std::hint::black_box(vec![seed; BUFFER])
}

/// What every instance does with `FLEET_PROBLEM=leak`: a ring of [`RING`] buffers from
/// [`fill_buffer`], one replaced every 10 ms, until `stop` says so.
#[inline(never)]
pub fn background_buffers(stop: &dyn Fn() -> bool) {
    let mut ring: Vec<Vec<u8>> = (0..RING).map(|i| fill_buffer(i as u8)).collect();
    let mut next = 0usize;
    while !stop() {
        ring[next % RING] = fill_buffer(next as u8);
        next += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    std::hint::black_box(&ring);
}

/// The memory culprit: [`LEAK_PER_SECOND`] buffers from [`fill_buffer`] a second, kept
/// forever (up to [`LEAK_AT_MOST`]), until `stop` says so.
#[inline(never)]
pub fn leak(stop: &dyn Fn() -> bool) {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    while !stop() {
        if kept.len() < LEAK_AT_MOST {
            kept.push(fill_buffer(kept.len() as u8));
        }
        std::thread::sleep(Duration::from_millis(1000 / LEAK_PER_SECOND as u64));
    }
    std::hint::black_box(&kept);
}

/// The cores the agent computes CPU % against: `HOLMES_CPU_CORES` when it is set (a bad
/// value is the agent's to refuse), else the CPUs this process may run on.
fn cpu_capacity() -> f64 {
    std::env::var("HOLMES_CPU_CORES")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|c| c.is_finite() && *c > 0.0)
        .unwrap_or(std::thread::available_parallelism().map_or(1, |n| n.get()) as f64)
}

/// `FLEET_CULPRIT_AFTER` as a duration (`25s`, `1500ms`); `None` when unset.
fn culprit_after() -> Option<Duration> {
    let text = std::env::var("FLEET_CULPRIT_AFTER").ok()?;
    let (number, unit) = text
        .trim()
        .split_at(text.trim().find(|c: char| c.is_alphabetic())?);
    let n: u64 = number.parse().ok()?;
    match unit {
        "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        _ => None,
    }
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let culprit_after = match std::env::var_os("FLEET_CULPRIT_AFTER") {
        Some(_) => match culprit_after() {
            Some(after) => Some(after),
            None => {
                eprintln!("FLEET_CULPRIT_AFTER: a number of s or ms, e.g. 25s");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let leaking = match std::env::var("FLEET_PROBLEM").as_deref() {
        Err(_) | Ok("cpu") => false,
        Ok("leak") => true,
        Ok(other) => {
            eprintln!("FLEET_PROBLEM={other:?}: cpu (the default) or leak");
            std::process::exit(2);
        }
    };
    let parent = std::os::unix::process::parent_id();
    let orphaned = move || std::os::unix::process::parent_id() != parent;
    let mut builder = match Holmes::from_env() {
        Ok(b) => b
            .service(if leaking { "fleet-leak" } else { "fleet" })
            .collect_interval(Duration::from_secs(1))
            .send_interval(Duration::from_secs(1)),
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    if leaking && std::env::var_os("HOLMES_RULE_HEAP").is_none() {
        builder = builder.heap_rule(
            Rule::default_for(Metric::HeapPercent)
                .unwrap_or_default()
                .min(0.0)
                .abs(f64::INFINITY)
                .diff(25.0),
        );
    }
    if std::env::var_os("HOLMES_RULE_CPU").is_none() {
        let rule = Rule::default_for(Metric::CpuPercent)
            .unwrap_or_default()
            .min(40.0 / cpu_capacity().max(1.0));
        builder = builder.cpu_rule(rule);
    }
    let holmes = match builder.start() {
        Ok(h) => h,
        Err(err) => {
            eprintln!("cannot start the agent: {err}");
            std::process::exit(2);
        }
    };
    if leaking {
        // The agent's first heap capture keeps about 22 MiB on the heap for good (its
        // caches, measured with this build), later ones about 2 MiB; one right away
        // makes that part of the level the heap rule's window learns during its
        // warm-up, so a healthy control's capture later on does not look like growth.
        if let Err(err) = holmes.capture_now(&[holmes_agent::ProfileKind::Heap]) {
            eprintln!("no warm-up heap capture: {err}");
        }
    }
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            if leaking {
                background_buffers(&orphaned)
            } else {
                background(&orphaned)
            }
        });
        if let Some(after) = culprit_after {
            s.spawn(move || {
                while started.elapsed() < after {
                    if orphaned() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if leaking {
                    leak(&orphaned)
                } else {
                    culprit(&orphaned)
                }
            });
        }
    });
    holmes.stop();
}
