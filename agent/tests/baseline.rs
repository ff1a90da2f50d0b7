//! Baselines: every `baseline_interval` (±20 %) an agent with a collector sends a
//! trigger event with reason `baseline` and no metric, with its flight recorder's
//! history as a CPU profile, a heap profile (the sampling allocator is installed here)
//! and the threads' stacks — and counts what they cost.
//!
//! `cargo test -p holmes-agent --test baseline -- --nocapture` prints the cost per
//! baseline (CPU time of its capture thread, bytes of its profiles); the README's
//! figures come from a release build (`--release`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use holmes_agent::{AgentStats, ProfileKind, SamplingAllocator};
use holmes_proto::{AgentBody, TriggerEvent, TriggerReason};

mod support;
use support::collector::TestCollector;
use support::{files, go_available, pprof, quiet_agent, thread_cpu_time};

#[global_allocator]
static GLOBAL: SamplingAllocator = SamplingAllocator::system();

/// What this instance does between incidents: a little CPU now and then.
#[inline(never)]
fn baseline_background_work(rounds: u64) -> u64 {
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

#[test]
fn baselines_carry_the_recorders_history_heap_and_threads_and_count_their_cost() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    let every = Duration::from_secs(2);
    let started = Instant::now();
    let agent = quiet_agent("baseline", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_millis(100))
        .baseline_interval(Some(every))
        // Debug info loaded at start, as by default, so no baseline pays for it.
        .prewarm_symbols(true)
        .start()
        .unwrap();
    // Some CPU for the flight recorder to hold: 0.3 s of this thread's CPU.
    let from = thread_cpu_time();
    while thread_cpu_time() - from < Duration::from_millis(300) {
        std::hint::black_box(baseline_background_work(1_000_000));
    }

    // Each baseline's cost, from the stats as they change (averaged over those that
    // ended between two looks, on a machine too busy to look often).
    let mut costs: Vec<(u64, Duration, u64)> = Vec::new();
    let mut last = AgentStats::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while last.baselines < 4 {
        assert!(Instant::now() < deadline, "4 baselines within 2 minutes");
        let s = agent.stats();
        if s.baselines > last.baselines {
            let n = s.baselines - last.baselines;
            costs.push((
                n,
                (s.baseline_cpu - last.baseline_cpu) / n as u32,
                (s.baseline_bytes - last.baseline_bytes) / n,
            ));
            last = s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(last.triggers, 0, "baselines are not triggers");

    let baselines: Vec<TriggerEvent> = c.bodies(|b| match b {
        AgentBody::Trigger(t) if t.reason == TriggerReason::Baseline => Some(t.clone()),
        _ => None,
    });
    assert!(baselines.len() >= 4, "{}", baselines.len());
    // Every profile of the first four arrives (their captures are over: they counted).
    for b in &baselines[..4] {
        c.wait_for("a baseline's profiles", |msgs| {
            let kinds: Vec<ProfileKind> = msgs
                .iter()
                .filter_map(|(_, m)| match &m.body {
                    AgentBody::ProfileChunk(p) if p.event_id == b.event_id => Some(p.kind),
                    _ => None,
                })
                .collect();
            b.planned.iter().all(|k| kinds.contains(k)).then_some(())
        });
    }
    agent.stop();
    // Never sooner than the interval less its jitter.
    assert!(
        started.elapsed() >= every.mul_f64(0.8) * baselines.len() as u32,
        "{} baselines in {:?}",
        baselines.len(),
        started.elapsed()
    );
    for pair in baselines.windows(2) {
        let gap = Duration::from_nanos(pair[1].unix_nanos - pair[0].unix_nanos);
        assert!(
            gap >= every.mul_f64(0.8) - Duration::from_millis(50),
            "{gap:?}"
        );
    }
    // The first finds nothing running; a later one may find the previous one's
    // threads or heap capture still running on a busy machine, and leaves it out. The
    // CPU history is read beside any capture.
    assert_eq!(
        baselines[0].planned,
        [ProfileKind::Cpu, ProfileKind::Threads, ProfileKind::Heap]
    );
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &baselines[..4] {
        assert_eq!(b.metric, None);
        assert_eq!(b.rule, None);
        assert_eq!(b.planned.first(), Some(&ProfileKind::Cpu), "{b:?}");
        let chunks = c.bodies(|m| match m {
            AgentBody::ProfileChunk(p) if p.event_id == b.event_id => Some(p.clone()),
            _ => None,
        });
        for p in &chunks {
            assert_eq!(p.error, None, "{:?} {:?}", p.kind, p.error);
            *by_kind.entry(p.kind.as_str()).or_default() += 1;
            if p.kind == ProfileKind::Cpu {
                assert_eq!(p.labels["phase"], "baseline");
            }
        }
    }
    assert_eq!(by_kind.len(), 3, "{by_kind:?}");

    // The CPU baseline is the recorder's history: it holds the work done before it.
    if go_available() {
        let first = &baselines[0].event_id;
        let file = files(dir.path(), &format!("cpu.{first}"), ".pb.gz");
        assert_eq!(file.len(), 1, "{file:?}");
        let top = pprof(&["-top", "-nodecount=20"], &file[0]);
        assert!(top.contains("baseline_background_work"), "{top}");
    }

    // What a baseline costs the host; the first symbolizes addresses never seen
    // before, so each is printed.
    for (i, (n, cpu, bytes)) in costs.iter().enumerate() {
        eprintln!(
            "baseline {i}: {:.1} ms of CPU, {:.1} KiB of profiles{}",
            cpu.as_secs_f64() * 1e3,
            *bytes as f64 / 1024.0,
            if *n > 1 {
                format!(" (average of {n})")
            } else {
                String::new()
            }
        );
        assert!(*bytes > 0);
        assert!(*cpu > Duration::ZERO);
    }
}
