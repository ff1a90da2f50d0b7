//! Reads the process's own vital signs: CPU against the container's CPU limit, memory
//! against its memory limit (plus RSS), threads, open file descriptors and CPU
//! throttling. Cheap (a few small `/proc` and cgroup reads and one `getrusage`), and
//! never fails as a whole: a source that cannot be read leaves its metric out of the
//! sample and is logged once, and a missing limit falls back (cores available, host
//! RAM) instead of stopping anything.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holmes_proto::Metric;

use crate::cgroup::{self, CgroupLimits};
use crate::procfs;

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
    pub(crate) fn new() -> Self {
        let limits = cgroup::detect();
        for note in &limits.notes {
            tracing::info!(target: "holmes", "{note}");
        }
        let cores = limits
            .cpu_cores
            .filter(|c| *c > 0.0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as f64);
        let memory_limit = limits.memory_bytes.or_else(procfs::host_memory_bytes);
        tracing::info!(
            target: "holmes",
            cpu_limit_cores = cores,
            memory_limit_bytes = memory_limit,
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

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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
mod tests {
    use super::*;

    #[test]
    fn rates_need_two_readings() {
        let mut last = None;
        let t0 = Instant::now();
        assert_eq!(rate(&mut last, t0, Duration::from_millis(100)), None);
        let r = rate(
            &mut last,
            t0 + Duration::from_secs(2),
            Duration::from_millis(1100),
        )
        .unwrap();
        assert!((r - 50.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn samples_this_process() {
        /// CPU time this process has used, from the kernel's own accounting.
        fn process_cpu() -> Duration {
            // SAFETY: getrusage only writes the struct it is given.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
            let tv = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            tv(ru.ru_utime) + tv(ru.ru_stime)
        }
        let mut sampler = Sampler::new();
        let (cpu_before, wall_before) = (process_cpu(), Instant::now());
        let first = sampler.sample();
        let spin_until = Instant::now() + Duration::from_millis(200);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let second = sampler.sample();
        let (used, wall) = (process_cpu() - cpu_before, wall_before.elapsed());
        let get = |r: &Reading, m| r.values.iter().find(|(k, _)| *k == m).map(|(_, v)| *v);
        assert_eq!(
            get(&first, Metric::CpuPercent),
            None,
            "no CPU % without a previous round"
        );
        let cpu = get(&second, Metric::CpuPercent).unwrap();
        // The share of the limit the process really used (one spinning thread: up to a
        // core's worth, less on a busy machine), within the kernel's 10 ms tick twice.
        let truth = used.as_secs_f64() / wall.as_secs_f64() * 100.0 / sampler.cores;
        let tick = 0.02 / wall.as_secs_f64() * 100.0 / sampler.cores;
        assert!(truth > 0.0, "the spin used CPU");
        assert!(
            (cpu - truth).abs() <= truth * 0.25 + tick,
            "sampled cpu {cpu}, used {truth} ({used:?} of CPU in {wall:?})"
        );
        assert!(get(&second, Metric::RssBytes).unwrap() > 1_000_000.0);
        let mem = get(&second, Metric::MemoryPercent).unwrap();
        assert!(mem > 0.0 && mem < 100.0, "{mem}");
        assert!(get(&second, Metric::Threads).unwrap() >= 1.0);
        assert!(get(&second, Metric::OpenFds).unwrap() >= 3.0);
        assert!(second.unix_nanos > first.unix_nanos);
        assert!(sampler.memory_percent_now().unwrap() > 0.0);
    }
}
