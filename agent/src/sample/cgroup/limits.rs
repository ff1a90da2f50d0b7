//! The limits themselves: each limit file along the process's directory and its
//! ancestors, the smallest limit winning, and the host's CPUs and RAM when there is none.

use std::path::{Path, PathBuf};

use super::mounts::{choose, locate, v2_controllers, Hierarchy};
use super::parse::{
    parse_cfs, parse_cfs_quota, parse_cpu_max, parse_memory_limit_in_bytes, parse_memory_max,
    parse_mountinfo, parse_proc_cgroup, parse_throttled,
};
use super::{read_file, read_if_present, CgroupError, CgroupLimits, CgroupVersion};
use crate::sample::procfs;

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
pub(super) struct Host {
    /// `std::thread::available_parallelism()`.
    pub(super) parallelism: Option<usize>,
    /// CPUs in the process's affinity mask: caps a quota larger than the machine.
    pub(super) affinity_cpus: Option<usize>,
    /// `MemTotal` of `/proc/meminfo`.
    pub(super) memory_bytes: Option<u64>,
}

impl Host {
    pub(super) fn current() -> Self {
        Host {
            parallelism: std::thread::available_parallelism()
                .ok()
                .map(std::num::NonZeroUsize::get),
            affinity_cpus: procfs::affinity_cpus(),
            memory_bytes: procfs::host_memory_bytes(),
        }
    }
}

pub(super) fn detect_with(
    proc_cgroup: &str,
    mountinfo: &str,
    root: &Path,
    host: &Host,
) -> CgroupLimits {
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
