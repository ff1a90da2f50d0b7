//! Local dumps: what the agent writes to its dump folder when there is no collector (or
//! in addition to it). Each trigger becomes `<event-id>.json` with its context; each
//! capture (see the capture module) `<kind>.<event-id>.<timestamp>.pb.gz`, plain pprof
//! with no `.log` suffix to confuse tools.
//!
//! Files are written to a temporary name and renamed, so a reader never sees half a file;
//! the folder is private by default and capped in bytes ([`DumpFolder`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use holmes_proto::{rule_spec, TriggerEvent, TriggerReason};

/// Escapes a string for a JSON document.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number for JSON (which has no infinity): non-finite values become `null`.
fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".to_owned()
    }
}

/// The trigger's context as a JSON document.
pub(crate) fn trigger_json(service: &str, instance: &str, event: &TriggerEvent) -> String {
    let reason = match event.reason {
        TriggerReason::Abs => "abs",
        TriggerReason::Diff => "diff",
        TriggerReason::Requested => "requested",
        TriggerReason::Baseline => "baseline",
    };
    let window: Vec<String> = event
        .window
        .iter()
        .map(|s| {
            format!(
                "{{\"unix_nanos\":{},\"value\":{}}}",
                s.unix_nanos,
                json_number(s.value)
            )
        })
        .collect();
    let rule = event
        .rule
        .as_ref()
        .map_or_else(|| "null".to_owned(), |r| json_string(&rule_spec::format(r)));
    let planned: Vec<String> = event
        .planned
        .iter()
        .map(|k| json_string(k.as_str()))
        .collect();
    format!(
        "{{\"event_id\":{},\"service\":{},\"instance\":{},\"pid\":{},\"metric\":{},\"reason\":\"{reason}\",\"current\":{},\"unix_nanos\":{},\"rule\":{rule},\"window\":[{}],\"planned\":[{}]}}\n",
        json_string(&event.event_id),
        json_string(service),
        json_string(instance),
        std::process::id(),
        event.metric.map_or_else(|| "null".to_owned(), |m| json_string(m.as_str())),
        json_number(event.current),
        event.unix_nanos,
        window.join(","),
        planned.join(","),
    )
}

/// The dump folder: where triggers and profiles are written, under a byte cap.
///
/// The default folder (no `HOLMES_DUMP_DIR`) is private: `$XDG_RUNTIME_DIR/holmes`, else
/// `<tmp>/holmes-<uid>`, created `0700`, and refused — nothing is written — when it is
/// not a directory of this user's that only this user may write to (someone else may
/// have made it first in a shared `/tmp`). A folder the host names is created `0700` if
/// missing and used as it is. In both, files are `0600`, and before a file is written
/// the oldest files the agent wrote there are deleted until the new one fits under the
/// cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DumpFolder {
    path: PathBuf,
    cap: u64,
    private: bool,
}

/// Why a dump was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DumpError {
    /// A file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The private folder is not a directory (a symlink, a file).
    #[error("dump folder {0} is not a directory; refusing to write there")]
    NotADirectory(PathBuf),
    /// The private folder belongs to another user.
    #[error("dump folder {path} belongs to uid {owner}, not to this process's uid {uid}; refusing to write there")]
    NotOurs { path: PathBuf, owner: u32, uid: u32 },
    /// Others may write to the private folder.
    #[error(
        "dump folder {path} has mode {mode:o}: others may write to it; refusing to write there"
    )]
    OpenToOthers { path: PathBuf, mode: u32 },
    /// The file alone is larger than the folder's cap.
    #[error("{name} is {bytes} bytes, more than the dump folder's cap of {cap} bytes (HOLMES_DUMP_BYTES)")]
    TooLarge { name: String, bytes: u64, cap: u64 },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DumpError {
    let path = path.to_owned();
    move |source| DumpError::Io { op, path, source }
}

impl DumpFolder {
    /// A folder the host named, capped at `cap` bytes.
    pub(crate) fn chosen(path: PathBuf, cap: u64) -> Self {
        DumpFolder {
            path,
            cap,
            private: false,
        }
    }

    /// The agent's default folder, capped at `cap` bytes: `$XDG_RUNTIME_DIR/holmes` when
    /// that is an absolute path (systemd makes it the user's own, `0700`), else
    /// `<tmp>/holmes-<uid>`.
    pub(crate) fn default_private(runtime_dir: Option<PathBuf>, cap: u64) -> Self {
        let path = match runtime_dir.filter(|d| d.is_absolute()) {
            Some(dir) => dir.join("holmes"),
            None => std::env::temp_dir().join(format!("holmes-{}", euid())),
        };
        DumpFolder {
            path,
            cap,
            private: true,
        }
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the folder if it is missing, and checks that the default one is private.
    fn ready(&self) -> Result<(), DumpError> {
        let mut builder = std::fs::DirBuilder::new();
        // Only the last component of the default folder is ours to make; its parent is
        // the shared temporary folder or the user's runtime folder.
        builder.recursive(!self.private).mode(0o700);
        match builder.create(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", &self.path)(e)),
        }
        if !self.private {
            return Ok(());
        }
        let meta = std::fs::symlink_metadata(&self.path).map_err(io("inspect", &self.path))?;
        if !meta.file_type().is_dir() {
            return Err(DumpError::NotADirectory(self.path.clone()));
        }
        let uid = euid();
        if meta.uid() != uid {
            return Err(DumpError::NotOurs {
                path: self.path.clone(),
                owner: meta.uid(),
                uid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(DumpError::OpenToOthers {
                path: self.path.clone(),
                mode,
            });
        }
        Ok(())
    }

    /// Writes `bytes` to `name` in the folder atomically, after deleting the oldest
    /// dumps that would not leave room for it under the cap.
    pub(crate) fn write_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, DumpError> {
        let size = bytes.len() as u64;
        if size > self.cap {
            return Err(DumpError::TooLarge {
                name: name.to_owned(),
                bytes: size,
                cap: self.cap,
            });
        }
        self.ready()?;
        self.make_room(size);
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(bytes).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("sync", &tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        Ok(path)
    }

    /// Writes `<event-id>.json` for a trigger.
    pub(crate) fn write_trigger(
        &self,
        service: &str,
        instance: &str,
        event: &TriggerEvent,
    ) -> Result<PathBuf, DumpError> {
        self.write_file(
            &format!("{}.json", event.event_id),
            trigger_json(service, instance, event).as_bytes(),
        )
    }

    /// Deletes the oldest dumps until `incoming` more bytes fit under the cap. Only the
    /// agent's own files count (`.json`, `.pb.gz`, `.txt`), so a folder the host shares
    /// with other files loses none of them.
    fn make_room(&self, incoming: u64) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        let mut dumps: Vec<(std::time::SystemTime, String, u64)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let ours = !name.starts_with('.')
                    && [".json", ".pb.gz", ".txt"]
                        .iter()
                        .any(|s| name.ends_with(s));
                let meta = e.metadata().ok().filter(|m| m.is_file() && ours)?;
                let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                Some((modified, name, meta.len()))
            })
            .collect();
        let mut total: u64 = dumps.iter().map(|d| d.2).sum();
        if total + incoming <= self.cap {
            return;
        }
        dumps.sort();
        let mut deleted = 0u64;
        let mut freed = 0u64;
        for (_, name, bytes) in dumps {
            if total + incoming <= self.cap {
                break;
            }
            match std::fs::remove_file(self.path.join(&name)) {
                Ok(()) => {
                    total -= bytes;
                    deleted += 1;
                    freed += bytes;
                }
                // Another agent thread deleted it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= bytes,
                Err(e) => {
                    tracing::warn!(target: "holmes", dir = %self.path.display(), file = %name, error = %e, "cannot delete an old dump");
                }
            }
        }
        if deleted > 0 {
            tracing::info!(target: "holmes", dir = %self.path.display(), files = deleted, bytes = freed, cap = self.cap, "dump folder full: deleted the oldest dumps");
        }
    }
}

/// This process's effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests;
