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

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::procfs;

/// `memory.limit_in_bytes` values from here up mean "no limit": the kernel shows an
/// unset v1 limit as `LONG_MAX` rounded down to the page size (9223372036854771712
/// with 4 KiB pages). Limits between host RAM and this are treated as no limit by
/// detection, which knows host RAM.
pub(crate) const V1_UNLIMITED_FROM: u64 = 1 << 62;

/// Values quoted in error messages are cut to this many characters.
const MAX_QUOTED_CHARS: usize = 64;

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
            Ok(text) => parse_throttled(path, &text, self.cpu_stat_version),
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

fn malformed(path: &Path, value: &str, reason: &'static str) -> CgroupError {
    CgroupError::Malformed {
        path: path.to_path_buf(),
        value: value.trim().chars().take(MAX_QUOTED_CHARS).collect(),
        reason,
    }
}

// ---------------------------------------------------------------------------------
// Pure parsers of limit files. Ok(None): no limit; Err: malformed.
// ---------------------------------------------------------------------------------

/// v2 `cpu.max`: `"<quota|max> <period>"` in microseconds → cores (`quota / period`).
/// `"max 100000"` (or a bare `"max"`) is no limit.
pub(crate) fn parse_cpu_max(path: &Path, text: &str) -> Result<Option<f64>, CgroupError> {
    let mut fields = text.split_whitespace();
    let (Some(quota), period, None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(malformed(path, text, "expected \"<quota|max> <period>\""));
    };
    let quota_us = if quota == "max" {
        None
    } else {
        Some(positive(quota).ok_or_else(|| {
            malformed(
                path,
                text,
                "quota is neither \"max\" nor a positive integer",
            )
        })?)
    };
    let period_us = match period {
        None => 100_000,
        Some(p) => {
            positive(p).ok_or_else(|| malformed(path, text, "period is not a positive integer"))?
        }
    };
    let Some(quota_us) = quota_us else {
        return Ok(None);
    };
    Ok(Some(quota_us as f64 / period_us as f64))
}

/// v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` (microseconds) → cores. A quota of
/// `-1` is no limit (the period is then not looked at).
pub(crate) fn parse_cfs(
    quota_path: &Path,
    quota_text: &str,
    period_path: &Path,
    period_text: &str,
) -> Result<Option<f64>, CgroupError> {
    let Some(quota_us) = parse_cfs_quota(quota_path, quota_text)? else {
        return Ok(None);
    };
    let period_us = positive(period_text.trim())
        .ok_or_else(|| malformed(period_path, period_text, "not a positive integer"))?;
    Ok(Some(quota_us as f64 / period_us as f64))
}

/// v1 `cpu.cfs_quota_us` alone: `-1` is no limit.
fn parse_cfs_quota(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
    let value = text.trim();
    if value == "-1" {
        return Ok(None);
    }
    positive(value)
        .map(Some)
        .ok_or_else(|| malformed(path, text, "neither -1 nor a positive integer"))
}

/// v2 `memory.max`: bytes, or `"max"` for no limit.
pub(crate) fn parse_memory_max(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
    let value = text.trim();
    if value == "max" {
        return Ok(None);
    }
    positive(value)
        .map(Some)
        .ok_or_else(|| malformed(path, text, "neither \"max\" nor a positive integer"))
}

/// v1 `memory.limit_in_bytes`: bytes; the kernel's "unlimited" (any value from
/// [`V1_UNLIMITED_FROM`] up, e.g. 9223372036854771712) or `-1` is no limit.
pub(crate) fn parse_memory_limit_in_bytes(
    path: &Path,
    text: &str,
) -> Result<Option<u64>, CgroupError> {
    let value = text.trim();
    if value == "-1" {
        return Ok(None);
    }
    let bytes = positive(value)
        .ok_or_else(|| malformed(path, text, "neither -1 nor a positive integer"))?;
    Ok((bytes < V1_UNLIMITED_FROM).then_some(bytes))
}

/// Cumulative throttled time from a `cpu.stat`: v2 `throttled_usec` (microseconds), v1
/// `throttled_time` (nanoseconds); [`CgroupVersion::Hybrid`] or [`CgroupVersion::None`]
/// accept either. Ok(None) when the file has no such line (for instance v2 without
/// the cpu controller).
pub(crate) fn parse_throttled(
    path: &Path,
    text: &str,
    version: CgroupVersion,
) -> Result<Option<Duration>, CgroupError> {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), value) = (fields.next(), fields.next()) else {
            continue;
        };
        let from: fn(u64) -> Duration = match (key, version) {
            ("throttled_usec", CgroupVersion::V1) | ("throttled_time", CgroupVersion::V2) => {
                continue
            }
            ("throttled_usec", _) => Duration::from_micros,
            ("throttled_time", _) => Duration::from_nanos,
            _ => continue,
        };
        let n = value
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| malformed(path, line, "throttled time is not an integer"))?;
        return Ok(Some(from(n)));
    }
    Ok(None)
}

fn positive(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().filter(|n| *n > 0)
}

// ---------------------------------------------------------------------------------
// Where the process's cgroups are.
// ---------------------------------------------------------------------------------

/// A line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcCgroupLine<'a> {
    /// The v2 line `0::/path`.
    unified: bool,
    controllers: Vec<&'a str>,
    path: &'a str,
}

fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroupLine<'_>> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(ProcCgroupLine {
                unified: id == "0" && controllers.is_empty(),
                controllers: controllers.split(',').filter(|c| !c.is_empty()).collect(),
                path,
            })
        })
        .collect()
}

/// The parts of a `/proc/self/mountinfo` line that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// Field 4: the path inside the filesystem that is mounted (for a cgroup fs, the
    /// cgroup shown as the mount point; not `/` inside many containers).
    root: String,
    /// Field 5.
    mount_point: String,
    fstype: String,
    super_options: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// `36 35 98:0 /root /mnt rw,noatime master:1 - cgroup cgroup rw,cpu,cpuacct`: six fixed
/// fields, optional fields, `-`, then fstype, source and super options.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let root = fields.get(3)?;
    let mount_point = fields.get(4)?;
    let tail = fields.get(6..)?;
    let mut after_separator = tail.iter().skip_while(|f| **f != "-").skip(1);
    let fstype = after_separator.next()?;
    let _source = after_separator.next();
    let super_options = after_separator.next().copied().unwrap_or("");
    Some(Mount {
        root: unescape_octal(root),
        mount_point: unescape_octal(mount_point),
        fstype: (*fstype).to_owned(),
        super_options: super_options.split(',').map(str::to_owned).collect(),
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\040`-style octal.
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'\\' {
            if let Some((digits, after)) = tail.split_first_chunk::<3>() {
                if let Some(byte) = octal_byte(*digits) {
                    out.push(byte);
                    rest = after;
                    continue;
                }
            }
        }
        out.push(b);
        rest = tail;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn octal_byte(digits: [u8; 3]) -> Option<u8> {
    if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()
}

/// One cgroup hierarchy the process is in: its mount point and the process's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    /// [`CgroupVersion::V1`] or [`CgroupVersion::V2`].
    version: CgroupVersion,
    mount: PathBuf,
    dir: PathBuf,
}

impl Hierarchy {
    /// The process's directory, then each ancestor up to and including the mount point.
    fn chain(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.dir.clone()];
        let mut dir = self.dir.as_path();
        while dir != self.mount {
            match dir.parent() {
                Some(parent) if parent.starts_with(&self.mount) => {
                    dirs.push(parent.to_path_buf());
                    dir = parent;
                }
                _ => break,
            }
        }
        dirs
    }
}

/// The process's path made relative to a mount's root; `None` when it is not under it
/// or leaves it (`..`).
fn relative_to_root(cgroup_path: &str, mount_root: &str) -> Option<PathBuf> {
    let rel = Path::new(cgroup_path).strip_prefix(mount_root).ok()?;
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| rel.to_path_buf())
}

/// Finds the mount of a hierarchy (`cgroup2`, or `cgroup` with `controller` among its
/// super options) and the process's directory in it.
fn locate(
    mounts: &[Mount],
    version: CgroupVersion,
    controller: Option<&str>,
    cgroup_path: &str,
    root: &Path,
    notes: &mut Vec<String>,
) -> Option<Hierarchy> {
    let fstype = if version == CgroupVersion::V2 {
        "cgroup2"
    } else {
        "cgroup"
    };
    let candidates: Vec<&Mount> = mounts
        .iter()
        .filter(|m| m.fstype == fstype)
        .filter(|m| controller.is_none_or(|c| m.super_options.iter().any(|o| o == c)))
        .collect();
    // Of the mounts the process's path is under, the one whose root is deepest.
    let best = candidates
        .iter()
        .filter_map(|m| relative_to_root(cgroup_path, &m.root).map(|rel| (*m, rel)))
        .max_by_key(|(m, _)| Path::new(&m.root).components().count());
    let (mount, rel) = match best {
        Some((m, rel)) => (m, rel),
        None => {
            let m = candidates.first()?;
            let mount = under_root(root, &m.mount_point);
            notes.push(format!(
                "cgroups: {} path {cgroup_path:?} is not under the root {:?} of the mount {}; using the mount point",
                controller.unwrap_or("v2"),
                m.root,
                mount.display(),
            ));
            return Some(Hierarchy {
                version,
                dir: mount.clone(),
                mount,
            });
        }
    };
    let mount = under_root(root, &mount.mount_point);
    let dir = if rel.as_os_str().is_empty() {
        mount.clone()
    } else {
        mount.join(rel)
    };
    Some(Hierarchy {
        version,
        mount,
        dir,
    })
}

fn under_root(root: &Path, mount_point: &str) -> PathBuf {
    root.join(mount_point.trim_start_matches('/'))
}

/// The v2 controllers available to the process's cgroup: its `cgroup.controllers`,
/// else the mount point's. Returns the file read with its list.
fn v2_controllers(v2: &Hierarchy) -> Result<(PathBuf, Vec<String>), CgroupError> {
    let own = v2.dir.join("cgroup.controllers");
    let first = match read_file(&own) {
        Ok(text) => return Ok((own, split_words(&text))),
        Err(err) => err,
    };
    if v2.dir == v2.mount {
        return Err(first);
    }
    let top = v2.mount.join("cgroup.controllers");
    read_file(&top)
        .map(|text| (top, split_words(&text)))
        .map_err(|_| first)
}

fn split_words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Picks the hierarchy to read a controller's limits from: v2 when its
/// `cgroup.controllers` lists the controller, else v1; `Err` says why there is none.
fn choose(
    controller: &str,
    v1: Option<&Hierarchy>,
    v2: Option<&Hierarchy>,
    v2_controllers: Option<&Result<(PathBuf, Vec<String>), CgroupError>>,
    notes: &mut Vec<String>,
) -> Result<Hierarchy, String> {
    let listed = |r: &Result<(PathBuf, Vec<String>), CgroupError>| {
        r.as_ref()
            .is_ok_and(|(_, list)| list.iter().any(|c| c == controller))
    };
    match (v2, v2_controllers) {
        (Some(h), Some(ctrls)) if listed(ctrls) => return Ok(h.clone()),
        _ => {}
    }
    if let Some(h) = v1 {
        return Ok(h.clone());
    }
    match (v2, v2_controllers) {
        (Some(h), Some(Err(err))) => {
            notes.push(format!(
                "cgroups: {err}; assuming the {controller} controller is on v2"
            ));
            Ok(h.clone())
        }
        (Some(_), Some(Ok((path, _)))) => Err(format!(
            "the {controller} controller is not enabled in {}",
            path.display()
        )),
        _ => Err(format!(
            "no cgroup hierarchy with the {controller} controller in /proc/self/cgroup and mountinfo"
        )),
    }
}

// ---------------------------------------------------------------------------------
// Reading limits along the chain of directories.
// ---------------------------------------------------------------------------------

/// The smallest limit found along a chain, and what went wrong on the way.
struct Scan<T> {
    /// The smallest limit and the directory holding it.
    best: Option<(T, PathBuf)>,
    /// Limit files found (limited, unlimited or bad).
    files: usize,
    errors: Vec<CgroupError>,
}

/// `read(dir)`: Ok(None) when the directory has no such file, Ok(Some(None)) for "no
/// limit", Ok(Some(Some(limit))) for a limit.
fn scan_chain<T: Copy + PartialOrd>(
    h: &Hierarchy,
    mut read: impl FnMut(&Path) -> Result<Option<Option<T>>, CgroupError>,
) -> Scan<T> {
    let mut scan = Scan {
        best: None,
        files: 0,
        errors: Vec::new(),
    };
    for dir in h.chain() {
        match read(&dir) {
            Ok(None) => {}
            Ok(Some(limit)) => {
                scan.files = scan.files.saturating_add(1);
                if let Some(limit) = limit {
                    if scan.best.as_ref().is_none_or(|(best, _)| limit < *best) {
                        scan.best = Some((limit, dir));
                    }
                }
            }
            Err(err) => {
                scan.files = scan.files.saturating_add(1);
                scan.errors.push(err);
            }
        }
    }
    scan
}

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

fn read_cpu_limit(version: CgroupVersion, dir: &Path) -> Result<Option<Option<f64>>, CgroupError> {
    if version == CgroupVersion::V2 {
        let path = dir.join("cpu.max");
        return match read_if_present(&path)? {
            None => Ok(None),
            Some(text) => parse_cpu_max(&path, &text).map(Some),
        };
    }
    let quota_path = dir.join("cpu.cfs_quota_us");
    let Some(quota) = read_if_present(&quota_path)? else {
        return Ok(None);
    };
    if parse_cfs_quota(&quota_path, &quota)?.is_none() {
        return Ok(Some(None));
    }
    let period_path = dir.join("cpu.cfs_period_us");
    let period = read_file(&period_path)?;
    parse_cfs(&quota_path, &quota, &period_path, &period).map(Some)
}

fn read_memory_limit(
    version: CgroupVersion,
    dir: &Path,
) -> Result<Option<Option<u64>>, CgroupError> {
    let path = dir.join(memory_file(version));
    match read_if_present(&path)? {
        None => Ok(None),
        Some(text) if version == CgroupVersion::V2 => parse_memory_max(&path, &text).map(Some),
        Some(text) => parse_memory_limit_in_bytes(&path, &text).map(Some),
    }
}

fn cpu_file(version: CgroupVersion) -> &'static str {
    if version == CgroupVersion::V2 {
        "cpu.max"
    } else {
        "cpu.cfs_quota_us"
    }
}

fn memory_file(version: CgroupVersion) -> &'static str {
    if version == CgroupVersion::V2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    }
}

/// "no cpu.max in D or its ancestors up to M" / "none set in cpu.max of D ...".
fn nothing_found(file: &str, h: &Hierarchy, files: usize) -> String {
    let place = if h.dir == h.mount {
        format!("{}", h.dir.display())
    } else {
        format!(
            "{} or its ancestors up to {}",
            h.dir.display(),
            h.mount.display()
        )
    };
    if files == 0 {
        format!("no {file} in {place}")
    } else {
        format!("none set in {file} of {place}")
    }
}

// ---------------------------------------------------------------------------------
// Detection.
// ---------------------------------------------------------------------------------

/// What the host offers when the cgroups do not say.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Host {
    /// `std::thread::available_parallelism()`.
    parallelism: Option<usize>,
    /// CPUs in the process's affinity mask: caps a quota larger than the machine.
    affinity_cpus: Option<usize>,
    /// `MemTotal` of `/proc/meminfo`.
    memory_bytes: Option<u64>,
}

impl Host {
    fn current() -> Self {
        Host {
            parallelism: std::thread::available_parallelism()
                .ok()
                .map(std::num::NonZeroUsize::get),
            affinity_cpus: procfs::affinity_cpus(),
            memory_bytes: procfs::host_memory_bytes(),
        }
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
    let mut limits = detect_with(&proc_cgroup, &mountinfo, Path::new("/"), &Host::current());
    notes.append(&mut limits.notes);
    limits.notes = notes;
    limits
}

/// [`detect`] on given `/proc/self/cgroup` and `/proc/self/mountinfo` texts, with every
/// mount point taken under `root` (a fixture tree); the host fallbacks are this
/// machine's.
pub(crate) fn detect_in(proc_cgroup: &str, mountinfo: &str, root: &Path) -> CgroupLimits {
    detect_with(proc_cgroup, mountinfo, root, &Host::current())
}

fn detect_with(proc_cgroup: &str, mountinfo: &str, root: &Path, host: &Host) -> CgroupLimits {
    let mut notes = Vec::new();
    let lines = parse_proc_cgroup(proc_cgroup);
    let mounts = parse_mountinfo(mountinfo);

    let v2 = lines
        .iter()
        .find(|l| l.unified)
        .and_then(|l| locate(&mounts, CgroupVersion::V2, None, l.path, root, &mut notes));
    let mut v1 = |controller: &str| {
        lines
            .iter()
            .find(|l| !l.unified && l.controllers.contains(&controller))
            .and_then(|l| {
                locate(
                    &mounts,
                    CgroupVersion::V1,
                    Some(controller),
                    l.path,
                    root,
                    &mut notes,
                )
            })
    };
    let v1_cpu = v1("cpu");
    let v1_memory = v1("memory");
    let version = match (v2.is_some(), v1_cpu.is_some() || v1_memory.is_some()) {
        (true, true) => CgroupVersion::Hybrid,
        (true, false) => CgroupVersion::V2,
        (false, true) => CgroupVersion::V1,
        (false, false) => CgroupVersion::None,
    };
    let v2_ctrls = v2.as_ref().map(v2_controllers);

    let cpu = choose(
        "cpu",
        v1_cpu.as_ref(),
        v2.as_ref(),
        v2_ctrls.as_ref(),
        &mut notes,
    );
    let (cpu_cores, stat_dir) = cpu_limit(cpu.as_ref(), host, &mut notes);
    let memory = choose(
        "memory",
        v1_memory.as_ref(),
        v2.as_ref(),
        v2_ctrls.as_ref(),
        &mut notes,
    );
    let memory_bytes = memory_limit(memory.as_ref(), host, &mut notes);

    let mut cpu_stat_path = None;
    let mut cpu_stat_version = CgroupVersion::None;
    match (&cpu, stat_dir) {
        (Ok(h), Some(dir)) => {
            let path = dir.join("cpu.stat");
            match read_file(&path).and_then(|text| parse_throttled(&path, &text, h.version)) {
                Ok(Some(_)) => {
                    cpu_stat_path = Some(path);
                    cpu_stat_version = h.version;
                }
                Ok(None) => notes.push(format!(
                    "cpu throttling: no {} in {}; throttling not reported",
                    if h.version == CgroupVersion::V2 {
                        "throttled_usec"
                    } else {
                        "throttled_time"
                    },
                    path.display()
                )),
                Err(err) => notes.push(format!("cpu throttling: {err}; throttling not reported")),
            }
        }
        _ => notes.push("cpu throttling: no cpu cgroup found; throttling not reported".to_owned()),
    }

    CgroupLimits {
        cpu_cores,
        memory_bytes,
        cpu_stat_path,
        cpu_stat_version,
        version,
        notes,
    }
}

/// Cores, and the directory whose `cpu.stat` counts throttling under them.
fn cpu_limit(
    source: Result<&Hierarchy, &String>,
    host: &Host,
    notes: &mut Vec<String>,
) -> (Option<f64>, Option<PathBuf>) {
    let fallback = || match host.parallelism {
        Some(n) => (
            Some(n as f64),
            format!("using {n} cores (available parallelism)"),
        ),
        None => (
            None,
            "available parallelism unknown; cpu cores not reported".to_owned(),
        ),
    };
    let h = match source {
        Ok(h) => h,
        Err(reason) => {
            let (cores, consequence) = fallback();
            notes.push(format!("cpu quota: {reason}; {consequence}"));
            return (cores, None);
        }
    };
    let file = cpu_file(h.version);
    let scan = scan_chain(h, |dir| read_cpu_limit(h.version, dir));
    let (cores, consequence, stat_dir) = match &scan.best {
        Some((quota, dir)) => {
            let quota_file = dir.join(file);
            match host.affinity_cpus {
                Some(n) if *quota > n as f64 => {
                    notes.push(format!(
                        "cpu quota: {quota} cores in {} exceeds the {n} CPUs this process may run on; using {n} cores",
                        quota_file.display()
                    ));
                    (
                        Some(n as f64),
                        format!("using {n} cores"),
                        Some(dir.clone()),
                    )
                }
                _ => (
                    Some(*quota),
                    format!("using {quota} cores from {}", quota_file.display()),
                    Some(dir.clone()),
                ),
            }
        }
        None => {
            let (cores, consequence) = fallback();
            if scan.errors.is_empty() {
                notes.push(format!(
                    "cpu quota: {}; {consequence}",
                    nothing_found(file, h, scan.files)
                ));
            }
            (cores, consequence, Some(h.dir.clone()))
        }
    };
    for err in &scan.errors {
        notes.push(format!("cpu quota: {err}; {consequence}"));
    }
    (cores, stat_dir)
}

/// Bytes of memory the process may use.
fn memory_limit(
    source: Result<&Hierarchy, &String>,
    host: &Host,
    notes: &mut Vec<String>,
) -> Option<u64> {
    let fallback = || match host.memory_bytes {
        Some(n) => (
            Some(n),
            format!("using host RAM, {n} bytes (/proc/meminfo MemTotal)"),
        ),
        None => (
            None,
            "host RAM unknown (/proc/meminfo MemTotal unreadable); memory limit not reported"
                .to_owned(),
        ),
    };
    let h = match source {
        Ok(h) => h,
        Err(reason) => {
            let (bytes, consequence) = fallback();
            notes.push(format!("memory limit: {reason}; {consequence}"));
            return bytes;
        }
    };
    let file = memory_file(h.version);
    let scan = scan_chain(h, |dir| read_memory_limit(h.version, dir));
    let (bytes, consequence) = match &scan.best {
        Some((limit, dir)) => {
            let limit_file = dir.join(file);
            match host.memory_bytes {
                Some(ram) if *limit >= ram => {
                    notes.push(format!(
                        "memory limit: {limit} bytes in {} is not below host RAM ({ram} bytes); using host RAM",
                        limit_file.display()
                    ));
                    (Some(ram), format!("using host RAM, {ram} bytes"))
                }
                _ => (
                    Some(*limit),
                    format!("using {limit} bytes from {}", limit_file.display()),
                ),
            }
        }
        None => {
            let (bytes, consequence) = fallback();
            if scan.errors.is_empty() {
                notes.push(format!(
                    "memory limit: {}; {consequence}",
                    nothing_found(file, h, scan.files)
                ));
            }
            (bytes, consequence)
        }
    };
    for err in &scan.errors {
        notes.push(format!("memory limit: {err}; {consequence}"));
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// 8 CPUs, 8 GiB: larger than every fixture limit.
    const HOST: Host = Host {
        parallelism: Some(8),
        affinity_cpus: Some(8),
        memory_bytes: Some(8 * GIB),
    };

    fn fixture_dir(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name)
    }

    fn fixture_texts(name: &str) -> (String, String) {
        let dir = fixture_dir(name);
        (
            std::fs::read_to_string(dir.join("proc_self_cgroup")).unwrap(),
            std::fs::read_to_string(dir.join("mountinfo")).unwrap(),
        )
    }

    fn fixture_with(name: &str, host: &Host) -> CgroupLimits {
        let (proc_cgroup, mountinfo) = fixture_texts(name);
        detect_with(&proc_cgroup, &mountinfo, &fixture_dir(name), host)
    }

    fn fixture(name: &str) -> CgroupLimits {
        fixture_with(name, &HOST)
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn parses_cpu_max() {
        assert_eq!(parse_cpu_max(p("f"), "max 100000\n").unwrap(), None);
        assert_eq!(parse_cpu_max(p("f"), "max").unwrap(), None);
        assert_eq!(parse_cpu_max(p("f"), "50000 100000\n").unwrap(), Some(0.5));
        assert_eq!(parse_cpu_max(p("f"), "250000 100000").unwrap(), Some(2.5));
        assert_eq!(parse_cpu_max(p("f"), "150000").unwrap(), Some(1.5));
        for bad in [
            "",
            "\n",
            "fifty percent",
            "0 100000",
            "-1 100000",
            "max 0",
            "1 2 3",
            "max x",
        ] {
            let err = parse_cpu_max(p("/cg/cpu.max"), bad)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("/cg/cpu.max malformed: "), "{err}");
            assert!(err.contains(&format!("{:?}", bad.trim())), "{err}");
        }
    }

    #[test]
    fn parses_cfs() {
        let (q, per) = (p("/cg/cpu.cfs_quota_us"), p("/cg/cpu.cfs_period_us"));
        assert_eq!(parse_cfs(q, "-1\n", per, "100000\n").unwrap(), None);
        assert_eq!(parse_cfs(q, "-1", per, "garbage").unwrap(), None);
        assert_eq!(
            parse_cfs(q, "150000\n", per, "100000\n").unwrap(),
            Some(1.5)
        );
        assert_eq!(parse_cfs(q, "50000", per, "200000").unwrap(), Some(0.25));
        let err = parse_cfs(q, "-2", per, "100000").unwrap_err().to_string();
        assert!(
            err.contains("/cg/cpu.cfs_quota_us") && err.contains("\"-2\""),
            "{err}"
        );
        let err = parse_cfs(q, "100000", per, "0").unwrap_err().to_string();
        assert!(
            err.contains("/cg/cpu.cfs_period_us") && err.contains("\"0\""),
            "{err}"
        );
        assert!(parse_cfs(q, "", per, "100000").is_err());
    }

    #[test]
    fn parses_memory_limits() {
        let f = p("/cg/memory.max");
        assert_eq!(parse_memory_max(f, "max\n").unwrap(), None);
        assert_eq!(parse_memory_max(f, "536870912\n").unwrap(), Some(512 * MIB));
        for bad in ["", "lots", "-1", "0", "1.5G"] {
            let err = parse_memory_max(f, bad).unwrap_err().to_string();
            assert!(
                err.contains("/cg/memory.max") && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
        let f = p("/cg/memory.limit_in_bytes");
        assert_eq!(
            parse_memory_limit_in_bytes(f, "9223372036854771712\n").unwrap(),
            None
        );
        assert_eq!(
            parse_memory_limit_in_bytes(f, "9223372036854710272").unwrap(),
            None
        );
        assert_eq!(parse_memory_limit_in_bytes(f, "-1").unwrap(), None);
        assert_eq!(
            parse_memory_limit_in_bytes(f, "268435456\n").unwrap(),
            Some(256 * MIB)
        );
        assert!(parse_memory_limit_in_bytes(f, "max").is_err());
        assert!(parse_memory_limit_in_bytes(f, "18446744073709551616").is_err());
    }

    #[test]
    fn parses_throttled_time() {
        let v2 = "usage_usec 5\nnr_throttled 2\nthrottled_usec 1500\n";
        let v1 = "nr_periods 3\nnr_throttled 2\nthrottled_time 2500000000\n";
        let f = p("/cg/cpu.stat");
        assert_eq!(
            parse_throttled(f, v2, CgroupVersion::V2).unwrap(),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(
            parse_throttled(f, v1, CgroupVersion::V1).unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_throttled(f, v1, CgroupVersion::V2).unwrap(), None);
        assert_eq!(parse_throttled(f, v2, CgroupVersion::V1).unwrap(), None);
        assert_eq!(
            parse_throttled(f, v1, CgroupVersion::Hybrid).unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            parse_throttled(f, "usage_usec 5\n", CgroupVersion::V2).unwrap(),
            None
        );
        assert_eq!(parse_throttled(f, "", CgroupVersion::V2).unwrap(), None);
        let err = parse_throttled(f, "throttled_usec lots\n", CgroupVersion::V2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/cg/cpu.stat") && err.contains("throttled_usec lots"),
            "{err}"
        );
        assert!(parse_throttled(f, "throttled_time\n", CgroupVersion::V1).is_err());
    }

    #[test]
    fn parses_proc_cgroup_and_mountinfo() {
        let lines = parse_proc_cgroup("11:cpu,cpuacct:/a/b\n1:name=systemd:/\n0::/x:y\nbad\n");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].controllers, ["cpu", "cpuacct"]);
        assert!(!lines[0].unified);
        assert!(lines[2].unified);
        assert_eq!(lines[2].path, "/x:y");

        let mounts = parse_mountinfo(
            "36 35 0:32 /docker/ab /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:17 shared:3 - cgroup cgroup rw,cpu,cpuacct\n\
             41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n\
             42 31 0:39 / /no/separator rw cgroup2 cgroup2 rw\n\
             short line\n",
        );
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].root, "/docker/ab");
        assert_eq!(mounts[0].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(mounts[0].fstype, "cgroup");
        assert_eq!(mounts[0].super_options, ["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[1].mount_point, "/mnt/my cgroups");
        assert_eq!(mounts[1].fstype, "cgroup2");
        assert_eq!(unescape_octal("a\\134b\\011c\\9zz\\"), "a\\b\tc\\9zz\\");
    }

    #[test]
    fn v1_takes_the_smallest_limit_up_the_tree() {
        let l = fixture("v1");
        assert_eq!(l.version, CgroupVersion::V1);
        // ctr 1.5 cores, pod 4 cores, above unlimited.
        assert_eq!(l.cpu_cores, Some(1.5));
        // ctr 256 MiB, pod 16 GiB, above 9223372036854771712.
        assert_eq!(l.memory_bytes, Some(256 * MIB));
        let ctr = "sys/fs/cgroup/cpu,cpuacct/kubepods/burstable/pod1234/ctr/cpu.stat";
        assert_eq!(l.cpu_stat_path, Some(fixture_dir("v1").join(ctr)));
        assert_eq!(l.cpu_stat_version, CgroupVersion::V1);
        assert_eq!(l.read_throttled(), Some(Duration::from_millis(2500)));
        assert!(l.notes.is_empty(), "{:?}", l.notes);
    }

    #[test]
    fn v2_reads_cpu_max_and_memory_max() {
        let l = fixture("v2");
        assert_eq!(l.version, CgroupVersion::V2);
        assert_eq!(l.cpu_cores, Some(0.5));
        assert_eq!(l.memory_bytes, Some(512 * MIB));
        assert_eq!(l.cpu_stat_version, CgroupVersion::V2);
        assert_eq!(l.read_throttled(), Some(Duration::from_micros(1_234_567)));
        assert!(l.notes.is_empty(), "{:?}", l.notes);
    }

    #[test]
    fn hybrid_uses_v2_for_the_controllers_it_has_and_v1_for_the_rest() {
        let l = fixture("hybrid");
        assert_eq!(l.version, CgroupVersion::Hybrid);
        // cpu is not in unified/.../cgroup.controllers: v1 cpu,cpuacct.
        assert_eq!(l.cpu_cores, Some(2.0));
        // memory is: unified/batch/job42/memory.max.
        assert_eq!(l.memory_bytes, Some(GIB));
        let stat = "sys/fs/cgroup/cpu,cpuacct/batch/job42/cpu.stat";
        assert_eq!(l.cpu_stat_path, Some(fixture_dir("hybrid").join(stat)));
        assert_eq!(l.read_throttled(), Some(Duration::from_millis(42)));
        assert!(l.notes.is_empty(), "{:?}", l.notes);
    }

    #[test]
    fn no_limit_falls_back_to_the_host_with_notes() {
        let host = Host {
            parallelism: Some(3),
            affinity_cpus: Some(3),
            memory_bytes: Some(4 * GIB),
        };
        let l = fixture_with("nolimit", &host);
        assert_eq!(l.version, CgroupVersion::V2);
        assert_eq!(l.cpu_cores, Some(3.0));
        assert_eq!(l.memory_bytes, Some(4 * GIB));
        assert_eq!(l.read_throttled(), Some(Duration::ZERO));
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
        assert!(
            l.notes[0].starts_with("cpu quota: none set in cpu.max of "),
            "{}",
            l.notes[0]
        );
        assert!(
            l.notes[0].ends_with("; using 3 cores (available parallelism)"),
            "{}",
            l.notes[0]
        );
        assert!(
            l.notes[1].starts_with("memory limit: none set in memory.max of "),
            "{}",
            l.notes[1]
        );
        assert!(l.notes[1].ends_with("using host RAM, 4294967296 bytes (/proc/meminfo MemTotal)"));

        // Nothing known about the host either: None plus a note, still no panic.
        let unknown = Host {
            parallelism: None,
            affinity_cpus: None,
            memory_bytes: None,
        };
        let l = fixture_with("nolimit", &unknown);
        assert_eq!((l.cpu_cores, l.memory_bytes), (None, None));
        assert!(
            l.notes[0].ends_with("cpu cores not reported"),
            "{:?}",
            l.notes
        );
        assert!(
            l.notes[1].ends_with("memory limit not reported"),
            "{:?}",
            l.notes
        );
    }

    #[test]
    fn malformed_files_fall_back_and_name_the_file_and_value() {
        let host = Host {
            parallelism: Some(3),
            affinity_cpus: Some(3),
            memory_bytes: Some(4 * GIB),
        };
        let l = fixture_with("malformed", &host);
        assert_eq!(l.cpu_cores, Some(3.0));
        assert_eq!(l.memory_bytes, Some(4 * GIB));
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
        let app = fixture_dir("malformed").join("sys/fs/cgroup/app");
        assert_eq!(
            l.notes[0],
            format!(
                "cpu quota: {} malformed: \"fifty percent\" (quota is neither \"max\" nor a positive integer); using 3 cores (available parallelism)",
                app.join("cpu.max").display()
            )
        );
        assert_eq!(
            l.notes[1],
            format!(
                "memory limit: {} malformed: \"lots\" (neither \"max\" nor a positive integer); using host RAM, 4294967296 bytes (/proc/meminfo MemTotal)",
                app.join("memory.max").display()
            )
        );
        // The cpu.stat there is fine.
        assert_eq!(l.read_throttled(), Some(Duration::from_micros(7)));
    }

    #[test]
    fn nested_limits_apply_to_an_unlimited_child() {
        let l = fixture("nested");
        // app: max; team: 0.25 cores, 128 MiB; tenant: 2 cores, 1 GiB.
        assert_eq!(l.cpu_cores, Some(0.25));
        assert_eq!(l.memory_bytes, Some(128 * MIB));
        let team = fixture_dir("nested").join("sys/fs/cgroup/tenant/team/cpu.stat");
        assert_eq!(l.cpu_stat_path, Some(team));
        assert_eq!(l.read_throttled(), Some(Duration::from_secs(5)));
        assert!(l.notes.is_empty(), "{:?}", l.notes);
    }

    #[test]
    fn container_root_maps_the_process_path_to_the_mount_point() {
        let l = fixture("container-root");
        assert_eq!(l.version, CgroupVersion::V1);
        assert_eq!(l.cpu_cores, Some(3.0));
        assert_eq!(l.memory_bytes, Some(2 * GIB));
        let stat = fixture_dir("container-root").join("sys/fs/cgroup/cpu,cpuacct/cpu.stat");
        assert_eq!(l.cpu_stat_path, Some(stat));
        assert!(l.notes.is_empty(), "{:?}", l.notes);

        // A sub-cgroup of the container's root: its ancestors lead back to the limits.
        let (proc_cgroup, mountinfo) = fixture_texts("container-root");
        let sub = proc_cgroup.replace("/docker/0123abcd", "/docker/0123abcd/worker");
        let l = detect_with(&sub, &mountinfo, &fixture_dir("container-root"), &HOST);
        assert_eq!((l.cpu_cores, l.memory_bytes), (Some(3.0), Some(2 * GIB)));

        // A path outside the mount's root (or escaping it): the mount point, with a note.
        for outside in ["/", "/docker/0123abcd/../other"] {
            let odd = proc_cgroup.replace("/docker/0123abcd", outside);
            let l = detect_with(&odd, &mountinfo, &fixture_dir("container-root"), &HOST);
            assert_eq!((l.cpu_cores, l.memory_bytes), (Some(3.0), Some(2 * GIB)));
            assert!(
                l.notes
                    .iter()
                    .any(|n| n.contains("is not under the root \"/docker/0123abcd\"")
                        && n.ends_with("using the mount point")),
                "{:?}",
                l.notes
            );
        }
    }

    #[test]
    fn limits_above_the_host_are_capped_with_a_note() {
        let small = Host {
            parallelism: Some(1),
            affinity_cpus: Some(1),
            memory_bytes: Some(128 * MIB),
        };
        let l = fixture_with("v1", &small);
        assert_eq!(l.cpu_cores, Some(1.0));
        assert_eq!(l.memory_bytes, Some(128 * MIB));
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
        assert!(l.notes[0].contains("1.5 cores in") && l.notes[0].ends_with("using 1 cores"));
        assert!(
            l.notes[1].contains("268435456 bytes in") && l.notes[1].ends_with("using host RAM")
        );
    }

    #[test]
    fn v2_is_preferred_when_it_lists_the_controller() {
        let v1 = Hierarchy {
            version: CgroupVersion::V1,
            mount: "/sys/fs/cgroup/memory".into(),
            dir: "/sys/fs/cgroup/memory".into(),
        };
        let v2 = Hierarchy {
            version: CgroupVersion::V2,
            mount: "/sys/fs/cgroup/unified".into(),
            dir: "/sys/fs/cgroup/unified".into(),
        };
        let listed = Ok(("c".into(), vec!["memory".to_owned()]));
        let unlisted = Ok(("c".into(), vec!["hugetlb".to_owned()]));
        let unreadable = Err(malformed(p("c"), "", "test"));
        let mut notes = Vec::new();
        let pick = |ctrls, notes: &mut Vec<String>| {
            choose("memory", Some(&v1), Some(&v2), Some(ctrls), notes)
                .unwrap()
                .version
        };
        assert_eq!(pick(&listed, &mut notes), CgroupVersion::V2);
        assert_eq!(pick(&unlisted, &mut notes), CgroupVersion::V1);
        assert_eq!(pick(&unreadable, &mut notes), CgroupVersion::V1);
        assert!(notes.is_empty());
        // v2 only, not listed: no source, and why.
        let err = choose("memory", None, Some(&v2), Some(&unlisted), &mut notes).unwrap_err();
        assert_eq!(err, "the memory controller is not enabled in c");
        // v2 only, list unreadable: try v2, with a note.
        let h = choose("memory", None, Some(&v2), Some(&unreadable), &mut notes).unwrap();
        assert_eq!(h.version, CgroupVersion::V2);
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn no_cgroups_at_all_still_yields_numbers() {
        let l = detect_with("", "", Path::new("/nonexistent"), &HOST);
        assert_eq!(l.version, CgroupVersion::None);
        assert_eq!((l.cpu_cores, l.memory_bytes), (Some(8.0), Some(8 * GIB)));
        assert_eq!(l.cpu_stat_path, None);
        assert_eq!(l.read_throttled(), None);
        assert_eq!(l.notes.len(), 3, "{:?}", l.notes);
        // Fixture texts whose tree is missing: every file absent, still numbers.
        let (proc_cgroup, mountinfo) = fixture_texts("v2");
        let l = detect_with(&proc_cgroup, &mountinfo, Path::new("/nonexistent"), &HOST);
        assert_eq!((l.cpu_cores, l.memory_bytes), (Some(8.0), Some(8 * GIB)));
        assert!(l.notes.iter().all(|n| !n.is_empty()));
    }

    #[test]
    fn detect_in_reads_fixtures_with_this_hosts_fallbacks() {
        let (proc_cgroup, mountinfo) = fixture_texts("v2");
        let l = detect_in(&proc_cgroup, &mountinfo, &fixture_dir("v2"));
        assert_eq!(l.cpu_cores, Some(0.5));
        assert_eq!(l.memory_bytes, Some(512 * MIB));
    }

    #[test]
    fn detects_this_machine() {
        let l = detect();
        eprintln!("cgroup detect() on this machine: {l:#?}");
        assert!(l.cpu_cores.is_some_and(|c| c > 0.0), "{l:?}");
        assert!(l.memory_bytes.is_some_and(|b| b > 0), "{l:?}");
    }
}
