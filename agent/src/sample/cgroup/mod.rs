//! The container limits this process runs under: CPU quota, memory limit and the
//! `cpu.stat` file that counts CPU throttling, on cgroup v1, v2 and hybrid hosts.
//!
//! Detection reads `/proc/self/cgroup` and `/proc/self/mountinfo` to find the process's
//! cgroup directories, then the limit files of that directory and of its ancestors up to
//! the mount point, taking the smallest limit (nested limits apply). It runs once, does
//! only small `/proc` and `/sys` reads, and never fails: when a source is missing,
//! unreadable or malformed it falls back (no quota: the CPUs available; no memory limit:
//! host RAM) and says so in [`CgroupLimits::notes`]. Unlike mosn/holmes, which stops
//! monitoring for good when there is no quota, every path yields usable numbers.
//!
//! - [`parse`]: the pure parsers of the limit files, `/proc/self/cgroup` and
//!   `/proc/self/mountinfo` (tested on strings);
//! - [`mounts`]: where the process's cgroup directories are, and which hierarchy (v1 or
//!   v2) holds each controller;
//! - [`limits`]: the limits read along each directory's ancestors, with the host's
//!   fallbacks.

mod limits;
mod mounts;
mod parse;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup layout the process lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CgroupVersion {
    /// Only v1 controller hierarchies (`/sys/fs/cgroup/<controller>`).
    V1,
    /// Only the unified v2 hierarchy.
    V2,
    /// v1 controller hierarchies plus a v2 hierarchy (often `/sys/fs/cgroup/unified`).
    Hybrid,
    /// No cgroup hierarchy with the cpu or memory controller was found.
    None,
}

/// What detection found; every field has a usable value or a note saying why not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CgroupLimits {
    /// CPU cores the process may use: the smallest quota of its cgroup and ancestors
    /// (capped at the CPUs it may run on), else the available parallelism. `None` only
    /// when neither is known.
    pub(crate) cpu_cores: Option<f64>,
    /// Memory the process may use in bytes: the smallest memory limit of its cgroup and
    /// ancestors when below host RAM, else host RAM. `None` only when neither is known.
    pub(crate) memory_bytes: Option<u64>,
    /// The `cpu.stat` that counts throttling under the effective quota (the limiting
    /// cgroup's, else the process's own); `None` when there is none to read.
    pub(crate) cpu_stat_path: Option<PathBuf>,
    /// How `cpu_stat_path` is laid out: [`CgroupVersion::V1`] (`throttled_time`, ns) or
    /// [`CgroupVersion::V2`] (`throttled_usec`).
    pub(crate) cpu_stat_version: CgroupVersion,
    /// The layout found.
    pub(crate) version: CgroupVersion,
    /// One line per fallback or problem, e.g. `cpu quota: none set in ...; using 2 cores
    /// (available parallelism)`. Empty when every limit was read as is.
    pub(crate) notes: Vec<String>,
}

impl CgroupLimits {
    /// Cumulative time the cgroup was throttled, from `cpu_stat_path`; the caller diffs
    /// it per interval. `None` when there is no such file or it cannot be read now.
    pub(crate) fn read_throttled(&self) -> Option<Duration> {
        let path = self.cpu_stat_path.as_deref()?;
        let result = match std::fs::read_to_string(path) {
            Ok(text) => parse::parse_throttled(path, &text, self.cpu_stat_version),
            Err(error) => Err(CgroupError::Read {
                path: path.to_path_buf(),
                error,
            }),
        };
        match result {
            Ok(throttled) => throttled,
            Err(err) => {
                tracing::debug!(target: "holmes", error = %err, "cannot read cpu throttling");
                None
            }
        }
    }
}

/// Why a cgroup file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    /// The file exists but cannot be read (or must exist and does not).
    #[error("{} unreadable: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        error: io::Error,
    },
    /// The file does not hold what its kind of file must.
    #[error("{} malformed: {value:?} ({reason})", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The offending value (cut to 64 characters).
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

/// A cgroup file's text.
fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|error| CgroupError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// A file's text, `None` when it does not exist.
fn read_if_present(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Detects this process's limits from `/proc/self/cgroup`, `/proc/self/mountinfo` and
/// the cgroup filesystems. Never fails; see [`CgroupLimits::notes`].
pub(crate) fn detect() -> CgroupLimits {
    let mut notes = Vec::new();
    let mut read = |path: &str| {
        read_file(Path::new(path)).unwrap_or_else(|err| {
            notes.push(format!("cgroups: {err}; limits fall back to the host"));
            String::new()
        })
    };
    let proc_cgroup = read("/proc/self/cgroup");
    let mountinfo = read("/proc/self/mountinfo");
    let mut limits = limits::detect_with(
        &proc_cgroup,
        &mountinfo,
        Path::new("/"),
        &limits::Host::current(),
    );
    notes.append(&mut limits.notes);
    limits.notes = notes;
    limits
}

/// [`detect`] on given `/proc/self/cgroup` and `/proc/self/mountinfo` texts, with every
/// mount point taken under `root` (a fixture tree); the host fallbacks are this
/// machine's.
#[cfg(test)]
fn detect_in(proc_cgroup: &str, mountinfo: &str, root: &Path) -> CgroupLimits {
    limits::detect_with(proc_cgroup, mountinfo, root, &limits::Host::current())
}
