//! Where the interrupted thread's stack is known to be mapped, so that frames inside it
//! are read directly, without a system call:
//!
//! - the main thread's stack: the `[stack]` mapping of `/proc/self/maps`, read once at
//!   [`init`] (it only ever grows down; a stack pointer below what was read is checked
//!   once and the bound lowered);
//! - every other thread's: glibc and musl put a thread's control block — what the thread
//!   pointer (`fs:0` on x86_64, `tpidr_el0` on aarch64) points at — at the top of the
//!   thread's stack allocation. The first walk on a thread checks once, with the kernel,
//!   that all of `[sp, tp)` is readable; the thread's stack is then `[that sp, tp)`,
//!   kept in a small lock-free table keyed by the thread pointer, and later walks whose
//!   stack pointer lies in it need no check. A thread running on another stack (a
//!   signal stack elsewhere, a coroutine) fails the check or is outside the range: its
//!   frames take the checked path.
//!
//! Entries are checked again every [`RECHECK_EVERY`] walks of the process, so a thread
//! pointer reused by a new thread whose stack is mapped differently is caught. All of
//! it is async-signal-safe: atomics, and system calls on stack buffers.

use std::sync::atomic::{fence, AtomicUsize, Ordering};

use super::memory;

/// Entries of the thread table; threads beyond it take the checked path.
const THREADS: usize = 1024;
/// Slots looked at for one thread pointer.
const PROBES: usize = 8;
/// Longest stack range checked in one go (threads with bigger stacks in use take the
/// checked path).
const MAX_CHECKED: usize = 64 * 1024 * 1024;
/// Walks between two checks of a known thread stack.
const RECHECK_EVERY: usize = 1 << 16;
const PAGE: usize = 4096;

static MAIN_LO: AtomicUsize = AtomicUsize::new(0);
static MAIN_HI: AtomicUsize = AtomicUsize::new(0);
/// Walks so far; entries from an older epoch (walks / RECHECK_EVERY) are checked again.
static WALKS: AtomicUsize = AtomicUsize::new(0);

/// A thread's stack as checked: `[lo, tp)`. `seq` is odd while the entry is written.
struct Entry {
    seq: AtomicUsize,
    tp: AtomicUsize,
    lo: AtomicUsize,
    epoch: AtomicUsize,
}

static TABLE: [Entry; THREADS] = [const {
    Entry {
        seq: AtomicUsize::new(0),
        tp: AtomicUsize::new(0),
        lo: AtomicUsize::new(0),
        epoch: AtomicUsize::new(0),
    }
}; THREADS];

/// Reads the main thread's stack range; idempotent. Not for signal handlers (it opens a
/// file), but allocates nothing, so the sampling allocator may call it.
pub(super) fn init() {
    if MAIN_HI.load(Ordering::Acquire) != 0 {
        return;
    }
    if let Some((lo, hi)) = memory::main_stack_mapping() {
        MAIN_LO.store(lo, Ordering::Relaxed);
        MAIN_HI.store(hi, Ordering::Release);
    }
}

/// The end of the memory known readable from `sp` up: frames in `[sp, top)` can be read
/// directly. `None` when it is not known (then every frame is read through the kernel).
pub(super) fn known_top(sp: usize, tp: usize) -> Option<usize> {
    let walks = WALKS.fetch_add(1, Ordering::Relaxed);
    let epoch = walks / RECHECK_EVERY;
    // A thread whose control block sits above its stack pointer: a pthread.
    if tp != 0 && sp < tp && tp - sp <= MAX_CHECKED {
        if lookup(tp, epoch).is_some_and(|lo| sp >= lo) {
            return Some(tp);
        }
        let page = sp & !(PAGE - 1);
        if memory::range_readable(page, tp) {
            remember(tp, page, epoch);
            return Some(tp);
        }
        return None;
    }
    // Else the main thread (whose control block is elsewhere), on its own stack.
    let main_hi = MAIN_HI.load(Ordering::Acquire);
    if main_hi == 0 || sp >= main_hi {
        return None;
    }
    let lo = MAIN_LO.load(Ordering::Relaxed);
    if sp >= lo {
        return Some(main_hi);
    }
    // Grown since it was read: check the new part once.
    let page = sp & !(PAGE - 1);
    if lo - page <= MAX_CHECKED && memory::range_readable(page, lo) {
        MAIN_LO.fetch_min(page, Ordering::Relaxed);
        return Some(main_hi);
    }
    None
}

fn slot(tp: usize, probe: usize) -> &'static Entry {
    // Thread pointers are page-aligned-ish and far apart: mix the bits.
    let hash = (tp >> 12) ^ (tp >> 24) ^ (tp >> 36);
    &TABLE[(hash.wrapping_add(probe)) % THREADS]
}

/// The checked bottom of the stack of the thread at `tp`, if known and current.
fn lookup(tp: usize, epoch: usize) -> Option<usize> {
    for probe in 0..PROBES {
        let e = slot(tp, probe);
        let before = e.seq.load(Ordering::Acquire);
        if before % 2 == 1 || e.tp.load(Ordering::Relaxed) != tp {
            continue;
        }
        let lo = e.lo.load(Ordering::Relaxed);
        let current = e.epoch.load(Ordering::Relaxed) == epoch;
        fence(Ordering::Acquire);
        if e.seq.load(Ordering::Relaxed) == before && e.tp.load(Ordering::Relaxed) == tp {
            return current.then_some(lo);
        }
    }
    None
}

/// Records `[lo, tp)` as the thread's checked stack (a lower `lo` than known, or a new
/// thread, or a new epoch). A full neighbourhood leaves the thread out.
fn remember(tp: usize, lo: usize, epoch: usize) {
    for probe in 0..PROBES {
        let e = slot(tp, probe);
        let seq = e.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            continue;
        }
        let owner = e.tp.load(Ordering::Relaxed);
        let stale = e.epoch.load(Ordering::Relaxed) != epoch;
        if owner != tp && owner != 0 && !stale {
            continue;
        }
        if e.seq
            .compare_exchange(seq, seq + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        e.tp.store(tp, Ordering::Relaxed);
        e.lo.store(lo, Ordering::Relaxed);
        e.epoch.store(epoch, Ordering::Relaxed);
        e.seq.store(seq + 2, Ordering::Release);
        return;
    }
}

#[cfg(test)]
mod tests;
