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
static DROPPED: AtomicU64 = AtomicU64::new(0);
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
    // SAFETY: `uc` is the third argument of our SA_SIGINFO handler.
    let Some(regs) = (unsafe { Registers::from_ucontext(uc) }) else {
        return;
    };
    let mut frames = [0usize; SAMPLE_DEPTH];
    let depth = unwind::walk(regs, &mut frames);
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
    unwind::init();
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

/// Moves every recorded sample out of the ring: `(stack, weight_ns, at_ns)`.
pub(crate) fn drain(mut sink: impl FnMut(&[usize], u64, u64)) {
    let Some(ring) = RING.get() else {
        return;
    };
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
mod tests {
    use super::*;
    use crate::clock::thread_cpu_time;
    use std::time::Instant;

    /// The culprit: a leaf that spins without calling anything in its hot loop (plain
    /// operators only, so even an unoptimized build makes no calls here).
    #[inline(never)]
    fn spin_leaf_culprit(rounds: u64) -> u64 {
        let mut x = rounds | 1;
        let mut i = 0u64;
        while i < rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
        x
    }

    /// Spins until this thread has had `cpu` of CPU time, however long a busy machine
    /// takes to give it that.
    #[inline(never)]
    fn cpu_test_spin_harness(cpu: Duration) {
        let from = thread_cpu_time();
        while thread_cpu_time() - from < cpu {
            std::hint::black_box(spin_leaf_culprit(2_000_000));
        }
    }

    fn name_of(addr: usize, leaf: bool) -> String {
        let lookup = if leaf { addr } else { addr.saturating_sub(1) };
        crate::capture::symbolize::debuginfo::resolve(lookup)
            .into_iter()
            .find_map(|f| f.function)
            .unwrap_or_default()
    }

    #[test]
    fn a_spinning_leaf_function_carries_its_time() {
        start(CAPTURE_HZ).unwrap();
        let mut stacks: Vec<Vec<usize>> = Vec::new();
        let spinner = std::thread::spawn(|| cpu_test_spin_harness(Duration::from_millis(1500)));
        let give_up = Instant::now() + Duration::from_secs(120);
        while !spinner.is_finished() {
            assert!(Instant::now() < give_up, "the spinner got 1.5 s of CPU");
            drain(|stack, _, _| stacks.push(stack.to_vec()));
            std::thread::sleep(Duration::from_millis(50));
        }
        spinner.join().unwrap();
        set_rate(0).unwrap();
        drain(|stack, _, _| stacks.push(stack.to_vec()));
        let ours: Vec<&Vec<usize>> = stacks
            .iter()
            .filter(|s| {
                s.iter()
                    .enumerate()
                    .any(|(i, a)| name_of(*a, i == 0).contains("cpu_test_spin_harness"))
            })
            .collect();
        // 1.5 s of the spinner's CPU at 99 Hz is ~150 samples; the signal ring may
        // overflow while this thread waits for the CPU, so ask for a fraction of that.
        assert!(
            ours.len() >= 20,
            "only {} of {} samples in the harness",
            ours.len(),
            stacks.len()
        );
        let in_leaf = ours
            .iter()
            .filter(|s| name_of(s[0], true).contains("spin_leaf_culprit"))
            .count();
        assert!(
            in_leaf * 10 >= ours.len() * 9,
            "the leaf carries {in_leaf} of {} samples",
            ours.len()
        );
    }

    #[test]
    fn the_recorder_keeps_only_its_window_and_tallies_captures() {
        let mut r = FlightRecorder::new(Duration::from_secs(3), Duration::ZERO);
        let s = 1_000_000_000u64;
        r.add(&[1, 2], 10, 100 * s);
        r.add(&[1, 2], 10, 100 * s + 5);
        r.add(&[3], 10, 101 * s);
        assert_eq!(
            r.window(0).get(&vec![1, 2]),
            Some(&Tally {
                samples: 2,
                nanos: 20
            })
        );
        r.begin_capture(102 * s);
        r.add(&[4], 7, 102 * s);
        r.add(&[4], 7, 103 * s);
        // 103 s: the 100 s bucket is now older than 3 s and gone.
        assert_eq!(r.window(0).get(&vec![1, 2]), None);
        assert_eq!(r.window(101 * s).len(), 2);
        let cap = r.end_capture();
        assert_eq!(
            cap.get(&vec![4]),
            Some(&Tally {
                samples: 2,
                nanos: 14
            })
        );
        assert!(r.end_capture().is_empty());
    }

    #[test]
    fn a_longer_history_serves_older_intervals() {
        let s = 1_000_000_000u64;
        let mut r = FlightRecorder::new(Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(r.history(), Duration::from_secs(60));
        for second in 100..200 {
            r.add(&[second as usize], 10, second * s + 5);
        }
        // 60 s kept: 140..=199.
        assert!(r.range(0, 140 * s).is_empty());
        assert_eq!(r.range(0, u64::MAX).len(), 60);
        // An interval of the past, to the second: 150.5 s to 152.2 s touches 150..=152.
        let mut got: Vec<usize> = r
            .range(150 * s + s / 2, 152 * s + s / 5)
            .into_keys()
            .map(|k| k[0])
            .collect();
        got.sort();
        assert_eq!(got, [150, 151, 152]);
        assert_eq!(r.window(195 * s).len(), 5);
    }

    #[test]
    fn it_holds_nothing_from_before_it_started() {
        let r = FlightRecorder::new(Duration::from_secs(10), Duration::from_secs(60));
        let now = monotonic_ns();
        assert!(r.holds_since(now) <= now);
        assert!(
            now - r.holds_since(now) < 5_000_000_000,
            "a young recorder holds only its own seconds"
        );
        let later = now + 3_600_000_000_000;
        assert_eq!(r.holds_since(later), later - 60_000_000_000);
    }

    #[test]
    fn a_busy_history_gives_way_but_the_pre_trigger_window_does_not() {
        let s = 1_000_000_000u64;
        let mut r = FlightRecorder::new(Duration::from_secs(10), Duration::from_secs(60));
        let per_second = 1_000;
        for second in 0..60u64 {
            for i in 0..per_second {
                r.add(&[second as usize, i], 1, second * s);
            }
        }
        // One more second: the history beyond the last 10 s holds at most the cap.
        r.add(&[0], 1, 60 * s);
        let older = r.range(0, 50 * s).len();
        assert!(older <= MAX_HISTORY_STACKS, "{older}");
        assert!(older >= MAX_HISTORY_STACKS - per_second, "{older}");
        assert_eq!(r.range(50 * s, 60 * s).len(), 10 * per_second);
    }

    #[test]
    fn too_many_distinct_stacks_are_counted_not_kept() {
        let mut r = FlightRecorder::new(Duration::from_secs(10), Duration::ZERO);
        for i in 0..(MAX_STACKS_PER_BUCKET + 10) {
            r.add(&[i], 1, 5);
        }
        assert_eq!(r.window(0).len(), MAX_STACKS_PER_BUCKET);
        assert_eq!(r.overflow(), 10);
    }
}
