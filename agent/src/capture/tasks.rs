//! Tokio task dumps: what every task of the registered runtimes is waiting on, as a
//! `tasks/count` pprof profile (one sample per task, its pending leaf future's stack) and
//! a readable text that groups identical stacks.
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
    /// Gzipped pprof, sample type `tasks/count`.
    pub(crate) pprof: Vec<u8>,
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
pub(crate) use imp::capture;

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
mod imp {
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use tokio::runtime::dump::{Backtrace, Dump};
    use tokio::runtime::{Handle, RuntimeFlavor};

    use super::{TaskDump, TasksError, MULTI_THREAD_MAX_TASKS};
    use crate::pprof::{Frame, LabelValue, ProfileBuilder, Symbolizer};
    use crate::sampler::unix_nanos_now;

    /// Most tasks put in one dump; the rest are counted in a comment.
    const MAX_TASKS: usize = 100_000;
    /// Up to this many tasks each sample carries its task id; beyond, samples with
    /// identical stacks merge (a label per task would keep 100 000 samples apart).
    const MAX_TASK_ID_LABELS: usize = 10_000;
    /// How long resolving stacks may take; tasks beyond it keep a placeholder frame
    /// (debug builds resolve about 4 000 tasks a second, release builds more).
    const RESOLVE_BUDGET: Duration = Duration::from_secs(20);

    /// Most groups of identical stacks written out in the text.
    const MAX_TEXT_GROUPS: usize = 1_000;
    /// Most task ids listed per group in the text.
    const MAX_TEXT_IDS: usize = 16;

    /// One task, resolved.
    struct TaskStack {
        runtime: usize,
        id: String,
        /// One stack per pending leaf future, innermost frame first; the first one is the
        /// task's sample in the profile.
        leaves: Vec<Vec<Frame>>,
    }

    /// Dumps every task of `runtimes`: all dumps start at once and must all be done within
    /// `timeout`. Runtimes that fail (or are multi-thread ones with too many tasks to dump
    /// safely) while others succeed are noted in the profile and in
    /// [`TaskDump::failures`]; when all fail, the first failure is the error.
    ///
    /// Runs on a plain thread (not a runtime's): it blocks on a channel meanwhile.
    pub(crate) fn capture(runtimes: &[Handle], timeout: Duration) -> Result<TaskDump, TasksError> {
        if runtimes.is_empty() {
            return Err(TasksError::NoRuntimes);
        }
        let started = Instant::now();
        let started_unix = unix_nanos_now();
        let deadline = started.checked_add(timeout);
        let mut failures = Vec::new();
        let mut pending = Vec::new();
        for (runtime, handle) in runtimes.iter().enumerate() {
            if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
                let tasks = handle.metrics().num_alive_tasks();
                if tasks > MULTI_THREAD_MAX_TASKS {
                    failures.push(TasksError::Unsafe { runtime, tasks });
                    continue;
                }
            }
            // `Handle::dump` must be awaited on the runtime it dumps (a current-thread
            // runtime only answers from inside itself); the dumping task leaves its own id
            // out.
            let (tx, rx) = mpsc::sync_channel::<(Option<tokio::task::Id>, Dump)>(1);
            let dumped = handle.clone();
            let join = handle.spawn(async move {
                let me = tokio::task::try_id();
                let dump = dumped.dump().await;
                // The capture thread may have given up waiting: nothing to do then.
                let _ = tx.send((me, dump));
            });
            pending.push((runtime, rx, join));
        }

        let mut dumps = Vec::new();
        for (runtime, rx, join) in pending {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(left) {
                Ok((me, dump)) => dumps.push((runtime, me, dump)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Cancels the dump if the runtime ever gets to it.
                    join.abort();
                    failures.push(TasksError::Timeout {
                        runtime,
                        after: timeout,
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    failures.push(TasksError::ShutDown { runtime });
                }
            }
        }
        if dumps.is_empty() {
            return Err(failures
                .into_iter()
                .next()
                .unwrap_or(TasksError::NoRuntimes));
        }
        let paused = started.elapsed();

        // Resolving debuginfo is the slow part; it runs here, not on the runtimes.
        let resolving = Instant::now();
        let mut tasks = Vec::new();
        let mut beyond_cap = 0usize;
        let mut unresolved = 0usize;
        for (runtime, me, dump) in &dumps {
            for task in dump.tasks().iter() {
                if Some(task.id()) == *me {
                    continue;
                }
                if tasks.len() >= MAX_TASKS {
                    beyond_cap += 1;
                    continue;
                }
                let leaves = if resolving.elapsed() < RESOLVE_BUDGET {
                    task.trace()
                        .resolve_backtraces()
                        .iter()
                        .map(frames_of)
                        .collect()
                } else {
                    unresolved += 1;
                    vec![vec![placeholder(
                        "(not symbolized: over the holmes time budget)",
                    )]]
                };
                tasks.push(TaskStack {
                    runtime: *runtime,
                    id: task.id().to_string(),
                    leaves,
                });
            }
        }
        drop(dumps);

        let mut notes = vec![format!(
            "holmes tokio task dump: {} tasks of {} runtimes; dumps done in {paused:?}, resolved in {:?}",
            tasks.len(),
            runtimes.len(),
            started.elapsed().saturating_sub(paused)
        )];
        if unresolved > 0 {
            notes.push(format!(
                "holmes: {unresolved} tasks not symbolized within {RESOLVE_BUDGET:?}"
            ));
        }
        if beyond_cap > 0 {
            notes.push(format!(
                "holmes: {beyond_cap} tasks beyond the {MAX_TASKS}-task cap are not included"
            ));
        }
        let with_ids = tasks.len() <= MAX_TASK_ID_LABELS;
        if !with_ids {
            notes.push(format!(
                "holmes: more than {MAX_TASK_ID_LABELS} tasks, so samples carry no task_id label"
            ));
        }
        notes.extend(failures.iter().map(|f| format!("holmes: {f}")));

        let pprof = encode(&tasks, &notes, with_ids, started_unix, started.elapsed());
        let text = render_text(&tasks, &notes);
        Ok(TaskDump {
            pprof,
            text,
            failures,
        })
    }

    /// A resolved backtrace as symbolic frames, innermost first, inlined frames expanded.
    fn frames_of(backtrace: &Backtrace) -> Vec<Frame> {
        let mut frames = Vec::new();
        for frame in backtrace.frames() {
            let address = frame.ip() as usize;
            let before = frames.len();
            for symbol in frame.symbols() {
                let function = symbol
                    .name_demangled()
                    .map(strip_hash)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned);
                let file = symbol
                    .filename()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if function.is_none() && file.is_empty() {
                    continue;
                }
                frames.push(Frame {
                    function: function.unwrap_or_else(|| format!("{address:#x}")),
                    file,
                    line: symbol.lineno().unwrap_or(0),
                });
            }
            if frames.len() == before {
                frames.push(Frame {
                    function: format!("{address:#x}"),
                    file: String::new(),
                    line: 0,
                });
            }
        }
        frames
    }

    /// `foo::bar::h0123456789abcdef` → `foo::bar`.
    fn strip_hash(name: &str) -> &str {
        if let Some(pos) = name.rfind("::h") {
            let hash = name.get(pos + 3..).unwrap_or("");
            if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return name.get(..pos).unwrap_or(name);
            }
        }
        name
    }

    /// A frame standing for what is not known.
    fn placeholder(what: &str) -> Frame {
        Frame {
            function: what.to_owned(),
            file: String::new(),
            line: 0,
        }
    }

    /// The stack shown for a task that waits on no tokio leaf future (a future tokio
    /// cannot trace, such as another library's channel).
    fn untraced() -> Vec<Frame> {
        vec![placeholder(
            "(no tokio leaf future: pending on a future tokio cannot trace)",
        )]
    }

    fn encode(
        tasks: &[TaskStack],
        notes: &[String],
        with_ids: bool,
        started_unix: u64,
        took: Duration,
    ) -> Vec<u8> {
        let mut b = ProfileBuilder::new(&[("tasks", "count")], ("tasks", "count"), 1);
        b.set_time(
            started_unix,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
        for note in notes {
            b.add_comment(note);
        }
        b.add_comment(
            "holmes: each task counts once, at its first pending leaf future; \
             the label `leaves` counts the futures a task waits on at once (join!, select!)",
        );
        let fallback = untraced();
        for task in tasks {
            let stack = task.leaves.first().unwrap_or(&fallback);
            let runtime = task.runtime.to_string();
            let leaves = i64::try_from(task.leaves.len()).unwrap_or(i64::MAX);
            let mut labels = vec![("runtime", LabelValue::Str(&runtime))];
            if with_ids {
                labels.push(("task_id", LabelValue::Str(&task.id)));
            }
            if leaves > 1 {
                labels.push(("leaves", LabelValue::Num(leaves, "")));
            }
            b.add_symbolic_sample(stack, &[1], &labels);
        }
        // Symbolic stacks need no address lookups.
        b.encode_gzip(&mut Symbolizer::new())
    }

    /// Tasks of one runtime with identical stacks.
    struct Group<'a> {
        runtime: usize,
        leaves: &'a [Vec<Frame>],
        ids: Vec<&'a str>,
    }

    /// Tasks grouped by runtime and identical stacks (all leaves), biggest group first.
    fn render_text(tasks: &[TaskStack], notes: &[String]) -> String {
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut index: HashMap<(usize, &[Vec<Frame>]), usize> = HashMap::new();
        for task in tasks {
            let key = (task.runtime, task.leaves.as_slice());
            match index.get(&key).and_then(|&i| groups.get_mut(i)) {
                Some(group) => group.ids.push(&task.id),
                None => {
                    index.insert(key, groups.len());
                    groups.push(Group {
                        runtime: task.runtime,
                        leaves: &task.leaves,
                        ids: vec![&task.id],
                    });
                }
            }
        }
        groups.sort_by(|a, b| {
            b.ids
                .len()
                .cmp(&a.ids.len())
                .then(a.runtime.cmp(&b.runtime))
        });

        let mut out = String::new();
        // Writing to a String cannot fail.
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
        for Group {
            runtime,
            leaves,
            ids,
        } in groups.iter().take(MAX_TEXT_GROUPS)
        {
            let shown: Vec<&str> = ids.iter().take(MAX_TEXT_IDS).copied().collect();
            let more = ids.len().saturating_sub(shown.len());
            let _ = write!(
                out,
                "\nruntime {runtime}: {} task{} (id {}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                shown.join(", ")
            );
            if more > 0 {
                let _ = write!(out, ", … {more} more");
            }
            let _ = writeln!(out, ")");
            if leaves.is_empty() {
                write_stack(&mut out, &untraced());
            }
            for (n, stack) in leaves.iter().enumerate() {
                if leaves.len() > 1 {
                    let _ = writeln!(out, "  leaf future {} of {}:", n + 1, leaves.len());
                }
                write_stack(&mut out, stack);
            }
        }
        if groups.len() > MAX_TEXT_GROUPS {
            let _ = writeln!(
                out,
                "\n… {} more groups of tasks (see the profile)",
                groups.len() - MAX_TEXT_GROUPS
            );
        }
        out
    }

    fn write_stack(out: &mut String, frames: &[Frame]) {
        for (i, f) in frames.iter().enumerate() {
            if f.file.is_empty() {
                let _ = writeln!(out, "  #{i} {}", f.function);
            } else {
                let _ = writeln!(out, "  #{i} {} ({}:{})", f.function, f.file, f.line);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::pprof::decode;

        #[inline(never)]
        async fn parked_on_a_unit_test_channel(mut rx: tokio::sync::mpsc::Receiver<()>) {
            let _ = rx.recv().await;
        }

        #[test]
        fn a_dump_has_one_sample_per_task_and_names_the_await_point() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            let mut senders = Vec::new();
            for _ in 0..20 {
                let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
                senders.push(tx);
                rt.spawn(parked_on_a_unit_test_channel(rx));
            }
            std::thread::sleep(Duration::from_millis(100));
            let dump = capture(&[rt.handle().clone()], Duration::from_secs(10)).unwrap();
            assert!(dump.failures.is_empty());
            let p = decode(&dump.pprof).unwrap();
            assert_eq!(p.sample_types, [("tasks".to_owned(), "count".to_owned())]);
            assert_eq!(p.total("tasks"), 20, "the dumping task is left out");
            let parked = p
                .samples
                .iter()
                .filter(|s| {
                    s.stack
                        .iter()
                        .any(|f| f.contains("parked_on_a_unit_test_channel"))
                })
                .count();
            assert_eq!(parked, 20, "{:?}", p.samples.first());
            assert!(p.samples.iter().all(|s| s.label("task_id").is_some()));
            assert!(p.samples.iter().all(|s| s.label("runtime") == Some("0")));
            assert!(
                dump.text.contains("runtime 0: 20 tasks"),
                "identical stacks are grouped:\n{}",
                dump.text
            );
            assert!(dump.text.contains("parked_on_a_unit_test_channel"));
            drop(senders);
            rt.shutdown_timeout(Duration::from_secs(1));
        }

        #[test]
        fn a_runtime_whose_workers_are_all_blocked_times_out() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
            // Blocks both workers until dropped (also when an assertion fails, so the
            // runtime's drop does not wait for them forever).
            let (release, released) = std::sync::mpsc::channel::<()>();
            let released = std::sync::Arc::new(std::sync::Mutex::new(released));
            for _ in 0..2 {
                let started = started_tx.clone();
                let released = std::sync::Arc::clone(&released);
                rt.spawn(async move {
                    started.send(()).unwrap();
                    let _ = released.lock().map(|rx| rx.recv());
                });
            }
            for _ in 0..2 {
                started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            }
            let t = Instant::now();
            let err = capture(&[rt.handle().clone()], Duration::from_millis(300)).unwrap_err();
            let waited = t.elapsed();
            assert_eq!(
                err.to_string(),
                "task dump of runtime 0 timed out after 300ms: its workers may all be blocked; \
                 see the threads profile"
            );
            assert!(waited < Duration::from_secs(2), "gave up in {waited:?}");
            drop(release);
            rt.shutdown_timeout(Duration::from_secs(1));
        }

        /// A current-thread runtime driven by a thread of its own until `stop` is sent
        /// or dropped.
        fn driven_current_thread() -> (Handle, tokio::sync::oneshot::Sender<()>) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let handle = rt.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                })
            });
            (handle, stop)
        }

        #[test]
        fn a_busy_multi_thread_runtime_is_not_dumped_but_a_current_thread_one_is() {
            let busy = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            let (driven, _stop) = driven_current_thread();
            let mut senders = Vec::new();
            for _ in 0..100 {
                let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
                senders.push(tx);
                busy.spawn(parked_on_a_unit_test_channel(rx));
            }
            for _ in 0..300 {
                let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
                senders.push(tx);
                driven.spawn(parked_on_a_unit_test_channel(rx));
            }
            std::thread::sleep(Duration::from_millis(100));

            let t = Instant::now();
            let err = capture(&[busy.handle().clone()], Duration::from_secs(10)).unwrap_err();
            assert!(t.elapsed() < Duration::from_secs(1), "refused at once");
            assert!(
                matches!(err, TasksError::Unsafe { runtime: 0, tasks } if tasks >= 100),
                "{err:?}"
            );
            assert!(err.wants_threads());
            assert!(err.to_string().starts_with(
                "task dump of runtime 0 skipped: a tokio task dump can hang a multi-thread \
                 runtime with more than 64 tasks for good, and it has 10"
            ));

            let dump = capture(
                &[busy.handle().clone(), driven.clone()],
                Duration::from_secs(10),
            )
            .unwrap();
            assert!(matches!(
                dump.failures.as_slice(),
                [TasksError::Unsafe { runtime: 0, .. }]
            ));
            let p = decode(&dump.pprof).unwrap();
            assert_eq!(p.total("tasks"), 300);
            assert!(p.samples.iter().all(|s| s.label("runtime") == Some("1")));
            assert!(p.comments.iter().any(|c| c.contains("runtime 0 skipped")));
            assert!(dump.text.contains("runtime 1: 300 tasks"), "{}", dump.text);

            // The refused runtime was left alone and still runs tasks.
            let (tx, rx) = std::sync::mpsc::channel();
            busy.spawn(async move { tx.send(()).unwrap() });
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
            drop(senders);
            busy.shutdown_background();
        }

        #[test]
        fn no_runtimes_and_a_shut_down_runtime_are_errors() {
            assert_eq!(
                capture(&[], Duration::from_secs(1)).unwrap_err(),
                TasksError::NoRuntimes
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let handle = rt.handle().clone();
            drop(rt);
            assert_eq!(
                capture(&[handle], Duration::from_secs(1)).unwrap_err(),
                TasksError::ShutDown { runtime: 0 }
            );
        }

        #[test]
        fn hashes_are_stripped() {
            assert_eq!(strip_hash("a::b::h0123456789abcdef"), "a::b");
            assert_eq!(strip_hash("a::hb"), "a::hb");
        }
    }
}
