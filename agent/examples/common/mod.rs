//! What every scenario example shares: the agent set up as a user would, and a tiny
//! HTTP endpoint that starts the bug on request.
//!
//! Every example prints `listening on http://127.0.0.1:PORT` and, once the agent's rule
//! windows are full, `warm`; `GET /bug` then starts the bug. Profiles land in the dump
//! folder (`HOLMES_DUMP_DIR`, default `<tmp>/holmes`) and at the collector if
//! `HOLMES_COLLECTOR` is set. Any `HOLMES_*` variable tunes the agent.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, HolmesBuilder, HolmesHandle};

/// Starts the agent for scenario `name`: environment first, then `configure`.
pub(crate) fn agent(
    name: &str,
    configure: impl FnOnce(HolmesBuilder) -> HolmesBuilder,
) -> HolmesHandle {
    // The agent logs through `tracing`; show it on stderr (RUST_LOG, default info).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let builder = match Holmes::from_env() {
        Ok(b) => b,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    match configure(builder.service(name)).start() {
        Ok(h) => h,
        Err(err) => {
            eprintln!("cannot start the agent: {err}");
            std::process::exit(2);
        }
    }
}

/// Waits until the agent has taken `samples` samples (the rule windows are full), then
/// says `warm`.
pub(crate) fn warm_up(agent: &HolmesHandle, samples: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while agent.stats().samples < samples && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("warm");
}

/// Serves `GET /bug` (calls `bug`) and `GET /healthz` on a free loopback port, forever.
pub(crate) fn serve(bug: impl Fn() + Send + Sync + 'static) -> ! {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(err) => {
            eprintln!("cannot listen: {err}");
            std::process::exit(2);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("listening on http://127.0.0.1:{port}");
    let bug = std::sync::Arc::new(bug);
    for stream in listener.incoming().flatten() {
        let bug = std::sync::Arc::clone(&bug);
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                return;
            }
            let (status, body) = if line.starts_with("GET /bug") {
                bug();
                ("200 OK", "bug started\n")
            } else if line.starts_with("GET /healthz") {
                ("200 OK", "ok\n")
            } else {
                ("404 Not Found", "try GET /bug\n")
            };
            let mut stream = &stream;
            let _ = write!(
                stream,
                "HTTP/1.0 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        });
    }
    std::process::exit(0)
}

/// Runs `work` on one thread per core this process may use (its CPU quota or affinity),
/// so that the load is the same share of the CPU limit on any machine: one busy thread
/// is half the limit on 2 cores and a sixteenth on 16.
pub(crate) fn on_every_core(work: fn()) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for _ in 0..cores {
        std::thread::spawn(work);
    }
}

/// CPU time the calling thread has used.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}
