//! What the agent's integration tests share: an agent with every rule off, waiting for
//! something with a generous timeout, `go tool pprof` as the reader of the profiles, the
//! dump folder's files, and a collector's side of the protocol ([`collector`]). Each
//! test binary includes it with `mod support;` and uses what it needs.
#![allow(dead_code)]

pub(crate) mod collector;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, HolmesBuilder, Metric, Rule};

/// An agent for `service` that writes to `dir`, samples every 100 ms and has every rule
/// off (so only the rule a test sets can fire), no fast path between samples, and no
/// symbol prewarm (a second of CPU in a debug test binary, which CPU rules would see).
pub(crate) fn quiet_agent(service: &str, dir: &Path) -> HolmesBuilder {
    let mut b = Holmes::builder()
        .service(service)
        .dump_dir(dir)
        .collect_interval(Duration::from_millis(100))
        .memory_fast_interval(None)
        .prewarm_symbols(false);
    for m in [
        Metric::CpuPercent,
        Metric::MemoryPercent,
        Metric::Threads,
        Metric::Tasks,
        Metric::HeapPercent,
    ] {
        b = b.rule(m, Rule::new().enabled(false));
    }
    b
}

/// Waits until `check` holds, failing with `what` after `timeout` (make it generous: a
/// loaded machine is slow, and a passing test does not wait for it).
pub(crate) fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The trigger documents (`<event-id>.json`) in the dump folder, sorted.
pub(crate) fn trigger_docs(dir: &Path) -> Vec<String> {
    let mut docs: Vec<String> = files(dir, "", ".json")
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    docs.sort();
    docs
}

/// CPU time the calling thread has used: what a test burns for, so that it does the
/// same work on an idle machine and on a loaded one.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Whether `go` runs here; without it a test skips, unless CI or
/// HOLMES_TEST_REQUIRE_GO=1 ask for it, where that fails.
pub(crate) fn go_available() -> bool {
    let ok = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
            || std::env::var("HOLMES_TEST_REQUIRE_GO").as_deref() == Ok("1");
        assert!(!required, "go is required (apt-get install golang-go)");
        eprintln!("skipped: go is not installed");
    }
    ok
}

/// `go tool pprof <args> <file>`'s output; fails the test if pprof does.
pub(crate) fn pprof(args: &[&str], file: &Path) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("go tool pprof runs");
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files of `dir` named `<prefix>…<suffix>`, sorted by name.
pub(crate) fn files(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.starts_with(prefix) && name.ends_with(suffix)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The first function of `go tool pprof -top` (the one with the most flat time).
pub(crate) fn top_function(top: &str) -> String {
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap_or("")
        .to_owned()
}

/// The flat value of the first row of `-top`, in MB (pprof's unit for these sizes).
/// The flat value of `go tool pprof -top`'s first line, in MB (0 when not in MB).
pub(crate) fn top_flat_mb(top: &str) -> f64 {
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.strip_suffix("MB"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
