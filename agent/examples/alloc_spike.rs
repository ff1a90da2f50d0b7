//! Scenario 1: a 1 GiB allocation spike.
//!
//! `curl 127.0.0.1:PORT/bug`: a request builds a 1 GiB export buffer in
//! `build_the_full_export`. The memory fast path (every 100 ms) sees RSS jump, the memory
//! rule fires, and the heap profile (from the sampling allocator installed below) names
//! the allocating function. The memory rule's `min` is lowered to 1 % because on a host
//! without a container limit 1 GiB is a small share of RAM; under a limit the default
//! works as is.

mod common;

#[global_allocator]
static ALLOC: holmes_agent::SamplingAllocator = holmes_agent::SamplingAllocator::system();

/// The culprit: one huge buffer, filled (so its pages are really resident).
#[inline(never)]
fn build_the_full_export() -> Vec<u8> {
    vec![7u8; 1 << 30]
}

fn main() {
    let agent = common::agent("alloc-spike", |b| {
        b.memory_rule(
            holmes_agent::Rule::default_for(holmes_agent::Metric::MemoryPercent)
                .unwrap_or_default()
                .min(1.0),
        )
    });
    common::warm_up(&agent, 10);
    common::serve(|| {
        std::thread::spawn(|| {
            let export = build_the_full_export();
            std::thread::sleep(std::time::Duration::from_secs(60));
            drop(export);
        });
    });
}
