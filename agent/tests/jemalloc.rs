//! Heap profiles from jemalloc (feature `jemalloc`), in a process whose global allocator
//! is tikv-jemallocator with profiling on, read back with the standard `go tool pprof`.
//!
//! `cargo test -p holmes-agent --features jemalloc --test jemalloc`. `go` comes from
//! Debian's golang-go (deploy/dev/test.sh installs it); without it this test fails under
//! CI or HOLMES_TEST_REQUIRE_GO=1 and is skipped otherwise.
#![cfg(feature = "jemalloc")]

use std::alloc::Layout;
use std::ffi::c_char;
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule};

mod support;
use support::{files, go_available, pprof, top_flat_mb, top_function};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: profiling on, one allocation sampled per ~512 KiB (2^19 bytes).
const CONF: &std::ffi::CStr = c"prof:true,prof_active:true,lg_prof_sample:19";

/// jemalloc reads its options from this symbol before `main`. tikv-jemallocator's
/// jemalloc keeps its `_rjem_` prefix, as here, unless a crate in the build turns on
/// `unprefixed_malloc_on_supported_platforms`, as hosts usually do.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static _rjem_malloc_conf: Option<&'static c_char> =
    // SAFETY: the first byte of a static NUL-terminated string, which jemalloc only reads.
    Some(unsafe { &*CONF.as_ptr() });

/// The same for an unprefixed jemalloc (which then replaces `malloc` itself).
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: Option<&'static c_char> =
    // SAFETY: the first byte of a static NUL-terminated string, which jemalloc only reads.
    Some(unsafe { &*CONF.as_ptr() });

const CULPRIT_BYTES: usize = 512 << 20;

/// The culprit: one big block that stays alive, allocated directly so that it is the
/// leaf (a block from `vec!` keeps `alloc::raw_vec` frames on top, see
/// [`fill_a_vec`]). jemalloc counts it in `stats.allocated` whether or not its pages are
/// touched.
#[inline(never)]
fn jemalloc_culprit_allocation() -> (*mut u8, Layout) {
    let layout = Layout::from_size_align(CULPRIT_BYTES, 4096).unwrap();
    // SAFETY: a valid, non-zero layout; freed by the test with it.
    let p = unsafe { std::alloc::alloc(layout) };
    assert!(!p.is_null());
    (std::hint::black_box(p), layout)
}

/// A block made the usual way: its stack goes through std's `raw_vec` to this function.
#[inline(never)]
fn fill_a_vec() -> Vec<u8> {
    std::hint::black_box(vec![7u8; 16 << 20])
}

#[test]
fn a_heap_spike_is_in_the_jemalloc_heap_profile() {
    if !go_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Holmes::builder()
        .service("jemalloc-test")
        .dump_dir(dir.path())
        .collect_interval(Duration::from_millis(100))
        .memory_fast_interval(None);
    for m in [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::Threads,
        Metric::Tasks,
    ] {
        builder = builder.rule(m, Rule::new().enabled(false));
    }
    // Heap in use (from jemalloc's `stats.allocated`: no counting allocator here) at
    // least doubling against its window fires; the baseline is a few MiB.
    let agent = builder
        .heap_rule(
            Rule::new()
                .min(0.0)
                .diff(100.0)
                .window(5)
                .cooldown(Duration::from_secs(600)),
        )
        .start()
        .unwrap();
    // A full window of heap samples first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.stats().samples < 8 {
        assert!(Instant::now() < deadline, "the agent samples");
        std::thread::sleep(Duration::from_millis(50));
    }

    let onset = Instant::now();
    let (culprit, layout) = jemalloc_culprit_allocation();
    let filled = fill_a_vec();
    let deadline = Instant::now() + Duration::from_secs(20);
    while files(dir.path(), "heap.", ".pb.gz").is_empty() {
        assert!(
            Instant::now() < deadline,
            "a heap profile is written; dump folder: {:?}",
            files(dir.path(), "", "")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let onset_to_profile = onset.elapsed();
    let triggers = files(dir.path(), "", ".json");
    let trigger = std::fs::read_to_string(&triggers[0]).unwrap();
    assert!(trigger.contains("\"metric\":\"heap\""), "{trigger}");

    let profile = &files(dir.path(), "heap.", ".pb.gz")[0];
    let top = pprof(&["-top", "-unit=MB", "-nodecount=10"], profile);
    eprintln!("$ go tool pprof -top -unit=MB -nodecount=10 heap.pb.gz\n{top}");
    let traces = pprof(&["-traces"], profile);
    eprintln!("$ go tool pprof -traces heap.pb.gz\n{traces}");
    assert_eq!(
        top_function(&top),
        "jemalloc::jemalloc_culprit_allocation",
        "{top}"
    );
    assert!(!top.contains("prof_backtrace_impl"), "{top}");
    assert!(top.contains("Type: inuse_space"), "{top}");
    // jemalloc_pprof's unbiased estimate of the culprit's bytes: one 512 MiB block is
    // always sampled, so its estimate is its size.
    let flat_mb = top_flat_mb(&top);
    assert!(
        (500.0..=600.0).contains(&flat_mb),
        "culprit {flat_mb} MB:\n{top}"
    );
    let vec_trace = traces
        .split("-----------+")
        .find(|t| t.contains("jemalloc::fill_a_vec"))
        .unwrap_or_else(|| panic!("no trace for the vec! block:\n{traces}"));
    assert!(vec_trace.contains("alloc::raw_vec::"), "{vec_trace}");
    assert!(!vec_trace.contains("prof_backtrace_impl"), "{vec_trace}");
    eprintln!("heap spike onset -> heap profile on disk: {onset_to_profile:?}");
    drop(filled);
    // SAFETY: allocated by jemalloc_culprit_allocation with this layout.
    unsafe { std::alloc::dealloc(culprit, layout) };
    agent.stop();
}
