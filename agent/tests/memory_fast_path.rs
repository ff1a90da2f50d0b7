//! The fast path between two samples: a memory spike that grows and is gone again
//! between two regular samples is still caught, by the cheap RSS check the agent runs
//! every 100 ms (`HOLMES_MEMORY_FAST_INTERVAL`).
//!
//! A process of its own, so that no other test's allocations move its RSS.

use std::time::{Duration, Instant};

use holmes_agent::Rule;

mod support;
use support::{eventually, quiet_agent, trigger_docs};

/// Bytes of the spike: far more than the test process's own RSS, so it is twice the
/// window's average however large the process is.
const SPIKE_BYTES: usize = 128 << 20;

/// Resident bytes of this process.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_spike_between_two_samples_is_caught_by_the_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        (rss_bytes() as usize) < SPIKE_BYTES,
        "the spike must dwarf the process"
    );
    // Regular samples every 2 s, the fast path every 100 ms. The rule fires when memory
    // is at least 1.5 times the window's average (a window of 3: two regular samples
    // and the value at hand), which a 128 MiB spike is and the process's own drift is not.
    let agent = quiet_agent("fast-path-test", dir.path())
        .collect_interval(Duration::from_secs(2))
        .memory_fast_interval(Some(Duration::from_millis(100)))
        .memory_rule(
            Rule::new()
                .diff(50.0)
                .window(3)
                .cooldown(Duration::from_secs(600)),
        )
        .start()
        .unwrap();
    eventually(Duration::from_secs(60), "warm-up", || {
        agent.stats().samples >= 4
    });
    assert_eq!(agent.stats().triggers, 0, "nothing fires without a spike");

    // Right after a regular sample: the next one is 2 s away.
    let sampled = agent.stats().samples;
    eventually(Duration::from_secs(60), "a regular sample", || {
        agent.stats().samples > sampled
    });
    let between = agent.stats().samples;
    let onset = Instant::now();
    let mut spike = vec![0u8; SPIKE_BYTES];
    // Touch the pages (RSS grows as they are written) until the agent fires, 1 MiB at a
    // time; then hold what was touched until it does.
    for mib in spike.chunks_mut(1 << 20) {
        if agent.stats().triggers >= 1 {
            break;
        }
        for page in mib.chunks_mut(4096) {
            page[0] = 1;
        }
    }
    std::hint::black_box(&spike);
    eventually(Duration::from_secs(10), "a memory trigger", || {
        agent.stats().triggers >= 1
    });
    let caught_after = onset.elapsed();
    let samples_meanwhile = agent.stats().samples - between;
    drop(spike);
    eprintln!("spike caught {caught_after:?} after it began");
    assert_eq!(
        samples_meanwhile, 0,
        "the trigger came between two regular samples: only the fast path could fire it"
    );

    // Gone again before the next regular sample.
    let rss_after = rss_bytes();
    assert!(
        (rss_after as usize) < SPIKE_BYTES,
        "the spike was freed ({rss_after} bytes resident)"
    );
    assert_eq!(
        agent.stats().samples,
        between,
        "still before the next sample"
    );
    let docs = trigger_docs(dir.path());
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert!(docs[0].contains("\"metric\":\"memory\""), "{}", docs[0]);
    assert!(docs[0].contains("\"reason\":\"diff\""), "{}", docs[0]);
    agent.stop();
}
