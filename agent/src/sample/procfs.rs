//! Cheap readers of this process and its host from `/proc`: open descriptors, resident
//! memory, thread count, host RAM and the CPUs the process may run on.
//!
//! Each reader does one small `/proc` read (or one syscall), never blocks on anything
//! else, and returns `None` when its source is missing or unreadable; the caller decides
//! how to report that. The parse functions are pure and tested on strings.

use std::path::Path;

/// Open file descriptors of this process: the entries of `/proc/self/fd`, minus the one
/// the directory listing itself holds open while it is read.
pub(crate) fn open_fds() -> Option<u64> {
    count_fd_entries(Path::new("/proc/self/fd")).map(|n| n.saturating_sub(1))
}

/// Entries of a directory (no `.`/`..`), stopping at the first entry that cannot be read.
fn count_fd_entries(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut n: u64 = 0;
    for entry in entries {
        entry.ok()?;
        n = n.saturating_add(1);
    }
    Some(n)
}

/// Host RAM in bytes: `MemTotal` of `/proc/meminfo`.
pub(crate) fn host_memory_bytes() -> Option<u64> {
    parse_meminfo_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// Resident memory of this process in bytes: resident pages of `/proc/self/statm` times
/// the page size.
pub(crate) fn rss_bytes() -> Option<u64> {
    let pages = parse_statm_rss_pages(&std::fs::read_to_string("/proc/self/statm").ok()?)?;
    pages.checked_mul(page_size())
}

/// A small `/proc` file read again and again through one open descriptor (a positioned
/// read at offset 0 regenerates the file), saving the path lookup, open and close of
/// every read: this is what the fast path between two samples uses.
#[derive(Debug)]
pub(crate) struct ProcReader {
    path: &'static str,
    file: Option<std::fs::File>,
}

impl ProcReader {
    pub(crate) fn new(path: &'static str) -> Self {
        ProcReader {
            path,
            file: std::fs::File::open(path).ok(),
        }
    }

    /// Reads the file (at most 1 KiB) and hands its text to `parse`.
    pub(crate) fn read<T>(&mut self, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 1024];
        let n = self.file.as_ref().and_then(|f| f.read_at(&mut buf, 0).ok());
        let Some(n) = n else {
            // The descriptor went bad (it should not): reopen for next time.
            self.file = std::fs::File::open(self.path).ok();
            return None;
        };
        parse(std::str::from_utf8(buf.get(..n)?).ok()?)
    }
}

/// Resident bytes and thread count of this process through persistent descriptors.
#[derive(Debug)]
pub(crate) struct FastReaders {
    statm: ProcReader,
    stat: ProcReader,
    page: u64,
}

impl FastReaders {
    pub(crate) fn new() -> Self {
        FastReaders {
            statm: ProcReader::new("/proc/self/statm"),
            stat: ProcReader::new("/proc/self/stat"),
            page: page_size(),
        }
    }

    /// Resident bytes now.
    pub(crate) fn rss_bytes(&mut self) -> Option<u64> {
        let page = self.page;
        self.statm
            .read(|t| parse_statm_rss_pages(t)?.checked_mul(page))
            .or_else(rss_bytes)
    }

    /// OS threads now.
    pub(crate) fn threads(&mut self) -> Option<u64> {
        self.stat.read(parse_stat_threads).or_else(thread_count)
    }
}

/// Threads of this process: `num_threads` of `/proc/self/stat`.
pub(crate) fn thread_count() -> Option<u64> {
    parse_stat_threads(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// The memory page size (4096 when `sysconf` cannot tell).
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// CPUs this process may run on (its scheduler affinity mask), without any cgroup quota.
/// `None` when the mask cannot be read (for instance more than 1024 CPUs).
#[cfg(target_os = "linux")]
pub(crate) fn affinity_cpus() -> Option<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size given; pid 0 is this thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `set` was filled by sched_getaffinity.
    let n = unsafe { libc::CPU_COUNT(&set) };
    usize::try_from(n).ok().filter(|n| *n > 0)
}

/// CPUs this process may run on; unknown off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn affinity_cpus() -> Option<usize> {
    None
}

/// `MemTotal` of `/proc/meminfo` in bytes (the file gives kibibytes).
pub(crate) fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Resident pages: the second field of `/proc/<pid>/statm`.
pub(crate) fn parse_statm_rss_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// `num_threads`: field 20 of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from after its last `)`.
pub(crate) fn parse_stat_threads(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // After the name come field 3 (state) onwards; num_threads is field 20.
    after_comm.split_whitespace().nth(20 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests;
