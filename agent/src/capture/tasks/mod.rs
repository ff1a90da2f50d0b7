//! Tokio task dumps: what every task of the registered runtimes is waiting on, as a
//! `tasks/count` profile (one sample per task, its pending leaf future's stack, as code
//! addresses like every other profile) and a readable text that groups identical
//! stacks.
//!
//! `tokio::runtime::Handle::dump` (tokio ≥ 1.48) exists only with tokio's `taskdump`
//! feature (turned on by the agent's `taskdump` feature) and `--cfg tokio_unstable`, on
//! Linux (x86, x86_64, aarch64, s390x). Elsewhere [`capture`] answers
//! [`TasksError::Unavailable`].
//!
//! A dump runs on the runtime it dumps: it waits for every worker to reach a yield point,
//! pauses them all and re-polls each task in tracing mode. On a runtime whose workers are
//! all blocked it never completes, so the capture thread waits for it with a deadline.
//!
//! Multi-thread runtimes with more than [`MULTI_THREAD_MAX_TASKS`] tasks are not dumped:
//! tokio's multi-thread dump (1.54.1) can hang such a runtime for good. The worker leading
//! the dump moves every worker's run queue into one queue of 256 slots with
//! `Steal::steal_into`, which refuses to fill it past half; with more than about 170
//! runnable tasks queued (the dump itself wakes every task it traces, and a second,
//! unrequested trace can follow) its `while !steal.is_empty()` loop spins forever while
//! the other workers wait at a barrier. Reproduced here: 16 of 40 dumps of 500 idle tasks
//! on a 2-worker runtime (0 of 40 with 100 or 150 tasks, 0 of 15 current-thread dumps of
//! 5 000 tasks). With at most 64 alive tasks no queue can hold enough.

// `tokio_unstable` comes from RUSTFLAGS, as tokio itself expects; it is not a cfg cargo
// knows to check.
#![allow(unexpected_cfgs)]

use std::time::Duration;

/// Whether this build can dump tokio tasks.
pub(crate) const AVAILABLE: bool = cfg!(all(
    feature = "taskdump",
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
));

/// Why a build without task dumps captures none.
pub(crate) const UNAVAILABLE: &str = "tokio task dumps need the taskdump feature and \
     RUSTFLAGS=\"--cfg tokio_unstable\" (Linux x86_64 or aarch64)";

/// Multi-thread runtimes with more alive tasks than this are not dumped (see above).
pub(crate) const MULTI_THREAD_MAX_TASKS: usize = 64;

/// Why a task dump failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(dead_code)] // each build constructs only some of them
pub(crate) enum TasksError {
    /// This build has no task dumps.
    #[error("{}", UNAVAILABLE)]
    Unavailable,
    /// No runtime was registered with the agent.
    #[error("no tokio runtime is registered with the agent (HolmesBuilder::tokio_runtime, HolmesHandle::register_runtime)")]
    NoRuntimes,
    /// The runtime did not complete its dump in time.
    #[error(
        "task dump of runtime {runtime} timed out after {}: its workers may all be blocked; \
         see the threads profile",
        humantime::format_duration(*after)
    )]
    Timeout { runtime: usize, after: Duration },
    /// The runtime shut down before it ran the dump.
    #[error("runtime {runtime} shut down before its task dump ran")]
    ShutDown { runtime: usize },
    /// A multi-thread runtime with too many tasks to dump safely.
    #[error(
        "task dump of runtime {runtime} skipped: a tokio task dump can hang a multi-thread \
         runtime with more than {} tasks for good, and it has {tasks}; see the threads profile",
        MULTI_THREAD_MAX_TASKS
    )]
    Unsafe { runtime: usize, tasks: usize },
}

impl TasksError {
    /// Whether the threads' stacks should be captured instead: they show what a runtime
    /// that was not dumped is doing.
    pub(crate) fn wants_threads(&self) -> bool {
        matches!(self, TasksError::Timeout { .. } | TasksError::Unsafe { .. })
    }
}

/// A finished dump.
#[derive(Debug)]
#[allow(dead_code)] // only builds with task dumps make one
pub(crate) struct TaskDump {
    /// The profile, sample type `tasks/count`.
    pub(crate) profile: crate::capture::profile::ProfileBuilder,
    /// The readable rendering.
    pub(crate) text: String,
    /// Runtimes whose dump failed while others succeeded (also noted in the profile).
    pub(crate) failures: Vec<TasksError>,
}

#[cfg(all(
    feature = "taskdump",
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
))]
pub(crate) use dump::capture;

/// Without task dumps in the build: always [`TasksError::Unavailable`].
#[cfg(not(all(
    feature = "taskdump",
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
)))]
pub(crate) fn capture(
    _runtimes: &[tokio::runtime::Handle],
    _timeout: Duration,
) -> Result<TaskDump, TasksError> {
    Err(TasksError::Unavailable)
}

#[cfg(all(
    feature = "taskdump",
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
))]
mod dump;
