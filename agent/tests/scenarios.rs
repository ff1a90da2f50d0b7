//! The scenario examples (agent/examples), each run as its own process with the agent
//! configured as a user would (defaults, 1 s interval): trigger the bug, wait for the
//! profile on disk, and check with `go tool pprof` that it names the culprit. Prints the
//! seconds from onset to profile on disk. Scenarios run one at a time, so the timings
//! are not skewed by each other.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod support;
use support::{go_available, pprof};

static SERIAL: Mutex<()> = Mutex::new(());

/// The function with the most flat (or, with -cum, cumulative) value in `-top` output,
/// skipping runtime and std frames when `user_only`.
fn top_functions(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .collect()
}

/// Whether a pprof function name is `culprit`, with or without its module path (line
/// tables alone give inlined frames without their path).
fn is(function: &str, culprit: &str) -> bool {
    function == culprit || function.ends_with(&format!("::{culprit}"))
}

fn first_is(top: &str, culprit: &str) -> bool {
    top_functions(top).first().is_some_and(|f| is(f, culprit))
}

fn any_is(top: &str, culprit: &str) -> bool {
    top_functions(top).iter().any(|f| is(f, culprit))
}

/// The example binary: from `HOLMES_SCENARIO_BIN_DIR` (the latency benchmark points it
/// at optimized builds), else next to this test binary.
fn example(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("HOLMES_SCENARIO_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

/// A running scenario process.
struct Scenario {
    child: Child,
    port: u16,
    dump: tempfile::TempDir,
}

impl Scenario {
    fn start(name: &str, env: &[(&str, &str)]) -> Scenario {
        let dump = tempfile::tempdir().unwrap();
        let mut child = Command::new(example(name))
            .env("HOLMES_DUMP_DIR", dump.path())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("example {name} runs: {e} (cargo test --workspace builds the examples; alone, run cargo build -p holmes-agent --examples first)")
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut port = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(p) = line.strip_prefix("listening on http://127.0.0.1:") {
                port = p.trim().parse().unwrap();
                break;
            }
        }
        // The example prints "warm" before it listens.
        assert!(port > 0, "{name} listens");
        Scenario { child, port, dump }
    }

    /// Starts the bug; returns the onset instant.
    fn trigger(&self) -> Instant {
        let onset = Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(b"GET /bug HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.contains("bug started"), "{reply}");
        onset
    }

    /// Waits for a profile whose file name starts with `kind.` and for which `accept`
    /// holds; returns it and the time since `onset`.
    fn profile(
        &self,
        kind: &str,
        onset: Instant,
        timeout: Duration,
        accept: impl Fn(&Path) -> bool,
    ) -> (PathBuf, Duration) {
        let deadline = onset + timeout;
        loop {
            let mut found: Vec<PathBuf> = std::fs::read_dir(self.dump.path())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    n.starts_with(&format!("{kind}.")) && n.ends_with(".pb.gz")
                })
                .collect();
            found.sort();
            if let Some(p) = found.into_iter().find(|p| accept(p)) {
                return (p, onset.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} profile within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn report(scenario: &str, latency: Duration) {
    eprintln!(
        "scenario {scenario}: onset -> profile on disk {:.2} s",
        latency.as_secs_f64()
    );
}

#[test]
fn scenario_6_cpu_burn_is_caught_by_the_pre_trigger_profile() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let s = Scenario::start("cpu_burn", &[]);
    let onset = s.trigger();
    let (pre, latency) = s.profile("cpu", onset, Duration::from_secs(15), |p| {
        pprof(&["-raw"], p).contains("pre-trigger")
    });
    report("cpu burn (pre-trigger profile)", latency);
    let top = pprof(&["-top", "-nodecount=5"], &pre);
    assert!(first_is(&top, "render_price_table"), "{top}");
    let (post, complete) = s.profile("cpu", onset, Duration::from_secs(15), |p| {
        pprof(&["-raw"], p).contains("post-trigger")
    });
    report("cpu burn (complete 2 s profile)", complete);
    // The burst is usually over when the rule fires; then only the pre-trigger profile
    // has it (no assertion: a burst that straddles a sample leaves its tail in the
    // post-trigger profile).
    let after = pprof(&["-top", "-nodecount=5"], &post);
    eprintln!(
        "scenario cpu burn: the post-trigger profile {} the culprit",
        if any_is(&after, "render_price_table") {
            "has the tail of"
        } else {
            "missed"
        }
    );
}

#[test]
fn scenario_7_thread_explosion_names_the_blocking_call() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let s = Scenario::start("thread_explosion", &[]);
    let onset = s.trigger();
    let (dump, latency) = s.profile("threads", onset, Duration::from_secs(15), |_| true);
    report("thread explosion", latency);
    let top = pprof(&["-top", "-cum", "-nodecount=60"], &dump);
    assert!(any_is(&top, "call_the_slow_inventory_service"), "{top}");
    // The pile-up shows: the dump is taken on the sample that saw the thread rule's
    // `min` (10 threads, the process's own few among them) exceeded, so at least a few
    // of the burst's 100 threads wait in the call by then. On an idle machine all 100
    // do; on a loaded one the burst may still be creating them (a thread in `mmap`).
    let text_path = dump.with_extension("").with_extension("txt");
    let text = std::fs::read_to_string(&text_path).unwrap();
    let waiting = text.matches("call_the_slow_inventory_service").count();
    assert!(waiting >= 5, "{waiting} threads in the call:\n{text}");
    eprintln!("thread explosion: {waiting} threads in the blocking call in the dump");
}

#[test]
fn scenario_2_deadlock_pile_up_names_the_lock_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let s = Scenario::start("deadlock", &[]);
    let onset = s.trigger();
    let (dump, latency) = s.profile("threads", onset, Duration::from_secs(15), |_| true);
    report("deadlock pile-up", latency);
    let traces = pprof(&["-traces"], &dump);
    let blocked = traces
        .split("-----------+-------------------------------------------------------")
        .filter(|t| t.contains("transfer_between_accounts"))
        .count();
    assert!(blocked >= 1, "{traces}");
    let top = pprof(&["-top", "-cum", "-nodecount=60"], &dump);
    assert!(any_is(&top, "transfer_between_accounts"), "{top}");
}

#[test]
fn scenario_1_alloc_spike_names_the_allocating_function() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let s = Scenario::start("alloc_spike", &[]);
    let onset = s.trigger();
    let (heap, latency) = s.profile("heap", onset, Duration::from_secs(30), |_| true);
    report("1 GiB allocation spike", latency);
    let top = pprof(
        &["-top", "-sample_index=inuse_space", "-nodecount=5"],
        &heap,
    );
    assert!(first_is(&top, "build_the_full_export"), "{top}");
}

#[test]
fn scenario_5_alloc_hot_path_shows_in_the_cpu_profile() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let s = Scenario::start("alloc_hot_path", &[]);
    let onset = s.trigger();
    let (cpu, latency) = s.profile("cpu", onset, Duration::from_secs(20), |p| {
        pprof(&["-raw"], p).contains("post-trigger")
    });
    report("allocation-heavy hot path (complete cpu profile)", latency);
    // By cumulative time, the first function of ours below the thread entry is the culprit.
    let top = pprof(&["-top", "-cum", "-nodecount=30"], &cpu);
    // The culprit carries most of the time: allocation and formatting below it.
    let culprit_cum = top
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|f| is(f, "format_report_rows"))
        })
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        culprit_cum >= 50.0,
        "format_report_rows holds {culprit_cum}% cumulative:\n{top}"
    );
}

/// Where a real memory limit can be made: a cgroup v1 memory group (root on this
/// machine). Returns the group's directory.
fn memory_cgroup(limit_bytes: u64) -> Option<PathBuf> {
    let dir = PathBuf::from(format!(
        "/sys/fs/cgroup/memory/holmes-test-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("memory.limit_in_bytes"), limit_bytes.to_string()).ok()?;
    Some(dir)
}

#[test]
fn scenario_8_oom_kill_leaves_a_heap_profile_on_disk() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    const LIMIT: u64 = 400 << 20;
    let cgroup = memory_cgroup(LIMIT);
    let dump = tempfile::tempdir().unwrap();
    let exe = example("oom");
    // Start the process inside the group, so the agent sees the limit from the start.
    let mut cmd = match &cgroup {
        Some(dir) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2""#)
                .arg("sh")
                .arg(dir)
                .arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let mut child = cmd
        .env("HOLMES_DUMP_DIR", dump.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(p) = line.unwrap().strip_prefix("listening on http://127.0.0.1:") {
            port = p.trim().parse().unwrap();
            break;
        }
    }
    assert!(port > 0);
    let onset = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /bug HTTP/1.0\r\n\r\n").unwrap();
    // Wait for the kill; without a cgroup, a watchdog kills at the same RSS.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if cgroup.is_none() {
            let statm =
                std::fs::read_to_string(format!("/proc/{}/statm", child.id())).unwrap_or_default();
            let rss = statm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
                .unwrap_or(0)
                * 4096;
            if rss >= LIMIT {
                child.kill().unwrap();
            }
        }
        assert!(
            onset.elapsed() < Duration::from_secs(60),
            "the process is killed at its limit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed_after = onset.elapsed();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    if let Some(dir) = &cgroup {
        let _ = std::fs::remove_dir(dir);
    }
    let heap: Vec<PathBuf> = std::fs::read_dir(dump.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("heap.") && n.ends_with(".pb.gz"))
        })
        .collect();
    assert!(
        !heap.is_empty(),
        "a heap profile was on disk before the kill ({killed_after:?})"
    );
    // A killed process writes nothing more: the file was complete before the kill.
    eprintln!(
        "scenario oom: killed {:.2} s after onset (cgroup: {}), heap profile written before it",
        killed_after.as_secs_f64(),
        cgroup.is_some()
    );
    let top = pprof(
        &["-top", "-sample_index=inuse_space", "-nodecount=5"],
        &heap[0],
    );
    assert!(first_is(&top, "cache_every_response_forever"), "{top}");
}

// Scenarios 3 and 4 need tokio task dumps: they run in the taskdump build of
// deploy/dev/test.sh (feature `taskdump`, RUSTFLAGS with tokio_unstable, tokio_taskdump).

#[cfg(all(feature = "taskdump", tokio_unstable, tokio_taskdump))]
#[test]
fn scenario_tasks_3_channel_block_names_the_waiting_send() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let s = Scenario::start("channel_block", &[]);
    let onset = s.trigger();
    let (dump, latency) = s.profile("tasks", onset, Duration::from_secs(20), |_| true);
    report("tasks blocked on a channel", latency);
    let top = pprof(&["-top", "-cum", "-nodecount=40"], &dump);
    assert!(
        any_is(&top, "publish_audit_record") || top.contains("publish_audit_record"),
        "{top}"
    );
}

#[cfg(all(feature = "taskdump", tokio_unstable, tokio_taskdump))]
#[test]
fn scenario_tasks_4_task_leak_names_the_leaked_task() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !go_available() {
        return;
    }
    let s = Scenario::start("task_leak", &[]);
    let onset = s.trigger();
    let (dump, latency) = s.profile("tasks", onset, Duration::from_secs(30), |_| true);
    report("one task leaked per request", latency);
    let top = pprof(&["-top", "-cum", "-nodecount=40"], &dump);
    assert!(
        any_is(&top, "watch_session_until_it_ends") || top.contains("watch_session_until_it_ends"),
        "{top}"
    );
}
