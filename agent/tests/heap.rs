//! Heap profiles from the sampling allocator, in a process that really runs on it, read
//! back with the standard `go tool pprof`.
//!
//! `go` comes from Debian's golang-go (deploy/dev/test.sh installs it). Without it these
//! tests fail under CI or HOLMES_TEST_REQUIRE_GO=1 and are skipped otherwise.

use std::alloc::{GlobalAlloc, Layout, System};
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule, SamplingAllocator};

mod support;
use support::{files, go_available, pprof, top_flat_mb, top_function};

#[global_allocator]
static GLOBAL: SamplingAllocator = SamplingAllocator::system();

/// The memory limit the heap metric is a percentage of, at most: the host's RAM. (A
/// smaller cgroup limit only makes the culprit's share larger.)
fn host_memory_bytes() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kib * 1024.0
}

const CULPRIT_BYTES: usize = 256 << 20;
const CHUNK_BYTES: usize = 4 << 20;

/// The culprit: keeps ~256 MiB in 4 MiB vectors, every page touched, its blocks straight
/// from the global allocator (`std::alloc::alloc`). (Blocks made by `vec!` have their
/// maker as the leaf too: the standard library's `alloc::raw_vec` frames are trimmed,
/// see [`fill_a_vec`].)
#[inline(never)]
fn allocate_the_culprit_buffer() -> Vec<Vec<u8>> {
    let layout = Layout::from_size_align(CHUNK_BYTES, 1).unwrap();
    let mut kept = Vec::with_capacity(CULPRIT_BYTES / CHUNK_BYTES);
    for i in 0..CULPRIT_BYTES / CHUNK_BYTES {
        // SAFETY: a non-zero layout; the block becomes a `Vec<u8>` of exactly that
        // capacity (align 1), initialised before use, which frees it with that layout.
        let chunk = unsafe {
            let p = std::alloc::alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(i as u8 | 1, CHUNK_BYTES);
            Vec::from_raw_parts(p, CHUNK_BYTES, CHUNK_BYTES)
        };
        kept.push(std::hint::black_box(chunk));
    }
    kept
}

/// A block made the usual way, to check that the walk goes through std's `raw_vec`.
#[inline(never)]
fn fill_a_vec() -> Vec<u8> {
    std::hint::black_box(vec![7u8; 16 << 20])
}

#[test]
fn a_heap_spike_is_in_the_heap_profile() {
    if !go_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let filled = fill_a_vec();
    let limit = host_memory_bytes();
    let now_percent = holmes_agent::allocated_bytes().unwrap() as f64 / limit * 100.0;
    let culprit_percent = CULPRIT_BYTES as f64 / limit * 100.0;
    let mut b = Holmes::builder()
        .service("heap-test")
        .dump_dir(dir.path())
        .collect_interval(Duration::from_millis(100))
        .memory_fast_interval(None);
    for m in [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::Threads,
        Metric::Tasks,
    ] {
        b = b.rule(m, Rule::new().enabled(false));
    }
    let agent = b
        .heap_rule(
            Rule::new()
                .min(0.01)
                .abs(now_percent + culprit_percent * 0.9)
                .window(3)
                .cooldown(Duration::from_secs(60)),
        )
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let onset = Instant::now();
    let culprit = allocate_the_culprit_buffer();
    let deadline = Instant::now() + Duration::from_secs(20);
    while files(dir.path(), "heap.", ".pb.gz").is_empty() {
        assert!(Instant::now() < deadline, "a heap profile is written");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give the writer a moment to finish the file.
    std::thread::sleep(Duration::from_millis(200));
    eprintln!("heap spike -> profile on disk: {:?}", onset.elapsed());
    let profile = &files(dir.path(), "heap.", ".pb.gz")[0];

    let inuse = pprof(
        &["-top", "-nodecount=10", "-sample_index=inuse_space"],
        profile,
    );
    eprintln!("{inuse}");
    assert_eq!(
        top_function(&inuse),
        "heap::allocate_the_culprit_buffer",
        "{inuse}"
    );
    // 4 MiB blocks are always sampled, at weight 1; the rule fires once 90% is there.
    let mb = top_flat_mb(&inuse);
    let truth = (CULPRIT_BYTES >> 20) as f64; // pprof's MB are MiB
    assert!(
        mb >= truth * 0.85 && mb <= truth * 1.01,
        "{mb} MB vs {truth}\n{inuse}"
    );
    let alloc = pprof(
        &["-top", "-nodecount=10", "-sample_index=alloc_space"],
        profile,
    );
    eprintln!("{alloc}");
    assert_eq!(
        top_function(&alloc),
        "heap::allocate_the_culprit_buffer",
        "{alloc}"
    );
    // pprof's default sample index is the last type: inuse_space.
    let default = pprof(&["-top", "-nodecount=3"], profile);
    assert!(default.contains("inuse_space"), "{default}");
    let traces = pprof(&["-traces"], profile);
    assert!(
        traces.contains("heap::a_heap_spike_is_in_the_heap_profile"),
        "{traces}"
    );
    // No stack keeps the sampler's or the allocator glue's frames as its leaf (the
    // line with the value in -traces).
    for line in traces.lines() {
        let Some((_, leaf)) = line.trim_start().split_once("   ") else {
            continue;
        };
        for glue in [
            "holmes_agent::heap",
            "<holmes_agent::heap",
            "__rust",
            "alloc::alloc::",
            "<alloc::alloc::Global",
        ] {
            assert!(!leaf.trim().starts_with(glue), "{line}\n{traces}");
        }
    }
    let vec_trace = traces
        .split("-----------+-------------------------------------------------------")
        .find(|t| t.contains("heap::fill_a_vec"))
        .unwrap_or_else(|| panic!("no trace for fill_a_vec:\n{traces}"));
    eprintln!("{vec_trace}");
    // The standard library's collection frames are trimmed too: `vec!`'s caller is the leaf.
    assert!(!vec_trace.contains("alloc::raw_vec::"), "{vec_trace}");
    let leaf = vec_trace
        .lines()
        .find(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("");
    assert!(leaf.contains("heap::fill_a_vec"), "{vec_trace}");
    assert!(!vec_trace.contains("holmes_agent::heap"), "{vec_trace}");
    let trigger = std::fs::read_to_string(&files(dir.path(), "", ".json")[0]).unwrap();
    assert!(trigger.contains("\"planned\":[\"heap\"]"), "{trigger}");
    drop(culprit);
    drop(filled);
    agent.stop();
}

/// What the wrapper costs: 10 million small allocations and frees through the global
/// allocator (this sampler) against `System` and a `CountingAllocator` called directly,
/// in the same binary; best of 7 interleaved rounds.
/// `cargo test --release -p holmes-agent --test heap -- --ignored --nocapture`
#[test]
#[ignore = "a timing, not a check; run on demand"]
fn cost_of_the_sampling_allocator() {
    const N: usize = 10_000_000;
    let layout = Layout::from_size_align(32, 8).unwrap();
    fn run(a: &dyn GlobalAlloc, layout: Layout) -> Duration {
        let t = Instant::now();
        for _ in 0..N {
            // SAFETY: a valid layout; freed at once with it.
            unsafe {
                let p = a.alloc(layout);
                a.dealloc(std::hint::black_box(p), layout);
            }
        }
        t.elapsed()
    }
    let counting = holmes_agent::CountingAllocator::system();
    let mut best = [Duration::MAX; 3];
    for _ in 0..7 {
        for (i, a) in [&System as &dyn GlobalAlloc, &counting, &GLOBAL]
            .into_iter()
            .enumerate()
        {
            best[i] = best[i].min(run(a, layout));
        }
    }
    let ns = |d: Duration| d.as_nanos() as f64 / N as f64;
    eprintln!(
        "{N} alloc+free of 32 bytes: System {:.1} ns, CountingAllocator {:.1} ns, SamplingAllocator {:.1} ns; sampling/system {:.2}, sampling/counting {:.2}",
        ns(best[0]),
        ns(best[1]),
        ns(best[2]),
        best[2].as_secs_f64() / best[0].as_secs_f64(),
        best[2].as_secs_f64() / best[1].as_secs_f64(),
    );
}
