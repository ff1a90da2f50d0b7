//! The agent's own threads, so a host runtime that is deadlocked or saturated cannot
//! stop them:
//! - `holmes-agent` samples the process on a plain loop of timed waits (no async
//!   runtime: each wake-up costs one syscall), feeds every rule ([`engine`]), turns
//!   firings into trigger events and captures, and hands full metric windows
//!   ([`window`]) to delivery; between two samples a cheap check of memory, threads and
//!   tasks runs their rules early (the fast path); it also takes the captures the host
//!   and the collector ask for ([`requested`]) and, with a collector, sends a baseline
//!   now and then ([`baseline`]);
//! - `holmes-sender`, only with a collector, runs the gRPC stream on a one-thread tokio
//!   runtime of its own; it sleeps until the outbox has work or the network answers.
//!
//! [`Shared`] is what they share with the handle.

mod baseline;
mod engine;
mod requested;
mod shared;
mod window;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_proto::{AgentBody, Hello, Metric};
use holmes_symbolize::UploadBlob;

use crate::capture::symbolize::modules;
use crate::capture::Captures;
use crate::clock::unix_nanos_now;
use crate::config::AgentConfig;
use crate::delivery::debuginfo::UploadSettings;
use crate::delivery::sender::{self, Link};
use crate::jitter::Jitter;
use crate::sample::Sampler;
use baseline::fire_baseline;
use engine::{fast_check, judge_reading, Ctx, Engine};
use requested::fire_requested;
pub(crate) use shared::Shared;
use window::WindowBuilder;

/// How long a capture request waits for a running capture of the same kind to finish;
/// after that it captures what is free (rule triggers never wait: Go's semantics).
const REQUEST_MAX_WAIT: Duration = Duration::from_secs(30);
/// How far each baseline interval is spread at random, either way.
const BASELINE_JITTER: f64 = 0.2;

/// Starts the agent thread (which starts the sender thread if there is a collector).
pub(crate) fn spawn(
    cfg: AgentConfig,
    shared: Arc<Shared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let cfg = Arc::new(cfg);
    // The sender waits for the spool to be open, so that it starts with what an earlier
    // run left there (the agent thread drops `spool_open` once it is).
    let (spool_open, spool_opened) = std::sync::mpsc::sync_channel::<()>(0);
    let sender = match &cfg.collector {
        Some(_) => Some(spawn_sender(
            Arc::clone(&cfg),
            Arc::clone(&shared),
            spool_opened,
        )?),
        None => None,
    };
    std::thread::Builder::new()
        .name("holmes-agent".to_owned())
        .spawn(move || {
            crate::capture::cpu::leave_this_thread_out();
            open_spool(&cfg, &shared);
            drop(spool_open);
            run(&cfg, &shared);
            if let Some(sender) = sender {
                sender.stop();
            }
        })
}

/// The sender thread and the signal that ends it.
struct SenderThread {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl SenderThread {
    fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!(target: "holmes", "the sender thread panicked");
        }
    }
}

fn spawn_sender(
    cfg: Arc<AgentConfig>,
    shared: Arc<Shared>,
    spool_opened: std::sync::mpsc::Receiver<()>,
) -> std::io::Result<SenderThread> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("holmes-sender".to_owned())
        .spawn(move || {
            crate::capture::cpu::leave_this_thread_out();
            // Returns when the agent thread drops its end (nothing is ever sent).
            let _ = spool_opened.recv();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    tracing::error!(target: "holmes", error = %err, "cannot build the sender's runtime; nothing will be sent");
                    return;
                }
            };
            let hello = hello(&cfg);
            let Some(url) = cfg.collector.clone() else {
                return;
            };
            let link = Link {
                url,
                transport: cfg.transport.clone(),
                connect_timeout: cfg.connect_timeout,
                max_backoff: cfg.max_backoff,
            };
            let uploads = UploadSettings {
                enabled: cfg.debuginfo_upload,
                rate: cfg.debuginfo_rate,
                build_id: hello
                    .executable
                    .as_ref()
                    .map(|m| m.build_id.clone())
                    .filter(|b| !b.is_empty()),
                path: PathBuf::from("/proc/self/exe"),
            };
            let delivery = Arc::clone(&shared.delivery);
            runtime.block_on(async move {
                tokio::select! {
                    _ = sender::run(link, hello, delivery, shared, uploads) => {}
                    _ = stopped => {}
                }
            });
            // The stream closes with the runtime.
            runtime.shutdown_timeout(Duration::from_millis(200));
        })?;
    Ok(SenderThread { stop, thread })
}

/// The hello an agent introduces itself with; its rules are filled per connection.
/// Names the executable (file name and build id) its native profiles point into, and
/// offers its debug info when uploads are on and it has a build id to match them by.
pub(crate) fn hello(cfg: &AgentConfig) -> Hello {
    let executable = modules::current().executable().map(|m| m.module.clone());
    // Offered when on, and when the executable is matched by build id and has more than
    // a stripped binary's symbols (else its debug info must come from CI).
    let debuginfo_upload = cfg.debuginfo_upload
        && executable.as_ref().is_some_and(|m| {
            !m.build_id.is_empty()
                && UploadBlob::from_elf_file("/proc/self/exe".as_ref())
                    .is_ok_and(|b| b.has_debug_info() && b.build_id() == Some(m.build_id.as_str()))
        });
    Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: cfg.service.clone(),
        instance_id: cfg.instance.clone(),
        host: cfg.host.clone(),
        pid: std::process::id(),
        labels: cfg.labels.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: process_start_unix_nanos(),
        collect_interval: cfg.collect_interval,
        rules_version: 0,
        executable,
        debuginfo_upload,
    }
}

/// Opens the spool, if one is configured: on the agent thread, not in `start()`, since
/// it is file I/O and `start()` runs on a host thread.
fn open_spool(cfg: &AgentConfig, shared: &Shared) {
    match (&cfg.spool_dir, &cfg.collector) {
        (Some(dir), Some(_)) => shared.delivery.open_spool(dir, cfg.spool_bytes as u64),
        (Some(dir), None) => {
            tracing::info!(target: "holmes", dir = %dir.display(), "spool folder unused: there is no collector to send to")
        }
        (None, _) => {}
    }
}

fn run(cfg: &Arc<AgentConfig>, shared: &Arc<Shared>) {
    let captures = Arc::new(Captures::new(cfg));
    let ctx = Ctx {
        cfg,
        shared,
        captures: &captures,
    };
    if cfg.collector.is_none() {
        tracing::info!(target: "holmes", service = %cfg.service, dump_dir = ?cfg.dump.as_ref().map(|d| d.path()), "no collector configured; triggers are written to the dump folder");
    }
    let mut sampler = Sampler::new(cfg.cpu_cores);
    let mut engine = Engine::new(shared, cfg);
    let mut window = WindowBuilder::default();
    let mut last_flush: Option<Instant> = None;
    let mut next_sample = Instant::now();
    let mut next_fast = cfg.memory_fast_interval.map(|f| Instant::now() + f);
    let mut jitter = Jitter::new();
    let baseline_every = cfg.baseline_interval.filter(|_| cfg.collector.is_some());
    let mut next_baseline =
        baseline_every.map(|every| Instant::now() + jitter.spread(every, BASELINE_JITTER));
    loop {
        while let Some(pending) = shared.requests.pop() {
            // A requested kind still being captured: wait for it (checked again on every
            // wake-up), unless the request has waited too long already. A CPU window
            // reads the flight recorder and need not wait.
            let waits_for: Vec<_> = pending
                .request
                .kinds
                .iter()
                .copied()
                .filter(|k| {
                    !(*k == holmes_proto::ProfileKind::Cpu && pending.request.window.is_some())
                })
                .collect();
            if captures.busy_with(&waits_for) && pending.queued.elapsed() < REQUEST_MAX_WAIT {
                shared.requests.push_front(pending);
                break;
            }
            fire_requested(&ctx, &mut engine, pending);
        }
        if let (Some(at), Some(every)) = (next_baseline, baseline_every) {
            if Instant::now() >= at {
                fire_baseline(&ctx, &engine);
                next_baseline = Some(Instant::now() + jitter.spread(every, BASELINE_JITTER));
            }
        }
        let now = Instant::now();
        if now >= next_sample {
            engine.refresh(shared);
            let mut reading = sampler.sample();
            reading
                .values
                .extend(host_metrics(shared, sampler.memory_limit_bytes()));
            shared.samples.fetch_add(1, Ordering::Relaxed);
            captures.drain();
            captures.release_idle_symbols();
            judge_reading(&ctx, &mut engine, reading.unix_nanos, &reading.values);
            window.add(reading.unix_nanos, &reading.values);
            let due = last_flush.is_none_or(|t| t.elapsed() >= cfg.send_interval);
            if due && !window.is_empty() {
                flush_window(cfg, shared, &mut window);
                last_flush = Some(Instant::now());
            }
            // Skip missed ticks rather than bursting to catch up.
            next_sample += cfg.collect_interval;
            if next_sample <= now {
                next_sample = now + cfg.collect_interval;
            }
        } else if let (Some(fast_at), Some(period)) = (next_fast, cfg.memory_fast_interval) {
            if now >= fast_at {
                engine.refresh(shared);
                captures.drain();
                // Memory, threads and tasks can run away within a second; each check is
                // one cheap read judged against the regular window.
                if let Some(percent) = sampler.memory_percent_now() {
                    fast_check(&ctx, &mut engine, Metric::MemoryPercent, percent);
                }
                if let Some(threads) = sampler.threads_now() {
                    fast_check(&ctx, &mut engine, Metric::Threads, threads);
                }
                if let Some(tasks) = shared.runtimes.alive_tasks() {
                    fast_check(&ctx, &mut engine, Metric::Tasks, tasks);
                }
                next_fast = Some(fast_at.max(now - period) + period);
            }
        }
        // park_timeout sleeps in one futex call (a channel's recv_timeout spins first,
        // which costs more than the sampling); stop() sets the flag and unparks.
        let wake = [next_fast, next_baseline]
            .into_iter()
            .flatten()
            .fold(next_sample, Instant::min);
        loop {
            if shared.stop_requested.load(Ordering::Acquire) {
                break;
            }
            let wait = wake.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            std::thread::park_timeout(wait);
        }
        if shared.stop_requested.load(Ordering::Acquire) {
            break;
        }
    }

    // stop(): let running captures hand over their profiles (a CPU capture ends early),
    // send what is left, and give the collector a moment to acknowledge it; all of it
    // within the flush timeout.
    let deadline = Instant::now() + cfg.flush_timeout; // bounded in config
    let still_capturing = captures.stop(deadline);
    if still_capturing > 0 {
        tracing::warn!(target: "holmes", captures = still_capturing, "stopping while captures still run; their profiles are not waited for");
    }
    if cfg.collector.is_some() {
        flush_window(cfg, shared, &mut window);
        while shared.delivery.outbox().len() > 0 {
            if Instant::now() >= deadline {
                let (left, spooled) = {
                    let outbox = shared.delivery.outbox();
                    (outbox.len(), outbox.spooled().0)
                };
                if spooled as usize == left {
                    tracing::info!(target: "holmes", unacknowledged = left, "stopping with messages the collector has not acknowledged; they stay in the spool for the next start");
                } else {
                    tracing::warn!(target: "holmes", unacknowledged = left, spooled, "stopping with messages the collector has not acknowledged");
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Metrics that come from the host rather than from `/proc`: tokio tasks of the
/// registered runtimes, and allocator bytes when a counting allocator is installed.
fn host_metrics(shared: &Shared, memory_limit: Option<u64>) -> Vec<(Metric, f64)> {
    let mut values = Vec::new();
    if let Some(tasks) = shared.runtimes.alive_tasks() {
        values.push((Metric::Tasks, tasks));
    }
    let heap_bytes = crate::heap::allocated_bytes().map(|bytes| bytes as f64);
    // Without the counting allocator, a jemalloc host's own statistics.
    #[cfg(feature = "jemalloc")]
    let heap_bytes = heap_bytes
        .or_else(|| crate::capture::jemalloc::allocated_bytes().map(|bytes| bytes as f64));
    if let Some(bytes) = heap_bytes {
        values.push((Metric::HeapBytes, bytes));
        if let Some(limit) = memory_limit.filter(|l| *l > 0) {
            values.push((Metric::HeapPercent, bytes / limit as f64 * 100.0));
        }
    }
    values
}

fn flush_window(cfg: &AgentConfig, shared: &Shared, window: &mut WindowBuilder) {
    let w = window.take();
    if cfg.collector.is_none() || w.series.is_empty() {
        return;
    }
    shared.delivery.enqueue(AgentBody::MetricWindow(w));
}

/// When this process started, from `/proc/self/stat` and the boot time; now if unknown.
fn process_start_unix_nanos() -> u64 {
    let now = unix_nanos_now();
    let read = || -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        // Field 22 is starttime in clock ticks since boot.
        let ticks: u64 = after.split_whitespace().nth(22 - 3)?.parse().ok()?;
        let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
        let uptime_secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
        let started_after_boot = ticks.checked_mul(1_000_000_000 / hz)?;
        let age_nanos = ((uptime_secs * 1e9) as u64).saturating_sub(started_after_boot);
        now.checked_sub(age_nanos)
    };
    read().unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_roughly_when_this_process_started() {
        let start = process_start_unix_nanos();
        let now = unix_nanos_now();
        assert!(
            start <= now && now - start < 3_600 * 1_000_000_000,
            "{start} {now}"
        );
    }
}
