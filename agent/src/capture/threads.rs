//! The stack of every OS thread of this process, with its name and tid, without ptrace.
//!
//! [`capture_all`] lists `/proc/self/task` and sends each thread a real-time signal
//! ([`capture_signal`]) with `tgkill`. The handler, running on the signalled thread,
//! reads its registers from the signal's `ucontext` and walks its own stack with
//! [`unwind::walk`] into a slot of a static table; the capturer waits until every
//! thread has answered or the deadline has passed. The calling thread is walked
//! directly, without a signal.
//!
//! # Late signals
//!
//! A handler may run long after the capture gave up on it (the thread had the signal
//! blocked, or sat in uninterruptible sleep), so nothing it touches may ever be freed or
//! handed to someone else while it could write. The slots therefore live in a static
//! table ([`CAPACITY`] slots, zero-initialised, so the kernel only backs the pages that
//! a capture actually touches) and are claimed with a compare-and-swap on one word that
//! holds both the capture's generation and the slot's state:
//!
//! - the capturer assigns each thread a slot that is `FREE` or `DONE` (never one still
//!   `WRITING` for an earlier capture), stores its tid, publishes the new generation `g`
//!   and sets the slot to `(g, PENDING)` before signalling;
//! - the handler looks for a slot with its tid and CASes `(g, PENDING)` → `(g, WRITING)`
//!   for the generation `g` it read; only the winner of that CAS writes the frames, then
//!   stores `(g, DONE)`;
//! - at the deadline the capturer CASes `(g, PENDING)` → `(g, FREE)`, so a handler that
//!   runs later finds nothing to claim and writes nothing; a slot caught `WRITING` gets a
//!   short grace to reach `DONE` and otherwise stays out of every later capture until its
//!   handler finishes.
//!
//! Because the generation is part of the word the CAS compares, a handler delayed across
//! captures can never claim a slot armed for a later one under a stale generation.
//!
//! Real-time signals queue: a thread that keeps the signal blocked would collect one more
//! queued signal per capture (each counted against `RLIMIT_SIGPENDING`). A thread that
//! timed out is therefore not signalled again while `/proc` still shows the earlier
//! signal pending for it; that queued signal answers the next capture if it is ever
//! delivered.

use std::cell::UnsafeCell;
use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::unwind::{self, Registers, MAX_DEPTH};

/// Threads one capture can take; the rest are reported skipped.
pub(crate) const CAPACITY: usize = 1024;
/// How long a slot caught mid-write at the deadline may take to finish.
const WRITE_GRACE: Duration = Duration::from_millis(10);
/// How often threads that have not answered yet are checked for having exited.
const EXIT_CHECK_EVERY: Duration = Duration::from_millis(10);
/// Longest sleep between two looks at the slots.
const MAX_POLL_SLEEP: Duration = Duration::from_millis(1);
/// Deadlines are clamped to this, so that `Instant + deadline` cannot overflow.
const MAX_DEADLINE: Duration = Duration::from_secs(3600);

/// The signal a capture sends each thread: `SIGRTMIN + 6`.
pub(crate) fn capture_signal() -> libc::c_int {
    libc::SIGRTMIN() + 6
}

/// One thread's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadStack {
    /// Kernel thread id.
    pub(crate) tid: i32,
    /// `/proc/self/task/<tid>/comm` (at most 15 bytes); empty if it could not be read.
    pub(crate) name: String,
    /// `frames[0]` is the interrupted pc (the leaf), then return addresses, innermost
    /// first. Empty unless the state is `Captured` or `Caller`.
    pub(crate) frames: Vec<usize>,
    /// How the stack was obtained, or why not.
    pub(crate) state: ThreadState,
}

/// How a thread's stack was obtained, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadState {
    /// The thread answered the signal and walked its own stack.
    Captured,
    /// It did not answer the signal in time (signal blocked, stuck in uninterruptible
    /// sleep, not scheduled).
    TimedOut,
    /// The capturing thread itself: its stack is taken directly, no signal.
    Caller,
    /// Not captured, for the reason given ("too many threads", "exited", …).
    Skipped(&'static str),
}

impl fmt::Display for ThreadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreadState::Captured => f.write_str("captured"),
            ThreadState::TimedOut => f.write_str("timed out"),
            ThreadState::Caller => f.write_str("caller"),
            ThreadState::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

/// Why no capture was made at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ThreadsError {
    /// Another capture is running; only one runs at a time.
    #[error("another thread capture is in progress")]
    Busy,
    /// The host installed its own handler for the capture signal; it is left alone.
    #[error("signal {signal} already has a handler that is not Holmes'; not replacing it")]
    SignalInUse {
        /// The signal number.
        signal: libc::c_int,
    },
    /// No register access or no such signal on this platform.
    #[error("thread stacks cannot be captured on this platform")]
    Unsupported,
    /// `/proc/self/task` could not be read.
    #[error("cannot list the threads in /proc/self/task: {0}")]
    ListThreads(#[source] io::Error),
    /// `sigaction` failed.
    #[error("cannot install the signal handler: {0}")]
    Sigaction(#[source] io::Error),
}

// Slot states, in the low byte of `Slot::tag`; the generation is in the rest.
const FREE: u64 = 0;
const PENDING: u64 = 1;
const WRITING: u64 = 2;
const DONE: u64 = 3;

const fn tag(generation: u64, state: u64) -> u64 {
    (generation << 8) | state
}

const fn state_of(tag: u64) -> u64 {
    tag & 0xff
}

/// Where one thread's handler leaves its stack.
struct Slot {
    /// `generation << 8 | state`, one word so that one CAS checks both.
    tag: AtomicU64,
    /// The thread this slot is armed for; written by the capturer only while the slot
    /// is `FREE` or `DONE`, before the generation is published.
    tid: AtomicI32,
    /// Frames written, at most `MAX_DEPTH`.
    depth: AtomicUsize,
    /// Written only by the handler that moved `tag` to `WRITING`; read only by the
    /// capturer after it saw `DONE` with `Acquire`.
    frames: UnsafeCell<[usize; MAX_DEPTH]>,
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
static SLOTS: [Slot; CAPACITY] = [const { Slot::new() }; CAPACITY];
/// The current capture's generation; 0 before the first capture.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Slots the current generation uses are all below this index.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);
/// Handler runs that found no slot to fill (late signals); for tests and diagnostics.
static UNMATCHED: AtomicU64 = AtomicU64::new(0);
/// Set while a capture runs.
static BUSY: AtomicBool = AtomicBool::new(false);
/// Threads that timed out in the last capture, so possibly with a signal still queued.
static OUTSTANDING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The calling thread's kernel id. Async-signal-safe.
fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// `tgkill(pid, tid, sig)`; the errno on failure.
fn tgkill(pid: i32, tid: i32, sig: libc::c_int) -> Result<(), i32> {
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
/// `write`/`read` on a pipe) and a raw `gettid`; no allocation, no lock. errno is
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
        let depth = regs.map_or(0, |regs| unwind::walk(regs, frames));
        slot.depth.store(depth, Ordering::Relaxed);
        slot.tag.store(tag(generation, DONE), Ordering::Release);
        return;
    }
    UNMATCHED.fetch_add(1, Ordering::Relaxed);
}

/// Installs [`on_signal`] for `signal` unless it already is; refuses to replace a
/// handler the host installed.
fn install_handler(signal: libc::c_int) -> Result<(), ThreadsError> {
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

/// Clears `BUSY` when the capture ends, however it ends.
struct BusyGuard;

impl BusyGuard {
    fn acquire() -> Option<BusyGuard> {
        BUSY.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| BusyGuard)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

/// The thread ids in `/proc/self/task`, ascending.
fn list_threads() -> io::Result<Vec<i32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

fn thread_name(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default()
}

/// Whether `signal` is queued for thread `tid` (its `SigPnd` in `/proc`).
fn signal_pending(tid: i32, signal: libc::c_int) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    let Some(bit) = u32::try_from(signal - 1).ok().filter(|b| *b < 64) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigPnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << bit) != 0)
}

/// Withdraws `slot` from generation `g`: true if its handler finished (DONE), false if
/// it was withdrawn before the handler claimed it, or is still being written at
/// `grace_until` (it then stays out of later captures until the handler finishes).
fn withdraw(slot: &Slot, g: u64, grace_until: Instant) -> bool {
    loop {
        match slot.tag.compare_exchange(
            tag(g, PENDING),
            tag(g, FREE),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return false,
            Err(current) if current == tag(g, DONE) => return true,
            Err(current) if current == tag(g, WRITING) && Instant::now() < grace_until => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(_) => return false,
        }
    }
}

/// Copies a slot's frames out. Only for a slot seen `DONE` with `Acquire` by this capture.
fn read_frames(slot: &Slot) -> Vec<usize> {
    let depth = slot.depth.load(Ordering::Relaxed).min(MAX_DEPTH);
    // SAFETY: the caller saw this capture's DONE with Acquire: the handler is finished
    // and nothing writes the slot until a later capture re-arms it.
    let frames = unsafe { &*slot.frames.get() };
    frames
        .get(..depth)
        .map(<[usize]>::to_vec)
        .unwrap_or_default()
}

/// Walks the calling thread's own stack: `out[0]` is a pc in this function.
#[inline(never)]
fn own_stack(out: &mut [usize]) -> usize {
    unwind::walk_here(out)
}

/// One thread during a capture.
struct Job {
    stack: ThreadStack,
    /// The slot armed for it, while its answer is awaited.
    slot: Option<&'static Slot>,
}

/// Captures the stack of every thread of the process, waiting at most `deadline`
/// (plus a few milliseconds if a handler is caught mid-write) for them to answer.
///
/// Threads are listed in ascending tid order. Threads that did not answer are
/// `TimedOut`, threads beyond [`CAPACITY`] or that exited meanwhile are `Skipped`, and
/// the calling thread is `Caller`.
pub(crate) fn capture_all(deadline: Duration) -> Result<Vec<ThreadStack>, ThreadsError> {
    let start = Instant::now();
    let end = start + deadline.min(MAX_DEADLINE);
    let _busy = BusyGuard::acquire().ok_or(ThreadsError::Busy)?;
    if !cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        return Err(ThreadsError::Unsupported);
    }
    let signal = capture_signal();
    if signal > libc::SIGRTMAX() {
        return Err(ThreadsError::Unsupported);
    }
    // Without the probe pipe walks still record the leaf pc, so this is not fatal.
    unwind::init();
    install_handler(signal)?;

    let tids = list_threads().map_err(ThreadsError::ListThreads)?;
    let me = gettid();
    let pid = std::process::id() as i32;
    let generation = GENERATION.load(Ordering::Relaxed) + 1;

    // Arm one slot per thread: any slot not still being written by a late handler.
    let mut free = SLOTS
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(state_of(s.tag.load(Ordering::Acquire)), FREE | DONE));
    let mut high_water = 0;
    let mut jobs: Vec<Job> = Vec::with_capacity(tids.len());
    for tid in tids {
        let mut job = Job {
            stack: ThreadStack {
                tid,
                name: String::new(),
                frames: Vec::new(),
                state: ThreadState::TimedOut,
            },
            slot: None,
        };
        if tid == me {
            job.stack.state = ThreadState::Caller;
        } else if let Some((index, slot)) = free.next() {
            slot.tid.store(tid, Ordering::Relaxed);
            high_water = index + 1;
            job.slot = Some(slot);
        } else {
            job.stack.state = ThreadState::Skipped("too many threads");
        }
        jobs.push(job);
    }
    HIGH_WATER.store(high_water, Ordering::Relaxed);
    // Release: publishes the tids and high-water mark to handlers of this generation.
    GENERATION.store(generation, Ordering::Release);
    for slot in jobs.iter().filter_map(|j| j.slot) {
        slot.tag.store(tag(generation, PENDING), Ordering::Release);
    }

    // Signal, except threads whose signal from an earlier capture is still queued.
    let outstanding = std::mem::take(&mut *OUTSTANDING.lock().unwrap_or_else(|p| p.into_inner()));
    for job in &mut jobs {
        let Some(slot) = job.slot else { continue };
        let tid = job.stack.tid;
        if outstanding.contains(&tid) && signal_pending(tid, signal) {
            continue;
        }
        if let Err(errno) = tgkill(pid, tid, signal) {
            job.stack.state = ThreadState::Skipped(match errno {
                libc::ESRCH => "exited",
                libc::EAGAIN => "signal queue full",
                _ => "signal failed",
            });
            if withdraw(slot, generation, start) {
                // A signal from an earlier capture answered this one.
                job.stack.state = ThreadState::Captured;
                job.stack.frames = read_frames(slot);
            }
            job.slot = None;
        }
    }

    // While the handlers run: our own stack, and every thread's name.
    for job in &mut jobs {
        if job.stack.state == ThreadState::Caller {
            let mut frames = [0usize; MAX_DEPTH];
            let depth = own_stack(&mut frames).min(MAX_DEPTH);
            job.stack.frames = frames
                .get(..depth)
                .map(<[usize]>::to_vec)
                .unwrap_or_default();
        }
        job.stack.name = thread_name(job.stack.tid);
    }

    // Wait for the answers, checking now and then for threads that exited.
    let mut sleep = Duration::from_micros(20);
    let mut next_exit_check = Instant::now() + EXIT_CHECK_EVERY;
    loop {
        let mut waiting = false;
        for job in &mut jobs {
            let Some(slot) = job.slot else { continue };
            if slot.tag.load(Ordering::Acquire) == tag(generation, DONE) {
                job.stack.state = ThreadState::Captured;
                job.stack.frames = read_frames(slot);
                job.slot = None;
            } else {
                waiting = true;
            }
        }
        let now = Instant::now();
        if !waiting || now >= end {
            break;
        }
        if now >= next_exit_check {
            for job in &mut jobs {
                let Some(slot) = job.slot else { continue };
                if tgkill(pid, job.stack.tid, 0) == Err(libc::ESRCH) {
                    if withdraw(slot, generation, now) {
                        job.stack.state = ThreadState::Captured;
                        job.stack.frames = read_frames(slot);
                    } else {
                        job.stack.state = ThreadState::Skipped("exited");
                    }
                    job.slot = None;
                }
            }
            next_exit_check = now + EXIT_CHECK_EVERY;
        }
        std::thread::sleep(sleep.min(end.saturating_duration_since(now)));
        sleep = (sleep * 2).min(MAX_POLL_SLEEP);
    }

    // Deadline: withdraw what is left, so that late handlers find nothing to write.
    let grace_until = Instant::now() + WRITE_GRACE;
    let mut timed_out = Vec::new();
    for job in &mut jobs {
        let Some(slot) = job.slot.take() else {
            continue;
        };
        if withdraw(slot, generation, grace_until) {
            job.stack.state = ThreadState::Captured;
            job.stack.frames = read_frames(slot);
        } else {
            job.stack.state = ThreadState::TimedOut;
            timed_out.push(job.stack.tid);
        }
    }
    *OUTSTANDING.lock().unwrap_or_else(|p| p.into_inner()) = timed_out;
    Ok(jobs.into_iter().map(|j| j.stack).collect())
}

/// A readable dump: one block per thread, `thread <name> (tid N) [state]` then one
/// `  #i <function>` line per function. `symbolize(addr, leaf)` names the functions at
/// an address, innermost (inlined) first; `leaf` is true for `frames[0]`, an exact pc,
/// and false for return addresses (to be looked up at `addr - 1`). Addresses it cannot
/// name are printed in hex.
pub(crate) fn render_text(
    stacks: &[ThreadStack],
    mut symbolize: impl FnMut(usize, bool) -> Vec<String>,
) -> String {
    let mut out = String::new();
    for (n, thread) in stacks.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let name = if thread.name.is_empty() {
            "?"
        } else {
            thread.name.as_str()
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "thread {name} (tid {}) [{}]", thread.tid, thread.state);
        let mut line = 0;
        for (i, &addr) in thread.frames.iter().enumerate() {
            let functions = symbolize(addr, i == 0);
            if functions.is_empty() {
                let _ = writeln!(out, "  #{line} {addr:#x}");
                line += 1;
            }
            for function in functions {
                let _ = writeln!(out, "  #{line} {function}");
                line += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{mpsc, Arc, MutexGuard};
    use std::thread;

    /// Captures share the process: tests that capture run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn symbolize(addr: usize, leaf: bool) -> Vec<String> {
        let lookup = if leaf { addr } else { addr.saturating_sub(1) };
        crate::debuginfo::resolve(lookup)
            .into_iter()
            .filter_map(|f| f.function)
            .collect()
    }

    fn symbolized(stack: &ThreadStack) -> Vec<String> {
        stack
            .frames
            .iter()
            .enumerate()
            .flat_map(|(i, &addr)| symbolize(addr, i == 0))
            .collect()
    }

    fn find(stacks: &[ThreadStack], tid: i32) -> &ThreadStack {
        stacks
            .iter()
            .find(|t| t.tid == tid)
            .unwrap_or_else(|| panic!("tid {tid} not in the capture"))
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn signal_set() -> libc::sigset_t {
        // SAFETY: sigemptyset/sigaddset on a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, capture_signal());
            set
        }
    }

    /// A thread that blocks the capture signal until told to go, then unblocks it (so a
    /// queued signal is delivered late) and exits.
    fn spawn_blocking_signal() -> (i32, mpsc::Sender<()>, thread::JoinHandle<()>) {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("sig-blocked".into())
            .spawn(move || {
                let set = signal_set();
                // SAFETY: changing this thread's own mask.
                let rc =
                    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
                assert_eq!(rc, 0);
                tid_tx.send(gettid()).unwrap();
                let _ = go_rx.recv();
                // SAFETY: as above.
                let rc =
                    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
                assert_eq!(rc, 0);
            })
            .unwrap();
        (tid_rx.recv().unwrap(), go_tx, handle)
    }

    #[inline(never)]
    fn blocked_in_culprit_lock(lock: &std::sync::Mutex<()>, entered: &AtomicUsize) {
        entered.fetch_add(1, Ordering::SeqCst);
        let guard = lock.lock();
        black_box(&guard);
    }

    #[inline(never)]
    fn spin_in_culprit(started: &AtomicBool, stop: &AtomicBool) {
        started.store(true, Ordering::SeqCst);
        while !black_box(stop).load(Ordering::Relaxed) {
            // A loop without calls even in debug builds, so that nearly every sample
            // lands in this function and not in a helper it calls.
            let mut i = 0u32;
            while i < 1_000_000 {
                // SAFETY: a nop.
                unsafe { std::arch::asm!("nop", options(nomem, nostack, preserves_flags)) };
                i += 1;
            }
        }
    }

    #[test]
    fn threads_piled_up_on_a_lock_are_captured_inside_the_culprit() {
        let _serial = serial();
        let lock = Arc::new(std::sync::Mutex::new(()));
        let held = lock.lock().unwrap();
        let entered = Arc::new(AtomicUsize::new(0));
        let (tid_tx, tid_rx) = mpsc::channel();
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (lock, entered, tid_tx) = (lock.clone(), entered.clone(), tid_tx.clone());
                thread::Builder::new()
                    .name(format!("culprit-{i}"))
                    .spawn(move || {
                        tid_tx.send((i, gettid())).unwrap();
                        blocked_in_culprit_lock(&lock, &entered);
                    })
                    .unwrap()
            })
            .collect();
        let tids: Vec<(i32, i32)> = (0..3).map(|_| tid_rx.recv().unwrap()).collect();
        wait_for("the culprits", || entered.load(Ordering::SeqCst) == 3);
        thread::sleep(Duration::from_millis(100)); // let them reach the futex wait

        let stacks = capture_all(Duration::from_secs(2));
        drop(held);
        for h in handles {
            h.join().unwrap();
        }
        let stacks = stacks.unwrap();
        println!("{}", render_text(&stacks, symbolize));
        for (i, tid) in tids {
            let stack = find(&stacks, tid);
            assert_eq!(stack.name, format!("culprit-{i}"));
            assert_eq!(stack.state, ThreadState::Captured, "{stack:?}");
            let functions = symbolized(stack);
            assert!(
                functions
                    .iter()
                    .any(|f| f.contains("blocked_in_culprit_lock")),
                "culprit-{i}: {functions:#?}"
            );
        }
        let culprits = stacks
            .iter()
            .filter(|t| t.name.starts_with("culprit-"))
            .count();
        assert_eq!(culprits, 3);
    }

    #[test]
    fn a_spinning_thread_is_caught_in_its_leaf_function() {
        let _serial = serial();
        let started = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = mpsc::channel();
        let handle = {
            let (started, stop) = (started.clone(), stop.clone());
            thread::Builder::new()
                .name("spinner".into())
                .spawn(move || {
                    tid_tx.send(gettid()).unwrap();
                    spin_in_culprit(&started, &stop);
                })
                .unwrap()
        };
        let tid = tid_rx.recv().unwrap();
        wait_for("the spinner", || started.load(Ordering::SeqCst));

        let stacks = capture_all(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        handle.join().unwrap();
        let stacks = stacks.unwrap();
        let stack = find(&stacks, tid);
        assert_eq!(stack.state, ThreadState::Captured, "{stack:?}");
        let leaf = symbolize(stack.frames[0], true);
        assert!(
            leaf.iter().any(|f| f.contains("spin_in_culprit")),
            "leaf {leaf:?}; stack {:#?}",
            symbolized(stack)
        );
    }

    #[test]
    fn a_thread_blocking_the_signal_times_out_within_the_deadline() {
        let _serial = serial();
        let (tid, go, handle) = spawn_blocking_signal();
        let deadline = Duration::from_millis(300);
        let start = Instant::now();
        let stacks = capture_all(deadline);
        let elapsed = start.elapsed();
        // Unblocking delivers the queued signal late: its handler must find nothing.
        let unmatched = UNMATCHED.load(Ordering::SeqCst);
        go.send(()).unwrap();
        handle.join().unwrap();
        let late = UNMATCHED.load(Ordering::SeqCst) - unmatched;

        let stacks = stacks.unwrap();
        let stack = find(&stacks, tid);
        assert_eq!(stack.state, ThreadState::TimedOut);
        assert!(stack.frames.is_empty());
        assert!(elapsed >= deadline, "{elapsed:?}");
        assert!(
            elapsed < deadline + Duration::from_millis(100),
            "{elapsed:?}"
        );
        assert!(late >= 1, "the late signal was not delivered");
        // No slot is left armed or mid-write.
        assert!(SLOTS
            .iter()
            .all(|s| matches!(state_of(s.tag.load(Ordering::SeqCst)), FREE | DONE)));
    }

    #[test]
    fn a_second_concurrent_capture_is_refused_as_busy() {
        let _serial = serial();
        // Keeps the first capture waiting for its whole deadline.
        let (_tid, go, blocked) = spawn_blocking_signal();
        let first = thread::spawn(|| capture_all(Duration::from_millis(500)));
        wait_for("the first capture", || BUSY.load(Ordering::SeqCst));
        let second = capture_all(Duration::from_millis(500));
        let first = first.join().unwrap();
        go.send(()).unwrap();
        blocked.join().unwrap();
        assert!(matches!(second, Err(ThreadsError::Busy)), "{second:?}");
        assert!(first.is_ok(), "{first:?}");
        // Once it is over, captures work again.
        assert!(capture_all(Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn the_caller_is_walked_directly() {
        let _serial = serial();
        let stacks = capture_all(Duration::from_secs(2)).unwrap();
        let me = find(&stacks, gettid());
        assert_eq!(me.state, ThreadState::Caller);
        assert_eq!(
            stacks
                .iter()
                .filter(|t| t.state == ThreadState::Caller)
                .count(),
            1
        );
        let functions = symbolized(me);
        for expected in ["capture_all", "the_caller_is_walked_directly"] {
            assert!(
                functions.iter().any(|f| f.contains(expected)),
                "{expected}: {functions:#?}"
            );
        }
        // The main thread (tid == pid) is listed too.
        find(&stacks, std::process::id() as i32);
    }

    #[test]
    fn threads_coming_and_going_during_captures_do_no_harm() {
        let _serial = serial();
        let spawner = thread::spawn(|| {
            let mut alive = std::collections::VecDeque::new();
            for i in 0..200u64 {
                alive.push_back(thread::spawn(move || {
                    if i % 3 != 0 {
                        thread::sleep(Duration::from_micros(300 * (i % 7)));
                    }
                }));
                if alive.len() > 16 {
                    alive.pop_front().unwrap().join().unwrap();
                }
                thread::sleep(Duration::from_micros(200));
            }
            for h in alive {
                h.join().unwrap();
            }
        });
        let deadline = Duration::from_secs(1);
        let mut captures = 0;
        while !spawner.is_finished() || captures < 5 {
            let start = Instant::now();
            let stacks = capture_all(deadline).unwrap();
            assert!(start.elapsed() < deadline + Duration::from_millis(100));
            assert!(stacks.iter().any(|t| t.state == ThreadState::Caller));
            captures += 1;
        }
        spawner.join().unwrap();
        assert!(captures >= 5);
    }

    #[test]
    fn twenty_idle_threads_are_all_captured_quickly() {
        let _serial = serial();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
        let (tid_tx, tid_rx) = mpsc::channel();
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (go_rx, tid_tx) = (go_rx.clone(), tid_tx.clone());
                thread::Builder::new()
                    .name(format!("idle-{i}"))
                    .spawn(move || {
                        tid_tx.send(gettid()).unwrap();
                        // One waits on the channel, the others on its lock.
                        let _ = go_rx.lock().unwrap().recv();
                    })
                    .unwrap()
            })
            .collect();
        let tids: Vec<i32> = (0..20).map(|_| tid_rx.recv().unwrap()).collect();
        let mut times = Vec::new();
        let mut last = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            last = capture_all(Duration::from_secs(2)).unwrap();
            times.push(start.elapsed());
        }
        drop(go_tx);
        for h in handles {
            h.join().unwrap();
        }
        times.sort();
        println!(
            "{} threads: min {:?}, median {:?}, max {:?}",
            last.len(),
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
        for tid in tids {
            assert_eq!(find(&last, tid).state, ThreadState::Captured);
        }
    }

    #[test]
    fn render_text_prints_one_block_per_thread() {
        let stacks = [
            ThreadStack {
                tid: 7,
                name: "worker".into(),
                frames: vec![0x10, 0x20],
                state: ThreadState::Captured,
            },
            ThreadStack {
                tid: 8,
                name: String::new(),
                frames: Vec::new(),
                state: ThreadState::Skipped("too many threads"),
            },
        ];
        let text = render_text(&stacks, |addr, leaf| match (addr, leaf) {
            (0x10, true) => vec!["inlined".into(), "leaf_fn".into()],
            _ => Vec::new(),
        });
        assert_eq!(
            text,
            "thread worker (tid 7) [captured]\n  #0 inlined\n  #1 leaf_fn\n  #2 0x20\n\n\
             thread ? (tid 8) [skipped: too many threads]\n"
        );
    }
}
