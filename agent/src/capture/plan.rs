//! What a capture is asked to do, kind by kind ([`Job`]), and what became of each kind
//! ([`Report`]), for whoever waits for it: the answer to a collector's capture request,
//! a baseline's cost.

use std::time::Duration;

use holmes_proto::{ProfileKind, TimeWindow};

/// One kind to capture, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// The flight recorder's pre-trigger window, then a full-rate profile this long.
    Cpu {
        /// Length of the full-rate profile.
        duration: Duration,
    },
    /// The flight recorder's samples over a wall-clock interval (everything it holds
    /// when `None`), labelled with `phase`; no new sampling.
    CpuRecorded {
        /// The interval wanted.
        window: Option<TimeWindow>,
        /// The profile's `phase` label.
        phase: &'static str,
    },
    /// A heap profile.
    Heap,
    /// Every thread's stack.
    Threads,
    /// The registered runtimes' task dump.
    Tasks,
}

impl Job {
    /// The kind of profile it makes.
    pub(crate) fn kind(self) -> ProfileKind {
        match self {
            Job::Cpu { .. } | Job::CpuRecorded { .. } => ProfileKind::Cpu,
            Job::Heap => ProfileKind::Heap,
            Job::Threads => ProfileKind::Threads,
            Job::Tasks => ProfileKind::Tasks,
        }
    }

    /// What the collector's rate limit counts it as: a CPU window from the flight
    /// recorder costs no sampling and counts apart from a new CPU profile.
    pub(crate) fn limit_key(self) -> &'static str {
        match self {
            Job::CpuRecorded { .. } => "cpu window",
            other => other.kind().as_str(),
        }
    }

    /// Whether it must be the only capture of its kind running: a recorded CPU window
    /// only reads the flight recorder, so it runs beside a full-rate CPU capture.
    pub(crate) fn exclusive(self) -> bool {
        !matches!(self, Job::CpuRecorded { .. })
    }

    /// The usual job for `kind`: CPU is the pre-trigger window plus a full-rate profile
    /// of `cpu_duration`.
    pub(crate) fn of(kind: ProfileKind, cpu_duration: Duration) -> Job {
        match kind {
            ProfileKind::Cpu => Job::Cpu {
                duration: cpu_duration,
            },
            ProfileKind::Heap => Job::Heap,
            ProfileKind::Threads => Job::Threads,
            ProfileKind::Tasks => Job::Tasks,
        }
    }
}

/// What became of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobResult {
    /// At least one profile of it was made.
    Captured,
    /// It ran and made no profile, for this reason.
    Failed(String),
    /// The collector asked not to send it before it started.
    Skipped,
}

/// What a capture thread did, handed to whoever waits for it once every job is done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// Each job's kind and result, in order.
    pub(crate) results: Vec<(ProfileKind, JobResult)>,
    /// CPU time the capture thread used.
    pub(crate) cpu: Duration,
    /// Bytes of the profiles it made.
    pub(crate) bytes: u64,
}

/// Called on the capture thread with its report.
pub(crate) type OnDone = Box<dyn FnOnce(Report) + Send>;
