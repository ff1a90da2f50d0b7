//! Tokio task dumps in a real process, read back with the standard `go tool pprof`.
//!
//! Built only with the `taskdump` feature and `RUSTFLAGS="--cfg tokio_unstable"` (tokio ≥
//! 1.48 has no separate `tokio_taskdump` cfg any more); deploy/dev/test.sh runs it so.
//! The leak is dumped from a current-thread runtime: the agent refuses to dump a
//! multi-thread runtime with more than 64 tasks, which tokio's dump can hang for good
//! (see agent/src/capture/tasks/mod.rs); the last test checks that refusal.
//! `go` comes from Debian's golang-go; without it these tests fail under CI or
//! HOLMES_TEST_REQUIRE_GO=1 and are skipped otherwise.
// `tokio_unstable` comes from RUSTFLAGS; cargo does not know to check it.
#![allow(unexpected_cfgs)]
#![cfg(all(feature = "taskdump", tokio_unstable, target_os = "linux"))]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule};

mod support;
use support::{files, go_available, pprof};

/// Captures are process-wide (thread dumps signal every thread): one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn wait_for(dir: &Path, prefix: &str, suffix: &str, within: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + within;
    loop {
        let found = files(dir, prefix, suffix);
        if !found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent with every rule off but a task rule firing above `current + 100` tasks.
fn agent_on(dir: &Path, runtime: &tokio::runtime::Handle) -> holmes_agent::HolmesHandle {
    agent_above(dir, runtime, 100.0)
}

/// An agent with every rule off but a task rule firing above `current + more` tasks.
fn agent_above(
    dir: &Path,
    runtime: &tokio::runtime::Handle,
    more: f64,
) -> holmes_agent::HolmesHandle {
    let current = runtime.metrics().num_alive_tasks() as f64;
    let mut b = Holmes::builder()
        .service("taskdump-test")
        .dump_dir(dir)
        .collect_interval(Duration::from_millis(100))
        .memory_fast_interval(None)
        .tokio_runtime(runtime.clone());
    for m in [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::Threads,
        Metric::HeapPercent,
    ] {
        b = b.rule(m, Rule::new().enabled(false));
    }
    b.task_rule(
        Rule::new()
            .min(10.0)
            .abs(current + more)
            .window(3)
            .cooldown(Duration::from_secs(600)),
    )
    .start()
    .unwrap()
}

/// A current-thread runtime driven by a thread of its own (named `name`), which first
/// runs `first` inside the runtime (blocking it, if `first` blocks). The thread ends
/// when this is dropped; it is not joined, so a failing test cannot hang on it.
struct Driven {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn driven(name: &str, first: impl FnOnce() + Send + 'static) -> Driven {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            rt.block_on(async move {
                first();
                let _ = stopped.await;
            })
        })
        .unwrap();
    Driven {
        handle,
        _stop: stop,
    }
}

/// A multi-thread runtime shut down without waiting for its workers when dropped.
struct MultiThread(Option<tokio::runtime::Runtime>);

impl Drop for MultiThread {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The culprit: a task parked on a channel whose sender is alive but never used.
#[inline(never)]
async fn wait_on_a_channel_nobody_reads(mut rx: tokio::sync::mpsc::Receiver<u64>) {
    let _ = rx.recv().await;
}

/// Spawns `n` tasks parked in the culprit; their senders are returned, kept, never used.
fn leak(runtime: &tokio::runtime::Handle, n: usize) -> Vec<tokio::sync::mpsc::Sender<u64>> {
    (0..n)
        .map(|_| {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            runtime.spawn(wait_on_a_channel_nobody_reads(rx));
            tx
        })
        .collect()
}

/// `go tool pprof -top -cum`: the cumulative count of the first line naming `function`.
fn cum_of(top: &str, function: &str) -> Option<i64> {
    top.lines()
        .find(|l| l.contains(function))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
}

#[test]
fn leaked_tasks_are_in_the_task_dump() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = driven("leaky-runtime", || {});
    // The dump is taken on the first sample (every 100 ms) above 450 more tasks: on a
    // loaded machine the 500 may still be being spawned then, but 450 are in.
    let agent = agent_above(dir.path(), &rt.handle, 450.0);
    std::thread::sleep(Duration::from_millis(500));

    let onset = Instant::now();
    let _senders = leak(&rt.handle, 500);
    let dumps = wait_for(dir.path(), "tasks.", ".pb.gz", Duration::from_secs(30));
    assert!(!dumps.is_empty(), "a task dump is written");
    let onset_to_profile = onset.elapsed();
    let dump = &dumps[0];

    let top = pprof(&["-top", "-cum", "-nodecount=25"], dump);
    eprintln!("{top}");
    let culprit = "taskdump::wait_on_a_channel_nobody_reads";
    let cum = cum_of(&top, culprit).unwrap_or(0);
    assert!(
        cum > 450,
        "{culprit} accounts for the leaked tasks the rule saw (more than 450 of 500):\n{top}"
    );
    let traces = pprof(&["-traces"], dump);
    let parked = traces
        .split("-----------+-------------------------------------------------------")
        .filter(|t| t.contains(culprit) && t.contains("Receiver"))
        .count();
    assert!(
        parked as i64 >= cum,
        "every leaked task's trace goes through {culprit} into mpsc::Receiver::recv \
         ({parked} of {cum} do):\n{}",
        traces.get(..4000).unwrap_or(&traces)
    );

    // The text is written just after the profile.
    let text = wait_for(dir.path(), "tasks.", ".txt", Duration::from_secs(5));
    let text = std::fs::read_to_string(text.first().expect("a readable task dump")).unwrap();
    let tasks: i64 = text
        .split("runtime 0: ")
        .nth(1)
        .and_then(|t| t.split(" tasks").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        tasks > 450 && text.contains(culprit),
        "the readable dump groups the leaked tasks:\n{}",
        text.get(..4000).unwrap_or(&text)
    );
    let trigger = std::fs::read_to_string(&files(dir.path(), "", ".json")[0]).unwrap();
    assert!(trigger.contains("\"planned\":[\"tasks\"]"), "{trigger}");
    eprintln!("500 leaked tasks -> task dump of {cum} on disk: {onset_to_profile:?}");
    agent.stop();
}

/// Holds threads until opened; opens when dropped, so a failing test does not leave a
/// runtime blocked behind it.
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn new() -> Self {
        Gate(Arc::new((Mutex::new(false), Condvar::new())))
    }

    /// Blocks the calling thread until the gate opens.
    fn waiter(&self) -> impl FnOnce() + Send + 'static {
        let inner = Arc::clone(&self.0);
        move || {
            let (open, cv) = &*inner;
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            while !*open {
                open = cv.wait(open).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
}

/// When the agent started a capture, from its file name (`<kind>.<event>.<time>.pb.gz`,
/// `20261126T031200.123Z`), in Unix nanoseconds.
fn capture_started(file: &Path) -> u128 {
    let name = file.file_name().unwrap().to_str().unwrap();
    let t = name.split('.').nth(2).unwrap();
    let ms = name.split('.').nth(3).unwrap();
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}.{ms}",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[9..11],
        &t[11..13],
        &t[13..15]
    );
    humantime::parse_rfc3339(&rfc3339)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Waits for a trigger, then for the threads profile taken instead of a task dump;
/// returns how long after the trigger the agent started that capture (by the agent's
/// own clock, whatever the machine's load does to this test's polling) and its text.
fn threads_instead_of_tasks(dir: &Path) -> (Duration, String) {
    let triggers = wait_for(dir, "", ".json", Duration::from_secs(30));
    assert!(!triggers.is_empty(), "the task rule fires");
    let trigger = std::fs::read_to_string(&triggers[0]).unwrap();
    assert!(trigger.contains("\"planned\":[\"tasks\"]"), "{trigger}");
    let fired: u128 = trigger
        .split("\"unix_nanos\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("the trigger's time");
    let threads = wait_for(dir, "threads.", ".pb.gz", Duration::from_secs(60));
    assert!(!threads.is_empty(), "the threads are captured instead");
    let after = Duration::from_nanos(
        u64::try_from(capture_started(&threads[0]).saturating_sub(fired)).unwrap(),
    );
    assert!(
        files(dir, "tasks.", ".pb.gz").is_empty(),
        "no task dump was written"
    );
    let text = wait_for(dir, "threads.", ".txt", Duration::from_secs(30));
    let text = std::fs::read_to_string(text.first().expect("a readable thread dump")).unwrap();
    (after, text)
}

/// A runtime that is blocked (its one thread stuck) cannot be dumped: the capture gives
/// up after its deadline (5 s) and captures the threads instead; the agent carries on.
#[test]
fn a_blocked_runtime_gets_a_thread_dump_instead_of_a_task_dump() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    let rt = driven("blocked-runtime", gate.waiter());
    let agent = agent_on(dir.path(), &rt.handle);
    std::thread::sleep(Duration::from_millis(500));
    // Tasks queue up behind the blocked thread.
    for _ in 0..200 {
        rt.handle.spawn(async {});
    }

    let (after, text) = threads_instead_of_tasks(dir.path());
    // The dump gets its 5 s deadline (plus 50 µs per task) before the threads are taken.
    assert!(
        after >= Duration::from_secs(5),
        "the dump is given its deadline: {after:?}"
    );
    let blocked = text
        .split("\nthread ")
        .find(|t| t.contains("blocked-runtime"))
        .unwrap_or("");
    assert!(
        blocked.contains("Gate::waiter"),
        "the thread dump shows where the runtime's thread is stuck:\n{text}"
    );
    eprintln!("blocked runtime: trigger -> threads capture started {after:?}");

    let samples = agent.stats().samples;
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.stats().samples <= samples {
        assert!(Instant::now() < deadline, "the agent keeps sampling");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(gate);
    agent.stop();
}

/// A multi-thread runtime with hundreds of tasks is not dumped (tokio's dump could hang
/// it for good): the threads are captured at once instead and the runtime runs on.
#[test]
fn a_busy_multi_thread_runtime_is_left_alone_without_a_task_dump() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let rt = MultiThread(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    ));
    let handle = rt.0.as_ref().unwrap().handle().clone();
    let agent = agent_on(dir.path(), &handle);
    std::thread::sleep(Duration::from_millis(500));
    let _senders = leak(&handle, 500);

    let (after, _) = threads_instead_of_tasks(dir.path());
    // Refused at once: the threads are taken well before a dump's 5 s deadline.
    assert!(
        after < Duration::from_secs(4),
        "threads profile only after {after:?}"
    );
    eprintln!("busy multi-thread runtime: trigger -> threads capture started {after:?}");
    let (tx, rx) = std::sync::mpsc::channel();
    handle.spawn(async move { tx.send(()).unwrap() });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the runtime still runs tasks");
    agent.stop();
}

/// With task dumps built in, a collector's request for tasks is captured, and a baseline
/// carries the task dump of the registered runtime.
#[test]
fn a_requested_task_dump_and_a_baseline_carry_the_tasks() {
    use holmes_proto::{
        AgentBody, CapturePurpose, CaptureRequest, CollectorMessage, ProfileKind, TriggerReason,
    };
    use support::collector::TestCollector;

    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let rt = driven("baseline-tasks", || {});
    let _senders = leak(&rt.handle, 20);
    let c = TestCollector::start();
    let mut b = Holmes::builder()
        .service("taskdump-control")
        .collector(c.url())
        .dump_dir(dir.path())
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(100))
        .memory_fast_interval(None)
        .baseline_interval(Some(Duration::from_secs(1)))
        .tokio_runtime(rt.handle.clone());
    for m in [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::Threads,
        Metric::Tasks,
        Metric::HeapPercent,
    ] {
        b = b.rule(m, Rule::new().enabled(false));
    }
    let agent = b.start().unwrap();
    let baseline = c.wait_for("a baseline", |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::Trigger(t) if t.reason == TriggerReason::Baseline => Some(t.clone()),
            _ => None,
        })
    });
    assert!(
        baseline.planned.contains(&ProfileKind::Tasks),
        "{baseline:?}"
    );
    c.wait_for("the baseline's task dump", |msgs| {
        msgs.iter()
            .any(|(_, m)| {
                matches!(&m.body, AgentBody::ProfileChunk(p)
                    if p.event_id == baseline.event_id
                        && p.kind == ProfileKind::Tasks
                        && p.error.is_none())
            })
            .then_some(())
    });
    let sent = c.send(&CollectorMessage::CaptureRequest(CaptureRequest {
        request_id: "tasks".into(),
        kinds: vec![ProfileKind::Tasks],
        cpu_duration: None,
        purpose: CapturePurpose::Operator,
        window: None,
        incident_id: None,
    }));
    assert_eq!(sent, 1);
    let outcome = c.wait_for("the outcome", |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::CaptureOutcome(o) if o.request_id == "tasks" => Some(o.clone()),
            _ => None,
        })
    });
    assert_eq!(outcome.captured, [ProfileKind::Tasks], "{outcome:?}");
    agent.stop();
}
