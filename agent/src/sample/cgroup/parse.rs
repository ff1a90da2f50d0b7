//! Pure parsers: the limit files (`Ok(None)`: no limit; `Err`: malformed), the
//! `cpu.stat` throttling counters, `/proc/self/cgroup` and `/proc/self/mountinfo`.

use std::path::Path;
use std::time::Duration;

use super::{CgroupError, CgroupVersion};

/// `memory.limit_in_bytes` values from here up mean "no limit": the kernel shows an
/// unset v1 limit as `LONG_MAX` rounded down to the page size (9223372036854771712
/// with 4 KiB pages). Limits between host RAM and this are treated as no limit by
/// detection, which knows host RAM.
pub(super) const V1_UNLIMITED_FROM: u64 = 1 << 62;

/// Values quoted in error messages are cut to this many characters.
const MAX_QUOTED_CHARS: usize = 64;

pub(super) fn malformed(path: &Path, value: &str, reason: &'static str) -> CgroupError {
    CgroupError::Malformed {
        path: path.to_path_buf(),
        value: value.trim().chars().take(MAX_QUOTED_CHARS).collect(),
        reason,
    }
}

/// v2 `cpu.max`: `"<quota|max> <period>"` in microseconds → cores (`quota / period`).
/// `"max 100000"` (or a bare `"max"`) is no limit.
pub(super) fn parse_cpu_max(path: &Path, text: &str) -> Result<Option<f64>, CgroupError> {
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
pub(super) fn parse_cfs(
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
pub(super) fn parse_cfs_quota(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
    let value = text.trim();
    if value == "-1" {
        return Ok(None);
    }
    positive(value)
        .map(Some)
        .ok_or_else(|| malformed(path, text, "neither -1 nor a positive integer"))
}

/// v2 `memory.max`: bytes, or `"max"` for no limit.
pub(super) fn parse_memory_max(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
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
pub(super) fn parse_memory_limit_in_bytes(
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
pub(super) fn parse_throttled(
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

/// A line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProcCgroupLine<'a> {
    /// The v2 line `0::/path`.
    pub(super) unified: bool,
    pub(super) controllers: Vec<&'a str>,
    pub(super) path: &'a str,
}

pub(super) fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroupLine<'_>> {
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
pub(super) struct Mount {
    /// Field 4: the path inside the filesystem that is mounted (for a cgroup fs, the
    /// cgroup shown as the mount point; not `/` inside many containers).
    pub(super) root: String,
    /// Field 5.
    pub(super) mount_point: String,
    pub(super) fstype: String,
    pub(super) super_options: Vec<String>,
}

pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
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
pub(super) fn unescape_octal(s: &str) -> String {
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
