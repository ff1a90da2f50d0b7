//! The stack of every OS thread of this process, with its name and tid, without ptrace.
//!
//! [`capture_all`] lists `/proc/self/task` and sends each thread a real-time signal
//! ([`capture_signal`]) with `tgkill`. The handler, running on the signalled thread,
//! reads its registers from the signal's `ucontext` and walks its own stack with
//! [`unwind::walk_interrupted`] into a slot of a static table; the capturer waits until every
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

mod slots;

use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::unwind::{self, MAX_DEPTH};
use slots::{
    gettid, install_handler, state_of, tag, tgkill, Slot, BUSY, DONE, FREE, GENERATION, HIGH_WATER,
    OUTSTANDING, PENDING, SLOTS, WRITING,
};

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
    // The main thread's stack bounds, for walks without system calls.
    unwind::init_interrupted();
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
mod tests;
