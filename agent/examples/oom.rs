//! Scenario 8: memory growth to a hard limit, followed by a kill.
//!
//! Run it under a memory limit (a cgroup, a container, or the test's watchdog).
//! `curl 127.0.0.1:PORT/bug`: a cache grows by 8 MiB every 100 ms in
//! `cache_every_response_forever` until the kernel kills the process. The memory fast
//! path fires on the way up and the heap profile is on disk (fsync'ed) before the kill.
//! `HOLMES_RULE_MEMORY` is usually all you tune here; this example keeps the defaults
//! except for `min`, so that it also fires when the limit is the host's RAM.

mod common;

use std::time::Duration;

#[global_allocator]
static ALLOC: holmes_agent::SamplingAllocator = holmes_agent::SamplingAllocator::system();

/// The culprit: an unbounded cache.
#[inline(never)]
fn cache_every_response_forever() {
    let mut cache: Vec<Vec<u8>> = Vec::new();
    loop {
        cache.push(vec![1u8; 8 << 20]);
        std::hint::black_box(&cache);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let agent = common::agent("oom", |b| {
        b.memory_rule(
            holmes_agent::Rule::default_for(holmes_agent::Metric::MemoryPercent)
                .unwrap_or_default()
                .min(1.0),
        )
    });
    common::warm_up(&agent, 10);
    common::serve(|| {
        std::thread::spawn(cache_every_response_forever);
    });
}
