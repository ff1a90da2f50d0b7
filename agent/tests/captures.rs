//! Captures in a real process, read back with the standard `go tool pprof`.
//!
//! `go` comes from Debian's golang-go (deploy/dev/test.sh installs it). Without it these
//! tests fail under CI or HOLMES_TEST_REQUIRE_GO=1 and are skipped otherwise.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use holmes_agent::{ProfileKind, Rule};

mod support;
use support::{eventually, files, go_available, pprof, quiet_agent, thread_cpu_time, top_function};

/// CPU sampling is process-wide: one capture test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

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

/// Burns `cpu` of this thread's CPU time, however long a busy machine takes to give it.
#[inline(never)]
fn burst(cpu: Duration) {
    let from = thread_cpu_time();
    while thread_cpu_time() - from < cpu {
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
    // One busy thread is then 100 % on any machine (a sixteenth of a 16-core one
    // otherwise), and still above the rule when a loaded machine gives it a tenth (CI's
    // two cores shared by a dozen busy threads); the idle test process stays at a few %.
    // A sample a second, as by default: the rule judges the burst on the sample after it.
    let agent = quiet_agent("capture-test", dir.path())
        .collect_interval(Duration::from_secs(1))
        .cpu_cores(1.0)
        .cpu_rule(
            Rule::new()
                .min(5.0)
                .abs(10.0)
                .window(3)
                .cooldown(Duration::from_secs(60)),
        )
        .cpu_profile_duration(Duration::from_millis(500))
        .start()
        .unwrap();
    eventually(Duration::from_secs(60), "warm-up", || {
        agent.stats().samples >= 4
    });
    // Right after a sample, a burst of 0.5 s of CPU: over (on an idle machine) or nearly
    // over (on a loaded one) when the next sample fires the rule, so it is the flight
    // recorder's pre-trigger profile that holds it.
    let sampled = agent.stats().samples;
    eventually(Duration::from_secs(60), "a sample", || {
        agent.stats().samples > sampled
    });
    let onset = Instant::now();
    std::thread::spawn(|| burst(Duration::from_millis(500)))
        .join()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "two cpu profiles (pre and post trigger)",
        || files(dir.path(), "cpu.", ".pb.gz").len() >= 2,
    );
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
    let agent = quiet_agent("capture-test", dir.path())
        .thread_rule(
            Rule::new()
                .min(1.0)
                .abs(base + 8.0)
                .window(3)
                .cooldown(Duration::from_secs(60)),
        )
        .start()
        .unwrap();
    eventually(Duration::from_secs(30), "warm-up", || {
        agent.stats().samples >= 4
    });
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
    eventually(Duration::from_secs(60), "a thread dump", || {
        !files(dir.path(), "threads.", ".pb.gz").is_empty()
    });
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

/// `stop()` while a long CPU capture runs: the capture ends at once with what it has,
/// and its profile is in the dump folder when `stop()` returns, not lost with a process
/// that exits right after stopping its agent.
#[test]
fn stop_ends_a_running_cpu_capture_and_keeps_its_profile() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet_agent("capture-stop", dir.path())
        .cpu_profile_duration(Duration::from_secs(300))
        .flush_timeout(Duration::from_secs(120))
        .start()
        .unwrap();
    agent.capture_now(&[ProfileKind::Cpu]).unwrap();
    eventually(Duration::from_secs(60), "the pre-trigger profile", || {
        !files(dir.path(), "cpu.", ".pb.gz").is_empty()
    });
    let stopping = Instant::now();
    agent.stop();
    let took = stopping.elapsed();
    let profiles = files(dir.path(), "cpu.", ".pb.gz");
    assert_eq!(
        profiles.len(),
        2,
        "the pre- and post-trigger profiles once stop() returned: {profiles:?}"
    );
    // Neither the 300 s capture nor the 120 s flush timeout was waited out.
    assert!(took < Duration::from_secs(100), "stop() took {took:?}");
}
