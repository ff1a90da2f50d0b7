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
mod tests {
    use super::*;
    use holmes_proto::{Metric, RuleConfig, Sample};
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn writes_the_trigger_context_as_json() {
        let tmp = tempfile::tempdir().unwrap();
        let dump = DumpFolder::chosen(tmp.path().join("dumps"), 1 << 20);
        let event = TriggerEvent {
            event_id: "0123abcd".into(),
            metric: Some(Metric::CpuPercent),
            reason: TriggerReason::Diff,
            current: 88.5,
            window: vec![
                Sample {
                    unix_nanos: 1,
                    value: 10.0,
                },
                Sample {
                    unix_nanos: 2,
                    value: 88.5,
                },
            ],
            rule: Some(RuleConfig {
                metric: Metric::CpuPercent,
                enabled: true,
                min: 10.0,
                diff: 25.0,
                abs: f64::INFINITY,
                max: 0.0,
                cooldown: Duration::from_secs(60),
                window: 2,
            }),
            unix_nanos: 2,
            planned: vec![],
            request_id: None,
        };
        let path = dump.write_trigger("check\"out", "i-1", &event).unwrap();
        assert_eq!(path.file_name().unwrap(), "0123abcd.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"service\":\"check\\\"out\""), "{text}");
        assert!(text.contains("\"reason\":\"diff\""));
        assert!(text.contains(
            "\"window\":[{\"unix_nanos\":1,\"value\":10},{\"unix_nanos\":2,\"value\":88.5}]"
        ));
        assert!(text.contains("abs=off"), "{text}");
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn the_default_folder_is_made_private_and_its_files_too() {
        let runtime = tempfile::tempdir().unwrap();
        let dump = DumpFolder::default_private(Some(runtime.path().to_owned()), 1 << 20);
        assert_eq!(dump.path(), runtime.path().join("holmes"));
        let file = dump.write_file("a.json", b"{}").unwrap();
        assert_eq!(mode(dump.path()), 0o700);
        assert_eq!(mode(&file), 0o600);
        // Without a runtime folder: the temporary folder, named for the user.
        let fallback = DumpFolder::default_private(None, 1);
        assert_eq!(
            fallback.path(),
            std::env::temp_dir().join(format!("holmes-{}", euid()))
        );
        assert_eq!(
            DumpFolder::default_private(Some("relative".into()), 1).path(),
            fallback.path()
        );
    }

    #[test]
    fn a_default_folder_others_can_write_to_or_that_is_a_link_is_refused() {
        let runtime = tempfile::tempdir().unwrap();
        let dump = DumpFolder::default_private(Some(runtime.path().to_owned()), 1 << 20);
        // Made beforehand by someone else, open to all, as a shared /tmp allows.
        std::fs::create_dir(dump.path()).unwrap();
        std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = dump.write_file("a.json", b"{}").unwrap_err();
        assert!(
            matches!(err, DumpError::OpenToOthers { mode: 0o777, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("others may write to it"), "{err}");
        assert!(!dump.path().join("a.json").exists());
        // A link planted where the folder would be.
        std::fs::remove_dir(dump.path()).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dump.path()).unwrap();
        let err = dump.write_file("a.json", b"{}").unwrap_err();
        assert!(matches!(err, DumpError::NotADirectory(_)), "{err}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        // A folder the host chose is the host's business.
        let chosen = DumpFolder::chosen(elsewhere.path().to_owned(), 1 << 20);
        std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        chosen.write_file("a.json", b"{}").unwrap();
    }

    #[test]
    fn a_default_folder_of_another_user_is_refused() {
        if euid() != 0 {
            // Only root can hand a folder to another user; the mode checks above run
            // for everyone.
            eprintln!("skipped: needs root to chown");
            return;
        }
        let runtime = tempfile::tempdir().unwrap();
        let dump = DumpFolder::default_private(Some(runtime.path().to_owned()), 1 << 20);
        std::fs::create_dir(dump.path()).unwrap();
        std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(dump.path(), Some(65534), Some(65534)).unwrap();
        let err = dump.write_file("a.json", b"{}").unwrap_err();
        assert!(
            matches!(
                err,
                DumpError::NotOurs {
                    owner: 65534,
                    uid: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_oldest_dumps_go_first_to_keep_the_folder_under_its_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let dump = DumpFolder::chosen(tmp.path().to_owned(), 1_000);
        std::fs::write(tmp.path().join("host-notes.txt.bak"), [0u8; 5_000]).unwrap();
        let t0 = std::time::SystemTime::now() - Duration::from_secs(100);
        for (i, name) in ["a.json", "cpu.a.pb.gz", "threads.a.txt", "b.json"]
            .iter()
            .enumerate()
        {
            let path = dump.write_file(name, &[1u8; 300]).unwrap();
            // Ages one second apart, whatever the file system's time resolution.
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(t0 + Duration::from_secs(i as u64)).unwrap();
        }
        // 4 × 300 > 1 000: writing the fourth deleted the oldest.
        let names = |dir: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(tmp.path()),
            [
                "b.json",
                "cpu.a.pb.gz",
                "host-notes.txt.bak",
                "threads.a.txt"
            ]
        );
        dump.write_file("c.json", &[1u8; 650]).unwrap();
        assert_eq!(
            names(tmp.path()),
            ["b.json", "c.json", "host-notes.txt.bak"]
        );
        let err = dump.write_file("huge.pb.gz", &[0u8; 1_001]).unwrap_err();
        assert!(
            matches!(
                err,
                DumpError::TooLarge {
                    bytes: 1_001,
                    cap: 1_000,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            names(tmp.path()).len(),
            3,
            "nothing deleted for a file that cannot fit"
        );
    }
}
