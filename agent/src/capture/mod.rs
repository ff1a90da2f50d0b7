//! Capture, the third stage: what the agent records when a rule fires or a capture is
//! requested, each one a standard gzip pprof.
//!
//! - [`cpu`]: `SIGPROF` sampling and the always-on flight recorder.
//! - [`threads`]: the stack of every OS thread, by signalling each one.
//! - [`heap`]: heap profiles, from jemalloc ([`jemalloc`], the `jemalloc` feature) or
//!   the sampling allocator.
//! - [`tasks`]: tokio task dumps of the registered runtimes (the `taskdump` feature).
//! - [`symbolize`]: addresses to functions, files and lines, from the debug info the
//!   objects carry; [`pprof`]: the profiles, encoded.
//! - [`requests`]: captures asked for by the host or the collector, waiting for the
//!   agent thread, and the collector's rate limit.
//! - [`plan`]: what a capture is asked to do per kind, and the report of what it did;
//!   [`recorded`]: CPU profiles of a past interval, from the flight recorder.
//!
//! [`Captures`] runs captures on short-lived `holmes-capture` threads, so the agent keeps
//! sampling meanwhile; at most one capture of each kind runs at a time, and kinds run
//! side by side (a thread dump does not wait for a 2 s CPU profile to finish). Each profile goes to the dump folder as
//! `<kind>.<event-id>.<timestamp>.pb.gz` and, with a collector, into the outbox as
//! chunks. A capture that fails is reported as a profile carrying the error.

pub(crate) mod cpu;
pub(crate) mod heap;
#[cfg(feature = "jemalloc")]
pub(crate) mod jemalloc;
pub(crate) mod plan;
pub(crate) mod pprof;
mod recorded;
pub(crate) mod requests;
pub(crate) mod symbolize;
pub(crate) mod tasks;
pub(crate) mod threads;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::{AgentBody, ProfileChunk, ProfileKind, MAX_CHUNK_BYTES};

use plan::{Job, JobResult, OnDone, Report};
use pprof::{LabelValue, ProfileBuilder};
use symbolize::Symbolizer;

use crate::clock::{thread_cpu_time, unix_nanos_now};
use crate::config::{AgentConfig, FLIGHT_RECORDER_HISTORY};
use crate::delivery::Delivery;
use crate::event_id;

/// Largest profile the agent ships; a bigger one is reported as a failed capture.
pub(crate) const MAX_PROFILE_BYTES: usize = 32 * 1024 * 1024;

/// How long thread stacks may take to answer.
pub(crate) const THREADS_DEADLINE: Duration = Duration::from_secs(2);

/// How long the registered runtimes' task dumps may take (all of them, together), plus
/// [`TASKS_DEADLINE_PER_TASK`] for each alive task: a dump re-polls every task.
pub(crate) const TASKS_DEADLINE: Duration = Duration::from_secs(5);
/// A dump takes about 25 µs per task in a debug build; twice that is allowed.
pub(crate) const TASKS_DEADLINE_PER_TASK: Duration = Duration::from_micros(50);

/// One finished capture, ready to be written and sent.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) kind: ProfileKind,
    pub(crate) started_unix_nanos: u64,
    pub(crate) duration: Duration,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) result: Result<Vec<u8>, String>,
    /// A readable rendering written next to the profile (thread dumps).
    pub(crate) text: Option<String>,
}

/// The capture machinery shared by the monitor and the capture threads.
#[derive(Debug)]
pub(crate) struct Captures {
    /// One bit per [`ProfileKind`] being captured right now.
    busy: AtomicU8,
    /// `None` when CPU profiling could not start (another profiler, unsupported).
    recorder: Option<Mutex<cpu::FlightRecorder>>,
    symbolizer: Mutex<Symbolizer>,
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
            symbolizer: Mutex::new(Symbolizer::new()),
        }
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

    /// Runs `jobs` for `event_id` on a capture thread (a tasks capture dumps
    /// `runtimes`), hands each profile to `delivery`, and calls `done` with what became
    /// of each. The kinds of exclusive jobs must have been claimed ([`Captures::claim`]);
    /// their claim is released when the thread ends. A job the collector skipped before
    /// it started is not run. If no thread can be started, each job is reported as a
    /// failed capture, so whoever waits for the planned profiles learns why.
    pub(crate) fn run(
        self: &Arc<Self>,
        cfg: &Arc<AgentConfig>,
        delivery: &Arc<Delivery>,
        runtimes: Vec<tokio::runtime::Handle>,
        event_id: &str,
        jobs: Vec<Job>,
        done: Option<OnDone>,
    ) {
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
        let (cfg2, delivery2) = (Arc::clone(cfg), Arc::clone(delivery));
        let id = event_id.to_owned();
        let planned = jobs.clone();
        // Handed back if the thread cannot start.
        let done_slot = Arc::new(Mutex::new(done));
        let done_thread = Arc::clone(&done_slot);
        let spawned = std::thread::Builder::new()
            .name("holmes-capture".to_owned())
            .spawn(move || {
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
                        match &c.result {
                            Ok(bytes) => {
                                made = true;
                                report.bytes += bytes.len() as u64;
                            }
                            Err(err) => {
                                error.get_or_insert_with(|| err.clone());
                            }
                        }
                        deliver(&cfg2, &delivery2, &id, c)
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
                deliver(cfg, delivery, event_id, c);
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
            Job::Heap => sink(heap::captured(&self.symbolizer)),
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

        // The full-rate capture starts before the pre-trigger profile is symbolized and
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
        std::thread::sleep(duration.saturating_sub(started.elapsed()));
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
            "holmes: {} samples lost to a full signal ring, {overflow} beyond the distinct-stack cap (since start)",
            cpu::dropped()
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
        let bytes = {
            let mut sym = self.symbolizer.lock().unwrap_or_else(|p| p.into_inner());
            b.encode_gzip(&mut sym)
        };
        Captured {
            kind: ProfileKind::Cpu,
            started_unix_nanos: start_unix,
            duration: span,
            labels: phase(phase_name),
            result: Ok(bytes),
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
        let mut sym = self.symbolizer.lock().unwrap_or_else(|p| p.into_inner());
        let text = threads::render_text(&stacks, |addr, leaf| {
            sym.frames(addr, leaf)
                .iter()
                .map(|f| {
                    if f.file.is_empty() {
                        f.function.clone()
                    } else {
                        format!("{} ({}:{})", f.function, f.file, f.line)
                    }
                })
                .collect()
        });
        let bytes = b.encode_gzip(&mut sym);
        Captured {
            kind: ProfileKind::Threads,
            started_unix_nanos: started_unix,
            duration: started.elapsed(),
            labels: BTreeMap::new(),
            result: Ok(bytes),
            text: Some(text),
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
                (Ok(dump.pprof), Some(dump.text), blocked)
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

/// `20261126T031200.123Z`: sortable, and free of characters file systems dislike.
fn compact_time(unix_nanos: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(unix_nanos);
    humantime::format_rfc3339_millis(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// Writes a capture to the dump folder and queues it for the collector.
fn deliver(cfg: &AgentConfig, delivery: &Delivery, event_id: &str, mut c: Captured) {
    let profile_id = event_id::new();
    if let Ok(bytes) = &c.result {
        if bytes.len() > MAX_PROFILE_BYTES {
            c.result = Err(format!(
                "the profile is {} bytes, over the {MAX_PROFILE_BYTES}-byte cap",
                bytes.len()
            ));
        }
    }
    match &c.result {
        Ok(bytes) => {
            tracing::info!(target: "holmes", event_id, kind = c.kind.as_str(), bytes = bytes.len(), labels = ?c.labels, "captured")
        }
        Err(err) => {
            tracing::warn!(target: "holmes", event_id, kind = c.kind.as_str(), error = %err, "capture failed")
        }
    }
    if let Some(dump) = &cfg.dump {
        let stem = format!(
            "{}.{}.{}",
            c.kind.as_str(),
            event_id,
            compact_time(c.started_unix_nanos)
        );
        if let Ok(bytes) = &c.result {
            match dump.write_file(&format!("{stem}.pb.gz"), bytes) {
                Ok(path) => {
                    tracing::info!(target: "holmes", path = %path.display(), "profile written")
                }
                Err(err) => {
                    tracing::warn!(target: "holmes", error = %err, "cannot write the profile")
                }
            }
        }
        if let Some(text) = &c.text {
            if let Err(err) = dump.write_file(&format!("{stem}.txt"), text.as_bytes()) {
                tracing::warn!(target: "holmes", error = %err, "cannot write the thread dump");
            }
        }
    }
    if cfg.collector.is_none() {
        return;
    }
    let (data, error) = match c.result {
        Ok(bytes) => (bytes, None),
        Err(err) => (Vec::new(), Some(err)),
    };
    let total = data.len();
    let pieces: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(MAX_CHUNK_BYTES).collect()
    };
    let count = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    // Queued together: their sequence numbers are consecutive, so the collector sees a
    // profile's chunks together, and a full outbox drops the whole profile or none of it.
    let mut chunks = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.into_iter().enumerate() {
        chunks.push(AgentBody::ProfileChunk(ProfileChunk {
            profile_id: profile_id.clone(),
            event_id: event_id.to_owned(),
            kind: c.kind,
            chunk_index: u32::try_from(i).unwrap_or(u32::MAX),
            chunk_count: count,
            total_bytes: total as u64,
            data: piece.to_vec(),
            started_unix_nanos: c.started_unix_nanos,
            duration: c.duration,
            error: error.clone(),
            labels: c.labels.clone(),
            format: holmes_proto::ProfileFormat::PprofGzip,
        }));
    }
    delivery.enqueue_group(chunks);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Captures {
        Captures {
            busy: AtomicU8::new(0),
            recorder: None,
            symbolizer: Mutex::new(Symbolizer::new()),
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

    #[test]
    fn file_times_are_compact() {
        assert_eq!(compact_time(1_500_000_000), "19700101T000001.500Z");
    }
}
