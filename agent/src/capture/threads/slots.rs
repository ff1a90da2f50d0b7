//! The signal side of a thread capture: the static slot table each signalled thread
//! writes its stack into, and the handler that does it (see the module above for the
//! protocol that keeps late handlers harmless).

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{ThreadsError, CAPACITY};
use crate::unwind::{self, Registers, MAX_DEPTH};

// Slot states, in the low byte of `Slot::tag`; the generation is in the rest.
pub(super) const FREE: u64 = 0;
pub(super) const PENDING: u64 = 1;
pub(super) const WRITING: u64 = 2;
pub(super) const DONE: u64 = 3;

pub(super) const fn tag(generation: u64, state: u64) -> u64 {
    (generation << 8) | state
}

pub(super) const fn state_of(tag: u64) -> u64 {
    tag & 0xff
}

/// Where one thread's handler leaves its stack.
pub(super) struct Slot {
    /// `generation << 8 | state`, one word so that one CAS checks both.
    pub(super) tag: AtomicU64,
    /// The thread this slot is armed for; written by the capturer only while the slot
    /// is `FREE` or `DONE`, before the generation is published.
    pub(super) tid: AtomicI32,
    /// Frames written, at most `MAX_DEPTH`.
    pub(super) depth: AtomicUsize,
    /// Written only by the handler that moved `tag` to `WRITING`; read only by the
    /// capturer after it saw `DONE` with `Acquire`.
    pub(super) frames: UnsafeCell<[usize; MAX_DEPTH]>,
}

// SAFETY: `frames`, the only field without its own synchronisation, has one writer at a
// time (the handler that won the PENDING → WRITING CAS) and is read only after that
// writer's Release store of DONE was seen with Acquire; no slot is re-armed while it is
// WRITING, and a DONE slot is re-armed only by the next capture, after this one has
// copied it out (captures are serialised by `BUSY`).
unsafe impl Sync for Slot {}

impl Slot {
    const fn new() -> Slot {
        Slot {
            tag: AtomicU64::new(tag(0, FREE)),
            tid: AtomicI32::new(0),
            depth: AtomicUsize::new(0),
            frames: UnsafeCell::new([0; MAX_DEPTH]),
        }
    }
}

/// The slot table: all zeroes, so it sits in `.bss` and only touched pages cost memory.
/// Never freed, so a late handler always writes into memory that exists.
pub(super) static SLOTS: [Slot; CAPACITY] = [const { Slot::new() }; CAPACITY];
/// The current capture's generation; 0 before the first capture.
pub(super) static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Slots the current generation uses are all below this index.
pub(super) static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);
/// Handler runs that found no slot to fill (late signals); for tests and diagnostics.
pub(super) static UNMATCHED: AtomicU64 = AtomicU64::new(0);
/// Set while a capture runs.
pub(super) static BUSY: AtomicBool = AtomicBool::new(false);
/// Threads that timed out in the last capture, so possibly with a signal still queued.
pub(super) static OUTSTANDING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The calling thread's kernel id. Async-signal-safe.
pub(super) fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// `tgkill(pid, tid, sig)`; the errno on failure.
pub(super) fn tgkill(pid: i32, tid: i32, sig: libc::c_int) -> Result<(), i32> {
    // SAFETY: tgkill with plain integer arguments (passed as longs, as the variadic
    // syscall() reads them); it only sends a signal (with signal 0, it only checks that
    // the thread exists).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::c_long::from(pid),
            libc::c_long::from(tid),
            libc::c_long::from(sig),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// The signal handler. Async-signal-safe: atomics, the walk (which only uses
/// `process_vm_readv` outside known stacks) and a raw `gettid`; no allocation, no lock. errno is
/// preserved for the interrupted code.
extern "C" fn on_signal(
    _signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    ucontext: *mut libc::c_void,
) {
    // SAFETY: __errno_location returns the calling thread's errno, valid for the
    // thread's life.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: see above.
    let saved = unsafe { *errno };
    record(ucontext);
    // SAFETY: see above.
    unsafe { *errno = saved };
}

/// Fills this thread's slot of the current capture, if it has one still pending.
fn record(ucontext: *mut libc::c_void) {
    // Acquire: the tids and high-water mark of this generation were stored before it.
    let generation = GENERATION.load(Ordering::Acquire);
    if generation == 0 {
        return;
    }
    let me = gettid();
    let used = HIGH_WATER.load(Ordering::Relaxed).min(CAPACITY);
    let pending = tag(generation, PENDING);
    let writing = tag(generation, WRITING);
    for slot in SLOTS.iter().take(used) {
        if slot.tid.load(Ordering::Relaxed) != me {
            continue;
        }
        if slot
            .tag
            .compare_exchange(pending, writing, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        // The slot cannot be re-armed while it is (generation, PENDING), so its tid is
        // the one read above; checked again anyway so that a thread never writes
        // another's slot.
        if slot.tid.load(Ordering::Relaxed) != me {
            slot.tag.store(pending, Ordering::Release);
            continue;
        }
        // SAFETY: `ucontext` is the third argument of this SA_SIGINFO handler.
        let regs = unsafe { Registers::from_ucontext(ucontext) };
        // SAFETY: winning the PENDING → WRITING CAS makes this handler the only user of
        // the slot until it stores DONE (see `Slot`).
        let frames = unsafe { &mut *slot.frames.get() };
        let depth = regs.map_or(0, |regs| unwind::walk_interrupted(regs, frames));
        slot.depth.store(depth, Ordering::Relaxed);
        slot.tag.store(tag(generation, DONE), Ordering::Release);
        return;
    }
    UNMATCHED.fetch_add(1, Ordering::Relaxed);
}

/// Installs [`on_signal`] for `signal` unless it already is; refuses to replace a
/// handler the host installed.
pub(super) fn install_handler(signal: libc::c_int) -> Result<(), ThreadsError> {
    let ours = on_signal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t;
    let foreign = |h: libc::sighandler_t| h != ours && h != libc::SIG_DFL && h != libc::SIG_IGN;
    // SAFETY: an all-zero sigaction is a valid value to be overwritten by the kernel.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: querying only; `current` is a valid out-pointer.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } != 0 {
        return Err(ThreadsError::Sigaction(io::Error::last_os_error()));
    }
    if current.sa_sigaction == ours {
        return Ok(());
    }
    if foreign(current.sa_sigaction) {
        return Err(ThreadsError::SignalInUse { signal });
    }
    // SAFETY: as above; every field is then set.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = ours;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // SIGPROF waits while this handler runs, so the CPU profiler's handler never nests
    // in it on the thread's small alternate signal stack (see cpu.rs).
    // SAFETY: `action.sa_mask` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaddset(&mut action.sa_mask, libc::SIGPROF);
    }
    // SAFETY: `action` is fully initialised and `on_signal` is async-signal-safe.
    if unsafe { libc::sigaction(signal, &action, &mut current) } != 0 {
        return Err(ThreadsError::Sigaction(io::Error::last_os_error()));
    }
    if foreign(current.sa_sigaction) {
        // The host installed one between the two calls: put it back.
        // SAFETY: restoring exactly what the kernel just returned.
        unsafe { libc::sigaction(signal, &current, std::ptr::null_mut()) };
        return Err(ThreadsError::SignalInUse { signal });
    }
    Ok(())
}
