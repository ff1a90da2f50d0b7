//! Heap profiles from jemalloc's own sampling profiler (cargo feature `jemalloc`).
//!
//! A host whose global allocator is tikv-jemallocator built with `profiling`, and started
//! with `prof:true`, has jemalloc record a stack for about one allocation per
//! `2^lg_prof_sample` bytes. [`capture`] asks jemalloc for a dump (`prof.dump`, through
//! jemalloc_pprof's `PROF_CTL`, which serialises dumps with the host's own use of it) and
//! turns its stacks of return addresses into a profile (`inuse_space`/`bytes`,
//! jemalloc_pprof's sample type and unbiased weights), encoded like every other one.
//! jemalloc's own frames sit on top of every stack (`prof_backtrace_impl ← … ← malloc`,
//! or with debug info `prof_alloc_prep ← imalloc_body ← imalloc ← _rjem_mallocx`, inlined
//! static functions that no name prefix covers); local dumps trim them, by name and by
//! jemalloc source file, so the allocating function is the leaf that `pprof -top` shows.
//!
//! [`allocated_bytes`] reads `stats.allocated` for the `heap_bytes` metric.
//!
//! Nothing here panics: jemalloc_pprof's singleton unwraps `opt.prof` when it is first
//! touched, so it is only touched once `opt.prof` has been read successfully here.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use tikv_jemalloc_ctl::raw;

use super::profile::ProfileBuilder;
use crate::clock::unix_nanos_now;

/// How long a dump may take before the capture gives up on it.
pub(crate) const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// Innermost frames that belong to the allocator, not to the code that allocated, by
/// function name prefix (frames from jemalloc's C sources are recognised by their file).
/// Unlike the sampling allocator's profiles ([`super::heap::ALLOCATOR_FRAMES`]), the
/// standard library's collection frames (`alloc::raw_vec`, `alloc::vec`) are kept: a
/// `vec!` shows as `alloc::raw_vec::…` under its caller.
pub(crate) const ALLOCATOR_FRAMES: &[&str] = &[
    // jemalloc's profiler and entry points, prefixed (`_rjem_`) or not.
    "prof_backtrace_impl",
    "_rjem_je_prof_",
    "je_prof_",
    "_rjem_je_malloc_default",
    "_rjem_",
    "je_",
    "malloc",
    "calloc",
    "realloc",
    "rallocx",
    "posix_memalign",
    "aligned_alloc",
    // The glue between Rust's allocation API and the global allocator.
    "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>",
    "__rust_alloc",
    "__rust_alloc_zeroed",
    "__rust_realloc",
    "__rustc::",
    "alloc::alloc::",
    "<alloc::alloc::Global",
    "std::alloc::",
];

/// Set while a dump thread runs; a dump that timed out keeps it set until it ends, so a
/// stuck jemalloc costs one thread, not one per trigger.
static DUMP_IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// Whether the memory Rust allocates comes from this jemalloc: it is the global allocator
/// (or what the global allocator wraps), or it replaced `malloc` itself. The feature links
/// jemalloc in either way, and an unused jemalloc still counts its own ~56 KiB.
fn serves_rust_allocations() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let probe = Box::new(0u64);
        let mut ptr: *mut c_void = std::ptr::from_ref::<u64>(&probe).cast_mut().cast();
        let mut arena: libc::c_uint = 0;
        let mut len = std::mem::size_of::<libc::c_uint>();
        // SAFETY: `arenas.lookup` takes a pointer and gives back the index (an unsigned)
        // of the arena it belongs to, or EINVAL for memory that is not jemalloc's
        // (jemalloc(3); 5.3 looks it up without assuming it is there). Both buffers have
        // the sizes passed, and `probe` outlives the call.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arenas.lookup".as_ptr(),
                std::ptr::from_mut(&mut arena).cast(),
                &mut len,
                std::ptr::from_mut(&mut ptr).cast(),
                std::mem::size_of::<*mut c_void>(),
            )
        };
        drop(probe);
        rc == 0
    })
}

/// Whether jemalloc's profiler is compiled in and enabled (`opt.prof`) in this process.
fn profiling_enabled() -> bool {
    // SAFETY: `opt.prof` is a bool (jemalloc(3)); the name is NUL-terminated. Without
    // profiling compiled in, or without jemalloc initialised, mallctl reports an error.
    matches!(unsafe { raw::read::<bool>(b"opt.prof\0") }, Ok(true))
}

/// `prof.active`: whether allocations are being sampled right now.
fn profiling_active() -> Option<bool> {
    // SAFETY: `prof.active` is a readable bool (jemalloc(3)).
    unsafe { raw::read::<bool>(b"prof.active\0") }.ok()
}

/// `prof.lg_sample`: log2 of the mean bytes between two sampled allocations.
fn lg_sample() -> Option<usize> {
    // SAFETY: `prof.lg_sample` is a readable size_t (jemalloc(3)).
    unsafe { raw::read::<libc::size_t>(b"prof.lg_sample\0") }.ok()
}

/// Bytes the application holds according to jemalloc (`stats.allocated`, after advancing
/// `epoch` so the figure is current). None when jemalloc is not the allocator in use or
/// its statistics are unavailable.
pub(crate) fn allocated_bytes() -> Option<u64> {
    if !serves_rust_allocations() {
        return None;
    }
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let bytes = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
    u64::try_from(bytes).ok()
}

/// A heap profile of this process from jemalloc. None when jemalloc profiling is not in
/// use here (`opt.prof` false, jemalloc without profiling, or jemalloc not the
/// allocator); otherwise the profile or why there is none. Waits at most
/// [`DUMP_TIMEOUT`].
pub(crate) fn capture() -> Option<Result<ProfileBuilder, String>> {
    if !profiling_enabled() || !serves_rust_allocations() {
        return None;
    }
    let started = Instant::now();
    let started_unix = unix_nanos_now();
    let stacks = match dump_with_timeout(DUMP_TIMEOUT) {
        Ok(stacks) => stacks,
        Err(err) => return Some(Err(err)),
    };
    // jemalloc caps lg_prof_sample well below 63; anything else is not a usable period.
    let lg = lg_sample().filter(|lg| *lg < 63);
    let mut b = ProfileBuilder::new(
        &[("inuse_space", "bytes")],
        ("space", "bytes"),
        lg.and_then(|lg| 1i64.checked_shl(u32::try_from(lg).ok()?))
            .unwrap_or(0),
    );
    b.set_time(
        started_unix,
        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    );
    b.add_comment(&match lg {
        Some(lg) => format!(
            "holmes: jemalloc heap profile, one allocation sampled per ~{} bytes (lg_prof_sample={lg})",
            1u64.checked_shl(u32::try_from(lg).unwrap_or(u32::MAX)).unwrap_or(0)
        ),
        None => "holmes: jemalloc heap profile".to_owned(),
    });
    if profiling_active() == Some(false) {
        b.add_comment(
            "holmes: jemalloc sampling is paused (prof.active=false); this shows what was sampled while it was on",
        );
    }
    b.trim_leaf_frames(is_allocator_frame);
    for (stack, bytes) in &stacks {
        // Every entry of a jemalloc backtrace is a return address.
        b.add_return_addresses(stack, &[*bytes], &[]);
    }
    Some(Ok(b))
}

/// Whether a frame is the allocator's: a known name prefix, or code from jemalloc's C
/// sources (`…/tikv-jemalloc-sys-…/src/jemalloc.c`, `…/jemalloc/internal/prof_inlines.h`).
fn is_allocator_frame(name: &str, file: &str) -> bool {
    ALLOCATOR_FRAMES.iter().any(|p| name.starts_with(p))
        || ((file.ends_with(".c") || file.ends_with(".h")) && file.contains("jemalloc"))
}

/// Dumps on a helper thread and waits for it at most `timeout`.
fn dump_with_timeout(timeout: Duration) -> Result<Vec<(Vec<usize>, i64)>, String> {
    run_with_timeout(dump, timeout)
}

/// Runs `work` on a helper thread (one at a time) and waits for it at most `timeout`.
fn run_with_timeout<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
    timeout: Duration,
) -> Result<T, String> {
    if DUMP_IN_FLIGHT.swap(true, Ordering::AcqRel) {
        return Err("a previous jemalloc heap dump is still running".to_owned());
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("holmes-jemalloc".to_owned())
        .spawn(move || {
            let result = work();
            DUMP_IN_FLIGHT.store(false, Ordering::Release);
            // The capture may have stopped waiting; then nobody needs the result.
            let _ = tx.send(result);
        });
    if let Err(err) = spawned {
        DUMP_IN_FLIGHT.store(false, Ordering::Release);
        return Err(format!("cannot start the jemalloc dump thread: {err}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err("jemalloc heap dump timed out".to_owned()),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            DUMP_IN_FLIGHT.store(false, Ordering::Release);
            Err("the jemalloc heap dump thread ended without a result".to_owned())
        }
    }
}

/// One dump: jemalloc writes its heap file, jemalloc_pprof parses it. Each stack comes
/// back innermost first, with its estimated bytes in use.
fn dump() -> Result<Vec<(Vec<usize>, i64)>, String> {
    // Only reached once `opt.prof` read true, so the singleton's own reads succeed.
    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or_else(|| "jemalloc profiling is not enabled".to_owned())?;
    // A plain thread outside any tokio runtime, where blocking on the async lock is fine.
    let profile = ctl
        .blocking_lock()
        .dump_profile()
        .map_err(|err| format!("jemalloc heap dump failed: {err:#}"))?;
    Ok(profile
        .stacks
        .iter()
        // jemalloc_pprof keeps stacks outermost first.
        .map(|(stack, _)| {
            (
                stack.addrs.iter().rev().copied().collect(),
                stack.weight as i64,
            )
        })
        .collect())
}

#[cfg(test)]
mod tests;
