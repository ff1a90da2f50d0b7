//! Rules firing in a real process: while the host's tokio runtime is stuck, after a
//! rule change at run time, and on tokio tasks. Without a collector, every trigger is
//! written to the dump folder as `<event-id>.json`, which is what these tests read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule};

/// Waits until `check` holds, failing with `what` after `timeout`.
fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The trigger documents in the dump folder.
fn triggers_in(dir: &std::path::Path) -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    docs
}

fn quiet_agent(dir: &std::path::Path) -> holmes_agent::HolmesBuilder {
    // Every default rule off, so only the rule under test can fire.
    let mut b = Holmes::builder()
        .service("trigger-test")
        .dump_dir(dir)
        .collect_interval(Duration::from_millis(100))
        .memory_fast_interval(None);
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

#[test]
fn keeps_sampling_and_fires_while_every_host_worker_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let agent = quiet_agent(dir.path())
        .cpu_rule(
            Rule::new()
                .min(5.0)
                .abs(40.0)
                .window(3)
                .cooldown(Duration::from_secs(60)),
        )
        .tokio_runtime(host.handle().clone())
        .start()
        .unwrap();
    eventually(Duration::from_secs(5), "warm-up", || {
        agent.stats().samples >= 5
    });
    assert_eq!(agent.stats().triggers, 0, "an idle process does not fire");

    // Saturate every worker of the host runtime: they spin and never yield.
    let release = Arc::new(AtomicBool::new(false));
    for _ in 0..2 {
        let release = Arc::clone(&release);
        host.spawn(async move {
            while !release.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    let probe = Arc::new(AtomicBool::new(false));
    let probe_task = Arc::clone(&probe);
    host.spawn(async move { probe_task.store(true, Ordering::Relaxed) });
    let before = agent.stats().samples;
    eventually(Duration::from_secs(10), "a CPU trigger", || {
        agent.stats().triggers >= 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !probe.load(Ordering::Relaxed),
        "the host runtime really is stuck"
    );
    assert!(
        agent.stats().samples >= before + 5,
        "sampling went on: {:?}",
        agent.stats()
    );
    release.store(true, Ordering::Relaxed);

    let docs = triggers_in(dir.path());
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert!(docs[0].contains("\"metric\":\"cpu\""), "{}", docs[0]);
    assert!(docs[0].contains("\"reason\":\"abs\""), "{}", docs[0]);
    assert!(docs[0].contains("\"service\":\"trigger-test\""));
    agent.stop();
    host.shutdown_timeout(Duration::from_secs(1));
}

fn threads_now() -> f64 {
    std::fs::read_dir("/proc/self/task").unwrap().count() as f64
}

#[test]
fn a_rule_changed_at_run_time_fires_without_a_second_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet_agent(dir.path())
        .thread_rule(Rule::new().min(1.0).abs(10_000.0).window(5))
        .start()
        .unwrap();
    eventually(Duration::from_secs(5), "warm-up", || {
        agent.stats().samples >= 6
    });
    assert_eq!(agent.stats().triggers, 0);
    let current = threads_now();
    let samples = agent.stats().samples;
    agent
        .set_rule(
            Metric::Threads,
            Rule::new().min(1.0).abs(current - 1.0).window(5),
        )
        .unwrap();
    eventually(Duration::from_secs(5), "the changed rule to fire", || {
        agent.stats().triggers >= 1
    });
    assert!(
        agent.stats().samples <= samples + 3,
        "fired on the next samples, not after another window of 5: {:?}",
        agent.stats()
    );
    // Disabled, it stays silent even though the value is still above abs.
    agent.disable_rule(Metric::Threads).unwrap();
    let fired = agent.stats().triggers;
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(agent.stats().triggers, fired);
    assert!(!agent.rules()[&Metric::Threads].is_enabled());
    assert!(agent.set_rule(Metric::RssBytes, Rule::new()).is_err());
    agent.stop();
    let docs = triggers_in(dir.path());
    assert!(docs[0].contains("\"metric\":\"threads\""), "{}", docs[0]);
}

#[test]
fn tokio_tasks_of_registered_runtimes_are_counted_and_fire() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = quiet_agent(dir.path())
        .task_rule(Rule::new().min(100.0).abs(400.0).window(3))
        .start()
        .unwrap();
    agent.register_runtime(host.handle().clone());
    eventually(Duration::from_secs(5), "warm-up", || {
        agent.stats().samples >= 4
    });
    assert_eq!(agent.stats().triggers, 0);
    // A leak: 500 tasks waiting forever on channels nobody writes to.
    let mut keep = Vec::new();
    for _ in 0..500 {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        keep.push(tx);
        host.spawn(async move {
            let _ = rx.await;
        });
    }
    eventually(Duration::from_secs(5), "a tasks trigger", || {
        agent.stats().triggers >= 1
    });
    let docs = triggers_in(dir.path());
    assert!(docs[0].contains("\"metric\":\"tasks\""), "{}", docs[0]);
    assert!(docs[0].contains("\"current\":500"), "{}", docs[0]);
    agent.stop();
    drop(keep);
}

#[test]
fn a_disabled_agent_does_nothing() {
    let agent = Holmes::builder()
        .service("off")
        .enabled(false)
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(agent.stop().samples, 0);
}
