//! A process killed by a real memory limit within about a second still leaves its heap
//! profile on disk: the fast path between two samples sees memory climb toward the
//! cgroup's limit and the heap capture is written before the kernel's OOM killer ends
//! the process.
//!
//! The test makes a memory cgroup (cgroup v2 `memory.max`, or v1
//! `memory.limit_in_bytes`), which needs root and the memory controller. Without them
//! it says so and skips, unless `HOLMES_TEST_REQUIRE_CGROUP=1`, where it fails.
//!
//! Its own harness: the binary runs itself again as the process to be killed (which
//! joins the cgroup, starts the agent and fills memory until the kernel kills it).

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule, SamplingAllocator};

mod support;
use support::{files, go_available, pprof, top_function, trigger_docs};

#[global_allocator]
static GLOBAL: SamplingAllocator = SamplingAllocator::system();

/// The memory limit of the cgroup the child runs in.
const LIMIT_BYTES: u64 = 384 << 20;
/// Set in the child's environment: the cgroup folder to join and the dump folder.
const CHILD_CGROUP: &str = "HOLMES_OOM_TEST_CGROUP";
const CHILD_DUMP: &str = "HOLMES_OOM_TEST_DUMP";

fn main() {
    if let (Some(cgroup), Some(dump)) =
        (std::env::var_os(CHILD_CGROUP), std::env::var_os(CHILD_DUMP))
    {
        child(Path::new(&cgroup), Path::new(&dump));
    }
    a_process_killed_at_its_memory_limit_leaves_its_heap_profile();
    println!("test a_process_killed_at_its_memory_limit_leaves_its_heap_profile ... ok");
}

/// A memory cgroup limited to `limit` bytes, removed when dropped.
struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    /// On cgroup v2 (the memory controller at /sys/fs/cgroup) or v1
    /// (/sys/fs/cgroup/memory); `Err` says why neither can be used.
    fn create(limit: u64) -> Result<MemoryCgroup, String> {
        let name = format!("holmes-oom-test-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_controllers = std::fs::read_to_string(v2.join("cgroup.controllers"));
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, limit_file, swap_file) = match v2_controllers {
            Ok(list) if list.split_whitespace().any(|c| c == "memory") => {
                // Children get the controller only if the root hands it down.
                let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+memory");
                (v2.join(&name), "memory.max", "memory.swap.max")
            }
            _ if v1.join("memory.limit_in_bytes").exists() => (
                v1.join(&name),
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
            ),
            _ => return Err("no cgroup memory controller at /sys/fs/cgroup".to_owned()),
        };
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create {}: {e} (not root?)", dir.display()))?;
        let group = MemoryCgroup { dir };
        std::fs::write(group.dir.join(limit_file), limit.to_string())
            .map_err(|e| format!("cannot write {limit_file}: {e}"))?;
        // No swap to escape to (absent when the kernel accounts no swap).
        let swap = if swap_file == "memory.swap.max" {
            "0".to_owned()
        } else {
            limit.to_string()
        };
        let _ = std::fs::write(group.dir.join(swap_file), swap);
        Ok(group)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The killed process may take a moment to leave it.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

fn a_process_killed_at_its_memory_limit_leaves_its_heap_profile() {
    let group = match MemoryCgroup::create(LIMIT_BYTES) {
        Ok(group) => group,
        Err(why) => {
            let required = std::env::var("HOLMES_TEST_REQUIRE_CGROUP").as_deref() == Ok("1");
            assert!(
                !required,
                "HOLMES_TEST_REQUIRE_CGROUP=1 but no memory cgroup can be made: {why}"
            );
            eprintln!("skipped: no memory cgroup can be made here ({why}); run as root on a machine with the memory controller");
            return;
        }
    };
    let dump = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("child.log");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_CGROUP, &group.dir)
        .env(CHILD_DUMP, dump.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // The agent's log, to explain a failure.
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(ready, "growing", "the child did not start:\n{}", log());
    let onset = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if onset.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the child outlived its memory limit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let killed_after = onset.elapsed();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed by the OOM killer: {status:?}\n{}",
        log()
    );
    eprintln!(
        "child killed at its {} MiB limit {:.2} s after it began to grow",
        LIMIT_BYTES >> 20,
        killed_after.as_secs_f64()
    );

    let docs = trigger_docs(dump.path());
    assert_eq!(docs.len(), 1, "{docs:?}\n{}", log());
    assert!(docs[0].contains("\"metric\":\"memory\""), "{}", docs[0]);
    assert!(docs[0].contains("\"planned\":[\"heap\"]"), "{}", docs[0]);
    // Written whole before the kill: a killed process writes nothing more, and files
    // are renamed into place only once complete.
    for line in log()
        .lines()
        .filter(|l| l.contains("trigger fired") || l.contains("profile written"))
    {
        eprintln!("  child: {line}");
    }
    let heap = files(dump.path(), "heap.", ".pb.gz");
    assert_eq!(
        heap.len(),
        1,
        "the heap profile is on disk; the agent said:\n{}",
        log()
    );
    if go_available() {
        let top = pprof(
            &["-top", "-sample_index=inuse_space", "-nodecount=5"],
            &heap[0],
        );
        assert_eq!(
            top_function(&top),
            "oom_kill::fill_the_cache_until_killed",
            "{top}"
        );
    }
}

/// The process to be killed: joins the cgroup, starts the agent as a service would (1 s
/// samples, the fast path every 100 ms, a memory rule on % of the limit), then grows.
fn child(cgroup: &Path, dump: &Path) -> ! {
    // Joined before the agent starts, so that it reads the cgroup's limit.
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .expect("join the cgroup");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("holmes=debug")
        .with_ansi(false)
        .init();
    let mut b = Holmes::builder().service("oom-test").dump_dir(dump);
    for m in [
        Metric::CpuPercent,
        Metric::Threads,
        Metric::Tasks,
        Metric::HeapPercent,
    ] {
        b = b.rule(m, Rule::new().enabled(false));
    }
    let agent = b
        .memory_rule(
            Rule::new()
                .min(1.0)
                .abs(30.0)
                .window(3)
                .cooldown(Duration::from_secs(600)),
        )
        .start()
        .expect("the agent starts");
    // Rule windows full.
    while agent.stats().samples < 4 {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("growing");
    fill_the_cache_until_killed();
}

/// The culprit: 16 MiB blocks, every page written, one every 40 ms: 400 MiB/s, the limit
/// within a second.
#[inline(never)]
fn fill_the_cache_until_killed() -> ! {
    let mut cache: Vec<Vec<u8>> = Vec::new();
    let started = Instant::now();
    for block in 1u32.. {
        cache.push(vec![1u8; 16 << 20]);
        std::hint::black_box(&cache);
        let due = started + Duration::from_millis(40) * block;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    unreachable!("the kernel kills this process first")
}
