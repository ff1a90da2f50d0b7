//! CPU profiling with `SIGPROF`, and the always-on flight recorder.
//!
//! A process-wide `ITIMER_PROF` timer sends `SIGPROF` to whichever thread is burning
//! CPU; the handler records the interrupted pc plus a frame-pointer walk
//! ([`crate::unwind`]) into a preallocated ring of slots, and the agent thread drains the
//! ring into per-second buckets ([`FlightRecorder`]). Normally the timer runs at a low
//! rate ([`FLIGHT_HZ`]), so the last seconds before a CPU spike are already recorded when
//! the rule fires — the Go library's issue #123 (the spike was over before sampling
//! began, and the profile was empty) cannot happen. A capture raises the rate to
//! [`CAPTURE_HZ`] for its duration, and ships both the pre-trigger window and the
//! full-rate capture.
//!
//! The timer only runs while the process uses CPU, so an idle process takes no signals.
//! The handler refuses to be installed over another `SIGPROF` handler (another profiler)
//! and never allocates, locks or blocks.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::unwind::{self, Registers};

/// Flight-recorder rate: samples per second of CPU time.
pub(crate) const FLIGHT_HZ: u32 = 19;
/// Full rate during a capture.
pub(crate) const CAPTURE_HZ: u32 = 99;
/// Frames kept per sample.
pub(crate) const SAMPLE_DEPTH: usize = 64;
/// Slots of the signal ring; drained at least every second.
const RING_SLOTS: usize = 512;
/// Distinct stacks kept per second of the flight recorder; more are counted as dropped.
const MAX_STACKS_PER_BUCKET: usize = 2_048;
/// Distinct stacks kept, over all seconds, in the history older than the pre-trigger
/// window (a second holding a stack twice counts it twice); a busier process keeps a
/// shorter history. With the per-second cap this bounds the recorder's memory.
const MAX_HISTORY_STACKS: usize = 16_384;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

struct Slot {
    state: AtomicU8,
    depth: AtomicUsize,
    weight_ns: AtomicU64,
    at_ns: AtomicU64,
    frames: [AtomicUsize; SAMPLE_DEPTH],
}

impl Slot {
    fn new() -> Self {
        Slot {
            state: AtomicU8::new(EMPTY),
            depth: AtomicUsize::new(0),
            weight_ns: AtomicU64::new(0),
            at_ns: AtomicU64::new(0),
            frames: std::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }
}

static RING: OnceLock<Box<[Slot]>> = OnceLock::new();
static CURSOR: AtomicUsize = AtomicUsize::new(0);
/// Slots the handler filled and the drain has not emptied yet: an idle process's drain
/// reads this one word instead of every slot (512 of them over 300 KiB, which cost
/// ~50 µs of cache misses per wake-up of the agent thread).
static PENDING: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Samples that hit one of the agent's own threads, left out of the profiles.
static OWN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the agent's own threads: their CPU (encoding, symbolizing a local dump,
    /// uploading debug info) is the agent's overhead, not the host's, and would otherwise
    /// sit in the very profiles it is busy making. Const-initialised without a
    /// destructor, so reading it in the signal handler is a plain thread-local load.
    static AGENT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one of the agent's: the sampler leaves it out.
pub(crate) fn leave_this_thread_out() {
    AGENT_THREAD.with(|t| t.set(true));
}
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Why CPU profiling is unavailable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CpuError {
    /// Another profiler owns SIGPROF.
    #[error(
        "SIGPROF already has a handler (another profiler in this process?); cpu profiling is off"
    )]
    HandlerTaken,
    /// Another profiler's timer is running.
    #[error("an ITIMER_PROF timer is already running (another profiler in this process?); cpu profiling is off")]
    TimerTaken,
    /// A system call failed.
    #[error("{call} failed: {errno}")]
    Sys {
        /// Which call.
        call: &'static str,
        /// The error.
        errno: String,
    },
    /// This architecture has no register access in signal handlers.
    #[error("cpu profiling is not supported on this architecture")]
    Unsupported,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

extern "C" fn on_sigprof(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: valid thread-local pointer.
    let saved = unsafe { *errno_slot };
    record(uc);
    // SAFETY: as above.
    unsafe { *errno_slot = saved };
}

fn record(uc: *mut libc::c_void) {
    let Some(ring) = RING.get() else {
        return;
    };
    if AGENT_THREAD.try_with(Cell::get).unwrap_or(false) {
        OWN.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: `uc` is the third argument of our SA_SIGINFO handler.
    let Some(regs) = (unsafe { Registers::from_ucontext(uc) }) else {
        return;
    };
    let mut frames = [0usize; SAMPLE_DEPTH];
    let depth = unwind::walk_interrupted(regs, &mut frames);
    let start = CURSOR.fetch_add(1, Ordering::Relaxed);
    for probe in 0..8 {
        let Some(slot) = ring.get((start.wrapping_add(probe)) % RING_SLOTS) else {
            return;
        };
        if slot
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            for (dst, src) in slot.frames.iter().zip(frames.iter().take(depth)) {
                dst.store(*src, Ordering::Relaxed);
            }
            slot.depth.store(depth, Ordering::Relaxed);
            slot.weight_ns
                .store(PERIOD_NS.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.at_ns.store(monotonic_ns(), Ordering::Relaxed);
            slot.state.store(READY, Ordering::Release);
            PENDING.fetch_add(1, Ordering::Release);
            return;
        }
    }
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// Installs the handler (once) and starts the timer at `hz` samples per CPU second.
pub(crate) fn start(hz: u32) -> Result<(), CpuError> {
    if !INSTALLED.load(Ordering::Acquire) {
        install()?;
    }
    set_rate(hz)
}

fn install() -> Result<(), CpuError> {
    if !cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        return Err(CpuError::Unsupported);
    }
    unwind::init_interrupted();
    RING.get_or_init(|| (0..RING_SLOTS).map(|_| Slot::new()).collect());
    // SAFETY: querying the current disposition into a zeroed struct.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; a null new action only reads the old one.
    if unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old) } != 0 {
        return Err(sys("sigaction"));
    }
    let ours = on_sigprof as *const () as usize;
    if old.sa_sigaction != libc::SIG_DFL
        && old.sa_sigaction != libc::SIG_IGN
        && old.sa_sigaction != ours
    {
        return Err(CpuError::HandlerTaken);
    }
    let mut timer: libc::itimerval = zero_timer();
    // SAFETY: valid pointer.
    if unsafe { libc::getitimer(libc::ITIMER_PROF, &mut timer) } == 0
        && (timer.it_interval.tv_sec != 0 || timer.it_interval.tv_usec != 0)
        && old.sa_sigaction != ours
    {
        return Err(CpuError::TimerTaken);
    }
    // SAFETY: a zeroed sigaction with our handler, SA_SIGINFO and an empty mask is valid.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = ours;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // The thread-dump signal waits while this handler runs: both handlers run on the
    // thread's small alternate signal stack, and one nested in the other overflowed it
    // (a SIGSEGV seen in the test suite).
    // SAFETY: valid pointer to the mask inside `action`.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaddset(&mut action.sa_mask, super::threads::capture_signal());
    }
    // SAFETY: valid pointers; the handler is async-signal-safe.
    if unsafe { libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut()) } != 0 {
        return Err(sys("sigaction"));
    }
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

fn zero_timer() -> libc::itimerval {
    libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    }
}

fn sys(call: &'static str) -> CpuError {
    CpuError::Sys {
        call,
        errno: std::io::Error::last_os_error().to_string(),
    }
}

/// Changes the sampling rate (0 stops the timer).
pub(crate) fn set_rate(hz: u32) -> Result<(), CpuError> {
    let mut timer = zero_timer();
    if hz > 0 {
        let period_us = (1_000_000 / u64::from(hz)).max(1);
        timer.it_interval.tv_sec = (period_us / 1_000_000) as libc::time_t;
        timer.it_interval.tv_usec = (period_us % 1_000_000) as libc::suseconds_t;
        timer.it_value = timer.it_interval;
        PERIOD_NS.store(period_us * 1_000, Ordering::Relaxed);
    }
    // SAFETY: valid pointer; a null old value is allowed.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &timer, std::ptr::null_mut()) } != 0 {
        return Err(sys("setitimer"));
    }
    Ok(())
}

/// Samples the signal handler could not store because the ring was full.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Samples of the agent's own threads, left out.
pub(crate) fn own() -> u64 {
    OWN.load(Ordering::Relaxed)
}

/// Moves every recorded sample out of the ring: `(stack, weight_ns, at_ns)`.
pub(crate) fn drain(mut sink: impl FnMut(&[usize], u64, u64)) {
    let Some(ring) = RING.get() else {
        return;
    };
    if PENDING.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut frames = [0usize; SAMPLE_DEPTH];
    for slot in ring.iter() {
        if slot.state.load(Ordering::Acquire) != READY {
            continue;
        }
        let depth = slot.depth.load(Ordering::Relaxed).min(SAMPLE_DEPTH);
        for (dst, src) in frames.iter_mut().zip(slot.frames.iter()).take(depth) {
            *dst = src.load(Ordering::Relaxed);
        }
        let weight = slot.weight_ns.load(Ordering::Relaxed);
        let at = slot.at_ns.load(Ordering::Relaxed);
        slot.state.store(EMPTY, Ordering::Release);
        PENDING.fetch_sub(1, Ordering::AcqRel);
        if let Some(stack) = frames.get(..depth) {
            sink(stack, weight, at);
        }
    }
}

/// Samples and CPU nanoseconds of one stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) samples: u64,
    pub(crate) nanos: u64,
}

impl Tally {
    fn add(&mut self, weight_ns: u64) {
        self.samples += 1;
        self.nanos = self.nanos.saturating_add(weight_ns);
    }
}

/// Aggregated stacks by time: the last seconds of the flight recorder, plus the stacks of
/// an ongoing full-rate capture.
///
/// It keeps `history` (at least the pre-trigger `window`) in one bucket per second of
/// the monotonic clock: the pre-trigger profile reads the last `window`, an incident's
/// controls and the baselines read older seconds. The history beyond `window` is capped
/// at [`MAX_HISTORY_STACKS`] entries, dropping its oldest seconds first.
#[derive(Debug)]
pub(crate) struct FlightRecorder {
    window: Duration,
    keep: Duration,
    /// When it started (monotonic): it holds nothing older.
    created_ns: u64,
    buckets: VecDeque<(u64, HashMap<Vec<usize>, Tally>)>,
    capture: Option<(u64, HashMap<Vec<usize>, Tally>)>,
    overflow: u64,
}

impl FlightRecorder {
    /// A recorder whose pre-trigger profile covers `window`, keeping `history` (or
    /// `window`, if longer).
    pub(crate) fn new(window: Duration, history: Duration) -> Self {
        FlightRecorder {
            window,
            keep: history.max(window),
            created_ns: monotonic_ns(),
            buckets: VecDeque::new(),
            capture: None,
            overflow: 0,
        }
    }

    /// How far back it keeps samples.
    pub(crate) fn history(&self) -> Duration {
        self.keep
    }

    /// Since when (monotonic) it holds every sample taken, at `now_ns`: its start, or
    /// the horizon of its history.
    pub(crate) fn holds_since(&self, now_ns: u64) -> u64 {
        let keep = u64::try_from(self.keep.as_nanos()).unwrap_or(u64::MAX);
        self.created_ns.max(now_ns.saturating_sub(keep))
    }

    /// Adds one sample taken at `at_ns` (monotonic).
    pub(crate) fn add(&mut self, stack: &[usize], weight_ns: u64, at_ns: u64) {
        let second = at_ns / 1_000_000_000;
        if self.buckets.back().is_none_or(|(s, _)| *s < second) {
            self.buckets.push_back((second, HashMap::new()));
            self.forget(second);
        }
        // A late sample from a previous second lands in the newest bucket; close enough.
        if let Some((_, stacks)) = self.buckets.back_mut() {
            tally(stacks, stack, weight_ns, &mut self.overflow);
        }
        if let Some((since, stacks)) = &mut self.capture {
            if at_ns >= *since {
                tally(stacks, stack, weight_ns, &mut self.overflow);
            }
        }
    }

    /// Drops the seconds older than the history, then the oldest seconds beyond the
    /// pre-trigger window while that part holds more than [`MAX_HISTORY_STACKS`].
    fn forget(&mut self, now_second: u64) {
        let keep_secs = self.keep.as_secs().max(1);
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| s.saturating_add(keep_secs) <= now_second)
        {
            self.buckets.pop_front();
        }
        let window_start = now_second.saturating_sub(self.window.as_secs().max(1));
        let mut older: usize = self
            .buckets
            .iter()
            .filter(|(s, _)| *s < window_start)
            .map(|(_, stacks)| stacks.len())
            .sum();
        while older > MAX_HISTORY_STACKS {
            match self.buckets.front() {
                Some((s, stacks)) if *s < window_start => {
                    older -= stacks.len();
                    self.buckets.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Stacks recorded since `since_ns` (monotonic), merged.
    pub(crate) fn window(&self, since_ns: u64) -> HashMap<Vec<usize>, Tally> {
        self.range(since_ns, u64::MAX)
    }

    /// Stacks recorded from `start_ns` to `end_ns` (monotonic), merged, to the second:
    /// every second the interval touches is in.
    pub(crate) fn range(&self, start_ns: u64, end_ns: u64) -> HashMap<Vec<usize>, Tally> {
        let first_second = start_ns / 1_000_000_000;
        let end_second = end_ns.div_ceil(1_000_000_000);
        let mut merged: HashMap<Vec<usize>, Tally> = HashMap::new();
        for (_, stacks) in self
            .buckets
            .iter()
            .filter(|(s, _)| *s >= first_second && *s < end_second)
        {
            for (stack, t) in stacks {
                let e = merged.entry(stack.clone()).or_default();
                e.samples += t.samples;
                e.nanos = e.nanos.saturating_add(t.nanos);
            }
        }
        merged
    }

    /// Starts collecting a capture's stacks from `since_ns` on.
    pub(crate) fn begin_capture(&mut self, since_ns: u64) {
        self.capture = Some((since_ns, HashMap::new()));
    }

    /// Ends the capture and returns its stacks.
    pub(crate) fn end_capture(&mut self) -> HashMap<Vec<usize>, Tally> {
        self.capture.take().map(|(_, s)| s).unwrap_or_default()
    }

    /// Samples not kept because a bucket had too many distinct stacks.
    pub(crate) fn overflow(&self) -> u64 {
        self.overflow
    }
}

fn tally(
    stacks: &mut HashMap<Vec<usize>, Tally>,
    stack: &[usize],
    weight_ns: u64,
    overflow: &mut u64,
) {
    if let Some(t) = stacks.get_mut(stack) {
        t.add(weight_ns);
    } else if stacks.len() < MAX_STACKS_PER_BUCKET {
        let mut t = Tally::default();
        t.add(weight_ns);
        stacks.insert(stack.to_vec(), t);
    } else {
        *overflow += 1;
    }
}

/// Now on the clock the recorder uses.
pub(crate) fn now_ns() -> u64 {
    monotonic_ns()
}

#[cfg(test)]
mod tests;
