//! The task dump itself, in builds that have tokio's `Handle::dump`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::runtime::dump::{Backtrace, Dump};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::{TaskDump, TasksError, MULTI_THREAD_MAX_TASKS};
use holmes_symbolize::{strip_hash, Frame};

use crate::capture::profile::{LabelValue, ProfileBuilder};
use crate::clock::unix_nanos_now;

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
    /// One stack per pending leaf future, innermost frame first, as tokio named them
    /// (for the text).
    leaves: Vec<Vec<Frame>>,
    /// The first leaf's code addresses (return addresses, innermost first): the task's
    /// sample in the profile. Empty when it has none (then `leaves[0]` is used).
    addresses: Vec<usize>,
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
            let (leaves, addresses) = if resolving.elapsed() < RESOLVE_BUDGET {
                let backtraces = task.trace().resolve_backtraces();
                let addresses = backtraces
                    .first()
                    .map(|b| b.frames().map(|f| f.ip() as usize).collect())
                    .unwrap_or_default();
                (backtraces.iter().map(frames_of).collect(), addresses)
            } else {
                unresolved += 1;
                (
                    vec![vec![placeholder(
                        "(not symbolized: over the holmes time budget)",
                    )]],
                    Vec::new(),
                )
            };
            tasks.push(TaskStack {
                runtime: *runtime,
                id: task.id().to_string(),
                leaves,
                addresses,
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

    let profile = build(&tasks, &notes, with_ids, started_unix, started.elapsed());
    let text = render_text(&tasks, &notes);
    Ok(TaskDump {
        profile,
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

fn build(
    tasks: &[TaskStack],
    notes: &[String],
    with_ids: bool,
    started_unix: u64,
    took: Duration,
) -> ProfileBuilder {
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
        if task.addresses.is_empty() {
            b.add_symbolic_sample(stack, &[1], &labels);
        } else {
            b.add_return_addresses(&task.addresses, &[1], &labels);
        }
    }
    b
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
mod tests;
