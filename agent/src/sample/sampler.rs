//! Reads the process's own vital signs: CPU against the cores it may use (the
//! container's CPU limit, else its CPUs, unless the host overrides it), memory against
//! its memory limit (plus RSS), threads, open file descriptors and CPU throttling. Cheap (a few small `/proc` and cgroup reads and one `getrusage`), and
//! never fails as a whole: a source that cannot be read leaves its metric out of the
//! sample and is logged once, and a missing limit falls back (cores available, host
//! RAM) instead of stopping anything.

use std::time::{Duration, Instant};

use holmes_proto::Metric;

use super::cgroup::{self, CgroupLimits};
use super::procfs;
use crate::clock::unix_nanos_now;

/// One round of readings, taken at `unix_nanos`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    pub(crate) unix_nanos: u64,
    pub(crate) values: Vec<(Metric, f64)>,
}

/// The limits found at start and what a rate needs from the previous round.
#[derive(Debug)]
pub(crate) struct Sampler {
    limits: CgroupLimits,
    cores: f64,
    memory_limit: Option<u64>,
    last_cpu: Option<(Instant, Duration)>,
    last_throttled: Option<(Instant, Duration)>,
    fast: procfs::FastReaders,
    warned: u32,
}

impl Sampler {
    /// A sampler dividing the process's CPU by `cpu_cores` when given (the host's
    /// override, `HOLMES_CPU_CORES`), else by the detected limit.
    pub(crate) fn new(cpu_cores: Option<f64>) -> Self {
        let limits = cgroup::detect();
        for note in &limits.notes {
            tracing::info!(target: "holmes", "{note}");
        }
        let detected = limits
            .cpu_cores
            .filter(|c| *c > 0.0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as f64);
        let cores = cpu_cores.filter(|c| c.is_finite() && *c > 0.0);
        if let Some(cores) = cores {
            tracing::info!(target: "holmes", cpu_cores = cores, detected_cores = detected, "cpu % is computed against the configured cpu cores, not the detected limit");
        }
        let cores = cores.unwrap_or(detected);
        let memory_limit = limits.memory_bytes.or_else(procfs::host_memory_bytes);
        tracing::info!(
            target: "holmes",
            cpu_limit_cores = cores,
            memory_limit_bytes = memory_limit,
            cgroups = ?limits.version,
            "limits in use for cpu % and memory %"
        );
        Sampler {
            limits,
            cores,
            memory_limit,
            last_cpu: None,
            last_throttled: None,
            fast: procfs::FastReaders::new(),
            warned: 0,
        }
    }

    /// The memory limit memory % is computed against.
    pub(crate) fn memory_limit_bytes(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Memory % of the limit from a single RSS read: the fast path between samples.
    pub(crate) fn memory_percent_now(&mut self) -> Option<f64> {
        let limit = self.memory_limit.filter(|l| *l > 0)?;
        Some(self.fast.rss_bytes()? as f64 / limit as f64 * 100.0)
    }

    /// OS threads from a single read: the fast path between samples.
    pub(crate) fn threads_now(&mut self) -> Option<f64> {
        self.fast.threads().map(|n| n as f64)
    }

    /// Takes one round of readings.
    pub(crate) fn sample(&mut self) -> Reading {
        let mut values = Vec::with_capacity(8);
        let now = Instant::now();
        match process_cpu_time() {
            Some(cpu) => {
                if let Some(percent) = rate(&mut self.last_cpu, now, cpu) {
                    values.push((Metric::CpuPercent, percent / self.cores));
                }
            }
            None => self.warn_once(
                1,
                "cannot read the process cpu clock; cpu % is not reported",
            ),
        }
        match self.fast.rss_bytes() {
            Some(rss) => {
                values.push((Metric::RssBytes, rss as f64));
                if let Some(limit) = self.memory_limit.filter(|l| *l > 0) {
                    values.push((Metric::MemoryPercent, rss as f64 / limit as f64 * 100.0));
                }
            }
            None => self.warn_once(
                2,
                "cannot read /proc/self/statm; rss and memory % are not reported",
            ),
        }
        match self.fast.threads() {
            Some(n) => values.push((Metric::Threads, n as f64)),
            None => self.warn_once(4, "cannot read /proc/self/stat; threads are not reported"),
        }
        match procfs::open_fds() {
            Some(n) => values.push((Metric::OpenFds, n as f64)),
            None => self.warn_once(8, "cannot list /proc/self/fd; open fds are not reported"),
        }
        if let Some(throttled) = self.limits.read_throttled() {
            if let Some(percent) = rate(&mut self.last_throttled, now, throttled) {
                values.push((Metric::CpuThrottledPercent, percent.min(100.0)));
            }
        }
        Reading {
            unix_nanos: unix_nanos_now(),
            values,
        }
    }

    fn warn_once(&mut self, bit: u32, message: &'static str) {
        if self.warned & bit == 0 {
            self.warned |= bit;
            tracing::warn!(target: "holmes", "{message}");
        }
    }
}

/// Percent of wall time a cumulative counter grew by since the previous call.
fn rate(last: &mut Option<(Instant, Duration)>, now: Instant, total: Duration) -> Option<f64> {
    let previous = last.replace((now, total));
    let (then, total_then) = previous?;
    let wall = now.duration_since(then).as_secs_f64();
    (wall > 0.0).then(|| total.saturating_sub(total_then).as_secs_f64() / wall * 100.0)
}

/// CPU time of the whole process (all threads), to the nanosecond.
fn process_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return None;
    }
    Some(
        Duration::from_secs(u64::try_from(ts.tv_sec).unwrap_or(0))
            + Duration::from_nanos(u64::try_from(ts.tv_nsec).unwrap_or(0)),
    )
}

#[cfg(test)]
mod tests;
