//! Capture, the third stage: what the agent records when a rule fires or a capture is
//! requested.
//!
//! - [`cpu`]: `SIGPROF` sampling and the always-on flight recorder.
//! - [`threads`]: the stack of every OS thread, by signalling each one.
//! - [`heap`]: heap profiles, from jemalloc ([`jemalloc`], the `jemalloc` feature) or
//!   the sampling allocator.
//! - [`tasks`]: tokio task dumps of the registered runtimes (the `taskdump` feature).
//! - [`profile`]: a profile being captured and its encodings, pprof for the dump folder
//!   and the agent's own native profile for the collector; [`symbolize`]: code
//!   addresses to module offsets, and for local dumps to functions, files and lines.
//! - [`output`]: each finished profile written to the dump folder and queued for the
//!   collector.
//! - [`requests`]: captures asked for by the host or the collector, waiting for the
//!   agent thread, and the collector's rate limit.
//! - [`plan`]: what a capture is asked to do per kind, and the report of what it did;
//!   [`recorded`]: CPU profiles of a past interval, from the flight recorder.
//!
//! [`Captures`] runs captures on short-lived `holmes-capture` threads, so the agent keeps
//! sampling meanwhile; at most one capture of each kind runs at a time, and kinds run
//! side by side (a thread dump does not wait for a 2 s CPU profile to finish). A capture
//! that fails is reported as a profile carrying the error.

pub(crate) mod cpu;
pub(crate) mod heap;
#[cfg(feature = "jemalloc")]
pub(crate) mod jemalloc;
mod output;
pub(crate) mod plan;
pub(crate) mod profile;
mod recorded;
pub(crate) mod requests;
pub(crate) mod symbolize;
pub(crate) mod tasks;
pub(crate) mod threads;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::{ProfileKind, TriggerEvent, TriggerReason};

use plan::{Job, JobResult, OnDone, Report};
use profile::{LabelValue, ProfileBuilder};
use symbolize::local::{LocalSymbolizer, SYMBOLS_IDLE};

use crate::clock::{thread_cpu_time, unix_nanos_now};
use crate::config::{AgentConfig, FLIGHT_RECORDER_HISTORY};
use crate::delivery::Delivery;
use output::deliver;

/// Largest profile the agent ships; a bigger one is reported as a failed capture.
pub(crate) const MAX_PROFILE_BYTES: usize = 32 * 1024 * 1024;

/// How long thread stacks may take to answer.
pub(crate) const THREADS_DEADLINE: Duration = Duration::from_secs(2);

/// How long the registered runtimes' task dumps may take (all of them, together), plus
/// [`TASKS_DEADLINE_PER_TASK`] for each alive task: a dump re-polls every task.
pub(crate) const TASKS_DEADLINE: Duration = Duration::from_secs(5);
/// A dump takes about 25 µs per task in a debug build; twice that is allowed.
pub(crate) const TASKS_DEADLINE_PER_TASK: Duration = Duration::from_micros(50);

/// One finished capture, ready to be encoded, written and sent.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) kind: ProfileKind,
    pub(crate) started_unix_nanos: u64,
    pub(crate) duration: Duration,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) result: Result<ProfileBuilder, String>,
    /// A readable rendering written next to the profile in the dump folder.
    pub(crate) text: Option<Text>,
}

/// The readable rendering of a capture.
#[derive(Debug)]
pub(crate) enum Text {
    /// Thread stacks, rendered (and symbolized) only for the dump folder.
    Threads(Vec<threads::ThreadStack>),
    /// Already rendered (task dumps, which tokio symbolizes itself).
    #[cfg_attr(not(all(feature = "taskdump", tokio_unstable)), allow(dead_code))]
    Ready(String),
}

/// The capture machinery shared by the monitor and the capture threads.
#[derive(Debug)]
pub(crate) struct Captures {
    /// One bit per [`ProfileKind`] being captured right now.
    busy: AtomicU8,
    /// `None` when CPU profiling could not start (another profiler, unsupported).
    recorder: Option<Mutex<cpu::FlightRecorder>>,
    /// Symbolizes local dumps; loaded on first use, dropped when idle.
    symbols: LocalSymbolizer,
    /// The capture threads running now, for `stop()` to wait for.
    running: Running,
}

/// How many capture threads run, and whether the agent is stopping (which cuts a
/// full-rate CPU capture short). One lock and condition variable serve both waits.
#[derive(Debug, Default)]
struct Running {
    count: Mutex<usize>,
    changed: Condvar,
    stopping: AtomicBool,
}

impl Running {
    fn count(&self) -> std::sync::MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts one capture thread for as long as it lives (dropped with the thread's
/// closure, also when the thread could not start).
struct RunningGuard(Arc<Captures>);

impl RunningGuard {
    fn new(captures: &Arc<Captures>) -> Self {
        *captures.running.count() += 1;
        RunningGuard(Arc::clone(captures))
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let running = &self.0.running;
        let mut count = running.count();
        *count = count.saturating_sub(1);
        drop(count);
        running.changed.notify_all();
    }
}

impl Captures {
    /// Starts the flight recorder if configured; failures turn CPU captures off, logged.
    pub(crate) fn new(cfg: &AgentConfig) -> Self {
        let recorder = if cfg.flight_recorder {
            match cpu::start(cpu::FLIGHT_HZ) {
                Ok(()) => Some(Mutex::new(cpu::FlightRecorder::new(
                    cfg.flight_recorder_window,
                    FLIGHT_RECORDER_HISTORY,
                ))),
                Err(err) => {
                    tracing::warn!(target: "holmes", error = %err, "cpu profiling unavailable");
                    None
                }
            }
        } else {
            None
        };
        Captures {
            busy: AtomicU8::new(0),
            recorder,
            symbols: LocalSymbolizer::default(),
            running: Running::default(),
        }
    }

    /// The agent is stopping: a full-rate CPU capture ends now, with what it has, and
    /// this waits until `deadline` for every capture thread to hand its profiles over.
    /// Returns how many are still running.
    pub(crate) fn stop(&self, deadline: Instant) -> usize {
        let running = &self.running;
        running.stopping.store(true, Ordering::Release);
        running.changed.notify_all();
        let mut count = running.count();
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            count = running
                .changed
                .wait_timeout(count, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *count
    }

    /// Sleeps for `duration`, or less if the agent is stopping.
    fn sleep_unless_stopping(&self, duration: Duration) {
        let running = &self.running;
        let count = running.count();
        let _ = running.changed.wait_timeout_while(count, duration, |_| {
            !running.stopping.load(Ordering::Acquire)
        });
    }

    /// Gives back the memory of debug info no capture used for a while; called on every
    /// sample of the agent thread, never waiting for a capture.
    pub(crate) fn release_idle_symbols(&self) {
        self.symbols.release_if_idle(SYMBOLS_IDLE);
    }

    /// Moves the signal ring's samples into the flight recorder; called on every wake-up
    /// of the agent thread.
    pub(crate) fn drain(&self) {
        if let Some(recorder) = &self.recorder {
            let mut r = recorder.lock().unwrap_or_else(|p| p.into_inner());
            cpu::drain(|stack, weight, at| r.add(stack, weight, at));
        }
    }

    /// The kinds this agent can capture for a trigger on `metric`.
    pub(crate) fn kinds_for(&self, metric: holmes_proto::Metric) -> Vec<ProfileKind> {
        use holmes_proto::Metric::*;
        match metric {
            CpuPercent if self.recorder.is_some() => vec![ProfileKind::Cpu],
            MemoryPercent | HeapPercent if heap::available() => vec![ProfileKind::Heap],
            Tasks if tasks::AVAILABLE => vec![ProfileKind::Tasks],
            Threads | Tasks => vec![ProfileKind::Threads],
            _ => Vec::new(),
        }
    }

    /// Whether a capture of any of `kinds` is running.
    pub(crate) fn busy_with(&self, kinds: &[ProfileKind]) -> bool {
        let busy = self.busy.load(Ordering::Acquire);
        kinds.iter().any(|k| busy & kind_bit(*k) != 0)
    }

    /// Claims the kinds of `kinds` that are not being captured right now and returns
    /// them, in order; the others are logged and left out (one capture of a kind at a
    /// time). Hand the claim to [`Captures::run`], which releases it.
    pub(crate) fn claim(&self, event_id: &str, kinds: &[ProfileKind]) -> Vec<ProfileKind> {
        let wanted = kinds.iter().fold(0u8, |bits, k| bits | kind_bit(*k));
        let before = self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
                Some(busy | wanted)
            })
            .unwrap_or_else(|busy| busy);
        let taken = wanted & !before;
        let (claimed, skipped): (Vec<ProfileKind>, Vec<ProfileKind>) =
            kinds.iter().partition(|k| taken & kind_bit(**k) != 0);
        if !skipped.is_empty() {
            let skipped: Vec<&str> = skipped.iter().map(|k| k.as_str()).collect();
            tracing::info!(target: "holmes", event_id, ?skipped, "a capture of this kind is already running; this trigger gets none of it");
        }
        claimed
    }

    /// Why this agent cannot capture `kind` at all, or `None` when it can.
    pub(crate) fn unsupported(&self, kind: ProfileKind) -> Option<String> {
        match kind {
            ProfileKind::Cpu if self.recorder.is_none() => Some(
                "no CPU profiling: the flight recorder is off (HOLMES_FLIGHT_RECORDER) or could not start"
                    .to_owned(),
            ),
            ProfileKind::Heap if !heap::available() => {
                Some(heap::HeapError::NotAvailable.to_string())
            }
            ProfileKind::Tasks if !tasks::AVAILABLE => Some(tasks::UNAVAILABLE.to_owned()),
            _ => None,
        }
    }

    /// Runs `jobs` for `event` on a capture thread (a tasks capture dumps `runtimes`),
    /// hands each profile to `delivery` and the dump folder (a baseline's only to
    /// `delivery`: it is for the collector, and loads no debug info to symbolize a local
    /// copy), and calls `done` with what became of each. The kinds of exclusive jobs must have been claimed ([`Captures::claim`]);
    /// their claim is released when the thread ends. A job the collector skipped before
    /// it started is not run. If no thread can be started, each job is reported as a
    /// failed capture, so whoever waits for the planned profiles learns why.
    pub(crate) fn run(
        self: &Arc<Self>,
        cfg: &Arc<AgentConfig>,
        delivery: &Arc<Delivery>,
        runtimes: Vec<tokio::runtime::Handle>,
        event: &TriggerEvent,
        jobs: Vec<Job>,
        done: Option<OnDone>,
    ) {
        let event_id = event.event_id.as_str();
        let local = event.reason != TriggerReason::Baseline;
        if jobs.is_empty() {
            if let Some(done) = done {
                done(Report::default());
            }
            return;
        }
        let bits = jobs
            .iter()
            .filter(|j| j.exclusive())
            .fold(0u8, |b, j| b | kind_bit(j.kind()));
        let this = Arc::clone(self);
        let alive = RunningGuard::new(self);
        let (cfg2, delivery2) = (Arc::clone(cfg), Arc::clone(delivery));
        let id = event_id.to_owned();
        let planned = jobs.clone();
        // Handed back if the thread cannot start.
        let done_slot = Arc::new(Mutex::new(done));
        let done_thread = Arc::clone(&done_slot);
        let spawned = std::thread::Builder::new()
            .name("holmes-capture".to_owned())
            .spawn(move || {
                let _alive = alive;
                cpu::leave_this_thread_out();
                let cpu_before = thread_cpu_time();
                let mut report = Report::default();
                for job in planned {
                    let kind = job.kind();
                    if delivery2.is_skipped(&id, kind) {
                        tracing::info!(target: "holmes", event_id = %id, kind = kind.as_str(), "not capturing: the collector asked to skip it");
                        report.results.push((kind, JobResult::Skipped));
                        continue;
                    }
                    let mut made = false;
                    let mut error = None;
                    this.capture(&cfg2, &runtimes, job, &mut |c| {
                        let dump = cfg2.dump.as_ref().filter(|_| local);
                        match deliver(&cfg2, dump, &delivery2, &this.symbols, &id, &c) {
                            Ok(bytes) => {
                                made = true;
                                report.bytes += bytes as u64;
                            }
                            Err(err) => {
                                error.get_or_insert(err);
                            }
                        }
                    });
                    let result = match (made, error) {
                        (true, _) => JobResult::Captured,
                        (false, Some(err)) => JobResult::Failed(err),
                        (false, None) => JobResult::Failed("no profile was made".to_owned()),
                    };
                    report.results.push((kind, result));
                }
                this.busy.fetch_and(!bits, Ordering::AcqRel);
                report.cpu = thread_cpu_time().saturating_sub(cpu_before);
                let done = done_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(done) = done {
                    done(report);
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(target: "holmes", error = %err, "cannot start a capture thread");
            self.busy.fetch_and(!bits, Ordering::AcqRel);
            let mut report = Report::default();
            for job in jobs {
                let error = format!("cannot start a capture thread: {err}");
                report
                    .results
                    .push((job.kind(), JobResult::Failed(error.clone())));
                let c = Captured {
                    kind: job.kind(),
                    started_unix_nanos: unix_nanos_now(),
                    duration: Duration::ZERO,
                    labels: BTreeMap::new(),
                    result: Err(error),
                    text: None,
                };
                // Nothing to send but the error, which the report holds already.
                let dump = cfg.dump.as_ref().filter(|_| local);
                let _ = deliver(cfg, dump, delivery, &self.symbols, event_id, &c);
            }
            let done = done_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(done) = done {
                done(report);
            }
        }
    }

    /// Runs one job, handing each profile to `sink` as soon as it is ready (the CPU
    /// pre-trigger profile goes out before the full-rate capture starts).
    fn capture(
        &self,
        cfg: &AgentConfig,
        runtimes: &[tokio::runtime::Handle],
        job: Job,
        sink: &mut dyn FnMut(Captured),
    ) {
        match job {
            Job::Cpu { duration } => self.capture_cpu(cfg, duration, sink),
            Job::CpuRecorded { window, phase } => self.capture_cpu_recorded(window, phase, sink),
            Job::Threads => sink(self.capture_threads()),
            Job::Heap => sink(heap::captured()),
            Job::Tasks => self.capture_tasks(runtimes, sink),
        }
    }

    /// The flight recorder's window before the trigger, then a full-rate capture of
    /// `duration`.
    fn capture_cpu(&self, cfg: &AgentConfig, duration: Duration, sink: &mut dyn FnMut(Captured)) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let lock = || recorder.lock().unwrap_or_else(|p| p.into_inner());
        let now_mono = cpu::now_ns();
        let now_unix = unix_nanos_now();
        let pre_span = cfg.flight_recorder_window;
        let pre_nanos = u64::try_from(pre_span.as_nanos()).unwrap_or(u64::MAX);
        self.drain();
        let pre = lock().window(now_mono.saturating_sub(pre_nanos));

        // The full-rate capture starts before the pre-trigger profile is encoded and
        // written, so that work does not push the end of the capture back (it ran first
        // and cost the complete profile about 0.5 s, measured); the capture thread's
        // own CPU while encoding is sampled like any other thread's.
        let started = Instant::now();
        let started_unix = unix_nanos_now();
        lock().begin_capture(cpu::now_ns());
        let rate = cpu::set_rate(cpu::CAPTURE_HZ);
        let pre_profile = self.encode_cpu(
            &pre,
            cpu::FLIGHT_HZ,
            now_unix.saturating_sub(pre_nanos),
            pre_span,
            "pre-trigger",
        );
        sink(pre_profile);
        self.sleep_unless_stopping(duration.saturating_sub(started.elapsed()));
        self.drain();
        let during = lock().end_capture();
        if let Err(err) = cpu::set_rate(cpu::FLIGHT_HZ) {
            tracing::warn!(target: "holmes", error = %err, "cannot restore the flight recorder rate");
        }
        let post_profile = match rate {
            Ok(()) => self.encode_cpu(
                &during,
                cpu::CAPTURE_HZ,
                started_unix,
                started.elapsed(),
                "post-trigger",
            ),
            Err(err) => Captured {
                kind: ProfileKind::Cpu,
                started_unix_nanos: started_unix,
                duration: started.elapsed(),
                labels: phase("post-trigger"),
                result: Err(err.to_string()),
                text: None,
            },
        };
        sink(post_profile);
    }

    fn encode_cpu(
        &self,
        stacks: &HashMap<Vec<usize>, cpu::Tally>,
        hz: u32,
        start_unix: u64,
        span: Duration,
        phase_name: &str,
    ) -> Captured {
        let period = 1_000_000_000 / i64::from(hz.max(1));
        let mut b = ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            period,
        );
        b.set_time(
            start_unix,
            u64::try_from(span.as_nanos()).unwrap_or(u64::MAX),
        );
        b.add_comment(&format!("holmes {phase_name} cpu profile at {hz} Hz"));
        let overflow = self.recorder.as_ref().map_or(0, |r| {
            r.lock().unwrap_or_else(|p| p.into_inner()).overflow()
        });
        b.add_comment(&format!(
            "holmes: {} samples lost to a full signal ring, {overflow} beyond the distinct-stack cap, {} of the agent's own threads left out (since start)",
            cpu::dropped(),
            cpu::own()
        ));
        for (stack, t) in stacks {
            b.add_sample(
                stack,
                &[
                    i64::try_from(t.samples).unwrap_or(i64::MAX),
                    i64::try_from(t.nanos).unwrap_or(i64::MAX),
                ],
                &[("phase", LabelValue::Str(phase_name))],
            );
        }
        Captured {
            kind: ProfileKind::Cpu,
            started_unix_nanos: start_unix,
            duration: span,
            labels: phase(phase_name),
            result: Ok(b),
            text: None,
        }
    }

    /// Every thread's stack, as pprof (`threads/count`, labelled by name and tid) plus text.
    fn capture_threads(&self) -> Captured {
        let started = Instant::now();
        let started_unix = unix_nanos_now();
        let stacks = match threads::capture_all(THREADS_DEADLINE) {
            Ok(s) => s,
            Err(err) => {
                return Captured {
                    kind: ProfileKind::Threads,
                    started_unix_nanos: started_unix,
                    duration: started.elapsed(),
                    labels: BTreeMap::new(),
                    result: Err(err.to_string()),
                    text: None,
                }
            }
        };
        let mut b = ProfileBuilder::new(&[("threads", "count")], ("threads", "count"), 1);
        b.set_time(
            started_unix,
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(0),
        );
        for t in &stacks {
            let tid = t.tid.to_string();
            let state = format!("{:?}", t.state);
            b.add_sample(
                &t.frames,
                &[1],
                &[
                    ("thread", LabelValue::Str(&t.name)),
                    ("tid", LabelValue::Str(&tid)),
                    ("state", LabelValue::Str(&state)),
                ],
            );
        }
        Captured {
            kind: ProfileKind::Threads,
            started_unix_nanos: started_unix,
            duration: started.elapsed(),
            labels: BTreeMap::new(),
            result: Ok(b),
            text: Some(Text::Threads(stacks)),
        }
    }
}

impl Captures {
    /// Every task of the registered runtimes, as pprof (`tasks/count`) plus text. When a
    /// runtime's dump times out (its workers all blocked) or is skipped (a multi-thread
    /// runtime with too many tasks to dump safely), the threads' stacks are captured as
    /// well.
    fn capture_tasks(&self, runtimes: &[tokio::runtime::Handle], sink: &mut dyn FnMut(Captured)) {
        let started = Instant::now();
        let started_unix = unix_nanos_now();
        let alive: usize = runtimes.iter().map(|h| h.metrics().num_alive_tasks()).sum();
        let deadline = TASKS_DEADLINE.saturating_add(
            TASKS_DEADLINE_PER_TASK.saturating_mul(u32::try_from(alive).unwrap_or(u32::MAX)),
        );
        let (result, text, blocked) = match tasks::capture(runtimes, deadline) {
            Ok(dump) => {
                let blocked = dump.failures.iter().any(tasks::TasksError::wants_threads);
                (Ok(dump.profile), Some(Text::Ready(dump.text)), blocked)
            }
            Err(err) => {
                let blocked = err.wants_threads();
                (Err(err.to_string()), None, blocked)
            }
        };
        sink(Captured {
            kind: ProfileKind::Tasks,
            started_unix_nanos: started_unix,
            duration: started.elapsed(),
            labels: BTreeMap::new(),
            result,
            text,
        });
        if blocked {
            sink(self.capture_threads());
        }
    }
}

/// The bit of [`Captures::busy`] that stands for `kind`.
fn kind_bit(kind: ProfileKind) -> u8 {
    match kind {
        ProfileKind::Cpu => 1,
        ProfileKind::Heap => 2,
        ProfileKind::Threads => 4,
        ProfileKind::Tasks => 8,
    }
}

fn phase(name: &str) -> BTreeMap<String, String> {
    [("phase".to_owned(), name.to_owned())].into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Captures {
        Captures {
            busy: AtomicU8::new(0),
            recorder: None,
            symbols: LocalSymbolizer::default(),
            running: Running::default(),
        }
    }

    #[test]
    fn one_capture_per_kind_but_kinds_run_side_by_side() {
        let c = idle();
        assert_eq!(c.claim("e1", &[ProfileKind::Cpu]), vec![ProfileKind::Cpu]);
        // A thread pile-up during a CPU profile still gets its thread dump.
        assert_eq!(
            c.claim("e2", &[ProfileKind::Threads, ProfileKind::Cpu]),
            vec![ProfileKind::Threads]
        );
        assert_eq!(
            c.claim("e3", &[ProfileKind::Cpu]),
            Vec::<ProfileKind>::new()
        );
        c.busy
            .fetch_and(!kind_bit(ProfileKind::Cpu), Ordering::AcqRel);
        assert_eq!(
            c.claim("e4", &[ProfileKind::Cpu, ProfileKind::Threads]),
            vec![ProfileKind::Cpu]
        );
    }
}
