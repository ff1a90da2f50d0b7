//! Captures in a real process, read back with the standard `go tool pprof`.
//!
//! `go` comes from Debian's golang-go (deploy/dev/test.sh installs it). Without it these
//! tests fail under CI or HOLMES_TEST_REQUIRE_GO=1 and are skipped otherwise.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule};

mod support;
use support::{files, go_available, pprof, top_function};

/// CPU sampling is process-wide: one capture test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn quiet(dir: &Path) -> holmes_agent::HolmesBuilder {
    let mut b = Holmes::builder()
        .service("capture-test")
        .dump_dir(dir)
        .collect_interval(Duration::from_millis(100))
        .memory_fast_interval(None)
        // Loading this debug test binary's symbols takes a second or more of CPU on the
        // prewarm thread; these tests measure captures, not start-up, so the first
        // capture loads them instead.
        .prewarm_symbols(false);
    for m in [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::Threads,
        Metric::Tasks,
        Metric::HeapPercent,
    ] {
        b = b.rule(m, Rule::new().enabled(false));
    }
    b
}

/// The culprit of the CPU scenario: a leaf that spins with plain operators only.
#[inline(never)]
fn burn_cpu_culprit(rounds: u64) -> u64 {
    let mut x = rounds | 1;
    let mut i = 0u64;
    while i < rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    x
}

#[inline(never)]
fn burst(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::black_box(burn_cpu_culprit(1_000_000));
    }
}

#[test]
fn a_short_cpu_burst_is_in_the_pre_trigger_profile() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet(dir.path())
        .cpu_rule(
            Rule::new()
                .min(5.0)
                .abs(30.0)
                .window(3)
                .cooldown(Duration::from_secs(60)),
        )
        .cpu_profile_duration(Duration::from_millis(500))
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // A burst so short that most of it is over when the rule fires (after ~2 samples),
    // yet long enough for the 19 Hz recorder to take a dozen samples on a busy machine.
    let onset = Instant::now();
    std::thread::spawn(|| burst(Duration::from_millis(1000)))
        .join()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while files(dir.path(), "cpu.", ".pb.gz").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "two cpu profiles (pre and post trigger) are written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let onset_to_profile = onset.elapsed();
    let profiles = files(dir.path(), "cpu.", ".pb.gz");
    let pre = profiles
        .iter()
        .find(|p| pprof(&["-raw"], p).contains("pre-trigger"))
        .expect("a pre-trigger profile");
    let top = pprof(&["-top", "-nodecount=10"], pre);
    assert_eq!(top_function(&top), "captures::burn_cpu_culprit", "{top}");
    let traces = pprof(&["-traces"], pre);
    assert!(traces.contains("captures::burst"), "{traces}");
    eprintln!("cpu burst onset -> both profiles on disk: {onset_to_profile:?}");
    let trigger = std::fs::read_to_string(files(dir.path(), "", ".json")[0].clone()).unwrap();
    assert!(trigger.contains("\"planned\":[\"cpu\"]"), "{trigger}");
    agent.stop();
}

/// Threads blocked on a lock held by another: their stacks name the function they wait in.
#[inline(never)]
fn wait_for_the_lock_culprit(lock: &Mutex<()>) {
    let _guard = lock.lock();
    std::hint::black_box(());
}

#[test]
fn a_thread_pile_up_is_in_the_thread_dump() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_dir("/proc/self/task").unwrap().count() as f64;
    let agent = quiet(dir.path())
        .thread_rule(
            Rule::new()
                .min(1.0)
                .abs(base + 8.0)
                .window(3)
                .cooldown(Duration::from_secs(60)),
        )
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let lock: &'static Mutex<()> = Box::leak(Box::new(Mutex::new(())));
    let held = lock.lock().unwrap();
    let pile: Vec<_> = (0..12)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("request-{i}"))
                .spawn(move || wait_for_the_lock_culprit(lock))
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while files(dir.path(), "threads.", ".pb.gz").is_empty() {
        assert!(Instant::now() < deadline, "a thread dump is written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dump = &files(dir.path(), "threads.", ".pb.gz")[0];
    let top = pprof(&["-top", "-cum", "-nodecount=40"], dump);
    assert!(top.contains("captures::wait_for_the_lock_culprit"), "{top}");
    let tags = pprof(&["-tags"], dump);
    assert!(
        tags.contains("request-3"),
        "thread names are labels: {tags}"
    );
    let text = std::fs::read_to_string(&files(dir.path(), "threads.", ".txt")[0]).unwrap();
    let blocked = text
        .split("\nthread ")
        .filter(|block| block.contains("request-") && block.contains("wait_for_the_lock_culprit"))
        .count();
    assert!(
        blocked >= 10,
        "readable dump names the culprit for the piled-up threads:\n{text}"
    );
    drop(held);
    for t in pile {
        t.join().unwrap();
    }
    agent.stop();
}
