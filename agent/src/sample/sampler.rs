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
mod tests {
    use super::*;
    use crate::clock::thread_cpu_time;

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

    /// CPU time this process has used, from the kernel's own accounting.
    fn process_cpu() -> Duration {
        // SAFETY: an all-zero rusage is valid; getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }

    #[test]
    fn samples_this_process() {
        let mut sampler = Sampler::new(None);
        // What the process used and how much time passed, measured just outside and
        // just inside the sampler's own interval: the sampled CPU % must lie between
        // the bounds they give, whatever else the machine (or this test binary) runs.
        let (cpu_outer0, wall_outer0) = (process_cpu(), Instant::now());
        let first = sampler.sample();
        let (cpu_inner0, wall_inner0) = (process_cpu(), Instant::now());
        // Spin until this thread has had 200 ms of CPU, however long that takes.
        let spin_from = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - spin_from < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let (cpu_inner1, wall_inner1) = (process_cpu(), Instant::now());
        let second = sampler.sample();
        let (cpu_outer1, wall_outer1) = (process_cpu(), Instant::now());
        let get = |r: &Reading, m| r.values.iter().find(|(k, _)| *k == m).map(|(_, v)| *v);
        assert_eq!(
            get(&first, Metric::CpuPercent),
            None,
            "no CPU % without a previous round"
        );
        let cpu = get(&second, Metric::CpuPercent).unwrap();
        let percent = |used: Duration, wall: Duration| {
            used.as_secs_f64() / wall.as_secs_f64() * 100.0 / sampler.cores
        };
        // The two clocks may differ by a scheduler tick per running thread.
        let tick = Duration::from_millis(40);
        let low = percent(
            (cpu_inner1 - cpu_inner0).saturating_sub(tick),
            wall_outer1 - wall_outer0,
        );
        let high = percent(cpu_outer1 - cpu_outer0 + tick, wall_inner1 - wall_inner0);
        assert!(low > 0.0, "the spin used CPU");
        assert!(
            (low..=high).contains(&cpu),
            "sampled cpu {cpu:.2}% is outside [{low:.2}%, {high:.2}%]"
        );
        assert!(get(&second, Metric::RssBytes).unwrap() > 1_000_000.0);
        let mem = get(&second, Metric::MemoryPercent).unwrap();
        assert!(mem > 0.0 && mem < 100.0, "{mem}");
        assert!(get(&second, Metric::Threads).unwrap() >= 1.0);
        assert!(get(&second, Metric::OpenFds).unwrap() >= 3.0);
        assert!(second.unix_nanos > first.unix_nanos);
        assert!(sampler.memory_percent_now().unwrap() > 0.0);
    }

    #[test]
    fn configured_cores_replace_the_detected_limit() {
        let detected = Sampler::new(None).cores;
        assert!(detected > 0.0);
        assert_eq!(Sampler::new(Some(16.0)).cores, 16.0);
        assert_eq!(Sampler::new(Some(0.5)).cores, 0.5);
        // Not a usable count (refused earlier by the configuration): the detected one.
        assert_eq!(Sampler::new(Some(f64::NAN)).cores, detected);
    }
}
