//! Reads the process's own vital signs from the kernel: CPU time, resident memory and
//! thread count. Cheap (a few small `/proc` reads and one `getrusage`), never blocks
//! on anything but those reads, and never fails as a whole: a source that cannot be
//! read leaves its metric out of the sample and is logged once.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holmes_proto::Metric;

/// One round of readings, taken at `unix_nanos`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    pub(crate) unix_nanos: u64,
    pub(crate) values: Vec<(Metric, f64)>,
}

/// Keeps what a CPU percentage needs from the previous round.
#[derive(Debug)]
pub(crate) struct Sampler {
    cores: f64,
    last_cpu: Option<(Instant, Duration)>,
    page_size: u64,
    warned: u32,
}

impl Sampler {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // SAFETY: sysconf has no preconditions; it returns -1 on error.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Sampler {
            cores,
            last_cpu: None,
            page_size: u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096),
            warned: 0,
        }
    }

    /// Takes one round of readings.
    pub(crate) fn sample(&mut self) -> Reading {
        let mut values = Vec::with_capacity(4);
        let now = Instant::now();
        match process_cpu_time() {
            Some(cpu) => {
                if let Some((then, cpu_then)) = self.last_cpu {
                    let wall = now.duration_since(then).as_secs_f64();
                    if wall > 0.0 {
                        let used = cpu.saturating_sub(cpu_then).as_secs_f64();
                        values.push((Metric::CpuPercent, used / wall / self.cores * 100.0));
                    }
                }
                self.last_cpu = Some((now, cpu));
            }
            None => self.warn_once(1, "getrusage failed; CPU % is not reported"),
        }
        match std::fs::read_to_string("/proc/self/statm") {
            Ok(statm) => match parse_statm_rss_pages(&statm) {
                Some(pages) => values.push((
                    Metric::RssBytes,
                    pages.saturating_mul(self.page_size) as f64,
                )),
                None => self.warn_once(2, "cannot parse /proc/self/statm; RSS is not reported"),
            },
            Err(_) => self.warn_once(2, "cannot read /proc/self/statm; RSS is not reported"),
        }
        match std::fs::read_to_string("/proc/self/stat") {
            Ok(stat) => match parse_stat_threads(&stat) {
                Some(n) => values.push((Metric::Threads, n as f64)),
                None => self.warn_once(4, "cannot parse /proc/self/stat; threads are not reported"),
            },
            Err(_) => self.warn_once(4, "cannot read /proc/self/stat; threads are not reported"),
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

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn process_cpu_time() -> Option<Duration> {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// Resident pages: the second field of `/proc/<pid>/statm`.
fn parse_statm_rss_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// `num_threads`: field 20 of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from after its last `)`.
fn parse_stat_threads(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards; num_threads is field 20.
    after_comm.split_whitespace().nth(20 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files_including_awkward_command_names() {
        let stat = "4242 (my (weird) prog) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    12 3 0 0 20 0 17 0 12345 100000 250 18446744073709551615";
        assert_eq!(parse_stat_threads(stat), Some(17));
        assert_eq!(parse_stat_threads("garbage"), None);
        assert_eq!(parse_statm_rss_pages("1000 250 30 1 0 100 0"), Some(250));
        assert_eq!(parse_statm_rss_pages(""), None);
    }

    #[test]
    fn samples_this_process() {
        let mut sampler = Sampler::new();
        let first = sampler.sample();
        let spin_until = Instant::now() + Duration::from_millis(200);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let second = sampler.sample();
        let get = |r: &Reading, m| r.values.iter().find(|(k, _)| *k == m).map(|(_, v)| *v);
        assert_eq!(
            get(&first, Metric::CpuPercent),
            None,
            "no CPU % without a previous round"
        );
        let cpu = get(&second, Metric::CpuPercent).unwrap();
        let cores = std::thread::available_parallelism().unwrap().get() as f64;
        // One thread spun for the whole interval: about one core's worth.
        assert!(cpu > 50.0 / cores && cpu <= 100.0 + 1.0, "cpu {cpu}");
        assert!(get(&second, Metric::RssBytes).unwrap() > 1_000_000.0);
        assert!(get(&second, Metric::Threads).unwrap() >= 1.0);
        assert!(second.unix_nanos > first.unix_nanos);
    }
}
